"""test_quota_milter -- tn-quota-milter against the real slapd and Redis.

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build-qmilter pytest-3 -q tests/integration/test_quota_milter.py

Environment:
  TN_BUILD_DIR  the build directory holding milters/tn-quota-milter
                (default: the top of the source tree, an in-tree build)

The milter runs as a real process on a TCP socket; miltertest (Debian
package miltertest) plays Postfix with the Lua scripts of tests/milter/.
slapd (the example DIT) and Redis come from tnharness.Stack; usage
counters are seeded in Redis directly, under the keys the Dovecot
tenant_quota plugin writes (docs/redis-keys.md).

miltertest shows only the kind of each answer (continue, replycode);
the exact code of every recipient is read from the milter's log line
for that recipient, which each test provokes first.  Checked:
  * negotiation: only the steps the milter uses, no-reply steps asked for;
  * every RCPT answer: unknown 550 5.1.1, deleted 550 5.1.1, suspended
    (mailbox, domain, tenant) 550 5.2.1, over quota 452 4.2.2, too large
    for the plan 552 5.3.4, aliases and foreign domains continue; never
    SMFIR_ACCEPT;
  * SIZE= against a mailbox's room, one tenant's pool shared by two
    mailboxes, recipients of three tenants in one transaction each with
    their own answer, traffic counted once per tenant;
  * end of message with the real size: refused only when every
    recipient fails;
  * abort and disconnect free the per-message and per-session state;
  * events: message.rejected and quota.exceeded in the outbox with the
    documented fields, rate-limited per tenant and reason;
  * faults: slapd frozen (SIGSTOP) and killed -> 451 4.3.0 within the
    deadline, normal once it is back; Redis stopped -> quota unenforced
    and counted in /metrics, lookups go on, never a 5xx for a quota;
  * SIGUSR1 reload (SIGHUP would stop libmilter), bad reload kept out;
  * man/tn-quota-milter.8 documents exactly the parameter table.

Missing prerequisites fail (never skip): a skipped suite looks green.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

import tnharness as th
from test_docs import TABLE_ENTRY_RE, page_parameters, report

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
MILTER = os.path.join(BUILD, "milters", "tn-quota-milter")
SOURCE = os.path.join(TOP, "milters", "tn-quota-milter.c")
PAGE = os.path.join(TOP, "man", "tn-quota-milter.8")
LUA = os.path.join(TOP, "tests", "milter")
PREFIX = "tn:v1:"
LOOKUP_TIMEOUT = 1.0            # quota_milter_lookup_timeout below
HEADER = "X-Tenantmail-Tenant"  # quota_milter_tenant_header of the module's milter
MiB = 1024 * 1024
GiB = 1024 * MiB


def require_prerequisites():
    problems = []
    if not shutil.which("miltertest"):
        problems.append("miltertest missing (apt-get install miltertest)")
    if not (os.path.isfile(MILTER) and os.access(MILTER, os.X_OK)):
        problems.append("%s missing: build first (scripts/build DIR) and set "
                        "TN_BUILD_DIR" % MILTER)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


class QuotaMilter:
    """tn-quota-milter on a free TCP port, logging to WORKDIR/milter.log."""

    def __init__(self, stack, workdir, extra="", unix=None, header=""):
        self.stack = stack
        self.header = header
        self.workdir = str(workdir)
        self.port = th.free_port()
        self.metrics_port = th.free_port()
        self.unix = unix
        self.socket = ("unix:" + unix) if unix else "inet:%d@127.0.0.1" % self.port
        self.outbox = os.path.join(self.workdir, "outbox")
        for sub in ("tmp", "new", "seq"):
            os.makedirs(os.path.join(self.outbox, sub), exist_ok=True)
            os.chmod(os.path.join(self.outbox, sub), 0o2770)
        self.conf = os.path.join(self.workdir, "tenantmail.conf")
        self.log_path = os.path.join(self.workdir, "milter.log")
        self.extra = extra
        self.write_conf()
        self.proc = None
        self.start()

    def write_conf(self, extra=None):
        if extra is not None:
            self.extra = extra
        with open(self.stack.conf) as f:
            base = f.read()
        with open(self.conf, "w") as f:
            f.write(base + "\n".join([
                "outbox_dir = %s" % self.outbox,
                "outbox_sync = fsync",
                # every lookup reaches Redis or LDAP: the fault tests need it
                "memory_cache_ttl = 0",
                "[tn-quota-milter]",
                "quota_milter_socket = %s" % self.socket,
                "quota_milter_user =",
                "quota_milter_metrics_listen = 127.0.0.1:%d" % self.metrics_port,
                "quota_milter_lookup_timeout = %gs" % LOOKUP_TIMEOUT,
                "quota_milter_event_interval = 2s",
                "quota_milter_tenant_header = %s" % self.header,
                self.extra, ""]))

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([MILTER, "-c", self.conf, "-e"],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise th.HarnessError("tn-quota-milter exited %s:\n%s" % (
                    self.proc.returncode, self.log_text()[-3000:]))
            if "info: started:" in self.log_text():
                if self.unix:
                    return
                try:
                    th.wait_port("127.0.0.1", self.port, timeout=0.2)
                    return
                except TimeoutError:
                    pass
            if time.monotonic() > deadline:
                raise th.HarnessError("tn-quota-milter not ready:\n%s"
                                      % self.log_text()[-3000:])
            time.sleep(0.05)

    def stop(self):
        """SIGTERM; libmilter takes up to ~4 s to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        return len(self.log_text())

    def log_since(self, mark):
        return self.log_text()[mark:]

    def metrics(self):
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def events(self):
        out = []
        new = os.path.join(self.outbox, "new")
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name)) as f:
                out += [json.loads(line) for line in f if line.strip()]
        return out


