"""The README's first command, scripts/sandbox, end to end.

Runs the script as a new ISP admin would (with TN_SANDBOX_NO_BUILD=1: the
binaries of TN_BUILD_DIR, no scripts/deps, no build) in a directory of
its own, reads its whole output, and always runs "scripts/sandbox stop"
afterwards. What it holds the sandbox to:

  * the lookups of the example directory and the three emitted billing
    events delivered to the example receiver;
  * the provisioning scenario through tn-provisiond with tnctl: tenant
    initrode, its domain, mailboxes and aliases created, the lookup seeing
    the new mailbox, the tenant's suspension cascading, the tenant
    token's 404 for acme's mailbox, the CSV import;
  * initrode's events, as the receiver stored them, numbered 1..N without
    a gap, of the expected types;
  * the tokens: digests only in the tokens file, the clear tokens in files
    of mode 0600;
  * Dovecot (issue 5): two stores (127.0.0.2, 127.0.0.3) and a proxy, all
    with the tenant auth driver; michael (tenant pool-a) logs in through
    the proxy to store A, samir (pool-b) to store B, as the proxy's
    passdb answer, its log and the marker messages in the stores'
    Maildirs show; after michael's host is set to store B his next login
    through the proxy lands there (his first marker stays on A);
  * the tenant_quota plugin on both stores: tenant vandelay's 1 MiB pool,
    art on store A and kel on store B, 300 KiB appends through the proxy
    in turn: the third fills the pool, the fourth (kel's, whose own quota
    has room) is refused [OVERQUOTA]; both stores show the same pool
    usage; the 80 % warning and the refusal in the logs and as
    quota.warning and quota.exceeded events at the receiver; tnctl usage
    reconcile --check finds no drift;
  * "stop" stops every process the sandbox started, every Dovecot
    process included.
"""

import hashlib
import os
import re
import sqlite3
import stat
import subprocess

import tndovecot
import tnharness
from conftest import require_prerequisites
from tnprobe import ROOT, binary

SCRIPT = os.path.join(ROOT, "scripts", "sandbox")
DOVECOTS = ("proxy", "store-A", "store-B")


def _sandbox(d, *args, timeout=60):
    env = dict(os.environ)
    env.update({"TN_SANDBOX_DIR": str(d), "TN_SANDBOX_NO_BUILD": "1",
                "TN_BUILD_DIR": os.path.dirname(os.path.dirname(
                    binary("provisioning/tnctl")))})
    return subprocess.run(["sh", SCRIPT] + list(args), env=env, timeout=timeout,
                          capture_output=True, text=True, errors="replace")


def _pids(d):
    pids = {}
    for name in ("tn-provisiond", "tn-hookd", "receiver"):
        with open(os.path.join(str(d), name + ".pid")) as f:
            pids[name] = int(f.read())
    for name, pid in tnharness._read_pids(str(d)):
        pids[name] = pid
    return pids


def _dovecot_masters(d):
    """{instance: master pid} of the sandbox's Dovecots (each master leads
    the session of all its processes)."""
    masters = {}
    for name in DOVECOTS:
        path = os.path.join(str(d), "dovecot", name, "pid")
        if os.path.exists(path):
            with open(path) as f:
                masters[name] = int(f.read())
    return masters


def _section(out, start, end=None):
    """The output from the line containing start to the one containing end."""
    i = out.index(start)
    return out[i:out.index(end, i)] if end else out[i:]


