"""The lookup library against a real slapd and redis-server.

One stack (slapd with the example DIT, Redis) for the module. Tests that
change the directory put it back. Every answer is checked exactly: which
account, which status and where it came from, which limit and where it
came from, which layer answered.
"""

import json
import re
import time

import pytest

import tnharness
from tnprobe import Serve, probe, resolve, tnctl

GiB = 1 << 30
MiB = 1 << 20


def one(conf, addr, **kw):
    return resolve(conf, addr, **kw)[0]


def cold(stack, *keys):
    """Drop cache entries so the next resolve must ask the directory."""
    stack.redis.cli("DEL", *["tn:v1:" + k for k in keys])


def acct(answer):
    assert answer["result"] == "found", answer
    return answer["account"]


# --- what the example directory resolves to --------------------------------

EXPECTED = {
    "alice@acme.example": dict(kind="mailbox", tenant="acme", status="active",
                               quota_bytes=(2 * GiB, "object"), host="store1.example:24",
                               pool="pool-a"),
    "bob@acme.example": dict(kind="mailbox", tenant="acme", status="active",
                             quota_bytes=(GiB, "tenant"), host=None, pool="pool-a"),
    "carol@acme.example": dict(kind="mailbox", status="suspended",
                               status_from="object", status_reason="abuse report"),
    "zed@acme.example": dict(kind="mailbox", status="deleted", status_from="object",
                             status_reason="closed by customer"),
    "dave@acme.example": dict(kind="mailbox", quota_bytes=(MiB, "object")),
    "erin@acme-mail.example": dict(kind="mailbox", domain="acme-mail.example",
                                   max_message_size=(10 * MiB, "object"),
                                   send_rate=(50, "object")),
    "hank@globex.example": dict(kind="mailbox", tenant="globex", status="suspended",
                                status_from="tenant", status_reason="non-payment",
                                max_message_size=(10 * MiB, "tenant")),
    "peter@initech.example": dict(kind="mailbox", tenant="initech", status="active",
                                  quota_bytes=(0, "object"), tenant_storage_bytes=(0, "tenant")),
    "milton@old-initech.example": dict(kind="mailbox", tenant="initech",
                                       status="suspended", status_from="domain",
                                       status_reason="domain transfer pending"),
    "Alice@ACME.Example": dict(kind="mailbox", address="alice@acme.example"),
}


@pytest.mark.parametrize("addr", sorted(EXPECTED))
def test_example_accounts(stack, addr):
    a = acct(one(stack.conf, addr))
    for key, want in EXPECTED[addr].items():
        if isinstance(want, tuple):
            assert (a[key]["value"], a[key]["from"]) == want, (key, a[key])
        else:
            assert a[key] == want, (key, a)
    assert a["password"].startswith("{SHA512-CRYPT}$6$")


def test_tenant_plan_limits(stack):
    a = acct(one(stack.conf, "bob@acme.example"))
    assert a["tenant_storage_bytes"] == {"value": 10 * GiB, "from": "tenant"}
    assert a["max_message_size"] == {"value": 25 * MiB, "from": "tenant"}
    assert a["send_rate"] == {"value": 200, "from": "tenant"}
    assert a["tenant_send_rate"] == {"value": 5000, "from": "tenant"}
    assert a["max_mailboxes"] == {"value": 100, "from": "tenant"}
    assert a["plan"] == "business"


@pytest.mark.parametrize("addr,why", [
    ("nobody@acme.example", "no such address"),
    ("alice@nowhere.example", "domain not hosted here"),
    ("alice", "no '@' in address"),
])
def test_not_found(stack, addr, why):
    a = one(stack.conf, addr)
    assert a["result"] == "notfound"
    assert a["error"] == why


# --- the layers -----------------------------------------------------------

def test_each_layer_answers(stack):
    cold(stack, "adr:bob@acme.example", "dom:acme.example", "ten:acme")
    with Serve(stack.conf) as s:
        first = s.resolve("bob@acme.example")
        second = s.resolve("bob@acme.example")
    assert first["layer"] == "ldap"
    assert second["layer"] == "memory"
    # another process: its memory is empty, Redis has the entries now
    assert one(stack.conf, "bob@acme.example")["layer"] == "redis"
    # one Redis entry per directory object
    for key in ("adr:bob@acme.example", "dom:acme.example", "ten:acme"):
        entry = json.loads(stack.redis.cli("GET", "tn:v1:" + key))
        assert entry["key"] == key.split(":", 1)[1]


