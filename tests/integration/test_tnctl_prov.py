"""tnctl's provisioning commands and bulk import, through tn-provisiond's
REST API, against real slapd and Redis (tnharness.Stack) and a real
daemon (tnprovd.Provd): one stack and one daemon for the module; the
daemon keeps deleted objects 2 seconds (prov_purge_grace) so that restore
and purge can both be seen.

Checked: each resource's lifecycle through tnctl (create, get, list,
update with --if-match, suspend, resume, delete, restore, purge) in table
and --json output; tenant recount resets drifted plan counters; the exit
statuses (1 for 404, 65 for 400 and 422 (a plan limit), 3 for 409 and
412, 77 for 401 and 403, 75 when the daemon is stopped, at its rate limit
(429) and with the directory frozen (503), 64 usage);
passwords from a file and standard input, never echoed; import from CSV
(quoted commas, quotes, line breaks) and NDJSON, kinds mixed and out of
order, invalid lines in the results file with their line numbers while
the rest is created; an import killed with SIGKILL and resumed gives the
same directory as an uninterrupted one (into a second tenant); --dry-run
writes nothing; progress on a pipe is plain lines; an import against a
stopped daemon exits 75 and asks for --resume.

Batches (POST /v1/batch/<kind>, tnctl import --batch N): 500 lines of
every outcome (created, exists, a duplicate in the file, invalid here and
at the server, plan limits, a conflict with another kind) give the same
per-line results, events and directory with --batch 50 as with --batch 1;
kill -9 in the middle of a batched import and --resume give the directory
of an uninterrupted one; a batch repeated with its Idempotency-Key (by
hand, and by tnctl importing a file again) is replayed, not written
twice (outbox events counted line by line); against a server without the
route (a proxy answering 404 "no such route", as older daemons do) import
falls back to single creates with one notice line; a batch beyond
provd_max_body is sent again in halves; slapd stopped for 3 s under a
batched import (whole batches and items answered 503) loses and doubles
nothing. The tests that need
the route skip, saying so, while the daemon answers POST
/v1/batch/mailboxes with 404 "no such route".
"""

import glob
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import tnharness as th
from tnprobe import binary
from tnprovd import ACME, ADMIN, FAST, Provd

GRACE = 2.0


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd"),
              overrides={"prov_purge_grace": "%ds" % GRACE, "provd_max_body": "64k"})
    yield p
    p.stop()


def tnctl_cmd(provd, *args, port=None):
    return [binary("provisioning/tnctl"), "-c", provd.stack.conf,
            "-o", "tnctl_api_url=http://127.0.0.1:%d" % (port or provd.port)] + list(args)


def run(provd, *args, token=ADMIN, stdin=None, port=None, timeout=120, cwd=None):
    env = dict(os.environ, TNCTL_API_TOKEN=token)
    r = subprocess.run(tnctl_cmd(provd, *args, port=port), capture_output=True, text=True,
                       input=stdin, env=env, timeout=timeout, cwd=cwd,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def ok(provd, *args, **kw):
    r = run(provd, *args, **kw)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r


def as_json(provd, *args, **kw):
    return json.loads(ok(provd, *(args + ("--json",)), **kw).stdout)


def kv(text):
    """{field: value} of get's "field: value" lines."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        out[name] = value.strip()
    return out


def table(text):
    """[{COLUMN: cell}] of list's table (cells hold no two blanks)."""
    lines = text.splitlines()
    head = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(head, re.split(r"\s{2,}", l.strip()))) for l in lines[1:]]


# --- one object at a time -------------------------------------------------------

def test_tenant_lifecycle(provd):
    r = ok(provd, "tenant", "create", "cli1", "--name", "CLI, One", "--plan", "gold",
           "--storage-quota", "10G", "--max-mailboxes", "50", "--overcommit", "no")
    got = kv(r.stdout)
    assert got["id"] == "cli1" and got["name"] == "CLI, One" and got["status"] == "active"
    assert got["storage_quota_bytes"].startswith("10737418240 (10.0 GiB)"), got
    assert got["max_mailboxes"] == "50" and got["overcommit"] == "no"

    j = as_json(provd, "tenant", "get", "cli1")
    assert j == provd.request("GET", "/v1/tenants/cli1").json
    assert kv(ok(provd, "tenant", "get", "cli1").stdout)["etag"] == j["etag"]

    rows = table(ok(provd, "tenant", "list").stdout)
    row = [x for x in rows if x["ID"] == "cli1"]
    assert row and row[0]["STATUS"] == "active" and row[0]["PLAN"] == "gold", rows
    assert row[0]["STORAGE_QUOTA"] == "10 GiB" and row[0]["NAME"] == "CLI, One"
    assert "cli1" in [t["id"] for t in as_json(provd, "tenant", "list")["items"]]
    # one page, then the next one with its cursor
    page = as_json(provd, "tenant", "list", "--limit", "1")
    assert len(page["items"]) == 1 and page["next_cursor"]
    page2 = as_json(provd, "tenant", "list", "--limit", "1", "--cursor", page["next_cursor"])
    assert page2["items"][0]["id"] != page["items"][0]["id"]

    # update with --if-match; the old ETag is then stale (3)
    etag = j["etag"]
    new = as_json(provd, "tenant", "update", "cli1", "--if-match", etag,
                  "--description", "first", "--set", "send_rate_per_hour=100")
    assert new["description"] == "first" and new["send_rate_per_hour"] == 100
    r = run(provd, "tenant", "update", "cli1", "--if-match", etag, "--plan", "x")
    assert r.returncode == 3 and "412 precondition_failed" in r.stderr, r.stderr
    # an empty value removes a field
    assert as_json(provd, "tenant", "update", "cli1", "--description", "")["description"] \
        is None

    r = ok(provd, "tenant", "suspend", "cli1", "--reason", "unpaid")
    assert kv(r.stdout)["status"] == "suspended" and kv(r.stdout)["status_reason"] == "unpaid"
    rows = table(ok(provd, "tenant", "list", "--status", "suspended").stdout)
    assert "cli1" in [x["ID"] for x in rows]
    assert as_json(provd, "tenant", "resume", "cli1")["status"] == "active"

    r = ok(provd, "tenant", "delete", "cli1")
    assert r.stdout.strip() == "tenant cli1 deleted"
    assert as_json(provd, "tenant", "get", "cli1")["status"] == "deleted"
    assert as_json(provd, "tenant", "restore", "cli1")["status"] == "active"
    ok(provd, "tenant", "delete", "cli1")
    time.sleep(GRACE + 0.5)
    assert ok(provd, "tenant", "purge", "cli1").stdout.strip() == "tenant cli1 purged"
    r = run(provd, "tenant", "get", "cli1")
    assert r.returncode == 1 and "404 not_found" in r.stderr, r.stderr


