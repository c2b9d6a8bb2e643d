"""ldap-schema/ against real slapd instances, and the harness that runs them.

(a) schema2ldif's output loads into a cn=config slapd (the README's
    ldapi/EXTERNAL commands), then indexes.ldif, acl.ldif and the example
    DIT; the result matches the slapd.conf form.
(b) the example DIT loads into the slapd.conf-based server, with the
    content the other tests rely on.
(c) the lookup library's searches are indexed (and the check can fail).
(d) ACLs from the wrong side.
(e) a syncrepl consumer follows the provider and outlives it.
(f) freeze/thaw (and kill/restart) of the servers.
"""

import base64
import os
import re
import socket
import stat
import subprocess
import time

import pytest

import tnharness as th

SCHEMA_DIR = th.SCHEMA_DIR
SCHEMA = os.path.join(SCHEMA_DIR, "tenantmail.schema")
SCHEMA2LDIF = os.path.join(SCHEMA_DIR, "schema2ldif")
EXAMPLE = os.path.join(SCHEMA_DIR, "example-dit.ldif")
BASE = th.BASE
TENANTS = th.TENANTS
LOOKUP = (th.LOOKUP_DN, th.LOOKUP_PW)


def tdn(tenant, rdn=None):
    d = "tnTenantId=%s,%s" % (tenant, TENANTS)
    return "%s,%s" % (rdn, d) if rdn else d


ACME_ADMIN = (tdn("acme", "cn=admin"), "acme-admin")
GLOBEX_ADMIN = (tdn("globex", "cn=admin"), "globex-admin")

# The lookup library's search forms (ldap-schema/indexes.conf).
def lookup_filter(addr, domain, tenant=None):
    """tn_dir_fetch_address: address, domain and (once the domain's tenant
    is known) the tenant, in one search."""
    return "(|(mail=%s)(tnDomain=%s)%s)" % (
        addr, domain, "(tnTenantId=%s)" % tenant if tenant else "")


def wait_log(server, mark, pred, timeout=3.0):
    """slapd may log a RESULT line just after the client saw the result."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.log_since(mark)
        if pred(text) or time.monotonic() >= deadline:
            return text
        time.sleep(0.02)


def run_schema2ldif(*args):
    return subprocess.run([SCHEMA2LDIF] + list(args), capture_output=True,
                          text=True, timeout=30)


def unfold(text):
    return re.sub(r"\n ", "", text)


def schema_definitions(path=SCHEMA):
    """(kind, definition with white space collapsed) from the .schema."""
    out, cur = [], None
    for line in open(path).read().split("\n"):
        if line.lstrip().startswith("#"):
            continue
        if line.strip() == "":
            cur = None
            continue
        if line[0] in " \t":
            out[-1][1] += " " + line.strip()
        else:
            kind, _, rest = line.partition(" ")
            out.append([kind.lower(), rest.strip()])
    return [(k, re.sub(r"\s+", " ", v)) for k, v in out]


def subschema_tn(server):
    """tenantmail's definitions as the server publishes them."""
    e = server.search("(objectClass=*)", base="cn=subschema", scope="base",
                      attrs=("attributeTypes", "objectClasses"))[0]
    return sorted(v for v in e["attributeTypes"] + e["objectClasses"]
                  if "1.3.6.1.4.1.32473." in v)


# ---------------------------------------------------------------------------
# schema2ldif on its own

def test_schema2ldif_output_is_folded_ldif_of_every_definition():
    r = run_schema2ldif(SCHEMA)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert "dn: cn=tenantmail,cn=schema,cn=config" in lines
    assert "objectClass: olcSchemaConfig" in lines
    assert "cn: tenantmail" in lines
    for line in lines:
        if not line.startswith("#"):
            assert len(line) <= 76, line
            assert not line.endswith(" "), repr(line)
    values = [l.split(": ", 1) for l in unfold(r.stdout).split("\n")
              if l.startswith("olc")]
    defs = schema_definitions()
    kinds = {"attributetype": "olcAttributeTypes",
             "objectclass": "olcObjectClasses"}
    assert [(kinds[k], v) for k, v in defs] == \
        [(k, v) for k, v in values]
    assert sum(1 for k, _ in defs if k == "attributetype") == 21
    assert sum(1 for k, _ in defs if k == "objectclass") == 4


