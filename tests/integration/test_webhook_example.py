"""examples/webhook-receiver.py, the integrator's starting point, does what
docs/events.md and docs/billing.md ask of a receiver.

The receiver runs as a real process on 127.0.0.1 (a free port it picks and
logs); the requests are built and signed here with Python's hmac, the way
tn-hookd signs them (Standard Webhooks), including the test vector of
docs/events.md read from the document itself, so the document, the example
and lib/tn-webhook (its unit test pins the same vector) cannot drift apart.

Checked: a good signature gets 200 and the event is stored; a duplicate
gets 200 and is processed once; a bad signature and a stale or future
timestamp get 401 and store nothing; rotation; gaps and late events per
(tenant, origin) are logged and recorded. Standard library only; needs no
root and no server besides the receiver.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
RECEIVER = os.path.join(TOP, "examples", "webhook-receiver.py")
EVENTS_MD = os.path.join(TOP, "docs", "events.md")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

OLD = "whsec_" + base64.b64encode(b"the old receiver test secret").decode()
NEW = "whsec_" + base64.b64encode(b"the new receiver test secret, longer").decode()
OTHER = "whsec_" + base64.b64encode(b"a secret nobody configured").decode()


# --- the test vector of docs/events.md --------------------------------------

def docs_vector():
    """(secret, headers, body) of the request in "The HTTP request"."""
    text = open(EVENTS_MD, encoding="utf-8").read()
    section = text[text.index("### The HTTP request"):]
    block = section.split("```")[1]
    head, body = block.strip("\n").split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    secret = re.search(r"Its secret is\s+`(whsec_[A-Za-z0-9+/=]+)`", section).group(1)
    return secret, headers, body.encode()


# --- signing and sending, as tn-hookd does -----------------------------------

def sign(secrets, msg_id, ts, body):
    out = []
    for s in secrets:
        key = base64.b64decode(s[len("whsec_"):])
        mac = hmac.new(key, ("%s.%s." % (msg_id, ts)).encode() + body, hashlib.sha256)
        out.append("v1," + base64.b64encode(mac.digest()).decode())
    return " ".join(out)


def envelope(tenant, sequence, origin=None, etype="mailbox.updated"):
    ev = {"id": str(uuid.uuid4()), "type": etype,
          "occurred_at": "2026-03-02T09:31:17.245Z", "tenant": tenant,
          "sequence": sequence}
    if origin is not None:
        ev["origin"] = origin
    ev["data"] = {"address": "alice@%s.example" % tenant}
    return ev["id"], json.dumps(ev, separators=(",", ":")).encode()


def post(port, body, headers, path="/hooks/tenantmail"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body,
                     headers=dict(headers, **{"Content-Type": "application/json"}))
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def deliver(port, secrets, msg_id, body, ts=None):
    ts = str(int(time.time()) if ts is None else ts)
    return post(port, body, {"webhook-id": msg_id, "webhook-timestamp": ts,
                             "webhook-signature": sign(secrets, msg_id, ts, body)})


# --- the receiver process ------------------------------------------------------

class Receiver:
    def __init__(self, tmp_path, secrets_env, args=()):
        self.db = str(tmp_path / "events.sqlite3")
        self.logfile = str(tmp_path / "receiver.log")
        env = dict(os.environ, WEBHOOK_SECRETS=secrets_env)
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, RECEIVER, "--port", "0", "--db", self.db] + list(args),
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        m = self.wait_log(r"listening on 127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))

    def log(self):
        with open(self.logfile, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("receiver log never matched %r:\n%s"
                                     % (pattern, self.log()))
            time.sleep(0.05)

    def query(self, sql, *args):
        db = sqlite3.connect(self.db, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def wait_processed(self, msg_id, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query("SELECT 1 FROM events WHERE id = ? AND processed_at"
                          " IS NOT NULL", msg_id):
                return
            time.sleep(0.05)
        raise AssertionError("%s never processed:\n%s" % (msg_id, self.log()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start(tmp_path):
    started = []

    def _start(secrets_env, *args):
        d = tmp_path / ("receiver%d" % len(started))
        d.mkdir()
        r = Receiver(d, secrets_env, args)
        started.append(r)
        return r

    yield _start
    for r in started:
        r.stop()


# --- the tests -----------------------------------------------------------------

def test_docs_vector_is_accepted_and_stored(start):
    secret, headers, body = docs_vector()
    assert len(body) == int(headers["Content-Length"])
    # the vector signs as documented, here as in lib/tn-webhook
    assert sign([secret], headers["webhook-id"], headers["webhook-timestamp"],
                body) == headers["webhook-signature"]
    r = start(secret, "--tolerance", "0")      # the vector's time is fixed
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    status, _ = post(r.port, body, {k: headers[k] for k in wanted})
    assert status == 200
    rows = r.query("SELECT id, tenant, origin, sequence, type, body FROM events")
    assert rows == [(headers["webhook-id"], "acme", "", 5, "mailbox.created", body)]
    r.wait_processed(headers["webhook-id"])
    # the same request against the default 5-minute tolerance: stale
    assert r.stop() == 0                       # SIGTERM: a clean stop
    r = start(secret)
    assert post(r.port, body, {k: headers[k] for k in wanted})[0] == 401
    r.wait_log("outside the tolerance")


def test_good_signature_stored_duplicate_processed_once(start):
    r = start(NEW)
    msg_id, body = envelope("acme", 1)
    assert deliver(r.port, [NEW], msg_id, body)[0] == 200
    assert r.query("SELECT body FROM events") == [(body,)]
    r.wait_processed(msg_id)
    # a retry: the same event, a later timestamp, so another signature
    assert deliver(r.port, [NEW], msg_id, body, ts=int(time.time()) + 1)[0] == 200
    assert deliver(r.port, [NEW], msg_id, body)[0] == 200
    r.wait_log(r"duplicate id='%s'.*already stored" % msg_id)
    time.sleep(0.5)                             # give the worker its chance
    assert r.query("SELECT count(*) FROM events") == [(1,)]
    assert len(re.findall(r"processed id='%s'" % msg_id, r.log())) == 1


@pytest.mark.parametrize("case", ["other-secret", "tampered-body", "tampered-id",
                                  "tampered-timestamp", "no-signature",
                                  "malformed-signature", "v2-only",
                                  "bad-timestamp"])
def test_bad_signature_is_401(start, case):
    r = start(NEW)
    msg_id, body = envelope("acme", 1)
    ts = str(int(time.time()))
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts,
               "webhook-signature": sign([NEW], msg_id, ts, body)}
    if case == "other-secret":
        headers["webhook-signature"] = sign([OTHER], msg_id, ts, body)
    elif case == "tampered-body":
        body = body.replace(b'"sequence":1', b'"sequence":2')
    elif case == "tampered-id":
        headers["webhook-id"] = str(uuid.uuid4())
    elif case == "tampered-timestamp":
        headers["webhook-timestamp"] = str(int(ts) - 1)
    elif case == "no-signature":
        del headers["webhook-signature"]
    elif case == "malformed-signature":
        headers["webhook-signature"] = "v1,not-base64"
    elif case == "v2-only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif case == "bad-timestamp":
        headers["webhook-timestamp"] = "+" + ts
    assert post(r.port, body, headers)[0] == 401
    assert r.query("SELECT count(*) FROM events") == [(0,)]
    r.wait_log(r"WARNING rejected id=")


@pytest.mark.parametrize("offset,status", [(-301, 401), (301, 401), (-290, 200),
                                           (290, 200)])
def test_timestamp_tolerance(start, offset, status):
    r = start(NEW)
    msg_id, body = envelope("acme", 1)
    assert deliver(r.port, [NEW], msg_id, body, ts=int(time.time()) + offset)[0] == status
    assert r.query("SELECT count(*) FROM events") == [(1 if status == 200 else 0,)]


def test_rotation_old_and_new_secrets(start):
    r = start("%s,%s" % (OLD, NEW))
    for i, signers in enumerate(([OLD], [NEW], [NEW, OLD], [OTHER, NEW]), 1):
        msg_id, body = envelope("acme", i)
        assert deliver(r.port, signers, msg_id, body)[0] == 200, signers
    msg_id, body = envelope("acme", 9)
    assert deliver(r.port, [OTHER], msg_id, body)[0] == 401
    # --secret adds to the environment
    r2 = start("", "--secret", OLD)
    msg_id, body = envelope("acme", 1)
    assert deliver(r2.port, [NEW, OLD], msg_id, body)[0] == 200


def test_gaps_per_tenant_and_origin(start):
    r = start(NEW)

    def send(tenant, seq, origin=None):
        msg_id, body = envelope(tenant, seq, origin)
        assert deliver(r.port, [NEW], msg_id, body)[0] == 200
        return msg_id

    for seq in (1, 2):
        send("globex", seq)
    gap_id = send("globex", 5)
    r.wait_log(r"WARNING gap: sequence 3\.\.4 missing \(got 5 after 2\) "
               r"tenant='globex' origin='' \(id='%s'\); resynchronise" % gap_id)
    assert r.query("SELECT tenant, origin, first_missing, last_missing FROM gaps") \
        == [("globex", "", 3, 4)]
    # another origin of the same tenant is its own stream: no gap
    send("globex", 1, "node-b")
    send("globex", 2, "node-b")
    # a late arrival (a retry) is recorded, not a gap
    send("globex", 3)
    r.wait_log(r"late: sequence 3 after 5 tenant='globex' origin=''")
    send("initech", 7)                        # first seen: no gap either
    assert r.query("SELECT tenant, origin, highest FROM streams ORDER BY 1, 2") == \
        [("globex", "", 5), ("globex", "node-b", 2), ("initech", "", 7)]
    assert len(r.query("SELECT * FROM gaps")) == 1
    assert r.query("SELECT count(*) FROM events") == [(7,)]


def test_wrong_path_and_unusable_body(start):
    r = start(NEW)
    msg_id, body = envelope("acme", 1)
    ts = str(int(time.time()))
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts,
               "webhook-signature": sign([NEW], msg_id, ts, body)}
    assert post(r.port, body, headers, path="/elsewhere")[0] == 404
    # signed, but the envelope's id is not the webhook-id
    other = str(uuid.uuid4())
    assert post(r.port, body, dict(headers, **{
        "webhook-id": other,
        "webhook-signature": sign([NEW], other, ts, body)}))[0] == 400
    assert r.query("SELECT count(*) FROM events") == [(0,)]


def test_help_and_secret_errors(tmp_path):
    out = subprocess.run([PYTHON, RECEIVER, "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    for word in ("WEBHOOK_SECRETS", "--secret", "--tolerance", "--db", "--port"):
        assert word in out.stdout
    env = dict(os.environ, WEBHOOK_SECRETS="")
    out = subprocess.run([PYTHON, RECEIVER], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 2 and "no secret" in out.stderr
    bad = "whsec_c2hvcnQ!"
    out = subprocess.run([PYTHON, RECEIVER, "--secret", bad], capture_output=True,
                         text=True, timeout=30, env=env)
    assert out.returncode == 2 and "not base64" in out.stderr
    assert "c2hvcnQ" not in out.stderr          # never echo a secret
