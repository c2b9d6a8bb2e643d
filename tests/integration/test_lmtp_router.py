"""test_lmtp_router -- tn-lmtp-router between an LMTP client and real
Dovecot LMTP stores, with the real slapd + Redis of tnharness.Stack.

Topology (one per module):
  stores S0, S1, S2: private Dovecots (tndovecot), static userdb that
  accepts every recipient, mail in WORKDIR/home/<address>/Maildir;
  pool-a = S0, S1 (in that order): the example DIT's tenant acme;
  pool-b = S2: the default pool (initech and globex have no pool);
  alice@acme.example is pinned (tnMailHost) to a port nobody listens on.
The client is smtplib.LMTP (tnrouter.lmtp_transaction reads LMTP's one
reply per recipient after DATA). Deliveries are counted as files in the
stores' Maildirs, each message carrying a unique marker.
"""

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest

import tndovecot as td
import tnharness as th
import tnrouter
from tnprobe import tnctl
from test_docs import TABLE_ENTRY_RE, page_parameters, report

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SOURCE = os.path.join(TOP, "lib", "tn-router-params.c")    # tn_router_params
PAGE = os.path.join(TOP, "man", "tn-lmtp-router.8")
SENDER = "sender@example.org"
ACME = "tnTenantId=acme," + th.TENANTS


def dn_of(address):
    return "mail=%s,%s" % (address, ACME)


class Topology:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.workdir = str(workdir)
        self.stores = []
        self.router = None
        problems = td.missing_prerequisites()
        if problems:
            pytest.fail("prerequisites: " + "; ".join(problems), pytrace=False)
        try:
            self._start_stores()
            self.dead_port = th.free_port()
            stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnMailHost\n"
                               "tnMailHost: 127.0.0.1:%d\n"
                               % (dn_of("alice@acme.example"), self.dead_port))
            self._start_router(stack)
        except BaseException:
            self.stop()
            raise

    def _start_stores(self):
        self.stores = tnrouter.start_stores(self.workdir)

    def _start_router(self, stack):
        members = " ".join(["pool-a=127.0.0.1:%d" % self.stores[0].lmtp_port,
                            "pool-a=127.0.0.1:%d" % self.stores[1].lmtp_port,
                            "pool-b=127.0.0.1:%d" % self.stores[2].lmtp_port])
        self.router = tnrouter.Router(os.path.join(self.workdir, "router"), stack.conf, {
            "router_pool_members": members,
            "router_default_pool": "pool-b",
            "router_health_interval": "200ms",
            "router_health_failures": "2",
            "router_store_connect_timeout": "3s",
            "router_store_timeout": "10s",
            "router_store_max_connections": "10",
            "router_recipient_limit": "100",
            "router_message_size_limit": "2m",
            "router_line_length_limit": "2k",
            "router_user": "nobody",
            "router_log_level": os.environ.get("TN_ROUTER_LOG_LEVEL", "info"),
            "lookup_timeout": "3s",
            "ldap_retry_down": "0",
        })

    def member(self, i):
        return "127.0.0.1:%d" % self.stores[i].lmtp_port

    def count(self, i, user, marker):
        """Files of store i's Maildir of user holding marker."""
        return len(tnrouter.maildir_messages(self.stores[i], user, marker))

    def counts(self, user, marker):
        return [self.count(i, user, marker) for i in range(len(self.stores))]

    def stop(self):
        if self.router is not None:
            self.router.stop()
        td.stop_all(self.stores)


@pytest.fixture(scope="module")
def topo(stack):
    with tnrouter.module_workdir("tn-lmtp-router-") as workdir:
        t = Topology(stack, workdir)
        try:
            yield t
        finally:
            t.stop()


def message(marker, size=0):
    body = "From: %s\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\nhello %s\r\n" % (
        SENDER, marker, marker, marker)
    if size:
        line = ("x" * 76 + "\r\n")
        body += line * (size // len(line))
    return body


def marker():
    return "m-" + uuid.uuid4().hex


def wait_counts(topo, user, mark, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = topo.counts(user, mark)
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.02)


# --- delivery ---------------------------------------------------------------------------

def test_split_across_stores_exactly_once(topo):
    m = marker()
    rcpts, data = topo.router.transaction(SENDER, ["bob@acme.example",
                                                   "peter@initech.example"], message(m))
    assert [c for c, _ in rcpts] == [250, 250], rcpts
    assert [c for c, _ in data] == [250, 250], data
    for code, text in data:
        assert re.search(r"\[[0-9A-F]{4}[0-9A-F]{6}\]$", text), text
        assert "Saved" in text, text           # Dovecot's own text
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]


def test_per_recipient_replies_in_order(topo):
    m = marker()
    rcpts, data = topo.router.transaction(SENDER, [
        "bob@acme.example",            # pool-a: S0
        "nobody@acme.example",         # 550 5.1.1
        "alice@acme.example",          # pinned to a dead port: 451 4.4.1 after DATA
        "zed@acme.example",            # deleted: 550 5.1.1
        "peter@initech.example",       # default pool: S2
        "carol@acme.example",          # suspended: her mail is still delivered
        "sales@acme.example",          # an alias (Postfix expands them): 550
    ], message(m))
    codes = [c for c, _ in rcpts]
    assert codes == [250, 550, 250, 550, 250, 250, 550], rcpts
    assert rcpts[1][1].startswith("5.1.1 "), rcpts[1]
    assert re.search(r"\[\w+\]$", rcpts[1][1])
    assert [c for c, _ in data] == [250, 451, 250, 250], data
    assert data[1][1].startswith("4.4.1 "), data[1]
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]
    assert wait_counts(topo, "carol@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    assert topo.counts("alice@acme.example", m) == [0, 0, 0]


def test_unix_socket_listener(topo):
    m = marker()
    c = topo.router.lmtp(unix=True)
    try:
        rcpts, data = tnrouter.lmtp_transaction(c, SENDER, ["bob@acme.example"], message(m))
    finally:
        c.quit()
    assert data[0][0] == 250, data
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]


def test_pipelined_session_several_messages(topo):
    """One session, several transactions: connections to the stores are
    reused (RSET between transactions), each message arrives once."""
    marks = [marker() for _ in range(5)]
    c = topo.router.lmtp()
    try:
        for m in marks:
            _, data = tnrouter.lmtp_transaction(c, SENDER, ["dave@acme.example",
                                                            "erin@acme-mail.example"],
                                                message(m))
            assert [code for code, _ in data] == [250, 250], data
    finally:
        c.quit()
    for m in marks:
        assert wait_counts(topo, "dave@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert wait_counts(topo, "erin@acme-mail.example", m, [1, 0, 0]) == [1, 0, 0]
    assert topo.router.metric("tn_router_store_idle_connections", store=topo.member(0)) >= 1


# --- stores failing, pools, drain ---------------------------------------------------------

def wait_member(topo, i, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = topo.router.control("pools")
        line = [l for l in lines if " %s " % topo.member(i) in l]
        if line and (" %s " % state) in line[0]:
            return line[0]
        if time.monotonic() >= deadline:
            raise AssertionError("member %d not %s: %s" % (i, state, lines))
        time.sleep(0.05)


def test_store_stopped_its_recipients_451_others_delivered(topo):
    s2 = topo.stores[2]
    s2.stop()
    try:
        m = marker()
        rcpts, data = topo.router.transaction(SENDER, ["peter@initech.example",
                                                       "bob@acme.example"], message(m))
        assert [c for c, _ in rcpts] == [250, 250]
        assert data[0][0] == 451 and data[0][1].startswith("4.4."), data
        assert data[1][0] == 250, data
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        wait_member(topo, 2, "down")
    finally:
        s2.start()
    # the health check brings it back; the same mail is then delivered
    wait_member(topo, 2, "up")
    m = marker()
    _, data = topo.router.transaction(SENDER, ["peter@initech.example"], message(m))
    assert data[0][0] == 250, data
    assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]


def test_member_down_fails_over_to_next_member(topo):
    s0 = topo.stores[0]
    s0.stop()
    try:
        for _ in range(2):      # before and after the member is marked down
            m = marker()
            _, data = topo.router.transaction(SENDER, ["bob@acme.example"], message(m))
            assert data[0][0] == 250, data
            assert wait_counts(topo, "bob@acme.example", m, [0, 1, 0]) == [0, 1, 0]
        wait_member(topo, 0, "down")
        assert sum(topo.router.metric("tn_router_store_errors_total", store=topo.member(0),
                                      kind=k) for k in ("connect", "lost", "421")) >= 1
    finally:
        s0.start()
    wait_member(topo, 0, "up")
    m = marker()
    _, data = topo.router.transaction(SENDER, ["bob@acme.example"], message(m))
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]


