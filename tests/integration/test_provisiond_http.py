"""tn-provisiond's HTTP surface beyond the routes (issue 4, section 1),
against real slapd and Redis (tnharness.Stack), over real HTTP.

Checked:
  * Idempotency-Key on POST: a repeat replays the stored reply (status,
    body, ETag, Location, "Idempotent-Replayed: true") and the directory
    and outbox see one write; another body with the key is 422; 20
    concurrent requests with one key make one write (the others replay
    or get 409 with Retry-After); keys are per token; a malformed key is
    400; Redis stopped is 503 with Retry-After and nothing is written,
    Redis back works again; a 5xx is not stored (the retry runs).
  * POST .../restore and .../purge: restore only a deleted object,
    resume only one that is not deleted, purge only after the grace
    period (prov_purge_grace 1s here), 204.
  * 413 from Content-Length alone, promptly, without a body sent; a
    chunked body crossing provd_max_body.
  * 429 with Retry-After per token (provd_rate_limit).
  * HTTPS with a CA made here by openssl; plain HTTP to it fails.
  * A billing token: admin rights, events with actor kind "billing".
"""

import concurrent.futures
import json
import os
import socket
import ssl
import subprocess
import time
from unittest import mock

import pytest

import tnharness as th
from tnprobe import binary
from tnprovd import ACME, ADMIN, BILLING, FAST, Provd


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd"))
    yield p
    p.stop()


def error_of(resp, status, code=None):
    assert resp.status == status, (resp.status, resp.text)
    err = resp.json["error"]
    assert err["status"] == status
    if code is not None:
        assert err["code"] == code, err
    return err


def idem(key):
    return {"Idempotency-Key": key}


def metric(provd, name):
    text = provd.request("GET", "/metrics", token=None).text.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError("%s not in /metrics:\n%s" % (name, text))


# --- Idempotency-Key ------------------------------------------------------------------

def test_replay_returns_the_stored_reply_and_writes_once(provd):
    replays = metric(provd, "tn_provd_idempotent_replays_total")
    first = provd.request("POST", "/v1/tenants", {"id": "idem1", "name": "I"},
                          headers=idem("k-idem1"))
    assert first.status == 201, first.text
    assert first.getheader("Idempotent-Replayed") is None
    for _ in range(2):
        again = provd.request("POST", "/v1/tenants", {"id": "idem1", "name": "I"},
                              headers=idem("k-idem1"))
        assert again.status == 201, again.text
        assert again.getheader("Idempotent-Replayed") == "true"
        assert again.text == first.text
        assert again.getheader("ETag") == first.getheader("ETag")
        assert again.getheader("Location") == first.getheader("Location") == \
            "/v1/tenants/idem1"
    # without the key the same request runs: the tenant exists
    error_of(provd.request("POST", "/v1/tenants", {"id": "idem1", "name": "I"}), 409,
             "conflict")
    assert [e["type"] for e in provd.events("idem1")] == ["tenant.created"]
    assert metric(provd, "tn_provd_idempotent_replays_total") == replays + 2

    # an action: one event, the repeat replays
    r1 = provd.request("POST", "/v1/tenants/idem1/suspend", {"reason": "r"},
                       headers=idem("k-susp"))
    r2 = provd.request("POST", "/v1/tenants/idem1/suspend", {"reason": "r"},
                       headers=idem("k-susp"))
    assert r1.status == r2.status == 200 and r1.text == r2.text, (r1.text, r2.text)
    assert r2.getheader("Idempotent-Replayed") == "true"
    assert [e["type"] for e in provd.events("idem1")] == ["tenant.created",
                                                           "tenant.suspended"]
    # a 4xx is stored as well: the repeat does not reach the directory
    e1 = provd.request("POST", "/v1/tenants", {"id": "BAD id"}, headers=idem("k-bad"))
    e2 = provd.request("POST", "/v1/tenants", {"id": "BAD id"}, headers=idem("k-bad"))
    assert e1.status == e2.status == 400 and e1.text == e2.text
    assert e2.getheader("Idempotent-Replayed") == "true"


