"""The directory's side of provisioning, against real slapd instances.

(a) slapd itself keeps addresses and domains unique (ldap-schema/unique.conf,
    slapo-unique with "serialize"): 50 concurrent ldapadds of one address,
    each in another tenant, give exactly one success; the same for a
    domain; mailboxes and aliases share one address space; a tenant admin
    cannot plant another tenant's address either.
(b) unique.conf and unique.ldif agree, and unique.ldif applies to a
    cn=config server the way the README says (and is then enforced).
(c) the provisioning service account from the right and the wrong side.
(d) limits.conf: the provisioning account reads more than slapd's default
    500 entries in one search (its lists sort client-side); limits.ldif
    says the same for cn=config.

Each test that writes runs its own slapd (loaded with the example DIT),
so the module-wide stack of the other tests is never changed.
"""

import os
import re
import subprocess

import pytest

import tnharness as th

SCHEMA_DIR = th.SCHEMA_DIR
EXAMPLE = os.path.join(SCHEMA_DIR, "example-dit.ldif")
TENANTS = th.TENANTS
PROV = (th.PROV_DN, th.PROV_PW)
LOOKUP = (th.LOOKUP_DN, th.LOOKUP_PW)
CONSTRAINT_VIOLATION = 19
INSUFFICIENT_ACCESS = 50

N = 50


def tdn(tenant, rdn=None):
    d = "tnTenantId=%s,%s" % (tenant, TENANTS)
    return "%s,%s" % (rdn, d) if rdn else d


@pytest.fixture
def slapd(workdir):
    s = th.Slapd(workdir / "slapd")
    try:
        s.load_ldif(EXAMPLE)
        yield s
    finally:
        s.stop()


def add_tenants(s, n, prefix="t"):
    s.add("".join("dn: %s\nobjectClass: tnTenant\ntnTenantId: %s%d\n\n"
                  % (tdn("%s%d" % (prefix, i)), prefix, i) for i in range(n)))
    return ["%s%d" % (prefix, i) for i in range(n)]


def concurrent_adds(s, ldifs, bind=PROV):
    """Start one ldapadd per LDIF at once; return their exit codes."""
    procs = []
    for text in ldifs:
        cmd = ["ldapadd", "-H", s.uri, "-x", "-D", bind[0], "-w", bind[1],
               "-o", "nettimeout=5"]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env=th._env()))
    # every process is running before any gets its input
    out = []
    for p, text in zip(procs, ldifs):
        p.stdin.write(text)
        p.stdin.close()
    for p in procs:
        p.wait(60)
        out.append((p.returncode, p.stderr.read()))
        p.stdout.close()
        p.stderr.close()
    return out


def holders(s, flt):
    return sorted(e.dn for e in s.search(flt, base=TENANTS, attrs=("1.1",)))


# ---------------------------------------------------------------------------
# (a) uniqueness enforced by slapd

def test_a_one_address_added_in_50_tenants_at_once(slapd):
    tenants = add_tenants(slapd, N)
    ldifs = ["dn: %s\nobjectClass: tnMailbox\nmail: dup@shared.example\n"
             % tdn(t, "mail=dup@shared.example") for t in tenants]
    results = concurrent_adds(slapd, ldifs)
    codes = [rc for rc, _ in results]
    assert codes.count(0) == 1, results
    assert codes.count(CONSTRAINT_VIOLATION) == N - 1, results
    assert all("constraint violation" in err.lower()
               for rc, err in results if rc != 0)
    assert len(holders(slapd, "(mail=dup@shared.example)")) == 1


def test_a_one_domain_added_in_50_tenants_at_once(slapd):
    tenants = add_tenants(slapd, N, prefix="d")
    ldifs = ["dn: %s\nobjectClass: tnMailDomain\ntnDomain: dup.example\n"
             % tdn(t, "tnDomain=dup.example") for t in tenants]
    codes = [rc for rc, _ in concurrent_adds(slapd, ldifs)]
    assert codes.count(0) == 1, codes
    assert codes.count(CONSTRAINT_VIOLATION) == N - 1, codes
    assert len(holders(slapd, "(tnDomain=dup.example)")) == 1