def test_tnctl_lookup_shows_layer_and_usage(stack):
    cold(stack, "adr:dave@acme.example")
    r = tnctl(stack.conf, "lookup", "dave@acme.example")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^answered by:\s+ldap$", r.stdout, re.M), r.stdout
    assert re.search(r"^usage:\s+5242880 bytes in 42 messages \(OVER QUOTA\)$",
                     r.stdout, re.M), r.stdout
    r = tnctl(stack.conf, "lookup", "--json", "dave@acme.example")
    out = json.loads(r.stdout)
    assert out["account"]["layer"] == "redis"
    assert out["usage"] == {"bytes": 5242880, "messages": 42}
    assert "password" not in out["account"]
    r = tnctl(stack.conf, "lookup", "nobody@acme.example")
    assert r.returncode == 1 and "not found" in r.stdout


def test_tnctl_domain_and_tenant(stack):
    r = tnctl(stack.conf, "lookup", "--json", "--domain", "old-initech.example")
    a = json.loads(r.stdout)["account"]
    assert (a["kind"], a["tenant"], a["status"], a["status_from"]) == \
        ("domain", "initech", "suspended", "domain")
    r = tnctl(stack.conf, "lookup", "--json", "--tenant", "globex")
    a = json.loads(r.stdout)["account"]
    assert (a["kind"], a["status"], a["status_reason"]) == \
        ("tenant", "suspended", "non-payment")
    assert tnctl(stack.conf, "lookup", "--tenant", "nosuch").returncode == 1
    assert tnctl(stack.conf, "lookup", "--domain", "nosuch.example").returncode == 1


def test_negative_caching_and_invalidation(stack):
    addr = "newbie@acme.example"
    dn = "mail=%s,tnTenantId=acme,%s" % (addr, tnharness.TENANTS)
    cold(stack, "adr:" + addr)
    assert one(stack.conf, addr)["result"] == "notfound"
    assert stack.redis.cli("GET", "tn:v1:adr:" + addr).strip() == "!"
    ttl = int(stack.redis.cli("PTTL", "tn:v1:adr:" + addr))
    assert 0 < ttl <= 300000                      # cache_negative_ttl 5m
    stack.slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: %s\n" % (dn, addr))
    try:
        # the negative entry still answers: the directory was not asked
        assert one(stack.conf, addr)["result"] == "notfound"
        r = tnctl(stack.conf, "cache", "invalidate", "--address", addr)
        assert r.returncode == 0, r.stderr
        found = one(stack.conf, addr)
        assert found["result"] == "found" and found["layer"] == "ldap"
        ttl = int(stack.redis.cli("PTTL", "tn:v1:adr:" + addr))
        assert 300000 < ttl <= 3600000            # cache_positive_ttl 1h
    finally:
        stack.slapd.delete(dn)
        tnctl(stack.conf, "cache", "invalidate", "--address", addr)


def _wait_answer(serve, addr, pred, timeout=1.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        a = serve.resolve(addr)
        if pred(a):
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError("change not seen within %.1f s: %s" % (timeout, a))


def test_invalidation_reaches_other_process_within_1s(stack):
    dn = "mail=alice@acme.example,tnTenantId=acme," + tnharness.TENANTS
    with Serve(stack.conf) as s:
        assert acct(s.resolve("alice@acme.example"))["quota_bytes"]["value"] == 2 * GiB
        assert s.resolve("alice@acme.example")["layer"] == "memory"
        stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnQuotaBytes\n"
                           "tnQuotaBytes: 3221225472\n" % dn)
        try:
            r = tnctl(stack.conf, "cache", "invalidate", "--address", "alice@acme.example")
            assert r.returncode == 0, r.stderr
            took = _wait_answer(s, "alice@acme.example",
                                lambda a: a["account"]["quota_bytes"]["value"] == 3 * GiB)
            assert took < 1.0
        finally:
            stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnQuotaBytes\n"
                               "tnQuotaBytes: 2147483648\n" % dn)
            tnctl(stack.conf, "cache", "invalidate", "--address", "alice@acme.example")