def miltertest(script, timeout=60, **defs):
    """Run tests/milter/SCRIPT; returns stdout (fails on a script error)."""
    argv = ["miltertest"]
    for k, v in defs.items():
        argv += ["-D", "%s=%s" % (k, v)]
    argv += ["-s", os.path.join(LUA, script)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       cwd=LUA)
    assert r.returncode == 0, "miltertest %s failed (rc=%d):\n%s\n%s" % (
        script, r.returncode, r.stdout, r.stderr)
    return r.stdout


def transaction(milter, rcpts, **defs):
    """One transaction: ({rcpt: miltertest answer}, eom answer or None,
    {rcpt: (result, reply) from the milter's log})."""
    mark = milter.log_mark()
    out = miltertest("transaction.lua", socket=milter.socket,
                     rcpts=",".join(rcpts), **defs)
    answers = dict(re.findall(r"^rcpt (\S+) (\S+)$", out, re.M))
    eom = re.search(r"^eom (\S+)$", out, re.M)
    log = milter.log_since(mark)
    replies = {a: (res, rep) for a, res, rep in re.findall(
        r"rcpt=<([^>]*)> result=(\S+) reply=(continue|\d{3} \d\.\d\.\d+)", log)}
    assert set(answers) == set(rcpts), out
    assert set(replies) == set(rcpts), log
    for r in rcpts:
        kind = "continue" if replies[r][1] == "continue" else "replycode"
        assert answers[r] == kind, (r, answers[r], replies[r])
    return answers, eom.group(1) if eom else None, replies


def seed_usage(stack, usage):
    """Usage counters exactly as given (others removed), the way the
    Dovecot plugin leaves them: usage:{mbx,ten}:<id> {bytes, messages}."""
    r = stack.redis
    for pattern in ("usage:*", "traffic:*", "rejected:*"):
        keys = r.cli("--scan", "--pattern", PREFIX + pattern).split()
        if keys:
            r.cli("DEL", *keys)
    for key, nbytes in usage.items():
        r.cli("HSET", PREFIX + "usage:" + key, "bytes", nbytes, "messages", 1)


def drop_lookup_cache(stack):
    for pattern in ("adr:*", "dom:*", "ten:*"):
        keys = stack.redis.cli("--scan", "--pattern", PREFIX + pattern).split()
        if keys:
            stack.redis.cli("DEL", *keys)


@pytest.fixture(scope="module")
def milter(stack, tmp_path_factory):
    require_prerequisites()
    m = QuotaMilter(stack, tmp_path_factory.mktemp("qmilter"), header=HEADER)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(autouse=True)
