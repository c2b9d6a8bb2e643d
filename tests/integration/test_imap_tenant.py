"""Issue 5: the Dovecot auth driver "tenant" (libauthdb_tenant.so) in real
Dovecot 2.3 instances, through IMAP with imaplib, doveadm and a proxy.

One topology per module: the example DIT (conftest's stack), a
tn-provisiond on it, two stores (A on 127.0.0.2, B on 127.0.0.3, the same
IMAP port: the driver's proxy answer is host=<store> with one
dovecot_proxy_port) and a proxy front-end on 127.0.0.1; every instance
loads the driver from the build directory through tndovecot's private
mount namespace.  Store A also serves the direct-login tests.

The driver's contract (dovecot-plugins/auth-tenant.c, tn-auth-policy.h):
section [dovecot-auth] of tenantmail.conf -- dovecot_uid, dovecot_gid,
dovecot_home (%u %n %d %t), dovecot_mail, dovecot_proxy,
dovecot_proxy_port, dovecot_pool_hosts (pool:host), dovecot_default_host;
passdb: stored hash verified by Dovecot, suspended/deleted refused with
the reason in the auth log and Dovecot's generic message to the client,
directory unreachable = internal failure (client: [UNAVAILABLE]);
userdb: uid, gid, home, quota_rule=*:bytes=N, tenant, tenant_quota_bytes.

The driver runs in its default mode, asynchronous in the auth process
(test_auth_tenant.py runs its cases in both modes).

Skipped ONLY while the module is not built (TN_BUILD_DIR's
dovecot-plugins/.libs/libauthdb_tenant.so), saying so.
"""

import os
import re
import time

import pytest

import tndovecot as td
import tnharness as th
from conftest import require_prerequisites
from tnprovd import Provd

BUILD = os.environ.get("TN_BUILD_DIR",
                       os.path.join(th.ROOT, "build"))
MODULE = os.path.join(BUILD, "dovecot-plugins", ".libs", "libauthdb_tenant.so")
PASSWORD = "secret"           # every mailbox of the example DIT
STORE_A, STORE_B = "127.0.0.2", "127.0.0.3"
FAST = {"ldap_timeout": "500ms", "ldap_network_timeout": "500ms",
        "ldap_retry_down": "1s", "lookup_timeout": "1s"}

pytestmark = pytest.mark.skipif(
    not os.path.exists(MODULE),
    reason="the tenant auth driver is not built yet (%s missing): issue 5's "
           "driver has not landed in this build" % MODULE)


def require_dovecot():
    """Missing prerequisites FAIL (never skip), as in conftest.py."""
    require_prerequisites()
    problems = td.missing_prerequisites()
    if problems:
        pytest.fail("Dovecot test prerequisites: " + "; ".join(problems),
                    pytrace=False)


def write_conf(stack, path, section):
    """stack's tenantmail.conf + FAST timeouts + a [dovecot-auth] section."""
    with open(stack.conf) as f:
        text = f.read()
    text += "".join("%s = %s\n" % kv for kv in FAST.items())
    text += "\n[dovecot-auth]\n" + "".join("%s = %s\n" % kv
                                           for kv in section.items())
    with open(path, "w") as f:
        f.write(text)
    return path