def test_domain_mailbox_alias(provd, tmp_path):
    ok(provd, "tenant", "create", "cli2")
    d = as_json(provd, "domain", "create", "cli2.example", "--tenant", "cli2",
                "--description", "main")
    assert d["domain"] == "cli2.example" and d["tenant"] == "cli2"
    rows = table(ok(provd, "domain", "list", "--tenant", "cli2").stdout)
    assert rows == [{"DOMAIN": "cli2.example", "TENANT": "cli2", "STATUS": "active",
                     "DESCRIPTION": "main"}], rows

    pw = tmp_path / "pw"
    pw.write_text("s3cret-Passw0rd\n")
    os.chmod(str(pw), 0o600)
    r = ok(provd, "mailbox", "create", "ann@cli2.example", "--password-file", str(pw),
           "--quota", "1G", "--host", "store1.example:24", "--name", "Ann")
    assert "s3cret" not in r.stdout + r.stderr
    got = kv(r.stdout)
    assert got["quota_bytes"].startswith("1073741824") and got["host"] == "store1.example:24"
    entry = provd.stack.slapd.search("(mail=ann@cli2.example)", attrs=["userPassword"])
    assert entry and entry[0].first("userPassword", "").startswith("{SHA512-CRYPT}$6$"), entry
    # a password from standard input
    r = ok(provd, "mailbox", "create", "bob@cli2.example", "--password-file", "-",
           stdin="another-Passw0rd\n")
    assert "another" not in r.stdout + r.stderr
    # never from the command line
    r = run(provd, "mailbox", "create", "eve@cli2.example", "--set", "password=x")
    assert r.returncode == 65 and "password" in r.stderr
    r = run(provd, "mailbox", "create", "eve@cli2.example", "--password", "x")
    assert r.returncode == 64, r.stderr

    rows = table(ok(provd, "mailbox", "list", "--tenant", "cli2").stdout)
    assert [(x["ADDRESS"], x["QUOTA"], x["HOST"]) for x in rows] == \
        [("ann@cli2.example", "1 GiB", "store1.example:24"), ("bob@cli2.example", "-", "-")]
    m = as_json(provd, "mailbox", "update", "ann@cli2.example", "--quota", "inherit",
                "--send-rate", "20")
    assert m["quota_bytes"] is None and m["send_rate_per_hour"] == 20

    a = as_json(provd, "alias", "create", "team@cli2.example", "--target", "ann@cli2.example",
                "--target", "bob@cli2.example,x@elsewhere.example")
    assert a["targets"] == ["ann@cli2.example", "bob@cli2.example", "x@elsewhere.example"]
    rows = table(ok(provd, "alias", "list", "--domain", "cli2.example").stdout)
    assert rows[0]["TARGETS"] == "ann@cli2.example, bob@cli2.example, x@elsewhere.example"
    a = as_json(provd, "alias", "update", "team@cli2.example", "--target", "ann@cli2.example")
    assert a["targets"] == ["ann@cli2.example"]

    for kind, key in (("alias", "team@cli2.example"), ("mailbox", "bob@cli2.example"),
                      ("domain", "cli2.example")):
        assert as_json(provd, kind, "suspend", key, "--reason", "test")["status"] == \
            "suspended"
        assert as_json(provd, kind, "resume", key)["status"] == "active"
    ok(provd, "mailbox", "delete", "bob@cli2.example")
    rows = as_json(provd, "mailbox", "list", "--tenant", "cli2", "--status", "deleted")
    assert [x["address"] for x in rows["items"]] == ["bob@cli2.example"]
    assert as_json(provd, "mailbox", "restore", "bob@cli2.example")["status"] == "active"
    # a whole body from a file, amended by an option
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"name": "Carl", "quota_bytes": 1048576}))
    c = as_json(provd, "mailbox", "create", "carl@cli2.example", "--body", str(body),
                "--name", "Carl C.")
    assert c["name"] == "Carl C." and c["quota_bytes"] == 1048576


