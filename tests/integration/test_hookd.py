"""tn-hookd against real webhook receivers (docs/hookd.md, docs/events.md).

Every receiver is a separate HTTP server process (tests/harness/
tnreceiver.py) that records each request and verifies its signature;
events are emitted with tnctl, as integrators do.  Most tests share one
outbox and one tn-hookd (the `hookd` fixture); each uses its own tenants
and endpoints (filtered on those tenants) so that tests do not see each
other's events.  Tests that need other parameters or a daemon killed in a
loop make their own.
"""

import base64
import collections
import email.utils
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from tnhookd import Hookd, Killer, specs_round_robin, wait_until
from tnprobe import binary
from tnreceiver import Receiver, check_signature

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
RETRY_NAME = re.compile(r"^([0-9a-f-]{36})\.(\d+)\.(\d+)\.(\d+)\.retry$")
METRIC_FAMILIES = (
    "tn_hookd_queue_depth", "tn_hookd_oldest_pending_seconds",
    "tn_hookd_dead_letters", "tn_hookd_endpoint_disabled",
    "tn_hookd_attempts_total", "tn_hookd_deliveries_total",
    "tn_hookd_delivery_latency_seconds", "tn_hookd_new_backlog",
    "tn_hookd_events_fanned_out_total", "tn_hookd_events_unrouted_total",
    "tn_hookd_quarantined_total")


def secret():
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def uuid7():
    ms = int(time.time() * 1000)
    r = int.from_bytes(os.urandom(10), "big")
    v = (ms << 80) | (7 << 76) | ((r & 0xfff) << 64) | (2 << 62) | (r >> 18)
    h = "%032x" % v
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def per_tenant_sequences(events):
    """tenant -> sorted list of sequence numbers (events: dicts)."""
    seqs = collections.defaultdict(set)
    for ev in events:
        seqs[ev["tenant"]].add(ev["sequence"])
    return {t: sorted(s) for t, s in seqs.items()}


def assert_complete_sequences(received, emitted):
    """After dedup, each tenant's received sequences are exactly what was
    emitted, and 1..N when the tenant is fresh."""
    got = per_tenant_sequences(received)
    want = per_tenant_sequences(emitted)
    assert got == want, "per-tenant sequences differ: %s" % {
        t: (len(got.get(t, [])), len(want[t])) for t in want}
    for t, s in want.items():
        assert s == list(range(1, len(s) + 1)), "tenant %s has gaps" % t


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hookd(tmp_path_factory):
    """One outbox and tn-hookd for the tests that can share it."""
    h = Hookd(tmp_path_factory.mktemp("hookd"), start=True)
    try:
        yield h
    finally:
        h.stop()


class Case:
    """One test's receivers and endpoints on a Hookd; endpoints select the
    test's tenants only.  close() stops the receivers and removes the
    endpoints."""

    def __init__(self, hookd, workdir, tenants):
        self.hookd = hookd
        self.workdir = str(workdir)
        self.tenants = list(tenants)
        self.receivers = []
        self.endpoints = []

    def receiver(self, start=True, secrets=None):
        r = Receiver(os.path.join(self.workdir, "recv%d" % len(self.receivers)),
                     secrets=secrets or [secret()], start=start)
        self.receivers.append(r)
        return r

    def endpoint(self, name, receiver, path="/hook", secrets=None, wait=True, **opts):
        opts.setdefault("tenants", self.tenants)
        self.hookd.add_endpoint(name, receiver.url(path), secrets or receiver.secrets,
                                **opts)
        self.endpoints.append(name)
        if wait and self.hookd.running():
            self.wait_endpoint_loaded(name)
        return name

    def wait_endpoint_loaded(self, name, timeout=15):
        """tn-hookd re-reads the files on SIGHUP; its /metrics then lists
        the endpoint.  Events emitted before would not be routed to it."""
        def loaded():
            m = self.hookd.metrics()
            return any(lb.get("endpoint") == name
                       for lb, _ in m.samples("tn_hookd_queue_depth"))
        self.wait(loaded, timeout, "endpoint %s loaded after SIGHUP" % name)

    def details(self):
        parts = [self.hookd.summary(self.endpoints)]
        parts += [r.summary() for r in self.receivers]
        return "\n----\n".join(parts)

    def wait(self, cond, timeout, what):
        return wait_until(cond, timeout, what, self.details)

    def log(self, endpoint):
        return [d for d in self.hookd.deliveries() if d.get("endpoint") == endpoint]

    def wait_log(self, endpoint, pred, what, timeout=20):
        """The delivery log's records of endpoint that pred accepts, once
        there are some (the log is flushed about once a second)."""
        return self.wait(lambda: [d for d in self.log(endpoint) if pred(d)], timeout,
                         "delivery log of %s: %s" % (endpoint, what))

    def wait_delivered(self, receiver, ids, endpoint=None, timeout=60):
        """Every id answered 2xx by receiver (and endpoint's queue empty)."""
        ids = set(ids)

        def done():
            if not ids <= receiver.unique_ids():
                return False
            return endpoint is None or not self.hookd.queue_files(endpoint)
        self.wait(done, timeout, "%d events delivered to %s (missing %s)"
                  % (len(ids), receiver.url(""),
                     sorted(ids - receiver.unique_ids())[:5]))

    def close(self):
        for r in self.receivers:
            r.stop()
        for e in self.endpoints:
            self.hookd.remove_endpoint(e)


@pytest.fixture
def case(request, hookd, tmp_path):
    """A Case on the shared hookd with tenants named after the test."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    c = Case(hookd, tmp_path, [base + "-a", base + "-b"])
    yield c
    c.close()


@pytest.fixture
def own(tmp_path):
    """A factory of Hookd stacks of a test's own; stopped at the end."""
    made = []

    def make(params=None, start=True):
        h = Hookd(tmp_path / ("hookd%d" % len(made)), params=params, start=start)
        made.append(h)
        return h
    yield make
    for h in made:
        h.stop()


# --- the harness itself ------------------------------------------------------------