def tenant_dbs(conf):
    return ("passdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
            "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf)


class Topology:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.provd = None
        self.pair = None
        try:
            os.makedirs(os.path.join(workdir, "provd"), exist_ok=True)
            self.provd = Provd(stack, os.path.join(workdir, "provd"))
            self._setup(workdir)
        except BaseException:
            self.stop()
            raise

    def _setup(self, workdir):
        stack = self.stack
        # alice lives on store A (explicit host; the DIT's store1.example:24
        # names no store of this test), bob follows his tenant's pool to B
        r = self.provd.request("PATCH", "/v1/mailboxes/alice@acme.example",
                               {"host": STORE_A}, headers={"If-Match": "*"})
        assert r.status == 200, r.text
        port = td.free_port_on(STORE_A, STORE_B)
        self.store_port = port

        pair_dir = os.path.join(workdir, "dovecot")

        def store(i):
            d = td.DovecotPair.store_dir(pair_dir, i)
            conf = write_conf(stack, os.path.join(workdir, "store-%s.conf" % "AB"[i]), {
                "dovecot_uid": "vmail", "dovecot_gid": "vmail",
                "dovecot_home": os.path.join(td.home_dir_of(d), "%d", "%n"),
            })
            passdb, userdb = tenant_dbs(conf)
            return {"passdb": passdb, "userdb": userdb, "listen": (STORE_A, STORE_B)[i],
                    "imap_port": port, "auth_modules": [MODULE]}

        def proxy(stores):
            conf = write_conf(stack, os.path.join(workdir, "proxy.conf"), {
                "dovecot_proxy": "yes",
                "dovecot_proxy_port": str(port),
                "dovecot_pool_hosts": "pool-a:%s" % STORE_B,
            })
            self.proxy_conf = conf
            passdb, userdb = tenant_dbs(conf)
            return {"passdb": passdb, "userdb": userdb, "auth_modules": [MODULE]}

        self.pair = td.DovecotPair(pair_dir, store, proxy)
        self.a, self.b = self.pair.stores
        self.proxy = self.pair.proxy

    def stop(self):
        try:
            if self.pair is not None:
                self.pair.stop()
        finally:
            if self.provd is not None:
                self.provd.stop()


@pytest.fixture(scope="module")
def topo(stack, tmp_path_factory):
    require_dovecot()
    t = Topology(stack, str(tmp_path_factory.mktemp("imap-tenant")))
    try:
        yield t
    finally:
        t.stop()


def login_error(d, user, password):
    """The NO of a LOGIN (imaplib's message) -- fails if it succeeds."""
    c = d.imap_connect()
    try:
        with pytest.raises(c.error) as e:
            c.login(user, password)
        return str(e.value)
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def assert_generic(msg):
    """Dovecot's generic authentication failure, no reason leaked."""
    assert "AUTHENTICATIONFAILED" in msg, msg
    for word in ("suspend", "delete", "abuse", "closed", "unknown", "tenant"):
        assert word not in msg.lower(), msg


def test_login_ok_and_mail_lands_in_the_templated_home(topo):
    c = topo.a.imap("alice@acme.example", PASSWORD)
    try:
        typ, data = c.append("INBOX", None, None,
                             b"Subject: t\r\nMessage-ID: <t1@x>\r\n\r\nhi\r\n")
        assert typ == "OK", data
        typ, data = c.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1
    finally:
        c.logout()
    home = os.path.join(topo.a.home_dir, "acme.example", "alice")
    assert os.path.isdir(os.path.join(home, "Maildir")), home
    assert os.stat(home).st_uid == td.VMAIL_UID


@pytest.mark.parametrize("user,password,reason", [
    ("alice@acme.example", "wrong", r"[Pp]assword mismatch"),
    ("carol@acme.example", PASSWORD, r"mailbox suspended: abuse report"),
    ("hank@globex.example", PASSWORD, r"tenant suspended: non-payment"),
    ("milton@old-initech.example", PASSWORD, r"domain suspended"),
    ("zed@acme.example", PASSWORD, r"mailbox deleted: closed by customer"),
    ("nobody@acme.example", PASSWORD, r"unknown user"),
    ("sales@acme.example", PASSWORD, r"unknown user"),       # an alias
])
def test_login_refused_generic_to_client_reason_in_log(topo, user, password, reason):
    mark = topo.a.log_mark()
    msg = login_error(topo.a, user, password)
    assert_generic(msg)
    # e.g. "auth-worker(PID): Info: conn unix:auth-worker (...): auth-worker<N>:
    # tenant(carol@acme.example,127.0.0.1,<session>): tenant=acme: login
    # refused: mailbox suspended: abuse report"
    topo.a.wait_log(r"auth(-worker)?[^\n]*: Info: [^\n]*tenant\(%s,[^)]*\): [^\n]*%s"
                    % (re.escape(user), reason), mark)


def test_doveadm_user_fields(topo):
    f = topo.a.user_fields("alice@acme.example")
    assert f["uid"] in ("5000", "vmail") and f["gid"] in ("5000", "vmail"), f
    assert f["home"] == os.path.join(topo.a.home_dir, "acme.example", "alice"), f
    assert f["quota_rule"] == "*:bytes=2147483648", f
    assert f["tenant"] == "acme", f
    assert f["tenant_quota_bytes"] == "10737418240", f
    # bob inherits the tenant's mailbox quota
    f = topo.a.user_fields("bob@acme.example")
    assert f["quota_rule"] == "*:bytes=1073741824", f
    # deleted and unknown: no user (doveadm's EX_NOUSER)
    for user in ("zed@acme.example", "nobody@acme.example"):
        r = topo.a.doveadm("user", user)
        assert r.returncode == 67, (user, r.returncode, r.stdout, r.stderr)
    r = topo.a.doveadm("auth", "test", "alice@acme.example", PASSWORD)
    assert r.returncode == 0 and "auth succeeded" in r.stdout, r.stdout + r.stderr


def test_provisioning_change_seen_by_the_next_login(topo):
    """A mailbox created, suspended and resumed through tn-provisiond:
    each change is in force for the next login (invalidation, < 1 s),
    including the creation of an address that was just looked up as
    unknown (negative cache)."""
    user = "newbie@acme.example"
    assert_generic(login_error(topo.a, user, "newbie-pw"))   # unknown, cached
    r = topo.provd.request("POST", "/v1/mailboxes",
                           {"address": user, "password": "newbie-pw"})
    assert r.status == 201, r.text

    def within_1s(check):
        t0 = time.monotonic()
        while True:
            try:
                check()
                return time.monotonic() - t0
            except (AssertionError, td.imaplib.IMAP4.error):
                if time.monotonic() - t0 > 1.0:
                    raise
                time.sleep(0.05)

    def logs_in():
        topo.a.imap(user, "newbie-pw").logout()

    def refused():
        assert_generic(login_error(topo.a, user, "newbie-pw"))

    within_1s(logs_in)
    r = topo.provd.request("POST", "/v1/mailboxes/%s/suspend" % user,
                           {"reason": "test suspension"})
    assert r.status == 200, r.text
    within_1s(refused)
    r = topo.provd.request("POST", "/v1/mailboxes/%s/resume" % user, {})
    assert r.status == 200, r.text
    within_1s(logs_in)


def test_slapd_frozen_is_a_temporary_failure(topo):
    """Addresses never looked up before (no cache can answer): the
    directory frozen gives a temporary failure within the deadline, never
    "authentication failed"; thawed, the same login works without a
    restart."""
    slapd = topo.stack.slapd
    slapd.freeze()
    try:
        for user in ("erin@acme-mail.example", "never-seen@acme.example"):
            t0 = time.monotonic()
            c = topo.a.imap_connect(timeout=30)
            try:
                with pytest.raises(c.error) as e:
                    c.login(user, PASSWORD)
            finally:
                c.shutdown()
            took = time.monotonic() - t0
            msg = str(e.value)
            assert "UNAVAILABLE" in msg or "Temporary" in msg, msg
            assert "AUTHENTICATIONFAILED" not in msg, msg
            assert took < 5, took          # lookup_timeout 1 s + Dovecot's 0.5 s ticks
        r = topo.a.doveadm("user", "erin@acme-mail.example")
        assert r.returncode not in (0, 67), (r.returncode, r.stdout, r.stderr)
    finally:
        slapd.thaw()
    deadline = time.monotonic() + 5
    while True:
        try:
            topo.a.imap("erin@acme-mail.example", PASSWORD).logout()
            break
        except td.imaplib.IMAP4.error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_proxy_routes_by_directory_and_follows_a_move(topo):
    """alice (host = store A) lands on A, bob (pool-a -> store B) on B;
    after bob's host is set to store A through tn-provisiond his next
    login through the proxy reaches A."""
    for user, idx in (("alice@acme.example", 0), ("bob@acme.example", 1)):
        marks = topo.pair.marks()
        c = topo.proxy.imap(user, PASSWORD)
        c.logout()
        assert topo.pair.stores_seen(user, marks) == [idx], user
    topo.proxy.wait_log(r"proxy\(bob@acme\.example,%s:%d\): Started proxying"
                        % (re.escape(STORE_B), topo.store_port))
    r = topo.provd.request("PATCH", "/v1/mailboxes/bob@acme.example",
                           {"host": STORE_A}, headers={"If-Match": "*"})
    assert r.status == 200, r.text
    t0 = time.monotonic()
    while True:
        marks = topo.pair.marks()
        c = topo.proxy.imap("bob@acme.example", PASSWORD)
        c.logout()
        seen = topo.pair.stores_seen("bob@acme.example", marks)
        if seen == [0] or time.monotonic() - t0 > 1.0:
            break
    assert seen == [0], seen
    # the front end refuses a wrong password itself, generically
    assert_generic(login_error(topo.proxy, "alice@acme.example", "wrong"))
    # a suspended mailbox is refused at the front end too
    assert_generic(login_error(topo.proxy, "carol@acme.example", PASSWORD))
