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
import select
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
SOURCE = os.path.join(TOP, "lmtp-router", "tn-lmtp-router.c")
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
        passdb = "passdb {\n  driver = static\n  args = nopassword=y\n}\n"
        userdb = ("userdb {\n  driver = static\n"
                  "  args = uid=vmail gid=vmail allow_all_users=yes\n}\n")
        for i in range(3):
            self.stores.append(td.Dovecot(os.path.join(self.workdir, "store%d" % i),
                                          passdb=passdb, userdb=userdb,
                                          protocols="lmtp imap"))
        self.dead_port = th.free_port()
        stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnMailHost\n"
                           "tnMailHost: 127.0.0.1:%d\n" % (dn_of("alice@acme.example"),
                                                           self.dead_port))
        members = " ".join(["pool-a=127.0.0.1:%d" % self.stores[0].lmtp_port,
                            "pool-a=127.0.0.1:%d" % self.stores[1].lmtp_port,
                            "pool-b=127.0.0.1:%d" % self.stores[2].lmtp_port])
        self.router = tnrouter.Router(os.path.join(self.workdir, "router"), stack.conf, {
            "router_pool_members": members,
            "router_default_pool": "pool-b",
            "router_health_interval": "200ms",
            "router_health_failures": "1",
            "router_store_connect_timeout": "1s",
            "router_store_timeout": "5s",
            "router_recipient_limit": "100",
            "router_message_size_limit": "2m",
            "router_line_length_limit": "2k",
            "router_user": "nobody",
            "lookup_timeout": "1s",
            "ldap_retry_down": "0",
        })

    def member(self, i):
        return "127.0.0.1:%d" % self.stores[i].lmtp_port

    def count(self, i, user, marker):
        """Files of store i's Maildir of user holding marker."""
        n = 0
        for sub in ("new", "cur"):
            d = os.path.join(self.stores[i].maildir(user), sub)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    with open(os.path.join(d, name), "rb") as f:
                        if marker.encode() in f.read():
                            n += 1
                except FileNotFoundError:
                    pass
        return n

    def counts(self, user, marker):
        return [self.count(i, user, marker) for i in range(len(self.stores))]

    def stop(self):
        if self.router is not None:
            self.router.stop()
        td.stop_all(self.stores)


@pytest.fixture(scope="module")
def topo(stack, tmp_path_factory):
    t = Topology(stack, tmp_path_factory.mktemp("router"))
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