def test_receiver_verifier_accepts_the_docs_test_vector():
    """The receiver's verifier is right: it accepts docs/events.md's test
    vector and refuses it under another secret or with a changed body."""
    text = open(os.path.join(ROOT, "docs", "events.md")).read()
    block = text[text.index("POST /hooks/tenantmail"):]
    block = block[:block.index("```")]
    head, body = block.split("\n\n", 1)
    body = body.strip("\n").encode()
    headers = {}
    for line in head.splitlines()[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    key = re.search(r"Its secret is\s+`(whsec_[A-Za-z0-9+/=]+)`", text).group(1)
    now = int(headers["webhook-timestamp"])
    v = check_signature([key], headers, body, now)
    assert v["ok"] and v["matches"] == [0], v
    assert not check_signature([secret()], headers, body, now)["ok"]
    assert not check_signature([key], headers, body + b" ", now)["ok"]


# --- configuration ------------------------------------------------------------------


def test_config_check(own, tmp_path):
    """-n checks the configuration and endpoint files: 0 when good, 78 with
    the file named when an endpoint file or a parameter is bad, a warning
    for a file others can read; secrets are not logged."""
    h = own(start=False)
    s = secret()
    h.add_endpoint("billing", "http://127.0.0.1:9/hook", [s], events=["mailbox.*"])
    rc, out, err = h.check()
    assert rc == 0, (out, err)
    assert "billing" in out + err
    assert s not in out + err and s[6:] not in out + err
    with open(h.endpoint_path("broken"), "w") as f:
        f.write("url = http://127.0.0.1:9/hook\n")          # no secrets
    rc, out, err = h.check()
    assert rc == 78, (rc, out, err)
    assert "broken" in out + err
    os.unlink(h.endpoint_path("broken"))
    with open(h.endpoint_path("typo"), "w") as f:
        f.write("url = http://127.0.0.1:9/hook\nsecrets = %s\nconcurency = 2\n" % s)
    rc, out, err = h.check()
    assert rc == 78 and "concurency" in out + err, (rc, out, err)
    os.unlink(h.endpoint_path("typo"))
    os.chmod(h.endpoint_path("billing"), 0o644)
    rc, out, err = h.check()
    assert rc == 0 and "readable by others" in out + err, (rc, out, err)
    rc, out, err = h.check("-o", "hookd_no_such_parameter=1")
    assert rc == 78 and "hookd_no_such_parameter" in err, (rc, out, err)
    with open(h.endpoint_path("badsecret"), "w") as f:
        f.write("url = http://127.0.0.1:9/hook\nsecrets = whsec_!!notbase64!!\n")
    rc, out, err = h.check()
    assert rc == 78 and "badsecret" in out + err, (rc, out, err)


def test_unknown_hookd_user_is_fatal_as_root(own):
    """Started as root with a hookd_user that does not exist, tn-hookd
    refuses to run (it never stays root by accident)."""
    h = own({"hookd_user": "tn-no-such-user"}, start=False)
    with pytest.raises(Exception) as e:
        h.start()
    assert "exited" in str(e.value) and "tn-no-such-user" in h.log_text(), \
        (str(e.value), h.log_text())
    assert h.proc.returncode != 0


# --- the request ------------------------------------------------------------------


def test_requests_are_signed_with_every_secret(case):
    """Two secrets: each request carries two v1 signatures, each verifying
    with its own secret; webhook-id is the body's id; the body is the
    outbox file's bytes without the newline, up to the largest event
    (64 KiB)."""
    h = case.hookd
    secrets = [secret(), secret()]
    r = case.receiver(secrets=secrets)
    case.endpoint("sig", r, path="/hooks/tenantmail", secrets=secrets)
    datas = [{"address": "alice@acme.example", "quota_bytes": 1073741824},
             {"name": "Zo\u00eb \u2603 \"quoted\" \\ back", "n": None},
             {"long": "x" * 20000}, {}]
    # frozen, tn-hookd leaves new/ alone: read what the outbox stored
    h.freeze()
    try:
        emitted = [h.emit(t, case.tenants[i % 2], datas[i % len(datas)])
                   for i, t in enumerate(["mailbox.created", "mailbox.updated",
                                          "tenant.created", "quota.exceeded"] * 3)]
        # the largest event the outbox takes: 64 KiB with its newline
        probe = h.emit("usage.rollup", case.tenants[0], {"pad": "x" * 100})
        size = os.path.getsize(h.path("new", probe["id"] + ".json"))
        pad = 100 + 65536 - size
        big = h.emit("usage.rollup", case.tenants[0], {"pad": "x" * pad})
        assert os.path.getsize(h.path("new", big["id"] + ".json")) == 65536
        # one byte more is refused as bad input (65: retrying cannot help)
        res = h.emit_raw("usage.rollup", case.tenants[0], {"pad": "x" * (pad + 1)})
        assert res.returncode == 65 and "too large" in res.stderr, \
            (res.returncode, res.stderr)
        emitted += [probe, big]
        stored = {}
        for e in emitted:
            with open(h.path("new", e["id"] + ".json"), "rb") as f:
                stored[e["id"]] = f.read()
    finally:
        h.thaw()
    case.wait_delivered(r, stored, "sig")
    for req in r.requests():
        assert req["method"] == "POST" and req["path"] == "/hooks/tenantmail"
        assert req["sig"]["ok"] is True, req["sig"]
        assert req["sig"]["signatures"] == 2, req["headers"]["webhook-signature"]
        assert sorted(req["sig"]["matches"]) == [0, 1], req["sig"]
        assert abs(req["sig"]["skew"]) < 300
        assert req["headers"]["content-type"].startswith("application/json")
        assert req.body == stored[req.id][:-1], req.id
        assert stored[req.id].endswith(b"\n") and not req.body.endswith(b"\n")
        assert req.event()["id"] == req.id


# --- failing receivers ---------------------------------------------------------------


def test_500_for_a_while_then_200_delivers_everything(case):
    """A receiver answering 500 for 3 s: retried with backoff (queue files
    take their .retry names), then every event arrives and, after dedup,
    each tenant's sequences are 1..N."""
    h = case.hookd
    r = case.receiver()
    r.fail_for(3.0, 500)
    case.endpoint("fail500", r)
    emitted = h.emit_many(specs_round_robin(40, case.tenants, ["mailbox.updated"]), procs=2)
    seen = set()

    def retry_names():
        for n in h.queue_files("fail500"):
            m = RETRY_NAME.match(n)
            if m:
                seen.add(n)
        return seen
    case.wait(retry_names, 20, "a .retry file in the queue")
    for n in seen:
        _, attempts, first_ms, next_ms = RETRY_NAME.match(n).groups()
        assert int(attempts) >= 1 and int(next_ms) >= int(first_ms) > 0, n
    case.wait_delivered(r, [e["id"] for e in emitted], "fail500", timeout=90)
    assert any(q["status"] == 500 for q in r.requests())
    retries = case.wait_log("fail500", lambda d: d["outcome"] == "retry", "retries")
    assert all(d["status"] == 500 and d["error"] for d in retries), retries[:3]
    # the log names the recording node: sequences are per (tenant, origin)
    assert all(d["origin"] == socket.gethostname() for d in retries), retries[:3]
    attempts = collections.defaultdict(list)
    for d in case.log("fail500"):
        attempts[d["id"]].append(d["attempt"])
    for i, a in attempts.items():
        assert a == list(range(1, len(a) + 1)), (i, a)
    assert_complete_sequences(r.events().values(), emitted)


def test_receiver_down_then_up(case):
    """Nothing listening (never started, then killed -9): connection
    failures are retried; once the receiver is up every event arrives."""
    h = case.hookd
    r = case.receiver(start=False)
    case.endpoint("down", r)
    first = [h.emit("mailbox.created", case.tenants[i % 2], {"i": i}) for i in range(8)]
    case.wait_log("down", lambda d: d["outcome"] == "retry" and d["status"] == 0,
                  "failed attempts while down")
    r.start()
    case.wait_delivered(r, [e["id"] for e in first], "down")
    r.kill()
    second = [h.emit("mailbox.deleted", case.tenants[i % 2], {"i": i}) for i in range(8)]
    ids = {e["id"] for e in second}
    case.wait_log("down", lambda d: d["id"] in ids and d["outcome"] == "retry",
                  "failed attempts after kill -9")
    assert not ids & r.unique_ids()
    r.start()
    case.wait_delivered(r, ids, "down")
    assert_complete_sequences(r.events().values(), first + second)


def test_receiver_frozen_times_out_then_recovers(case):
    """A receiver that accepts and never answers (SIGSTOP): each attempt
    ends at the endpoint's timeout (1 s) as a retry, tn-hookd keeps
    answering /metrics; after SIGCONT every event arrives."""
    h = case.hookd
    r = case.receiver()
    case.endpoint("frozen", r, timeout="1s", connect_timeout="1s")
    r.freeze()
    emitted = [h.emit("quota.exceeded", case.tenants[0], {"i": i}) for i in range(5)]
    ids = {e["id"] for e in emitted}
    fails = case.wait_log("frozen", lambda d: d["outcome"] == "retry",
                          "timed-out attempts while the receiver is frozen", 30)
    assert all(d["status"] == 0 and d["error"] for d in fails), fails[:3]
    # each attempt ended at the timeout (1 s): not sooner, not much later
    assert all(900 <= d["latency_ms"] <= 2500 for d in fails), \
        [d["latency_ms"] for d in fails]
    t = time.monotonic()
    h.metrics(timeout=5)
    assert time.monotonic() - t < 5
    r.thaw()
    case.wait_delivered(r, ids, "frozen")


def test_410_disables_endpoint_and_keeps_events(case):
    """410 Gone: the disabled marker appears, /metrics says disabled, nothing
    more is sent (also after a kill -9 and restart) and new events wait in
    the queue; tnctl events enable removes the marker and all of them are
    delivered, in order."""
    h = case.hookd
    r = case.receiver()
    r.set_behaviour([{"status": 410, "count": 1}])
    case.endpoint("gone", r, concurrency=1)
    a = h.emit("mailbox.created", case.tenants[0])
    marker = h.disabled_path("gone")
    def marker_json():
        try:
            with open(marker) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):    # not there, or being written
            return None
    info = case.wait(marker_json, 20, "the disabled marker")
    assert info["status"] == 410 and "at" in info and "reason" in info, info
    case.wait(lambda: h.metrics().value("tn_hookd_endpoint_disabled", endpoint="gone") == 1,
              10, "tn_hookd_endpoint_disabled 1")
    case.wait_log("gone", lambda d: True, "the 410 attempt")
    assert [(d["outcome"], d["status"], d["id"]) for d in case.log("gone")] == \
        [("disabled", 410, a["id"])]
    more = [h.emit("mailbox.updated", case.tenants[i % 2], {"i": i}) for i in range(4)]
    ids = {e["id"] for e in [a] + more}
    case.wait(lambda: ids <= {n.split(".")[0] for n in h.queue_files("gone")},
              20, "every event kept in the disabled endpoint's queue")
    time.sleep(2.5)     # over two rescans: still nothing sent
    assert len(r.requests()) == 1, r.summary()
    h.kill()            # the marker outlives tn-hookd
    h.start()
    time.sleep(1.5)
    assert len(r.requests()) == 1, r.summary()
    case.wait(lambda: h.metrics().value("tn_hookd_endpoint_disabled", endpoint="gone") == 1,
              10, "tn_hookd_endpoint_disabled 1 after a restart")
    res = h.tnctl("events", "enable", "gone")
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert not os.path.exists(marker)
    case.wait_delivered(r, ids, "gone", timeout=30)
    # concurrency 1: sent again in order (billing.md), the 410'd one first
    order = [q.id for q in r.requests()[1:] if q.ok]
    assert order == [e["id"] for e in [a] + more], order
    case.wait(lambda: h.metrics().value("tn_hookd_endpoint_disabled", endpoint="gone") == 0,
              10, "tn_hookd_endpoint_disabled 0")