def test_same_key_other_request_is_422(provd):
    assert provd.request("POST", "/v1/tenants", {"id": "idem2"},
                         headers=idem("k-idem2")).status == 201
    err = error_of(provd.request("POST", "/v1/tenants", {"id": "idem2b"},
                                 headers=idem("k-idem2")), 422, "idempotency_key_reused")
    assert err["field"] == "Idempotency-Key"
    # the same body on another route is another request too
    error_of(provd.request("POST", "/v1/domains", {"id": "idem2"}, headers=idem("k-idem2")),
             422, "idempotency_key_reused")
    assert provd.request("GET", "/v1/tenants/idem2b").status == 404
    assert len(provd.events("idem2")) == 1


def test_concurrent_requests_with_one_key_write_once(provd):
    assert provd.request("POST", "/v1/tenants", {"id": "idemc"}).status == 201
    assert provd.request("POST", "/v1/domains",
                         {"domain": "idemc.example", "tenant": "idemc"}).status == 201
    body = {"address": "one@idemc.example", "name": "One"}

    def create(_):
        r = provd.request("POST", "/v1/mailboxes", body, headers=idem("k-conc"))
        return r.status, r.getheader("Idempotent-Replayed"), r.getheader("Retry-After"), \
            r.json

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(create, range(20)))
    ran = [r for r in results if r[0] == 201 and r[1] is None]
    replayed = [r for r in results if r[0] == 201 and r[1] == "true"]
    busy = [r for r in results if r[0] == 409]
    assert len(ran) == 1, results
    assert len(ran) + len(replayed) + len(busy) == 20, results
    for r in busy:
        assert r[3]["error"]["code"] == "idempotency_in_progress" and r[2] == "1", r
    for r in replayed:
        assert r[3] == ran[0][3]
    assert [e["type"] for e in provd.events("idemc")].count("mailbox.created") == 1
    # once done, every repeat replays
    r = provd.request("POST", "/v1/mailboxes", body, headers=idem("k-conc"))
    assert r.status == 201 and r.getheader("Idempotent-Replayed") == "true"


def test_keys_are_per_token(provd):
    r = provd.request("POST", "/v1/domains", {"domain": "idemk.acme.example"},
                      headers=idem("shared-key"), token=ACME)
    assert r.status == 201, r.text
    # the admin's key of the same name is another record: it runs
    r = provd.request("POST", "/v1/tenants", {"id": "idemk"}, headers=idem("shared-key"))
    assert r.status == 201 and r.getheader("Idempotent-Replayed") is None, r.text
    # and acme's own repeat replays its own reply, not the admin's
    r = provd.request("POST", "/v1/domains", {"domain": "idemk.acme.example"},
                      headers=idem("shared-key"), token=ACME)
    assert r.status == 201 and r.getheader("Idempotent-Replayed") == "true"
    assert r.json["domain"] == "idemk.acme.example"
    # acme sending the admin's request with that key: acme's record holds
    # another request
    r = provd.request("POST", "/v1/tenants", {"id": "idemk"}, headers=idem("shared-key"),
                      token=ACME)
    error_of(r, 422, "idempotency_key_reused")


def test_malformed_keys_are_400(provd):
    for key in ("x" * 256, '""', '"a"b"', '"a\\b"'):
        err = error_of(provd.request("POST", "/v1/tenants", {"id": "idemm"},
                                     headers=idem(key)), 400, "bad_input")
        assert err["field"] == "Idempotency-Key", err
    assert provd.request("GET", "/v1/tenants/idemm").status == 404
    # 255 characters, and the quoted form of the draft, are keys
    r = provd.request("POST", "/v1/tenants", {"id": "idemm"}, headers=idem("y" * 255))
    assert r.status == 201, r.text
    r = provd.request("POST", "/v1/tenants", {"id": "idemm2"}, headers=idem('"q key 1"'))
    assert r.status == 201, r.text
    r = provd.request("POST", "/v1/tenants", {"id": "idemm2"}, headers=idem("q key 1"))
    assert r.status == 201 and r.getheader("Idempotent-Replayed") == "true", r.text
    # not a POST: the header is ignored
    r = provd.request("GET", "/v1/tenants/idemm", headers=idem("x" * 300))
    assert r.status == 200


