"""tn-provisiond, the REST API over the provisioning core, against real
slapd and Redis (tnharness.Stack), over real HTTP (http.client).

The daemon runs with a [tn-provisiond] section holding the provisioning
account, an outbox, a listener on a free port and a tokens file with an
admin token and one for tenant "acme" (of the example DIT).

Checked: a tenant's lifecycle (create, get, list, patch with If-Match,
suspend, resume, delete) with the admin token, each write seen at once by
`tnctl lookup --tenant` and recorded in the outbox; domains, mailboxes
and aliases through the same routes; 401 without or with a bad token; a
tenant token cannot see another tenant (404) nor create one (403);
malformed JSON, unknown fields and wrong types are 400 naming the
problem; oversized bodies 413; unknown routes 404, wrong methods 405; a
stale If-Match 412; slapd frozen: 503 with Retry-After within the
deadline; /metrics.
"""

import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

import tnharness as th
from tnprobe import binary, tnctl
from tnprovd import ACME, FAST, Provd


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd"))
    yield p
    p.stop()


def lookup(stack, name, *opts):
    r = tnctl(stack.conf, "lookup", "--json", *opts, name)
    return json.loads(r.stdout)


def error_of(resp, status, code=None):
    assert resp.status == status, (resp.status, resp.text)
    err = resp.json["error"]
    assert err["status"] == status
    if code is not None:
        assert err["code"] == code, err
    return err


def test_tenant_lifecycle(stack, provd):
    assert lookup(stack, "rest", "--tenant")["result"] == "notfound"
    r = provd.request("POST", "/v1/tenants", {"id": "rest", "name": "Rest Co"})
    assert r.status == 201, r.text
    assert r.getheader("Location") == "/v1/tenants/rest"
    etag = r.getheader("ETag")
    assert etag and etag.startswith('"')
    assert r.json["id"] == "rest" and r.json["status"] == "active"
    assert lookup(stack, "rest", "--tenant")["result"] == "found"

    r = provd.request("GET", "/v1/tenants/rest")
    assert r.status == 200 and r.getheader("ETag") == etag and r.json["name"] == "Rest Co"

    r = provd.request("GET", "/v1/tenants?limit=500")
    assert r.status == 200, r.text
    assert "rest" in [t["id"] for t in r.json["items"]]
    r = provd.request("GET", "/v1/tenants?limit=1")
    assert r.status == 200 and len(r.json["items"]) == 1 and r.json["next_cursor"]
    r2 = provd.request("GET", "/v1/tenants?limit=1&cursor=" + r.json["next_cursor"])
    assert r2.status == 200 and r2.json["items"][0]["id"] != r.json["items"][0]["id"]

    # PATCH with If-Match; the old ETag is then stale
    r = provd.request("PATCH", "/v1/tenants/rest", {"name": "Rest & Co"},
                      headers={"If-Match": etag})
    assert r.status == 200, r.text
    assert r.json["name"] == "Rest & Co" and r.getheader("ETag") != etag
    r = provd.request("PATCH", "/v1/tenants/rest", {"name": "Stale"},
                      headers={"If-Match": etag})
    error_of(r, 412, "precondition_failed")
    assert provd.request("GET", "/v1/tenants/rest").json["name"] == "Rest & Co"
    r = provd.request("PATCH", "/v1/tenants/rest", {"description": "any version"},
                      headers={"If-Match": "*"})
    assert r.status == 200, r.text

    r = provd.request("POST", "/v1/tenants/rest/suspend", {"reason": "unpaid"})
    assert r.status == 200 and r.json["status"] == "suspended", r.text
    t = lookup(stack, "rest", "--tenant")
    assert t["result"] == "found" and "suspended" in json.dumps(t), t
    r = provd.request("GET", "/v1/tenants?status=suspended&limit=500")
    assert "rest" in [x["id"] for x in r.json["items"]]
    r = provd.request("POST", "/v1/tenants/rest/resume")
    assert r.status == 200 and r.json["status"] == "active", r.text
    assert "suspended" not in json.dumps(lookup(stack, "rest", "--tenant"))

    r = provd.request("DELETE", "/v1/tenants/rest")
    assert r.status == 204 and r.text == b""
    assert provd.request("GET", "/v1/tenants/rest").json["status"] == "deleted"
    t = lookup(stack, "rest", "--tenant")
    assert t["result"] == "found" and '"deleted"' in json.dumps(t), t

    # one event per write (the stale PATCH wrote nothing)
    types = [e["type"] for e in provd.events("rest")]
    assert types == ["tenant.created", "tenant.updated", "tenant.updated",
                     "tenant.suspended", "tenant.resumed", "tenant.deleted"], types
    assert [e["sequence"] for e in provd.events("rest")] == list(range(1, 7))
    assert all(e["data"]["actor"] == {"kind": "admin", "id": "tn-provisiond"}
               for e in provd.events("rest")), \
        provd.events("rest")