def test_schema2ldif_refuses_broken_input(workdir):
    bad = workdir / "bad.schema"
    bad.write_text("attributetype ( 1.2.3 NAME 'x'\n\tSYNTAX 1.3.6.1.4.1.1466"
                   ".115.121.1.15\n")
    r = run_schema2ldif(str(bad))
    assert r.returncode == 1 and r.stdout == "" and "unbalanced" in r.stderr
    bad.write_text("attributtype ( 1.2.3 NAME 'x' )\n")
    r = run_schema2ldif(str(bad))
    assert r.returncode == 1 and r.stdout == "" and "unknown" in r.stderr
    r = run_schema2ldif(str(workdir / "missing.schema"))
    assert r.returncode == 1 and r.stdout == ""


def test_schema2ldif_base64_for_non_ascii(workdir):
    f = workdir / "x.schema"
    desc = "caf\u00e9 " * 20
    f.write_text("attributetype ( 1.2.3.4 NAME 'x' DESC '%s'\n"
                 "  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )\n" % desc)
    r = run_schema2ldif(str(f))
    assert r.returncode == 0, r.stderr
    assert "dn: cn=x,cn=schema,cn=config" in r.stdout
    line = [l for l in unfold(r.stdout).split("\n")
            if l.startswith("olcAttributeTypes")][0]
    assert line.startswith("olcAttributeTypes:: ")
    value = base64.b64decode(line.split(":: ", 1)[1]).decode()
    assert value == ("( 1.2.3.4 NAME 'x' DESC '%s' SYNTAX "
                     "1.3.6.1.4.1.1466.115.121.1.15 )" % desc)


# ---------------------------------------------------------------------------
# (a) cn=config

def test_a_generated_ldif_loads_into_cn_config(workdir, stack):
    ldif = workdir / "tenantmail.ldif"
    r = run_schema2ldif(SCHEMA)
    assert r.returncode == 0, r.stderr
    ldif.write_text(r.stdout)
    cfg = th.ConfigSlapd(workdir / "cfg")
    try:
        # Before the schema, the server knows none of it (the test can fail).
        assert subschema_tn(cfg) == []
        cfg.config_modify(ldif, add=True)
        cfg.config_modify(os.path.join(SCHEMA_DIR, "indexes.ldif"))
        cfg.config_modify(os.path.join(SCHEMA_DIR, "acl.ldif"))
        cfg.load_ldif(EXAMPLE)

        # The same definitions as slapd.conf's include of the .schema.
        assert subschema_tn(cfg) == subschema_tn(stack.slapd)
        assert len(subschema_tn(cfg)) == 25

        db = cfg.config_search(base="olcDatabase={1}mdb,cn=config",
                               scope="base",
                               attrs=("olcDbIndex", "olcAccess"))[0]
        assert db["olcDbIndex"] == parse_indexes_conf()
        assert len(db["olcAccess"]) == len(parse_acl_conf())

        # The whole DIT is there, and acl.ldif is in force.
        assert len(cfg.search("(objectClass=*)", attrs=("1.1",))) == \
            len(stack.slapd.search("(objectClass=*)", attrs=("1.1",)))
        seen = cfg.search("(objectClass=*)", base=TENANTS, attrs=("1.1",),
                          bind_dn=ACME_ADMIN[0], password=ACME_ADMIN[1])
        assert seen and all(e.dn.endswith(tdn("acme")) for e in seen)
        mark = cfg.log_mark()
        found = cfg.search(lookup_filter("alice@acme.example", "acme.example"),
                           base=TENANTS, attrs=("1.1",),
                           bind_dn=LOOKUP[0], password=LOOKUP[1])
        assert len(found) == 2
        text = wait_log(cfg, mark, lambda t: "SEARCH RESULT" in t)
        assert "SEARCH RESULT" in text and "not indexed" not in text
    finally:
        cfg.stop()


# ---------------------------------------------------------------------------
# (b) the example DIT in the slapd.conf server (loaded by the Stack)

