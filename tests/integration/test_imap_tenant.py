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

Placement (dovecot_placement, docs/lmtp-router.md): three more proxies
on 127.0.0.1 in front of the same two stores, one per setting (none,
hash, hash-record), each reading a [tn-lmtp-router] section whose
default pool is the two stores' LMTP listeners; mailboxes made for a
test in tenant initech (no pool) and chosen with a Python copy of the
router's hash so that one lands on each store (no test passes by luck);
a tn-lmtp-router started on the hash proxy's own file answers "route"
and delivers to the same store the proxy logs the user in on.

Skipped ONLY while the module is not built (TN_BUILD_DIR's
dovecot-plugins/.libs/libauthdb_tenant.so), saying so.
"""

import os
import re
import time
import uuid

import pytest

import tndovecot as td
import tnharness as th
import tnrouter
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


def write_conf(stack, path, section, router=None):
    """stack's tenantmail.conf + FAST timeouts + a [dovecot-auth] section
    (+ a [tn-lmtp-router] section)."""
    with open(stack.conf) as f:
        text = f.read()
    text += "".join("%s = %s\n" % kv for kv in FAST.items())
    text += "\n[dovecot-auth]\n" + "".join("%s = %s\n" % kv
                                           for kv in section.items())
    if router is not None:
        text += "\n[tn-lmtp-router]\n" + "".join("%s = %s\n" % kv
                                                 for kv in router.items())
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


# --- placement: the proxy places a mailbox that logs in before its first delivery ---

M64 = (1 << 64) - 1


def _fnv1a(h, text, lower=False):
    for b in text.encode():
        if lower and 0x41 <= b <= 0x5a:
            b += 0x20
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def hrw_score(member, address):
    """lib/tn-place.c's tn_place_score, in Python: FNV-1a over the
    member, a 0xff separator, the address lower-cased, then
    MurmurHash3's finaliser."""
    h = _fnv1a(0xcbf29ce484222325, member)
    x = _fnv1a(((h ^ 0xff) * 0x100000001b3) & M64, address, lower=True)
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & M64
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M64
    return x ^ (x >> 33)


def hrw_pick(members, address):
    """The highest score wins; equal scores go to the smaller name."""
    return max(sorted(members), key=lambda m: hrw_score(m, address))


class Placing:
    """Proxies with dovecot_placement none, hash and hash-record in front
    of topo's stores; the router's default pool "spread" is the stores'
    LMTP listeners (their names are what is hashed and recorded)."""

    MODES = ("none", "hash", "hash-record", "hash-record-blocking")

    def __init__(self, topo, workdir):
        self.topo = topo
        self.workdir = workdir
        self.members = ["%s:%d" % (STORE_A, topo.a.lmtp_port),
                        "%s:%d" % (STORE_B, topo.b.lmtp_port)]
        self.proxies = {}
        self.confs = {}
        self.router = None
        try:
            for mode in self.MODES:
                self.confs[mode] = self.write(mode, self.members)
                passdb, userdb = tenant_dbs(self.confs[mode])
                self.proxies[mode] = td.Dovecot(
                    os.path.join(workdir, "proxy-" + mode), passdb=passdb, userdb=userdb,
                    auth_modules=[MODULE], protocols="imap")
        except BaseException:
            self.stop()
            raise

    def write(self, name, members):
        stack = self.topo.stack
        mode = name.replace("-blocking", "")
        return write_conf(stack, os.path.join(self.workdir, "proxy-%s.conf" % name), {
            "dovecot_proxy": "yes",
            "dovecot_proxy_port": str(self.topo.store_port),
            "dovecot_default_host": STORE_A,
            "dovecot_blocking": "yes" if name.endswith("-blocking") else "no",
            # the blocking one records through the lock-out check's path
            "dovecot_lockout_user_failures": "5" if name.endswith("-blocking") else "0",
            "dovecot_placement": mode,
            "dovecot_placement_bind_dn": th.PROV_DN,
            "dovecot_placement_password_file": stack.prov_password_file,
            "prov_timeout": "3s",
        }, router={
            "router_pool_members": ", ".join("spread=" + m for m in members),
            "router_default_pool": "spread",
            "router_placement": mode,
            "router_placement_bind_dn": th.PROV_DN,
            "router_placement_password_file": stack.prov_password_file,
        })

    def store_of(self, member):
        return self.members.index(member)

    def new_mailboxes(self, members=None):
        """Two new mailboxes of initech (no host, no pool) that the hash
        over members puts on store A and on store B: [on A, on B]."""
        members = members or self.members
        found = [None, None]
        while None in found:
            address = "place-%s@initech.example" % uuid.uuid4().hex[:10]
            i = self.store_of(hrw_pick(members, address))
            if found[i] is None:
                found[i] = address
        for address in found:
            r = self.topo.provd.request("POST", "/v1/mailboxes",
                                        {"address": address, "password": PASSWORD})
            assert r.status == 201, r.text
            assert self.topo.stack.mail_host(address) is None
        return found

    def login_lands_on(self, proxy, user):
        marks = self.topo.pair.marks()
        proxy.imap(user, PASSWORD).logout()
        return self.topo.pair.stores_seen(user, marks)

    def stop(self):
        if self.router is not None:
            self.router.stop()
        td.stop_all(list(self.proxies.values()))


@pytest.fixture(scope="module")
def placing(topo, tmp_path_factory):
    p = Placing(topo, str(tmp_path_factory.mktemp("imap-placement")))
    try:
        yield p
    finally:
        p.stop()