def test_domain_mailbox_alias(stack, provd):
    assert provd.request("POST", "/v1/tenants", {"id": "restm"}).status == 201
    r = provd.request("POST", "/v1/domains", {"domain": "restm.example", "tenant": "restm"})
    assert r.status == 201 and r.getheader("Location") == "/v1/domains/restm.example", r.text
    assert lookup(stack, "restm.example", "--domain")["result"] == "found"
    r = provd.request("POST", "/v1/mailboxes", {"address": "ann@restm.example"})
    assert r.status == 201, r.text
    assert r.getheader("Location") == "/v1/mailboxes/ann@restm.example"
    assert lookup(stack, "ann@restm.example")["result"] == "found"
    r = provd.request("POST", "/v1/aliases", {"address": "sales@restm.example",
                                              "targets": ["ann@restm.example"]})
    assert r.status == 201, r.text
    assert r.getheader("Location") == "/v1/aliases/sales@restm.example"
    r = provd.request("GET", "/v1/aliases/sales@restm.example")
    assert r.status == 200 and r.json["targets"] == ["ann@restm.example"], r.text
    # a mailbox for a domain nobody has
    r = provd.request("POST", "/v1/mailboxes", {"address": "bob@nowhere.example"})
    assert r.status in (404, 422), r.text
    # acme's token: restm's objects do not exist for it
    for path in ("/v1/domains/restm.example", "/v1/mailboxes/ann@restm.example",
                 "/v1/aliases/sales@restm.example"):
        error_of(provd.request("GET", path, token=ACME), 404, "not_found")
    r = provd.request("GET", "/v1/mailboxes?tenant=restm", token=ACME)
    assert r.status != 200 or r.json["items"] == [], r.text
    r = provd.request("GET", "/v1/domains", token=ACME)
    assert r.status == 200 and r.json["items"], r.text
    assert {d["tenant"] for d in r.json["items"]} == {"acme"}, r.text
    r = provd.request("GET", "/v1/mailboxes?tenant=restm")
    assert [m["address"] for m in r.json["items"]] == ["ann@restm.example"]
    r = provd.request("POST", "/v1/mailboxes/ann@restm.example/suspend", {"reason": "x"})
    assert r.status == 200 and r.json["status"] == "suspended"
    assert lookup(stack, "ann@restm.example")["account"]["status"] == "suspended"
    assert provd.request("DELETE", "/v1/mailboxes/ann@restm.example").status == 204
    assert lookup(stack, "ann@restm.example")["account"]["status"] == "deleted"
    r = provd.request("POST", "/v1/domains", {"domain": "restm.example", "tenant": "restm"})
    error_of(r, 409, "conflict")