def test_b_example_dit_content(stack):
    s = stack.slapd

    def one(dn):
        found = s.search(base=dn, scope="base")
        assert len(found) == 1
        return found[0]

    assert {e.first("tnTenantId") for e in s.search("(objectClass=tnTenant)")} \
        == {"acme", "globex", "initech"}
    assert len(s.search("(objectClass=tnMailDomain)", attrs=("1.1",))) == 5
    assert len(s.search("(objectClass=tnMailbox)", attrs=("1.1",))) == 9
    assert len(s.search("(objectClass=tnMailAlias)", attrs=("1.1",))) == 6

    acme = one(tdn("acme"))
    assert acme.first("tnPlan") == "business"
    assert acme.first("tnStorageQuotaBytes") == "10737418240"
    assert acme.first("tnMailboxQuotaBytes") == "1073741824"
    assert acme.first("tnSendRate") == "200"
    assert acme.first("tnTenantSendRate") == "5000"
    assert acme.first("tnMailPool") == "pool-a"

    alice = one(tdn("acme", "mail=alice@acme.example"))
    assert alice.first("tnQuotaBytes") == "2147483648"
    assert alice.first("tnMailHost") == "store1.example:24"
    assert alice.first("userPassword").startswith("{SHA512-CRYPT}$6$")
    bob = one(tdn("acme", "mail=bob@acme.example"))
    assert set(bob) == {"objectclass", "mail", "userpassword"}
    carol = one(tdn("acme", "mail=carol@acme.example"))
    assert (carol.first("tnStatus"), carol.first("tnStatusReason")) == \
        ("suspended", "abuse report")
    assert one(tdn("acme", "mail=dave@acme.example")).first("tnQuotaBytes") \
        == "1048576"
    team = one(tdn("acme", "mail=team@acme.example"))
    assert sorted(team["tnAliasTarget"]) == [
        "erin@acme-mail.example", "partner@external.example",
        "sales@acme.example"]

    globex = one(tdn("globex"))
    assert (globex.first("tnStatus"), globex.first("tnStatusReason")) == \
        ("suspended", "non-payment")
    old = one(tdn("initech", "tnDomain=old-initech.example"))
    assert old.first("tnStatusReason") == "domain transfer pending"
    assert one(tdn("initech", "mail=peter@initech.example")) \
        .first("tnQuotaBytes") == "0"

    # Passwords work for binding: the service and tenant admin accounts.
    for dn, pw in (LOOKUP, ACME_ADMIN, GLOBEX_ADMIN,
                   (tdn("initech", "cn=admin"), "initech-admin")):
        s.run_tool("ldapwhoami", [], bind_dn=dn, password=pw)
    r = s.run_tool("ldapwhoami", [], bind_dn=LOOKUP[0], password="wrong",
                   check=False)
    assert r.returncode == 49


def test_b_example_dit_loads_into_a_fresh_server(workdir):
    s = th.Slapd(workdir / "fresh")
    try:
        s.load_ldif(EXAMPLE)
        # Loading twice fails: the entries are really there.
        with pytest.raises(th.LdapError) as e:
            s.load_ldif(EXAMPLE)
        assert e.value.returncode == 68         # alreadyExists
    finally:
        s.stop()


def test_stack_redis_seed_and_conf(stack):
    r = stack.redis
    assert r.cli("HGET", "tn:v1:usage:mbx:dave@acme.example", "bytes") \
        == "5242880"
    assert r.cli("HGET", "tn:v1:usage:mbx:dave@acme.example", "messages") \
        == "42"
    assert r.cli("HGET", "tn:v1:usage:ten:acme", "bytes") == "5242880"
    conf = open(stack.conf).read().split("\n")
    assert "ldap_uri = %s" % stack.slapd.uri in conf
    assert "ldap_base = dc=example,dc=net" in conf
    assert "ldap_bind_dn = cn=lookup,ou=services,dc=example,dc=net" in conf
    assert "ldap_bind_password_file = %s/lookup.secret" % stack.workdir in conf
    assert "redis_host = 127.0.0.1" in conf
    assert "redis_port = %d" % r.port in conf
    st = os.stat(stack.password_file)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert open(stack.password_file).read() == "lookup-secret"


# ---------------------------------------------------------------------------
# (c) indexes

def srch_re(base, scope, flt):
    return re.compile(r'SRCH base="%s" scope=%d deref=\d+ filter="%s"'
                      % (re.escape(base), scope, re.escape(flt)), re.I)


