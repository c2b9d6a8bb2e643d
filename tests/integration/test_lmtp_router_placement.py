"""test_lmtp_router_placement -- router_placement = hash-record: a
mailbox with neither tnMailHost nor tnMailPool is placed on one member
of the default pool by rendezvous hashing, and the choice is written to
its tnMailHost through the provisioning write path, with the real slapd
+ Redis of tnharness.Stack and real Dovecot LMTP stores.

Topology (one per module):
  stores S0, S1, S2: private Dovecots (tndovecot), static userdb;
  router A: default pool d = S0, S1, S2, hash-record, writing as the
  harness's provisioning account;
  every test adds its own mailboxes under tenant initech (no pool) as
  the rootdn, so nothing is cached about them before the test.
"""

import json
import os
import re
import subprocess
import time
import uuid

import pytest

import tndovecot as td
import tnharness as th
import tnrouter
from tnprobe import tnctl

SENDER = "sender@example.org"
INITECH = "tnTenantId=initech," + th.TENANTS


GLOBEX = "tnTenantId=globex," + th.TENANTS


def dn_of(address):
    return "mail=%s,%s" % (address, GLOBEX if address.endswith("@globex.example") else INITECH)


def new_mailbox(stack, prefix="p", domain="initech.example"):
    address = "%s-%s@%s" % (prefix, uuid.uuid4().hex[:10], domain)
    stack.slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: %s\n" % (dn_of(address), address))
    return address


class Topology:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.workdir = str(workdir)
        self.stores = []
        self.routers = []
        problems = td.missing_prerequisites()
        if problems:
            pytest.fail("prerequisites: " + "; ".join(problems), pytrace=False)
        try:
            self.stores = tnrouter.start_stores(self.workdir)
            self.router = self.start_router("a", [0, 1, 2])
        except BaseException:
            self.stop()
            raise

    def member(self, i):
        return "127.0.0.1:%d" % self.stores[i].lmtp_port

    def overrides(self, members, placement="hash-record"):
        return {
            "router_pool_members": " ".join("d=%s" % self.member(i) for i in members),
            "router_default_pool": "d",
            "router_placement": placement,
            "router_placement_bind_dn": th.PROV_DN,
            "router_placement_password_file": self.stack.prov_password_file,
            "router_health_interval": "200ms",
            "router_store_connect_timeout": "3s",
            "router_store_timeout": "10s",
            "lookup_timeout": "3s",
            "ldap_retry_down": "0",
            "prov_timeout": "3s",
            "outbox_dir": os.path.join(self.workdir, "outbox"),
        }

    def start_router(self, name, members, placement="hash-record"):
        r = tnrouter.Router(os.path.join(self.workdir, "router-" + name), self.stack.conf,
                            self.overrides(members, placement))
        self.routers.append(r)
        return r

    def count(self, i, user, marker):
        return len(tnrouter.maildir_messages(self.stores[i], user, marker))

    def where(self, user, marker):
        """The index of the one store holding marker for user."""
        counts = [self.count(i, user, marker) for i in range(len(self.stores))]
        assert sorted(counts) == [0, 0, 1], counts
        return counts.index(1)

    def stop(self):
        for r in self.routers:
            r.stop()
        td.stop_all(self.stores)


@pytest.fixture(scope="module")
def topo(stack):
    with tnrouter.module_workdir("tn-lmtp-place-") as workdir:
        t = Topology(stack, workdir)
        try:
            yield t
        finally:
            t.stop()


def message(marker):
    return "From: %s\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\nhello %s\r\n" % (
        SENDER, marker, marker, marker)


def deliver(topo, router, address):
    """One message to address through router: the store index it went to."""
    m = "m-" + uuid.uuid4().hex
    rcpts, data = router.transaction(SENDER, [address], message(m))
    assert [c for c, _ in rcpts] == [250], rcpts
    assert [c for c, _ in data] == [250], data
    return topo.where(address, m)


def route(router, address):
    line = router.control("route %s" % address)[-1]
    m = re.match(r"ok route via=(\S+) pool=(\S+) host=(\S+)", line)
    assert m, line
    return m.group(1), m.group(3)


# --- placement ---------------------------------------------------------------------------