def seeded(stack):
    """Every test starts from the harness's seed (dave over quota) and
    all servers running."""
    for server in (stack.slapd, stack.redis):
        if server.frozen:
            server.thaw()
        if not server.running():
            server.start()
    seed_usage(stack, {"mbx:dave@acme.example": 5 * MiB, "ten:acme": 5 * MiB})
    yield


# --- protocol ----------------------------------------------------------------

def test_negotiates_only_the_steps_it_uses(milter):
    out = miltertest("negotiate.lua", socket=milter.socket, header="yes")
    assert "negotiate ok" in out and "header actions yes" in out
    for opt in ("NOCONNECT", "NOHELO", "NOEOH", "NODATA", "NOUNKNOWN",
                "NR_MAIL", "NR_HDR", "NR_BODY"):
        assert "option SMFIP_%s yes" % opt in out
    for opt in ("NOMAIL", "NORCPT", "NOHDRS", "NOBODY", "NR_RCPT"):
        assert "option SMFIP_%s no" % opt in out


EXPECTED = {
    "alice@acme.example": ("pass", "continue"),
    "nobody@acme.example": ("unknown", "550 5.1.1"),
    "zed@acme.example": ("deleted", "550 5.1.1"),
    "carol@acme.example": ("suspended", "550 5.2.1"),          # mailbox
    "milton@old-initech.example": ("suspended", "550 5.2.1"),  # domain
    "hank@globex.example": ("suspended", "550 5.2.1"),         # tenant
    "info@globex.example": ("suspended", "550 5.2.1"),         # alias, tenant
    "dave@acme.example": ("over_quota", "452 4.2.2"),
    "sales@acme.example": ("pass", "continue"),                # alias
    "partner@external.example": ("foreign", "continue"),
    "peter@initech.example": ("pass", "continue"),
}


def test_every_reply_code_in_one_transaction(milter):
    answers, eom, replies = transaction(milter, list(EXPECTED), size=2000,
                                        body=2000)
    assert replies == EXPECTED
    assert "accept" not in answers.values()
    assert eom == "continue"


def test_message_larger_than_the_plan(milter):
    # erin: 10 MiB, acme's plan 25 MiB, initech's no limit
    _, eom, replies = transaction(
        milter, ["erin@acme-mail.example", "alice@acme.example", "peter@initech.example"],
        size=str(10 * MiB + 1), finish="abort")
    assert replies["erin@acme-mail.example"] == ("too_large", "552 5.3.4")
    assert replies["alice@acme.example"] == ("pass", "continue")
    assert replies["peter@initech.example"] == ("pass", "continue")
    _, _, replies = transaction(milter, ["alice@acme.example"], size=str(25 * MiB + 1),
                                finish="abort")
    assert replies["alice@acme.example"] == ("too_large", "552 5.3.4")


def test_declared_size_against_the_mailbox_room(milter, stack):
    # bob inherits acme's 1 GiB mailbox quota
    seed_usage(stack, {"mbx:bob@acme.example": GiB - 1000, "ten:acme": GiB - 1000})
    _, _, r = transaction(milter, ["bob@acme.example"], size="1000", finish="abort")
    assert r["bob@acme.example"] == ("pass", "continue")
    _, _, r = transaction(milter, ["bob@acme.example"], size="1001", finish="abort")
    assert r["bob@acme.example"] == ("over_quota", "452 4.2.2")
    # no SIZE=: the mailbox still has room
    _, _, r = transaction(milter, ["bob@acme.example"], finish="abort")
    assert r["bob@acme.example"] == ("pass", "continue")