def test_c_lookup_searches_are_indexed(stack):
    s = stack.slapd
    mark = s.log_mark()
    searches = [   # (base, scope name, scope number, filter, expected count)
        (TENANTS, "sub", 2, lookup_filter("alice@acme.example",
                                          "acme.example"), 2),
        (TENANTS, "sub", 2, lookup_filter("sales@acme.example",
                                          "acme.example"), 2),
        (TENANTS, "sub", 2, lookup_filter("nobody@nowhere.example",
                                          "nowhere.example"), 0),
        (TENANTS, "sub", 2, lookup_filter("bob@acme.example",
                                          "acme.example", "acme"), 3),
        (tdn("acme"), "base", 0, "(objectClass=*)", 1),
        (TENANTS, "sub", 2, "(&(objectClass=tnTenant)(tnTenantId=acme))", 1),
        (TENANTS, "sub", 2, "(tnAliasTarget=alice@acme.example)", 2),
        (TENANTS, "sub", 2, "(&(objectClass=tnMailbox)(tnStatus=suspended))",
         1),
    ]
    for base, scope, _, flt, n in searches:
        got = s.search(flt, base=base, scope=scope, attrs=("1.1",),
                       bind_dn=LOOKUP[0], password=LOOKUP[1])
        assert len(got) == n, flt
    want = [srch_re(b, sn, f) for b, _, sn, f, _ in searches]
    text = wait_log(s, mark, lambda t: all(w.search(t) for w in want)
                    and t.count("SEARCH RESULT") >= len(searches))
    for w in want:
        assert w.search(text), "no SRCH line %s in slapd.log" % w.pattern
    assert text.count("SEARCH RESULT") >= len(searches)
    assert "not indexed" not in text, \
        [l for l in text.split("\n") if "not indexed" in l]


def test_c_unindexed_search_is_detected(stack):
    s = stack.slapd
    mark = s.log_mark()
    s.search("(description=x)", base=TENANTS, attrs=("1.1",),
             bind_dn=LOOKUP[0], password=LOOKUP[1])
    text = wait_log(s, mark, lambda t: "not indexed" in t)
    assert srch_re(TENANTS, 2, "(description=x)").search(text)
    assert "(description) not indexed" in text


def parse_indexes_conf():
    return [l.split(None, 1)[1].strip()
            for l in open(os.path.join(SCHEMA_DIR, "indexes.conf"))
            if l.startswith("index ")]


def parse_acl_conf():
    rules, cur = [], None
    for line in open(os.path.join(SCHEMA_DIR, "acl.conf")):
        line = line.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            cur.append(line.strip())
        else:
            cur = [line.strip()]
            rules.append(cur)
    out = []
    for r in rules:
        text = " ".join(r)
        assert text.startswith("access to ")
        out.append(re.sub(r"\s+", " ", text[len("access "):]))
    return out


def ldif_values(path, attr):
    text = unfold(open(path).read())
    return [re.sub(r"\s+", " ", l.split(":", 1)[1].strip())
            for l in re.sub(r"\n  ", " ", text).split("\n")
            if l.lower().startswith(attr.lower() + ":")]


def test_c_conf_and_ldif_forms_agree():
    idx = ldif_values(os.path.join(SCHEMA_DIR, "indexes.ldif"), "olcDbIndex")
    assert idx == parse_indexes_conf()
    assert len(idx) == 7
    acl = ldif_values(os.path.join(SCHEMA_DIR, "acl.ldif"), "olcAccess")
    assert [re.sub(r"^\{\d+\}", "", a) for a in acl] == parse_acl_conf()
    assert [re.match(r"\{(\d+)\}", a).group(1) for a in acl] == \
        [str(i) for i in range(len(acl))]


# ---------------------------------------------------------------------------
# (d) ACLs from the wrong side

def mod(dn, attr, value, op="replace"):
    return ("dn: %s\nchangetype: modify\n%s: %s\n%s: %s\n"
            % (dn, op, attr, attr, value))


def test_d_tenant_admin_reads_and_writes_own_tenant(stack):
    s = stack.slapd
    bob = tdn("acme", "mail=bob@acme.example")
    got = s.search(base=bob, scope="base", bind_dn=ACME_ADMIN[0],
                   password=ACME_ADMIN[1])
    assert len(got) == 1 and "userPassword" in got[0]
    try:
        s.modify(mod(bob, "tnQuotaBytes", "123"), bind_dn=ACME_ADMIN[0],
                 password=ACME_ADMIN[1])
        assert s.search(base=bob, scope="base")[0].first("tnQuotaBytes") \
            == "123"
    finally:
        s.modify("dn: %s\nchangetype: modify\ndelete: tnQuotaBytes\n" % bob)
    # Searching from ou=tenants shows acme's subtree and nothing else.
    seen = s.search(base=TENANTS, attrs=("1.1",), bind_dn=ACME_ADMIN[0],
                    password=ACME_ADMIN[1])
    assert {e.dn for e in seen} == \
        {e.dn for e in s.search(base=tdn("acme"), attrs=("1.1",))}
    # Add and delete an ordinary mailbox.
    new = tdn("acme", "mail=new@acme.example")
    s.add("dn: %s\nobjectClass: tnMailbox\nmail: new@acme.example\n" % new,
          bind_dn=ACME_ADMIN[0], password=ACME_ADMIN[1])
    s.delete(new, bind_dn=ACME_ADMIN[0], password=ACME_ADMIN[1])


