"""test_submit_milter -- tn-submit-milter against the real slapd and Redis.

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build-smilter pytest-3 -q tests/integration/test_submit_milter.py

Environment:
  TN_BUILD_DIR       the build directory holding milters/tn-submit-milter
                     (default: the top of the source tree, an in-tree build)
  TN_ASAN_BUILD_DIR  the ASan+UBSan build (default: build-asan), as
                     scripts/test makes it
  TN_TSAN_BUILD_DIR  the TSan build (default: build-tsan)

The milter runs as a real process on a TCP socket; miltertest (Debian
package miltertest) plays Postfix with tests/milter/submit-*.lua, sending
the SASL login as the {auth_authen} macro the way Postfix does.  slapd
(the example DIT) and Redis come from tnharness.Stack.

miltertest shows only the kind of each answer (continue, replycode); the
exact code is read from the milter's log line for that step, which each
test provokes first.  Checked:
  * negotiation: only the steps the milter uses, no modification action;
  * sender ownership: own address, an alias naming the login, another
    mailbox of the tenant, another tenant's address, a spoofed outside
    address, null sender, unauthenticated, suspended logins; with
    submit_milter_tenant_domains (set by a SIGUSR1 reload) any address
    of the tenant's domains;
  * send limits: reached exactly at N (the mailbox's tnSendRate), a
    reservation released by abort (RSET) and by the session ending
    mid-transaction (QUIT), one left by a killed milter expiring in
    Redis by itself, a tenant limit shared by two users, recipient
    limits; ratelimit.exceeded once per crossing, message.rejected;
  * traffic out counted for usage.rollup (traffic:<tenant>:<hour>);
  * faults: Redis killed and frozen -> the configured policy (accept,
    counted in /metrics; tempfail when configured) within the deadline;
    slapd frozen -> 451 4.3.0 within the deadline, normal once thawed;
  * twenty concurrent sessions for ten free slots: exactly ten pass;
    EVALSHA after SCRIPT FLUSH falls back to EVAL (also in the committer
    thread's pipeline);
  * the committer: end of message queues the commit, yet the limit is
    exact (N messages back to back, the next refused, exactly N
    committed once they land); Redis frozen between RCPT and end of
    message: the reply does not wait, the commit fails in the thread
    (warning, metric), normal once thawed; submit_milter_commit_queue = 0
    commits at end of message.  Commits are asynchronous: whatever reads
    Redis after an end of message waits for them (wait_committed);
  * TCP_NODELAY on accepted connections, a unix socket with its mode and
    owner, the process running as submit_milter_user;
  * the ASan+UBSan and TSan builds (TN_ASAN_BUILD_DIR, TN_TSAN_BUILD_DIR)
    through refusals, limits, aborts, concurrent sessions, faults and a
    reload: clean exit, no sanitizer report (libmilter's own start-up and
    shutdown races suppressed by name, see TSAN_SUPPRESSIONS);
  * configuration: -n, a hold longer than the window refused, a bad
    reload changes nothing, and man/tn-submit-milter.8 documents exactly
    the parameter table.

Missing prerequisites fail (never skip): a skipped suite looks green.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

import tnharness as th
import tnprobe
from test_docs import TABLE_ENTRY_RE, page_parameters, report
from test_quota_milter import milter_side_socket

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
MILTER = os.path.join(BUILD, "milters", "tn-submit-milter")
SOURCE = os.path.join(TOP, "milters", "tn-submit-milter.c")
PAGE = os.path.join(TOP, "man", "tn-submit-milter.8")
LUA = os.path.join(TOP, "tests", "milter")
PREFIX = "tn:v1:"
LOOKUP_TIMEOUT = 1.0    # submit_milter_lookup_timeout below
HOLD = 3.0              # submit_milter_reservation_hold below
WINDOW_MS = 3600000     # submit_milter_window (its default)
INITECH_DN = "tnTenantId=initech,ou=tenants,dc=example,dc=net"


def require_prerequisites():
    problems = []
    if not shutil.which("miltertest"):
        problems.append("miltertest missing (apt-get install miltertest)")
    if not (os.path.isfile(MILTER) and os.access(MILTER, os.X_OK)):
        problems.append("%s missing: build first (scripts/build DIR) and set "
                        "TN_BUILD_DIR" % MILTER)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


class SubmitMilter:
    """tn-submit-milter on a free TCP port, logging to WORKDIR/milter.log."""

    def __init__(self, stack, workdir, extra="", unix=None, program=MILTER, env=None):
        self.stack = stack
        self.program = program
        self.env = dict(os.environ, **(env or {}))
        self.unix = unix
        self.workdir = str(workdir)
        self.port = th.free_port()
        self.metrics_port = th.free_port()
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
                "memory_cache_ttl = 0",     # the fault tests need every lookup
                "[tn-submit-milter]",
                "submit_milter_socket = %s" % self.socket,
                "submit_milter_user =",
                "submit_milter_metrics_listen = 127.0.0.1:%d" % self.metrics_port,
                "submit_milter_lookup_timeout = %gs" % LOOKUP_TIMEOUT,
                "submit_milter_reservation_hold = %gs" % HOLD,
                "submit_milter_event_interval = 2s",
                self.extra, ""]))

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.program, "-c", self.conf, "-e"],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        mark = 0
        while True:
            if self.proc.poll() is not None:
                raise th.HarnessError("tn-submit-milter exited %s:\n%s" % (
                    self.proc.returncode, self.log_text()[-3000:]))
            if self.log_text().count("info: started:") > mark:
                if self.unix:
                    return
                try:
                    th.wait_port("127.0.0.1", self.port, timeout=0.2)
                    return
                except TimeoutError:
                    pass
            if time.monotonic() > deadline:
                raise th.HarnessError("tn-submit-milter not ready:\n%s"
                                      % self.log_text()[-3000:])
            time.sleep(0.05)

    def restart_after_kill(self):
        """SIGKILL (no libmilter shutdown), then a fresh process."""
        self.proc.kill()
        self.proc.wait(5)
        mark = self.log_text().count("info: started:")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.program, "-c", self.conf, "-e"],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        finally:
            log.close()
        th_wait(lambda: self.log_text().count("info: started:") > mark, 10)
        th.wait_port("127.0.0.1", self.port, timeout=5)

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

    def reload(self, extra):
        self.write_conf(extra)
        mark = self.log_mark()
        self.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reload" in self.log_since(mark))
        assert "reloaded" in self.log_since(mark), self.log_since(mark)

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

    def events(self, etype=None):
        out = []
        new = os.path.join(self.outbox, "new")
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name)) as f:
                out += [json.loads(line) for line in f if line.strip()]
        return [e for e in out if etype is None or e["type"] == etype]


def th_wait(cond, timeout=5):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in %s s" % timeout
        time.sleep(0.05)


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


class Result:
    """What one submit-transaction.lua run saw, with the milter's log."""

    def __init__(self, out, log):
        self.out = out
        self.log = log
        self.mail = re.findall(r"^mail (\S+)$", out, re.M)
        self.rcpts = re.findall(r"^rcpt (\S+) (\S+)$", out, re.M)
        self.eoms = re.findall(r"^eom (\S+)$", out, re.M)
        # from the log: MAIL FROM and RCPT TO results with their replies
        self.mail_log = re.findall(
            r"login=<.*?> from=<.*?> result=(\S+) reply=(continue|\d{3} \d\.\d\.\d+)"
            r"(?: how=(\S+))?", log)
        self.rcpt_log = re.findall(
            r"rcpt=<.*?> result=(\S+) reply=(continue|\d{3} \d\.\d\.\d+)"
            r"(?: limit=(\S+))?", log)

    @property
    def mail_reply(self):
        assert len(self.mail_log) == 1, self.log
        return self.mail_log[0]