@pytest.mark.parametrize("status,retry_after,pause", [
    (429, "2", 1.9),
    (503, "date", 1.0),     # an HTTP date 3 s ahead (whole seconds)
])
def test_retry_after_pauses_the_endpoint(case, status, retry_after, pause):
    """429/503 with Retry-After: nothing is sent to the endpoint before the
    pause is over, then everything is delivered."""
    h = case.hookd
    r = case.receiver()
    if retry_after == "date":
        retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    r.set_behaviour([{"status": status, "count": 1,
                      "headers": {"Retry-After": retry_after}}])
    case.endpoint("pause%d" % status, r)
    first = h.emit("mailbox.created", case.tenants[0])
    case.wait(lambda: r.requests(), 20, "the first request")
    t0 = r.requests()[0]["t"]
    rest = [h.emit("mailbox.updated", case.tenants[0], {"i": i}) for i in range(3)]
    case.wait_delivered(r, [first["id"]] + [e["id"] for e in rest], "pause%d" % status)
    reqs = r.requests()
    assert reqs[0]["status"] == status
    early = [q for q in reqs[1:] if q["t"] < t0 + pause]
    assert not early, "sent %.2f s after the %d: %s" % (early[0]["t"] - t0, status,
                                                       r.summary())
    paused = case.wait_log("pause%d" % status, lambda d: d["outcome"] == "paused",
                           "the paused attempt")
    assert paused[0]["status"] == status and paused[0]["id"] == first["id"], paused


def test_retry_window_over_makes_a_dead_letter(own, tmp_path):
    """With hookd_retry_window=3s and a receiver that always answers 500,
    the events end in dead/, the delivery log says "dead"; tnctl events
    replay puts them back in the queue and they are delivered."""
    h = own({"hookd_retry_window": "3s"})
    c = Case(h, tmp_path, ["dead-a"])
    try:
        r = c.receiver()
        r.always(500)
        c.endpoint("dl", r)
        emitted = [h.emit("mailbox.created", "dead-a", {"i": i}) for i in range(3)]
        ids = {e["id"] for e in emitted}
        c.wait(lambda: {n[:-5] for n in h.dead_files("dl")} == ids
               and not h.queue_files("dl"), 40, "3 dead letters")
        c.wait(lambda: {d["id"] for d in c.log("dl") if d["outcome"] == "dead"} == ids,
               10, "3 dead outcomes in the delivery log")
        for n in h.dead_files("dl"):
            with open(h.path("hooks", "dl", "dead", n)) as f:
                assert json.loads(f.read())["id"] == n[:-5]
        c.wait(lambda: h.metrics().value("tn_hookd_dead_letters", endpoint="dl") == 3,
               10, "tn_hookd_dead_letters 3")
        assert len(r.requests()) >= 3
        r.always(200)
        res = h.tnctl("events", "replay", *sorted(ids))
        assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
        c.wait_delivered(r, ids, "dl", timeout=30)
        assert not h.dead_files("dl")
    finally:
        c.close()


def test_redirect_is_not_followed(case):
    """A 3xx is a failed attempt ("redirect not followed"), the Location is
    never requested; the retry is delivered."""
    h = case.hookd
    r = case.receiver()
    r.set_behaviour([{"path": "/hook", "status": 302, "count": 1,
                      "headers": {"Location": r.url("/elsewhere")}}])
    case.endpoint("redir", r)
    e = h.emit("mailbox.created", case.tenants[0])
    case.wait_delivered(r, [e["id"]], "redir")
    assert all(q["path"] == "/hook" for q in r.requests()), r.summary()
    retry = case.wait_log("redir", lambda d: d["outcome"] == "retry", "the 302 attempt")
    assert retry[0]["status"] == 302 and "redirect" in retry[0]["error"], retry


def test_endpoint_enabled_no_keeps_its_queue(case):
    """enabled = no: events queue up, nothing is sent, /metrics says
    disabled; enabled = yes and SIGHUP deliver them."""
    h = case.hookd
    r = case.receiver()
    case.endpoint("off", r, enabled="no")
    emitted = [h.emit("mailbox.created", case.tenants[0], {"i": i}) for i in range(3)]
    ids = {e["id"] for e in emitted}
    case.wait(lambda: ids <= {n.split(".")[0] for n in h.queue_files("off")}, 20,
              "the events queued for the endpoint that is off")
    case.wait(lambda: h.metrics().value("tn_hookd_endpoint_disabled", endpoint="off") == 1,
              10, "tn_hookd_endpoint_disabled 1")
    time.sleep(1.5)
    assert not r.requests(), r.summary()
    case.endpoint("off", r, enabled="yes")
    case.wait_delivered(r, ids, "off")


def test_retry_after_is_capped(own, tmp_path):
    """Retry-After: 3600 with hookd_retry_after_max=1s: delivered within
    seconds, not an hour."""
    h = own({"hookd_retry_after_max": "1s"})
    c = Case(h, tmp_path, ["cap-a"])
    try:
        r = c.receiver()
        r.set_behaviour([{"status": 429, "count": 1, "headers": {"Retry-After": "3600"}}])
        c.endpoint("cap", r)
        e = h.emit("mailbox.created", "cap-a")
        c.wait_delivered(r, [e["id"]], "cap", timeout=20)
        assert [q["status"] for q in r.requests()] == [429, 200]
    finally:
        c.close()


def _openssl(cwd, *args):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def _ca_and_cert(d):
    """Two CAs in d (right, wrong) and a server certificate for 127.0.0.1
    signed by the right one: (right_ca, wrong_ca, cert, key)."""
    os.makedirs(d, exist_ok=True)
    for ca in ("right", "wrong"):
        _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=tn-test-%s-ca" % ca, "-keyout", ca + ".key",
                 "-out", ca + ".pem")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr")
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "right.pem", "-CAkey",
             "right.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
             "-out", "server.pem")
    j = lambda n: os.path.join(d, n)    # noqa: E731
    return j("right.pem"), j("wrong.pem"), j("server.pem"), j("server.key")


def test_https_verifies_the_receiver(case, tmp_path):
    """https:// with a CA made by openssl: the right CA delivers; a wrong CA
    and an https URL to a plain HTTP receiver are failed attempts (TLS
    errors, no request reaches a receiver, no plaintext fallback); fixing
    the CA file (SIGHUP) delivers without a restart."""
    h = case.hookd
    right, wrong, cert, key = _ca_and_cert(str(tmp_path / "pki"))
    rt = Receiver(str(tmp_path / "tls"), secrets=[secret()], tls=(cert, key))
    case.receivers.append(rt)
    plain = case.receiver()
    case.endpoint("tls-ok", rt, path="/ok", tls_ca_file=right, events="mailbox.*")
    case.endpoint("tls-bad", rt, path="/bad", tls_ca_file=wrong, events="quota.*")
    case.hookd.add_endpoint("tls-plain", plain.url("/p").replace("http:", "https:"),
                            plain.secrets, tenants=case.tenants, tls_ca_file=right,
                            events="tenant.*")
    case.endpoints.append("tls-plain")
    case.wait_endpoint_loaded("tls-plain")
    ok = h.emit("mailbox.created", case.tenants[0])
    bad = h.emit("quota.exceeded", case.tenants[0])
    pl = h.emit("tenant.created", case.tenants[0])
    case.wait_delivered(rt, [ok["id"]], "tls-ok")
    for ep, e in (("tls-bad", bad), ("tls-plain", pl)):
        fails = case.wait_log(ep, lambda d: d["id"] == e["id"] and d["outcome"] == "retry",
                              "a failed TLS attempt")
        assert fails[0]["status"] == 0 and fails[0]["error"], fails
    assert {q["path"] for q in rt.requests()} == {"/ok"}, rt.summary()
    assert not plain.requests(), plain.summary()
    case.endpoint("tls-bad", rt, path="/bad", tls_ca_file=right, events="quota.*")
    case.wait_delivered(rt, [bad["id"]], "tls-bad", timeout=30)