def test_unplaced_mailbox_is_placed_recorded_and_read_there(topo):
    stack, r = topo.stack, topo.router
    address = new_mailbox(stack)
    via, host = route(r, address)
    assert via == "placed", (via, host)
    assert stack.mail_host(address) is None          # route writes nothing
    store = deliver(topo, r, address)
    assert topo.member(store) == host
    # the first delivery recorded it, through the provisioning write path
    assert stack.wait_mail_host(address) == host
    r.wait_log(r"to=<%s> placement recorded: tnMailHost %s" % (re.escape(address),
                                                               re.escape(host)))
    # the Dovecot proxy's lookup reads the same store (the cache was
    # invalidated: no stale "no host" answer)
    out = tnctl(stack.conf, "lookup", "--json", address)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["account"]["host"] == host
    # the router follows the directory now: a pinned host, no new write
    deadline = time.monotonic() + 5
    while route(r, address)[0] != "host":
        assert time.monotonic() < deadline, route(r, address)
        time.sleep(0.05)
    for _ in range(3):
        assert deliver(topo, r, address) == store
    assert r.metric("tn_router_placements_total", result="recorded") >= 1


def test_other_router_other_member_order_keeps_mailboxes(topo):
    """A second router whose default pool lists the members in another
    order, one of them missing, delivers every recorded mailbox where
    the first one put it."""
    stack, a = topo.stack, topo.router
    placed = {}
    # enough mailboxes that some are on S1, which b does not list: the
    # ones b's hash alone would move
    while sum(1 for s in placed.values() if s == 1) < 2:
        assert len(placed) < 60, placed
        address = new_mailbox(stack, "keep")
        placed[address] = deliver(topo, a, address)
    for address, store in placed.items():
        assert stack.wait_mail_host(address) == topo.member(store)
    b = topo.start_router("b", [2, 0])
    try:
        for address, store in placed.items():
            assert route(b, address) == ("host", topo.member(store))
            assert deliver(topo, b, address) == store
        assert b.metric("tn_router_placements_total", result="recorded") == 0
    finally:
        b.stop()


def test_concurrent_placement_is_not_flipped(topo):
    """The directory got a host (another router, an admin) that this
    router's cache does not show yet: the write is skipped and the
    directory's choice stands."""
    stack, r = topo.stack, topo.router
    address = new_mailbox(stack, "race")
    via, mine = route(r, address)                  # cached now: no host
    assert via == "placed"
    theirs = next(topo.member(i) for i in range(3) if topo.member(i) != mine)
    stack.slapd.modify("dn: %s\nchangetype: modify\nadd: tnMailHost\ntnMailHost: %s\n"
                       % (dn_of(address), theirs))      # no invalidation
    mark = r.log_mark()
    before = r.metric("tn_router_placements_total", result="already_placed")
    deliver(topo, r, address)
    r.wait_log(r"to=<%s> placement: the directory already says %s" % (
        re.escape(address), re.escape(theirs)), mark)
    assert stack.mail_host(address) == theirs
    assert r.metric("tn_router_placements_total", result="already_placed") == before + 1
    res = tnctl(stack.conf, "cache", "invalidate", "--address", address)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 5
    while route(r, address) != ("host", theirs):
        assert time.monotonic() < deadline, route(r, address)
        time.sleep(0.05)
    assert topo.member(deliver(topo, r, address)) == theirs


def test_tenant_given_a_pool_meanwhile_is_not_overridden(topo):
    """The mailbox has no host or pool of its own, but its tenant got a
    pool that this router's cache does not show yet: nothing is written,
    so the mailbox follows its tenant's pool."""
    stack, r = topo.stack, topo.router
    address = new_mailbox(stack, "tpool", "globex.example")
    assert route(r, address)[0] == "placed"           # cached: no pool
    stack.slapd.modify("dn: %s\nchangetype: modify\nadd: tnMailPool\ntnMailPool: p-new\n"
                       % GLOBEX)
    try:
        mark = r.log_mark()
        deliver(topo, r, address)
        r.wait_log(r"to=<%s> placement: the tenant has pool p-new now: not placed"
                   % re.escape(address), mark)
        assert stack.mail_host(address) is None
    finally:
        stack.slapd.modify("dn: %s\nchangetype: modify\ndelete: tnMailPool\n" % GLOBEX)
        tnctl(stack.conf, "cache", "invalidate", "--tenant", "globex")


