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
  * Postfix (issues 6 and 7): a private Postfix whose tables are
    tn-mapd's, tn-quota-milter on its SMTP listener, tn-submit-milter on
    submission (XCLIENT LOGIN=, no SASL), virtual_transport to
    tn-lmtp-router, whose pools are the two stores' LMTP listeners:
    1. one message to peter (pool-a, store A) and samir (pool-b, store B):
       the router's route answers, its per-recipient log lines and
       Postfix's, one copy in each store's Maildir;
    2. store A drained: peter's next message lands on store B, undrain;
    3. dave (over his quota) and art (vandelay's pool, SIZE=) refused
       452 4.2.2 at RCPT, nothing accepted;
    4. a spoofed sender 553 5.7.1 at MAIL FROM; bill's send rate set to
       2 through tnctl: two messages leave, the third 450 4.7.1 at RCPT;
    5. the milters' message.rejected and ratelimit.exceeded events as the
       receiver stored them;
  * "stop" stops every process the sandbox started, every Dovecot
    process, Postfix and its children included, and removes Postfix's
    data directory.
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
DAEMONS = ("tn-mapd", "tn-quota-milter", "tn-submit-milter", "tn-lmtp-router")


def _sandbox(d, *args, timeout=120):
    env = dict(os.environ)
    env.update({"TN_SANDBOX_DIR": str(d), "TN_SANDBOX_NO_BUILD": "1",
                "TN_BUILD_DIR": os.path.dirname(os.path.dirname(
                    binary("provisioning/tnctl")))})
    return subprocess.run(["sh", SCRIPT] + list(args), env=env, timeout=timeout,
                          capture_output=True, text=True, errors="replace")


def _pids(d):
    pids = {}
    for name in ("tn-provisiond", "tn-hookd", "receiver") + DAEMONS:
        with open(os.path.join(str(d), name + ".pid")) as f:
            pids[name] = int(f.read())
    with open(os.path.join(str(d), "postfix", "queue", "pid", "master.pid")) as f:
        pids["postfix master"] = int(f.read())
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
    pfdata = None
    try:
        r = _sandbox(d)
        if os.path.exists(os.path.join(str(d), "tn-lmtp-router.pid")):
            pids = _pids(d)
        if os.path.exists(os.path.join(str(d), "postfix", "data-dir")):
            with open(os.path.join(str(d), "postfix", "data-dir")) as f:
                pfdata = f.read().strip()
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
        ports = _check_postfix(out)
        _check_two_stores(d, out, ports)
        _check_drain(d, out, ports)
        _check_over_quota(out)
        _check_submission(out)
        _check_smtp_events(d, out)
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
    # no Postfix process of the sandbox's config dir, its data directory gone
    left = _postfix_pids(os.path.join(str(d), "postfix", "etc"))
    assert not left, "Postfix: pids %s still run" % left
    assert pfdata and pfdata.startswith("/tmp/tn-sandbox-postfix-"), pfdata
    assert not os.path.exists(pfdata), pfdata


def _postfix_pids(config_dir):
    found = []
    want = b"MAIL_CONFIG=" + config_dir.encode() + b"\0"
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % p, "rb") as f:
                if want in f.read() and tnharness.pid_alive(int(p)):
                    found.append(int(p))
        except OSError:
            pass
    return found


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
    assert types[:7] == [("tenant.created", "initrode"), ("domain.created", "initrode.example"),
                         ("mailbox.created", "michael@initrode.example"),
                         ("mailbox.created", "samir@initrode.example"),
                         ("alias.created", "info@initrode.example"),
                         ("tenant.suspended", "initrode"), ("tenant.resumed", "initrode")], ev
    # the import's creates run in parallel: any order
    assert sorted(types[7:]) == [("alias.created", "sales@initrode.example")] + \
        [("mailbox.created", "%s@initrode.example" % n) for n in ("bill", "milton", "peter")], ev
    assert "11 events of tenant initrode, sequence 1 to 11" in ev
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
    # the SMTP and submission ports, the router's control socket, which answers
    m = re.search(r"Postfix: SMTP \(port 25's role\) on 127\.0\.0\.1:(\d+), submission on "
                  r"127\.0\.0\.1:(\d+) ", tail)
    assert m, tail
    ctl = "%s/router/control.sock" % d
    assert "the router's control socket: %s\n" % ctl in tail, tail
    line = [x for x in tail.splitlines() if "router-ctl.py" in x][0].split()
    assert line[:3] == ["python3", "%s/router-ctl.py" % d, ctl], line
    r = subprocess.run(line[:3] + ["pools"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.endswith("ok 4\n"), r


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
    pool = _section(out, "== Dovecot: a tenant's storage pool", "== Postfix:")
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


def _check_postfix(out):
    """The wiring shown; returns the ports {smtp, submission, router, A, B}."""
    pf = _section(out, "== Postfix:", "== 1. ")
    assert "(exit status" not in pf, pf
    m = re.search(r"^Postfix +SMTP 127\.0\.0\.1:(\d+) \(tn-quota-milter\), "
                  r"submission 127\.0\.0\.1:(\d+) \(tn-submit-milter\)$", pf, re.M)
    assert m, pf
    ports = {"smtp": int(m.group(1)), "submission": int(m.group(2))}
    m = re.search(r"^tn-mapd +socketmap 127\.0\.0\.1:(\d+) ", pf, re.M)
    assert m, pf
    mapd = m.group(1)
    m = re.search(r"^tn-lmtp-router +LMTP 127\.0\.0\.1:(\d+), control socket ", pf, re.M)
    assert m, pf
    ports["router"] = int(m.group(1))
    m = re.search(r"stores: store A's LMTP 127\.0\.0\.2:(\d+), store B's 127\.0\.0\.3:(\d+)$",
                  pf, re.M)
    assert m, pf
    ports["A"], ports["B"] = "127.0.0.2:" + m.group(1), "127.0.0.3:" + m.group(2)
    for table in ("domains", "mailboxes", "aliases", "senders"):
        assert "socketmap:inet:127.0.0.1:%s:%s\n" % (mapd, table) in pf, table
    # tn-mapd's alias expansion, asked with Postfix's own client
    assert "\nbill@initrode.example,peter@initrode.example\n" in pf, pf
    return ports


_SENT = r"^to=<(\w+)@initrode\.example> via=pool store=(127\.0\.0\.\d:\d+) status=sent \(250 2\.0\.0 "


def _maildir_files(section, d, subject):
    """(store, user) of the message files listed, each checked to hold subject."""
    found = []
    for path in re.findall(r"^%s/dovecot/\S+$" % re.escape(str(d)), section, re.M):
        m = re.match(r".*/dovecot/(store-[AB])/home/initrode\.example/(\w+)/Maildir/new/[^/]+$",
                     path)
        assert m, path
        with open(path) as f:
            assert "\nSubject: %s\n" % subject in f.read().replace("\r", ""), path
        found.append(m.groups())
    return sorted(found)


def _check_two_stores(d, out, ports):
    one = _section(out, "== 1. ", "== 2. ")
    assert "(exit status" not in one, one
    # the router's answers: peter to pool-a (A first), samir to pool-b (B first)
    assert "ok route via=pool pool=pool-a host=- tenant=initrode status=active members=%s,%s" \
        % (ports["A"], ports["B"]) in one, one
    assert "ok route via=pool pool=pool-b host=- tenant=initrode status=active members=%s,%s" \
        % (ports["B"], ports["A"]) in one, one
    assert re.search(r"^member pool-a %s up active " % re.escape(ports["A"]), one, re.M), one
    # the SMTP dialogue: both accepted, the message queued
    assert re.search(r"^RCPT TO:<peter@initrode\.example> +250 2\.1\.5", one, re.M), one
    assert re.search(r"^RCPT TO:<samir@initrode\.example> +250 2\.1\.5", one, re.M), one
    assert re.search(r"^DATA \(sandbox: to two stores\) +250 2\.0\.0 Ok: queued as", one, re.M), one
    # Postfix's log: both sent through the router
    sent = re.findall(r"^to=<(\w+)@initrode\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:(\d+), "
                      r".*status=sent \(250 2\.0\.0 ", one, re.M)
    assert sorted(sent) == [("peter", str(ports["router"])), ("samir", str(ports["router"]))], one
    # the router's log: one line per recipient, to the store the directory names
    assert sorted(re.findall(_SENT, one, re.M)) == [("peter", ports["A"]), ("samir", ports["B"])], one
    # one copy in each store's Maildir
    assert _maildir_files(one, d, "sandbox: to two stores") == [
        ("store-A", "peter"), ("store-B", "samir")], one


def _check_drain(d, out, ports):
    two = _section(out, "== 2. ", "== 3. ")
    assert "(exit status" not in two, two
    assert "ok drained %s\n" % ports["A"] in two, two
    assert "members=%s,%s\n" % (ports["B"], ports["A"]) in two, two
    assert re.search(r"^DATA \(sandbox: during the drain\) +250 2\.0\.0 ", two, re.M), two
    assert re.findall(_SENT, two, re.M) == [("peter", ports["B"])], two
    assert _maildir_files(two, d, "sandbox: during the drain") == [("store-B", "peter")], two
    after = _section(two, "ok undrained %s\n" % ports["A"])
    assert re.search(r"^member pool-a %s up active " % re.escape(ports["A"]), after, re.M), after


def _check_over_quota(out):
    three = _section(out, "== 3. ", "== 4. ")
    assert "(exit status" not in three, three
    assert re.search(r"^RCPT TO:<dave@acme\.example> +452 4\.2\.2 ", three, re.M), three
    assert re.search(r"^RCPT TO:<art@vandelay\.example> +452 4\.2\.2 ", three, re.M), three
    # unknown: refused by Postfix itself, from tn-mapd's table, no milter asked
    assert re.search(r"^RCPT TO:<nobody@acme\.example> +550 5\.1\.1 .*User unknown in virtual "
                     r"mailbox table", three, re.M), three
    assert "\nDATA " not in three, three
    assert len(re.findall(r"^milter-reject: RCPT .*: 452 4\.2\.2 ", three, re.M)) == 2, three
    assert len(re.findall(r"^reject: RCPT .*: 550 5\.1\.1 <nobody@acme\.example>", three,
                          re.M)) == 1, three


def _check_submission(out):
    four = _section(out, "== 4. ", "== 5. ")
    assert "(exit status" not in four, four
    assert "XCLIENT LOGIN=" in four and "SASL" in four, four
    assert re.search(r"^MAIL FROM:<michael@initrode\.example> +553 5\.7\.1 ", four, re.M), four
    assert re.search(r"^send rate: +2 messages/hour", four, re.M), four
    msgs = re.split(r"^message \d+:\n", _section(four, "--count 3"), flags=re.M)[1:]
    assert len(msgs) == 3, four
    for m in msgs[:2]:
        assert re.search(r"^DATA \(sandbox: from bill \d\) +250 2\.0\.0 ", m, re.M), m
    assert re.search(r"^RCPT TO:<friend@external\.example> +450 4\.7\.1 Send limit reached "
                     r"\(2 messages per hour", msgs[2], re.M), msgs[2]
    assert "\nDATA " not in msgs[2], msgs[2]


def _check_smtp_events(d, out):
    five = _section(out, "== 5. ", "The sandbox is running")
    rows = re.findall(r"^    (\w+) +(\d+) +([a-z]+\.[a-z]+) +(.*)$", five, re.M)
    shown = {(t, e, det) for t, _, e, det in rows}
    for want in (
            ("acme", "message.rejected", "inbound dave@acme.example: over_quota 452 4.2.2"),
            ("vandelay", "message.rejected", "inbound art@vandelay.example: over_quota 452 4.2.2"),
            ("initrode", "message.rejected", "outbound michael@initrode.example: sender_not_owned "
             "553 5.7.1, login bill@initrode.example"),
            ("initrode", "message.rejected", "outbound bill@initrode.example: rate_limited "
             "450 4.7.1, login bill@initrode.example"),
            ("initrode", "ratelimit.exceeded", "mailbox bill@initrode.example: 2 of 2 messages "
             "per hour")):
        assert want in shown, (want, five)
    # what was shown is what the receiver stored
    db = sqlite3.connect(os.path.join(str(d), "receiver.sqlite3"))
    stored = set(db.execute("SELECT tenant, sequence, type FROM events").fetchall())
    db.close()
    for t, seq, e, _ in rows:
        assert (t, int(seq), e) in stored, (t, seq, e)