def test_sandbox(tmp_path):
    require_prerequisites()
    problems = tndovecot.missing_prerequisites()
    assert not problems, "Dovecot prerequisites: " + "; ".join(problems)
    d = tmp_path / "sbx"
    pids = {}
    masters = {}
    try:
        r = _sandbox(d)
        if os.path.exists(os.path.join(str(d), "tn-provisiond.pid")):
            pids = _pids(d)
        masters = _dovecot_masters(d)
        out = r.stdout
        assert r.returncode == 0, out + r.stderr
        assert r.stderr == "", r.stderr
        _check_lookups_and_hook(out)
        _check_provisioning(out)
        _check_events(d, out)
        _check_tokens(d)
        _check_dovecot(d, out, masters)
        _check_pool(out)
        _check_by_hand(d, out)
    finally:
        s = _sandbox(d, "stop")
    assert s.returncode == 0, s.stdout + s.stderr
    assert "sandbox stopped" in s.stdout
    for name, pid in pids.items():
        assert not tnharness.pid_alive(pid), "%s (pid %d) still runs" % (name, pid)
    # no Dovecot process left: not a master, not one it forked (its session)
    for name, pid in masters.items():
        left = tndovecot._session_pids(pid)
        assert not left, "Dovecot %s: pids %s still run" % (name, left)
    for name in DOVECOTS:
        assert not os.path.exists(os.path.join(str(d), "dovecot", name, "pid")), name


def _check_lookups_and_hook(out):
    assert "$ tnctl lookup alice@acme.example\n" in out
    assert "usage:             5242880 bytes in 42 messages (OVER QUOTA)" in out
    assert "status:            suspended (tenant: non-payment)" in out
    assert "nobody@acme.example: not found (no such address)\n(exit status 1)" in out
    hook = _section(out, "== billing hook", "== provisioning")
    assert hook.count(" INFO processed ") == 3, hook
    assert "3 delivered, 0 retry, 0 dead" in hook


def _check_provisioning(out):
    prov = _section(out, "== provisioning")
    # every step shows its command, and none but the refusal failed
    for cmd in ("$ tnctl tenant create initrode ", "$ tnctl domain create initrode.example",
                "$ tnctl mailbox create michael@initrode.example ",
                "$ tnctl mailbox create samir@initrode.example ",
                "$ tnctl alias create info@initrode.example ",
                "$ tnctl mailbox list --tenant initrode", "$ tnctl tenant suspend initrode",
                "$ tnctl tenant resume initrode", "$ tnctl import "):
        assert cmd in prov, cmd
    assert prov.count("(exit status") == 1, prov
    assert "tnctl: " not in prov.replace(
        "tnctl: mailbox get alice@acme.example: 404", ""), prov
    # the table, with the password mailbox and the one with a quota
    table = _section(prov, "$ tnctl mailbox list --tenant initrode", "\n\n")
    assert re.search(r"michael@initrode\.example +initrode +active", table), table
    assert re.search(r"samir@initrode\.example +initrode +active +2 GiB", table), table
    # the lookup sees the new mailbox at once, with the tenant's default quota
    look = _section(prov, "$ tnctl lookup michael@initrode.example", "\n\n")
    assert "quota:             1.0 GiB (tenant)" in look, look
    # suspension cascades to the mailboxes, resuming undoes it
    assert "status:            suspended (tenant: unpaid invoice)" in prov
    resumed = _section(prov, "$ tnctl tenant resume initrode")
    assert "status:            active" in resumed
    # the tenant token: its own tenant only, 404 (exit 1) for acme's mailbox
    refusal = _section(prov, "tnctl mailbox get alice@acme.example\n", "\n\n")
    assert "404 not_found" in refusal and "(exit status 1)" in refusal, refusal
    own = _section(prov, "initrode.token) tnctl mailbox list\n", "\n\n")
    assert "acme.example" not in own and "michael@initrode.example" in own, own
    # the import: 4 lines with progress, all created, then the aliases
    imp = _section(prov, "$ tnctl import ", "\n\n")
    assert re.search(r"^import: 4 lines to create", imp, re.M), imp
    assert ": 4 created, 0 exists, 0 failed, 0 invalid" in imp, imp
    assert "sales@initrode.example  initrode  active  bill@initrode.example, " \
        "peter@initrode.example" in prov