def test_hash_without_record_writes_nothing_and_agrees(topo):
    """router_placement = hash: the same member as hash-record with the
    same members (in another order), and no write."""
    stack, a = topo.stack, topo.router
    c = topo.start_router("c", [2, 1, 0], placement="hash")
    try:
        for _ in range(5):
            address = new_mailbox(stack, "hash")
            via, host = route(c, address)
            assert (via, host) == route(a, address)
            assert topo.member(deliver(topo, c, address)) == host
        time.sleep(0.5)
        assert stack.mail_host(address) is None
        assert "tn_router_placements_total" not in c.metrics()
    finally:
        c.stop()


def test_directory_down_mail_delivered_placement_recorded_later(topo):
    stack, r = topo.stack, topo.router
    address = new_mailbox(stack, "down")
    via, host = route(r, address)                  # in Redis and memory now
    assert via == "placed"
    mark = r.log_mark()
    before = r.metric("tn_router_placements_total", result="failed")
    failed = re.compile(r"to=<%s> placement on %s not recorded: .*tried again at the next "
                        r"delivery" % (re.escape(address), re.escape(host)))

    def wait_failures(n):
        deadline = time.monotonic() + 10
        while len(failed.findall(r.log_since(mark))) < n:
            assert time.monotonic() < deadline, r.log_since(mark)
            time.sleep(0.05)

    stack.slapd.stop()
    try:
        # answered from the cache; the write fails; the mail is delivered
        assert topo.member(deliver(topo, r, address)) == host
        wait_failures(1)
        assert r.metric("tn_router_placements_total", result="failed") >= before + 1
        # the next delivery tries again (and fails again)
        assert topo.member(deliver(topo, r, address)) == host
        wait_failures(2)
    finally:
        stack.slapd.start()
    assert stack.mail_host(address) is None
    # the next deliveries try again until the directory takes it
    deadline = time.monotonic() + 15
    while True:
        assert topo.member(deliver(topo, r, address)) == host
        if stack.wait_mail_host(address, timeout=1.0) is not None:
            break
        assert time.monotonic() < deadline, "placement never recorded"
    assert stack.mail_host(address) == host


def test_mailboxes_with_a_pool_or_host_are_not_placed(topo):
    stack, r = topo.stack, topo.router
    address = new_mailbox(stack, "pinned")
    stack.slapd.modify("dn: %s\nchangetype: modify\nadd: tnMailHost\ntnMailHost: %s\n"
                       % (dn_of(address), topo.member(1)))
    assert route(r, address) == ("host", topo.member(1))
    assert deliver(topo, r, address) == 1
    assert stack.mail_host(address) == topo.member(1)


# --- configuration -----------------------------------------------------------------------

def test_placement_settings_checked(topo, tmp_path):
    base = [topo.router.binary, "-c", topo.stack.conf, "-n",
            "-o", "router_pool_members=d=127.0.0.1:1 d=127.0.0.2:1"]
    ok = subprocess.run(base + ["-o", "router_default_pool=d"], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "router_placement" not in ok.stdout        # off (none) unless set
    good = ["-o", "router_default_pool=d", "-o", "router_placement=hash-record",
            "-o", "router_placement_bind_dn=%s" % th.PROV_DN]
    ok = subprocess.run(base + good, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "router_placement = hash-record" in ok.stdout
    for bad in (["-o", "router_placement=hash"],                   # no default pool
                ["-o", "router_default_pool=d", "-o", "router_placement=hash-record"],
                ["-o", "router_default_pool=d", "-o", "router_placement=sometimes"],
                ["-o", "router_pool_members=d=[::1]:24", "-o", "router_default_pool=d",
                 "-o", "router_placement=hash-record",
                 "-o", "router_placement_bind_dn=%s" % th.PROV_DN]):
        out = subprocess.run(base + bad, capture_output=True, text=True, timeout=30)
        assert out.returncode == 78, (bad, out.returncode, out.stdout, out.stderr)
        assert out.stderr.strip(), bad