def test_redis_down_is_503_and_nothing_runs(workdir):
    stack = th.Stack(workdir / "stack")
    provd = None
    try:
        provd = Provd(stack, workdir, overrides=FAST)
        stack.redis.stop()
        t0 = time.monotonic()
        r = provd.request("POST", "/v1/tenants", {"id": "idemr"}, headers=idem("k-r"),
                          timeout=10)
        assert time.monotonic() - t0 < 3
        error_of(r, 503, "tempfail")
        assert int(r.getheader("Retry-After")) >= 1
        assert provd.request("GET", "/v1/tenants/idemr").status == 404
        assert provd.events("idemr") == []
        # without a key the request does not need Redis
        assert provd.request("POST", "/v1/tenants", {"id": "idemr0"}).status == 201
        stack.redis.start()
        deadline = time.monotonic() + 10
        while True:
            r = provd.request("POST", "/v1/tenants", {"id": "idemr"}, headers=idem("k-r"))
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status == 201 and r.getheader("Idempotent-Replayed") is None, r.text
        r = provd.request("POST", "/v1/tenants", {"id": "idemr"}, headers=idem("k-r"))
        assert r.status == 201 and r.getheader("Idempotent-Replayed") == "true"
        assert len(provd.events("idemr")) == 1

        # a 5xx is not stored: the same key runs again once slapd is back
        stack.slapd.freeze()
        try:
            r = provd.request("POST", "/v1/tenants", {"id": "idemr5"}, headers=idem("k-5"),
                              timeout=10)
            error_of(r, 503, "tempfail")
        finally:
            stack.slapd.thaw()
        deadline = time.monotonic() + 10
        while True:
            r = provd.request("POST", "/v1/tenants", {"id": "idemr5"}, headers=idem("k-5"))
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status == 201 and r.getheader("Idempotent-Replayed") is None, r.text
        # and it is stored now
        r = provd.request("POST", "/v1/tenants", {"id": "idemr5"}, headers=idem("k-5"))
        assert r.getheader("Idempotent-Replayed") == "true"
        keys = stack.redis.cli("--scan", "--pattern", "tn:v1:idem:*").split()
        assert len(keys) == 2 and all(len(k.split(":")) == 5 for k in keys), keys
        ttl = int(stack.redis.cli("PTTL", keys[0]))
        assert 23 * 3600 * 1000 < ttl <= 24 * 3600 * 1000, ttl
    finally:
        stack.slapd.thaw()
        if provd is not None:
            provd.stop()
        stack.stop()


# --- restore, purge -------------------------------------------------------------------

@pytest.fixture(scope="module")
def graced(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("graced"), overrides={"prov_purge_grace": "1s"})
    yield p
    p.stop()