def test_one_tenant_pool_shared_by_two_mailboxes(milter, stack):
    # acme's pool is 10 GiB: alice and bob each far below their own quota
    pool = 10 * GiB
    seed_usage(stack, {"mbx:alice@acme.example": GiB,
                       "mbx:bob@acme.example": 100,
                       "ten:acme": pool - 5000})
    mark = milter.log_mark()
    reads = 'tn_quota_milter_usage_reads_total{how="%s"}'
    before = milter.metrics()
    _, _, r = transaction(milter, ["alice@acme.example", "bob@acme.example"],
                          size="4000", finish="abort")
    assert r["alice@acme.example"] == ("pass", "continue")
    assert r["bob@acme.example"] == ("pass", "continue")
    _, _, r = transaction(milter, ["alice@acme.example", "bob@acme.example"],
                          size="5001", finish="abort")
    assert r["alice@acme.example"] == ("over_quota", "452 4.2.2")
    assert r["bob@acme.example"] == ("over_quota", "452 4.2.2")
    assert milter.log_since(mark).count("scope=tenant") == 2
    # each recipient's counters came in its lookup's own round trip
    after = milter.metrics()
    assert after[reads % "with_lookup"] - before[reads % "with_lookup"] == 4
    assert after[reads % "separate"] == before[reads % "separate"]
    # the other tenant is not affected
    _, _, r = transaction(milter, ["peter@initech.example"], size="5001", finish="abort")
    assert r["peter@initech.example"] == ("pass", "continue")


def test_recipients_of_three_tenants_each_get_their_answer(milter, stack):
    rcpts = ["alice@acme.example", "hank@globex.example", "peter@initech.example",
             "dave@acme.example", "bob@acme.example"]
    answers, eom, r = transaction(milter, rcpts, size=3000, body=3000)
    assert r == {"alice@acme.example": ("pass", "continue"),
                 "hank@globex.example": ("suspended", "550 5.2.1"),
                 "peter@initech.example": ("pass", "continue"),
                 "dave@acme.example": ("over_quota", "452 4.2.2"),
                 "bob@acme.example": ("pass", "continue")}
    assert eom == "continue"
    # counted once per tenant, whatever its number of recipients, by the
    # flusher within its interval (1 s), not at the end of message
    traffic = wait_traffic(stack, {"acme", "initech"})
    assert traffic["acme"][0] == "1" and traffic["initech"][0] == "1"
    assert 3000 < traffic["acme"][1] < 3100


def read_traffic(stack):
    traffic = {}
    for key in stack.redis.cli("--scan", "--pattern", PREFIX + "traffic:*").split():
        tenant = key.split(":")[3]
        traffic[tenant] = stack.redis.cli("HGET", key, "msgs_in"), \
            int(stack.redis.cli("HGET", key, "bytes_in"))
        assert 7 * 86400 < int(stack.redis.cli("TTL", key)) <= 8 * 86400
    return traffic


def wait_traffic(stack, tenants, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        traffic = read_traffic(stack)
        if set(traffic) == tenants:
            return traffic
        assert time.monotonic() < deadline, traffic
        time.sleep(0.1)


def test_end_of_message_rechecks_with_the_real_size(milter, stack):
    seed_usage(stack, {"mbx:bob@acme.example": GiB - 3000,
                       "mbx:alice@acme.example": 0, "ten:acme": GiB})
    mark = milter.log_mark()
    # no SIZE=: bob passes RCPT, the 5000-byte message does not fit
    _, eom, r = transaction(milter, ["bob@acme.example"], body=5000)
    assert r["bob@acme.example"] == ("pass", "continue")
    assert eom == "replycode"
    assert re.search(r"end of message: size=5\d\d\d recipients=1 failing=1 "
                     r"result=over_quota reply=452 4.2.2", milter.log_since(mark))
    # with a recipient that has room, the message goes (bob is left to
    # the store's own quota at delivery)
    mark = milter.log_mark()
    _, eom, _ = transaction(milter, ["bob@acme.example", "alice@acme.example"], body=5000)
    assert eom == "continue"
    assert "recipients=2 failing=1 result=pass" in milter.log_since(mark)


def test_tenant_header_names_the_tenants_and_replaces_forgeries(milter):
    mark = milter.log_mark()
    out = miltertest("transaction.lua", socket=milter.socket, inhdr=2, hdrname=HEADER,
                     rcpts="alice@acme.example,peter@initech.example,bob@acme.example,"
                           "partner@external.example")
    assert "eom continue" in out
    assert "hdradd acme, initech" in out
    assert "hdrdelete yes" in out
    # without forgeries nothing is deleted; a message for no tenant gets none
    out = miltertest("transaction.lua", socket=milter.socket, hdrname=HEADER,
                     rcpts="partner@external.example")
    assert "hdradd (none)" in out and "hdrdelete no" in out
    assert "could not" not in milter.log_since(mark)


def test_abort_and_disconnect_free_the_state(milter):
    before = milter.metrics()
    transaction(milter, ["alice@acme.example", "bob@acme.example"], finish="abort")
    transaction(milter, ["alice@acme.example"], finish="none")
    transaction(milter, ["alice@acme.example"], body=100)
    deadline = time.monotonic() + 5
    while True:
        m = milter.metrics()
        if m["tn_quota_milter_sessions"] == 0 and m["tn_quota_milter_transactions"] == 0:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.05)
    key = 'tn_quota_milter_rcpt_decisions_total{result="pass"}'
    assert m[key] - before[key] == 4