def transaction(milter, sender, rcpts=("someone@external.example",), login=None,
                **defs):
    mark = milter.log_mark()
    args = dict(socket=milter.socket, rcpts=",".join(rcpts), **defs)
    args["from"] = sender
    if login is not None:
        args["login"] = login
    out = miltertest("submit-transaction.lua", **args)
    assert "done" in out, out
    # the milter logs each step before it answers: the lines are there
    log = milter.log_since(mark)
    return Result(out, log)


def mail(milter, login, sender, **defs):
    """The MAIL FROM answer: (result, reply, how)."""
    r = transaction(milter, sender, login=login, finish="abort", **defs)
    return r.mail_reply


def redis(stack, *args):
    return stack.redis.cli(*args).strip()


def clear_rate_keys(stack):
    for pattern in ("rate:*", "traffic:*", "rejected:*"):
        keys = stack.redis.cli("--scan", "--pattern", PREFIX + pattern).split()
        if keys:
            stack.redis.cli("DEL", *keys)


def drop_lookup_cache(stack):
    for pattern in ("adr:*", "dom:*", "ten:*"):
        keys = stack.redis.cli("--scan", "--pattern", PREFIX + pattern).split()
        if keys:
            stack.redis.cli("DEL", *keys)


def seed_window(stack, key, n):
    """n messages sent just now: committed members of rate:<key>."""
    now = now_ms()
    args = []
    for i in range(n):
        args += [str(now), "r:seed%d" % i]
    if args:
        stack.redis.cli("ZADD", PREFIX + "rate:" + key, *args)
    stack.redis.cli("PEXPIRE", PREFIX + "rate:" + key, "3600000")


def members(stack, key):
    return stack.redis.cli("ZRANGE", PREFIX + "rate:" + key, "0", "-1").split()


def now_ms():
    return int(time.time() * 1000)


def scores(stack, key):
    out = stack.redis.cli("ZRANGE", PREFIX + "rate:" + key, "0", "-1",
                          "WITHSCORES").split()
    return {m: float(v) for m, v in zip(out[::2], out[1::2])}


def committed(stack, key, since):
    """The members of rate:<key> committed at or after since (ms): a member
    keeps its name from reservation to commit, the commit scores it then
    (Redis's clock, this host's)."""
    return sorted(m for m, v in scores(stack, key).items()
                  if v >= since and not m.startswith("r:seed"))


def wait_committed(stack, key, since, n, timeout=5):
    """End of message queues the commit for the committer thread: wait for
    n members committed since `since`; returns them."""
    th_wait(lambda: len(committed(stack, key, since)) >= n, timeout)
    got = committed(stack, key, since)
    assert len(got) == n, got
    return got


def traffic(stack, tenant):
    key = PREFIX + "traffic:%s:%s" % (tenant, time.strftime("%Y%m%d%H", time.gmtime()))
    return dict(zip(*[iter(stack.redis.cli("HGETALL", key).split())] * 2))


def pending(stack, key):
    """The members of rate:<key> still pending: scored reservation time -
    window + hold, far below anything committed within the window."""
    edge = now_ms() - WINDOW_MS // 2
    return sorted(m for m, v in scores(stack, key).items() if v < edge)


@pytest.fixture(scope="module")
def milter(stack, tmp_path_factory):
    require_prerequisites()
    m = SubmitMilter(stack, tmp_path_factory.mktemp("smilter"))
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(autouse=True)
def seeded(stack):
    """Every test starts with all servers running and empty windows."""
    for server in (stack.slapd, stack.redis):
        if server.frozen:
            server.thaw()
        if not server.running():
            server.start()
    clear_rate_keys(stack)
    yield


# --- protocol ----------------------------------------------------------------

def test_negotiates_only_the_steps_it_uses(milter):
    out = miltertest("submit-negotiate.lua", socket=milter.socket)
    assert "negotiate ok" in out
    for opt in ("NOCONNECT", "NOHELO", "NOEOH", "NODATA", "NOUNKNOWN", "NR_HDR",
                "NR_BODY"):
        assert "option SMFIP_%s yes" % opt in out
    for opt in ("NOMAIL", "NORCPT", "NOHDRS", "NOBODY", "NR_MAIL", "NR_RCPT"):
        assert "option SMFIP_%s no" % opt in out


# --- sender ownership --------------------------------------------------------