def test_usage_read_in_the_lookups_round_trip(stack):
    """tn_lookup_resolve_usage: when the lookup asks Redis and knows the
    domain's tenant, the counters come in the same pipeline; never for
    another tenant than the answer's, never from the in-process cache."""
    r = stack.redis
    r.cli("HSET", "tn:v1:usage:mbx:bob@acme.example", "bytes", "1234", "messages", "5")
    r.cli("HSET", "tn:v1:usage:ten:acme", "bytes", "987654", "messages", "321")
    r.cli("DEL", "tn:v1:usage:mbx:dave@acme.example")
    try:
        for a in ("alice", "bob", "dave", "carol"):
            one(stack.conf, a + "@acme.example")          # Redis holds them all
        with Serve(stack.conf) as s:
            # a fresh process does not know acme.example's tenant yet
            first = s.send("usage alice@acme.example")
            assert first["result"] == "found" and first["layer"] == "redis"
            assert first["usage"] is None
            got = s.send("usage bob@acme.example")
            assert got["layer"] == "redis", got
            assert got["usage"] == {"mailbox_bytes": 1234, "mailbox_messages": 5,
                                    "tenant_bytes": 987654, "tenant_messages": 321}
            assert s.send("usage dave@acme.example")["usage"] == {
                "mailbox_bytes": 0, "mailbox_messages": 0,
                "tenant_bytes": 987654, "tenant_messages": 321}
            # an in-process hit has no round trip to carry the counters
            again = s.send("usage bob@acme.example")
            assert again["layer"] == "memory" and again["usage"] is None
            # the hint says acme, the answer says globex: not acme's counters
            for key in ("adr:carol@acme.example", "dom:acme.example"):
                obj = json.loads(r.cli("GET", "tn:v1:" + key).strip())
                obj["tenant"] = "globex"
                r.cli("SET", "tn:v1:" + key, json.dumps(obj), "PX", "60000")
            moved = s.send("usage carol@acme.example")
            assert moved["result"] == "found" and moved["layer"] == "redis", moved
            assert moved["usage"] is None
            # unknown address: no counters either
            assert s.send("usage nobody-here@acme.example")["usage"] is None
    finally:
        r.cli("DEL", "tn:v1:usage:mbx:bob@acme.example", "tn:v1:usage:ten:acme",
              "tn:v1:adr:carol@acme.example", "tn:v1:dom:acme.example")


def test_tenant_suspension_is_one_write_and_one_key(stack):
    dn = "tnTenantId=initech," + tnharness.TENANTS
    with Serve(stack.conf) as s:
        assert acct(s.resolve("peter@initech.example"))["status"] == "active"
        stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnStatus\n"
                           "tnStatus: suspended\n-\nreplace: tnStatusReason\n"
                           "tnStatusReason: chargeback\n" % dn)
        try:
            assert tnctl(stack.conf, "cache", "invalidate", "--tenant", "initech").returncode == 0
            _wait_answer(s, "peter@initech.example",
                         lambda a: a["account"]["status"] == "suspended")
            a = acct(s.resolve("peter@initech.example"))
            assert (a["status_from"], a["status_reason"]) == ("tenant", "chargeback")
        finally:
            stack.slapd.modify("dn: %s\nchangetype: modify\nreplace: tnStatus\n"
                               "tnStatus: active\n-\ndelete: tnStatusReason\n" % dn)
            tnctl(stack.conf, "cache", "invalidate", "--tenant", "initech")


# --- aliases --------------------------------------------------------------

@pytest.mark.parametrize("addr,targets,loop", [
    ("sales@acme.example", ["alice@acme.example", "bob@acme.example"], False),
    ("team@acme.example", ["alice@acme.example", "bob@acme.example",
                           "erin@acme-mail.example", "partner@external.example"], False),
    ("loop1@acme.example", [], True),
    ("info@globex.example", ["hank@globex.example"], False),
    ("postmaster@acme.example", ["alice@acme.example"], False),
])
def test_alias_expansion(stack, addr, targets, loop):
    a = acct(one(stack.conf, addr))
    assert a["kind"] == "alias"
    assert a["targets"] == targets
    assert a["alias_loop"] is loop


