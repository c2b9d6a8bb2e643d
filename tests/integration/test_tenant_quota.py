"""test_tenant_quota -- the Dovecot mail plugin tenant_quota (issue 5 §2).

Run as root with Debian's pytest after a build:
    TN_BUILD_DIR=build-d3 pytest-3 -q tests/integration/test_tenant_quota.py

One stack per module: slapd with the example DIT (tenant acme's pool
lowered to POOL bytes) and Redis from conftest, and two store Dovecots
(tests/harness/tndovecot.py) that log users in with the "tenant" auth
driver and count with

    quota = count:User quota          (the mailbox's own quota_rule)
    quota2 = tenant:Tenant pool       (lib11_tenant_quota_plugin.so)

alice (mailbox quota 2 GiB) lives on store A, bob on store B; both are
acme's. Checked through IMAP (imaplib), LMTP (smtplib) and Redis:
  * APPEND over the pool: [OVERQUOTA] while the mailbox quota has room;
    under it the delta reaches usage:ten:acme and usage:mbx:<address>;
  * COPY over the pool: [OVERQUOTA]; under it the copy is counted;
  * two stores filling one pool stop at the shared limit;
  * LMTP delivery over the pool: 552 5.2.2, and a quota.exceeded event;
  * a refusal by the mailbox's own quota: quota.exceeded scope mailbox,
    one a minute (the next counted in suppressed);
  * expunge frees pool space (usage:ten:acme goes down);
  * quota.warning for the mailbox's own limit (scope mailbox), once per
    threshold, against the mirror usage:mbx:<address>;
  * quota.warning once per threshold crossing, re-armed by an expunge
    that takes usage back below (events counted in the outbox's NDJSON
    segments, one event a line);
  * Redis stopped: mail is accepted (the pool unenforced, the mailbox
    quota still applies), warnings in the log, no crash; enforced again
    once Redis is back;
  * doveadm quota recalc -u corrects one mailbox's mirror and moves the
    tenant's counter by the same difference;
  * tnctl usage reconcile after the counters were corrupted by hand
    restores Dovecot's figures, and --check then finds no drift;
  * docs/dovecot.md's tenant_quota snippet passes doveconf -n.

Missing prerequisites fail (never skip): a skipped suite looks green.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import tndovecot as td
import tnharness as th
from conftest import require_prerequisites

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
AUTH_MODULE = os.path.join(BUILD, "dovecot-plugins", ".libs", "libauthdb_tenant.so")
PLUGIN = os.path.join(BUILD, "dovecot-plugins", ".libs", "lib11_tenant_quota_plugin.so")
TNCTL = os.path.join(BUILD, "provisioning", "tnctl")
DOC = os.path.join(TOP, "docs", "dovecot.md")

PASSWORD = "secret"
POOL = 40000                    # acme's tnStorageQuotaBytes in this module
BODY = 5000                     # bytes of body per test message
DAVE_QUOTA = 3000               # dave@acme.example's mailbox quota here
ERIN_QUOTA = 20000              # erin@acme-mail.example's (mailbox warnings)
TEN = "tn:v1:usage:ten:acme"
WARN = "tn:v1:usage:warn:ten:acme"
EXC = "tn:v1:usage:exc:ten:acme"
FAST = {"ldap_timeout": "500ms", "ldap_network_timeout": "500ms",
        "ldap_retry_down": "1s", "lookup_timeout": "1s"}


def message(n=0, size=BODY):
    return ("From: t@example.org\r\nSubject: m%d\r\n\r\n" % n
            + "x" * (size - 2) + "\r\n").encode()


def require_all():
    require_prerequisites()
    problems = td.missing_prerequisites()
    for path in (AUTH_MODULE, PLUGIN, TNCTL):
        if not os.path.isfile(path):
            problems.append("%s not found: build first (scripts/build DIR) and "
                            "set TN_BUILD_DIR" % path)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


class Topology:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.workdir = workdir
        self.stores = []
        self.outbox = os.path.join(workdir, "outbox")
        for sub in ("", "tmp", "new", "seq"):
            os.makedirs(os.path.join(self.outbox, sub), exist_ok=True)
            os.chmod(os.path.join(self.outbox, sub), 0o777)
        stack.slapd.modify("dn: tnTenantId=acme,%s\nchangetype: modify\n"
                           "replace: tnStorageQuotaBytes\ntnStorageQuotaBytes: %d\n"
                           % (th.TENANTS, POOL))
        # dave's own quota below one message: the mailbox root refuses
        stack.slapd.modify("dn: mail=dave@acme.example,tnTenantId=acme,%s\n"
                           "changetype: modify\nreplace: tnQuotaBytes\n"
                           "tnQuotaBytes: %d\n" % (th.TENANTS, DAVE_QUOTA))
        stack.slapd.modify("dn: mail=erin@acme-mail.example,tnTenantId=acme,%s\n"
                           "changetype: modify\nreplace: tnQuotaBytes\n"
                           "tnQuotaBytes: %d\n" % (th.TENANTS, ERIN_QUOTA))
        stack.redis.cli("DEL", "tn:v1:ten:acme", "tn:v1:adr:dave@acme.example",
                        "tn:v1:adr:erin@acme-mail.example")
        self.confs = []
        try:
            for name in ("A", "B"):
                self.stores.append(self._store(name))
        except BaseException:
            self.stop()
            raise
        self.a, self.b = self.stores

    def _write_conf(self, name, home):
        """One tenantmail.conf per store: the lookup lines for all, the
        auth driver's in [dovecot-auth], the plugin's outbox in
        [dovecot-quota], tnctl's provisioning account in [tnctl]."""
        with open(self.stack.conf) as f:
            text = f.read()
        text += "".join("%s = %s\n" % kv for kv in FAST.items())
        text += ("\n[dovecot-auth]\ndovecot_uid = vmail\ndovecot_gid = vmail\n"
                 "dovecot_home = %s\n" % home)
        text += "\n[dovecot-quota]\noutbox_dir = %s\n" % self.outbox
        text += ("\n[tnctl]\nprov_ldap_bind_dn = %s\nprov_ldap_bind_password_file = %s\n"
                 % (th.PROV_DN, self.stack.prov_password_file))
        path = os.path.join(self.workdir, "tenantmail-%s.conf" % name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def _store(self, name, extra_plugin="", extra_config=""):
        d = os.path.join(self.workdir, "store-" + name)
        os.makedirs(d, exist_ok=True)
        conf = self._write_conf(name, os.path.join(td.home_dir_of(d), "%d", "%n"))
        self.confs.append(conf)
        dbs = ("passdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
               "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf)
        extra = ("plugin {\n  quota = count:User quota\n  quota2 = tenant:Tenant pool\n"
                 "  quota_vsizes = yes\n  tenant_quota_config = %s\n"
                 "  tenant_quota_warning = 50 90\n%s}\n"
                 "protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n%s"
                 % (conf, extra_plugin, extra_config))
        return td.Dovecot(d, passdb=dbs[0], userdb=dbs[1], extra_config=extra,
                          mail_plugins="quota tenant_quota", extra_plugins=[PLUGIN],
                          auth_modules=[AUTH_MODULE])

    def usage(self, key=TEN):
        v = (self.stack.redis.cli("HMGET", key, "bytes", "messages").split("\n")
             + ["", ""])[:2]          # redis-cli prints nothing for nil
        return tuple(int(x) if x else 0 for x in v)

    def set_usage(self, nbytes, messages=0):
        self.stack.redis.cli("HSET", TEN, "bytes", nbytes, "messages", messages)

    def reset(self, nbytes=0):
        self.stack.redis.cli("DEL", WARN, EXC)
        self.set_usage(nbytes)

    def events(self, type_=None):
        out = []
        for path in sorted(glob.glob(os.path.join(self.outbox, "new", "*"))):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        out.append(json.loads(line))
        return [e for e in out if type_ is None or e["type"] == type_]

    def stop(self):
        td.stop_all(self.stores)


@pytest.fixture(scope="module")
def topo(stack, tmp_path_factory):
    require_all()
    t = Topology(stack, str(tmp_path_factory.mktemp("tenant-quota")))
    try:
        yield t
    finally:
        t.stop()


def append(d, user, n=0, size=BODY):
    m = d.imap(user, PASSWORD)
    try:
        typ, data = m.append("INBOX", None, None, message(n, size))
        return typ, b" ".join(x for x in data if isinstance(x, bytes)).decode()
    finally:
        m.logout()


def test_append_over_pool_refused_while_mailbox_has_room(topo):
    topo.reset(POOL - BODY // 2)
    typ, text = append(topo.a, "alice@acme.example")
    assert typ == "NO" and "[OVERQUOTA]" in text, text
    m = topo.a.imap("alice@acme.example", PASSWORD)
    try:
        typ, data = m.getquotaroot("INBOX")
        quotas = b" ".join(data[1]).decode()
    finally:
        m.logout()
    used, limit = map(int, re.search(r'"User quota" \(STORAGE (\d+) (\d+)\)', quotas).groups())
    assert used < limit, quotas           # the mailbox itself has room
    assert topo.usage()[0] == POOL - BODY // 2      # nothing counted
    # under the pool: accepted, the delta reaches the tenant and the mailbox
    topo.reset(0)
    before = topo.usage("tn:v1:usage:mbx:alice@acme.example")
    typ, text = append(topo.a, "alice@acme.example")
    assert typ == "OK", text
    size = topo.usage()[0]
    assert BODY < size < BODY + 200 and topo.usage()[1] == 1
    after = topo.usage("tn:v1:usage:mbx:alice@acme.example")
    assert (after[0] - before[0], after[1] - before[1]) == (size, 1)


def test_copy_over_pool_refused(topo):
    topo.reset(0)
    assert append(topo.a, "alice@acme.example")[0] == "OK"
    m = topo.a.imap("alice@acme.example", PASSWORD)
    try:
        m.create("Archive")
        m.select("INBOX")
        topo.reset(POOL - 100)
        typ, data = m.copy("1", "Archive")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
        topo.reset(0)
        typ, data = m.copy("1", "Archive")
        assert typ == "OK", data
    finally:
        m.logout()
    used, messages = topo.usage()
    assert BODY < used < BODY + 200 and messages == 1


def test_two_stores_share_one_pool(topo):
    topo.reset(0)
    ok = {"A": 0, "B": 0}
    refused = 0
    for i in range(20):
        for name, d, user in (("A", topo.a, "alice@acme.example"),
                              ("B", topo.b, "bob@acme.example")):
            typ, text = append(d, user, i)
            if typ == "OK":
                ok[name] += 1
            else:
                assert "[OVERQUOTA]" in text, text
                refused += 1
        if refused >= 2:
            break
    assert ok["A"] >= 3 and ok["B"] >= 3, ok
    used, messages = topo.usage()
    assert messages == ok["A"] + ok["B"]
    assert POOL - 2 * (BODY + 200) < used <= POOL, used


def test_lmtp_over_pool_552_and_exceeded_event(topo):
    topo.reset(POOL - 100)
    code, text = topo.b.lmtp_deliver("bob@acme.example", message(1))
    assert code == 552 and "5.2.2" in text, (code, text)
    ev = [e for e in topo.events("quota.exceeded") if e["data"]["where"] == "lmtp"]
    assert ev, topo.events()
    d = ev[-1]["data"]
    assert d["scope"] == "tenant" and d["address"] == "bob@acme.example"
    assert d["limit_bytes"] == POOL and ev[-1]["tenant"] == "acme"
    # under the pool the same delivery is accepted
    topo.reset(0)
    code, text = topo.b.lmtp_deliver("bob@acme.example", message(2))
    assert code == 250, (code, text)


def test_mailbox_quota_refusal_is_scope_mailbox(topo):
    topo.reset(0)               # the pool has room; dave's own quota not
    code, text = topo.a.lmtp_deliver("dave@acme.example", message(4))
    assert code == 552 and "5.2.2" in text, (code, text)
    ev = [e for e in topo.events("quota.exceeded")
          if e["data"]["address"] == "dave@acme.example"]
    assert len(ev) == 1, topo.events("quota.exceeded")
    d = ev[0]["data"]
    assert (d["scope"], d["where"], d["limit_bytes"]) == ("mailbox", "lmtp", DAVE_QUOTA)
    # a second refusal within the minute is counted, not reported
    assert topo.a.lmtp_deliver("dave@acme.example", message(5))[0] == 552
    assert len([e for e in topo.events("quota.exceeded")
                if e["data"]["address"] == "dave@acme.example"]) == 1
    assert topo.stack.redis.cli("HGET", "tn:v1:usage:exc:mbx:dave@acme.example",
                                "suppressed") == "1"


def test_expunge_frees_pool_space(topo):
    topo.reset(0)
    for i in range(2):
        assert append(topo.a, "alice@acme.example", i)[0] == "OK"
    two = topo.usage()[0]
    m = topo.a.imap("alice@acme.example", PASSWORD)
    try:
        m.select("INBOX")
        typ, data = m.search(None, "ALL")
        last = data[0].split()[-1]
        m.store(last, "+FLAGS", "\\Deleted")
        m.expunge()
    finally:
        m.logout()
    used, _ = topo.usage()
    assert 0 < used < two and abs(two - 2 * used) < 300, (two, used)


def test_warnings_once_per_crossing_and_rearmed(topo):
    def count(threshold):
        return len([e for e in topo.events("quota.warning")
                    if e["data"]["threshold_percent"] == threshold])
    base50, base90 = count(50), count(90)
    topo.reset(POOL // 2 - 100)
    assert append(topo.a, "alice@acme.example")[0] == "OK"       # crosses 50 %
    assert append(topo.a, "alice@acme.example")[0] == "OK"       # still above 50 %
    assert (count(50), count(90)) == (base50 + 1, base90)
    topo.set_usage(POOL * 9 // 10 - 100)
    assert append(topo.a, "alice@acme.example", size=1000)[0] == "OK"  # crosses 90 %
    assert (count(50), count(90)) == (base50 + 1, base90 + 1)
    ev = topo.events("quota.warning")[-1]
    assert ev["data"]["scope"] == "tenant" and ev["data"]["address"] is None
    assert ev["data"]["limit_bytes"] == POOL and ev["data"]["usage_bytes"] >= POOL * 9 // 10
    # an expunge that takes usage below both re-arms them
    topo.set_usage(POOL // 4)
    m = topo.a.imap("alice@acme.example", PASSWORD)
    try:
        m.select("INBOX")
        m.store("1", "+FLAGS", "\\Deleted")
        m.expunge()
    finally:
        m.logout()
    assert topo.stack.redis.cli("HLEN", WARN) == "0"
    topo.set_usage(POOL // 2 - 100)
    assert append(topo.a, "alice@acme.example")[0] == "OK"
    assert (count(50), count(90)) == (base50 + 2, base90 + 1)


QUOTA_WARNING_SCRIPT = os.path.join(TOP, "examples", "quota-warning.sh")


def test_dovecot_quota_warning_mails_the_user_from_the_pool_root(topo):
    """Dovecot's own quota2_warning on the pool root (backend tenant) runs
    examples/quota-warning.sh once when an APPEND takes the pool across
    the threshold; the warning mail lands in the user's INBOX, the pool
    not enforced for it."""
    wd = os.path.join(topo.workdir, "store-W")
    # the script runs as vmail: a copy where vmail can reach it (the
    # checkout may be under a directory only root enters, /root)
    os.makedirs(wd, exist_ok=True)
    script = os.path.join(wd, "quota-warning.sh")
    shutil.copy(QUOTA_WARNING_SCRIPT, script)
    os.chmod(script, 0o755)
    store = topo._store("W", extra_plugin=(
        "  quota2_warning = storage=50%% quota-warning pool 50 %u\n"), extra_config=(
        "service quota-warning {\n  executable = script %s -c %s/dovecot.conf\n"
        "  user = vmail\n"
        "  unix_listener quota-warning {\n    user = vmail\n  }\n}\n"
        # dovecot-lda, run by the script as vmail, asks auth-userdb, reports
        # to stats-writer and writes the log itself
        "service auth {\n  unix_listener auth-userdb {\n    user = vmail\n  }\n}\n"
        "service stats {\n  unix_listener stats-writer {\n    mode = 0666\n  }\n}\n"
        % (script, wd)))
    topo.stores.append(store)
    os.chmod(store.log_path(), 0o666)
    subject = "Subject: The mail storage shared by your organisation is 50% full"
    inbox = os.path.join(td.home_dir_of(wd), "acme.example", "bob", "Maildir")

    def warnings():
        found = []
        for sub in ("new", "cur"):
            for f in glob.glob(os.path.join(inbox, sub, "*")):
                with open(f, "rb") as fh:
                    if subject.encode() in fh.read():
                        found.append(f)
        return found

    topo.reset(POOL // 2 - 1000)
    assert append(store, "bob@acme.example", size=500)[0] == "OK"     # below 50 %
    assert append(store, "bob@acme.example")[0] == "OK"               # crosses it
    deadline = time.monotonic() + 10
    while not warnings() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(warnings()) == 1, store.log_text()[-3000:]
    assert append(store, "bob@acme.example", size=500)[0] == "OK"     # still above
    time.sleep(1)
    assert len(warnings()) == 1


def test_mailbox_warnings_scope_mailbox(topo):
    erin = "erin@acme-mail.example"
    topo.reset(0)
    topo.stack.redis.cli("DEL", "tn:v1:usage:mbx:" + erin, "tn:v1:usage:warn:mbx:" + erin)

    def mine():
        return [e["data"]["threshold_percent"] for e in topo.events("quota.warning")
                if e["data"]["address"] == erin]
    assert topo.a.lmtp_deliver(erin, message(6, 11000))[0] == 250     # 55 %
    assert mine() == [50]
    assert topo.a.lmtp_deliver(erin, message(7, 1000))[0] == 250      # 60 %
    assert mine() == [50]
    assert topo.a.lmtp_deliver(erin, message(8, 7000))[0] == 250      # 95 %
    assert mine() == [50, 90]
    ev = [e for e in topo.events("quota.warning") if e["data"]["address"] == erin][-1]
    assert ev["data"]["scope"] == "mailbox" and ev["data"]["limit_bytes"] == ERIN_QUOTA
    assert ev["data"]["usage_bytes"] >= ERIN_QUOTA * 9 // 10
    assert topo.usage()[0] < POOL // 2          # no pool warning came with them


def test_redis_stopped_accepts_mail_without_crash(topo):
    redis = topo.stack.redis
    topo.reset(POOL)            # the pool is full...
    mark = topo.a.log_mark()
    redis.stop()
    try:
        t0 = time.monotonic()
        typ, text = append(topo.a, "alice@acme.example")   # ...but unknown now
        assert typ == "OK", text
        code, text = topo.a.lmtp_deliver("alice@acme.example", message(3))
        assert code == 250, (code, text)
        assert time.monotonic() - t0 < 10
        log = topo.a.log_since(mark)
        assert "pool usage unknown, not enforced" in log
        assert "not counted (run tnctl usage reconcile --tenant acme)" in log
        assert not re.search(r"Panic|Fatal|killed with signal", log), log
    finally:
        redis.start()
    # Redis back (empty: no persistence in tests): enforced again
    topo.reset(POOL)
    deadline = time.monotonic() + 10
    while True:
        typ, text = append(topo.a, "alice@acme.example")
        if typ == "NO" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert typ == "NO" and "[OVERQUOTA]" in text, text


def doveadm_figures(topo, user):
    total = [0, 0]
    for d in topo.stores:
        r = d.doveadm("-f", "flow", "mailbox", "status", "-u", user, "-t",
                      "messages vsize", "*")
        if r.returncode == 67:
            continue
        assert r.returncode == 0, r.stderr
        f = dict(kv.split("=") for kv in r.stdout.split())
        total[0] += int(f["vsize"])
        total[1] += int(f["messages"])
    return tuple(total)


def tnctl(topo, *args):
    cmd = [TNCTL, "-c", topo.confs[0], "usage", "reconcile",
           "--tenant", "acme"]
    for d in topo.stores:
        cmd += ["--doveadm", "doveadm -c %s" % d.conf]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)


def test_reconcile_restores_corrupted_counters(topo):
    topo.stack.redis.cli("HSET", TEN, "bytes", 987654321, "messages", 4242)
    topo.stack.redis.cli("HSET", "tn:v1:usage:mbx:alice@acme.example", "bytes", 1,
                         "messages", 1)
    r = tnctl(topo)
    assert r.returncode == 0, r.stderr
    assert "mbx alice@acme.example: bytes 1 -> " in r.stdout, r.stdout
    assert re.search(r"^ten acme: bytes \d+ -> ", r.stdout, re.M), r.stdout
    alice, bob = doveadm_figures(topo, "alice@acme.example"), \
        doveadm_figures(topo, "bob@acme.example")
    assert alice[0] > 0 and bob[0] > 0
    assert topo.usage("tn:v1:usage:mbx:alice@acme.example") == alice
    assert topo.usage("tn:v1:usage:mbx:bob@acme.example") == bob
    erin = doveadm_figures(topo, "erin@acme-mail.example")
    assert topo.usage("tn:v1:usage:mbx:erin@acme-mail.example") == erin
    # no other mailbox of acme got mail in this module
    assert topo.usage() == (alice[0] + bob[0] + erin[0], alice[1] + bob[1] + erin[1])
    used = alice[0] + bob[0] + erin[0]
    r = tnctl(topo, "--check", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["drift"] == [] and report["bytes"] == used


def test_doveadm_quota_recalc_corrects_one_mailbox(topo):
    """doveadm quota recalc -u: the mailbox's mirror set to Dovecot's count,
    the tenant's counter moved by the same difference."""
    mbx = "tn:v1:usage:mbx:alice@acme.example"
    topo.stack.redis.cli("HSET", TEN, "bytes", 1000000, "messages", 100)
    topo.stack.redis.cli("HSET", mbx, "bytes", 10, "messages", 1)
    r = topo.a.doveadm("quota", "recalc", "-u", "alice@acme.example")
    assert r.returncode == 0, r.stderr
    alice = doveadm_figures(topo, "alice@acme.example")
    assert alice[0] > 10
    assert topo.usage(mbx) == alice
    assert topo.usage() == (1000000 + alice[0] - 10, 100 + alice[1] - 1)


def doc_snippet():
    with open(DOC) as f:
        blocks = re.findall(r"```\n(.*?)```", f.read(), re.S)
    found = [b for b in blocks if b.startswith("# tenant_quota")]
    assert len(found) == 1, "docs/dovecot.md: one '# tenant_quota' snippet expected"
    return found[0]


def test_doc_snippet_passes_doveconf(tmp_path):
    conf = tmp_path / "dovecot.conf"
    conf.write_text("base_dir = %s/run\nssl = no\nprotocols = imap lmtp\n%s"
                    % (tmp_path, doc_snippet()))
    doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
    r = subprocess.run([doveconf, "-n", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "quota2 = tenant:Tenant pool" in r.stdout
    assert "tenant_quota" in r.stdout


def test_man_page_documents_every_plugin_setting():
    """Every name tenant_quota_settings_read() asks Dovecot for has a .TP
    entry in tenantmail-dovecot(7)'s MAIL PLUGIN section, and no other."""
    src = os.path.join(TOP, "dovecot-plugins", "tenant-quota-plugin.c")
    with open(src) as f:
        code = set(re.findall(r'mail_user_plugin_getenv\(user, "([a-z_]+)"\)', f.read()))
    assert {"tenant", "tenant_quota_bytes", "tenant_quota_config",
            "tenant_quota_warning"} <= code
    with open(os.path.join(TOP, "man", "tenantmail-dovecot.7")) as f:
        page = f.read()
    m = re.search(r"^\.SH MAIL PLUGIN tenant_quota\n(.*?)^\.SH ", page, re.S | re.M)
    assert m, "tenantmail-dovecot.7 has no MAIL PLUGIN tenant_quota section"
    documented = set(re.findall(r"^\.TP\n\.BR? ([a-z_]+)", m.group(1), re.M))
    assert documented == code, (sorted(documented), sorted(code))