def test_frozen_store_times_out_and_fails_over(topo):
    """A store that accepts and never answers (SIGSTOP): the next member
    takes the mail once router_store_connect_timeout has passed (no
    greeting on a new connection, no answer to RSET on a pooled one)."""
    s0 = topo.stores[0]
    # no idle connection to S0 may be reused: that would be a stale retry
    s0.freeze()
    try:
        m = marker()
        t0 = time.monotonic()
        _, data = topo.router.transaction(SENDER, ["bob@acme.example"], message(m))
        took = time.monotonic() - t0
        assert data[0][0] == 250, data
        assert took < 7, took                 # RSET or greeting: 3 s each at most
        assert wait_counts(topo, "bob@acme.example", m, [0, 1, 0]) == [0, 1, 0]
    finally:
        s0.thaw()
    wait_member(topo, 0, "up", timeout=10)


def test_all_members_down_451_for_those_recipients_only(topo):
    td.stop_all(topo.stores[:2])
    try:
        m = marker()
        rcpts, data = topo.router.transaction(SENDER, ["bob@acme.example",
                                                       "peter@initech.example",
                                                       "dave@acme.example"], message(m))
        assert [c for c, _ in data] == [451, 250, 451], data
        assert all(t.startswith("4.4.") for c, t in data if c == 451), data
        assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]
        assert topo.counts("bob@acme.example", m) == [0, 0, 0]
    finally:
        for s in topo.stores[:2]:
            s.start()
    wait_member(topo, 0, "up")
    wait_member(topo, 1, "up")


def test_drain_moves_new_mail_to_next_member(topo):
    r = topo.router
    assert r.control("drain %s" % topo.member(0))[-1] == "ok drained %s" % topo.member(0)
    try:
        assert " drained " in wait_member(topo, 0, "up")
        route = r.control("route bob@acme.example")[-1]
        assert route.startswith("ok route via=pool pool=pool-a"), route
        assert route.endswith("members=%s,%s" % (topo.member(1), topo.member(0))), route
        marks = [marker() for _ in range(3)]
        for m in marks:
            rcpts, data = r.transaction(SENDER, ["bob@acme.example"], message(m))
            assert data[0][0] == 250, data
        for m in marks:
            assert wait_counts(topo, "bob@acme.example", m, [0, 1, 0]) == [0, 1, 0]
        # drained, and the only other member down: the drained one still
        # takes the mail (drain never refuses any)
        topo.stores[1].stop()
        try:
            m = marker()
            _, data = r.transaction(SENDER, ["bob@acme.example"], message(m))
            assert data[0][0] == 250, data
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        finally:
            topo.stores[1].start()
        wait_member(topo, 1, "up")
    finally:
        assert r.control("undrain %s" % topo.member(0))[-1].startswith("ok undrained")
    m = marker()
    r.transaction(SENDER, ["bob@acme.example"], message(m))
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    assert r.control("drain 127.0.0.1:1")[-1].startswith("error no member")
    assert r.control("drain not a member")[-1].startswith("error")


def test_mailbox_moved_in_directory_followed_within_1s(topo):
    stack, r = topo.stack, topo.router
    m = marker()
    r.transaction(SENDER, ["dave@acme.example"], message(m))
    assert wait_counts(topo, "dave@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    stack.slapd.modify("dn: %s\nchangetype: modify\nadd: tnMailHost\ntnMailHost: %s\n"
                       % (dn_of("dave@acme.example"), topo.member(2)))
    try:
        res = tnctl(stack.conf, "cache", "invalidate", "--address", "dave@acme.example")
        assert res.returncode == 0, res.stderr
        t0 = time.monotonic()
        while True:
            start = time.monotonic() - t0
            m = marker()
            _, data = r.transaction(SENDER, ["dave@acme.example"], message(m))
            assert data[0][0] == 250, data
            where = topo.counts("dave@acme.example", m)   # saved before the 250
            if where == [0, 0, 1]:
                break
            assert where == [1, 0, 0], where
            assert start < 1.0, "a delivery begun %.2f s after the change still went " \
                "to the old store" % start
            time.sleep(0.05)
        assert r.control("route dave@acme.example")[-1].startswith(
            "ok route via=host pool=- host=%s" % topo.member(2))
    finally:
        stack.slapd.modify("dn: %s\nchangetype: modify\ndelete: tnMailHost\n"
                           % dn_of("dave@acme.example"))
        tnctl(stack.conf, "cache", "invalidate", "--address", "dave@acme.example")


def test_directory_frozen_451_within_deadline_others_served(topo):
    stack, r = topo.stack, topo.router
    r.transaction(SENDER, ["bob@acme.example"], message(marker()))   # cached now
    stack.slapd.freeze()
    try:
        results = {}

        def cold():
            c = r.lmtp()
            t0 = time.monotonic()
            code, text = c.mail(SENDER)
            code, text = c.rcpt("cold-%s@acme.example" % uuid.uuid4().hex[:8])
            results["cold"] = (code, text.decode(), time.monotonic() - t0)
            c.close()

        t = threading.Thread(target=cold)
        t.start()
        # meanwhile another session is served from the cache
        time.sleep(0.1)
        m = marker()
        t0 = time.monotonic()
        _, data = r.transaction(SENDER, ["bob@acme.example"], message(m))
        assert data[0][0] == 250 and time.monotonic() - t0 < 2.0, data
        assert t.is_alive(), "the cold lookup did not wait for the directory"
        t.join(10)
        code, text, took = results["cold"]
        assert code == 451 and text.startswith("4.3.0"), (code, text)
        assert 2.5 < took < 4.5, took             # lookup_timeout = 3s
    finally:
        stack.slapd.thaw()
    deadline = time.monotonic() + 10
    while not r.control("route cold2@acme.example")[-1].startswith("ok refuse 550"):
        assert time.monotonic() < deadline, "directory not back"
        time.sleep(0.2)


def test_slow_store_does_not_stall_other_deliveries(topo):
    """S2 frozen: a message for it waits for the store's timeout, while
    messages of other sessions to S0 go through at once."""
    r = topo.router
    topo.stores[2].freeze()
    try:
        result = {}

        def slow():
            t0 = time.monotonic()
            _, data = r.transaction(SENDER, ["peter@initech.example"], message(marker()))
            result["slow"] = (data, time.monotonic() - t0)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.2)
        for _ in range(3):
            m = marker()
            t0 = time.monotonic()
            _, data = r.transaction(SENDER, ["bob@acme.example"], message(m))
            assert data[0][0] == 250 and time.monotonic() - t0 < 2.0, data
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert t.is_alive(), "the frozen store answered?"
        t.join(15)
        data, took = result["slow"]
        assert data[0][0] == 451 and data[0][1].startswith("4.4."), data
        assert 2.5 < took < 8, took
    finally:
        topo.stores[2].thaw()
    wait_member(topo, 2, "up", timeout=10)