def test_d_tenant_admin_cannot_see_or_touch_another_tenant(stack):
    s = stack.slapd
    adm = dict(bind_dn=ACME_ADMIN[0], password=ACME_ADMIN[1])
    # Searches: nothing of globex, whatever the base and filter.
    got = s.search("(|(tnTenantId=globex)(mail=*globex*)(tnDomain=globex*))",
                   base=TENANTS, **adm)
    assert got == []
    for base in (tdn("globex"), tdn("globex", "mail=hank@globex.example")):
        with pytest.raises(th.LdapError) as e:
            s.search(base=base, scope="base", **adm)
        assert e.value.returncode == 32        # not even disclosed
    # ... while the entries exist (the test can fail).
    assert len(s.search(base=tdn("globex"), attrs=("1.1",),
                        bind_dn=LOOKUP[0], password=LOOKUP[1])) == 5
    hank = tdn("globex", "mail=hank@globex.example")
    r = s.modify(mod(hank, "tnQuotaBytes", "1"), check=False, **adm)
    assert r.returncode == 50, r.stderr        # insufficientAccess
    r = s.modify(mod(tdn("globex"), "tnStatus", "active"), check=False, **adm)
    assert r.returncode == 50, r.stderr
    r = s.modify(mod(hank, "userPassword", "x"), check=False, **adm)
    assert r.returncode == 50, r.stderr
    r = s.add("dn: %s\nobjectClass: tnMailbox\nmail: x@globex.example\n"
              % tdn("globex", "mail=x@globex.example"), check=False, **adm)
    assert r.returncode == 50, r.stderr
    r = s.delete(hank, check=False, **adm)
    assert r.returncode == 50, r.stderr
    # A rename into acme is refused too (it would take hank's mailbox).
    r = s.run_tool("ldapmodrdn", ["-s", tdn("acme"), hank,
                                  "mail=hank@globex.example"],
                   check=False, **adm)
    assert r.returncode in (50, 32), r.stderr
    assert s.search(base=hank, scope="base")[0].first("tnQuotaBytes") is None
    # And globex's admin sees no acme entry.
    got = s.search(base=TENANTS, attrs=("1.1",), bind_dn=GLOBEX_ADMIN[0],
                   password=GLOBEX_ADMIN[1])
    assert got and all(e.dn.endswith(tdn("globex")) for e in got)


def test_d_tenant_admin_limits_inside_own_tenant(stack):
    s = stack.slapd
    adm = dict(bind_dn=ACME_ADMIN[0], password=ACME_ADMIN[1])
    alice = tdn("acme", "mail=alice@acme.example")
    bob = tdn("acme", "mail=bob@acme.example")
    placed = tdn("acme", "mail=placed@acme.example")
    evil = tdn("acme", "mail=evil@acme.example")
    nested = tdn("acme", "tnTenantId=globex")
    deep = "mail=deep@acme.example," + bob
    # a domain nobody has (slapd's unique overlay refuses a second
    # globex.example before the ACLs are asked)
    planted_domain = tdn("acme", "tnDomain=planted.example")
    s.add("dn: %s\nobjectClass: tnMailbox\nmail: placed@acme.example\n"
          "tnMailPool: pool-a\n" % placed)         # placed by the ISP
    try:
        refused = [
            s.modify(mod(tdn("acme"), "tnStorageQuotaBytes", "0"),
                     check=False, **adm),                   # own limits
            s.modify(mod(alice, "tnMailHost", "evil.example:25"),
                     check=False, **adm),                   # placement
            s.modify(mod(bob, "tnMailPool", "pool-z", op="add"),
                     check=False, **adm),
            s.add("dn: %s\nobjectClass: tnMailbox\nmail: evil@acme.example\n"
                  "tnMailHost: evil.example:25\n" % evil, check=False, **adm),
            s.add("dn: %s\nobjectClass: tnTenant\ntnTenantId: globex\n"
                  % nested, check=False, **adm),
            s.add("dn: %s\nobjectClass: tnMailbox\nmail: deep@acme.example\n"
                  % deep, check=False, **adm),
            s.delete(placed, check=False, **adm),           # placed mailbox
            s.delete(ACME_ADMIN[0], check=False, **adm),
            s.add("dn: %s\nobjectClass: tnMailDomain\ntnDomain: planted.example\n"
                  % planted_domain, check=False, **adm),    # a domain: ISP only
            s.delete(tdn("acme", "tnDomain=acme-mail.example"), check=False, **adm),
        ]
        for r in refused:
            assert r.returncode == 50, (r.args, r.stderr)
        assert s.search(base=alice, scope="base")[0].first("tnMailHost") == \
            "store1.example:24"
        assert s.search(base=placed, scope="base", attrs=("1.1",))
    finally:
        # Undo whatever a broken ACL let through, so other tests see the
        # example DIT.
        for dn in (placed, evil, nested, deep, planted_domain):
            s.delete(dn, check=False)
        s.modify(mod(alice, "tnMailHost", "store1.example:24"), check=False)
        s.modify(mod(tdn("acme"), "tnStorageQuotaBytes", "10737418240"),
                 check=False)
        s.modify("dn: %s\nchangetype: modify\ndelete: tnMailPool\n" % bob,
                 check=False)