def test_events_are_recorded_and_rate_limited(milter, stack):
    def rejected(tenant):
        return [e for e in milter.events() if e["type"] == "message.rejected"
                and e["tenant"] == tenant and e["data"]["reason"] == "unknown_recipient"]

    before = len(rejected("acme"))
    rcpts = ["ghost%d@acme.example" % i for i in range(5)]
    _, _, r = transaction(milter, rcpts, size=777, finish="abort")
    assert all(v == ("unknown", "550 5.1.1") for v in r.values())
    evs = rejected("acme")
    assert len(evs) == before + 1, "5 refusals in a window, one event"
    data = evs[-1]["data"]
    assert data == {"direction": "inbound", "address": "ghost0@acme.example",
                    "login": None, "reason": "unknown_recipient", "smtp_code": 550,
                    "enhanced_status": "5.1.1", "message_bytes": 777,
                    "suppressed": data["suppressed"]}
    time.sleep(2.1)
    transaction(milter, ["ghost9@acme.example"], finish="abort")
    evs = rejected("acme")
    assert len(evs) == before + 2
    assert evs[-1]["data"]["suppressed"] == 4
    # quota.exceeded for dave, scope mailbox, with the usage and limit
    transaction(milter, ["dave@acme.example"], size=48213, finish="abort")
    exc = [e for e in milter.events() if e["type"] == "quota.exceeded"]
    assert exc, milter.log_text()[-2000:]
    d = exc[-1]["data"]
    assert (d["scope"], d["address"], d["where"], d["usage_bytes"], d["limit_bytes"]) == \
        ("mailbox", "dave@acme.example", "smtp", 5 * MiB, MiB)
    assert d["message_bytes"] == 48213


SYS_pidfd_getfd = 438      # x86_64 and most others


def milter_side_socket(pid, port, client_port, timeout=5):
    """A duplicate of the milter's own descriptor for the connection from
    client_port (pidfd_getfd(2)), as a socket object."""
    deadline = time.monotonic() + timeout
    inode = None
    while inode is None:
        with open("/proc/%d/net/tcp" % pid) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (int(local.split(":")[1], 16) == port and
                        int(remote.split(":")[1], 16) == client_port and
                        fields[9] != "0"):          # 0: not accepted yet
                    inode = fields[9]
        assert inode is not None or time.monotonic() < deadline, "not accepted"
        time.sleep(0.02)
    target = None
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                target = int(fd)
        except OSError:
            pass
    assert target is not None, "no descriptor of the milter holds socket %s" % inode
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(SYS_pidfd_getfd, pidfd, target, 0)
        assert fd >= 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def test_tcp_connections_have_nodelay(milter):
    with socket.create_connection(("127.0.0.1", milter.port), timeout=5) as c:
        s = milter_side_socket(milter.proc.pid, milter.port, c.getsockname()[1])
        with s:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, \
                "the milter's accepted connection has Nagle's algorithm on"


def test_unix_socket_and_privilege_drop(stack, tmp_path):
    require_prerequisites()
    os.chmod(str(tmp_path), 0o755)
    path = str(tmp_path / "quota-milter.sock")
    m = QuotaMilter(stack, tmp_path, unix=path, extra="\n".join([
        "quota_milter_socket = unix:%s" % path,
        "quota_milter_socket_mode = 0600",
        "quota_milter_user = nobody",
        "quota_milter_events = no"]))
    try:
        st = os.stat(path)
        assert oct(st.st_mode & 0o777) == oct(0o600)
        assert st.st_uid == 65534, "socket not given to quota_milter_user"
        with open("/proc/%d/status" % m.proc.pid) as f:
            uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
        assert uids == ["65534"] * 4, uids
        _, eom, r = transaction(m, ["alice@acme.example", "dave@acme.example"], body=100)
        assert r == {"alice@acme.example": ("pass", "continue"),
                     "dave@acme.example": ("over_quota", "452 4.2.2")}
        assert eom == "continue"
        # no tenant header configured: no header action negotiated
        out = miltertest("negotiate.lua", socket=m.socket, header="no")
        assert "header actions no" in out
    finally:
        m.stop()