def _check_events(d, out):
    ev = _section(out, "# the events of these changes", "== Dovecot")
    rows = re.findall(r"^    (\d+) +([a-z]+\.[a-z]+) +(\S+)", ev, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1)), ev
    types = [(t, o) for _, t, o in rows]
    assert types[:6] == [("tenant.created", "initrode"), ("domain.created", "initrode.example"),
                         ("mailbox.created", "michael@initrode.example"),
                         ("mailbox.created", "samir@initrode.example"),
                         ("tenant.suspended", "initrode"), ("tenant.resumed", "initrode")], ev
    # the import's creates run in parallel: any order
    assert sorted(types[6:]) == [("mailbox.created", "%s@initrode.example" % n)
                                 for n in ("bill", "milton", "peter")], ev
    assert "9 events of tenant initrode, sequence 1 to 9" in ev
    # what was shown is what the receiver stored: verified, one each (the
    # Dovecot part's updates come after: tenant.updated, mailbox.updated)
    db = sqlite3.connect(os.path.join(str(d), "receiver.sqlite3"))
    stored = db.execute("SELECT sequence, type FROM events WHERE tenant = 'initrode'"
                        " AND sequence <= ? ORDER BY sequence", (len(rows),)).fetchall()
    db.close()
    assert stored == [(int(s), t) for s, t, _ in rows]


def _check_tokens(d):
    d = str(d)
    digests = open(os.path.join(d, "provd-tokens")).read()
    for name, role in (("admin.token", "admin"), ("initrode.token", "tenant:initrode")):
        path = os.path.join(d, name)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
        token = open(path).read().strip()
        assert re.fullmatch(r"[0-9a-f]{48}", token), name
        assert token not in digests
        assert "%s %s\n" % (hashlib.sha256(token.encode()).hexdigest(), role) in digests
    assert stat.S_IMODE(os.stat(os.path.join(d, "michael.pw")).st_mode) == 0o600