def big_message(m, size):
    """A message of about size bytes with long lines (above the router's
    8 KiB pieces), lines starting with a dot and varied content."""
    import random
    rnd = random.Random(m)
    parts = ["From: %s\r\nSubject: %s\r\n\r\n" % (SENDER, m)]
    n = len(parts[0])
    while n < size:
        kind = rnd.randrange(4)
        if kind == 0:
            line = "." + "d" * rnd.randrange(0, 80)
        elif kind == 1:
            line = "L" * rnd.randrange(8000, 30000)
        else:
            line = "".join(rnd.choice("abcdefghij ") for _ in range(rnd.randrange(0, 200)))
        parts.append(line + "\r\n")
        n += len(line) + 2
    return "".join(parts)


def stored(topo, i, user, m):
    d = os.path.join(topo.stores[i].maildir(user), "new")
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        if m.encode() in data:
            return data
    return None


def test_flow_control_streams_large_message_intact(topo, tmp_path):
    """A second router with 4 KiB / 1 KiB watermarks: a 1.5 MB message to
    two stores pauses the client many times and arrives byte for byte in
    both; with one store frozen the other still gets it once the frozen
    one has timed out."""
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    overrides.update({"router_buffer_high_watermark": "4k",
                      "router_buffer_low_watermark": "1k"})
    r2 = tnrouter.Router(tmp_path / "r2", topo.stack.conf, overrides)
    try:
        m = marker()
        body = big_message(m, 1500000)
        _, data = r2.transaction(SENDER, ["bob@acme.example", "peter@initech.example"], body)
        assert [c for c, _ in data] == [250, 250], data
        want = body.replace("\r\n", "\n").encode()
        for i, user in ((0, "bob@acme.example"), (2, "peter@initech.example")):
            assert wait_counts(topo, user, m, [int(i == 0), 0, int(i == 2)]) == \
                [int(i == 0), 0, int(i == 2)]
            got = stored(topo, i, user, m)
            assert got.endswith(want), "store %d: message altered" % i
        assert r2.metric("tn_router_flow_control_pauses_total") > 10
        topo.stores[2].freeze()
        try:
            m = marker()
            _, data = r2.transaction(SENDER, ["bob@acme.example", "peter@initech.example"],
                                     big_message(m, 300000))
            assert [c for c, _ in data] == [250, 451], data
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        finally:
            topo.stores[2].thaw()
    finally:
        assert r2.stop() == 0
    wait_member(topo, 2, "up", timeout=10)


def test_large_message_spooled_each_store_at_its_own_pace(topo, tmp_path):
    """A router spooling messages declared at 100 KB or more: a 1.5 MB
    message arrives byte for byte in two stores, the spool directory
    shows no file at any time, and with S2 frozen S0 has its copy while
    the transaction still waits for S2 (a slow store holds nobody back)."""
    spool = os.path.join(topo.workdir, "spool")      # nobody must reach it
    os.makedirs(spool, exist_ok=True)
    os.chmod(spool, 0o777)
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    overrides.update({"router_spool_threshold": "100k", "router_spool_directory": spool,
                      "router_store_connect_timeout": "6s"})
    r5 = tnrouter.Router(tmp_path / "r5", topo.stack.conf, overrides)

    def send(m, size, result):
        body = big_message(m, size)
        wire = re.sub(r"(?m)^\.", "..", body)
        c = Raw(r5, timeout=30)
        c.send("LHLO x\r\nMAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<bob@acme.example>\r\n"
               "RCPT TO:<peter@initech.example>\r\nDATA\r\n" % (SENDER, len(wire)))
        assert [g[0] for g in c.replies(5)] == [250, 250, 250, 250, 354]
        c.send(wire + ".\r\n")
        result["spool"] = os.listdir(spool)
        result["data"] = c.replies(2)
        c.close()
        return body

    try:
        m, result = marker(), {}
        body = send(m, 1500000, result)
        assert [g[0] for g in result["data"]] == [250, 250], result
        assert result["spool"] == []
        want = body.replace("\r\n", "\n").encode()
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]
        assert stored(topo, 0, "bob@acme.example", m).endswith(want)
        assert stored(topo, 2, "peter@initech.example", m).endswith(want)
        assert r5.metric("tn_router_spooled_total") == 1
        topo.stores[2].freeze()
        try:
            m, result = marker(), {}
            t = threading.Thread(target=send, args=(m, 500000, result))
            t.start()
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0], timeout=5) == \
                [1, 0, 0]
            assert t.is_alive(), "the transaction did not wait for the frozen store"
            t.join(20)
            assert [g[0] for g in result["data"]] == [250, 451], result
        finally:
            topo.stores[2].thaw()
        assert os.listdir(spool) == []
    finally:
        assert r5.stop() == 0
    wait_member(topo, 2, "up", timeout=10)


def test_spool_unavailable_streams_from_memory(topo, tmp_path):
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    overrides.update({"router_spool_threshold": "1k",
                      "router_spool_directory": str(tmp_path / "nosuch")})
    r6 = tnrouter.Router(tmp_path / "r6", topo.stack.conf, overrides)
    try:
        r6.wait_log(r"warning: router_spool_directory .*/nosuch: .*streamed from memory")
        m = marker()
        c = Raw(r6)
        body = message(m, size=5000)
        c.send("LHLO x\r\nMAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<bob@acme.example>\r\n"
               "DATA\r\n" % (SENDER, len(body)))
        assert [g[0] for g in c.replies(4)] == [250, 250, 250, 354]
        c.send(body + ".\r\n")
        assert c.reply()[0] == 250
        c.close()
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert r6.metric("tn_router_spool_errors_total") == 1
        assert r6.metric("tn_router_spooled_total") == 0
    finally:
        assert r6.stop() == 0


def test_slow_client_upload_longer_than_store_timeout(topo, tmp_path):
    """While the message streams in, only the store's taking of data is
    timed: a client that needs 2.5 s for its message is delivered with
    router_store_timeout = 1s (spooled or not)."""
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    spool = os.path.join(topo.workdir, "spool7")
    os.makedirs(spool, exist_ok=True)
    os.chmod(spool, 0o777)
    overrides.update({"router_store_timeout": "1s", "router_spool_threshold": "10k",
                      "router_spool_directory": spool})
    r7 = tnrouter.Router(tmp_path / "r7", topo.stack.conf, overrides)
    try:
        for declared in (False, True):
            m = marker()
            body = message(m, size=20000)
            c = Raw(r7)
            c.send("LHLO x\r\nMAIL FROM:<%s>%s\r\nRCPT TO:<bob@acme.example>\r\n"
                   "DATA\r\n" % (SENDER, " SIZE=%d" % len(body) if declared else ""))
            assert [g[0] for g in c.replies(4)] == [250, 250, 250, 354]
            step = len(body) // 5
            for i in range(5):
                c.send(body[i * step:(i + 1) * step])
                time.sleep(0.5)
            c.send(body[5 * step:] + ".\r\n")
            code, text = c.reply()
            assert code == 250, (declared, code, text)
            c.close()
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert r7.metric("tn_router_spooled_total") == 1
    finally:
        assert r7.stop() == 0