def test_hostile_recipients_are_answered_and_logged_safely(milter):
    """Injection: LDAP filter and DN metacharacters, CR/LF, a NUL-free
    byte soup, invalid UTF-8 and very long addresses reach the lookup,
    the log and the events only escaped; each gets a clear answer."""
    hostile = ["a*@acme.example", "(|(mail=*))@acme.example", "x\\y@acme.example",
               "a,b=c+d@acme.example", "caf\xc3@acme.example", "\xff\xfe@acme.example",
               "a@acme.example\r\nRCPT TO:<b@acme.example>", "A" * 900 + "@acme.example",
               "bob@" + "x" * 300 + ".example", "@acme.example", "nobody@"]
    mark = milter.log_mark()
    for rcpt in hostile:
        out = miltertest("transaction.lua", socket=milter.socket, rcpts=rcpt,
                         finish="abort", sep="\t")
        assert "rcpt " in out and "accept" not in out.split("rcpt ")[1].split()[1:2]
    log = milter.log_since(mark)
    results = re.findall(r"result=(\S+) reply=(continue|\d{3} \d\.\d\.\d+)", log)
    assert len(results) == len(hostile), log[-3000:]
    for res, rep in results:
        assert res in ("unknown", "foreign"), (res, rep)
        assert rep in ("550 5.1.1", "continue"), (res, rep)
    for line in log.splitlines():
        assert len(line) < 2100 and "\r" not in line
        assert all(0x20 <= ord(c) < 0x7f or c == "\t" for c in line), repr(line)
    assert milter.proc.poll() is None
    for e in milter.events():
        assert all(0x20 <= ord(c) < 0x7f for c in e["data"].get("address", ""))


def test_concurrent_sessions(milter):
    """Twenty SMTP sessions at once, each three tenants' recipients: every
    answer right, every state freed."""
    from concurrent.futures import ThreadPoolExecutor

    rcpts = ["alice@acme.example", "hank@globex.example", "peter@initech.example",
             "dave@acme.example", "nobody@acme.example"]
    want = {"alice@acme.example": "continue", "hank@globex.example": "replycode",
            "peter@initech.example": "continue", "dave@acme.example": "replycode",
            "nobody@acme.example": "replycode"}

    def one(i):
        out = miltertest("transaction.lua", socket=milter.socket, rcpts=",".join(rcpts),
                         size=100, body=500, qid="4QCONC%04d" % i)
        return dict(re.findall(r"^rcpt (\S+) (\S+)$", out, re.M)), \
            re.search(r"^eom (\S+)$", out, re.M).group(1)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(40)))
    for answers, eom in results:
        assert answers == want and eom == "continue"
    th_wait(lambda: milter.metrics()["tn_quota_milter_sessions"] == 0 and
            milter.metrics()["tn_quota_milter_transactions"] == 0)


# --- faults ------------------------------------------------------------------

def assert_tempfail_within_deadline(milter, rcpt):
    t0 = time.monotonic()
    _, _, r = transaction(milter, [rcpt], finish="abort")
    took = time.monotonic() - t0
    assert r[rcpt] == ("tempfail", "451 4.3.0"), r
    assert took < LOOKUP_TIMEOUT + 1.5, "took %.2f s" % took


def test_slapd_frozen_is_451_within_the_deadline_then_normal(milter, stack):
    drop_lookup_cache(stack)
    stack.slapd.freeze()
    try:
        assert_tempfail_within_deadline(milter, "bob@acme.example")
        # not found while down is never "unknown user"
        assert_tempfail_within_deadline(milter, "nobody2@acme.example")
    finally:
        stack.slapd.thaw()
    time.sleep(0.2)
    _, _, r = transaction(milter, ["bob@acme.example", "nobody2@acme.example"],
                          finish="abort")
    assert r == {"bob@acme.example": ("pass", "continue"),
                 "nobody2@acme.example": ("unknown", "550 5.1.1")}


