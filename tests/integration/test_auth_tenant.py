"""test_auth_tenant -- the Dovecot auth driver "tenant" in a real Dovecot.

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build-d1 pytest-3 -q tests/integration/test_auth_tenant.py

Environment:
  TN_BUILD_DIR  the build directory holding
                dovecot-plugins/.libs/libauthdb_tenant.so (default: the
                top of the source tree, an in-tree build)

The store tests run twice: with the driver asynchronous in the auth
process (the default) and with dovecot_blocking = yes (auth workers).

A private Dovecot 2.3 (tests/harness/tndovecot.py) loads the built module
through "unshare -m" and a bind mount over the auth module dir; slapd with
the example DIT and Redis come from tnharness.Stack (every mailbox's
password is "secret").  Checked with doveadm, Dovecot's own clients:
  * doveadm auth test: login ok (also with the address in another case),
    wrong password, suspended tenant, suspended mailbox, deleted mailbox,
    alias, unknown user -- with the reason in the auth log for refusals;
  * doveadm user: uid/gid/home/quota_rule/tenant/tenant_quota_bytes,
    inheritance, tenant_status of a suspended mailbox, unknown users;
  * a front-end (dovecot_proxy = yes): proxy=y host=<store> port=N from
    tnMailHost, from the pool map, and nologin without a store;
  * slapd frozen with Redis empty: a temporary failure (doveadm and an
    IMAP [UNAVAILABLE]) within lookup_timeout plus a margin, never
    "unknown user"; logins work again once slapd is back;
  * asynchronous mode: no auth-worker process is ever started, refusals
    are logged by the auth process itself, and with slapd AND Redis
    frozen a mailbox looked up a moment ago still logs in at once (the
    in-process cache answers inside the auth process) while one never
    seen is a temporary failure within lookup_timeout;
  * brute-force protection (dovecot_lockout_*, both modes): failed
    passwords counted in Redis per address and per client IP, the right
    password refused once a limit is reached, the reason in the log,
    other addresses and IPs unaffected, counters expiring with the
    window; off by default (no counter written);
  * a configuration error stops the auth process with the file and line;
  * the module exports only Dovecot's entry points, with Dovecot's ABI;
  * docs/dovecot.md's two conf.d snippets pass "doveconf -n";
  * man/tenantmail-dovecot.7 documents exactly tn_auth_params.

Missing prerequisites fail (never skip): a skipped suite looks green.
"""

import imaplib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import tndovecot
from test_docs import TABLE_ENTRY_RE, page_parameters, report

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
MODULE = os.path.join(BUILD, "dovecot-plugins", ".libs", "libauthdb_tenant.so")
POLICY_SOURCE = os.path.join(TOP, "dovecot-plugins", "tn-auth-policy.c")
PAGE = os.path.join(TOP, "man", "tenantmail-dovecot.7")
DOC = os.path.join(TOP, "docs", "dovecot.md")

PASSWORD = "secret"
# PASSWORD as the seed mailboxes have it (ldap-schema/example-dit.ldif)
PASSWORD_HASH = ("{SHA512-CRYPT}$6$88m4k0tATuRGvuni$SAF4VkbAUnyo0wxU6sk3KswVZ46Ul3Iftd6xgAANKEoD4"
                 "JM1roE6gGgaeBHwhKS1rw9Q7bXaJv1X44tIOe5pS.")
LOOKUP_TIMEOUT = 2.0            # seconds, set in the [dovecot-auth] section


def require_module():
    if not os.path.isfile(MODULE):
        pytest.fail("%s not found: build first (scripts/build DIR) and set "
                    "TN_BUILD_DIR" % MODULE, pytrace=False)