def test_concurrent_requests(provd):
    """One connection thread each, one core: parallel creates of distinct
    addresses all land; of one address, exactly one does."""
    assert provd.request("POST", "/v1/tenants", {"id": "restc"}).status == 201
    assert provd.request("POST", "/v1/domains",
                         {"domain": "restc.example", "tenant": "restc"}).status == 201

    def create(addr):
        return provd.request("POST", "/v1/mailboxes", {"address": addr}).status

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        distinct = list(ex.map(create, ["u%d@restc.example" % i for i in range(16)]))
        same = list(ex.map(create, ["same@restc.example"] * 16))
    assert distinct == [201] * 16
    assert sorted(same) == [201] + [409] * 15, same
    r = provd.request("GET", "/v1/mailboxes?tenant=restc&limit=100")
    assert len(r.json["items"]) == 17
    assert len(provd.events("restc")) == 2 + 17


def test_plan_limit_is_422(provd):
    assert provd.request("POST", "/v1/tenants", {"id": "restl", "max_mailboxes": 1}).status == 201
    assert provd.request("POST", "/v1/domains",
                         {"domain": "restl.example", "tenant": "restl"}).status == 201
    assert provd.request("POST", "/v1/mailboxes", {"address": "a@restl.example"}).status == 201
    error_of(provd.request("POST", "/v1/mailboxes", {"address": "b@restl.example"}), 422,
             "unprocessable")


def test_options_and_exit_statuses(provd, tmp_path):
    exe = binary("provisioning/tn-provisiond")

    def run(*args):
        return subprocess.run([exe, "-c", provd.conf] + list(args), capture_output=True,
                              text=True, timeout=30)

    r = run("-n")
    assert r.returncode == 0 and "provd_listen = 127.0.0.1:%d" % provd.port in r.stdout
    assert run("-o", "provd_max_body=lots", "-n").returncode == 78
    assert run("-x").returncode == 64
    assert run("extra").returncode == 64
    # the port is taken by the running daemon
    assert run("-o", "provd_user=").returncode == 69
    bad = tmp_path / "tokens"
    bad.write_text("not-a-digest admin\n")
    r = run("-o", "provd_tokens_file=%s" % bad, "-e")
    assert r.returncode == 78 and "expected" in r.stderr, r.stderr


def test_auth(provd):
    for token in (None, "wrong", ""):
        r = provd.request("GET", "/v1/tenants", token=token)
        error_of(r, 401)
        assert r.getheader("WWW-Authenticate").startswith("Bearer")
    r = provd.request("GET", "/v1/tenants/acme", headers={"Authorization": "Basic eDp5"},
                      token=None)
    error_of(r, 401)
    # acme's token: its own tenant only
    r = provd.request("GET", "/v1/tenants/acme", token=ACME)
    assert r.status == 200 and r.json["id"] == "acme", r.text
    assert provd.request("POST", "/v1/tenants", {"id": "restx"}).status == 201
    error_of(provd.request("GET", "/v1/tenants/restx", token=ACME), 404, "not_found")
    error_of(provd.request("PATCH", "/v1/tenants/restx", {"name": "x"}, token=ACME), 404)
    error_of(provd.request("DELETE", "/v1/tenants/restx", token=ACME), 404)
    error_of(provd.request("POST", "/v1/tenants", {"id": "acme2"}, token=ACME), 403,
             "forbidden")
    r = provd.request("GET", "/v1/tenants?limit=500", token=ACME)
    assert [t["id"] for t in r.json["items"]] == ["acme"], r.text