def settle_directory(milter, stack, timeout=20):
    """After slapd was killed and restarted, the lookup library's pooled
    LDAP connections are dead until each has failed once (a lookup that
    meets two of them is a temporary failure): wait for five right
    answers in a row, each from LDAP."""
    deadline = time.monotonic() + timeout
    good = 0
    while good < 5:
        drop_lookup_cache(stack)
        _, _, r = transaction(milter, ["bob@acme.example"], finish="abort")
        good = good + 1 if r["bob@acme.example"] == ("pass", "continue") else 0
        assert time.monotonic() < deadline, "the directory does not answer again"
        time.sleep(0.05)


def test_slapd_killed_is_451_then_normal_after_restart(milter, stack):
    drop_lookup_cache(stack)
    stack.slapd.kill()
    try:
        assert_tempfail_within_deadline(milter, "carol@acme.example")
    finally:
        stack.slapd.start()
    deadline = time.monotonic() + 15     # ldap_retry_down: the URI is retried
    while True:
        _, _, r = transaction(milter, ["carol@acme.example"], finish="abort")
        if r["carol@acme.example"][0] != "tempfail":
            break
        assert time.monotonic() < deadline, "slapd back, still tempfail"
        time.sleep(0.5)
    assert r["carol@acme.example"] == ("suspended", "550 5.2.1")
    settle_directory(milter, stack)