@pytest.mark.parametrize("initial,floor", [("200ms", 0.2), ("1s", 1.0)])
def test_backoff_has_its_floor(own, tmp_path, initial, floor):
    """Attempts of one failing event are at least F apart, F being 1 s or
    hookd_retry_initial_delay when that is shorter (docs/hookd.md), and
    never more than hookd_retry_max_delay (1 s) apart, plus a margin for
    the request and the timer."""
    h = own({"hookd_retry_initial_delay": initial, "hookd_retry_max_delay": "1s"})
    c = Case(h, tmp_path, ["floor-a"])
    try:
        r = c.receiver()
        r.always(500)
        c.endpoint("backoff", r)
        h.emit("mailbox.created", "floor-a")
        # 8 attempts: uncapped, the 7th backoff's ceiling would be 64 x initial
        c.wait(lambda: len(r.requests()) >= 8, 30, "8 attempts")
        ts = [q["t"] for q in r.requests()]
        gaps = [round(b - a, 3) for a, b in zip(ts, ts[1:])]
        assert min(gaps) >= floor - 0.01, "attempts %s s apart" % gaps
        assert max(gaps) <= 1.0 + 0.75, "attempts %s s apart" % gaps
    finally:
        c.close()


# --- routing ---------------------------------------------------------------------


def test_event_filters_and_independent_endpoints(case):
    """Two endpoints (mailbox.* and quota.exceeded) each receive exactly
    their types, a third (*) all of them, an event of another tenant goes
    nowhere; with one of them hung (SIGSTOP, 30 s timeout), the other still
    gets its events at once."""
    h = case.hookd
    rm, rq, ra = case.receiver(), case.receiver(), case.receiver()
    case.endpoint("f-mbx", rm, events="mailbox.*")
    case.endpoint("f-quota", rq, events="quota.exceeded", timeout="30s")
    case.endpoint("f-all", ra)
    unrouted = h.metrics().value("tn_hookd_events_unrouted_total", 0)
    types = ["mailbox.created", "mailbox.deleted", "quota.exceeded", "quota.warning",
             "tenant.created", "mailboxes.created"]
    emitted = [h.emit(t, case.tenants[i % 2]) for i, t in enumerate(types * 2)]
    other = h.emit("mailbox.created", "not-" + case.tenants[0])   # no endpoint's tenant
    want_m = {e["id"] for e in emitted if e["type"].startswith("mailbox.")}
    want_q = {e["id"] for e in emitted if e["type"] == "quota.exceeded"}
    case.wait_delivered(rm, want_m, "f-mbx")
    case.wait_delivered(rq, want_q, "f-quota")
    case.wait_delivered(ra, {e["id"] for e in emitted}, "f-all")
    time.sleep(1.5)     # a rescan: nothing else turns up
    assert rm.unique_ids(ok_only=False) == want_m
    assert rq.unique_ids(ok_only=False) == want_q
    assert ra.unique_ids(ok_only=False) == {e["id"] for e in emitted}
    assert other["id"] not in rm.unique_ids(False) | rq.unique_ids(False) | \
        ra.unique_ids(False)
    case.wait(lambda: h.metrics().value("tn_hookd_events_unrouted_total", 0) >= unrouted + 1,
              10, "tn_hookd_events_unrouted_total +1")

    rq.freeze()
    hung = [h.emit("quota.exceeded", case.tenants[0], {"i": i}) for i in range(6)]
    fast = [h.emit("mailbox.updated", case.tenants[1], {"i": i}) for i in range(6)]
    case.wait_delivered(rm, [e["id"] for e in fast], "f-mbx", timeout=15)
    assert not {e["id"] for e in hung} & rq.unique_ids(False)
    rq.thaw()
    case.wait_delivered(rq, [e["id"] for e in hung], "f-quota", timeout=60)


# --- crashes and volume ------------------------------------------------------------


def assert_each_id_intact(r, ids):
    """Every id of ids arrived, nothing else; duplicates carry the same
    body; every request's signature verified. (requests, unique ids)"""
    reqs = r.requests()
    got = r.unique_ids()
    assert got == ids, "missing %d, unexpected %d" % (len(ids - got), len(got - ids))
    bodies = collections.defaultdict(set)
    for q in reqs:
        assert q.event()["id"] == q.id, q
        bodies[q.id].add(q.body)
    changed = [i for i, b in bodies.items() if len(b) != 1]
    assert not changed, "bodies differ between duplicates: %s" % changed[:3]
    assert all(q["sig"]["ok"] for q in reqs)
    return reqs, got


def test_10000_events_with_hookd_killed_in_a_loop(own, tmp_path):
    """10,000 events from 4 producers while tn-hookd is killed -9 every
    0.5-1 s and restarted: the receiver sees exactly the appended ids
    (duplicates allowed, each with the same webhook-id and body), and
    nothing is left in new/ or the queue."""
    h = own()
    c = Case(h, tmp_path, ["k%d" % i for i in range(8)])
    killer = None
    try:
        r = c.receiver()
        c.endpoint("crash", r, concurrency=8)
        killer = Killer(h, 0.5, 1.0)
        killer.start()
        emitted = h.emit_many(specs_round_robin(10000, c.tenants,
                                                ["mailbox.updated", "usage.rollup"]),
                              procs=4, timeout=900)
        time.sleep(2)       # a few more kills while the backlog drains
        killer.stop()
        assert not killer.errors, "restart failed: %s\n%s" % (killer.errors, c.details())
        assert killer.kills >= 10, killer.kills
        ids = {e["id"] for e in emitted}
        assert len(ids) == 10000
        c.wait_delivered(r, ids, "crash", timeout=300)
        c.wait(lambda: not h.pending(["crash"]), 30, "new/ and the queue empty")
        reqs, got = assert_each_id_intact(r, ids)
        assert not h.bad_files() and not h.dead_files("crash")
        assert_complete_sequences(r.events().values(), emitted)
        print("10000 events: %d kills, %d requests, %d duplicates"
              % (killer.kills, len(reqs), len(reqs) - len(got)))
    finally:
        if killer is not None:
            killer.stop()
        c.close()


class SpoolWatcher(threading.Thread):
    """Looks at new/ and a queue every 50 ms while a test runs: the most
    lines seen in one segment (a file of new/ or a queue's <id>.json) and
    the .retry files seen in the queue."""

    def __init__(self, hookd, endpoint):
        super().__init__(daemon=True)
        self.hookd, self.endpoint = hookd, endpoint
        self.max_lines = 0
        self.retries = set()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.05):
            queue = self.hookd.queue_files(self.endpoint)
            self.retries.update(n for n in queue if RETRY_NAME.match(n))
            segs = [("new", n) for n in self.hookd.new_files()[:8]]
            segs += [("hooks", self.endpoint, "queue", n)
                     for n in queue if n.endswith(".json")][:8]
            for parts in segs:
                try:
                    with open(self.hookd.path(*parts), "rb") as f:
                        self.max_lines = max(self.max_lines, f.read().count(b"\n"))
                except FileNotFoundError:
                    pass

    def stop(self):
        self._halt.set()
        self.join(10)