def test_d_anonymous_sees_nothing(stack):
    s = stack.slapd
    for base in (BASE, TENANTS, tdn("acme")):
        with pytest.raises(th.LdapError) as e:
            s.search(base=base, bind_dn="")
        assert e.value.returncode == 32
    r = s.modify(mod(tdn("acme", "mail=bob@acme.example"), "tnQuotaBytes",
                     "1"), bind_dn="", check=False)
    assert r.returncode != 0


def test_d_lookup_account_reads_everything_writes_nothing(stack):
    s = stack.slapd
    all_root = s.search(attrs=("1.1",))
    all_lookup = s.search(attrs=("1.1",), bind_dn=LOOKUP[0],
                          password=LOOKUP[1])
    assert {e.dn for e in all_lookup} == {e.dn for e in all_root}
    hank = s.search("(mail=hank@globex.example)", bind_dn=LOOKUP[0],
                    password=LOOKUP[1], attrs=("userPassword",))
    assert hank[0].first("userPassword").startswith("{SHA512-CRYPT}")
    for ldif in (mod(tdn("acme", "mail=bob@acme.example"), "tnQuotaBytes",
                     "1"),
                 mod(tdn("globex"), "tnStatus", "active"),
                 mod(LOOKUP[0], "userPassword", "x")):
        r = s.modify(ldif, bind_dn=LOOKUP[0], password=LOOKUP[1], check=False)
        assert r.returncode == 50, r.stderr


def test_d_mailbox_changes_own_password_only(stack):
    s = stack.slapd
    dn = tdn("acme", "mail=pwtest@acme.example")
    hashed = subprocess.run(["slappasswd", "-s", "old-pw"], capture_output=True,
                            text=True, check=True).stdout.strip()
    s.add("dn: %s\nobjectClass: tnMailbox\nmail: pwtest@acme.example\n"
          "userPassword: %s\n" % (dn, hashed))
    try:
        s.run_tool("ldappasswd", ["-s", "new-pw"], bind_dn=dn,
                   password="old-pw")
        s.run_tool("ldapwhoami", [], bind_dn=dn, password="new-pw")
        r = s.modify(mod(tdn("acme", "mail=bob@acme.example"), "userPassword",
                         "x"), bind_dn=dn, password="new-pw", check=False)
        assert r.returncode == 50
        r = s.modify(mod(dn, "tnQuotaBytes", "0"), bind_dn=dn,
                     password="new-pw", check=False)
        assert r.returncode == 50
    finally:
        s.delete(dn)


# ---------------------------------------------------------------------------
# (e) syncrepl