def test_restart_beside_the_old_router_drops_nothing(topo, tmp_path):
    """A new router started on the same addresses (SO_REUSEPORT, the unix
    and control sockets replaced), then SIGTERM to the old one: its
    message in flight is delivered, its idle session is told 421, it
    exits 0 without removing the new one's sockets, and the new one
    serves everything from then on."""
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    old = tnrouter.Router(tmp_path / "old", topo.stack.conf, overrides)
    new = tnrouter.Router(tmp_path / "new", topo.stack.conf, overrides, start=False)
    new.port, new.metrics_port = old.port, old.metrics_port
    new.unix_path, new.control_path = old.unix_path, old.control_path
    new.overrides.update({k: old.overrides[k] for k in (
        "router_listen", "router_control_socket", "router_metrics_listen")})
    try:
        m = marker()
        body = message(m, size=50000)
        busy = Raw(old)
        busy.send("LHLO x\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\nDATA\r\n"
                  % SENDER)
        assert [g[0] for g in busy.replies(4)] == [250, 250, 250, 354]
        busy.send(body[:20000])
        idle = Raw(old)
        idle.send("LHLO x\r\n")
        idle.reply()
        new.start()
        new.wait_log(r"info: started")
        old.proc.send_signal(15)
        old.wait_log(r"stopping \(signal 15\)")
        code, text = idle.reply()
        assert code == 421, (code, text)
        busy.send(body[20000:] + ".\r\n")
        code, text = busy.reply()
        assert code == 250, text
        assert busy.reply()[0] == 421
        assert old.proc.wait(15) == 0
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert os.path.exists(new.unix_path) and os.path.exists(new.control_path)
        for unix in (False, True):
            m = marker()
            c = new.lmtp(unix=unix)
            _, data = tnrouter.lmtp_transaction(c, SENDER, ["bob@acme.example"], message(m))
            c.quit()
            assert data[0][0] == 250, data
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert new.control("pools")[-1].startswith("ok")
        assert new.metric("tn_router_messages_total") == 2
    finally:
        old.kill()
        assert new.stop() == 0


def test_session_limit_and_idle_timeout(topo, tmp_path):
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    overrides.update({"router_max_sessions": "3", "router_session_timeout": "700ms"})
    r8 = tnrouter.Router(tmp_path / "r8", topo.stack.conf, overrides)
    try:
        time.sleep(0.2)                         # the harness's probe session is gone
        held = [Raw(r8) for _ in range(3)]
        assert all(c.banner[0] == 220 for c in held)
        over = Raw(r8)
        assert over.banner[0] == 421 and over.banner[1].startswith("4.3.2"), over.banner
        assert over.closed()
        time.sleep(1.0)
        for c in held:
            code, text = c.reply()
            assert code == 421 and "idle" in text, (code, text)
            assert c.closed()
        assert r8.metric("tn_router_sessions_refused_total") >= 1
        c = Raw(r8)                             # room again
        assert c.banner[0] == 220
        c.close()
    finally:
        assert r8.stop() == 0