def test_segments_and_random_500s_with_hookd_killed_in_a_loop(own, tmp_path):
    """The kill -9 loop with real multi-event segments and failures: two
    tn-bench-hookd appenders of 8 threads each (group commit: segments of
    several events) in rounds, a receiver answering 500 to about 10% of
    the requests at random (events leave their segments as .retry files,
    segments are split and released), tn-hookd killed -9 every 0.3-0.8 s
    and restarted.  Every appended id arrives, with one body per id; each
    tenant's sequences are 1..N; new/, the queue, bad/ and dead/ end
    empty."""
    threads, per_thread, rounds, procs, ntenants = 8, 40, 8, 2, 6
    h = own()
    tenants = ["bench%d" % i for i in range(ntenants)]
    c = Case(h, tmp_path, tenants)
    conf = str(tmp_path / "append.conf")
    with open(conf, "w") as f:
        f.write("outbox_dir = %s\n" % h.outbox)
    bench = binary("bench/tn-bench-hookd")
    killer = watcher = None
    try:
        r = c.receiver()
        r.set_behaviour([{"status": 500, "fraction": 0.1}])
        c.endpoint("crash500", r, concurrency=8)
        watcher = SpoolWatcher(h, "crash500")
        watcher.start()
        killer = Killer(h, 0.3, 0.8)
        killer.start()
        ids, want = set(), collections.Counter()
        for k in range(rounds):
            recs = [str(tmp_path / ("rec.%d.%d" % (k, p))) for p in range(procs)]
            ps = [subprocess.Popen([bench, "append", "-c", conf, "-t", str(threads),
                                    "-n", str(per_thread), "-T", str(ntenants),
                                    "-r", rec], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for rec in recs]
            for p, rec in zip(ps, recs):
                out, err = p.communicate(timeout=120)
                assert p.returncode == 0, (out, err)
                with open(rec) as f:
                    ids.update(line.split()[0] for line in f)
                for w in range(threads):
                    for i in range(per_thread):
                        want["bench%d" % ((w + i) % ntenants)] += 1
            time.sleep(0.4)
        total = threads * per_thread * rounds * procs
        assert len(ids) == total == sum(want.values())
        c.wait(lambda: len(r.unique_ids()) >= total // 2, 120, "half delivered")
        killer.stop()
        assert not killer.errors, "restart failed: %s\n%s" % (killer.errors, c.details())
        assert killer.kills >= 8, killer.kills
        c.wait_delivered(r, ids, "crash500", timeout=180)
        c.wait(lambda: not h.pending(["crash500"]), 30, "new/ and the queue empty")
        watcher.stop()
        assert watcher.max_lines > 1, "no segment of several events seen"
        assert watcher.retries, "no .retry file seen in the queue"
        reqs, got = assert_each_id_intact(r, ids)
        assert sum(1 for q in reqs if q["status"] == 500) > total // 50
        seqs = per_tenant_sequences(r.events().values())
        assert {t: len(s) for t, s in seqs.items()} == dict(want)
        for t, s in seqs.items():
            assert s == list(range(1, want[t] + 1)), "tenant %s: gaps or extras" % t
        assert not h.bad_files() and not h.dead_files("crash500")
        print("%d events in segments of up to %d: %d kills, %d requests, %d answered 500,"
              " %d .retry files seen" % (total, watcher.max_lines, killer.kills, len(reqs),
                                         sum(1 for q in reqs if q["status"] == 500),
                                         len(watcher.retries)))
    finally:
        for t in (killer, watcher):
            if t is not None:
                t.stop()
        c.close()


def test_producers_in_several_processes(case):
    """4 tnctl loops at once on 3 tenants while tn-hookd delivers: every
    event arrives and each tenant's sequences are 1..N with no gap."""
    h = case.hookd
    tenants = case.tenants + [case.tenants[0][:-2] + "-c"]
    r = case.receiver()
    case.endpoint("multi", r, tenants=tenants)
    emitted = h.emit_many(specs_round_robin(800, tenants, ["mail.delivered"]), procs=4)
    case.wait_delivered(r, [e["id"] for e in emitted], "multi", timeout=120)
    assert_complete_sequences(r.events().values(), emitted)


def test_no_endpoint_leaves_new_alone(own, tmp_path):
    """With no endpoint configured, new/ is left alone (and a warning
    says so); the first endpoint added gets those events."""
    h = own()
    c = Case(h, tmp_path, ["none-a"])
    try:
        emitted = [h.emit("mailbox.created", "none-a", {"i": i}) for i in range(3)]
        c.wait(lambda: "no webhook endpoint" in h.log_text(), 10, "the warning")
        time.sleep(1.5)     # a rescan
        assert sorted(n[:-5] for n in h.new_files()) == sorted(e["id"] for e in emitted)
        r = c.receiver()
        c.endpoint("late", r)
        c.wait_delivered(r, [e["id"] for e in emitted], "late")
    finally:
        c.close()


def test_bad_endpoint_file_on_sighup_keeps_the_old_set(own, tmp_path):
    """A broken endpoint file at SIGHUP: an error names it, the endpoints
    loaded before keep working; fixed and SIGHUP, the new one works."""
    h = own()
    c = Case(h, tmp_path, ["hup-a"])
    try:
        r1, r2 = c.receiver(), c.receiver()
        c.endpoint("one", r1)
        mark = h.log_mark()
        with open(h.endpoint_path("two"), "w") as f:
            f.write("url = %s\nsecrets = %s\ntimeout = soon\n" % (r2.url(), r2.secrets[0]))
        h.reload()
        c.wait(lambda: "two.conf" in h.log_since(mark), 10, "an error naming two.conf")
        assert h.running()
        e1 = h.emit("mailbox.created", "hup-a")
        c.wait_delivered(r1, [e1["id"]], "one")
        c.endpoint("two", r2, tenants=["hup-a"])
        e2 = h.emit("mailbox.updated", "hup-a")
        c.wait_delivered(r1, [e2["id"]], "one")
        c.wait_delivered(r2, [e2["id"]], "two")
        assert e1["id"] not in r2.unique_ids(False)
    finally:
        c.close()


def test_delivery_log_rotates(own, tmp_path):
    """hookd_delivery_log_max_size=4k: deliveries.log moves to
    deliveries.log.1 and a new one starts; every line of both parses."""
    h = own({"hookd_delivery_log_max_size": "4k"})
    c = Case(h, tmp_path, ["rot-a"])
    try:
        r = c.receiver()
        c.endpoint("rot", r)
        emitted = h.emit_many(specs_round_robin(60, ["rot-a"]), procs=2)
        c.wait_delivered(r, [e["id"] for e in emitted], "rot")
        c.wait(lambda: os.path.exists(h.path("hooks", "deliveries.log.1")), 10,
               "deliveries.log.1")
        with open(h.path("hooks", "deliveries.log.1")) as f:
            rotated = f.read()
        assert rotated.endswith("\n")
        for line in rotated.splitlines():
            json.loads(line)
        # the current log may end in a line being written right now
        with open(h.path("hooks", "deliveries.log")) as f:
            for line in f:
                if line.endswith("\n"):
                    json.loads(line)
    finally:
        c.close()


# --- bad input ---------------------------------------------------------------------


def test_corrupt_files_in_new_go_to_bad(case):
    """A truncated file, an empty file, an id that is not the file's name
    and a JSON array dropped into new/: each moved to bad/ with a log line
    naming it; tn-hookd keeps running and delivers the others."""
    h = case.hookd
    r = case.receiver()
    case.endpoint("corrupt", r)
    before = h.metrics().value("tn_hookd_quarantined_total", 0)
    mark = h.log_mark()
    pid = h.pid
    good = [h.emit("mailbox.created", case.tenants[0], {"i": i}) for i in range(3)]
    full = json.dumps({"id": "X", "type": "mailbox.created",
                       "occurred_at": "2026-11-22T21:06:36.249Z",
                       "tenant": case.tenants[0], "sequence": 1, "data": {}})
    bad = {}
    truncated = uuid7()
    bad[truncated] = full.replace('"X"', '"%s"' % truncated)[:60]
    bad[uuid7()] = ""
    mismatch = uuid7()
    bad[mismatch] = full.replace('"X"', '"%s"' % uuid7()) + "\n"
    bad[uuid7()] = "[1,2,3]\n"
    for i, text in bad.items():
        tmp = h.path("tmp", i + ".json")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, h.path("new", i + ".json"))
    good += [h.emit("mailbox.updated", case.tenants[1], {"i": i}) for i in range(3)]
    case.wait(lambda: all(any(b.startswith(i) for b in h.bad_files()) for i in bad),
              20, "the 4 bad files in bad/")
    case.wait_delivered(r, [e["id"] for e in good], "corrupt")
    log = h.log_since(mark)
    for i in bad:
        assert i in log, "no log line names %s:\n%s" % (i, log)
    assert h.running() and h.pid == pid
    assert not [n for n in h.new_files() if n[:-5] in bad]
    case.wait(lambda: h.metrics().value("tn_hookd_quarantined_total", 0) >= before + 4,
              10, "tn_hookd_quarantined_total +4")
    assert not bad.keys() & r.unique_ids(False)


def test_stale_tmp_files_are_removed(case):
    """A producer's tmp/ file older than hookd_tmp_max_age (1 h) is removed;
    a fresh one is left alone."""
    h = case.hookd
    stale, fresh = h.path("tmp", uuid7() + ".json"), h.path("tmp", uuid7() + ".json")
    for p in (stale, fresh):
        with open(p, "w") as f:
            f.write('{"id":')
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    case.wait(lambda: not os.path.exists(stale), 15, "the stale tmp/ file removed")
    assert os.path.exists(fresh)
    os.unlink(fresh)


# --- limits --------------------------------------------------------------------------


def _check_new_parses(h):
    """Every file in new/ is a segment of complete events, one per line,
    named after the first; returns them."""
    events = []
    for n in h.new_files():
        with open(h.path("new", n), "rb") as f:
            data = f.read()
        assert data.endswith(b"\n"), n
        lines = [json.loads(line) for line in data.splitlines()]
        assert lines[0]["id"] + ".json" == n
        events += lines
    return events


def test_outbox_full_refuses_with_75_and_corrupts_nothing(own, tmp_path):
    """outbox_max_events=5 with tn-hookd not running: the 6th emit exits 75
    saying the outbox is full, every file in new/ parses, the sequence is
    1..5; once tn-hookd delivers them the next event is number 6."""
    h = own({"outbox_max_events": "5"}, start=False)
    c = Case(h, tmp_path, ["full-a"])
    try:
        r = c.receiver()
        c.endpoint("full", r, wait=False)
        ok = [h.emit("mailbox.created", "full-a", {"i": i}) for i in range(5)]
        res = h.emit_raw("mailbox.created", "full-a")
        assert res.returncode == 75, (res.returncode, res.stdout, res.stderr)
        assert "outbox full" in res.stderr and "limit 5" in res.stderr, res.stderr
        events = _check_new_parses(h)
        assert sorted(e["sequence"] for e in events) == [1, 2, 3, 4, 5]
        assert not os.listdir(h.path("tmp"))
        h.start()
        c.wait_delivered(r, [e["id"] for e in ok], "full")
        c.wait(lambda: not h.new_files(), 10, "new/ empty")
        nxt = c.wait(lambda: (lambda p: p.returncode == 0 and p)(
            h.emit_raw("mailbox.updated", "full-a")), 10, "an emit accepted again")
        assert json.loads(nxt.stdout)["sequence"] == 6
    finally:
        c.close()


def test_disk_full_refuses_with_75_and_corrupts_nothing(own, tmp_path):
    """A real ENOSPC: the outbox on a 256 KiB tmpfs, events of 16 KiB until
    emit fails: exit 75 naming the error, every file in new/ parses, the
    sequence is 1..K with the counter at K and tmp/ empty; tn-hookd then
    delivers them all."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, "cannot mount a tmpfs (root needed): %s" % r.stderr
    try:
        h = own({"outbox_min_free": "0"}, start=False)
        h.outbox = str(mnt)
        for sub in ("tmp", "new", "seq"):
            os.makedirs(os.path.join(h.outbox, sub))
            os.chmod(os.path.join(h.outbox, sub), 0o2770)
        h.set_params(outbox_dir=h.outbox)
        c = Case(h, tmp_path, ["disk-a"])
        rc = None
        emitted = []
        for i in range(64):
            res = h.emit_raw("mailbox.created", "disk-a", {"i": i, "pad": "p" * 16000})
            if res.returncode != 0:
                rc = res
                break
            emitted.append(json.loads(res.stdout))
        assert rc is not None, "a 256 KiB tmpfs took 64 events of 16 KiB"
        assert rc.returncode == 75, (rc.returncode, rc.stderr)
        assert "No space left on device" in rc.stderr, rc.stderr
        events = _check_new_parses(h)
        k = len(emitted)
        assert sorted(e["sequence"] for e in events) == list(range(1, k + 1))
        with open(os.path.join(h.outbox, "seq", "disk-a")) as f:
            assert f.read().strip() == str(k)
        assert not os.listdir(os.path.join(h.outbox, "tmp"))
        # room again, then tn-hookd delivers what was accepted
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        try:
            rcv = c.receiver()
            c.endpoint("disk", rcv, wait=False)
            h.start()
            c.wait_delivered(rcv, [e["id"] for e in emitted], "disk")
        finally:
            h.stop()
            c.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_switches_to_hookd_user(own, tmp_path):
    """Started as root with hookd_user = nobody: the daemon runs as nobody
    (no way back to root) and still delivers, with the outbox and the
    endpoint file group-accessible as the install step makes them."""
    import pwd
    import tempfile
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="tn-hookd-user-")
    try:
        os.chmod(top, 0o755)
        h = Hookd(os.path.join(top, "h"), params={"hookd_user": "nobody"})
        for d in ("tmp", "new", "seq", "bad", "hooks"):     # the install step
            os.makedirs(h.path(d), exist_ok=True)
            os.chown(h.path(d), 0, nobody.pw_gid)
            os.chmod(h.path(d), 0o2770)
        os.chown(h.endpoints_dir, 0, nobody.pw_gid)
        for d in (h.workdir, h.outbox):
            os.chmod(d, 0o755)
        c = Case(h, tmp_path, ["user-a"])
        try:
            r = c.receiver()
            c.endpoint("asuser", r, wait=False)
            os.chown(h.endpoint_path("asuser"), 0, nobody.pw_gid)
            h.start()
            with open("/proc/%d/status" % h.pid) as f:
                ids = dict(line.split(":", 1) for line in f if ":" in line)
            assert ids["Uid"].split() == [str(nobody.pw_uid)] * 4, ids["Uid"]
            assert ids["Gid"].split()[0] == str(nobody.pw_gid), ids["Gid"]
            e = h.emit("mailbox.created", "user-a")
            c.wait_delivered(r, [e["id"]], "asuser")
        finally:
            h.stop()
            c.close()
    finally:
        subprocess.run(["rm", "-rf", top])


def test_producers_as_different_users(tmp_path):
    """The outbox as docs/outbox.md's install step makes it (tmp/ new/
    seq/ bad/ hooks/ 2770 root:G, the outbox 0750 root:G; G is nobody's
    group here, so that tn-hookd as nobody is in it): tnctl emits one
    tenant's events alternately as root and as nobody, whose only access
    is G as a supplementary group (primary group another, umask 077).
    Sequences are 1..N in emit order, every file in new/ and the counter
    are 0660 in G (made by both users), and tn-hookd, switching to nobody
    (hookd_user), renames and delivers every one of them."""
    import grp
    import pwd
    import tempfile
    nobody = pwd.getpwnam("nobody")
    group = nobody.pw_gid
    used = {g.gr_gid for g in grp.getgrall()}
    other_gid = next(g for g in range(4242, 65000) if g not in used)
    top = tempfile.mkdtemp(prefix="tn-hookd-users-")
    try:
        os.chmod(top, 0o755)
        # nobody may not reach the build tree (a checkout under /root on a
        # fresh machine): it runs a copy, as an installed tnctl would be
        tnctl = os.path.join(top, "tnctl")
        shutil.copy(binary("provisioning/tnctl"), tnctl)
        os.chmod(tnctl, 0o755)
        h = Hookd(os.path.join(top, "h"), params={"hookd_user": "nobody"})
        for d in ("tmp", "new", "seq", "bad", "hooks"):     # the install step
            os.makedirs(h.path(d), exist_ok=True)
            os.chown(h.path(d), 0, group)
            os.chmod(h.path(d), 0o2770)
        os.chown(h.outbox, 0, group)
        os.chmod(h.outbox, 0o750)
        os.chown(h.endpoints_dir, 0, group)
        os.chmod(h.workdir, 0o755)
        os.chmod(h.conf, 0o644)
        c = Case(h, tmp_path, ["users-a"])
        try:
            r = c.receiver()
            c.endpoint("users", r, wait=False)
            os.chown(h.endpoint_path("users"), 0, group)

            def as_nobody():
                os.setgroups([group])
                os.setgid(other_gid)
                os.setuid(nobody.pw_uid)
                os.umask(0o077)
            emitted = []
            for i in range(20):
                res = subprocess.run(
                    [tnctl, "-c", h.conf, "events", "emit", "mailbox.updated",
                     "--tenant", "users-a", "--data", json.dumps({"i": i}), "--json"],
                    capture_output=True, text=True, timeout=30,
                    preexec_fn=as_nobody if i % 2 else None)
                assert res.returncode == 0, (i, res.stderr)
                emitted.append(dict(json.loads(res.stdout), type="mailbox.updated",
                                    tenant="users-a"))
            assert [e["sequence"] for e in emitted] == list(range(1, 21))
            files = [h.path("new", n) for n in h.new_files()] + [h.path("seq", "users-a")]
            assert len(files) == 21, files
            owners = set()
            for f in files:
                st = os.stat(f)
                assert (st.st_mode & 0o7777, st.st_gid) == (0o660, group), \
                    "%s: mode %o gid %d" % (f, st.st_mode & 0o7777, st.st_gid)
                owners.add(st.st_uid)
            assert owners == {0, nobody.pw_uid}, owners
            h.start()
            with open("/proc/%d/status" % h.pid) as f:
                ids = dict(line.split(":", 1) for line in f if ":" in line)
            assert ids["Uid"].split() == [str(nobody.pw_uid)] * 4, ids["Uid"]
            c.wait_delivered(r, [e["id"] for e in emitted], "users")
            c.wait(lambda: not h.pending(["users"]), 20, "new/ and the queue empty")
            assert_complete_sequences(r.events().values(), emitted)
            assert not h.bad_files()
        finally:
            h.stop()
            c.close()
    finally:
        subprocess.run(["rm", "-rf", top])


# --- metrics -------------------------------------------------------------------------


def test_metrics(case):
    """/metrics: queue depth and the oldest pending age while the receiver
    is down, deliveries by outcome, attempts by class, a latency histogram,
    and every family docs/hookd.md lists."""
    h = case.hookd
    r = case.receiver(start=False)
    case.endpoint("met", r)
    emitted = [h.emit("mailbox.created", case.tenants[0], {"i": i}) for i in range(3)]

    def pending():
        m = h.metrics()
        return (m.value("tn_hookd_queue_depth", endpoint="met") == 3 and
                m.value("tn_hookd_oldest_pending_seconds", 0, endpoint="met") >= 1.0 and
                m.value("tn_hookd_deliveries_total", 0, endpoint="met",
                        outcome="retry") >= 1 and m)
    m = case.wait(pending, 20, "queue depth 3, oldest pending >= 1 s, a retry")
    assert m.value("tn_hookd_attempts_total", 0, endpoint="met", **{"class": "error"}) >= 1
    r.start()
    case.wait_delivered(r, [e["id"] for e in emitted], "met")

    def delivered():
        m = h.metrics()
        return (m.value("tn_hookd_queue_depth", endpoint="met") == 0 and
                m.value("tn_hookd_deliveries_total", 0, endpoint="met",
                        outcome="delivered") >= 3 and m)
    m = case.wait(delivered, 10, "queue depth 0 and 3 delivered")
    missing = [f for f in METRIC_FAMILIES if f not in m.names()]
    assert not missing, "missing metric families %s:\n%s" % (missing, m.text)
    assert m.types.get("tn_hookd_delivery_latency_seconds") == "histogram", m.types
    assert m.value("tn_hookd_attempts_total", 0, endpoint="met", **{"class": "2xx"}) >= 3
    assert m.value("tn_hookd_delivery_latency_seconds_count", 0, endpoint="met") >= 3
    assert m.value("tn_hookd_delivery_latency_seconds_sum", None, endpoint="met") is not None
    inf = m.samples("tn_hookd_delivery_latency_seconds_bucket", endpoint="met", le="+Inf")
    assert inf and inf[0][1] >= 3, m.text
    assert m.value("tn_hookd_oldest_pending_seconds", 0, endpoint="met") == 0


# --- stopping --------------------------------------------------------------------------


def test_sigterm_lets_the_request_in_flight_finish(own, tmp_path):
    """SIGTERM while a request is in flight (the receiver takes 2 s): the
    answer is waited for, the event leaves the queue, exit status 0."""
    h = own()
    c = Case(h, tmp_path, ["term-a"])
    try:
        r = c.receiver()
        r.set_behaviour([{"delay": 2.0, "status": 200}])
        c.endpoint("term", r)
        e = h.emit("mailbox.created", "term-a")
        c.wait(lambda: r.arrivals(), 20, "the request in flight")
        h._signal(signal.SIGTERM)
        h.proc.wait(15)
        assert h.proc.returncode == 0, (h.proc.returncode, c.details())
        assert e["id"] in r.unique_ids()
        assert not h.queue_files("term"), c.details()
    finally:
        c.close()


def test_sigterm_stops_after_5s_with_a_hung_request(own, tmp_path):
    """SIGTERM while the receiver holds a request for 60 s: tn-hookd stops
    after its 5 s grace, the event stays in the queue, and the next
    tn-hookd delivers it."""
    h = own()
    c = Case(h, tmp_path, ["hang-a"])
    try:
        r = c.receiver()
        r.set_behaviour([{"delay": 60.0, "status": 200, "count": 1}])
        c.endpoint("hang", r, timeout="120s")
        e = h.emit("mailbox.created", "hang-a")
        c.wait(lambda: r.arrivals(), 20, "the request in flight")
        t = time.monotonic()
        h._signal(signal.SIGTERM)
        h.proc.wait(60)
        took = time.monotonic() - t
        assert 4.0 <= took < 30, "stopped after %.1f s" % took
        assert h.proc.returncode == 0, (h.proc.returncode, c.details())
        assert [n.split(".")[0] for n in h.queue_files("hang")] == [e["id"]]
        h.start()
        c.wait_delivered(r, [e["id"]], "hang", timeout=30)
    finally:
        c.close()


# --- segments: a file of new/ holding the events of one group commit ----------------


def envelope(tenant, sequence, type_="mailbox.updated", data=None):
    """An event as the outbox writes it (keys in its order)."""
    return {"id": uuid7(), "type": type_, "occurred_at": "2026-11-22T21:06:36.249Z",
            "tenant": tenant, "sequence": sequence, "origin": "seg-test",
            "data": data if data is not None else {"n": sequence}}


def line(ev):
    return ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))


def write_segment(h, lines):
    """A segment as the outbox commits one: the lines (events or raw text)
    written in tmp/, renamed to new/<first line's id>.json.  Returns its id."""
    seg_id = lines[0]["id"]
    tmp = h.path("tmp", seg_id + ".json")
    with open(tmp, "w") as f:
        f.write("".join(line(ev) + "\n" for ev in lines))
    os.rename(tmp, h.path("new", seg_id + ".json"))
    return seg_id