def test_restore_and_purge(graced):
    p = graced
    assert p.request("POST", "/v1/tenants", {"id": "life"}).status == 201
    err = error_of(p.request("POST", "/v1/tenants/life/restore"), 422, "unprocessable")
    assert err["field"] == "status"
    err = error_of(p.request("POST", "/v1/tenants/life/purge"), 422, "unprocessable")
    assert err["field"] == "status"
    assert p.request("DELETE", "/v1/tenants/life").status == 204
    err = error_of(p.request("POST", "/v1/tenants/life/resume"), 422, "unprocessable")
    assert err["field"] == "status" and "restore" in err["message"], err
    r = p.request("POST", "/v1/tenants/life/restore", {"reason": "paid"})
    assert r.status == 200 and r.json["status"] == "active", r.text
    assert r.getheader("ETag")
    assert p.request("POST", "/v1/tenants/life/suspend").status == 200
    error_of(p.request("POST", "/v1/tenants/life/restore"), 422)
    assert p.request("POST", "/v1/tenants/life/resume").json["status"] == "active"
    ev = p.events("life")
    assert [e["type"] for e in ev] == ["tenant.created", "tenant.deleted", "tenant.resumed",
                                       "tenant.suspended", "tenant.resumed"], ev
    assert ev[2]["data"]["previous_status"] == "deleted" and ev[2]["data"]["reason"] == "paid"

    # purge: only once deleted and the grace period is over; 204; no event
    assert p.request("DELETE", "/v1/tenants/life").status == 204
    err = error_of(p.request("POST", "/v1/tenants/life/purge"), 422, "unprocessable")
    assert err["field"] == "purge_after", err
    time.sleep(1.2)
    # after the grace period a restore is refused: purge only
    error_of(p.request("POST", "/v1/tenants/life/restore"), 422, "unprocessable")
    error_of(p.request("POST", "/v1/tenants/life/purge", {"force": True}), 400, "bad_input")
    r = p.request("POST", "/v1/tenants/life/purge", {})
    assert r.status == 204 and r.text == b"", r.text
    error_of(p.request("GET", "/v1/tenants/life"), 404)
    error_of(p.request("POST", "/v1/tenants/life/purge"), 404)
    assert len(p.events("life")) == 6


def test_purge_a_mailbox_and_routes(graced):
    p = graced
    assert p.request("POST", "/v1/tenants", {"id": "lifem"}).status == 201
    assert p.request("POST", "/v1/domains", {"domain": "lifem.example",
                                             "tenant": "lifem"}).status == 201
    assert p.request("POST", "/v1/mailboxes", {"address": "a@lifem.example"}).status == 201
    assert p.request("DELETE", "/v1/mailboxes/a@lifem.example").status == 204
    time.sleep(1.2)
    r = p.request("POST", "/v1/mailboxes/a@lifem.example/purge", headers=idem("k-purge"))
    assert r.status == 204, r.text
    r = p.request("POST", "/v1/mailboxes/a@lifem.example/purge", headers=idem("k-purge"))
    assert r.status == 204 and r.getheader("Idempotent-Replayed") == "true"
    error_of(p.request("GET", "/v1/mailboxes/a@lifem.example"), 404)
    for action in ("restore", "purge"):
        r = p.request("GET", "/v1/tenants/lifem/" + action)
        error_of(r, 405, "method_not_allowed")
        assert r.getheader("Allow") == "POST"
    # a tenant token: other tenants' objects do not exist
    error_of(p.request("POST", "/v1/tenants/lifem/restore", token=ACME), 404)


# --- 413 ------------------------------------------------------------------------------