def test_redis_stopped_quota_unenforced_and_counted(milter, stack):
    deadline = time.monotonic() + 5     # earlier tests' traffic sent first
    while milter.metrics()["tn_quota_milter_traffic_pending"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before = milter.metrics()
    stack.redis.stop()
    try:
        _, eom, r = transaction(milter, ["dave@acme.example", "nobody@acme.example",
                                         "carol@acme.example"], size=100, body=100)
        # quota unenforced (documented), the directory still answers
        assert r == {"dave@acme.example": ("unenforced", "continue"),
                     "nobody@acme.example": ("unknown", "550 5.1.1"),
                     "carol@acme.example": ("suspended", "550 5.2.1")}
        assert eom == "continue"
        after = milter.metrics()
        key = 'tn_quota_milter_redis_failures_total{op="usage"}'
        assert after[key] > before[key]
        assert after['tn_quota_milter_rcpt_decisions_total{result="unenforced"}'] > \
            before['tn_quota_milter_rcpt_decisions_total{result="unenforced"}']
        # the message's traffic waits in memory while Redis is away
        deadline = time.monotonic() + 5
        while milter.metrics()['tn_quota_milter_redis_failures_total{op="traffic"}'] <= \
                before['tn_quota_milter_redis_failures_total{op="traffic"}']:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert milter.metrics()["tn_quota_milter_traffic_pending"] == 1
    finally:
        stack.redis.start()
    # Redis is back (empty): reseeded, the quota is enforced again, and the
    # traffic counted during the outage arrives, once
    seed_usage(stack, {"mbx:dave@acme.example": 5 * MiB, "ten:acme": 5 * MiB})
    wait_quota_enforced(milter)
    traffic = wait_traffic(stack, {"acme"}, timeout=10)
    assert traffic["acme"][0] == "1" and 100 < traffic["acme"][1] < 200
    assert milter.metrics()["tn_quota_milter_traffic_pending"] == 0


def wait_quota_enforced(milter):
    """Redis answers the milter again (its down-marking backs off to 5 s;
    a loaded machine gets more)."""
    deadline = time.monotonic() + 20
    while True:
        _, _, r = transaction(milter, ["dave@acme.example"], finish="abort")
        if r["dave@acme.example"][0] == "over_quota":
            return
        assert time.monotonic() < deadline, r
        time.sleep(0.3)


def test_redis_frozen_never_hangs(milter, stack):
    stack.redis.freeze()
    try:
        t0 = time.monotonic()
        _, _, r = transaction(milter, ["dave@acme.example", "bob@acme.example"],
                              finish="abort")
        assert time.monotonic() - t0 < 2 * LOOKUP_TIMEOUT + 2
        assert all(v[1] in ("continue", "451 4.3.0") for v in r.values()), r
    finally:
        stack.redis.thaw()
    wait_quota_enforced(milter)


# --- reload and configuration --------------------------------------------------

def test_sigusr1_reloads_and_a_bad_file_changes_nothing(milter):
    try:
        milter.write_conf("quota_milter_over_quota_reply = permanent\n"
                          "quota_milter_suspended_reply = temporary")
        mark = milter.log_mark()
        milter.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reloaded" in milter.log_since(mark))
        _, _, r = transaction(milter, ["dave@acme.example", "carol@acme.example"],
                              finish="abort")
        assert r == {"dave@acme.example": ("over_quota", "552 5.2.2"),
                     "carol@acme.example": ("suspended", "450 4.2.1")}
        milter.write_conf("quota_milter_over_quota_reply = maybe")
        mark = milter.log_mark()
        milter.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reload:" in milter.log_since(mark))
        assert "the running settings stay" in milter.log_since(mark)
        _, _, r = transaction(milter, ["dave@acme.example"], finish="abort")
        assert r["dave@acme.example"] == ("over_quota", "552 5.2.2")
        assert milter.proc.poll() is None
    finally:
        milter.write_conf("")
        mark = milter.log_mark()
        milter.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reloaded" in milter.log_since(mark))
    _, _, r = transaction(milter, ["dave@acme.example"], finish="abort")
    assert r["dave@acme.example"] == ("over_quota", "452 4.2.2")


def th_wait(cond, timeout=5):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in %s s" % timeout
        time.sleep(0.05)


def test_bad_configuration_names_file_and_line(tmp_path):
    require_prerequisites()
    conf = tmp_path / "bad.conf"
    conf.write_text("[tn-quota-milter]\nquota_milter_lookup_timeout = 60s\n")
    r = subprocess.run([MILTER, "-c", str(conf), "-n"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78, r
    assert "%s:2:" % conf in r.stderr and "quota_milter_lookup_timeout" in r.stderr


def test_one_shared_tenantmail_conf(stack, tmp_path):
    """lib/tn-conf-shared.h: the milter accepts the other programs'
    top-level lines, and its own section is no error for them."""
    require_prerequisites()
    conf = tmp_path / "tenantmail.conf"
    with open(stack.conf) as f:
        base = f.read()
    conf.write_text(base + "\n".join([
        "outbox_dir = %s" % (tmp_path / "outbox"),
        "hookd_endpoints_dir = %s" % (tmp_path / "hooks.d"),
        "prov_timeout = 12s",
        "[tn-quota-milter]",
        "quota_milter_over_quota_reply = permanent",
        "quota_milter_socket = inet:10025@127.0.0.1",
        "[tn-provisiond]",
        "provd_listen = 127.0.0.1:8080",
        ""]))
    r = subprocess.run([MILTER, "-c", str(conf), "-n"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "quota_milter_over_quota_reply = permanent" in r.stdout
    tnctl = os.path.join(BUILD, "provisioning", "tnctl")
    r = subprocess.run([tnctl, "-c", str(conf), "config"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    # its parameters belong in its section: elsewhere they are unknown
    conf.write_text(base + "quota_milter_events = no\n")
    r = subprocess.run([tnctl, "-c", str(conf), "config"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "quota_milter_events" in r.stderr


def test_man_page_documents_every_parameter():
    with open(SOURCE) as f:
        text = f.read()
    m = re.search(r"quota_milter_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "no quota_milter_params table in %s" % SOURCE
    code = {name: (ptype.lower(), default)
            for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert len(code) >= 10
    page, problems = page_parameters(PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s is not documented" % name)
            continue
        if page[name][:2] != (ptype, default):
            problems.append("line %d: %s: %r in the page, %r in the code"
                            % (page[name][2], name, page[name][:2], (ptype, default)))
    problems += ["%s is not in quota_milter_params" % n for n in sorted(page)
                 if n not in code]
    report(problems, "%s disagrees with %s" % (PAGE, SOURCE))
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", PAGE],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