OWNERSHIP = [
    # login, sender, (result, reply, how)
    ("alice@acme.example", "alice@acme.example", ("pass", "continue", "own")),
    ("Alice@ACME.example", "alice@acme.example", ("pass", "continue", "own")),
    ("alice@acme.example", "sales@acme.example", ("pass", "continue", "alias")),
    ("alice@acme.example", "team@acme.example", ("pass", "continue", "alias")),
    ("erin@acme-mail.example", "team@acme.example", ("pass", "continue", "alias")),
    ("erin@acme-mail.example", "sales@acme.example", ("not_owned", "553 5.7.1", "")),
    ("bob@acme.example", "alice@acme.example", ("not_owned", "553 5.7.1", "")),
    ("alice@acme.example", "hank@globex.example", ("not_owned", "553 5.7.1", "")),
    ("alice@acme.example", "info@globex.example", ("not_owned", "553 5.7.1", "")),
    ("peter@initech.example", "alice@acme.example", ("not_owned", "553 5.7.1", "")),
    ("alice@acme.example", "ceo@bank.example", ("not_owned", "553 5.7.1", "")),
    ("alice@acme.example", "nobody@acme.example", ("not_owned", "553 5.7.1", "")),
    ("alice@acme.example", "", ("pass", "continue", "null")),
    ("carol@acme.example", "carol@acme.example", ("suspended", "550 5.7.1", "")),
    ("hank@globex.example", "hank@globex.example", ("suspended", "550 5.7.1", "")),
    ("zed@acme.example", "zed@acme.example", ("suspended", "550 5.7.1", "")),
    ("ghost@acme.example", "ghost@acme.example", ("not_owned", "553 5.7.1", "")),
    ("sales@acme.example", "sales@acme.example", ("not_owned", "553 5.7.1", "")),
]


def test_sender_must_belong_to_the_login(milter):
    got = {(login, sender): mail(milter, login, sender) for login, sender, _ in OWNERSHIP}
    want = {(login, sender): w for login, sender, w in OWNERSHIP}
    assert got == want


def test_miltertest_sees_the_refusal(milter):
    r = transaction(milter, "ceo@bank.example", login="alice@acme.example")
    assert r.mail == ["replycode"] and r.rcpts == [] and r.eoms == []
    r = transaction(milter, "alice@acme.example", login="alice@acme.example")
    assert r.mail == ["continue"] and r.eoms == ["continue"]


def test_unauthenticated_is_530_unless_configured(milter):
    assert mail(milter, None, "alice@acme.example") == \
        ("unauthenticated", "530 5.7.0", "")
    try:
        milter.reload("submit_milter_require_auth = no")
        r = transaction(milter, "anyone@external.example",
                        rcpts=["a@external.example", "b@external.example"])
        assert r.mail_reply == ("unchecked", "continue", "")
        assert r.rcpts == [("a@external.example", "continue"),
                           ("b@external.example", "continue")]
        assert r.eoms == ["continue"]
    finally:
        milter.reload("")


def test_tenant_domains_and_null_sender_settings(milter):
    try:
        milter.reload("submit_milter_tenant_domains = yes\n"
                      "submit_milter_null_sender = refuse\n"
                      "submit_milter_suspended_reply = temporary")
        assert mail(milter, "bob@acme.example", "alice@acme.example") == \
            ("pass", "continue", "tenant_domain")
        assert mail(milter, "bob@acme.example", "whoever@acme-mail.example") == \
            ("pass", "continue", "tenant_domain")
        assert mail(milter, "bob@acme.example", "hank@globex.example") == \
            ("not_owned", "553 5.7.1", "")
        assert mail(milter, "bob@acme.example", "x@initech.example") == \
            ("not_owned", "553 5.7.1", "")
        assert mail(milter, "bob@acme.example", "ceo@bank.example") == \
            ("not_owned", "553 5.7.1", "")
        assert mail(milter, "bob@acme.example", "") == ("not_owned", "553 5.7.1", "")
        assert mail(milter, "carol@acme.example", "carol@acme.example") == \
            ("suspended", "450 4.7.1", "")
    finally:
        milter.reload("")
    assert mail(milter, "bob@acme.example", "alice@acme.example") == \
        ("not_owned", "553 5.7.1", "")


def test_refusals_are_message_rejected_events(milter, stack):
    before = len(milter.events("message.rejected"))
    time.sleep(2.1)     # submit_milter_event_interval: a fresh period
    mail(milter, "alice@acme.example", "ceo@bank.example")
    mail(milter, "alice@acme.example", "ceo2@bank.example")     # suppressed
    ev = milter.events("message.rejected")[before:]
    assert len(ev) == 1, ev
    e = ev[0]
    assert e["tenant"] == "acme"
    assert e["data"]["direction"] == "outbound"
    assert e["data"]["reason"] == "sender_not_owned"
    assert e["data"]["address"] == "ceo@bank.example"
    assert e["data"]["login"] == "alice@acme.example"
    assert e["data"]["smtp_code"] == 553 and e["data"]["enhanced_status"] == "5.7.1"


def test_hostile_senders_are_answered_and_logged_safely(milter):
    hostile = ["a*@acme.example", "(|(mail=*))@acme.example", "x\\y@acme.example",
               "caf\xc3@acme.example", "A" * 900 + "@acme.example",
               "alice@acme.example\r\nRCPT TO:<b@x>", "@acme.example", "nobody@"]
    mark = milter.log_mark()
    for sender in hostile:
        assert mail(milter, "alice@acme.example", sender)[1] == "553 5.7.1"
    log = milter.log_since(mark)
    for line in log.splitlines():
        assert len(line) < 2100 and "\r" not in line
        assert all(0x20 <= ord(c) < 0x7f or c == "\t" for c in line), repr(line)
    assert milter.proc.poll() is None


# --- send limits -------------------------------------------------------------