def raw_request(port, head, body=b"", timeout=5):
    """Sends head (+ body) on a plain socket; returns what comes back
    until the server closes or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head + body)
        data = b""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and b"too_large" in data:
                break
        return data
    finally:
        s.close()


def test_content_length_beyond_max_body_is_413_at_once(provd):
    head = ("POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
            % ADMIN).encode()
    t0 = time.monotonic()
    data = raw_request(provd.port, head)
    assert time.monotonic() - t0 < 2, data
    assert data.startswith(b"HTTP/1.1 413"), data
    assert b'"code":"too_large"' in data
    # without a token too: the body is never read
    data = raw_request(provd.port, head.replace(ADMIN.encode(), b"nope"))
    assert data.startswith(b"HTTP/1.1 413"), data
    assert provd.request("GET", "/v1/tenants/acme").status == 200


def test_chunked_body_crossing_max_body(provd):
    """No length to refuse early: a chunked body past provd_max_body (4k)
    is discarded and answered 413 at its end; one going on past twice the
    limit has its connection closed at once, never a hang."""
    head = ("POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            % ADMIN).encode()
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    data = raw_request(provd.port, head, chunk * 6 + b"0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413"), data
    t0 = time.monotonic()
    try:
        data = raw_request(provd.port, head, chunk * 64, timeout=10)   # no final chunk
    except (BrokenPipeError, ConnectionResetError):
        data = b""
    assert time.monotonic() - t0 < 3
    assert data == b"", data
    assert provd.request("GET", "/v1/tenants/acme").status == 200


# --- 429 ------------------------------------------------------------------------------

def test_rate_limit_is_429_per_token(stack, tmp_path):
    p = Provd(stack, tmp_path, overrides={"provd_rate_limit": "1", "provd_rate_burst": "3"})
    try:
        statuses = [p.request("GET", "/v1/tenants/acme").status for _ in range(3)]
        assert statuses == [200] * 3
        r = p.request("GET", "/v1/tenants/acme")
        err = error_of(r, 429, "rate_limited")
        assert int(r.getheader("Retry-After")) >= 1, err
        # another token has a bucket of its own
        assert p.request("GET", "/v1/tenants/acme", token=ACME).status == 200
        # a POST is limited before its Idempotency-Key is looked at
        error_of(p.request("POST", "/v1/tenants", {"id": "rl"}, headers=idem("k")), 429)
        assert metric(p, "tn_provd_rate_limited_total") == 2
        assert 'tn_provd_responses_total{code="429"} 2' in \
            p.request("GET", "/metrics", token=None).text.decode()
        time.sleep(int(r.getheader("Retry-After")))
        assert p.request("GET", "/v1/tenants/acme").status == 200
    finally:
        p.stop()


# --- TLS ------------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d):
    d = str(d)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=tenantmail test CA", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
            cwd=d)
    os.chmod(os.path.join(d, "server.key"), 0o600)
    return tuple(os.path.join(d, n) for n in ("server.pem", "server.key", "ca.pem"))


def test_tls(stack, tmp_path):
    tls = make_ca(tmp_path)
    p = Provd(stack, tmp_path, tls=tls)
    try:
        r = p.request("GET", "/v1/tenants/acme")
        assert r.status == 200 and r.json["id"] == "acme"
        r = p.request("POST", "/v1/tenants", {"id": "tlst"}, headers=idem("k-tls"))
        assert r.status == 201, r.text
        # plain HTTP to the HTTPS port gets no HTTP answer
        try:
            data = raw_request(p.port, b"GET /v1/tenants/acme HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: Bearer " + ADMIN.encode() + b"\r\n\r\n",
                               timeout=3)
        except OSError:
            data = b""
        assert not data.startswith(b"HTTP/"), data
        # a client that does not trust the CA refuses the server
        ctx = ssl.create_default_context()
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
                ctx.wrap_socket(s, server_hostname="127.0.0.1")
        # tnctl over HTTPS: with tnctl_api_ca_file it reads and writes ...
        url = "https://127.0.0.1:%d" % p.port
        r = tnctl_api(stack, url, "tenant", "get", "tlst", "--json", ca=tls[2])
        assert r.returncode == 0 and json.loads(r.stdout)["id"] == "tlst", r.stderr
        r = tnctl_api(stack, url, "tenant", "update", "tlst", "--name", "Over TLS",
                      ca=tls[2])
        assert r.returncode == 0, r.stderr
        assert p.request("GET", "/v1/tenants/tlst").json["name"] == "Over TLS"
        # ... without it (the system's CAs), with a CA that is not the
        # server's, or a CA file that cannot be read: a TLS failure, 78
        # (tnctl(1) EXIT STATUS), never sent
        (tmp_path / "other").mkdir()
        other = make_ca(tmp_path / "other")
        for ca in (None, other[2], str(tmp_path / "no-such-ca.pem")):
            r = tnctl_api(stack, url, "tenant", "update", "tlst", "--name", "Not sent",
                          ca=ca)
            assert r.returncode == 78, (ca, r.returncode, r.stderr)
            assert "tnctl: tenant update tlst: " in r.stderr and "TLS" in r.stderr, r.stderr
        assert p.request("GET", "/v1/tenants/tlst").json["name"] == "Over TLS"
        # import and sync too: a TLS failure stops them at once (78), not
        # after retries as for no answer; with the CA the import resumes
        feed = tmp_path / "tls.csv"
        feed.write_text("kind,id,name\ntenant,tlsi1,One\ntenant,tlsi2,Two\n")
        r = tnctl_api(stack, url, "import", "--no-progress", str(feed))
        assert r.returncode == 78 and "TLS failure" in r.stderr and "--resume" in r.stderr, \
            (r.returncode, r.stderr)
        r = tnctl_api(stack, url, "import", "--no-progress", "--resume", str(feed), ca=tls[2])
        assert r.returncode == 0 and ": 2 created" in r.stdout, (r.stdout, r.stderr)
        r = tnctl_api(stack, url, "sync", "--kind", "tenant", "--ignore-missing", str(feed))
        assert r.returncode == 78 and "TLS failure" in r.stderr, (r.returncode, r.stderr)
        # plain http:// to the HTTPS listener: no HTTP answer, a temporary failure
        r = tnctl_api(stack, "http://127.0.0.1:%d" % p.port, "tenant", "get", "tlst")
        assert r.returncode == 75, (r.returncode, r.stderr)
    finally:
        p.stop()


def tnctl_api(stack, url, *args, ca=None):
    cmd = [binary("provisioning/tnctl"), "-c", stack.conf, "-o", "tnctl_api_url=" + url,
           "-o", "tnctl_api_timeout=10s"]
    if ca is not None:
        cmd += ["-o", "tnctl_api_ca_file=" + ca]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TNCTL_API_TOKEN=ADMIN), stdin=subprocess.DEVNULL)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def test_tls_configuration_errors(provd, tmp_path):
    exe = binary("provisioning/tn-provisiond")
    tls = make_ca(tmp_path)

    def run(*opts):
        args = [exe, "-c", provd.conf, "-e", "-o", "provd_listen=127.0.0.1:%d" % th.free_port()]
        for o in opts:
            args += ["-o", o]
        return subprocess.run(args, capture_output=True, text=True, timeout=30)

    r = run("provd_tls_cert_file=%s" % tls[0])
    assert r.returncode == 78 and "together" in r.stderr, r.stderr
    r = run("provd_tls_cert_file=%s" % tls[0], "provd_tls_key_file=%s" % (tls[1] + ".no"))
    assert r.returncode == 78 and "provd_tls_key_file" in r.stderr, r.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    r = run("provd_tls_cert_file=%s" % bad, "provd_tls_key_file=%s" % tls[1])
    assert r.returncode == 69, (r.returncode, r.stderr)


def test_plain_http_beyond_loopback_is_refused(provd, stack, tmp_path):
    """Without TLS, a listener that is not loopback is refused (78) unless
    provd_allow_plain_http = yes, which starts it with a warning; with
    TLS, or on any 127.x or ::1 address, nothing is said."""
    exe = binary("provisioning/tn-provisiond")

    def run(listen, *opts):
        args = [exe, "-c", provd.conf, "-e", "-o", "provd_listen=%s" % listen]
        for o in opts:
            args += ["-o", o]
        return subprocess.run(args, capture_output=True, text=True, timeout=30)

    for listen in ("0.0.0.0:%d" % th.free_port(), "[::]:%d" % th.free_port()):
        r = run(listen)
        assert r.returncode == 78, (listen, r.returncode, r.stderr)
        assert "not a loopback address and TLS is off" in r.stderr and \
            "provd_allow_plain_http" in r.stderr, r.stderr
    # allowed: it serves, and says so at start
    port = th.free_port()
    with mock.patch.object(th, "free_port", return_value=port):
        p = Provd(stack, tmp_path / "plain", overrides={"provd_listen": "0.0.0.0:%d" % port,
                                                        "provd_allow_plain_http": "yes"})
    try:
        assert p.request("GET", "/v1/tenants/acme").status == 200
    finally:
        log = p.stop()
    assert "warning" in log and "not a loopback address and TLS is off" in log, log
    # TLS on any address: no warning
    tls = make_ca(tmp_path)
    port = th.free_port()
    with mock.patch.object(th, "free_port", return_value=port):
        p = Provd(stack, tmp_path / "tls", tls=tls,
                  overrides={"provd_listen": "0.0.0.0:%d" % port})
    try:
        assert p.request("GET", "/v1/tenants/acme").status == 200
    finally:
        log = p.stop()
    assert "loopback" not in log and "started: listening on 0.0.0.0" in log, log
    # plain HTTP on any loopback address: no warning
    for listen in ("127.0.0.2:%d" % th.free_port(), "[::1]:%d" % th.free_port()):
        proc = subprocess.Popen([exe, "-c", provd.conf, "-e", "-o", "provd_listen=" + listen],
                                stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if "started:" in line:
                    break
        finally:
            proc.terminate()
            proc.wait(10)
        assert "started: listening on " + listen in "".join(lines), lines
        assert "loopback" not in "".join(lines), lines


# --- billing ---------------------------------------------------------------------------

def test_billing_token(provd):
    r = provd.request("POST", "/v1/tenants", {"id": "billt"}, token=BILLING)
    assert r.status == 201, r.text
    assert provd.request("POST", "/v1/tenants/billt/suspend", {"reason": "unpaid"},
                         token=BILLING).status == 200
    ev = provd.events("billt")
    assert [e["data"]["actor"] for e in ev] == [{"kind": "billing", "id": "billing"}] * 2, ev
    # admin rights: every tenant
    r = provd.request("GET", "/v1/tenants?limit=500", token=BILLING)
    assert {"acme", "billt"} <= {t["id"] for t in r.json["items"]}
    # the admin's events stay admin's
    assert provd.request("POST", "/v1/tenants/billt/resume").status == 200
    assert provd.events("billt")[-1]["data"]["actor"] == {"kind": "admin",
                                                           "id": "tn-provisiond"}


# --- documentation ----------------------------------------------------------------------

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def test_every_provd_parameter_is_documented():
    """tn_provd_params (read from the source: no program prints the table)
    against tn-provisiond(8) PARAMETERS (name and default) and the
    parameter table of docs/provisioning.md, both ways."""
    import re
    with open(os.path.join(TOP, "provisioning", "tn-provisiond.c")) as f:
        src = f.read()
    table = re.search(r"tn_provd_params\[\]\s*=\s*\{(.*?)TN_CONF_END", src, re.S).group(1)
    params = re.findall(r'\{\s*"(\w+)",\s*TN_CONF_\w+,\s*"([^"]*)"', table)
    assert len(params) >= 12, params
    with open(os.path.join(TOP, "man", "tn-provisiond.8")) as f:
        man = f.read()
    with open(os.path.join(TOP, "docs", "provisioning.md")) as f:
        md = f.read()
    problems = []
    for name, default in params:
        entry = ('.BR %s " (default: empty)"' % name if default == "" else
                 '.BR %s " (default: " %s )' % (name, default))
        if entry not in man:
            problems.append("tn-provisiond.8 lacks %r" % entry)
        if "| `%s` |" % name not in md:
            problems.append("docs/provisioning.md lacks a row for %s" % name)
    # and the other way: nothing documented that the code does not have
    names = {n for n, _ in params}
    for name in re.findall(r'^\.BR (provd_\w+) " \(default:', man, re.M):
        if name not in names:
            problems.append("tn-provisiond.8 documents %s, which the code lacks" % name)
    for name in re.findall(r"^\| `(provd_\w+)` \|", md, re.M):
        if name not in names:
            problems.append("docs/provisioning.md documents %s, which the code lacks" % name)
    assert not problems, "\n".join(problems)