def test_alias_depth_and_dangling_target(stack):
    base = "tnTenantId=acme," + tnharness.TENANTS
    chain = ["chain%d@acme.example" % i for i in range(12)]
    ldif = ""
    for i, a in enumerate(chain):
        target = chain[i + 1] if i + 1 < len(chain) else "alice@acme.example"
        ldif += ("dn: mail=%s,%s\nobjectClass: tnMailAlias\nmail: %s\n"
                 "tnAliasTarget: %s\ntnAliasTarget: ghost@acme.example\n\n"
                 % (a, base, a, target))
    stack.slapd.add(ldif)
    try:
        a = acct(one(stack.conf, chain[0]))
        assert a["alias_loop"] is True            # alias_max_depth 8 met
        assert "ghost@acme.example" not in a["targets"]
        a = acct(one(stack.conf, chain[0], overrides={"alias_max_depth": 20}))
        assert a["targets"] == ["alice@acme.example"]
        assert a["alias_loop"] is False
    finally:
        for x in chain:
            stack.slapd.delete("mail=%s,%s" % (x, base))
        stack.redis.cli("DEL", *["tn:v1:adr:" + x for x in chain])


def test_planted_entry_under_other_tenant_is_ignored(stack):
    """A tenant admin can create entries only in its own subtree, but may
    name any address there: a mailbox for globex's domain planted under
    acme must not capture globex's mail."""
    dn = "mail=ceo@globex.example,tnTenantId=acme," + tnharness.TENANTS
    stack.slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: ceo@globex.example\n"
                    "tnMailHost: evil.example\n" % dn)
    try:
        cold(stack, "adr:ceo@globex.example", "adr:hank@globex.example")
        assert one(stack.conf, "ceo@globex.example")["result"] == "notfound"
        # slapd's unique overlay refuses a second hank@globex.example;
        # replication and the relax control bypass it, so the lookup
        # must still not be captured by one
        stack.slapd.run_tool(
            "ldapadd", ["-e", "relax"],
            input="dn: mail=hank@globex.example,tnTenantId=acme,%s\n"
            "objectClass: tnMailbox\nmail: hank@globex.example\n"
            "tnMailHost: evil.example\n" % tnharness.TENANTS)
        a = acct(one(stack.conf, "hank@globex.example"))
        assert (a["tenant"], a["host"]) == ("globex", None)
    finally:
        stack.slapd.delete(dn)
        stack.slapd.delete("mail=hank@globex.example,tnTenantId=acme," + tnharness.TENANTS,
                           check=False)
        cold(stack, "adr:ceo@globex.example", "adr:hank@globex.example")


# --- hostile input ----------------------------------------------------------

HOSTILE = [
    "*@acme.example", "*", "alice*@acme.example", "a(b)c@acme.example",
    "*)(mail=*@acme.example", "alice@*", "alice@acme.example)(objectClass=*",
    "back\\slash@acme.example", "comma,plus+eq=@acme.example",
    "x" * 10000 + "@acme.example", "alice@" + "d" * 5000,
    "caf\udcc3\udca9@acme.example",                  # invalid UTF-8 bytes
    "\udcff\udcfe@acme.example", "alice@acme.example\r\nMAIL FROM:<x>",
]


def test_hostile_addresses_match_nothing(stack):
    mark = stack.slapd.log_mark()
    addrs = [h.encode("utf-8", "surrogateescape") for h in HOSTILE]
    import subprocess
    from tnprobe import binary
    r = subprocess.run([binary("tests/tn-probe"), "-c", stack.conf, "resolve"] + addrs,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.decode("utf-8", "replace").splitlines()]
    assert len(answers) == len(HOSTILE)
    for a in answers:
        assert a["result"] == "notfound", a
    log = stack.slapd.log_since(mark)
    # the searches that did reach slapd carried escaped values only
    low = log.lower()
    assert "(mail=\\2a@acme.example)" in low
    assert "(mail=a\\28b\\29c@acme.example)" in low
    assert "(mail=back\\5cslash@acme.example)" in low
    assert "not indexed" not in log


def test_hostile_domain_and_tenant(stack):
    for args in (["--domain", "*"], ["--domain", "acme.example)(x=*"],
                 ["--tenant", "acme,ou=tenants"], ["--tenant", "*"],
                 ["--tenant", "acme)(tnTenantId=*"]):
        r = tnctl(stack.conf, "lookup", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)


def test_nul_in_served_line(stack):
    with Serve(stack.conf) as s:
        assert s.resolve("\0alice@acme.example")["result"] == "notfound"
        assert s.resolve("alice@acme.example")["result"] == "found"


def test_no_unindexed_searches(stack):
    one(stack.conf, "alice@acme.example")
    tnctl(stack.conf, "lookup", "--domain", "acme.example")
    tnctl(stack.conf, "lookup", "--tenant", "acme")
    log = stack.slapd.log_text()
    assert "SRCH" in log
    assert "not indexed" not in log


