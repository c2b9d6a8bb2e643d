"""tnctl sync: the directory reconciled with an upstream feed, through
tn-provisiond's REST API, against real slapd and Redis (tnharness.Stack)
and a real daemon (tnprovd.Provd): one stack and one daemon for the
module; each test works in tenants of its own.

Checked: a dry run prints the diff and writes nothing (the directory
and the outbox as they were) and exits 2; --apply creates, updates and
suspends exactly the diff, and a second run finds nothing to do (0, no
event); a mailbox suspended by billing is never resumed, one suspended
by an earlier sync and back in the feed is; --allow-delete soft-deletes
the missing objects, without it nothing is deleted; a truncated feed is
refused (4) until --max-changes allows it; CSV, NDJSON and LDIF (base64
values, folded lines, comments, a container entry) feeds give the same
directory; a change made between the plan and the confirmation fails
that one item (412) and only it; the scope holds: records of another
tenant or domain are refused, and other tenants' objects are never
touched; --json prints the plan and the results; tenants (every tenant
the token sees, an admin's partial feed with --ignore-missing) and
domains (of one tenant) go through the same dry run, apply and
nothing-to-do rounds.
"""

import base64
import json
import os
import pty
import select
import subprocess
import time

import pytest

from tnprobe import binary
from tnprovd import ADMIN, Provd


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd"), overrides={"provd_max_body": "64k"})
    yield p
    p.stop()


def tnctl_cmd(provd, *args):
    return [binary("provisioning/tnctl"), "-c", provd.stack.conf,
            "-o", "tnctl_api_url=http://127.0.0.1:%d" % provd.port] + list(args)