def test_tenant_recount(provd):
    ok(provd, "tenant", "create", "cnt1", "--max-mailboxes", "5")
    ok(provd, "domain", "create", "cnt1.example", "--tenant", "cnt1")
    ok(provd, "mailbox", "create", "a@cnt1.example", "--quota", "1k")
    ok(provd, "mailbox", "create", "b@cnt1.example")
    # a writer that died after taking its share: the counter says 4
    provd.stack.slapd.modify("dn: tnTenantId=cnt1,%s\nchangetype: modify\n"
                             "replace: tnMailboxCount\ntnMailboxCount: 4\n" % th.TENANTS)
    assert as_json(provd, "tenant", "get", "cnt1")["mailbox_count"] == 4
    t = as_json(provd, "tenant", "recount", "cnt1")
    assert t["id"] == "cnt1" and t["mailbox_count"] == 2, t
    assert (t["quota_explicit_bytes"], t["quota_default_count"]) == (1024, 1), t
    got = kv(ok(provd, "tenant", "recount", "cnt1").stdout)
    assert got["id"] == "cnt1" and got["mailbox_count"] == "2", got
    # tenants only; 404 for a tenant that is not there
    r = run(provd, "mailbox", "recount", "a@cnt1.example")
    assert r.returncode == 64 and "tnctl tenant recount" in r.stderr, r.stderr
    r = run(provd, "tenant", "recount", "nosuchtenant")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    assert run(provd, "tenant", "recount").returncode == 64
    assert run(provd, "tenant", "recount", "cnt1", "--reason", "x").returncode == 64


def test_exit_statuses(provd, workdir):
    r = run(provd, "mailbox", "get", "nobody@acme.example")
    assert r.returncode == 1 and "404" in r.stderr
    r = run(provd, "tenant", "create", "Not Valid")
    assert r.returncode == 65 and "(field: id)" in r.stderr, r.stderr
    r = run(provd, "mailbox", "create", "x@acme.example", "--quota", "lots")
    assert r.returncode == 65 and "--quota" in r.stderr
    r = run(provd, "tenant", "create", "acme")
    assert r.returncode == 3 and "409 conflict" in r.stderr, r.stderr
    r = run(provd, "tenant", "get", "acme", token="wrong-token")
    assert r.returncode == 77 and "401" in r.stderr
    r = run(provd, "tenant", "create", "acme-two", token=ACME)
    assert r.returncode == 77 and "403" in r.stderr
    # a tenant's token sees its own tenant only
    assert [t["id"] for t in as_json(provd, "tenant", "list", token=ACME)["items"]] == ["acme"]
    for args in (("tenant",), ("tenant", "explode"), ("tenant", "get"),
                 ("tenant", "get", "a", "b"), ("tenant", "list", "--nope"),
                 ("import",), ("mailbox", "create", "a@b.example", "--password-prompt",
                               "--password-file", "x")):
        assert run(provd, *args).returncode == 64, args
    r = run(provd, "tenant", "get", "acme", token="")
    env_token_missing = r.returncode
    assert env_token_missing == 78 and "token" in r.stderr, r.stderr

    # the daemon stopped: 75
    down = Provd(provd.stack, workdir)
    down.stop()
    r = run(provd, "tenant", "get", "acme", port=down.port)
    assert r.returncode == 75 and "no answer" in r.stderr, r.stderr

    # a plan limit (422): the data is refused, 65
    ok(provd, "tenant", "create", "ex422", "--max-mailboxes", "1")
    ok(provd, "domain", "create", "ex422.example", "--tenant", "ex422")
    ok(provd, "mailbox", "create", "a@ex422.example")
    r = run(provd, "mailbox", "create", "b@ex422.example")
    assert r.returncode == 65 and "422 unprocessable" in r.stderr and \
        "allows 1 mailboxes" in r.stderr, (r.returncode, r.stderr)
    assert run(provd, "mailbox", "get", "b@ex422.example").returncode == 1

    # the daemon's rate limit (429): try again later, 75
    limited = Provd(provd.stack, os.path.join(str(workdir), "limited"),
                    overrides={"provd_rate_limit": "1", "provd_rate_burst": "1"})
    try:
        assert run(provd, "tenant", "get", "acme", port=limited.port).returncode == 0
        r = run(provd, "tenant", "get", "acme", port=limited.port)
        assert r.returncode == 75 and "429 rate_limited" in r.stderr, (r.returncode, r.stderr)
    finally:
        limited.stop()

    # the directory frozen (503 from the daemon): 75, nothing written
    fast = Provd(provd.stack, os.path.join(str(workdir), "fast"), overrides=FAST)
    try:
        provd.stack.slapd.freeze()
        try:
            for args in (("tenant", "get", "acme"), ("tenant", "create", "ex503")):
                r = run(provd, *args, port=fast.port)
                assert r.returncode == 75 and "503 tempfail" in r.stderr, \
                    (args, r.returncode, r.stderr)
        finally:
            provd.stack.slapd.thaw()
    finally:
        fast.stop()
    assert run(provd, "tenant", "get", "ex503").returncode == 1