def test_bad_requests(provd):
    err = error_of(provd.request("POST", "/v1/tenants", raw='{"id": "x",'), 400,
                   "bad_input")
    assert "malformed JSON" in err["message"], err
    err = error_of(provd.request("POST", "/v1/tenants", raw='["x"]'), 400)
    assert "object" in err["message"]
    err = error_of(provd.request("POST", "/v1/tenants", raw='{"id":"a","id":"b"}'), 400)
    assert "duplicate" in err["message"], err
    err = error_of(provd.request("POST", "/v1/tenants", {"id": "restb", "colour": "red"}),
                   400, "bad_input")
    assert err.get("field") == "colour", err
    err = error_of(provd.request("POST", "/v1/tenants", {"id": "restb",
                                                         "max_mailboxes": "many"}), 400)
    assert err.get("field") == "max_mailboxes", err
    error_of(provd.request("POST", "/v1/tenants/acme/suspend", {"reasons": "x"}), 400)
    err = error_of(provd.request("GET", "/v1/tenants?limit=abc"), 400)
    assert err["field"] == "limit"
    error_of(provd.request("POST", "/v1/tenants", raw='{"name": "%s"}' % ("x" * 5000)),
             413)
    error_of(provd.request("GET", "/v1/nothing"), 404)
    error_of(provd.request("GET", "/v1/tenants/acme/explode"), 404)
    error_of(provd.request("GET", "/v2/tenants"), 404)
    for method, path, allow in (("PUT", "/v1/tenants/acme", "GET, PATCH, DELETE"),
                                ("DELETE", "/v1/tenants", "GET, POST"),
                                ("GET", "/v1/tenants/acme/suspend", "POST")):
        r = provd.request(method, path)
        error_of(r, 405, "method_not_allowed")
        assert r.getheader("Allow") == allow
    error_of(provd.request("GET", "/v1/tenants/no-such-tenant"), 404, "not_found")
    # an escaped NUL never cuts a key short
    r = provd.request("GET", "/v1/tenants/acme%00x")
    assert r.status in (400, 404), r.text
    r = provd.request("GET", "/v1/tenants/ac%6De")
    assert r.status == 200 and r.json["id"] == "acme"
    # still serving
    assert provd.request("GET", "/v1/tenants/acme").status == 200


def test_sighup_reloads_tokens(provd):
    with open(provd.tokens) as f:
        old = f.read()
    try:
        with open(provd.tokens, "w") as f:
            f.write("%s admin\n" % hashlib.sha256(b"rotated-token").hexdigest())
        provd.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while provd.request("GET", "/v1/tenants/acme", token="rotated-token").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        error_of(provd.request("GET", "/v1/tenants/acme"), 401)
        # a broken file leaves the tokens in force
        with open(provd.tokens, "w") as f:
            f.write("garbage\n")
        provd.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert provd.request("GET", "/v1/tenants/acme", token="rotated-token").status == 200
    finally:
        with open(provd.tokens, "w") as f:
            f.write(old)
        provd.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while provd.request("GET", "/v1/tenants/acme").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_switches_to_provd_user(stack):
    """Started as root with provd_user = nobody: after the listener is up
    the daemon runs as nobody in all four Uid fields (no way back), its
    first directory write and event work (the bind and Redis passwords
    were read before the switch, the outbox is group-writable as the
    install step makes it), and a SIGHUP still reloads the tokens file,
    readable by nobody's group."""
    import pwd
    import tempfile
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="tn-provd-user-")
    p = None
    try:
        os.chmod(top, 0o755)
        work = os.path.join(top, "w")
        os.makedirs(os.path.join(work, "outbox"))
        for d in ("outbox", "outbox/tmp", "outbox/new", "outbox/seq"):   # the install step
            path = os.path.join(work, d)
            os.makedirs(path, exist_ok=True)
            os.chown(path, 0, nobody.pw_gid)
            os.chmod(path, 0o2770)
        os.chmod(work, 0o755)
        p = Provd(stack, work, overrides={"provd_user": "nobody"})
        os.chown(p.tokens, 0, nobody.pw_gid)
        os.chmod(p.tokens, 0o640)
        # the port opens before the switch; "started" is logged after it
        deadline = time.monotonic() + 10
        while "started:" not in open(os.path.join(work, "provd.log")).read():
            assert time.monotonic() < deadline and p.proc.poll() is None, "not started"
            time.sleep(0.02)
        with open("/proc/%d/status" % p.proc.pid) as f:
            ids = dict(line.split(":", 1) for line in f if ":" in line)
        assert ids["Uid"].split() == [str(nobody.pw_uid)] * 4, ids["Uid"]
        assert ids["Gid"].split() == [str(nobody.pw_gid)] * 4, ids["Gid"]
        # a write and its event, as nobody
        r = p.request("POST", "/v1/tenants", {"id": "asnobody", "name": "As nobody"})
        assert r.status == 201, r.text
        ev = p.events("asnobody")
        assert [e["type"] for e in ev] == ["tenant.created"], ev
        assert p.request("POST", "/v1/domains", {"domain": "asnobody.example",
                                                 "tenant": "asnobody"}).status == 201
        assert p.request("POST", "/v1/mailboxes", {"address": "a@asnobody.example",
                                                   "password": "pw-as-nobody"}).status == 201
        assert [e["type"] for e in p.events("asnobody")] == \
            ["tenant.created", "domain.created", "mailbox.created"]
        # SIGHUP reloads the tokens as nobody
        with open(p.tokens, "a") as f:
            f.write("%s admin\n" % hashlib.sha256(b"after-the-drop").hexdigest())
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while p.request("GET", "/v1/tenants/acme", token="after-the-drop").status != 200:
            assert time.monotonic() < deadline, "the token added after the drop is refused"
            time.sleep(0.05)
        r = p.request("POST", "/v1/tenants/asnobody/suspend", {"reason": "x"},
                      token="after-the-drop")
        assert r.status == 200, r.text
        assert p.events("asnobody")[-1]["type"] == "tenant.suspended"
        p.request("DELETE", "/v1/mailboxes/a@asnobody.example")
    finally:
        if p is not None:
            log = p.stop()
            assert "SIGHUP: 4 tokens loaded" in log, log
            assert "unusable" not in log and "cannot" not in log, log
        subprocess.run(["rm", "-rf", top])