class ScriptedPeer:
    """An LMTP peer with scripted answers, for the protocol cases a Dovecot
    cannot be made to produce (no PIPELINING, 421 at MAIL, a refused RCPT,
    multi-line replies). Delivery itself is always tested with Dovecot."""

    def __init__(self, pipelining=False, mail_reply=None, rcpt_replies=None,
                 data_reply="250 2.0.0 ok from peer", xclient_reply=None):
        self.pipelining = pipelining
        self.xclient_reply = xclient_reply
        self.mail_reply = mail_reply
        self.rcpt_replies = rcpt_replies or {}
        self.data_reply = data_reply
        self.messages = []
        self.pipelined = 0          # commands that came before our reply
        self.commands = []
        self.sessions = []          # the commands of each connection, in accept order
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            out, buf = buf.split(b"\r\n", 1)
            return out.decode(errors="replace")

        mine = []
        self.sessions.append(mine)
        try:
            c.sendall(b"220 peer ready\r\n")
            rcpts = []
            while True:
                cmd = line()
                if cmd is None:
                    return
                self.commands.append(cmd)
                mine.append(cmd)
                time.sleep(0.01)            # let anything pipelined arrive
                c.setblocking(False)
                try:
                    more = c.recv(65536)
                    buf += more
                except BlockingIOError:
                    pass
                c.setblocking(True)
                if buf and not self.pipelining:
                    self.pipelined += 1
                if cmd.upper().startswith("DATA") and rcpts:
                    c.sendall(b"354 go\r\n")
                    lines = []
                    while True:
                        l = line()
                        if l is None or l == ".":
                            break
                        lines.append(l)
                    self.messages.append((list(rcpts), "\n".join(lines)))
                    c.sendall("".join("%s <%s>\r\n" % (self.data_reply, r)
                                      for r in rcpts).encode())
                    continue
                c.sendall(self._reply(cmd, rcpts).encode())
        except OSError:
            pass
        finally:
            c.close()

    def _reply(self, cmd, rcpts):
        up = cmd.upper()
        if up.startswith("LHLO"):
            caps = ["peer", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"]
            if self.pipelining:
                caps.append("PIPELINING")
            if self.xclient_reply:
                caps.append("XCLIENT ADDR HELO SESSION")
            return "".join("250-%s\r\n" % x for x in caps[:-1]) + "250 %s\r\n" % caps[-1]
        if up.startswith("MAIL"):
            rcpts.clear()
            return (self.mail_reply or "250 2.1.0 ok") + "\r\n"
        if up.startswith("RCPT"):
            addr = re.search(r"<(.*)>", cmd).group(1)
            r = self.rcpt_replies.get(addr, "250 2.1.5 ok")
            if r.startswith("2"):
                rcpts.append(addr)
            return r + "\r\n"
        if up.startswith("DATA"):
            return "554 5.5.1 no valid recipients\r\n"
        if up.startswith("XCLIENT") and self.xclient_reply:
            return self.xclient_reply + "\r\n"
        if up in ("RSET", "NOOP"):
            return "250 2.0.0 ok\r\n"
        if up == "QUIT":
            return "221 2.0.0 bye\r\n"
        return "500 5.5.2 what\r\n"

    def stop(self):
        self.stopped = True
        self.srv.close()


def scripted_router(topo, tmp_path, name, members):
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    overrides["router_pool_members"] = " ".join(
        ["pool-a=%s" % topo.member(0)] + ["pool-b=%s" % m for m in members])
    return tnrouter.Router(tmp_path / name, topo.stack.conf, overrides)


def test_store_protocol_cases(topo, tmp_path):
    """A store without PIPELINING gets one command at a time; a RCPT the
    store refuses gets the store's own refusal after DATA, in order; a
    member answering 421 to MAIL is left for the next member."""
    plain = ScriptedPeer(pipelining=False, xclient_reply="550 5.7.14 not from a trusted IP",
                         rcpt_replies={"peter@initech.example": "552 5.2.2 peter is over quota"})
    busy = ScriptedPeer(pipelining=True, mail_reply="421 4.3.2 shutting down")
    r9 = scripted_router(topo, tmp_path, "r9", ["127.0.0.1:%d" % busy.port,
                                                "127.0.0.1:%d" % plain.port])
    try:
        _, data = r9.transaction(SENDER, ["bob@acme.example", "peter@initech.example",
                                          "hank@globex.example"], message(marker()))
        assert [c for c, _ in data] == [250, 552, 250], data
        assert data[1][1].startswith("5.2.2 peter is over quota ["), data
        assert data[2][1].startswith("2.0.0 ok from peer <hank@globex.example> ["), data
        assert plain.pipelined == 0, plain.commands
        # XCLIENT refused: the transaction goes on without it
        assert plain.commands[1].startswith("XCLIENT SESSION="), plain.commands
        assert [cmd.split(":")[0] for cmd in plain.commands[2:6]] == \
            ["MAIL FROM", "RCPT TO", "RCPT TO", "DATA"], plain.commands
        assert len(plain.messages) == 1 and plain.messages[0][0] == ["hank@globex.example"]
        assert any(cmd.upper().startswith("MAIL") for cmd in busy.commands)
        assert busy.messages == []
        # a second transaction reuses the connection with RSET first
        _, data = r9.transaction(SENDER, ["hank@globex.example"], message(marker()))
        assert data[0][0] == 250, data
        assert "RSET" in plain.commands
    finally:
        r9.stop()
        plain.stop()
        busy.stop()


def mail_session(peer):
    """The commands of the connection that carried the transactions: the
    router's active health check may greet the peer on a connection of
    its own at the same moment (LHLO only), whose lines would otherwise
    interleave with the transaction's in peer.commands."""
    return next(s for s in peer.sessions if any(c.upper().startswith("MAIL") for c in s))


@pytest.mark.parametrize("xclient_reply", ["220 peer ready", "550 5.7.14 not trusted"])
def test_xclient_pipelined_with_the_envelope(topo, tmp_path, xclient_reply):
    """A store offering PIPELINING gets XCLIENT, LHLO and the envelope in
    one write, with no round trip of its own; refused, the transaction
    goes on and the next one on that connection starts with RSET and
    without XCLIENT."""
    peer = ScriptedPeer(pipelining=True, xclient_reply=xclient_reply)
    r = scripted_router(topo, tmp_path, "rx", ["127.0.0.1:%d" % peer.port])
    try:
        _, data = r.transaction(SENDER, ["peter@initech.example"], message(marker()))
        assert [c for c, _ in data] == [250], data
        session = mail_session(peer)
        cmds = [c.split(":")[0].split(" ")[0].upper() for c in session]
        assert cmds[:7] == ["LHLO", "XCLIENT", "LHLO", "MAIL", "RCPT", "DATA", "."] or \
            cmds[:6] == ["LHLO", "XCLIENT", "LHLO", "MAIL", "RCPT", "DATA"], peer.sessions
        assert len(peer.messages) == 1
        _, data = r.transaction(SENDER, ["peter@initech.example"], message(marker()))
        assert [c for c, _ in data] == [250], data
        later = [c.split(":")[0].split(" ")[0].upper() for c in session[6:]]
        if xclient_reply.startswith("220"):
            assert later[:3] == ["XCLIENT", "LHLO", "MAIL"], peer.sessions
        else:
            assert "XCLIENT" not in later and later[:2] == ["RSET", "MAIL"], peer.sessions
        assert len(peer.messages) == 2
    finally:
        r.stop()
        peer.stop()


def test_routing_loop_to_itself_is_refused_and_logged(topo, tmp_path):
    """A pool whose member is the router itself: its recipients get 451
    (Postfix keeps the mail), an error line names the loop, and the
    router does not talk to itself in circles."""
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    r3 = tnrouter.Router(tmp_path / "r3", topo.stack.conf, overrides, start=False)
    # pool-a by name: the store's address comes from the resolver (evdns)
    r3.overrides["router_pool_members"] = "pool-a=localhost:%d pool-b=127.0.0.1:%d" % (
        topo.stores[0].lmtp_port, r3.port)
    r3.start()
    try:
        m = marker()
        _, data = r3.transaction(SENDER, ["peter@initech.example", "bob@acme.example"],
                                 message(m))
        assert [c for c, _ in data] == [451, 250], data
        r3.wait_log(r"error: store 127\.0\.0\.1:%d is this tn-lmtp-router itself" % r3.port)
        assert r3.metric("tn_router_sessions_total") < 10
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    finally:
        assert r3.stop() == 0


def delivered_text(topo, i, user, mark):
    """The file of store i's Maildir of user holding mark."""
    found = tnrouter.maildir_messages(topo.stores[i], user, mark)
    return found[0].decode(errors="replace") if found else None


def test_received_line_names_the_router_and_the_session(topo):
    m = marker()
    c = Raw(topo.router)
    c.send("LHLO mx.example\r\nXFORWARD HELO=client.example ADDR=192.0.2.7\r\n"
           "MAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\nDATA\r\n" % SENDER)
    assert [g[0] for g in c.replies(5)] == [250, 250, 250, 250, 354]
    c.send(message(m) + ".\r\n")
    code, text = c.reply()
    c.close()
    assert code == 250, text
    sid = re.search(r"\[(\w+)\]$", text).group(1)
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    data = delivered_text(topo, 0, "bob@acme.example", m)
    ours = [l for l in data.splitlines() if "(tn-lmtp-router/" in l]
    assert len(ours) == 1, data[:1000]
    assert re.match(r"Received: from client\.example \(192\.0\.2\.7\) by \S+ "
                    r"\(tn-lmtp-router/[0-9A-F]{8}\) with LMTP id %s; "
                    r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$" % sid, ours[0]), ours
    # above the message's own header lines
    assert data.index(ours[0]) < data.index("Subject: %s" % m)


def test_too_many_hops_is_554_and_nothing_delivered(topo):
    """A message that already carries more Received: lines than
    router_max_hops (50) is a mail loop: 554 5.4.6 for every recipient
    (Postfix bounces it, as its own hopcount_limit does), no store gets
    it; 50 lines pass."""
    before = topo.router.metric('tn_router_recipients_total', result='loop')
    hops = "".join("Received: from hop%d by relay%d; Mon, 23 Nov 2026 06:00:00 +0000\r\n"
                   % (i, i) for i in range(51))
    m = marker()
    _, data = topo.router.transaction(SENDER, ["bob@acme.example", "peter@initech.example"],
                                      hops + message(m))
    assert [c for c, _ in data] == [554, 554], data
    assert data[0][1].startswith("5.4.6 too many hops"), data
    assert topo.router.metric('tn_router_recipients_total', result='loop') == before + 2
    m2 = marker()
    hops = hops.split("\r\n", 1)[1]           # 50 lines
    _, data = topo.router.transaction(SENDER, ["bob@acme.example"], hops + message(m2))
    assert [c for c, _ in data] == [250], data
    assert wait_counts(topo, "bob@acme.example", m2, [1, 0, 0]) == [1, 0, 0]
    time.sleep(0.3)
    assert topo.counts("bob@acme.example", m) == [0, 0, 0]
    assert topo.counts("peter@initech.example", m) == [0, 0, 0]


def test_loop_through_two_routers_ends_at_once_with_554(topo, tmp_path):
    """Router A's pool-b member is router B and B's is A: a pool-b
    message goes A -> B -> A, where A finds its own Received: line and
    answers 554 5.4.6; B passes it back and A's client gets it for that
    recipient at once, the other recipient is delivered. No store gets
    the looping copy, and the routers talk a handful of times, not
    round after round."""
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    ra = tnrouter.Router(tmp_path / "ra", topo.stack.conf, dict(overrides), start=False)
    rb = tnrouter.Router(tmp_path / "rb", topo.stack.conf, dict(overrides), start=False)
    ra.overrides["router_pool_members"] = "pool-a=127.0.0.1:%d pool-b=127.0.0.1:%d" % (
        topo.stores[0].lmtp_port, rb.port)
    rb.overrides["router_pool_members"] = "pool-a=127.0.0.1:%d pool-b=127.0.0.1:%d" % (
        topo.stores[0].lmtp_port, ra.port)
    ra.start()
    rb.start()
    try:
        m = marker()
        t0 = time.monotonic()
        _, data = ra.transaction(SENDER, ["peter@initech.example", "bob@acme.example"],
                                 message(m))
        assert time.monotonic() - t0 < 5
        assert [c for c, _ in data] == [554, 250], data
        assert "5.4.6" in data[0][1] and "loop" in data[0][1], data
        ra.wait_log(r"mail loop: the message carries this router's own Received: line")
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        time.sleep(0.3)
        assert topo.counts("peter@initech.example", m) == [0, 0, 0]
        assert ra.metric("tn_router_sessions_total") < 10
        assert rb.metric("tn_router_sessions_total") < 10
    finally:
        assert ra.stop() == 0
        assert rb.stop() == 0


# --- malformed input ----------------------------------------------------------------------

class Raw:
    """A raw LMTP connection: bytes out, replies (multi-line aware) in."""

    def __init__(self, router, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", router.port), timeout=timeout)
        self.buf = b""
        self.banner = self.reply()

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending %r" % self.buf[:200])
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def reply(self):
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(l[4:] for l in lines)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def closed(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def alive(topo):
    c = Raw(topo.router)
    c.send("NOOP\r\n")
    ok = c.reply()[0] == 250
    c.close()
    return ok and topo.router.running()


def test_commands_out_of_order(topo):
    c = Raw(topo.router)
    assert c.banner[0] == 220
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@acme.example>\r\nDATA\r\n"
           "HELO x\r\nEHLO x\r\nFOO bar\r\n\r\n")
    got = c.replies(7)
    assert [g[0] for g in got] == [503, 503, 503, 500, 500, 500, 500], got
    assert got[0][1].startswith("5.5.1")
    c.send("LHLO client.test\r\n")
    code, text = c.reply()
    assert code == 250
    for cap in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 2097152"):
        assert cap in text.split("\n"), text
    c.send("RCPT TO:<bob@acme.example>\r\nDATA\r\nMAIL FROM:<a@b.example>\r\n"
           "MAIL FROM:<a@b.example>\r\nDATA\r\nRCPT TO:<nobody@acme.example>\r\nDATA\r\n"
           "RCPT TO:bob@acme.example\r\nRCPT TO:<bob@acme.example> NOTIFY=NEVER\r\n"
           "MAIL FROM:<a@b.example> SIZE=99999999\r\nRSET\r\n"
           "MAIL FROM:<a@b.example> SIZE=99999999\r\nMAIL FROM:<a@b.example> X=1\r\n"
           "VRFY bob\r\nQUIT\r\n")
    got = c.replies(15)
    codes = [g[0] for g in got]
    assert codes == [503, 503, 250, 503, 503, 550, 503, 501, 501, 503, 250, 552, 555, 252,
                     221], got
    assert c.closed()
    assert alive(topo)


def test_xforward_queue_id_on_log_lines(topo):
    """XFORWARD (Postfix's lmtp_send_xforward_command): IDENT, the queue
    id, is on the router's log lines of that transaction; xtext decoded;
    refused within a transaction or with an unknown attribute."""
    m = marker()
    c = Raw(topo.router)
    c.send("LHLO x\r\n")
    assert "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in c.reply()[1].split("\n")
    c.send("XFORWARD FOO=1\r\nXFORWARD ADDR=192.0.2.7 IDENT=Q+41BC123 HELO=mx.example\r\n"
           "MAIL FROM:<%s>\r\nXFORWARD IDENT=late\r\nRCPT TO:<bob@acme.example>\r\n"
           "RCPT TO:<nobody@acme.example>\r\nDATA\r\n" % SENDER)
    got = c.replies(7)
    assert [g[0] for g in got] == [501, 250, 250, 503, 250, 550, 354], got
    c.send(message(m) + ".\r\n")
    code, text = c.reply()
    assert code == 250, text
    c.close()
    topo.router.wait_log(r"queue=QABC123 tenant=acme: to=<bob@acme\.example> via=pool")
    # XCLIENT: the store's own log lines carry the router's session id
    sid = re.search(r"\[(\w+)\]$", text).group(1)
    topo.stores[0].wait_log(r"lmtp\(bob@acme\.example\)<\d+><%s[:>].*saved mail" % sid)
    topo.router.wait_log(r"queue=QABC123: to=<nobody@acme\.example> refused")
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]


def test_bare_lf_commands_and_data(topo):
    m = marker()
    c = Raw(topo.router)
    c.send("LHLO x\nMAIL FROM:<%s>\nRCPT TO:<bob@acme.example>\nDATA\n" % SENDER)
    got = c.replies(4)
    assert [g[0] for g in got] == [250, 250, 250, 354], got
    c.send("Subject: %s\n\nline one\n..dotted\n.\n" % m)
    code, text = c.reply()
    assert code == 250, text
    c.send("QUIT\n")
    c.close()
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    path = [os.path.join(topo.stores[0].maildir("bob@acme.example"), "new", n)
            for n in os.listdir(os.path.join(topo.stores[0].maildir("bob@acme.example"),
                                             "new"))]
    texts = [open(p, "rb").read() for p in path]
    mine = [t for t in texts if m.encode() in t][0]
    assert b"\n.dotted" in mine and b"\n..dotted" not in mine, mine


def test_long_lines(topo):
    c = Raw(topo.router)
    c.send("LHLO x\r\n")
    c.reply()
    c.send("NOOP " + "x" * 100000 + "\r\nNOOP\r\n")
    got = c.replies(2)
    assert got[0][0] == 500 and "too long" in got[0][1], got
    assert got[1][0] == 250, got
    # a 100 KB line inside a message is passed on (a store may refuse it)
    m = marker()
    c.send("MAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\nDATA\r\n" % SENDER)
    assert [g[0] for g in c.replies(3)] == [250, 250, 354]
    c.send("Subject: %s\r\n\r\n%s\r\n.\r\n" % (m, "y" * 100000))
    code, text = c.reply()
    assert code == 250, text
    c.close()
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]


def test_recipient_limit(topo):
    c = Raw(topo.router)
    c.send("LHLO x\r\nMAIL FROM:<%s>\r\n" % SENDER)
    c.replies(2)
    c.send("RCPT TO:<bob@acme.example>\r\n" * 10000 + "RSET\r\n")
    got = c.replies(10001)
    codes = [g[0] for g in got]
    assert codes[:100] == [250] * 100
    assert codes[100:10000] == [452] * 9900 and got[100][1].startswith("4.5.3"), got[100]
    assert codes[10000] == 250
    c.close()
    assert alive(topo)


def test_message_size_limit(topo):
    m = marker()
    c = Raw(topo.router)
    c.send("LHLO x\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\n"
           "RCPT TO:<peter@initech.example>\r\nDATA\r\n" % SENDER)
    assert [g[0] for g in c.replies(5)] == [250, 250, 250, 250, 354]
    c.send(message(m, size=3 * 1024 * 1024) + ".\r\n")
    got = c.replies(2)
    assert [g[0] for g in got] == [552, 552], got
    assert got[0][1].startswith("5.3.4")
    c.send("NOOP\r\n")
    assert c.reply()[0] == 250
    c.close()
    time.sleep(0.3)
    assert topo.counts("bob@acme.example", m) == [0, 0, 0]
    assert topo.counts("peter@initech.example", m) == [0, 0, 0]


@pytest.mark.parametrize("size", [100, 1024 * 1024])
def test_truncated_data_and_client_gone_deliver_nothing(topo, size):
    m = marker()
    c = Raw(topo.router)
    c.send("LHLO x\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\n"
           "RCPT TO:<peter@initech.example>\r\nDATA\r\n" % SENDER)
    assert [g[0] for g in c.replies(5)] == [250, 250, 250, 250, 354]
    c.send(message(m, size=size)[:-2])            # no final line end, no dot
    time.sleep(0.2)
    c.s.shutdown(socket.SHUT_WR)                  # truncated: EOF mid-DATA
    assert c.closed()
    c.close()
    time.sleep(0.5)
    assert topo.counts("bob@acme.example", m) == [0, 0, 0]
    assert topo.counts("peter@initech.example", m) == [0, 0, 0]
    assert alive(topo)
    topo.router.wait_log(r"not delivered")


def test_binary_junk_and_nul(topo):
    c = Raw(topo.router)
    c.send(b"LHLO x\r\n\x00\xff\xfe junk\r\nMAIL FROM:<a\x00b@c>\r\n" + bytes(range(1, 32)) +
           b"\r\n")
    got = c.replies(4)
    assert got[0][0] == 250 and [g[0] for g in got[1:]] == [500, 500, 500], got
    c.close()
    assert alive(topo)


def test_random_input_keeps_the_router_serving(topo):
    """Seeded random sessions: fragments of valid commands, CR/LF/NUL,
    bytes above 127, long runs, DATA with and without recipients, cut at
    random points. The router keeps answering (and, under ASan, stays
    clean: test_zz checks its exit)."""
    import random
    rnd = random.Random(6)
    words = [b"LHLO x", b"MAIL FROM:<a@b.example>", b"RCPT TO:<bob@acme.example>",
             b"RCPT TO:<nobody@acme.example>", b"DATA", b"RSET", b"NOOP", b".", b"..",
             b"QUIT", b"MAIL FROM:<a@b.example> SIZE=", b"RCPT TO:<", b"\x00", b"\xff\xfe",
             b"\r", b"\n", b"\r\n", b"x" * 3000, b"LHLO", b"MAIL FROM:<@>", b"BODY=8BITMIME"]
    for _ in range(60):
        try:
            c = Raw(topo.router, timeout=5)
            data = b"".join(rnd.choice(words) + rnd.choice([b"\r\n", b"\n", b" ", b""])
                            for _ in range(rnd.randrange(1, 60)))
            c.send(data[:rnd.randrange(1, len(data) + 1)])
            if rnd.random() < 0.5:
                c.s.shutdown(socket.SHUT_WR)
            c.close()
        except OSError:
            pass
    time.sleep(0.5)
    assert alive(topo)
    m = marker()
    _, data = topo.router.transaction(SENDER, ["bob@acme.example"], message(m))
    assert data[0][0] == 250, data


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_that_does_not_read_its_replies(topo):
    """1,000,000 pipelined NOOPs from a client that reads nothing for a
    while (small receive buffer): the router stops reading commands once
    its replies pile up (they are not buffered without bound: 14 MB
    here), then answers every one."""
    r = topo.router
    n = 1000000
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", r.port))
    s.sendall(b"LHLO x\r\n")
    head = b""
    while not re.search(rb"\r\n250 SIZE[^\r]*\r\n$", head):
        head += s.recv(65536)
    before = rss_kib(r.pid)
    sender = threading.Thread(target=s.sendall, args=(b"NOOP\r\n" * n,), daemon=True)
    sender.start()
    time.sleep(1.5)
    grown = rss_kib(r.pid) - before
    with open(r.binary, "rb") as f:
        asan = b"__asan_init" in f.read()
    # (ASan keeps freed memory in quarantine: its RSS says nothing here)
    assert asan or grown < 3000, "router grew by %d KiB holding replies" % grown
    assert sender.is_alive(), "the router read every command at once"
    want = b"250 2.0.0 OK\r\n" * n
    got = bytearray()
    while len(got) < len(want):
        chunk = s.recv(1 << 20)
        assert chunk, "closed after %d bytes" % len(got)
        got += chunk
    assert bytes(got) == want
    sender.join(30)
    s.close()
    assert alive(topo)


def test_too_many_errors_end_the_session(topo):
    c = Raw(topo.router)
    c.send("BAD\r\n" * 25)
    got = c.replies(21)
    assert got[-1][0] == 421, got[-1]
    assert c.closed()
    c.close()


# --- many sessions --------------------------------------------------------------------------

def _lines_complete(buf, n):
    """True when buf holds n complete (final) replies."""
    finals = re.findall(rb"(?m)^\d{3} [^\r\n]*\r\n", buf)
    return len(finals) >= n


def test_a_thousand_concurrent_sessions(topo):
    """1,000 sessions open at once (greeted, LHLO answered, NOOP answered
    while all are open), 200 of them deliver a message in parallel:
    each arrives exactly once."""
    r = topo.router
    n, senders = 1000, 200
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=20)
            socks.append(s)
        bufs = {s: b"" for s in socks}

        def exchange(group, data, want, timeout=30):
            for s in group:
                bufs[s] = b""
                s.sendall(data(s) if callable(data) else data)
            deadline = time.monotonic() + timeout
            pending = set(group)
            import selectors
            sel = selectors.DefaultSelector()
            for s in pending:
                sel.register(s, selectors.EVENT_READ)
            while pending:
                left = deadline - time.monotonic()
                assert left > 0, "%d sessions without an answer" % len(pending)
                for key, _ in sel.select(left):
                    s = key.fileobj
                    chunk = s.recv(65536)
                    assert chunk, "a session was closed: %r" % bufs[s]
                    bufs[s] += chunk
                    if _lines_complete(bufs[s], want):
                        pending.discard(s)
                        sel.unregister(s)
            sel.close()
            return {s: bufs[s] for s in group}

        for s in socks:              # banners
            s.settimeout(20)
        got = exchange(socks, b"", 1)
        assert all(b.startswith(b"220 ") for b in got.values())
        got = exchange(socks, b"LHLO many.test\r\n", 1)
        assert all(b"250 SIZE" in b for b in got.values())
        assert r.metric("tn_router_sessions_active") >= n
        got = exchange(socks, b"NOOP\r\n", 1)
        assert all(b.startswith(b"250 ") for b in got.values())
        marks = {s: marker() for s in socks[:senders]}
        group = socks[:senders]
        got = exchange(group, lambda s: ("MAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\n"
                                         "RCPT TO:<peter@initech.example>\r\nDATA\r\n"
                                         % SENDER).encode(), 4)
        assert all(b.endswith(b"354 go ahead, end with <CRLF>.<CRLF>\r\n")
                   for b in got.values()), list(got.values())[:3]
        got = exchange(group, lambda s: (message(marks[s]) + ".\r\n").encode(), 2, timeout=60)
        bad = [b for b in got.values() if not re.match(rb"250 [^\r]*\r\n250 ", b)]
        assert not bad, bad[:3]
    finally:
        for s in socks:
            s.close()
    for m in marks.values():
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
        assert topo.counts("peter@initech.example", m) == [0, 0, 1]
    assert alive(topo)
    deadline = time.monotonic() + 5
    while r.metric("tn_router_sessions_active") > 1:
        assert time.monotonic() < deadline, "sessions not closed"
        time.sleep(0.05)