# --- import -----------------------------------------------------------------------

def results(path):
    recs = [json.loads(line) for line in open(path)]
    return {r["line"]: r for r in recs if "line" in r}


def test_import_csv(provd, tmp_path):
    csv = tmp_path / "in.csv"
    # kinds out of order: the domain and tenant come after their mailboxes
    csv.write_text(
        'kind,id,domain,tenant,address,name,quota_bytes,targets,overcommit\r\n'   # 1
        'mailbox,,,,ann@imc.example,"Ann, the ""first""",1M,,\r\n'               # 2
        'mailbox,,,,bob@imc.example,Bob,,,\r\n'                                 # 3
        'mailbox,,,,"cy@imc.example","Cy\r\nwith a line break",,,\r\n'           # 4-5
        'mailbox,,,,dee@imc.example,Dee,lots,,\r\n'                             # 6
        'alias,,,,all@imc.example,,,"ann@imc.example, bob@imc.example",\r\n'     # 7
        '\r\n'                                                                  # 8
        'domain,,imc.example,imc,,,,,\r\n'                                      # 9
        'tenant,imc,,,,"IMC, Inc.",,,yes\r\n'                                   # 10
        'mailbox,,,,eve@imc.example,Eve,,,,extra\r\n'                           # 11
        'mailbox,,,,"fay@imc.example" x,Fay,,,\r\n'                             # 12
        'mailbox,,,,gus@imc.example,Gus,2k,,\r\n')                              # 13
    r = run(provd, "import", str(csv))
    assert r.returncode == 65, (r.stdout, r.stderr)
    assert "created" in r.stdout and "4 invalid" in r.stdout, r.stdout
    res = results(str(csv) + ".results")
    assert {n: x["status"] for n, x in res.items()} == {
        2: "created", 3: "created", 4: "invalid", 6: "invalid", 7: "created",
        9: "created", 10: "created", 11: "invalid", 12: "invalid", 13: "created"}, res
    assert res[4]["field"] == "name" and "control" in res[4]["error"]
    assert res[6]["field"] == "quota_bytes"
    assert "header" in res[11]["error"] and "quote" in res[12]["error"]
    assert res[2] == {"line": 2, "kind": "mailbox", "key": "ann@imc.example",
                      "status": "created", "http": 201}

    t = provd.request("GET", "/v1/tenants/imc").json
    assert t["name"] == "IMC, Inc." and t["overcommit"] is True
    m = provd.request("GET", "/v1/mailboxes/ann@imc.example").json
    assert m["name"] == 'Ann, the "first"' and m["quota_bytes"] == 1048576
    assert m["tenant"] == "imc"
    assert provd.request("GET", "/v1/mailboxes/gus@imc.example").json["quota_bytes"] == 2048
    assert provd.request("GET", "/v1/aliases/all@imc.example").json["targets"] == \
        ["ann@imc.example", "bob@imc.example"]
    assert provd.request("GET", "/v1/mailboxes/cy@imc.example").status == 404

    # the same file again: everything there already ("exists"), the
    # invalid lines still invalid
    r = run(provd, "import", str(csv), "--parallel", "3")
    assert r.returncode == 65 and "0 created, 6 exists" in r.stdout, r.stdout