def test_e_consumer_follows_provider_and_outlives_it(workdir):
    provider = th.Slapd(workdir / "provider")
    consumer = None
    try:
        provider.load_ldif(EXAMPLE)
        consumer = th.Slapd(workdir / "consumer", provider=provider)
        consumer.wait_for("(mail=alice@acme.example)", timeout=10)
        dn = tdn("acme", "mail=repl@acme.example")
        provider.add("dn: %s\nobjectClass: tnMailbox\nmail: repl@acme.example"
                     "\n" % dn)
        t0 = time.monotonic()
        consumer.wait_for("(mail=repl@acme.example)", timeout=5)
        assert time.monotonic() - t0 < 5
        # The consumer refers writes to the provider.
        r = consumer.modify(mod(dn, "tnQuotaBytes", "1"), check=False)
        assert r.returncode == 10, r.stderr     # referral
        provider.stop()
        got = consumer.search(lookup_filter("repl@acme.example",
                                            "acme.example"), base=TENANTS,
                              bind_dn=LOOKUP[0], password=LOOKUP[1])
        assert sorted(e.dn for e in got) == sorted(
            [dn, tdn("acme", "tnDomain=acme.example")])
        assert len(consumer.search("(objectClass=tnMailbox)",
                                   attrs=("1.1",))) == 10
    finally:
        if consumer:
            consumer.stop()
        provider.stop()


# ---------------------------------------------------------------------------
# (f) failing servers

BIND_REQ = bytes.fromhex("300c020101600702010304008000")   # anonymous bind


def ldap_probe_connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
    sock.sendall(BIND_REQ)
    return sock


def test_f_frozen_slapd_accepts_but_never_answers(stack):
    s = stack.slapd
    sock = ldap_probe_connect(s.port)           # the probe works
    assert sock.recv(100)[:2] == b"\x30\x0c"
    sock.close()
    s.freeze()
    try:
        sock = ldap_probe_connect(s.port)       # the kernel still accepts
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)
        # ldapsearch's -o nettimeout is the connect timeout and -l a limit
        # for the server: against a frozen server it waits forever.
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["ldapsearch", "-x", "-H", s.uri, "-o",
                            "nettimeout=1", "-l", "1", "-b", BASE, "-s",
                            "base"], capture_output=True, timeout=1.5,
                           env=dict(os.environ, LDAPNOINIT="1"))
        assert time.monotonic() - t0 < 3
    finally:
        s.thaw()
    sock.settimeout(5)
    assert sock.recv(100)[:2] == b"\x30\x0c"    # answered after SIGCONT
    sock.close()
    assert s.search("(mail=alice@acme.example)", attrs=("1.1",),
                    extra=("-l", "1"))


def test_f_frozen_redis_and_thaw(stack):
    r = stack.redis
    r.freeze()
    try:
        sock = socket.create_connection(("127.0.0.1", r.port), timeout=0.5)
        sock.sendall(b"PING\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(100)
    finally:
        r.thaw()
    sock.settimeout(5)
    assert sock.recv(100) == b"+PONG\r\n"
    sock.close()
    assert r.cli("PING") == "PONG"


def test_f_killed_slapd_refuses_then_restarts_with_its_data(stack):
    s = stack.slapd
    s.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1)
    s.restart()
    assert s.search("(mail=alice@acme.example)", attrs=("1.1",))
    assert s.uri == open(stack.conf).read().split("\n")[1].split(" = ")[1]


def test_harness_cli_up_down(workdir):
    d = workdir / "sandbox"
    cli = [os.path.join(th.HERE, "tnharness.py")]
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    r = subprocess.run([py] + cli + ["up", str(d)], capture_output=True,
                       text=True, timeout=60)
    pids = []
    try:
        assert r.returncode == 0, r.stderr
        out = r.stdout.split("\n")
        assert out[0] == str(d / "tenantmail.conf")
        env = dict(l[len("export "):].split("=", 1) for l in out
                   if l.startswith("export "))
        assert env["TENANTMAIL_CONF"] == out[0]
        pids = [int(l.split()[1]) for l in open(d / "pids")]
        assert len(pids) == 2 and all(th.pid_alive(p) for p in pids)
        w = subprocess.run(["ldapwhoami", "-x", "-H", env["TN_LDAP_URI"], "-D",
                            th.LOOKUP_DN, "-y", str(d / "lookup.secret")],
                           capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, LDAPNOINIT="1"))
        assert w.returncode == 0, w.stderr
        # A second "up" on a running DIR is refused.
        r2 = subprocess.run([py] + cli + ["up", str(d)], capture_output=True,
                            text=True, timeout=60)
        assert r2.returncode == 1
    finally:
        r = subprocess.run([py] + cli + ["down", str(d)], capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert pids and not any(th.pid_alive(p) for p in pids)