def run(provd, *args, stdin=None):
    env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
    r = subprocess.run(tnctl_cmd(provd, *args), capture_output=True, text=True, env=env,
                       timeout=120, input=stdin,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def sync(provd, *args, rc=0):
    r = run(provd, "sync", *args)
    assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
    return r


def api(provd, method, path, body=None, **kw):
    r = provd.request(method, path, body=body, **kw)
    assert r.status < 300, (method, path, r.status, r.json)
    return r.json


def make_tenant(provd, tenant, mailboxes=(), domain=None):
    """A tenant, its domain and mailboxes {local: {fields}}."""
    domain = domain or tenant + ".example"
    api(provd, "POST", "/v1/tenants", {"id": tenant})
    api(provd, "POST", "/v1/domains", {"domain": domain, "tenant": tenant})
    for local, fields in mailboxes:
        api(provd, "POST", "/v1/mailboxes", dict(fields, address="%s@%s" % (local, domain)))


def mailboxes(provd, tenant):
    """{address: object} of the tenant's mailboxes."""
    items = api(provd, "GET", "/v1/mailboxes?tenant=%s&limit=1000" % tenant)["items"]
    return {m["address"]: m for m in items}


def plan_rows(stdout):
    """[(action, key, text)] of the plan table."""
    rows = []
    for line in stdout.splitlines()[1:]:
        if line.startswith(("plan:", "dry run", "sync ")):
            break
        action, key, text = (line.split(None, 2) + ["", ""])[:3]
        rows.append((action, key, text))
    return rows


def csv_feed(path, rows, header="address,name,quota_bytes"):
    with open(str(path), "w") as f:
        f.write(header + "\r\n")
        for r in rows:
            f.write(",".join('"%s"' % c.replace('"', '""') if "," in c or '"' in c else c
                             for c in r) + "\r\n")
    return str(path)


# --- the diff, dry run and apply -------------------------------------------------------

def test_dry_run_then_apply_then_nothing_to_do(provd, tmp_path):
    make_tenant(provd, "sya", [("keep", {"name": "Keep"}), ("rename", {"name": "Old"}),
                               ("quota", {"name": "Q", "quota_bytes": 1024}),
                               ("gone", {"name": "Gone"})])
    make_tenant(provd, "syb", [("keep", {"name": "Other tenant"})])
    feed = csv_feed(tmp_path / "a.csv", [
        ("keep@sya.example", "Keep", ""),
        ("RENAME@sya.example", "New, Name", ""),
        ("quota@sya.example", "Q", "2k"),
        ("new@sya.example", "Nu", "1M"),
    ])
    before, events = mailboxes(provd, "sya"), len(provd.events("sya"))
    r = sync(provd, "--kind", "mailbox", "--tenant", "sya", "--max-changes", "10", feed,
             rc=2)
    rows = plan_rows(r.stdout)
    assert rows == [
        ("suspend", "gone@sya.example", 'not in the feed: suspend, reason "sync: not in feed"'),
        ("create", "new@sya.example", "name=Nu, quota_bytes=1 MiB"),
        ("update", "quota@sya.example", "quota_bytes: 1 KiB -> 2 KiB"),
        ("update", "rename@sya.example", "name: Old -> New, Name"),
    ], r.stdout
    assert "plan: 1 create, 2 update, 0 resume, 1 suspend, 0 delete; 1 unchanged, 0 held, " \
        "0 invalid" in r.stdout
    assert "dry run: nothing written" in r.stdout
    assert mailboxes(provd, "sya") == before and len(provd.events("sya")) == events

    r = sync(provd, "--kind", "mailbox", "--tenant", "sya", "--max-changes", "10", "--apply",
             feed)
    assert "4 done, 0 failed, 0 not tried" in r.stdout, r.stdout
    after = mailboxes(provd, "sya")
    assert after["gone@sya.example"]["status"] == "suspended"
    assert after["gone@sya.example"]["status_reason"] == "sync: not in feed"
    assert after["new@sya.example"]["quota_bytes"] == 1048576
    assert after["quota@sya.example"]["quota_bytes"] == 2048
    assert after["rename@sya.example"]["name"] == "New, Name"
    assert after["keep@sya.example"]["etag"] == before["keep@sya.example"]["etag"]
    assert len(provd.events("sya")) == events + 4
    # the other tenant's mailbox of the same local part: untouched
    assert mailboxes(provd, "syb")["keep@syb.example"]["name"] == "Other tenant"

    events = len(provd.events("sya"))
    r = sync(provd, "--kind", "mailbox", "--tenant", "sya", "--apply", feed)
    assert "plan: 0 create, 0 update, 0 resume, 0 suspend, 0 delete; 4 unchanged" in r.stdout
    assert plan_rows(r.stdout) == [] and len(provd.events("sya")) == events
    assert mailboxes(provd, "sya") == after


def test_billing_suspension_held_sync_suspension_resumed(provd, tmp_path):
    make_tenant(provd, "syc", [("paid", {}), ("unpaid", {}), ("back", {}), ("away", {})])
    api(provd, "POST", "/v1/mailboxes/unpaid@syc.example/suspend", {"reason": "billing: unpaid"})
    feed = csv_feed(tmp_path / "c.csv", [("paid@syc.example", ""), ("unpaid@syc.example", ""),
                                         ("back@syc.example", "")], header="address,name")
    # away is missing: suspended by sync; then it comes back
    sync(provd, "--kind", "mailbox", "--tenant", "syc", "--apply", "--max-changes", "1",
         feed)
    assert mailboxes(provd, "syc")["away@syc.example"]["status_reason"] == "sync: not in feed"
    feed = csv_feed(tmp_path / "c2.csv", [("paid@syc.example", ""), ("unpaid@syc.example", ""),
                                          ("back@syc.example", ""), ("away@syc.example", "")],
                    header="address,name")
    r = sync(provd, "--kind", "mailbox", "--tenant", "syc", feed, rc=2)
    assert plan_rows(r.stdout) == [
        ("resume", "away@syc.example", "back in the feed (suspended: sync: not in feed)"),
        ("hold", "unpaid@syc.example", "suspended (billing: unpaid): not resumed by sync"),
    ], r.stdout
    sync(provd, "--kind", "mailbox", "--tenant", "syc", "--apply", feed)
    got = mailboxes(provd, "syc")
    assert got["away@syc.example"]["status"] == "active"
    assert got["unpaid@syc.example"]["status"] == "suspended"
    assert got["unpaid@syc.example"]["status_reason"] == "billing: unpaid"
    # and a run after that has nothing to do (the hold is no change)
    r = sync(provd, "--kind", "mailbox", "--tenant", "syc", feed)
    assert "0 suspend, 0 delete; 3 unchanged, 1 held" in r.stdout, r.stdout


def test_allow_delete(provd, tmp_path):
    make_tenant(provd, "syd", [("m%d" % i, {}) for i in range(10)])
    api(provd, "POST", "/v1/mailboxes/m9@syd.example/suspend", {"reason": "billing"})
    feed = csv_feed(tmp_path / "d.csv", [("m%d@syd.example" % i,) for i in range(8)],
                    header="address")
    # without --allow-delete nothing is deleted: m8 suspended, m9 stays as it is
    r = sync(provd, "--kind", "mailbox", "--tenant", "syd", "--apply", "--max-changes", "2",
             feed)
    got = mailboxes(provd, "syd")
    assert [a for a, m in got.items() if m["status"] == "deleted"] == []
    assert got["m8@syd.example"]["status_reason"] == "sync: not in feed"
    assert got["m9@syd.example"]["status_reason"] == "billing"
    r = sync(provd, "--kind", "mailbox", "--tenant", "syd", "--allow-delete", "--apply",
             "--max-changes", "2", feed)
    assert "0 suspend, 2 delete" in r.stdout and "2 done" in r.stdout, r.stdout
    got = mailboxes(provd, "syd")
    assert sorted(a for a, m in got.items() if m["status"] == "deleted") == \
        ["m8@syd.example", "m9@syd.example"]
    # --ignore-missing leaves them; deleted ones are no change
    r = sync(provd, "--kind", "mailbox", "--tenant", "syd", "--allow-delete", feed)
    assert "0 delete; 8 unchanged" in r.stdout, r.stdout
    assert run(provd, "sync", "--kind", "mailbox", "--tenant", "syd", "--allow-delete",
               "--ignore-missing", feed).returncode == 64


def test_truncated_feed_refused(provd, tmp_path):
    make_tenant(provd, "sye", [("u%02d" % i, {}) for i in range(20)])
    feed = csv_feed(tmp_path / "e.csv", [("u00@sye.example",), ("u01@sye.example",)],
                    header="address")
    before = mailboxes(provd, "sye")
    r = sync(provd, "--kind", "mailbox", "--tenant", "sye", "--apply", feed, rc=4)
    assert "refused" in r.stderr and "18 of the 20" in r.stderr and "truncated" in r.stderr
    assert mailboxes(provd, "sye") == before
    r = sync(provd, "--kind", "mailbox", "--tenant", "sye", feed, rc=2)
    assert "--apply would be refused" in r.stderr
    sync(provd, "--kind", "mailbox", "--tenant", "sye", "--apply", "--max-changes", "17",
         feed, rc=4)
    r = sync(provd, "--kind", "mailbox", "--tenant", "sye", "--apply", "--max-changes", "18",
             feed)
    assert "18 done" in r.stdout
    assert sum(m["status"] == "suspended" for m in mailboxes(provd, "sye").values()) == 18


# --- formats ---------------------------------------------------------------------------------

def ldif_feed(path, domain, people):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    out = ["version: 1", "# an HR export", "",
           "dn: ou=people,dc=hr,dc=example", "objectClass: organizationalUnit", "ou: people",
           ""]
    for uid, name, quota in people:
        dn = "uid=%s,ou=people,dc=hr,dc=example" % uid
        out.append("dn:: " + b64(dn))
        out.append("objectClass: inetOrgPerson")
        if name is not None:    # the name from displayName, not cn
            out.append("cn: Not the display name")
        # a long value folded over lines, and a base64 one
        full = "mail: %s@%s" % (uid, domain)
        out += [full[:7], " " + full[7:12], " " + full[12:]]
        if name is not None:
            out.append("displayName:: " + b64(name))
        if quota is not None:
            out.append("tnQuotaBytes: %d" % quota)
        out.append("# a comment\n ending on a folded line")
        out.append("")
    with open(str(path), "w") as f:
        f.write("\n".join(out))
    return str(path)


PEOPLE = [("ann", "Ann Ünicode, Jr.", 1048576), ("bob", "Bob", None), ("cy", None, 2048)]


def normalised(provd, tenant):
    out = {}
    for a, m in mailboxes(provd, tenant).items():
        out[a.split("@")[0]] = {k: v for k, v in m.items()
                                if k in ("name", "quota_bytes", "status", "status_reason")}
    return out


def test_csv_ndjson_ldif_same_result(provd, tmp_path):
    for t in ("syfc", "syfn", "syfl"):
        make_tenant(provd, t, [("bob", {"name": "Robert", "quota_bytes": 4096}),
                               ("old", {"name": "Old"})])
    csv_feed(tmp_path / "f.csv", [("%s@syfc.example" % u, n or "", str(q or ""))
                                  for u, n, q in PEOPLE])
    with open(str(tmp_path / "f.ndjson"), "w") as f:
        for u, n, q in PEOPLE:
            f.write(json.dumps({"address": "%s@syfn.example" % u, "name": n,
                                "quota_bytes": q}) + "\n")
    ldif_feed(tmp_path / "f.ldif", "syfl.example", PEOPLE)
    for t, feed in (("syfc", "f.csv"), ("syfn", "f.ndjson"), ("syfl", "f.ldif")):
        r = sync(provd, "--kind", "mailbox", "--tenant", t, "--max-changes", "4", "--apply",
                 str(tmp_path / feed))
        assert "4 done, 0 failed" in r.stdout, (feed, r.stdout, r.stderr)
    got = [normalised(provd, t) for t in ("syfc", "syfn", "syfl")]
    assert got[0] == got[1] == got[2], got
    assert got[0]["ann"] == {"name": "Ann Ünicode, Jr.", "quota_bytes": 1048576,
                             "status": "active", "status_reason": None}
    assert got[0]["bob"]["quota_bytes"] is None and got[0]["bob"]["name"] == "Bob"
    assert got[0]["old"]["status_reason"] == "sync: not in feed"
    # a mapping of one's own: cn as the name instead of displayName
    r = sync(provd, "--kind", "mailbox", "--tenant", "syfl", "--map", "cn=name",
             "--fields", "name", str(tmp_path / "f.ldif"), rc=2)
    assert [(a, k) for a, k, _ in plan_rows(r.stdout)] == \
        [("update", "ann@syfl.example"), ("update", "bob@syfl.example")], r.stdout
    # a malformed LDIF entry is an invalid record: nothing is written
    bad = tmp_path / "bad.ldif"
    bad.write_text("dn: uid=x,dc=hr\nmail:: ***\n\n")
    r = sync(provd, "--kind", "mailbox", "--tenant", "syfl", "--apply", str(bad), rc=65)
    assert "bad.ldif:1: malformed LDIF: malformed base64" in r.stderr, r.stderr


def test_tenants_dry_run_apply_nothing_to_do(provd, tmp_path):
    """--kind tenant: the scope is every tenant the token sees, so an
    admin's partial feed goes with --ignore-missing."""
    api(provd, "POST", "/v1/tenants", {"id": "syt1", "name": "Old", "plan": "basic"})
    api(provd, "POST", "/v1/tenants", {"id": "syt3", "name": "Same", "plan": "basic"})
    feed = csv_feed(tmp_path / "t.csv", [("syt1", "New, Name", "basic", "10"),
                                         ("syt2", "Fresh", "gold", ""),
                                         ("syt3", "Same", "basic", "")],
                    header="id,name,plan,max_mailboxes")
    events = {t: len(provd.events(t)) for t in ("syt1", "syt2", "syt3")}
    r = sync(provd, "--kind", "tenant", "--ignore-missing", feed, rc=2)
    assert plan_rows(r.stdout) == [
        ("update", "syt1", "name: Old -> New, Name; max_mailboxes: 0 -> 10"),
        ("create", "syt2", "name=Fresh, plan=gold"),
    ], r.stdout
    assert "plan: 1 create, 1 update, 0 resume, 0 suspend, 0 delete; 1 unchanged" in r.stdout
    assert {t: len(provd.events(t)) for t in events} == events
    assert provd.request("GET", "/v1/tenants/syt2").status == 404

    r = sync(provd, "--kind", "tenant", "--ignore-missing", "--apply", feed)
    assert "sync tenant: 2 done, 0 failed, 0 not tried" in r.stdout, r.stdout
    t1 = api(provd, "GET", "/v1/tenants/syt1")
    assert (t1["name"], t1["max_mailboxes"]) == ("New, Name", 10)
    assert api(provd, "GET", "/v1/tenants/syt2")["plan"] == "gold"
    assert [e["type"] for e in provd.events("syt1")][events["syt1"]:] == ["tenant.updated"]
    assert [e["type"] for e in provd.events("syt2")] == ["tenant.created"]
    assert len(provd.events("syt3")) == events["syt3"]

    events = {t: len(provd.events(t)) for t in events}
    r = sync(provd, "--kind", "tenant", "--ignore-missing", "--apply", feed)
    assert plan_rows(r.stdout) == [] and \
        "plan: 0 create, 0 update, 0 resume, 0 suspend, 0 delete; 3 unchanged" in r.stdout
    assert {t: len(provd.events(t)) for t in events} == events
    # acme and the others the admin sees were never touched
    assert api(provd, "GET", "/v1/tenants/acme")["status"] == "active"


def test_domains_dry_run_apply_nothing_to_do(provd, tmp_path):
    make_tenant(provd, "sydm")
    api(provd, "POST", "/v1/domains", {"domain": "old.sydm.example", "tenant": "sydm",
                                       "description": "old"})
    api(provd, "POST", "/v1/domains", {"domain": "gone.sydm.example", "tenant": "sydm"})
    feed = csv_feed(tmp_path / "d.csv", [("sydm.example", ""), ("OLD.sydm.example", "renamed"),
                                         ("new.sydm.example", "brand new")],
                    header="domain,description")
    events = len(provd.events("sydm"))
    r = sync(provd, "--kind", "domain", "--tenant", "sydm", "--max-changes", "5", feed, rc=2)
    assert plan_rows(r.stdout) == [
        ("suspend", "gone.sydm.example", 'not in the feed: suspend, reason "sync: not in feed"'),
        ("create", "new.sydm.example", "description=brand new"),
        ("update", "old.sydm.example", "description: old -> renamed"),
    ], r.stdout
    assert "plan: 1 create, 1 update, 0 resume, 1 suspend, 0 delete; 1 unchanged" in r.stdout
    assert len(provd.events("sydm")) == events
    assert provd.request("GET", "/v1/domains/new.sydm.example").status == 404

    r = sync(provd, "--kind", "domain", "--tenant", "sydm", "--max-changes", "5", "--apply",
             feed)
    assert "sync domain: 3 done, 0 failed, 0 not tried" in r.stdout, r.stdout
    got = {d["domain"]: d for d in
           api(provd, "GET", "/v1/domains?tenant=sydm&limit=1000")["items"]}
    assert (got["gone.sydm.example"]["status"], got["gone.sydm.example"]["status_reason"]) == \
        ("suspended", "sync: not in feed")
    assert got["new.sydm.example"]["tenant"] == "sydm"
    assert got["old.sydm.example"]["description"] == "renamed"
    assert got["sydm.example"]["status"] == "active"
    assert sorted(e["type"] for e in provd.events("sydm")[events:]) == \
        ["domain.created", "domain.suspended", "domain.updated"]

    events = len(provd.events("sydm"))
    r = sync(provd, "--kind", "domain", "--tenant", "sydm", "--apply", feed)
    assert plan_rows(r.stdout) == [] and \
        "plan: 0 create, 0 update, 0 resume, 0 suspend, 0 delete; 3 unchanged" in r.stdout
    assert len(provd.events("sydm")) == events


# --- concurrency, scope, JSON ------------------------------------------------------------------

def test_change_between_plan_and_apply_fails_one_item(provd, tmp_path):
    make_tenant(provd, "syg", [("a", {"name": "A"}), ("b", {"name": "B"})])
    feed = csv_feed(tmp_path / "g.csv", [("a@syg.example", "A2"), ("b@syg.example", "B2")],
                    header="address,name")
    master, slave = pty.openpty()
    env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
    proc = subprocess.Popen(tnctl_cmd(provd, "sync", "--kind", "mailbox", "--tenant", "syg",
                                      "--apply", feed),
                            stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen, deadline = b"", time.time() + 30
    while b"[y/N]" not in seen and time.time() < deadline:
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    assert b"Apply these 2 changes to the mailboxes of tenant syg? [y/N]" in seen, seen
    # someone else changes b meanwhile
    api(provd, "PATCH", "/v1/mailboxes/b@syg.example", {"description": "changed"})
    os.write(master, b"yes\n")
    out, _ = proc.communicate(timeout=60)
    err = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert proc.returncode == 65, (out, seen + err)
    assert b"1 done, 1 failed" in out, out
    assert b"b@syg.example: update: changed since sync read it (412" in err, err
    got = mailboxes(provd, "syg")
    assert got["a@syg.example"]["name"] == "A2" and got["b@syg.example"]["name"] == "B"
    # run again (no terminal: no question): b is done now
    r = subprocess.run(tnctl_cmd(provd, "sync", "--kind", "mailbox", "--tenant", "syg",
                                 "--apply", "--yes", feed), env=env, capture_output=True)
    assert r.returncode == 0 and mailboxes(provd, "syg")["b@syg.example"]["name"] == "B2"


def test_scope(provd, tmp_path):
    make_tenant(provd, "syh", [("a", {}), ("b", {})])
    api(provd, "POST", "/v1/domains", {"domain": "second.syh.example", "tenant": "syh"})
    api(provd, "POST", "/v1/mailboxes", {"address": "c@second.syh.example"})
    make_tenant(provd, "syi", [("x", {"name": "X"})])
    other = mailboxes(provd, "syi")
    # a record of another tenant: refused, nothing written
    feed = csv_feed(tmp_path / "h.csv", [("a@syh.example", "syh"), ("x@syi.example", "syi"),
                                         ("b@syh.example", "")], header="address,tenant")
    r = sync(provd, "--kind", "mailbox", "--tenant", "syh", "--apply", "--max-changes", "5",
             feed, rc=65)
    assert "h.csv:3: tenant syi: outside the scope (--tenant syh)" in r.stderr, r.stderr
    assert "nothing written" in r.stderr
    # a mailbox of another tenant named without a tenant: its create is refused, the
    # other tenant's mailbox is not touched
    feed = csv_feed(tmp_path / "h2.csv", [("a@syh.example",), ("b@syh.example",),
                                          ("c@second.syh.example",), ("y@syi.example",)],
                    header="address")
    r = sync(provd, "--kind", "mailbox", "--tenant", "syh", "--apply", feed, rc=65)
    assert "1 failed" in r.stdout and "y@syi.example: create: 422" in r.stderr, r.stderr
    assert mailboxes(provd, "syi") == other
    # domain scope: only that domain's mailboxes are compared
    feed = csv_feed(tmp_path / "h3.csv", [("c@second.syh.example",)], header="address")
    r = sync(provd, "--kind", "mailbox", "--domain", "second.syh.example", feed)
    assert "0 suspend, 0 delete; 1 unchanged" in r.stdout, r.stdout
    r = sync(provd, "--kind", "mailbox", "--domain", "syh.example", feed, rc=65)
    assert "outside the scope (--domain syh.example)" in r.stderr
    for args in (("--kind", "mailbox"), ("--kind", "mailbox", "--tenant", "a", "--domain", "b"),
                 ("--kind", "tenant", "--tenant", "syh"), ("--kind", "domain"),
                 ("--tenant", "syh"), ("--kind", "mailbox", "--tenant", "syh",
                                       "--fields", "flavour")):
        assert run(provd, "sync", *(args + (feed,))).returncode == 64, args


def test_json_and_aliases(provd, tmp_path):
    make_tenant(provd, "syj", [("a", {}), ("b", {})])
    api(provd, "POST", "/v1/aliases", {"address": "team@syj.example", "targets": ["a@syj.example"]})
    feed = tmp_path / "j.ndjson"
    feed.write_text(json.dumps({"kind": "alias", "address": "team@syj.example",
                                "targets": ["B@syj.example", "a@syj.example"]}) + "\n" +
                    json.dumps({"address": "sales@syj.example",
                                "targets": ["a@syj.example"]}) + "\n")
    r = sync(provd, "--kind", "alias", "--tenant", "syj", "--json", str(feed), rc=2)
    doc = json.loads(r.stdout)
    assert doc["counts"]["create"] == 1 and doc["counts"]["update"] == 1, doc
    assert doc["applied"] is False and doc["tenant"] == "syj"
    upd = [p for p in doc["plan"] if p["key"] == "team@syj.example"][0]
    assert upd["actions"] == ["update"]
    assert upd["changes"]["targets"] == {"old": ["a@syj.example"],
                                         "new": ["B@syj.example", "a@syj.example"]}
    r = sync(provd, "--kind", "alias", "--tenant", "syj", "--json", "--apply", str(feed))
    doc = json.loads(r.stdout)
    assert doc["applied"] is True
    assert {p["key"]: p["result"] for p in doc["plan"]} == \
        {"sales@syj.example": "done", "team@syj.example": "done"}
    # targets compare as a set of addresses: nothing left to do
    r = sync(provd, "--kind", "alias", "--tenant", "syj", "--json", str(feed))
    assert json.loads(r.stdout)["plan"] == []