# --- operation ----------------------------------------------------------------------------

def test_control_socket(topo):
    r = topo.router
    r.transaction(SENDER, ["alice@acme.example"], message(marker()))   # a pinned host
    lines = r.control("pools")
    assert lines[-1] == "ok %d" % (len(lines) - 1), lines
    for i, pool in ((0, "pool-a"), (1, "pool-a"), (2, "pool-b")):
        assert any(l.startswith("member %s %s up active failures=0" % (pool, topo.member(i)))
                   for l in lines), lines
    assert any(l.startswith("member - 127.0.0.1:%d down" % topo.dead_port) for l in lines)
    assert r.control("route nobody@acme.example")[-1] == \
        "ok refuse 550 5.1.1 no such mailbox (no such address)"
    assert r.control("route zed@acme.example")[-1].startswith("ok refuse 550 5.1.1")
    route = r.control("route peter@initech.example")[-1]
    assert route == ("ok route via=default pool=pool-b host=- tenant=initech status=active "
                     "members=%s" % topo.member(2)), route
    route = r.control("route hank@globex.example")[-1]
    assert "status=suspended" in route and route.startswith("ok route"), route
    assert r.control("frobnicate")[-1].startswith("error unknown command")
    assert r.control("route")[-1].startswith("error usage")
    assert r.control("x" * 5000)[-1].startswith("error")