def test_a_mailboxes_and_aliases_share_one_address_space(slapd):
    s = slapd
    # an existing mailbox's address, as an alias in another tenant
    r = s.add("dn: %s\nobjectClass: tnMailAlias\nmail: alice@acme.example\n"
              "tnAliasTarget: hank@globex.example\n"
              % tdn("globex", "mail=alice@acme.example"),
              bind_dn=PROV[0], password=PROV[1], check=False)
    assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
    # case does not make a new address (mail compares case-insensitively)
    r = s.add("dn: %s\nobjectClass: tnMailbox\nmail: Alice@ACME.example\n"
              % tdn("initech", "mail=Alice@ACME.example"), check=False)
    assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
    # nor does a modify that gives an entry a second, taken address
    r = s.modify("dn: %s\nchangetype: modify\nadd: mail\nmail: bob@acme.example\n"
                 % tdn("initech", "mail=peter@initech.example"), check=False)
    assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
    # a new address is fine, and so is a change that does not touch mail
    s.add("dn: %s\nobjectClass: tnMailbox\nmail: new@initech.example\n"
          % tdn("initech", "mail=new@initech.example"),
          bind_dn=PROV[0], password=PROV[1])
    s.modify("dn: %s\nchangetype: modify\nreplace: tnQuotaBytes\n"
             "tnQuotaBytes: 5\n" % tdn("acme", "mail=alice@acme.example"),
             bind_dn=PROV[0], password=PROV[1])
    assert holders(s, "(mail=alice@acme.example)") == \
        [tdn("acme", "mail=alice@acme.example")]


def test_a_tenant_admin_cannot_plant_a_taken_address(slapd):
    # The overlay searches as the rootdn: the admin of initech cannot see
    # acme's entries, and is refused all the same.
    r = slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: bob@acme.example\n"
                  % tdn("initech", "mail=bob@acme.example"),
                  bind_dn=tdn("initech", "cn=admin"), password="initech-admin",
                  check=False)
    assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
    r = slapd.add("dn: %s\nobjectClass: tnMailDomain\ntnDomain: acme.example\n"
                  % tdn("initech", "tnDomain=acme.example"), check=False)
    assert r.returncode == CONSTRAINT_VIOLATION, r.stderr


# ---------------------------------------------------------------------------
# (b) the two forms of the overlay configuration

def conf_uris():
    out = []
    for line in open(os.path.join(SCHEMA_DIR, "unique.conf")):
        if line.startswith("unique_uri "):
            out.append(line.split(None, 1)[1].strip())
    return out


def ldif_uris():
    text = open(os.path.join(SCHEMA_DIR, "unique.ldif")).read()
    return re.findall(r"^olcUniqueURI: (.*)$", text, re.M)


def test_b_conf_and_ldif_forms_agree():
    # slapd.conf needs the quotes (keyword and URI are one argument);
    # cn=config values have none
    conf = open(os.path.join(SCHEMA_DIR, "unique.conf")).read()
    assert re.search(r"^overlay unique$", conf, re.M)
    assert [u.strip('"') for u in conf_uris()] == ldif_uris()
    assert conf_uris() == [
        '"serialize ldap:///ou=tenants,dc=example,dc=net?mail?sub"',
        '"serialize ldap:///ou=tenants,dc=example,dc=net?tnDomain?sub"']