def test_metrics(provd):
    provd.request("GET", "/v1/tenants/acme")
    r = provd.request("GET", "/metrics", token=None)
    assert r.status == 200
    assert b'tn_provd_responses_total{code="200"}' in r.text


@pytest.mark.parametrize("how", ["freeze", "kill"])
def test_directory_down_is_503_with_retry_after(workdir, how):
    """slapd frozen (accepts, never answers) or killed (refuses at once):
    every route answers 503 + Retry-After within the deadline, nothing is
    written (no event, no object), and the daemon recovers by itself once
    slapd answers again (thawed, or started again on the same data)."""
    stack = th.Stack(workdir / "stack")
    provd = None
    try:
        provd = Provd(stack, workdir, overrides=FAST)
        assert provd.request("POST", "/v1/tenants", {"id": "frz"}).status == 201
        n = len(provd.events("frz"))
        if how == "freeze":
            stack.slapd.freeze()
        else:
            stack.slapd.kill()
        for method, path, body in (("GET", "/v1/tenants/frz", None),
                                   ("POST", "/v1/tenants", {"id": "frz2"}),
                                   ("PATCH", "/v1/tenants/frz", {"name": "x"}),
                                   ("POST", "/v1/tenants/frz/suspend", None),
                                   ("POST", "/v1/batch/tenants", {"items": [{"id": "frz3"}]}),
                                   ("GET", "/v1/tenants", None)):
            t0 = time.monotonic()
            r = provd.request(method, path, body, timeout=10)
            assert time.monotonic() - t0 < 2.5 + 0.5, (method, path)
            err = error_of(r, 503, "tempfail")
            assert err["message"].startswith("directory"), err
            assert int(r.getheader("Retry-After")) > 0
        if how == "freeze":
            stack.slapd.thaw()
        else:
            stack.slapd.start()
        assert len(provd.events("frz")) == n
        deadline = time.monotonic() + 10
        while provd.request("GET", "/v1/tenants/frz").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = provd.request("GET", "/v1/tenants/frz")
        assert r.json["name"] is None and r.json["status"] == "active", r.text
        for tid in ("frz2", "frz3"):
            assert provd.request("GET", "/v1/tenants/" + tid).status == 404
        assert provd.request("POST", "/v1/tenants", {"id": "frz2"}).status == 201
    finally:
        if how == "freeze":
            stack.slapd.thaw()
        if provd is not None:
            provd.stop()
        stack.stop()