def test_metrics(topo):
    r = topo.router
    r.transaction(SENDER, ["bob@acme.example", "nobody@acme.example", "alice@acme.example"],
                  message(marker()))
    text = r.metrics()
    for series in ("tn_router_sessions_active", "tn_router_sessions_total",
                   "tn_router_messages_total", "tn_router_store_up",
                   "tn_router_store_latency_seconds_bucket", "tn_router_lookup_"):
        assert series in text, series
    assert r.metric("tn_router_recipients_total", result="delivered") > 0
    assert r.metric("tn_router_recipients_total", result="unknown") > 0
    assert r.metric("tn_router_recipients_total", result="store_unavailable") > 0
    assert r.metric("tn_router_store_latency_seconds_count", store=topo.member(0)) > 0
    assert r.metric("tn_router_store_transactions_total", store=topo.member(0)) > 0
    assert r.metric("tn_router_store_up", store=topo.member(0)) == 1
    assert r.metric("tn_router_store_up", store="127.0.0.1:%d" % topo.dead_port) == 0
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % r.metrics_port, timeout=5)
    assert e.value.code == 404


def test_privileges_dropped(topo):
    import pwd
    nobody = pwd.getpwnam("nobody")
    with open("/proc/%d/status" % topo.router.pid) as f:
        status = dict(l.split(":", 1) for l in f if ":" in l)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, status["Gid"]
    assert os.stat(topo.router.control_path).st_uid == nobody.pw_uid
    assert os.stat(topo.router.control_path).st_mode & 0o077 == 0