# --- concurrency --------------------------------------------------------------

def _count_address_searches(log, addr):
    return len(re.findall(r'SRCH base="ou=tenants,dc=example,dc=net".*'
                          r'\(mail=%s\)' % re.escape(addr), log))


def test_coalescing_32_threads_one_search(stack):
    addr = "erin@acme-mail.example"
    cold(stack, "adr:" + addr, "dom:acme-mail.example")
    mark = stack.slapd.log_mark()
    r = probe(stack.conf, "storm", "32", addr)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["found"] == 32
    assert _count_address_searches(stack.slapd.log_since(mark), addr) == 1


def test_thread_safety_under_tsan(stack):
    """The same storm (cold and warm) with the ThreadSanitizer build."""
    addr = "bob@acme.example"
    for _ in range(2):
        cold(stack, "adr:" + addr)
        r = probe(stack.conf, "storm", "32", addr, flavour="tsan",
                  env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66"})
        assert "ThreadSanitizer" not in r.stderr, r.stderr
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["found"] == 32
    with Serve(stack.conf, flavour="tsan") as s:
        for _ in range(20):
            assert s.resolve(addr)["result"] == "found"
        tnctl(stack.conf, "cache", "invalidate", "--address", addr)
        assert s.resolve(addr)["result"] == "found"
    assert "ThreadSanitizer" not in s.stderr(), s.stderr()


def test_asan_build_clean(stack):
    addrs = sorted(EXPECTED) + ["sales@acme.example", "team@acme.example",
                                "loop1@acme.example", "nobody@acme.example"]
    r = probe(stack.conf, "resolve", *addrs, flavour="asan")
    assert r.returncode == 0, r.stderr
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr
    r = probe(stack.conf, "storm", "16", "carol@acme.example", flavour="asan")
    assert r.returncode == 0 and "Sanitizer" not in r.stderr, r.stderr


def test_valgrind_clean(stack):
    """No invalid access and no leak in a resolve of every kind, cold and
    warm, nor in a coalesced storm."""
    import subprocess
    from tnprobe import binary
    vg = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
          "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect"]
    addrs = ["alice@acme.example", "team@acme.example", "loop1@acme.example",
             "hank@globex.example", "nobody@acme.example", "x@nowhere.example", "*"]
    cold(stack, *("adr:" + a for a in addrs[:4]))
    for args in (["resolve"] + addrs, ["resolve"] + addrs, ["storm", "8", "carol@acme.example"]):
        r = subprocess.run(vg + [binary("tests/tn-probe"), "-c", stack.conf] + args,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


def test_tnctl_exit_codes_and_bad_config(stack, tmp_path):
    assert tnctl(stack.conf, "cache", "invalidate").returncode == 64
    assert tnctl(stack.conf, "cache", "invalidate", "--tenant", "a,b").returncode == 65
    assert tnctl(stack.conf, "cache", "invalidate", "--address", "no-at").returncode == 65
    assert tnctl(stack.conf, "nosuchcommand").returncode == 64
    assert tnctl(stack.conf, "lookup").returncode == 64
    bad = tmp_path / "bad.conf"
    bad.write_text(open(stack.conf).read() + "ldap_timout = 3s\n")
    r = tnctl(str(bad), "lookup", "alice@acme.example")
    assert r.returncode == 78
    assert "bad.conf:8: unknown parameter 'ldap_timout'" in r.stderr, r.stderr
    empty = tmp_path / "empty.secret"
    empty.write_text("")
    r = tnctl(stack.conf, "lookup", "alice@acme.example",
              overrides={"ldap_bind_password_file": str(empty)})
    assert r.returncode == 78 and "empty" in r.stderr, r.stderr
    r = tnctl(stack.conf, "lookup", "alice@acme.example",
              overrides={"ldap_bind_password_file": str(tmp_path / "missing")})
    assert r.returncode == 78 and "cannot open" in r.stderr, r.stderr


def test_wrong_bind_password_is_tempfail(stack, tmp_path):
    pw = tmp_path / "wrong.secret"
    pw.write_text("not-the-password\n")
    pw.chmod(0o600)
    cold(stack, "adr:alice@acme.example")
    r = tnctl(stack.conf, "lookup", "alice@acme.example",
              overrides={"ldap_bind_password_file": str(pw)})
    assert r.returncode == 75, r.stdout
    assert "Invalid credentials" in r.stdout, r.stdout