def fill_erin_window(milter, stack, free):
    """erin's tnSendRate is 50 messages an hour: with 50 - free already
    sent, free + 1 messages back to back in one session: free pass, the
    last is 450 4.7.1 at RCPT. Returns the transaction and the time (ms)
    before it."""
    seed_window(stack, "mbx:erin@acme-mail.example", 50 - free)
    t0 = now_ms()
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                    count=free + 1)
    assert r.mail == ["continue"] * (free + 1)
    assert [a for _, a in r.rcpts] == ["continue"] * free + ["replycode"]
    assert r.eoms == ["continue"] * free
    assert r.rcpt_log[-1] == ("rate_limited", "450 4.7.1", "mailbox_messages")
    assert len(members(stack, "mbx:erin@acme-mail.example")) == 50
    return r, t0


def test_limit_reached_exactly_at_n(milter, stack):
    """47 of erin's 50 already sent: three more in one session pass, the
    51st is 450 4.7.1 with a retry hint."""
    r, t0 = fill_erin_window(milter, stack, 3)
    wait_committed(stack, "mbx:erin@acme-mail.example", t0, 3)
    assert pending(stack, "mbx:erin@acme-mail.example") == []
    assert re.search(r"reply=450 4.7.1 limit=mailbox_messages count=50 retry_ms=(\d+)",
                     r.log)
    ev = [e for e in milter.events("ratelimit.exceeded")
          if e["data"]["address"] == "erin@acme-mail.example"]
    assert ev and ev[-1]["data"] == {"scope": "mailbox", "unit": "messages",
                                     "address": "erin@acme-mail.example",
                                     "limit_per_hour": 50, "window_seconds": 3600,
                                     "count": 50}
    assert any(e["data"]["reason"] == "rate_limited" and
               e["data"]["login"] == "erin@acme-mail.example" and
               e["data"]["smtp_code"] == 450 for e in milter.events("message.rejected"))
    # once per crossing: refused again, no second event
    n = len(milter.events("ratelimit.exceeded"))
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpts == [("someone@external.example", "replycode")]
    assert len(milter.events("ratelimit.exceeded")) == n


def test_retry_hint_in_the_reply_text(milter, stack):
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpt_log == [("rate_limited", "450 4.7.1", "mailbox_messages")]
    m = re.search(r"retry_ms=(\d+)", r.log)
    assert 3500000 < int(m.group(1)) <= 3600000


@pytest.mark.parametrize("finish", ["abort", "quit"])
def test_reservation_released_by_abort_and_quit(milter, stack, finish):
    """At 49 of 50 a transaction reserves the 50th slot; RSET (abort) or
    the session ending mid-transaction (QUIT) gives it back at once."""
    seed_window(stack, "mbx:erin@acme-mail.example", 49)
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                    finish=finish)
    assert r.rcpts == [("someone@external.example", "continue")]
    th_wait(lambda: len(members(stack, "mbx:erin@acme-mail.example")) == 49, 2)
    assert milter.metrics()["tn_submit_milter_reservations"] == 0
    assert milter.metrics()["tn_submit_milter_transactions"] == 0
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpts == [("someone@external.example", "continue")]
    assert r.eoms == ["continue"]


def test_pending_reservation_blocks_until_committed(milter, stack):
    """Two transactions at once cannot both take the last slot: a pending
    reservation counts (seeded here as another node's)."""
    seed_window(stack, "mbx:erin@acme-mail.example", 49)
    now = int(time.time() * 1000)
    stack.redis.cli("ZADD", PREFIX + "rate:mbx:erin@acme-mail.example",
                    str(now - 3600000 + int(HOLD * 1000)), "r:othernode")
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpt_log == [("rate_limited", "450 4.7.1", "mailbox_messages")]
    time.sleep(HOLD + 0.3)      # never committed: it expires by itself
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpts == [("someone@external.example", "continue")]


def test_killed_milter_leaves_no_lasting_reservation(milter, stack):
    seed_window(stack, "mbx:erin@acme-mail.example", 49)
    proc = subprocess.Popen(
        ["miltertest", "-D", "socket=" + milter.socket, "-D", "from=erin@acme-mail.example",
         "-D", "login=erin@acme-mail.example", "-D", "rcpts=x@external.example",
         "-D", "finish=none", "-D", "pause=30", "-s",
         os.path.join(LUA, "submit-transaction.lua")],
        cwd=LUA, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        th_wait(lambda: pending(stack, "mbx:erin@acme-mail.example"), 5)
        milter.restart_after_kill()
    finally:
        proc.kill()
        proc.wait(5)
    # nobody released it: the process died
    assert len(pending(stack, "mbx:erin@acme-mail.example")) == 1
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpt_log == [("rate_limited", "450 4.7.1", "mailbox_messages")]
    time.sleep(HOLD + 0.3)
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpts == [("someone@external.example", "continue")]
    # this message's own reservation is pending until its commit lands
    th_wait(lambda: pending(stack, "mbx:erin@acme-mail.example") == [])


def test_tenant_limit_across_two_users(milter, stack):
    """initech's plan gets tnTenantSendRate 3; peter and a second mailbox
    share it: the fourth message of the tenant is refused, scope tenant."""
    stack.slapd.add("dn: mail=samir@initech.example,%s\nobjectClass: tnMailbox\n"
                    "mail: samir@initech.example\n" % INITECH_DN, check=False)
    stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnTenantSendRate\n"
                       "tnTenantSendRate: 3\n" % INITECH_DN)
    drop_lookup_cache(stack)
    try:
        peter = transaction(milter, "peter@initech.example", login="peter@initech.example",
                            count=2)
        assert peter.eoms == ["continue", "continue"]
        samir = transaction(milter, "samir@initech.example", login="samir@initech.example",
                            count=2)
        assert [a for _, a in samir.rcpts] == ["continue", "replycode"]
        assert samir.rcpt_log[-1] == ("rate_limited", "450 4.7.1", "tenant_messages")
        assert len(members(stack, "ten:initech")) == 3
        ev = [e for e in milter.events("ratelimit.exceeded") if e["tenant"] == "initech"]
        assert ev[-1]["data"]["scope"] == "tenant"
        assert ev[-1]["data"]["address"] == "samir@initech.example"
        assert ev[-1]["data"]["limit_per_hour"] == 3
    finally:
        stack.slapd.modify("dn: %s\nchangetype: modify\ndelete: tnTenantSendRate\n"
                           % INITECH_DN, check=False)
        stack.slapd.delete("mail=samir@initech.example," + INITECH_DN, check=False)
        drop_lookup_cache(stack)