def test_b_unique_ldif_applies_to_cn_config(workdir):
    ldif = workdir / "tenantmail.ldif"
    r = subprocess.run([os.path.join(SCHEMA_DIR, "schema2ldif"),
                        os.path.join(SCHEMA_DIR, "tenantmail.schema")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    ldif.write_text(r.stdout)
    cfg = th.ConfigSlapd(workdir / "cfg")
    try:
        cfg.config_modify(ldif, add=True)
        cfg.config_modify(os.path.join(SCHEMA_DIR, "indexes.ldif"))
        cfg.config_modify(os.path.join(SCHEMA_DIR, "acl.ldif"))
        cfg.load_ldif(EXAMPLE)
        # before: a duplicate address is accepted (the test can fail)
        dup = ("dn: %s\nobjectClass: tnMailbox\nmail: bob@acme.example\n"
               % tdn("initech", "mail=bob@acme.example"))
        cfg.add(dup)
        cfg.delete(tdn("initech", "mail=bob@acme.example"))
        cfg.config_modify(os.path.join(SCHEMA_DIR, "unique.ldif"))
        mods = cfg.config_search(filter="(objectClass=olcModuleList)",
                                 attrs=("olcModuleLoad",))
        assert any(re.sub(r"^\{\d+\}", "", v) == "unique"
                   for m in mods for v in m.get("olcModuleLoad", []))
        ov = cfg.config_search(filter="(objectClass=olcUniqueConfig)",
                               attrs=("olcUniqueURI",))
        assert len(ov) == 1
        assert ov[0].dn.endswith(",olcDatabase={1}mdb,cn=config")
        assert ov[0]["olcUniqueURI"] == ldif_uris()
        r = cfg.add(dup, check=False)
        assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
        # and it survives a restart (it is in slapd.d now)
        cfg.restart()
        r = cfg.add(dup, check=False)
        assert r.returncode == CONSTRAINT_VIOLATION, r.stderr
        cfg.config_modify(os.path.join(SCHEMA_DIR, "limits.ldif"))
        db = cfg.config_search(base="olcDatabase={1}mdb,cn=config", scope="base",
                               attrs=("olcLimits",))[0]
        assert [re.sub(r"^\{\d+\}", "", v) for v in db["olcLimits"]] == \
            limits_lines()
        # the provisioning account of acl.ldif works there too
        cfg.add("dn: %s\nobjectClass: tnTenant\ntnTenantId: viaconfig\n"
                % tdn("viaconfig"), bind_dn=PROV[0], password=PROV[1])
    finally:
        cfg.stop()


# ---------------------------------------------------------------------------
# (c) the provisioning service account

def test_c_provisioning_writes_the_tenants_subtree(slapd):
    s, b = slapd, dict(bind_dn=PROV[0], password=PROV[1])
    s.add("dn: %s\nobjectClass: tnTenant\ntnTenantId: newco\ntnStatus: active\n"
          "tnMailPool: pool-b\n" % tdn("newco"), **b)
    s.add("dn: %s\nobjectClass: tnMailDomain\ntnDomain: newco.example\n"
          % tdn("newco", "tnDomain=newco.example"), **b)
    s.add("dn: %s\nobjectClass: tnMailbox\nmail: ann@newco.example\n"
          "tnMailHost: store9.example\nuserPassword: {PLAIN}x\n"
          % tdn("newco", "mail=ann@newco.example"), **b)
    s.modify("dn: %s\nchangetype: modify\nreplace: tnStatus\ntnStatus: suspended"
             "\n-\nreplace: tnStorageQuotaBytes\ntnStorageQuotaBytes: 1\n"
             % tdn("acme"), **b)
    s.modify("dn: %s\nchangetype: modify\nreplace: userPassword\n"
             "userPassword: {PLAIN}new\n"
             % tdn("acme", "mail=bob@acme.example"), **b)
    s.modify("dn: %s\nchangetype: modify\nreplace: tnMailHost\n"
             "tnMailHost: store2.example\n"
             % tdn("acme", "mail=alice@acme.example"), **b)
    # it reads what it manages, entryCSN included (its ETags)...
    got = s.search(base=tdn("acme", "mail=alice@acme.example"), scope="base",
                   attrs=("*", "entryCSN"), **b)[0]
    assert got.first("tnMailHost") == "store2.example"
    assert got.first("entryCSN")
    # and the password it set (to undo a change whose event failed)
    assert s.search("(mail=bob@acme.example)", base=TENANTS,
                    attrs=("userPassword",), **b)[0].first("userPassword") \
        == "{PLAIN}new"
    # it deletes (purge) down to the tenant entry
    for dn in (tdn("newco", "mail=ann@newco.example"),
               tdn("newco", "tnDomain=newco.example"), tdn("newco")):
        s.delete(dn, **b)
    assert s.search("(tnTenantId=newco)", base=TENANTS, attrs=("1.1",)) == []


def test_c_provisioning_cannot_touch_anything_outside_tenants(slapd):
    s, b = slapd, dict(bind_dn=PROV[0], password=PROV[1])
    for ldif in ("dn: %s\nchangetype: modify\nreplace: description\n"
                 "description: x\n" % th.LOOKUP_DN,
                 "dn: %s\nchangetype: modify\nreplace: userPassword\n"
                 "userPassword: x\n" % th.LOOKUP_DN,
                 "dn: ou=tenants,%s\nchangetype: modify\nreplace: ou\nou: x\n"
                 % th.BASE):
        r = s.modify(ldif, check=False, **b)
        assert r.returncode == INSUFFICIENT_ACCESS, (ldif, r.stderr)
    r = s.add("dn: cn=evil,ou=services,%s\nobjectClass: organizationalRole\n"
              "cn: evil\n" % th.BASE, check=False, **b)
    assert r.returncode == INSUFFICIENT_ACCESS, r.stderr
    # it sees nothing outside ou=tenants (not even the lookup account)
    for base in (th.BASE, th.LOOKUP_DN):
        with pytest.raises(th.LdapError) as e:
            s.search(base=base, attrs=("1.1",), **b)
        assert e.value.returncode == 32
    seen = s.search(base=TENANTS, attrs=("1.1",), **b)
    assert len(seen) == len(s.search(base=TENANTS, attrs=("1.1",)))
    # nested entries below a mailbox: refused as for tenant admins
    r = s.add("dn: cn=x,%s\nobjectClass: organizationalRole\ncn: x\n"
              % tdn("acme", "mail=bob@acme.example"), check=False, **b)
    assert r.returncode == INSUFFICIENT_ACCESS, r.stderr


def test_c_others_cannot_use_the_provisioning_powers(slapd):
    s = slapd
    # the lookup account still writes nothing, a tenant admin still cannot
    # write its tenant entry or add a tenant
    r = s.modify("dn: %s\nchangetype: modify\nreplace: tnStatus\n"
                 "tnStatus: active\n" % tdn("globex"),
                 bind_dn=LOOKUP[0], password=LOOKUP[1], check=False)
    assert r.returncode == INSUFFICIENT_ACCESS
    r = s.add("dn: %s\nobjectClass: tnTenant\ntnTenantId: sneaky\n"
              % tdn("sneaky"), bind_dn=tdn("acme", "cn=admin"),
              password="acme-admin", check=False)
    assert r.returncode == INSUFFICIENT_ACCESS
    # the provisioning password binds, a wrong one does not
    s.run_tool("ldapwhoami", [], bind_dn=PROV[0], password=PROV[1])
    r = s.run_tool("ldapwhoami", [], bind_dn=PROV[0], password="wrong",
                   check=False)
    assert r.returncode == 49


# ---------------------------------------------------------------------------
# (d) limits

def limits_lines():
    return [l.split(None, 1)[1].strip()
            for l in open(os.path.join(SCHEMA_DIR, "limits.conf"))
            if l.startswith("limits ")]


def test_d_limits_conf_and_ldif_agree():
    text = open(os.path.join(SCHEMA_DIR, "limits.ldif")).read()
    assert re.findall(r"^olcLimits: (.*)$", text, re.M) == limits_lines()
    assert limits_lines() == [
        'dn.exact="cn=provisioning,ou=services,dc=example,dc=net" size=unlimited']


def test_d_provisioning_reads_more_than_500_entries(slapd):
    s = slapd
    add_tenants(s, 1, prefix="big")
    s.add("".join("dn: %s\nobjectClass: tnMailbox\nmail: m%d@big.example\n\n"
                  % (tdn("big0", "mail=m%d@big.example" % i), i) for i in range(600)))
    got = s.search("(objectClass=tnMailbox)", base=tdn("big0"), scope="one",
                   attrs=("1.1",), bind_dn=PROV[0], password=PROV[1])
    assert len(got) == 600
    # the lookup account keeps slapd's default (the test can fail)
    with pytest.raises(th.LdapError) as e:
        s.search("(objectClass=tnMailbox)", base=tdn("big0"), scope="one",
                 attrs=("1.1",), bind_dn=LOOKUP[0], password=LOOKUP[1])
    assert e.value.returncode == 4          # sizeLimitExceeded