def test_check_mode_and_bad_configuration(topo, tmp_path):
    r = topo.router
    base = [r.binary, "-c", topo.stack.conf]
    out = subprocess.run(base + ["-n", "-o", "router_pool_members=p=127.0.0.1:1 p=h2"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "pool p: 127.0.0.1:1 h2:24" in out.stdout
    for bad in ("router_pool_members=nopool", "router_default_pool=none",
                "router_buffer_low_watermark=1m", "router_nosuch=1"):
        out = subprocess.run(base + ["-n", "-o", bad], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 78, (bad, out.returncode, out.stderr)
        assert out.stderr.strip(), bad


def test_shared_conf_file_with_a_router_section(topo, tmp_path):
    """One tenantmail.conf for the host: the router accepts the other
    programs' top-level lines, reads its own [tn-lmtp-router] section,
    and tnctl (or any other program) accepts the file with that section."""
    with open(topo.stack.conf) as f:
        text = f.read()
    text += "\n".join(["", "outbox_dir = %s" % (tmp_path / "outbox"), "prov_timeout = 12s",
                       "hookd_endpoints_dir = %s" % (tmp_path / "hooks.d"),
                       "[tn-lmtp-router]", "router_pool_members = p1=10.0.0.1,",
                       "    p1=10.0.0.2:2424", "router_default_pool = p1",
                       "[tn-provisiond]", "provd_listen = 127.0.0.1:1", ""])
    conf = str(tmp_path / "tenantmail.conf")
    with open(conf, "w") as f:
        f.write(text)
    out = subprocess.run([topo.router.binary, "-c", conf, "-n"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "pool p1: 10.0.0.1:24 10.0.0.2:2424" in out.stdout, out.stdout
    assert "router_default_pool = p1" in out.stdout
    r = tnctl(conf, "config", "-n")
    assert r.returncode == 0, r.stderr
    with open(conf, "a") as f:
        f.write("[global]\nrouter_default_pool = p1\n")    # not at the top level
    assert tnctl(conf, "config", "-n").returncode != 0


def test_man_page_documents_every_parameter():
    with open(SOURCE) as f:
        text = f.read()
    m = re.search(r"tn_router_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "no tn_router_params table in %s" % SOURCE
    code = {name: (ptype.lower(), default)
            for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert len(code) >= 20
    page, problems = page_parameters(PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s is not documented" % name)
            continue
        if page[name][:2] != (ptype, default):
            problems.append("line %d: %s: %r in the page, %r in the code"
                            % (page[name][2], name, page[name][:2], (ptype, default)))
    problems += ["%s is not in tn_router_params" % n for n in sorted(page) if n not in code]
    report(problems, "%s disagrees with %s" % (PAGE, SOURCE))
    with open(PAGE) as f:
        assert "\n.SH SECURITY\n" in f.read()
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", PAGE], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_valgrind_malformed_input_no_errors_no_leaks(topo, tmp_path):
    """The router under valgrind (memcheck): deliveries, protocol errors,
    a long line, a message too big, truncated DATA, a client gone
    mid-DATA, the control socket; it exits 0 after SIGTERM, which with
    --error-exitcode means no invalid access and no definite leak.
    (Needs the plain build: TN_BUILD_DIR is not an ASan build here.)"""
    if not shutil.which("valgrind"):
        pytest.fail("valgrind missing (apt-get install valgrind)", pytrace=False)
    overrides = dict(topo.router.overrides)
    for k in ("router_listen", "router_control_socket", "router_metrics_listen"):
        overrides.pop(k)
    vglog = str(tmp_path / "valgrind.log")
    vg = tnrouter.Router(tmp_path / "vg", topo.stack.conf, overrides, start_timeout=60,
                         wrapper=["valgrind", "--vgdb=no", "--log-file=" + vglog,
                                  "--error-exitcode=99", "--leak-check=full",
                                  "--show-leak-kinds=definite",
                                  "--errors-for-leak-kinds=definite"])
    try:
        m = marker()
        _, data = vg.transaction(SENDER, ["bob@acme.example", "nobody@acme.example",
                                          "peter@initech.example"], message(m, size=100000))
        assert [c for c, _ in data] == [250, 250], data
        c = Raw(vg, timeout=30)
        c.send("MAIL FROM:<a@b.example>\r\nLHLO x\r\nNOOP " + "x" * 50000 + "\r\n"
               "MAIL FROM:<a@b.example> SIZE=99999999\r\nDATA\r\nQUIT\r\n")
        assert [g[0] for g in c.replies(6)] == [503, 250, 500, 552, 503, 221]
        c.close()
        for size, finish in ((3 * 1024 * 1024, True), (200000, False), (100, False)):
            c = Raw(vg, timeout=30)
            c.send("LHLO x\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@acme.example>\r\n"
                   "RCPT TO:<peter@initech.example>\r\nDATA\r\n" % SENDER)
            assert [g[0] for g in c.replies(5)][-1] == 354
            c.send(message(marker(), size=size) + (".\r\n" if finish else ""))
            if finish:
                assert [g[0] for g in c.replies(2)] == [552, 552]
            c.close()
        assert vg.control("pools")[-1].startswith("ok")
        assert vg.control("route bob@acme.example")[-1].startswith("ok route")
        time.sleep(0.5)
    finally:
        rc = vg.stop(timeout=60)
    with open(vglog) as f:
        report_text = f.read()
    assert rc == 0, "valgrind: exit status %s\n%s" % (rc, report_text[-5000:])
    assert "Memcheck" in report_text and "ERROR SUMMARY: 0 errors" in report_text, \
        report_text[-5000:]
    assert re.search(r"definitely lost: 0 bytes|All heap blocks were freed", report_text), \
        report_text[-5000:]


def test_zz_router_stops_cleanly(topo):
    """Last: SIGTERM ends the router with status 0; under ASan its exit
    checks (leaks included) would make that non-zero and log the report."""
    r = topo.router
    rc = r.stop()
    text = r.log_text()
    assert rc == 0, "exit status %s:\n%s" % (rc, text[-3000:])
    for bad in ("Sanitizer", "runtime error", "LeakSanitizer"):
        assert bad not in text, text[text.index(bad) - 200:][:3000]
    assert "info: stopped" in text