def test_recipient_limits_and_commit_with_the_real_count(milter, stack):
    try:
        milter.reload("submit_milter_rcpt_rate = 5")
        t0 = now_ms()
        r = transaction(milter, "bob@acme.example", login="bob@acme.example",
                        rcpts=["a@x.example", "b@x.example", "c@x.example"])
        assert r.eoms == ["continue"]
        assert wait_committed(stack, "rcpt:mbx:bob@acme.example", t0, 3) == \
            sorted("%s:%d" % (m, i) for m in members(stack, "mbx:bob@acme.example")
                   for i in (1, 2, 3))
        r = transaction(milter, "bob@acme.example", login="bob@acme.example",
                        rcpts=["d@x.example", "e@x.example", "f@x.example"])
        assert [a for _, a in r.rcpts] == ["continue", "continue", "replycode"]
        assert r.rcpt_log[-1] == ("rate_limited", "450 4.7.1", "mailbox_recipients")
        assert r.eoms == ["continue"]
        assert len(members(stack, "rcpt:mbx:bob@acme.example")) == 5
        assert len(members(stack, "mbx:bob@acme.example")) == 2
    finally:
        milter.reload("")


def test_message_too_large_for_the_plan(milter, stack):
    """erin's plan allows 10 MiB: SIZE= above it is 552 5.3.4 at MAIL FROM;
    a message that turns out larger is 552 5.3.4 at end of message and
    its reservation goes back."""
    mib = 1024 * 1024
    assert mail(milter, "erin@acme-mail.example", "erin@acme-mail.example",
                size=10 * mib + 1) == ("too_large", "552 5.3.4", "")
    seed_window(stack, "mbx:erin@acme-mail.example", 49)
    mark = milter.log_mark()
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                    body=10 * mib + 100)
    assert r.rcpts == [("someone@external.example", "continue")]
    assert r.eoms == ["replycode"]
    assert re.search(r"end of message: .* result=too_large reply=552 5\.3\.4",
                     milter.log_since(mark))
    assert len(members(stack, "mbx:erin@acme-mail.example")) == 49
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.eoms == ["continue"]


def test_traffic_out_is_counted(milter, stack):
    hour = time.strftime("%Y%m%d%H", time.gmtime())
    key = PREFIX + "traffic:acme:" + hour
    before = traffic(stack, "acme")
    msgs0, bytes0 = int(before.get("msgs_out", 0)), int(before.get("bytes_out", 0))
    r = transaction(milter, "alice@acme.example", login="alice@acme.example", body=5000,
                    count=2)
    assert r.eoms == ["continue", "continue"]
    th_wait(lambda: int(traffic(stack, "acme").get("msgs_out", 0)) == msgs0 + 2)
    got = traffic(stack, "acme")
    assert int(got["msgs_out"]) == msgs0 + 2
    assert int(got["bytes_out"]) - bytes0 > 10000
    ttl = int(redis(stack, "TTL", key))
    assert 7 * 86400 < ttl <= 7 * 86400 + 3600


# --- faults ------------------------------------------------------------------

def test_redis_killed_accepts_and_counts(milter, stack):
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    before = milter.metrics()
    stack.redis.stop()
    try:
        t0 = time.monotonic()
        r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
        assert time.monotonic() - t0 < LOOKUP_TIMEOUT + 1.5
        assert r.mail_reply[:2] == ("pass", "continue")
        assert r.rcpt_log == [("unlimited", "continue", "")]
        assert r.eoms == ["continue"]
        after = milter.metrics()
        k = 'tn_submit_milter_redis_failures_total{op="reserve"}'
        assert after[k] > before[k]
        k = 'tn_submit_milter_decisions_total{stage="rcpt",result="unlimited"}'
        assert after[k] > before[k]
    finally:
        stack.redis.start()
    wait_limits_enforced(milter, stack)