def _check_by_hand(d, out):
    tail = _section(out, "The sandbox is running")
    m = re.search(r"tn-provisiond, the REST API, on (http://127\.0\.0\.1:\d+)", tail)
    assert m, tail
    assert "admin token:           %s/admin.token" % d in tail
    assert "curl -H \"Authorization: Bearer $(cat %s/admin.token)\" '%s/v1/mailboxes" \
        % (d, m.group(1)) in tail
    # the curl command shown works
    line = [x for x in tail.splitlines() if x.strip().startswith("curl ")][0]
    r = subprocess.run(["sh", "-c", line.strip() + " -sf"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0 and '"address":"michael@initrode.example"' in r.stdout, r


def _check_dovecot(d, out, masters):
    dv = _section(out, "== Dovecot", "== Dovecot: a tenant's storage pool")
    assert sorted(masters) == sorted(DOVECOTS), masters
    assert "(exit status" not in dv, dv
    m = re.search(r"^store A  IMAP 127\.0\.0\.2:(\d+) ", dv, re.M)
    assert m, dv
    sport = int(m.group(1))
    assert re.search(r"^store B  IMAP 127\.0\.0\.3:%d " % sport, dv, re.M), dv
    assert re.search(r"^proxy    IMAP 127\.0\.0\.1:\d+ ", dv, re.M), dv
    assert "dovecot_pool_hosts = pool-a:127.0.0.2 pool-b:127.0.0.3" in dv
    # the proxy's passdb: michael to store A, samir to store B
    for user, host in (("michael", "127.0.0.2"), ("samir", "127.0.0.3")):
        look = _section(dv, "auth lookup %s@initrode.example\n" % user, "\n\n")
        assert re.search(r"^  proxy +: y$", look, re.M), look
        assert re.search(r"^  host +: %s$" % re.escape(host), look, re.M), look
        assert re.search(r"^  port +: %d$" % sport, look, re.M), look
    # three logins through the proxy, each appending its marker
    assert dv.count("\nLOGIN   OK Logged in\n") == 3, dv
    assert dv.count("\nAPPEND  OK [APPENDUID ") == 3, dv
    proxied = r"^proxy\((\w+)@initrode\.example,(127\.0\.0\.\d):(\d+)\): Started proxying$"
    markers = r"^%s/dovecot/(store-[AB])/home/initrode\.example/(\w+)/Maildir/\S+$" \
        % re.escape(str(d))
    before, after = dv.split("# move michael to store B")
    # before the move: the proxy went to A for michael, to B for samir,
    # and the markers are in those stores' Maildirs
    assert re.findall(proxied, before, re.M) == [
        ("michael", "127.0.0.2", str(sport)), ("samir", "127.0.0.3", str(sport))], before
    assert sorted(re.findall(markers, before, re.M)) == [
        ("store-A", "michael"), ("store-B", "samir")], before
    # after it: the proxy's answer is store B, his next login lands there,
    # his first marker stays on A
    assert re.search(r"^  host +: 127\.0\.0\.3$", after, re.M), after
    assert re.findall(proxied, after, re.M)[-1] == ("michael", "127.0.0.3", str(sport)), after
    assert sorted(re.findall(markers, after, re.M)) == [
        ("store-A", "michael"), ("store-B", "michael"), ("store-B", "samir")], after
    # the paths shown are real files
    for line in re.findall(r"^%s/dovecot/store-\S+$" % re.escape(str(d)), after, re.M):
        assert os.path.isfile(line), line
    # each store's own log has the logins it served, and only those
    for store, users in (("store-A", ["michael"]), ("store-B", ["samir", "michael"])):
        with open(os.path.join(str(d), "dovecot", store, "dovecot.log")) as f:
            log = f.read()
        assert re.findall(r"imap-login: Info: Login: user=<(\w+)@initrode\.example>",
                          log) == users, (store, log)


def _check_pool(out):
    pool = _section(out, "== Dovecot: a tenant's storage pool", "The sandbox is running")
    assert "(exit status" not in pool, pool
    assert "quota2 = tenant:Tenant pool" in pool, pool
    appends = re.findall(r"^(\w+)@vandelay\.example +APPEND 300 KiB: (OK|NO) ?(.*)$", pool, re.M)
    assert [a[:2] for a in appends] == [("art", "OK"), ("kel", "OK"), ("art", "OK"),
                                        ("kel", "NO")], pool
    assert appends[-1][2].startswith("[OVERQUOTA]"), appends
    # each store: its mailbox's own usage, the whole pool's (KiB)
    for user, own in (("art", 2), ("kel", 1)):
        get = _section(pool, "quota get -u %s@vandelay.example\n" % user, "\n\n")
        m = re.search(r"^User quota +STORAGE +(\d+) +1024 ", get, re.M)
        assert m and int(m.group(1)) // 300 == own, get
        m = re.search(r"^Tenant pool +STORAGE +(\d+) +1024 ", get, re.M)
        assert m and int(m.group(1)) // 300 == 3, get
    assert re.search(r"^tenant_quota: tenant=vandelay: pool usage \d+ of 1048576 bytes "
                     r"reached 80%$", pool, re.M), pool
    assert re.search(r"^tenant_quota: tenant=vandelay: refused \d+ bytes: pool full", pool,
                     re.M), pool
    # the counters agree with Dovecot's own figures on both stores
    assert re.search(r"^tenant vandelay: 2 mailboxes, \d+ bytes, 3 messages \(no drift\)$",
                     pool, re.M), pool
    events = re.findall(r"^    \d+ +(quota\.\w+) +tenant vandelay, (.*)$", pool, re.M)
    assert [e[0] for e in events] == ["quota.warning", "quota.exceeded"], pool
    assert events[0][1].startswith("80 % reached"), events
    assert events[1][1].startswith("kel@vandelay.example refused "), events