def test_import_ndjson_and_dry_run(provd, tmp_path):
    lines = [
        {"kind": "mailbox", "address": "a1@imn.example", "send_rate_per_hour": 10},
        {"kind": "alias", "address": "al@imn.example", "targets": ["a1@imn.example"]},
        {"kind": "domain", "domain": "imn.example", "tenant": "imn"},
        {"kind": "tenant", "id": "imn", "max_mailboxes": 5},
        {"kind": "mailbox", "address": "a2@imn.example", "flavour": "vanilla"},
        {"kind": "planet", "id": "mars"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n\n{not json\n" + \
        json.dumps({"kind": "mailbox", "address": "a3@imn.example"}) + "\n"
    path = tmp_path / "in.ndjson"
    path.write_text(text)

    r = run(provd, "import", "--dry-run", str(path))
    assert r.returncode == 65, r.stderr
    assert "would create 1 tenant, 1 domain, 2 mailbox, 1 alias; 3 invalid" in r.stdout, \
        r.stdout
    assert "in.ndjson:5:" in r.stderr and "flavour" in r.stderr
    assert not os.path.exists(str(path) + ".results")
    assert provd.request("GET", "/v1/tenants/imn").status == 404

    out = tmp_path / "out.ndjson"
    r = run(provd, "import", "--results", str(out), str(path))
    assert r.returncode == 65 and "5 created" in r.stdout, (r.stdout, r.stderr)
    res = results(str(out))
    assert sorted(n for n, x in res.items() if x["status"] == "invalid") == [5, 6, 8]
    assert res[6]["field"] == "kind" and "malformed JSON" in res[8]["error"]
    got = [m["address"] for m in
           provd.request("GET", "/v1/mailboxes?tenant=imn").json["items"]]
    assert got == ["a1@imn.example", "a3@imn.example"]

    # --kind: lines of another kind are invalid; a file of one kind needs
    # no kind member
    one = tmp_path / "one.ndjson"
    one.write_text(json.dumps({"address": "a4@imn.example"}) + "\n" +
                   json.dumps({"kind": "alias", "address": "x@imn.example",
                               "targets": ["a1@imn.example"]}) + "\n")
    r = run(provd, "import", "--kind", "mailbox", str(one))
    assert r.returncode == 65
    res = results(str(one) + ".results")
    assert res[1]["status"] == "created" and res[2]["status"] == "invalid"


def make_bulk(path, tenant, n):
    rows = ["kind,id,domain,tenant,address,name,quota_bytes,targets"]
    rows.append("tenant,%s,,,,Bulk %s,," % (tenant, tenant))
    rows.append("domain,,%s.example,%s,,,," % (tenant, tenant))
    for i in range(n):
        rows.append('mailbox,,,,u%04d@%s.example,"User %d, bulk",%d,' %
                    (i, tenant, i, 1048576 * (1 + i % 3)))
    for i in range(5):
        rows.append('alias,,,,list%d@%s.example,,,"u%04d@%s.example u%04d@%s.example"' %
                    (i, tenant, i, tenant, i + 1, tenant))
    with open(str(path), "w") as f:
        f.write("\n".join(rows) + "\n")


def directory_of(provd, tenant):
    """The tenant's objects with the tenant's name taken out and without
    etags and times, for comparing two tenants."""
    def norm(items):
        out = []
        for o in items:
            o = {k: v for k, v in o.items()
                 if k not in ("etag", "status_time", "purge_after")}
            out.append(json.loads(json.dumps(o).replace(tenant, "T")))
        return out
    got = {}
    for kind in ("domain", "mailbox", "alias"):
        got[kind] = norm(as_json(provd, kind, "list", "--tenant", tenant)["items"])
    got["tenant"] = norm([as_json(provd, "tenant", "get", tenant)])
    return got


def test_import_killed_and_resumed(provd, tmp_path):
    n = 400
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    make_bulk(a, "bka", n)
    make_bulk(b, "bkb", n)
    env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
    proc = subprocess.Popen(tnctl_cmd(provd, "import", "--parallel", "4", str(a)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(str(a) + ".results"):
            done = sum(1 for _ in open(str(a) + ".results"))
            if done >= 60:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done >= 60 and proc.returncode == -signal.SIGKILL
    res = results(str(a) + ".results")
    assert 0 < len(res) < n + 7, len(res)

    r = ok(provd, "import", "--resume", "--parallel", "4", str(a))
    m = re.search(r"(\d+) created, (\d+) exists, 0 failed, 0 invalid, (\d+) done before",
                  r.stdout)
    assert m and int(m.group(3)) == len(res), r.stdout
    assert int(m.group(1)) + int(m.group(2)) + int(m.group(3)) == n + 7
    final = results(str(a) + ".results")
    assert len(final) == n + 7 and \
        {x["status"] for x in final.values()} <= {"created", "exists"}

    ok(provd, "import", str(b))
    da, db = directory_of(provd, "bka"), directory_of(provd, "bkb")
    assert len(da["mailbox"]) == n and len(da["alias"]) == 5
    assert da == db

    # a second resume has nothing left to do
    r = ok(provd, "import", "--resume", str(a))
    assert "0 created, 0 exists, 0 failed, 0 invalid, %d done before" % (n + 7) in r.stdout


def test_import_progress_lines_and_summary(provd, tmp_path):
    path = tmp_path / "p.csv"
    make_bulk(path, "prg", 50)
    r = ok(provd, "import", "--progress", str(path))
    assert "\r" not in r.stderr
    # a daemon without the batch route: one notice, then single creates
    lines = [l for l in r.stderr.splitlines() if "no batch route" not in l]
    assert len(r.stderr.splitlines()) - len(lines) <= 1, r.stderr
    assert lines[0] == "import: 57 lines to create (0 done before, 0 invalid), " \
        "8 in parallel, 100 per request"
    assert all(re.match(r"^import: \d+/57 lines \(\d+%\), \d+/s, ETA \d+s$", l)
               for l in lines[1:]), lines
    assert lines[-1].startswith("import: 57/57 lines (100%)")
    assert re.match(r"^import .*: 57 created, 0 exists, 0 failed, 0 invalid, 0 done before, "
                    r"0 not tried; [\d.]+s, \d+ lines/s$", r.stdout), r.stdout
    path2 = tmp_path / "q.csv"
    make_bulk(path2, "prh", 3)
    r = ok(provd, "import", "--no-progress", str(path2))
    assert r.stderr == ""


def test_import_progress_bar_on_a_terminal(provd, tmp_path):
    """Standard error on a terminal: one line redrawn with \\r, a bar, the
    count, the percentage, a rate in /s and an ETA in m:ss, ending at
    100% and a newline; no plain progress lines; the summary on stdout."""
    import pty
    import select
    path = tmp_path / "tty.csv"
    make_bulk(path, "ptyi", 300)
    master, slave = pty.openpty()
    env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
    t0 = time.monotonic()
    proc = subprocess.Popen(tnctl_cmd(provd, "import", "--batch", "1", "--parallel", "2",
                                      str(path)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    err = b""
    while True:
        if select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:         # the other side closed (Linux: EIO)
                break
            if not chunk:
                break
            err += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    os.close(master)
    assert proc.returncode == 0, (out, err)
    assert re.search(rb": 307 created, 0 exists, 0 failed, 0 invalid", out), out
    text = err.decode().replace("\r\n", "\n")     # the terminal's ONLCR
    assert "import: " not in text, text       # no plain lines on a terminal
    draws = [d.rstrip("\n") for d in text.split("\r")[1:]]
    assert len(draws) >= 2, text
    bar = re.compile(r"^\[([#.]{30})\] (\d+)/307 +(\d+)% +(\d+|-)/s ETA (\d+:\d\d|--:--) *$")
    parsed = []
    for d in draws:
        m = bar.match(d.strip("\n"))
        assert m, (d, text)
        parsed.append(m.groups())
    # counts only grow; the bar follows the percentage
    assert [int(p[1]) for p in parsed] == sorted(int(p[1]) for p in parsed)
    for hashes, done, pct, rate, eta in parsed:
        assert int(pct) == 100 * int(done) // 307
        assert hashes.count("#") == int(pct) * 30 // 100
    # the last: 100%, a rate and an ETA of 0:00, then the newline
    assert parsed[-1][1:3] == ("307", "100") and parsed[-1][4] == "0:00", parsed[-1]
    assert int(parsed[-1][3]) > 0 and text.endswith("\n"), text
    # a draw in the middle has a rate and an ETA in minutes:seconds
    middle = [p for p in parsed if 0 < int(p[1]) < 307]
    if elapsed > 1.0:
        assert middle, (elapsed, text)
    for p in middle:
        assert p[3] != "-" and re.match(r"^\d+:[0-5]\d$", p[4]), p


def test_import_server_down_then_resume(provd, workdir):
    path = os.path.join(str(workdir), "d.csv")
    make_bulk(path, "dwn", 20)
    down = Provd(provd.stack, os.path.join(str(workdir), "down"))
    down.stop()
    r = run(provd, "import", path, port=down.port)
    assert r.returncode == 75, (r.stdout, r.stderr)
    assert "--resume" in r.stderr and "no answer" in r.stderr
    assert "not tried" in r.stdout
    assert provd.request("GET", "/v1/tenants/dwn").status == 404
    r = ok(provd, "import", "--resume", path)
    assert "27 created" in r.stdout, r.stdout

    # a refused token stops the import at once: 77
    path2 = os.path.join(str(workdir), "e.csv")
    make_bulk(path2, "dwe", 20)
    r = run(provd, "import", path2, token="wrong-token")
    assert r.returncode == 77 and "401" in r.stderr, r.stderr
    assert len(results(path2 + ".results")) <= 8


# --- batches ------------------------------------------------------------------------

NO_ROUTE = {"error": {"status": 404, "code": "not_found", "message": "no such route"}}


@pytest.fixture
def batch_route(provd):
    """Skips the test while the daemon has no POST /v1/batch/<kind>."""
    r = provd.request("POST", "/v1/batch/mailboxes", raw="{}")
    if r.status == 404 and r.json and r.json["error"]["message"] == "no such route":
        pytest.skip("tn-provisiond has no POST /v1/batch/mailboxes yet (404 no such route)")
    assert r.status == 400 and r.json["error"]["field"] == "items", r.text


def outbox_events(provd, tenant, etype):
    """Events of the outbox of that tenant and type: every file of new/,
    one JSON event per line (one file per group commit)."""
    n = 0
    for path in glob.glob(os.path.join(provd.outbox, "new", "*")):
        with open(path) as f:
            for line in f:
                if line.strip():
                    ev = json.loads(line)
                    n += ev["tenant"] == tenant and ev["type"] == etype
    return n


def make_mixed(path, t):
    """About 500 NDJSON lines for tenant t (its tenant and first domain
    exist already): every outcome a line can have."""
    d = t + ".example"
    lines = [{"kind": "tenant", "id": t, "max_mailboxes": 440},               # exists
             {"kind": "domain", "domain": d, "tenant": t},                    # exists
             {"kind": "domain", "domain": t + "-b.example", "tenant": t}]     # created
    for i in range(460):
        m = {"kind": "mailbox", "address": "u%04d@%s" % (i, d)}
        if i % 7 == 0:
            m["quota_bytes"] = 1048576 * (1 + i % 5)
        if i % 11 == 0:
            m["name"] = "User %d" % i
        lines.append(m)
        if i == 17:
            lines.append({"kind": "mailbox", "address": "u0005@" + d})         # twice
            lines.append({"kind": "mailbox", "address": "pre@" + d})           # exists
            lines.append({"kind": "mailbox", "address": "x@" + d,
                          "quota_bytes": "lots"})                             # invalid
            lines.append({"kind": "mailbox", "address": "no address"})        # invalid
            lines.append({"kind": "mailbox", "address": "y@nodomain-" + d})   # server
            lines.append({"kind": "mailbox", "address": "z@" + d,
                          "tenant": "acme"})                                  # ownership
            lines.append({"kind": "mailbox", "address": "b1@%s-b.example" % t})
        # past 440 mailboxes: the plan's limit (422)
    for i in range(25):
        lines.append({"kind": "alias", "address": "list%d@%s" % (i, d),
                      "targets": ["u%04d@%s" % (i, d), "ext%d@elsewhere.example" % i]})
    lines.append({"kind": "alias", "address": "u0001@" + d,
                  "targets": ["u0002@" + d]})                                 # a mailbox's
    lines.append({"kind": "alias", "address": "loop@" + d, "targets": ["loop@" + d]})
    with open(str(path), "w") as f:
        for x in lines:
            f.write(json.dumps(x) + "\n")
    return len(lines)


def prepare_mixed(provd, t):
    for method, path, body in (
            ("POST", "/v1/tenants", {"id": t, "max_mailboxes": 440}),
            ("POST", "/v1/domains", {"domain": t + ".example", "tenant": t}),
            ("POST", "/v1/mailboxes", {"address": "pre@%s.example" % t})):
        r = provd.request(method, path, body)
        assert r.status == 201, r.text


def normalized(path, t):
    return {n: json.loads(json.dumps(x).replace(t, "T")) for n, x in results(path).items()}


def test_import_batches_as_single_creates(provd, batch_route, tmp_path):
    got = {}
    for t, batch in (("bsa", "1"), ("bsb", "50")):
        prepare_mixed(provd, t)
        path = tmp_path / (t + ".ndjson")
        n = make_mixed(path, t)
        # --parallel 1: which creates meet the plan's limit is then the
        # file's order, in both runs
        r = run(provd, "import", "--batch", batch, "--parallel", "1", "--no-progress",
                str(path))
        assert r.returncode == 65, (r.stdout, r.stderr)
        got[t] = normalized(str(path) + ".results", t)
        assert len(got[t]) == n
    a, b = got["bsa"], got["bsb"]
    assert a == b, [(n, a[n], b.get(n)) for n in a if a[n] != b.get(n)][:5]
    statuses = [x["status"] for x in a.values()]
    assert statuses.count("exists") == 4 and statuses.count("invalid") >= 2, statuses
    assert [x["http"] for x in a.values() if x["status"] == "failed"].count(422) >= 20, a
    assert any(x.get("http") == 409 and "another" not in x["error"] for x in a.values()
               if x["status"] == "failed") or \
        any(x.get("http") == 409 for x in a.values()), a
    assert directory_of(provd, "bsa") == directory_of(provd, "bsb")
    assert outbox_events(provd, "bsa", "mailbox.created") == \
        outbox_events(provd, "bsb", "mailbox.created") == 440


def test_import_batches_killed_and_resumed(provd, batch_route, tmp_path):
    n = 600
    a, b = tmp_path / "ba.csv", tmp_path / "bb.csv"
    make_bulk(a, "bra", n)
    make_bulk(b, "brb", n)
    args = ("import", "--batch", "20", "--parallel", "4")
    env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
    proc = subprocess.Popen(tnctl_cmd(provd, *(args + (str(a),))),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(str(a) + ".results"):
            done = sum(1 for _ in open(str(a) + ".results"))
            if done >= 100:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done >= 100 and proc.returncode == -signal.SIGKILL
    res = results(str(a) + ".results")
    assert 0 < len(res) < n + 7, len(res)

    r = ok(provd, *(args + ("--resume", str(a))))
    m = re.search(r"(\d+) created, (\d+) exists, 0 failed, 0 invalid, (\d+) done before",
                  r.stdout)
    assert m and int(m.group(3)) == len(res), r.stdout
    assert int(m.group(1)) + int(m.group(2)) + int(m.group(3)) == n + 7
    final = results(str(a) + ".results")
    assert len(final) == n + 7 and \
        {x["status"] for x in final.values()} <= {"created", "exists"}

    ok(provd, *(args + (str(b),)))
    da, db = directory_of(provd, "bra"), directory_of(provd, "brb")
    assert len(da["mailbox"]) == n and len(da["alias"]) == 5
    assert da == db
    assert outbox_events(provd, "bra", "mailbox.created") == n


def test_batch_replayed_by_idempotency_key(provd, batch_route, tmp_path):
    r = provd.request("POST", "/v1/tenants", {"id": "rpl"})
    assert r.status == 201, r.text
    r = provd.request("POST", "/v1/domains", {"domain": "rpl.example", "tenant": "rpl"})
    assert r.status == 201, r.text
    body = {"items": [{"address": "m%d@rpl.example" % i} for i in range(10)] +
            [{"address": "m3@rpl.example"}]}
    h = {"Idempotency-Key": "rpl-batch-1"}
    first = provd.request("POST", "/v1/batch/mailboxes", body, headers=h)
    assert first.status == 200, first.text
    assert [x["status"] for x in first.json["results"]] == [201] * 10 + [409]
    assert first.getheader("Idempotent-Replayed") is None
    assert outbox_events(provd, "rpl", "mailbox.created") == 10
    again = provd.request("POST", "/v1/batch/mailboxes", body, headers=h)
    assert again.status == 200 and again.getheader("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert outbox_events(provd, "rpl", "mailbox.created") == 10
    assert provd.request("GET", "/v1/tenants/rpl").json["mailbox_count"] == 10

    # tnctl: the same file again sends the same batches with the same
    # keys: replayed ("exists"), nothing written
    path = tmp_path / "rp.csv"
    make_bulk(path, "rp2", 30)
    ok(provd, "import", "--batch", "10", "--no-progress", str(path))
    events = outbox_events(provd, "rp2", "mailbox.created")
    assert events == 30
    provd.log.flush()
    before = provd_log_count(provd, "/v1/batch/mailboxes: Idempotency-Key repeated")
    r = ok(provd, "import", "--batch", "10", "--no-progress", str(path))
    assert "0 created, 37 exists" in r.stdout, r.stdout
    assert provd_log_count(provd, "/v1/batch/mailboxes: Idempotency-Key repeated") == \
        before + 3
    assert outbox_events(provd, "rp2", "mailbox.created") == events


def provd_log_count(provd, text):
    with open(provd.log.name) as f:
        return f.read().count(text)


class NoBatchProxy(http.server.ThreadingHTTPServer):
    """An older tn-provisiond: 404 "no such route" for /v1/batch/...,
    everything else forwarded to the real daemon."""

    daemon_threads = True

    def __init__(self, port):
        target = port

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/v1/batch/"):
                    self.server.batch_calls += 1
                    status, data, headers = 404, json.dumps(NO_ROUTE).encode(), \
                        [("Content-Type", "application/json")]
                else:
                    c = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                    c.request(self.command, self.path, body=body or None,
                              headers={k: v for k, v in self.headers.items()
                                       if k.lower() not in ("host", "connection")})
                    resp = c.getresponse()
                    status, data = resp.status, resp.read()
                    headers = [(k, v) for k, v in resp.getheaders()
                               if k.lower() not in ("connection", "content-length",
                                                    "transfer-encoding")]
                    c.close()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            do_GET = do_POST = do_PATCH = do_DELETE = _any

        super().__init__(("127.0.0.1", 0), Handler)
        self.batch_calls = 0


def test_import_falls_back_without_the_batch_route(provd, tmp_path):
    proxy = NoBatchProxy(provd.port)
    t = threading.Thread(target=proxy.serve_forever, daemon=True)
    t.start()
    try:
        path = tmp_path / "old.csv"
        make_bulk(path, "old", 30)
        r = ok(provd, "import", "--progress", str(path), port=proxy.server_address[1])
        notes = [l for l in r.stderr.splitlines() if "no batch route" in l]
        assert len(notes) == 1 and "one create per line" in notes[0], r.stderr
        assert "37 created" in r.stdout, r.stdout
        # one batch tried, the tenants'; then single creates for every kind
        assert proxy.batch_calls == 1
        assert {x["status"] for x in results(str(path) + ".results").values()} == \
            {"created"}
        # --batch 1 never asks
        path2 = tmp_path / "old2.csv"
        make_bulk(path2, "old2", 5)
        r = ok(provd, "import", "--batch", "1", "--progress", str(path2),
               port=proxy.server_address[1])
        assert "no batch route" not in r.stderr and proxy.batch_calls == 1
        assert run(provd, "import", "--batch", "0", str(path2)).returncode == 64
        assert run(provd, "import", "--batch", "1001", str(path2)).returncode == 64
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_import_batch_too_large_is_halved(provd, batch_route, tmp_path):
    """300 lines of 300 bytes are beyond provd_max_body (64k) in one
    request: 413, then halves."""
    path = tmp_path / "big.csv"
    rows = ["kind,id,domain,tenant,address,name",
            "tenant,big,,,,", "domain,,big.example,big,,"]
    rows += ["mailbox,,,,m%03d@big.example,%s" % (i, "N" * 200) for i in range(300)]
    path.write_text("\n".join(rows) + "\n")
    r = ok(provd, "import", "--batch", "300", "--no-progress", str(path))
    assert "302 created" in r.stdout, r.stdout
    assert {x["status"] for x in results(str(path) + ".results").values()} == {"created"}


def test_import_batches_through_a_directory_stall(stack, batch_route, tmp_path):
    """slapd stopped for 3 s in the middle of a batched import, against a
    daemon whose requests give up after 2 s: whole batches answered 503
    and items answered 503 (not written) are sent again; the import ends
    with every line created or existing, each mailbox there once."""
    p = Provd(stack, tmp_path / "provd", overrides=dict(FAST, provd_max_body="64k"))
    try:
        path = tmp_path / "stall.csv"
        make_bulk(path, "stl", 800)
        env = dict(os.environ, TNCTL_API_TOKEN=ADMIN)
        proc = subprocess.Popen(tnctl_cmd(p, "import", "--batch", "50", "--parallel", "4",
                                          "--no-progress", str(path)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(str(path) + ".results") and \
                    sum(1 for _ in open(str(path) + ".results")) >= 150:
                break
            time.sleep(0.01)
        stack.slapd.freeze()
        try:
            time.sleep(3)
        finally:
            stack.slapd.thaw()
        out, err = proc.communicate(timeout=300)
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert proc.returncode == 0, (out, err)
        final = results(str(path) + ".results")
        assert len(final) == 807 and \
            {x["status"] for x in final.values()} <= {"created", "exists"}, out
        got = p.request("GET", "/v1/mailboxes?tenant=stl&limit=1000").json["items"]
        assert sorted(m["address"] for m in got) == \
            ["u%04d@stl.example" % i for i in range(800)]
    finally:
        p.stop()