def test_hash_is_the_routers():
    """The Python copy agrees with lib/tn-place.c's pinned scores
    (tests/unit/test-router-route.c)."""
    assert hrw_score("10.0.0.1:24", "a@b.example") == 0xd282931dabbb3db7
    assert hrw_score("10.0.0.2:24", "Alice@ACME.example") == 0x7d5b4dc8142708dd


@pytest.mark.parametrize("name", ["hash-record", "hash-record-blocking"])
def test_placement_hash_record_logs_in_on_the_hashed_store_and_records_it(placing, name):
    """A mailbox with no host logs in through the proxy before any
    delivery: it lands on the store the hash picks (one mailbox per
    store, so dovecot_default_host = A cannot explain it), and that
    member is written to its tnMailHost within seconds, by the write
    path's thread (the login did not wait for it); in both modes of the
    driver (blocking: the write path is made in the auth worker, and the
    write is queued once the lock-out counters cleared the login)."""
    stack, proxy = placing.topo.stack, placing.proxies[name]
    mark = proxy.log_mark()
    for idx, user in enumerate(placing.new_mailboxes()):
        assert placing.login_lands_on(proxy, user) == [idx], user
        member = placing.members[idx]
        assert stack.wait_mail_host(user) == member, user
        proxy.wait_log(r"tenant: [^\n]*user=<%s> placement recorded: tnMailHost %s"
                       % (re.escape(user), re.escape(member)), mark)
        # recorded: the next login reads tnMailHost and lands there again
        assert placing.login_lands_on(proxy, user) == [idx], user


def test_placement_recorded_survives_a_member_list_change(placing):
    """After the write, the placement no longer depends on the member
    list: with store B's member gone from the router's section, the
    mailbox recorded on B still logs in on B (it never moves silently),
    while a mailbox not yet placed that hashed to B now goes to A."""
    stack, proxy = placing.topo.stack, placing.proxies["hash-record"]
    on_a, on_b = placing.new_mailboxes()
    assert placing.login_lands_on(proxy, on_b) == [1]
    assert stack.wait_mail_host(on_b) == placing.members[1]
    fresh_a, fresh_b = placing.new_mailboxes()
    placing.write("hash-record", placing.members[:1])
    try:
        proxy.restart()
        assert placing.login_lands_on(proxy, on_b) == [1]
        assert placing.login_lands_on(proxy, fresh_b) == [0]
        assert stack.wait_mail_host(fresh_b) == placing.members[0]
    finally:
        placing.write("hash-record", placing.members)
        proxy.restart()
    assert placing.login_lands_on(proxy, on_b) == [1]


def test_placement_wrong_password_records_nothing(placing):
    stack, proxy = placing.topo.stack, placing.proxies["hash-record"]
    user = placing.new_mailboxes()[1]
    assert_generic(login_error(proxy, user, "wrong"))
    time.sleep(1.0)
    assert stack.mail_host(user) is None


def test_placement_hash_routes_without_writing(placing):
    stack, proxy = placing.topo.stack, placing.proxies["hash"]
    users = placing.new_mailboxes()
    for idx, user in enumerate(users):
        assert placing.login_lands_on(proxy, user) == [idx], user
    time.sleep(1.0)
    assert [stack.mail_host(u) for u in users] == [None, None]


def test_placement_none_is_unchanged_default_host(placing):
    """dovecot_placement = none (the default), even with the router's
    section in the file: a mailbox without host or pool goes to
    dovecot_default_host (A) as before, and nothing is written."""
    stack, proxy = placing.topo.stack, placing.proxies["none"]
    users = placing.new_mailboxes()
    for user in users:
        assert placing.login_lands_on(proxy, user) == [0], user
    time.sleep(1.0)
    assert [stack.mail_host(u) for u in users] == [None, None]


def test_placement_the_router_delivers_where_the_proxy_logs_in(placing):
    """tn-lmtp-router started on the hash proxy's own tenantmail.conf
    (one member list for both programs): for a mailbox not placed yet,
    its "route" answer is the member the proxy logs the user in on, and
    a message it delivers is in that store's Maildir."""
    topo = placing.topo
    placing.router = tnrouter.Router(os.path.join(placing.workdir, "router"),
                                     placing.confs["hash"], {"lookup_timeout": "3s"})
    for idx, user in enumerate(placing.new_mailboxes()):
        line = placing.router.control("route %s" % user)[-1]
        m = re.match(r"ok route via=(\S+) pool=(\S+) host=(\S+)", line)
        assert m and m.group(1) == "placed", line
        assert m.group(3) == placing.members[idx], line
        marker = "placement-%s" % uuid.uuid4().hex
        rcpt, final = placing.router.transaction(
            "sender@example.org", [user],
            ("Subject: %s\r\nMessage-ID: <%s@t>\r\n\r\nhi\r\n" % (marker, marker)).encode())
        assert rcpt[0][0] == 250 and final[0][0] == 250, (rcpt, final)
        local, domain = user.split("@")
        store = (topo.a, topo.b)[idx]
        maildir = os.path.join(store.home_dir, domain, local, "Maildir")
        deadline = time.monotonic() + 5
        while not any(marker.encode() in open(os.path.join(maildir, sub, n), "rb").read()
                      for sub in ("new", "cur") if os.path.isdir(os.path.join(maildir, sub))
                      for n in os.listdir(os.path.join(maildir, sub))):
            assert time.monotonic() < deadline, (user, maildir)
            time.sleep(0.05)
        assert placing.login_lands_on(placing.proxies["hash"], user) == [idx], user