def auth_blocks(conf):
    return ("passdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
            "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf)


def write_conf(stack, path, extra):
    """stack's tenantmail.conf plus a [dovecot-auth] section."""
    with open(stack.conf) as f:
        text = f.read()
    text += "\n[dovecot-auth]\n" + extra
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


@pytest.fixture(scope="module", params=["async", "blocking"])
def store(stack, tmp_path_factory, request):
    require_module()
    d = tmp_path_factory.mktemp("store-" + request.param)
    conf = write_conf(stack, str(d / "tenantmail.conf"), "\n".join([
        "dovecot_blocking = %s" % ("yes" if request.param == "blocking" else "no"),
        "dovecot_home = %s/home/%%d/%%n" % d,
        "lookup_timeout = %ds" % LOOKUP_TIMEOUT,
        "ldap_timeout = 1s",
        "ldap_network_timeout = 1s",
        "ldap_retry_down = 0",
        ""]))
    passdb, userdb = auth_blocks(conf)
    dc = tndovecot.Dovecot(str(d / "dovecot"), passdb=passdb, userdb=userdb,
                           auth_modules=[MODULE])
    dc.mode = request.param
    try:
        yield dc
    finally:
        dc.stop()


@pytest.fixture(scope="module")
def proxy(stack, tmp_path_factory):
    require_module()
    d = tmp_path_factory.mktemp("proxy")
    conf = write_conf(stack, str(d / "tenantmail.conf"), "\n".join([
        "dovecot_proxy = yes",
        "dovecot_proxy_port = 1143",
        "dovecot_pool_hosts = pool-a:127.0.0.2, pool-z:127.0.0.9",
        ""]))
    passdb, userdb = auth_blocks(conf)
    dc = tndovecot.Dovecot(str(d / "dovecot"), passdb=passdb, userdb=userdb,
                           auth_modules=[MODULE])
    try:
        yield dc
    finally:
        dc.stop()


def auth_test(dc, user, password=PASSWORD):
    """(returncode, {extra field: value}, output) of doveadm auth test;
    a field printed without a value (proxy, nologin) maps to ""."""
    r = dc.doveadm("auth", "test", user, password)
    fields = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s+([a-z_]+)(?:=(.*))?$", line)
        if m:       # Dovecot prints boolean fields (proxy, nologin) bare
            fields[m.group(1)] = m.group(2) or ""
    return r.returncode, fields, r.stdout + r.stderr


# --- passdb ------------------------------------------------------------------

def test_login_ok(store):
    rc, fields, out = auth_test(store, "alice@acme.example")
    assert rc == 0, out
    assert "auth succeeded" in out
    assert "proxy" not in fields


def test_login_other_case_gives_directory_address(store):
    rc, fields, out = auth_test(store, "Alice@ACME.Example")
    assert rc == 0, out
    assert fields.get("user") == "alice@acme.example", out


def test_wrong_password(store):
    mark = store.log_mark()
    rc, fields, out = auth_test(store, "alice@acme.example", "wrong")
    assert rc != 0 and "auth failed" in out, out
    assert "code" not in fields, out
    store.wait_log(r"tenant\(alice@acme\.example\): Password mismatch", mark)


@pytest.mark.parametrize("user,reason", [
    ("hank@globex.example", "tenant=globex: login refused: tenant suspended: non-payment"),
    ("carol@acme.example", "tenant=acme: login refused: mailbox suspended: abuse report"),
    ("zed@acme.example", "tenant=acme: login refused: mailbox deleted: closed by customer"),
])
def test_refused_with_reason_in_log(store, user, reason):
    mark = store.log_mark()
    rc, fields, out = auth_test(store, user)
    assert rc != 0 and "auth failed" in out, out
    assert fields.get("code") == "user_disabled", out
    store.wait_log(re.escape("tenant(%s): %s" % (user, reason)), mark)


@pytest.mark.parametrize("user,why", [
    ("nobody@acme.example", None),
    ("someone@not-ours.example", None),
    ("sales@acme.example", "tenant=acme: an alias, not a mailbox"),
])
def test_unknown_login(store, user, why):
    mark = store.log_mark()
    rc, fields, out = auth_test(store, user)
    assert rc != 0 and "auth failed" in out, out
    assert "code" not in fields, out
    store.wait_log(re.escape("tenant(%s): unknown user" % user), mark)
    if why:
        assert why in store.log_since(mark)


# --- userdb ------------------------------------------------------------------

def test_userdb_fields(store):
    home = os.path.join(os.path.dirname(store.workdir), "home")
    f = store.user_fields("alice@acme.example")
    assert f["uid"] == "5000" and f["gid"] == "5000", f
    assert f["home"] == home + "/acme.example/alice", f
    assert f["quota_rule"] == "*:bytes=2147483648", f
    assert f["tenant"] == "acme", f
    assert f["tenant_quota_bytes"] == "10737418240", f
    assert "tenant_status" not in f


@pytest.mark.parametrize("user,expect", [
    ("bob@acme.example", {"quota_rule": "*:bytes=1073741824", "tenant": "acme"}),
    ("peter@initech.example", {"quota_rule": "*:bytes=0", "tenant": "initech",
                               "tenant_quota_bytes": "0"}),
    ("carol@acme.example", {"tenant_status": "suspended"}),
    ("BOB@acme.example", {"user": "bob@acme.example"}),
])
def test_userdb_inheritance_and_status(store, user, expect):
    f = store.user_fields(user)
    for k, v in expect.items():
        assert f.get(k) == v, (k, f)


@pytest.mark.parametrize("user", ["zed@acme.example", "sales@acme.example",
                                  "nobody@acme.example"])
def test_userdb_unknown(store, user):
    r = store.doveadm("user", user)
    assert r.returncode == 67, r.stdout + r.stderr      # EX_NOUSER
    assert "doesn't exist" in r.stdout + r.stderr


# --- proxy -------------------------------------------------------------------

@pytest.mark.parametrize("user,host", [
    ("alice@acme.example", "store1.example"),   # tnMailHost, LMTP port dropped
    ("bob@acme.example", "127.0.0.2"),           # tenant's pool-a, mapped
])
def test_proxy_fields(proxy, user, host):
    rc, fields, out = auth_test(proxy, user)
    assert rc == 0, out
    assert fields.get("proxy") == "", out
    assert fields.get("host") == host, out
    assert fields.get("port") == "1143", out


def test_proxy_checks_password(proxy):
    rc, fields, out = auth_test(proxy, "alice@acme.example", "wrong")
    assert rc != 0 and "proxy" not in fields, out


def test_proxy_without_store_is_nologin(proxy):
    mark = proxy.log_mark()
    rc, fields, out = auth_test(proxy, "peter@initech.example")
    assert "nologin" in fields or rc != 0, out
    assert "host" not in fields, out
    proxy.wait_log(r"peter@initech\.example.*mailbox has no store", mark)


# --- configuration and module ----------------------------------------------

def test_bad_configuration_names_file_and_line(stack, tmp_path):
    require_module()
    conf = write_conf(stack, str(tmp_path / "bad.conf"), "dovecot_uid_typo = 1\n")
    passdb, userdb = auth_blocks(conf)
    dc = tndovecot.Dovecot(str(tmp_path / "dovecot"), passdb=passdb,
                           userdb=userdb, auth_modules=[MODULE], start=False)
    try:
        # logins wait for an auth process that never starts: no greeting
        with pytest.raises(tndovecot.DovecotError):
            dc.start(timeout=3)
        assert re.search(r"auth: Fatal: passdb tenant: " + re.escape(conf)
                         + r":\d+: unknown parameter 'dovecot_uid_typo'",
                         dc.log_text()), dc.log_text()
    finally:
        dc.stop()


def test_module_exports_only_dovecot_entry_points():
    require_module()
    r = subprocess.run(["nm", "-D", "--defined-only", MODULE],
                       capture_output=True, text=True, check=True)
    names = sorted(line.split()[-1] for line in r.stdout.splitlines()
                   if line.strip())
    assert names == ["authdb_tenant_deinit", "authdb_tenant_init",
                     "authdb_tenant_plugin_version"], names
    with open("/usr/include/dovecot/config.h") as f:
        abi = re.search(r'#define DOVECOT_ABI_VERSION "([^"]+)"', f.read()).group(1)
    with open(MODULE, "rb") as f:
        assert abi.encode() + b"\0" in f.read()


def doc_snippets():
    with open(DOC) as f:
        blocks = re.findall(r"```\n(.*?)```", f.read(), re.S)
    snippets = [b for b in blocks if b.startswith("# tenantmail ")]
    assert len(snippets) == 2, "docs/dovecot.md: store and proxy snippets expected"
    return snippets


@pytest.mark.parametrize("which", [0, 1])
def test_doc_snippet_passes_doveconf(tmp_path, which):
    snippet = doc_snippets()[which]
    conf = tmp_path / "dovecot.conf"
    conf.write_text("base_dir = %s/run\nssl = no\nprotocols = imap\n%s"
                    % (tmp_path, snippet))
    doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
    r = subprocess.run([doveconf, "-n", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "driver = tenant" in r.stdout


def test_man_page_documents_every_parameter():
    with open(POLICY_SOURCE) as f:
        text = f.read()
    m = re.search(r"tn_auth_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "no tn_auth_params table in %s" % POLICY_SOURCE
    code = {name: (ptype.lower(), default)
            for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert len(code) >= 8
    page, problems = page_parameters(PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s is not documented" % name)
            continue
        if page[name][:2] != (ptype, default):
            problems.append("line %d: %s: %r in the page, %r in the code"
                            % (page[name][2], name, page[name][:2], (ptype, default)))
    problems += ["%s is not in tn_auth_params" % n for n in sorted(page)
                 if n not in code]
    report(problems, "%s disagrees with %s" % (PAGE, POLICY_SOURCE))
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", PAGE],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


# --- brute-force protection ---------------------------------------------------

FAIL_PREFIX = "tn:v1:authfail:"     # redis_key_prefix + docs/redis-keys.md


@pytest.fixture(scope="module", params=["async", "blocking"])
def guarded(stack, tmp_path_factory, request):
    require_module()
    d = tmp_path_factory.mktemp("lockout-" + request.param)
    conf = write_conf(stack, str(d / "tenantmail.conf"), "\n".join([
        "dovecot_blocking = %s" % ("yes" if request.param == "blocking" else "no"),
        "dovecot_home = %s/home/%%d/%%n" % d,
        "dovecot_lockout_user_failures = 3",
        "dovecot_lockout_ip_failures = 5",
        "dovecot_lockout_window = 60s",
        ""]))
    passdb, userdb = auth_blocks(conf)
    dc = tndovecot.Dovecot(str(d / "dovecot"), passdb=passdb, userdb=userdb,
                           auth_modules=[MODULE])
    try:
        yield dc
    finally:
        dc.stop()
        stack.redis.cli("EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                        "redis.call('DEL', k) end", "0", FAIL_PREFIX + "*")


def auth_from(dc, user, password, ip):
    r = dc.doveadm("auth", "test", "-x", "rip=" + ip, user, password)
    return r.returncode, r.stdout + r.stderr


def test_lockout_per_address(stack, guarded):
    user, key = "bob@acme.example", FAIL_PREFIX + "user:bob@acme.example"
    stack.redis.cli("DEL", key)
    for _ in range(3):
        rc, out = auth_from(guarded, user, "wrong", "10.1.0.1")
        assert rc != 0, out
    assert stack.redis.cli("GET", key) == "3"
    assert 0 < int(stack.redis.cli("PTTL", key)) <= 60000
    mark = guarded.log_mark()
    rc, out = auth_from(guarded, user, PASSWORD, "10.1.0.2")     # right password
    assert rc != 0 and "auth failed" in out, out
    guarded.wait_log(re.escape("tenant(%s,10.1.0.2): tenant=acme: login refused: "
                               "locked out: 3 failed logins of the address" % user), mark)
    rc, out = auth_from(guarded, "alice@acme.example", PASSWORD, "10.1.0.2")
    assert rc == 0, out                                          # others unaffected
    stack.redis.cli("DEL", key)                                  # the window ends
    rc, out = auth_from(guarded, user, PASSWORD, "10.1.0.2")
    assert rc == 0, out


def test_lockout_per_client_ip(stack, guarded):
    ip = "10.2.0.%d" % (1 if "async" in guarded.workdir else 2)
    key = FAIL_PREFIX + "ip:" + ip
    users = ["alice@acme.example", "bob@acme.example", "erin@acme-mail.example",
             "peter@initech.example", "dave@acme.example"]
    for u in users:                     # one failure each: no address locked
        rc, out = auth_from(guarded, u, "wrong", ip)
        assert rc != 0, out
    assert stack.redis.cli("GET", key) == "5"
    rc, out = auth_from(guarded, "alice@acme.example", PASSWORD, ip)
    assert rc != 0, out
    rc, out = auth_from(guarded, "alice@acme.example", PASSWORD, "10.2.0.99")
    assert rc == 0, out
    for u in users:
        stack.redis.cli("DEL", FAIL_PREFIX + "user:" + u)
    stack.redis.cli("DEL", key)


def test_lockout_off_by_default(stack, store):
    rc, _, out = auth_test(store, "alice@acme.example", "wrong")
    assert rc != 0, out
    assert stack.redis.cli("KEYS", FAIL_PREFIX + "*") == ""


# --- asynchronous mode: answered in the auth process ---------------------------

def process_titles(dc):
    """{pid: command line} of the instance's processes."""
    out = {}
    for pid in dc.processes():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                out[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


def auth_workers(dc):
    """Pids of the instance's auth-worker processes (titled "auth worker:
    idling" and the like)."""
    return [pid for pid, title in process_titles(dc).items()
            if re.search(r"/auth[- ]worker", title)]


@pytest.mark.parametrize("store", ["async"], indirect=True)
def test_async_mode_needs_no_auth_worker(store):
    mark = store.log_mark()
    for user in ("alice@acme.example", "carol@acme.example", "nobody@acme.example"):
        auth_test(store, user)
    assert store.user_fields("bob@acme.example")["tenant"] == "acme"
    # the refusal is logged by the auth process, not a worker
    store.wait_log(r"auth: Info: tenant\(carol@acme\.example[^)]*\): tenant=acme: "
                   r"login refused", mark)
    assert "auth-worker" not in store.log_text()
    assert auth_workers(store) == []


@pytest.mark.parametrize("store", ["blocking"], indirect=True)
def test_blocking_mode_uses_auth_workers(store):
    rc, _, out = auth_test(store, "alice@acme.example")
    assert rc == 0, out
    assert auth_workers(store), "\n".join(process_titles(store).values())


@pytest.mark.parametrize("store", ["async"], indirect=True)
def test_async_cache_hit_answered_in_the_auth_process(stack, store):
    """slapd and Redis both frozen: nothing outside the auth process can
    answer. A mailbox looked up a moment ago logs in at once (the
    in-process cache, kept by the invalidation subscriber, answers inside
    the auth process); one never looked up is a temporary failure within
    lookup_timeout -- the auth process was not blocked meanwhile."""
    # The warm mailbox is new: an earlier test's lookup of a seed mailbox
    # may be in the cache already, close to the end of its memory_cache_ttl
    # (a hit does not renew it), and expire between the two logins below.
    warm, cold = "warm-%d@acme.example" % os.getpid(), "dave@acme.example"
    dn = "mail=%s,tnTenantId=acme,ou=tenants,dc=example,dc=net" % warm
    stack.slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: %s\nuserPassword: %s\n"
                    % (dn, warm, PASSWORD_HASH))
    rc, _, out = auth_test(store, warm)
    assert rc == 0, out
    stack.slapd.freeze()
    stack.redis.freeze()
    try:
        t0 = time.monotonic()
        rc, _, out = auth_test(store, warm)
        took = time.monotonic() - t0
        assert rc == 0, out
        assert took < 0.5, "cache hit took %.2f s" % took
        mark = store.log_mark()
        t0 = time.monotonic()
        rc, _, out = auth_test(store, cold)
        took = time.monotonic() - t0
        assert rc != 0 and "unknown" not in out.lower(), out
        assert took < LOOKUP_TIMEOUT + 1.5, "took %.2f s" % took
        store.wait_log(re.escape("tenant(%s): lookup failed (temporary failure)"
                                 % cold), mark)
    finally:
        stack.redis.thaw()
        stack.slapd.thaw()
        stack.slapd.delete(dn, check=False)
    assert auth_workers(store) == []
    deadline = time.monotonic() + 10
    while True:
        rc, _, out = auth_test(store, cold)
        if rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rc == 0, "no login after slapd and Redis came back: " + out


def login_and_append(dc, user):
    c = dc.imap(user, PASSWORD)
    try:
        typ, data = c.append("INBOX", None, None, b"Subject: t\r\n\r\nhi\r\n")
        assert typ == "OK", data
    finally:
        c.logout()


@pytest.mark.parametrize("defaults", [False, True], ids=["plain", "default_fields"])
def test_login_userdb_step_reuses_the_passdb_lookup(stack, tmp_path, defaults):
    """An IMAP login's userdb step (the post-login REQUEST, same auth
    request) answers from the account the passdb step read, without a
    second lookup -- unless the userdb block has default_fields, which
    Dovecot applies before calling the driver: then the driver looks up
    and the directory's values still win over the defaults."""
    require_module()
    base = tndovecot.home_dir_of(str(tmp_path / "dovecot"))   # vmail's, made at start
    home, other = Path(base) / "dir", Path(base) / "default"
    conf = write_conf(stack, str(tmp_path / "tenantmail.conf"),
                      "dovecot_home = %s/%%d/%%n\n" % home)
    passdb, userdb = auth_blocks(conf)
    if defaults:
        userdb = userdb.replace("}\n", "  default_fields = home=%s/%%u\n}\n" % other)
    dc = tndovecot.Dovecot(str(tmp_path / "dovecot"), passdb=passdb, userdb=userdb,
                           extra_config="auth_debug = yes\n", auth_modules=[MODULE])
    try:
        mark = dc.log_mark()
        login_and_append(dc, "bob@acme.example")
        assert os.path.isdir(home / "acme.example" / "bob" / "Maildir")
        assert not other.exists()
        reused = re.escape("tenant(bob@acme.example,") + r"[^\n]*" + \
            re.escape("userdb fields from this login's passdb lookup")
        dc.wait_log(r"userdb out: USER\t", mark)   # the userdb step was logged
        assert (re.search(reused, dc.log_since(mark)) is None) == defaults, \
            dc.log_since(mark)[-3000:]
    finally:
        dc.stop()


# --- directory down: last, it leaves slapd frozen for a while ----------------

def test_slapd_frozen_is_temporary_failure_within_deadline(stack, store):
    user = "erin@acme-mail.example"     # never looked up before: no cache
    stack.redis.flushall()
    mark = store.log_mark()
    stack.slapd.freeze()
    try:
        t0 = time.monotonic()
        rc, fields, out = auth_test(store, user)
        elapsed = time.monotonic() - t0
        assert rc != 0, out
        assert "unknown" not in out.lower(), out
        assert elapsed < LOOKUP_TIMEOUT + 1.5, "took %.2f s" % elapsed
        store.wait_log(re.escape("tenant(%s): lookup failed (temporary failure)"
                                 % user), mark)
        assert "tenant(%s): unknown user" % user not in store.log_since(mark)

        r = store.doveadm("user", user)
        assert r.returncode == 75, r.stdout + r.stderr     # EX_TEMPFAIL

        c = store.imap_connect(timeout=LOOKUP_TIMEOUT + 10)
        try:
            with pytest.raises(imaplib.IMAP4.error) as e:
                c.login(user, PASSWORD)
            assert "UNAVAILABLE" in str(e.value), e.value
        finally:
            c.shutdown()
    finally:
        stack.slapd.thaw()
    deadline = time.monotonic() + 10
    while True:
        rc, _, out = auth_test(store, user)
        if rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rc == 0, "no login after slapd came back: " + out