def test_redis_restart_lets_no_message_through_uncounted(milter, stack):
    """A Redis restart closes every pooled connection of the milter: each is
    found closed before use and replaced, so the first messages after the
    restart are already checked (nothing answered "unlimited", no Redis
    failure counted, nothing marked down)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return transaction(milter, "erin@acme-mail.example",
                           login="erin@acme-mail.example", finish="abort")

    clear_rate_keys(stack)
    with ThreadPoolExecutor(6) as pool:     # several pooled connections in use
        assert all(r.rcpt_log for r in pool.map(one, range(6)))
    stack.redis.stop()
    stack.redis.start()
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    before = milter.metrics()
    for _ in range(8):      # sequential calls take one pooled connection after another
        r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                        finish="abort")
        assert r.rcpt_log == [("rate_limited", "450 4.7.1", "mailbox_messages")], r.log
    after = milter.metrics()
    for op in ("reserve", "release"):
        k = 'tn_submit_milter_redis_failures_total{op="%s"}' % op
        assert after[k] == before[k], op
    assert after["tn_submit_milter_redis_reconnects_total"] > \
        before["tn_submit_milter_redis_reconnects_total"]


def wait_limits_enforced(milter, stack):
    """Redis answers again (the down-marking backs off up to 5 s)."""
    deadline = time.monotonic() + 10
    while True:
        clear_rate_keys(stack)
        seed_window(stack, "mbx:erin@acme-mail.example", 50)
        r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                        finish="abort")
        if r.rcpt_log and r.rcpt_log[0][0] == "rate_limited":
            return
        assert time.monotonic() < deadline, r.log
        time.sleep(0.3)


def test_redis_frozen_never_hangs(milter, stack):
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    stack.redis.freeze()
    try:
        t0 = time.monotonic()
        r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example",
                        count=2)
        took = time.monotonic() - t0
        assert took < 2 * LOOKUP_TIMEOUT + 2, "took %.2f s" % took
        assert r.eoms == ["continue", "continue"]
        assert all(res == "unlimited" for res, _, _ in r.rcpt_log), r.log
    finally:
        stack.redis.thaw()
    wait_limits_enforced(milter, stack)


def test_redis_unavailable_tempfail_when_configured(milter, stack):
    try:
        milter.reload("submit_milter_redis_unavailable = tempfail")
        stack.redis.freeze()
        t0 = time.monotonic()
        r = transaction(milter, "bob@acme.example", login="bob@acme.example")
        assert time.monotonic() - t0 < 2 * LOOKUP_TIMEOUT + 2
        assert r.rcpt_log == [("tempfail", "451 4.3.0", "")]
    finally:
        stack.redis.thaw()
        milter.reload("")


def test_slapd_frozen_is_451_within_the_deadline_then_normal(milter, stack):
    drop_lookup_cache(stack)
    stack.slapd.freeze()
    try:
        for login, sender in (("bob@acme.example", "bob@acme.example"),
                              ("alice@acme.example", "sales@acme.example")):
            t0 = time.monotonic()
            got = mail(milter, login, sender)
            took = time.monotonic() - t0
            assert got == ("tempfail", "451 4.3.0", ""), got
            assert took < LOOKUP_TIMEOUT + 1.5, "took %.2f s" % took
    finally:
        stack.slapd.thaw()
    time.sleep(0.2)
    assert mail(milter, "alice@acme.example", "sales@acme.example") == \
        ("pass", "continue", "alias")


def test_every_state_freed(milter):
    # the last commit may still wait for its batch (commit_delay)
    th_wait(lambda: milter.metrics()["tn_submit_milter_commit_queue"] == 0)
    m = milter.metrics()
    assert m["tn_submit_milter_sessions"] == 0
    assert m["tn_submit_milter_transactions"] == 0
    assert m["tn_submit_milter_reservations"] == 0
    assert m["tn_submit_milter_commit_queue"] == 0


def test_concurrent_sessions_take_exactly_the_free_slots(milter, stack):
    """Twenty sessions at once for ten free slots: the reservations are
    atomic, exactly ten messages pass, every state is freed."""
    from concurrent.futures import ThreadPoolExecutor

    seed_window(stack, "mbx:erin@acme-mail.example", 40)

    def one(i):
        return transaction(milter, "erin@acme-mail.example",
                           login="erin@acme-mail.example", qid="4QCONC%02d" % i)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    eoms = sum(len(r.eoms) for r in results)
    assert eoms == 10, [r.out for r in results]
    assert sum(1 for r in results for _, a in r.rcpts if a == "replycode") == 10
    assert len(members(stack, "mbx:erin@acme-mail.example")) == 50
    th_wait(lambda: milter.metrics()["tn_submit_milter_transactions"] == 0)
    assert milter.metrics()["tn_submit_milter_reservations"] == 0


def test_scripts_come_back_after_script_flush(milter, stack):
    """EVALSHA answered NOSCRIPT (a restarted or flushed Redis): EVAL, also
    in the committer thread's pipeline (tn_cache_script_pipeline): the
    commit lands, counted as queued, no failure."""
    from concurrent.futures import ThreadPoolExecutor

    stack.redis.cli("SCRIPT", "FLUSH")
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.rcpt_log == [("rate_limited", "450 4.7.1", "mailbox_messages")]
    clear_rate_keys(stack)
    stack.redis.cli("SCRIPT", "FLUSH")
    before = milter.metrics()
    t0 = now_ms()
    r = transaction(milter, "erin@acme-mail.example", login="erin@acme-mail.example")
    assert r.eoms == ["continue"]
    wait_committed(stack, "mbx:erin@acme-mail.example", t0, 1)
    assert len(members(stack, "mbx:erin@acme-mail.example")) == 1
    th_wait(lambda: traffic(stack, "acme").get("msgs_out") == "1")
    # concurrent messages after a flush: commits that meet in one batch
    # are answered NOSCRIPT together and sent again together
    stack.redis.cli("SCRIPT", "FLUSH")

    def one(i):
        return transaction(milter, "erin@acme-mail.example",
                           login="erin@acme-mail.example", qid="4QFLUSH%02d" % i)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(r.eoms == ["continue"] for r in results), [r.out for r in results]
    wait_committed(stack, "mbx:erin@acme-mail.example", t0, 9)
    th_wait(lambda: traffic(stack, "acme").get("msgs_out") == "9")
    after = milter.metrics()
    k = 'tn_submit_milter_commits_total{path="queued"}'
    assert after[k] - before[k] == 9
    assert after['tn_submit_milter_commits_total{path="direct"}'] == \
        before['tn_submit_milter_commits_total{path="direct"}']
    k = 'tn_submit_milter_redis_failures_total{op="commit"}'
    assert after[k] == before[k]


# --- the committer thread ------------------------------------------------------

def test_commits_are_queued_and_the_limit_stays_exact(milter, stack):
    """End of message queues the commit for the committer thread and
    answers. With five slots left, five messages back to back over one
    connection pass and the sixth is refused at RCPT although the first
    five's commits may not have landed yet: a pending member counts like
    a committed one. Once they land: exactly five committed, none
    pending, msgs_out 5, all five counted as queued."""
    before = milter.metrics()
    _, t0 = fill_erin_window(milter, stack, 5)
    wait_committed(stack, "mbx:erin@acme-mail.example", t0, 5)
    assert pending(stack, "mbx:erin@acme-mail.example") == []
    th_wait(lambda: traffic(stack, "acme").get("msgs_out") == "5")
    after = milter.metrics()
    k = 'tn_submit_milter_commits_total{path="queued"}'
    assert after[k] - before[k] == 5
    k = 'tn_submit_milter_commits_total{path="direct"}'
    assert after[k] == before[k]
    k = "tn_submit_milter_commit_batches_total"
    assert 1 <= after[k] - before[k] <= 5
    assert after["tn_submit_milter_commit_queue"] == 0
    assert after["tn_submit_milter_reservations"] == 0


def test_redis_frozen_at_end_of_message(stack, tmp_path):
    """Redis stops answering between RCPT and end of message. End of
    message does not wait for it: with redis_timeout = 3s a synchronous
    commit would hold the reply 3 s, the queued one does not. The
    committer's batch fails after redis_timeout: the warning, the failure
    counted; the reservation is left to expire. Once Redis answers
    again, commits land as usual."""
    require_prerequisites()
    m = SubmitMilter(stack, tmp_path, extra="redis_timeout = 3s")
    try:
        before = m.metrics()
        mark = m.log_mark()
        proc = subprocess.Popen(
            ["miltertest", "-D", "socket=" + m.socket, "-D", "from=erin@acme-mail.example",
             "-D", "login=erin@acme-mail.example", "-D", "rcpts=x@external.example",
             "-D", "pause=1", "-s", os.path.join(LUA, "submit-transaction.lua")],
            cwd=LUA, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            th_wait(lambda: pending(stack, "mbx:erin@acme-mail.example"), 5)
            stack.redis.freeze()
            t0 = time.monotonic()
            out, _ = proc.communicate(timeout=20)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert "eom continue" in out and "done" in out, out
        assert took < 2.0, "end of message waited: %.2f s" % took
        th_wait(lambda: "not committed" in m.log_since(mark), 8)
        assert re.search(r"warning: .*reservation [0-9a-f]{16} not committed, traffic not"
                         r" counted", m.log_since(mark)), m.log_since(mark)
        k = 'tn_submit_milter_redis_failures_total{op="commit"}'
        assert m.metrics()[k] == before[k] + 1
        stack.redis.thaw()
        deadline = time.monotonic() + 10
        while True:
            clear_rate_keys(stack)
            t1 = now_ms()
            r = transaction(m, "erin@acme-mail.example", login="erin@acme-mail.example")
            assert r.eoms == ["continue"]
            if r.rcpt_log == [("pass", "continue", "")]:
                break
            assert time.monotonic() < deadline, r.log
            time.sleep(0.3)
        wait_committed(stack, "mbx:erin@acme-mail.example", t1, 1)
        assert m.metrics()[k] == before[k] + 1
    finally:
        if stack.redis.frozen:
            stack.redis.thaw()
        m.stop()
    assert m.proc.returncode == 0, m.log_text()[-3000:]


def test_commit_queue_off_commits_at_end_of_message(stack, tmp_path):
    """submit_milter_commit_queue = 0 (and a full queue): end of message
    commits itself, as before the committer; counted as direct."""
    require_prerequisites()
    m = SubmitMilter(stack, tmp_path, extra="submit_milter_commit_queue = 0")
    try:
        t0 = now_ms()
        r = transaction(m, "erin@acme-mail.example", login="erin@acme-mail.example")
        assert r.eoms == ["continue"]
        # landed before end of message was answered: no waiting here
        assert len(committed(stack, "mbx:erin@acme-mail.example", t0)) == 1
        assert traffic(stack, "acme").get("msgs_out") == "1"
        got = m.metrics()
        assert got['tn_submit_milter_commits_total{path="direct"}'] == 1
        assert got['tn_submit_milter_commits_total{path="queued"}'] == 0
        assert got["tn_submit_milter_commit_batches_total"] == 0
    finally:
        m.stop()


def test_commit_delay_batches_commits_and_stop_sends_them(stack, tmp_path):
    """submit_milter_commit_delay: the committer lets a batch fill. Three
    messages in one session within the delay land as one pipeline, after
    their end of message was answered (pending until then); a commit
    queued when the milter is stopped still lands."""
    require_prerequisites()
    clear_rate_keys(stack)
    m = SubmitMilter(stack, tmp_path, extra="submit_milter_commit_delay = 1s")
    key = "mbx:erin@acme-mail.example"
    try:
        before = m.metrics()
        t0 = now_ms()
        started = time.monotonic()
        r = transaction(m, "erin@acme-mail.example", login="erin@acme-mail.example",
                        count=3)
        took = time.monotonic() - started
        assert r.eoms == ["continue"] * 3
        inside = took < 0.7     # all three inside the first commit's delay
        if inside:
            assert len(pending(stack, key)) == 3
        wait_committed(stack, key, t0, 3)
        k = "tn_submit_milter_commit_batches_total"
        batches = m.metrics()[k] - before[k]
        assert batches == 1 if inside else 1 <= batches <= 3, (batches, took)
        t1 = now_ms()
        started = time.monotonic()
        r = transaction(m, "erin@acme-mail.example", login="erin@acme-mail.example")
        assert r.eoms == ["continue"]
        if time.monotonic() - started < 0.7:
            assert len(pending(stack, key)) == 1     # waiting for its batch
    finally:
        m.stop()
    assert m.proc.returncode == 0, m.log_text()[-3000:]
    assert len(committed(stack, key, t1)) == 1
    assert pending(stack, key) == []


def test_tcp_connections_have_nodelay(milter):
    import socket
    with socket.create_connection(("127.0.0.1", milter.port), timeout=5) as c:
        s = milter_side_socket(milter.proc.pid, milter.port, c.getsockname()[1])
        with s:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_unix_socket_and_privilege_drop(stack, tmp_path):
    require_prerequisites()
    os.chmod(str(tmp_path), 0o755)
    path = str(tmp_path / "submit-milter.sock")
    m = SubmitMilter(stack, tmp_path, unix=path, extra="\n".join([
        "submit_milter_socket = unix:%s" % path,
        "submit_milter_socket_mode = 0600",
        "submit_milter_user = nobody",
        "submit_milter_events = no"]))
    try:
        st = os.stat(path)
        assert oct(st.st_mode & 0o777) == oct(0o600)
        assert st.st_uid == 65534, "socket not given to submit_milter_user"
        with open("/proc/%d/status" % m.proc.pid) as f:
            uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
        assert uids == ["65534"] * 4, uids
        assert mail(m, "alice@acme.example", "ceo@bank.example") == \
            ("not_owned", "553 5.7.1", "")
        assert mail(m, "alice@acme.example", "sales@acme.example") == \
            ("pass", "continue", "alias")
    finally:
        m.stop()


def test_sigusr1_bad_file_changes_nothing(milter):
    try:
        milter.reload("submit_milter_tenant_domains = yes")
        milter.write_conf("submit_milter_null_sender = maybe")
        mark = milter.log_mark()
        milter.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reload:" in milter.log_since(mark))
        assert "the running settings stay" in milter.log_since(mark)
        assert mail(milter, "bob@acme.example", "alice@acme.example")[:2] == \
            ("pass", "continue")
        milter.write_conf("submit_milter_window = 1s")     # hold 3s > window
        mark = milter.log_mark()
        milter.proc.send_signal(signal.SIGUSR1)
        th_wait(lambda: "reload:" in milter.log_since(mark))
        assert "submit_milter_reservation_hold" in milter.log_since(mark)
        assert milter.metrics()['tn_submit_milter_reloads_total{outcome="failed"}'] >= 2
        assert milter.proc.poll() is None
    finally:
        milter.reload("")


# libmilter's own start-up and shutdown (its listener, closer and signal
# threads share mutexes it never orders; its statics are destroyed at exit
# while its threads run): what TSan reports there is not this milter's.
# Each pattern names a libmilter function (or TSan's at-exit hook), so a
# race in the milter's callbacks still shows: their stacks hold mi_engine
# and the sm_* frames, none of these.
TSAN_SUPPRESSIONS = """race:mi_stop_milters
race:mi_closener
race:mi_listener
race:cxa_at_exit_wrapper
mutex:libmilter.so
thread:mi_control_startup
"""

SANITIZERS = {
    "asan": ({"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
             ("AddressSanitizer", "LeakSanitizer", "runtime error")),
    "tsan": ({"TSAN_OPTIONS": "halt_on_error=0:exitcode=23:suppressions=%s"},
             ("ThreadSanitizer",)),
}


def sanitizer_workload(m, stack):
    from concurrent.futures import ThreadPoolExecutor

    seed_window(stack, "mbx:erin@acme-mail.example", 44)

    def one(i):
        kinds = [dict(sender="erin@acme-mail.example", login="erin@acme-mail.example",
                      count=2, rcpts=["a@x.example", "b@x.example"]),
                 dict(sender="erin@acme-mail.example", login="erin@acme-mail.example",
                      finish="abort"),
                 dict(sender="erin@acme-mail.example", login="erin@acme-mail.example",
                      finish="quit"),
                 dict(sender="ceo@bank.example", login="alice@acme.example"),
                 dict(sender="sales@acme.example", login="alice@acme.example"),
                 dict(sender="", login="alice@acme.example"),
                 dict(sender="x" * 900, login="alice@acme.example"),
                 dict(sender="alice@acme.example")]
        kw = dict(kinds[i % len(kinds)])
        return transaction(m, kw.pop("sender"), qid="4QSAN%02d" % i, **kw)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(24)))
    m.reload("submit_milter_tenant_domains = yes")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    stack.redis.freeze()
    try:
        transaction(m, "bob@acme.example", login="bob@acme.example")
    finally:
        stack.redis.thaw()
    drop_lookup_cache(stack)
    stack.slapd.freeze()
    try:
        transaction(m, "bob@acme.example", login="bob@acme.example")
    finally:
        stack.slapd.thaw()
    urllib.request.urlopen("http://127.0.0.1:%d/metrics" % m.metrics_port,
                           timeout=5).read()


@pytest.mark.parametrize("flavour", sorted(SANITIZERS))
def test_no_memory_errors_or_races_under_sanitizers(stack, tmp_path, flavour):
    """The ASan+UBSan and the TSan builds through refusals, limits,
    aborts, sessions ending mid-transaction, concurrent sessions, a
    reload, Redis and slapd faults, then a clean stop: status 0 and no
    sanitizer report (leaks included)."""
    require_prerequisites()
    program = tnprobe.binary("milters/tn-submit-milter", flavour)
    env, markers = SANITIZERS[flavour]
    supp = tmp_path / "tsan.supp"
    supp.write_text(TSAN_SUPPRESSIONS)
    env = {k: v.replace("%s", str(supp)) for k, v in env.items()}
    workdir = tmp_path / "milter"
    workdir.mkdir()
    m = SubmitMilter(stack, workdir, program=program, env=env,
                     extra="submit_milter_rcpt_rate = 6")
    try:
        sanitizer_workload(m, stack)
    finally:
        m.stop()
    log = m.log_text()
    assert m.proc.returncode == 0, log[-4000:]
    # the paths were taken (a run that did nothing proves nothing)
    for seen in ("result=rate_limited", "result=not_owned", "end of message:",
                 "result=unlimited", "reply=451 4.3.0", "reloaded"):
        assert seen in log, (seen, log[-4000:])
    for marker in markers:
        assert marker not in log, log[-4000:]


# --- configuration -------------------------------------------------------------

def test_hold_longer_than_the_window_is_refused(tmp_path):
    require_prerequisites()
    conf = tmp_path / "bad.conf"
    conf.write_text("[tn-submit-milter]\nsubmit_milter_window = 10s\n"
                    "submit_milter_reservation_hold = 20s\n")
    r = subprocess.run([MILTER, "-c", str(conf), "-n"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78, r
    assert "submit_milter_reservation_hold" in r.stderr
    conf.write_text("[tn-submit-milter]\nsubmit_milter_lookup_timeout = 60s\n")
    r = subprocess.run([MILTER, "-c", str(conf), "-n"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78, r
    assert "%s:2:" % conf in r.stderr and "submit_milter_lookup_timeout" in r.stderr


def test_man_page_documents_every_parameter():
    with open(SOURCE) as f:
        text = f.read()
    m = re.search(r"submit_milter_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "no submit_milter_params table in %s" % SOURCE
    code = {name: (ptype.lower(), default)
            for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert len(code) >= 15
    page, problems = page_parameters(PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s is not documented" % name)
            continue
        if page[name][:2] != (ptype, default):
            problems.append("line %d: %s: %r in the page, %r in the code"
                            % (page[name][2], name, page[name][:2], (ptype, default)))
    for name in sorted(set(page) - set(code)):
        problems.append("line %d: %s is documented but not in the code"
                        % (page[name][2], name))
    report(problems, PAGE)