def assert_bodies_are_lines(receiver, events):
    """Each request's body is its event's line, byte for byte, signed,
    under the event's id."""
    want = {ev["id"]: line(ev).encode() for ev in events}
    for q in receiver.requests():
        if q.id in want:
            assert q.body == want[q.id], q.id
            assert q["sig"]["ok"], q["sig"]


def test_segment_of_several_events_is_delivered_and_removed(case):
    """A segment of 6 events of two tenants: each event is one request
    (its line as the body), the segment leaves new/ and the queue, and
    /metrics counts 6 events fanned out."""
    h = case.hookd
    r = case.receiver()
    case.endpoint("seg", r)
    before = h.metrics().value("tn_hookd_events_fanned_out_total", 0)
    evs = [envelope(case.tenants[i % 2], i // 2 + 1) for i in range(6)]
    seg = write_segment(h, evs)
    case.wait_delivered(r, [e["id"] for e in evs], "seg")
    assert seg + ".json" not in h.new_files()
    assert r.unique_ids(False) == {e["id"] for e in evs}
    assert len(r.requests()) == 6
    assert_bodies_are_lines(r, evs)
    case.wait(lambda: h.metrics().value("tn_hookd_events_fanned_out_total", 0) >= before + 6,
              10, "tn_hookd_events_fanned_out_total +6")
    case.wait(lambda: h.metrics().value("tn_hookd_queue_depth", None, endpoint="seg") == 0,
              10, "queue depth 0")


def test_segment_with_a_corrupt_line(case):
    """A segment whose second line is not an event: that line goes to
    bad/<segment>.line2 with a log line, the other events are delivered."""
    h = case.hookd
    r = case.receiver()
    case.endpoint("segbad", r)
    before = h.metrics().value("tn_hookd_quarantined_total", 0)
    mark = h.log_mark()
    good = [envelope(case.tenants[0], i + 1) for i in range(3)]
    corrupt = '{"id":"%s","type":"mailbox.upd' % uuid7()
    seg = write_segment(h, [good[0], corrupt, good[1], good[2]])
    case.wait_delivered(r, [e["id"] for e in good], "segbad")
    bad = h.path("bad", seg + ".line2")
    case.wait(lambda: os.path.exists(bad), 10, "bad/%s.line2" % seg)
    with open(bad) as f:
        assert f.read() == corrupt + "\n"
    log = h.log_since(mark)
    assert seg in log and "line 2" in log, log
    assert r.unique_ids(False) == {e["id"] for e in good}
    assert_bodies_are_lines(r, good)
    assert seg + ".json" not in h.bad_files()
    case.wait(lambda: h.metrics().value("tn_hookd_quarantined_total", 0) >= before + 1,
              10, "tn_hookd_quarantined_total +1")


def test_corrupt_files_in_a_queue_go_to_bad(case):
    """Files found corrupt in hooks/<e>/queue/ are quarantined, never
    deleted: a truncated .retry file, a truncated segment and one larger
    than a segment can be go to bad/<e>.<name>, a bad line of a segment that has good ones to
    bad/<e>.<segment>.line<N> (its good event is delivered), and so does a
    corrupt dead letter that `tnctl events replay` moves back; each with a
    log line naming it, counted, tn-hookd still the same process."""
    h = case.hookd
    r = case.receiver()
    ep = case.endpoint("qcorrupt", r)
    qdir = h.path("hooks", ep, "queue")
    before = h.metrics().value("tn_hookd_quarantined_total", 0)
    mark = h.log_mark()
    pid = h.pid
    now = int(time.time() * 1000)
    retry_ev, seg_ev, good, dead_ev = (envelope(case.tenants[0], i + 1) for i in range(4))
    retry = "%s.2.%d.%d.retry" % (retry_ev["id"], now - 5000, now - 1000)
    planted = {
        retry: line(retry_ev)[:50],                              # no newline, cut
        seg_ev["id"] + ".json": line(seg_ev)[:70] + "\n",        # one cut line
        good["id"] + ".json": line(good) + "\n" + '{"id":"x"\n',  # line 2 bad
    }
    big = uuid7() + ".json"     # larger than a segment can be (8 MiB)
    planted[big] = (line(envelope(case.tenants[0], 9)) + "\n") * (8 * 1024 * 1024 // 150)
    for name, text in planted.items():
        # written beside the queue, not in it: tn-hookd's scan of the queue
        # removes any .*.tmp there (its own, left by a crash), and did so
        # while the 8 MiB file was being written (a loaded 2-CPU machine)
        tmp = os.path.join(case.workdir, ".plant.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(qdir, name))
    h.reload()      # SIGHUP: every queue is scanned (as by the rescan)
    want = {"%s.%s" % (ep, retry): planted[retry],
            "%s.%s.json" % (ep, seg_ev["id"]): planted[seg_ev["id"] + ".json"],
            "%s.%s.line2" % (ep, good["id"]): '{"id":"x"\n',
            "%s.%s" % (ep, big): planted[big]}
    case.wait(lambda: set(want) <= set(h.bad_files()), 20, "%s in bad/" % sorted(want))
    for name, text in want.items():
        with open(h.path("bad", name)) as f:
            assert f.read() == text, name
    case.wait_delivered(r, [good["id"]], ep)
    assert not h.queue_files(ep)
    # a dead letter that is not an event, replayed: quarantined as well
    os.makedirs(h.path("hooks", ep, "dead"), exist_ok=True)
    with open(h.path("hooks", ep, "dead", dead_ev["id"] + ".json"), "w") as f:
        f.write(line(dead_ev)[:40])
    res = h.tnctl("events", "replay", dead_ev["id"])
    assert res.returncode == 0, res.stderr
    dead_bad = "%s.%s.json" % (ep, dead_ev["id"])
    case.wait(lambda: dead_bad in h.bad_files(), 20, "%s in bad/" % dead_bad)
    assert not h.queue_files(ep) and not h.dead_files(ep)
    log = h.log_since(mark)
    for name in list(want) + [dead_bad]:
        assert "bad/" + name in log, "no log line names %s:\n%s" % (name, log)
    assert h.running() and h.pid == pid
    case.wait(lambda: h.metrics().value("tn_hookd_quarantined_total", 0) >= before + 5,
              10, "tn_hookd_quarantined_total +5")
    # tnctl events show finds an event quarantined from a queue
    res = h.tnctl("events", "show", retry_ev["id"])
    assert res.returncode == 0 and "bad/%s.%s" % (ep, retry) in res.stdout, \
        res.stdout + res.stderr
    # nothing was sent of the corrupt files
    assert r.unique_ids(False) == {good["id"]}


@pytest.mark.parametrize("interval,found", [("1h", False), ("2s", True)])
def test_periodic_rescan_finds_what_inotify_missed(own, tmp_path, interval, found):
    """A segment hard-linked into new/ while tn-hookd is stopped (SIGSTOP):
    link(2) makes no IN_MOVED_TO, so inotify never reports it.  With
    hookd_rescan_interval = 2s the periodic rescan delivers it within the
    interval (and a margin); with 1h it is still in new/ after 4 s, which
    shows that only the rescan finds it."""
    h = own({"hookd_rescan_interval": interval})
    c = Case(h, tmp_path, ["rescan-a"])
    try:
        r = c.receiver()
        c.endpoint("rescan", r)
        first = h.emit("mailbox.created", "rescan-a")       # seen by inotify
        c.wait_delivered(r, [first["id"]], "rescan")
        ev = envelope("rescan-a", 2)
        tmp = h.path("tmp", ev["id"] + ".json")
        with open(tmp, "w") as f:
            f.write(line(ev) + "\n")
        h.freeze()
        try:
            os.link(tmp, h.path("new", ev["id"] + ".json"))
            os.unlink(tmp)
        finally:
            h.thaw()
        if found:
            c.wait_delivered(r, [ev["id"]], "rescan", timeout=2 + 3)
            assert_bodies_are_lines(r, [ev])
        else:
            time.sleep(4)
            assert ev["id"] not in r.unique_ids(False)
            assert ev["id"] + ".json" in h.new_files()
    finally:
        c.close()


def test_show_lists_the_attempts_hookd_logged(case):
    """tnctl events show ID --json reads the delivery log tn-hookd wrote:
    an event answered 500 once, then 200, has attempt 1 (500, retry) and
    attempt 2 (200, delivered) for its endpoint, with latencies."""
    h = case.hookd
    r = case.receiver()
    r.fail_next(1, 500)
    case.endpoint("showlog", r)
    e = h.emit("mailbox.created", case.tenants[0])
    case.wait_delivered(r, [e["id"]], "showlog")
    case.wait_log("showlog", lambda d: d["id"] == e["id"] and d["outcome"] == "delivered",
                  "the delivered attempt")
    res = h.tnctl("events", "show", e["id"], "--json")
    assert res.returncode == 0, res.stderr
    o = json.loads(res.stdout)
    assert o["id"] == e["id"] and o["locations"] == [], o      # delivered: gone
    got = [(d["endpoint"], d["attempt"], d["status"], d["outcome"]) for d in o["deliveries"]]
    assert got == [("showlog", 1, 500, "retry"), ("showlog", 2, 200, "delivered")], o
    assert all(d["latency_ms"] >= 0 for d in o["deliveries"]), o


def test_segment_to_two_endpoints_with_different_filters(case):
    """One segment, two endpoints (mailbox.* and quota.*): each gets its
    own events of it, and the segment leaves both queues."""
    h = case.hookd
    rm, rq = case.receiver(), case.receiver()
    case.endpoint("seg-mbx", rm, events="mailbox.*")
    case.endpoint("seg-quota", rq, events="quota.*")
    types = ["mailbox.created", "quota.exceeded", "mailbox.deleted", "quota.warning",
             "tenant.created"]
    evs = [envelope(case.tenants[0], i + 1, t) for i, t in enumerate(types)]
    seg = write_segment(h, evs)
    want_m = {e["id"] for e in evs if e["type"].startswith("mailbox.")}
    want_q = {e["id"] for e in evs if e["type"].startswith("quota.")}
    case.wait_delivered(rm, want_m, "seg-mbx")
    case.wait_delivered(rq, want_q, "seg-quota")
    time.sleep(1.5)     # a rescan: nothing else turns up
    assert rm.unique_ids(False) == want_m
    assert rq.unique_ids(False) == want_q
    assert_bodies_are_lines(rm, evs)
    assert_bodies_are_lines(rq, evs)
    for e in ("seg-mbx", "seg-quota"):
        assert seg + ".json" not in h.queue_files(e)


def test_segment_event_failing_becomes_a_retry_file(case):
    """One event of a segment answered 500: it gets its own .retry file in
    the queue, the others are delivered and the segment file goes; once
    the receiver accepts it, the retry is delivered with the same body."""
    h = case.hookd
    r = case.receiver()
    evs = [envelope(case.tenants[1], i + 1) for i in range(4)]
    failing = evs[2]["id"]
    r.set_behaviour([{"ids": [failing], "status": 500}])
    case.endpoint("segretry", r)
    seg = write_segment(h, evs)
    case.wait_delivered(r, [e["id"] for e in evs if e["id"] != failing])

    def only_the_retry():
        names = h.queue_files("segretry")
        return len(names) == 1 and (RETRY_NAME.match(names[0]) or [None, None])[1] == failing
    case.wait(only_the_retry, 20, "only %s's .retry file in the queue" % failing)
    with open(h.path("hooks", "segretry", "queue", h.queue_files("segretry")[0])) as f:
        assert f.read() == line(evs[2]) + "\n"
    r.set_behaviour([])
    case.wait_delivered(r, [failing], "segretry", timeout=60)
    assert_bodies_are_lines(r, evs)
    assert seg + ".json" not in h.queue_files("segretry")


def test_hookd_killed_in_the_middle_of_a_segment(own, tmp_path):
    """tn-hookd killed -9 after some events of a segment were delivered:
    after the restart the segment is delivered again, every event under
    its own id and body (duplicates allowed), and nothing is left."""
    h = own()
    c = Case(h, tmp_path, ["crash-seg"])
    try:
        r = c.receiver()
        r.always(200, delay=0.3)
        c.endpoint("crashseg", r, concurrency=1)
        evs = [envelope("crash-seg", i + 1) for i in range(8)]
        seg = write_segment(h, evs)
        c.wait(lambda: len(r.unique_ids()) >= 2, 20, "2 events delivered")
        h.kill()
        got_before = r.unique_ids()
        assert got_before < {e["id"] for e in evs}
        assert seg + ".json" in h.queue_files("crashseg")
        r.always(200)
        h.start()
        c.wait_delivered(r, [e["id"] for e in evs], "crashseg")
        assert r.unique_ids(False) == {e["id"] for e in evs}
        assert len(r.requests()) > len(evs)        # some sent again
        assert_bodies_are_lines(r, evs)
        assert not h.pending(["crashseg"]) and not h.bad_files()
    finally:
        c.close()
