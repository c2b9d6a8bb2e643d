"""tnctl events list, show, replay, stats, enable and verify against spool
states built by hand (docs/hookd.md "tnctl events").

No tn-hookd runs here: events are appended with `tnctl events emit`, then
linked and renamed into hooks/<endpoint>/queue|dead exactly as tn-hookd
would, with a disabled marker and hand-written delivery logs, so each
command meets a known state.  verify uses the docs/events.md test vector.

Run the ASan build too: TN_BUILD_DIR=<top>/build-h5-asan; every run is
checked for sanitizer reports.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time

import pytest

from tnprobe import binary

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SANITIZER = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
             "runtime error:")
SECRET_OK = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def run(conf, *args, overrides=None, stdin=None):
    cmd = [binary("provisioning/tnctl"), "-c", conf]
    for k, v in (overrides or {}).items():
        cmd += ["-o", "%s=%s" % (k, v)]
    r = subprocess.run(cmd + list(args), capture_output=True, timeout=30,
                       input=stdin if stdin is not None else b"")
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    for word in SANITIZER:
        assert word not in err, err
    return subprocess.CompletedProcess(r.args, r.returncode, out, err)


def fmt_ms(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + \
        ".%03dZ" % (ms % 1000)


def uuid7(ms):
    r = int.from_bytes(os.urandom(10), "big")
    v = (ms << 80) | (7 << 76) | ((r & 0xfff) << 64) | (2 << 62) | (r >> 18)
    h = "%032x" % v
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class Spool:
    """An outbox with tn-hookd's spool under it, built by hand."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path / "outbox")
        for sub in ("tmp", "new", "seq"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o2770)
        self.endpoints_dir = str(tmp_path / "webhooks.d")
        os.mkdir(self.endpoints_dir)
        self.conf = str(tmp_path / "empty.conf")
        open(self.conf, "w").close()
        self.now = int(time.time() * 1000)

    def tnctl(self, *args, stdin=None):
        return run(self.conf, *args, stdin=stdin, overrides={
            "outbox_dir": self.dir, "hookd_endpoints_dir": self.endpoints_dir})

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def emit(self, type_, tenant):
        r = self.tnctl("events", "emit", type_, "--tenant", tenant, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["id"]

    def endpoint(self, name, enabled="yes"):
        for sub in ("queue", "dead"):
            os.makedirs(self.path("hooks", name, sub), exist_ok=True)
        with open(os.path.join(self.endpoints_dir, name + ".conf"), "w") as f:
            f.write("url = https://%s.example/hook\nsecrets = %s\nenabled = %s\n"
                    % (name, SECRET_OK, enabled))

    def fan_out(self, ev_id, *places):
        """Link new/<id>.json to each (endpoint, kind, name) and drop new/."""
        src = self.path("new", ev_id + ".json")
        for endpoint, kind, name in places:
            os.link(src, self.path("hooks", endpoint, kind, name or ev_id + ".json"))
        os.unlink(src)

    def log(self, name, records):
        with open(self.path("hooks", name), "w") as f:
            for rec in records:
                f.write(rec if isinstance(rec, str) else json.dumps(rec, separators=(",", ":")))
                f.write("\n")


def attempt(at_ms, endpoint, ev_id, n, status, latency, outcome, error=None):
    return {"at": fmt_ms(at_ms), "endpoint": endpoint, "id": ev_id,
            "type": "mailbox.created", "tenant": "acme", "sequence": 1,
            "attempt": n, "status": status, "latency_ms": latency,
            "outcome": outcome, "error": error}


@pytest.fixture
def spool(tmp_path):
    """e[0]: queued for billing (never attempted) and crm (2 failures);
    e[1]: billing dead letter; e[2]: crm dead letter and billing queue;
    e[3]: still in new/; e[4]: billing dead letter; delivered: only in
    the log; crm disabled by a 410; archive configured with enabled = no
    and no directory; one quarantined file in bad/."""
    s = Spool(tmp_path)
    s.endpoint("billing")
    s.endpoint("crm")
    with open(os.path.join(s.endpoints_dir, "archive.conf"), "w") as f:
        f.write("url = https://archive.example/\nsecrets = %s\nenabled = no\n" % SECRET_OK)
    s.e = [s.emit("mailbox.created", "acme"), s.emit("mailbox.updated", "acme"),
           s.emit("tenant.created", "globex"), s.emit("mailbox.deleted", "acme"),
           s.emit("domain.created", "globex")]
    s.first_ms, s.next_ms = s.now - 60000, s.now + 300000
    s.retry_name = "%s.2.%d.%d.retry" % (s.e[0], s.first_ms, s.next_ms)
    s.fan_out(s.e[0], ("billing", "queue", None), ("crm", "queue", s.retry_name))
    s.fan_out(s.e[1], ("billing", "dead", None))
    s.fan_out(s.e[2], ("crm", "dead", None), ("billing", "queue", None))
    s.fan_out(s.e[4], ("billing", "dead", None))
    with open(s.path("hooks", "crm", "disabled"), "w") as f:
        f.write('{"at":"%s","status":410,"reason":"the endpoint answered 410 Gone"}\n'
                % fmt_ms(s.now - 600000))
    os.makedirs(s.path("bad"))
    s.bad_id = uuid7(s.now - 5000)
    with open(s.path("bad", s.bad_id + ".json"), "w") as f:
        f.write('{"id":"%s","type":"mailbox.cr' % s.bad_id)
    s.delivered = uuid7(s.now - 4000)
    hour_ago = s.now - 2 * 3600 * 1000
    s.log("deliveries.log.1", [
        attempt(hour_ago, "billing", s.e[1], 1, 500, 900.0, "retry", "HTTP 500"),
    ])
    s.log("deliveries.log", [
        attempt(hour_ago + 1000, "billing", s.e[1], 2, 500, 800.0, "retry"),
        attempt(s.now - 50000, "billing", s.e[1], 3, 400, 10.0, "dead", "permanent: 400"),
        attempt(s.now - 40000, "crm", s.e[0], 1, 500, 100.0, "retry", "HTTP 500"),
        "this line is not JSON",
        attempt(s.now - 30000, "crm", s.e[0], 2, 0, 20.0, "retry",
                "Connection refused\x1b[31m"),
        attempt(s.now - 20000, "billing", s.delivered, 1, 200, 5.0, "delivered"),
    ])
    return s


# --- list ----------------------------------------------------------------------

def test_list_pending_oldest_first(spool):
    r = spool.tnctl("events", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "ENDPOINT", "TYPE", "TENANT", "SEQUENCE",
                                "ATTEMPTS", "NEXT"]
    rows = [l.split() for l in lines[1:]]
    assert [(x[0], x[1]) for x in rows] == [
        (spool.e[0], "billing"), (spool.e[0], "crm"), (spool.e[2], "billing"),
        (spool.e[3], "-")]
    assert rows[0][2:7] == ["mailbox.created", "acme", "1", "0", "now"]
    assert rows[1][5] == "2" and rows[1][6] == "in" and re.match(r"^[45]m\d\ds$", rows[1][7])
    assert rows[2][2:5] == ["tenant.created", "globex", "1"]
    assert rows[3][2:7] == ["mailbox.deleted", "acme", "3", "0", "-"]


def test_list_json(spool):
    r = spool.tnctl("events", "list", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert [(i["id"], i["endpoint"], i["state"]) for i in items] == [
        (spool.e[0], "billing", "queued"), (spool.e[0], "crm", "queued"),
        (spool.e[2], "billing", "queued"), (spool.e[3], None, "new")]
    crm = items[1]
    assert crm["attempts"] == 2
    assert crm["first_attempt_at"] == fmt_ms(spool.first_ms)
    assert crm["next_attempt_at"] == fmt_ms(spool.next_ms)
    assert (crm["type"], crm["tenant"], crm["sequence"]) == ("mailbox.created", "acme", 1)
    assert TIME_RE.match(crm["occurred_at"])
    assert items[0]["attempts"] == 0 and items[0]["next_attempt_at"] is None


def test_list_dead_endpoint_limit(spool):
    r = spool.tnctl("events", "list", "--dead")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "AGE"
    assert [l.split()[:2] for l in lines[1:]] == [
        [spool.e[1], "billing"], [spool.e[2], "crm"], [spool.e[4], "billing"]]
    r = spool.tnctl("events", "list", "--dead", "--endpoint", "billing", "--json")
    assert [i["id"] for i in json.loads(r.stdout)] == [spool.e[1], spool.e[4]]
    assert all(i["state"] == "dead" and i["attempts"] is None
               for i in json.loads(r.stdout))
    r = spool.tnctl("events", "list", "--endpoint", "crm", "--json")
    assert [(i["id"], i["attempts"]) for i in json.loads(r.stdout)] == [(spool.e[0], 2)]
    r = spool.tnctl("events", "list", "--limit", "2", "--json")
    assert [(i["id"], i["endpoint"]) for i in json.loads(r.stdout)] == [
        (spool.e[0], "billing"), (spool.e[0], "crm")]


def test_list_empty_and_errors(spool, tmp_path):
    r = spool.tnctl("events", "list", "--endpoint", "nobody", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert "nobody" in r.stderr
    for args, code in ((["--limit", "0"], 64), (["--limit", "x"], 64),
                       (["--endpoint", "Bad/"], 65), (["extra"], 64)):
        r = spool.tnctl("events", "list", *args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
    r = run(spool.conf, "events", "list", overrides={"outbox_dir": str(tmp_path / "none")})
    assert r.returncode == 75 and "none" in r.stderr


# --- show ----------------------------------------------------------------------

def test_show_queued_event_with_its_attempts(spool):
    r = spool.tnctl("events", "show", spool.e[0])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^type:\s+mailbox\.created$", out, re.M)
    assert re.search(r"^tenant:\s+acme$", out, re.M)
    assert "billing: queued, not attempted yet" in out
    assert "crm: queued, 2 failed attempts since %s, next %s" % (
        fmt_ms(spool.first_ms), fmt_ms(spool.next_ms)) in out
    attempts = [l for l in out.splitlines() if " attempt " in l]
    assert len(attempts) == 2
    assert "status 500" in attempts[0] and "HTTP 500" in attempts[0]
    assert "\x1b" not in out and "\\x1b" in attempts[1]      # sanitised


def test_show_json(spool):
    r = spool.tnctl("events", "show", "--json", spool.e[2])
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert o["id"] == spool.e[2] and o["event"]["type"] == "tenant.created"
    assert o["error"] is None
    assert [(l["state"], l["endpoint"]) for l in o["locations"]] == [
        ("queued", "billing"), ("dead", "crm")]
    assert o["deliveries"] == []
    r = spool.tnctl("events", "show", spool.e[1], "--json")
    o = json.loads(r.stdout)
    assert [d["attempt"] for d in o["deliveries"]] == [1, 2, 3]   # .1 first
    assert o["deliveries"][2]["outcome"] == "dead"


def test_show_new_delivered_bad_unknown(spool):
    r = spool.tnctl("events", "show", spool.e[3])
    assert r.returncode == 0 and "new/ (not yet fanned out" in r.stdout
    r = spool.tnctl("events", "show", spool.delivered)
    assert r.returncode == 0, r.stderr
    assert "nowhere in the spool" in r.stdout and "delivered" in r.stdout
    r = spool.tnctl("events", "show", spool.bad_id, "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert o["event"] is None and "not JSON" in o["error"]
    assert o["locations"] == [{"state": "bad", "file": spool.bad_id + ".json"}]
    r = spool.tnctl("events", "show", uuid7(spool.now))
    assert r.returncode == 1 and "not in the spool" in r.stderr
    assert spool.tnctl("events", "show", "not-an-id").returncode == 65
    assert spool.tnctl("events", "show", spool.e[0].upper()).returncode == 65
    assert spool.tnctl("events", "show").returncode == 64


# --- replay --------------------------------------------------------------------

def dead(spool, endpoint):
    return sorted(os.listdir(spool.path("hooks", endpoint, "dead")))


def queue(spool, endpoint):
    return sorted(os.listdir(spool.path("hooks", endpoint, "queue")))


def test_replay_ids(spool):
    r = spool.tnctl("events", "replay", spool.e[1])
    assert r.returncode == 0, r.stderr
    assert "replayed %s to billing" % spool.e[1] in r.stdout
    assert "1 dead letter replayed" in r.stdout
    assert dead(spool, "billing") == [spool.e[4] + ".json"]
    assert spool.e[1] + ".json" in queue(spool, "billing")
    r = spool.tnctl("events", "replay", spool.e[1])
    assert r.returncode == 1 and "no such dead letter" in r.stderr
    unknown = uuid7(spool.now)
    r = spool.tnctl("events", "replay", unknown, spool.e[4], spool.e[2],
                    "--endpoint", "billing")
    assert r.returncode == 1 and unknown in r.stderr and spool.e[2] in r.stderr
    assert "1 dead letter replayed" in r.stdout
    assert dead(spool, "billing") == [] and dead(spool, "crm") == [spool.e[2] + ".json"]
    r = spool.tnctl("events", "replay", spool.e[2])
    assert r.returncode == 0 and dead(spool, "crm") == []
    assert queue(spool, "crm") == sorted([spool.retry_name, spool.e[2] + ".json"])


def old_dead_letter(spool, endpoint, occurred_ms):
    ev_id = uuid7(occurred_ms)
    ev = {"id": ev_id, "type": "mailbox.created", "occurred_at": fmt_ms(occurred_ms),
          "tenant": "acme", "sequence": 99, "data": {}}
    with open(spool.path("hooks", endpoint, "dead", ev_id + ".json"), "w") as f:
        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    return ev_id


def test_replay_since(spool):
    old = old_dead_letter(spool, "billing", spool.now - 5 * 86400 * 1000)
    r = spool.tnctl("events", "replay", "--since", fmt_ms(spool.now + 3600 * 1000))
    assert r.returncode == 0 and "nothing to replay" in r.stdout
    r = spool.tnctl("events", "replay", "--since", "2h", "--endpoint", "crm")
    assert r.returncode == 0, r.stderr
    assert "1 dead letter replayed" in r.stdout and dead(spool, "crm") == []
    assert len(dead(spool, "billing")) == 3
    r = spool.tnctl("events", "replay", "--since", "2h")
    assert r.returncode == 0 and "2 dead letters replayed" in r.stdout
    assert dead(spool, "billing") == [old + ".json"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S+01:00",
                          time.gmtime((spool.now - 6 * 86400 * 1000) // 1000 + 3600))
    r = spool.tnctl("events", "replay", "--since", since)
    assert r.returncode == 0 and "replayed %s to billing" % old in r.stdout
    assert dead(spool, "billing") == [] and old + ".json" in queue(spool, "billing")


def test_replay_errors(spool):
    for args, code in ((["--since", "yesterday"], 65), (["not-an-id"], 65),
                       ([spool.e[1], "--since", "1h"], 64), ([], 64),
                       (["--since", "1h", "--endpoint", "nobody"], 1),
                       (["--since", "1h", "--endpoint", "No"], 65)):
        r = spool.tnctl("events", "replay", *args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
    assert dead(spool, "billing") == sorted([spool.e[1] + ".json", spool.e[4] + ".json"])


# --- stats ---------------------------------------------------------------------

def test_stats_json(spool):
    r = spool.tnctl("events", "stats", "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert (o["new_backlog"], o["bad"], o["endpoint_files_error"]) == (1, 1, None)
    eps = {e["name"]: e for e in o["endpoints"]}
    assert sorted(eps) == ["archive", "billing", "crm"]
    b, c, a = eps["billing"], eps["crm"], eps["archive"]
    assert (b["queue_depth"], b["dead_letters"], b["disabled"]) == (2, 2, None)
    assert (b["configured"], b["enabled"]) == (True, True)
    assert 0 <= b["oldest_pending_seconds"] < 60
    assert b["last_hour"] == {"delivered": 1, "retry": 0, "dead": 1, "disabled": 0,
                              "paused": 0, "latency_ms": {"p50": 5.0, "p99": 10.0}}
    assert c["disabled"]["status"] == 410 and "Gone" in c["disabled"]["reason"]
    assert (c["queue_depth"], c["dead_letters"]) == (1, 1)
    assert c["last_hour"]["retry"] == 2
    assert c["last_hour"]["latency_ms"] == {"p50": 20.0, "p99": 100.0}
    assert (a["configured"], a["enabled"], a["queue_depth"]) == (True, False, 0)
    assert a["oldest_pending_seconds"] is None and a["last_hour"]["latency_ms"] is None


def test_stats_text(spool):
    r = spool.tnctl("events", "stats")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^new/ backlog:\s+1 event not yet fanned out$", out, re.M)
    assert re.search(r"^bad/:\s+1 quarantined file$", out, re.M)
    blocks = {b.split("\n", 1)[0]: b for b in out.split("\n\n")[1:]}
    assert "DISABLED since" in blocks["crm"] and "tnctl events enable crm" in blocks["crm"]
    assert "enabled = no" in blocks["archive"]
    assert "state:         enabled" in blocks["billing"]
    assert "1 delivered, 0 retry, 1 dead" in blocks["billing"]
    assert "p50 5.0 ms, p99 10.0 ms" in blocks["billing"]


def test_stats_without_endpoint_files(spool):
    os.rename(spool.endpoints_dir, spool.endpoints_dir + ".off")
    r = spool.tnctl("events", "stats", "--json")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert "webhooks.d" in o["endpoint_files_error"]
    assert [(e["name"], e["configured"]) for e in o["endpoints"]] == [
        ("billing", None), ("crm", None)]
    assert spool.tnctl("events", "stats", "extra").returncode == 64


# --- enable --------------------------------------------------------------------

def test_enable(spool):
    marker = spool.path("hooks", "crm", "disabled")
    r = spool.tnctl("events", "enable", "crm")
    assert r.returncode == 0 and "crm enabled" in r.stdout
    assert not os.path.exists(marker)
    r = spool.tnctl("events", "enable", "crm")
    assert r.returncode == 0 and "not disabled" in r.stdout
    assert spool.tnctl("events", "enable", "nobody").returncode == 1
    assert spool.tnctl("events", "enable", "archive").returncode == 1   # no directory
    assert spool.tnctl("events", "enable", "Bad").returncode == 65
    assert spool.tnctl("events", "enable").returncode == 64
    spool.endpoint("archive", enabled="no")
    open(spool.path("hooks", "archive", "disabled"), "w").close()
    r = spool.tnctl("events", "enable", "archive")
    assert r.returncode == 0 and "enabled = no" in r.stdout


# --- verify --------------------------------------------------------------------

def docs_vector():
    """(secret, request lines, body) of docs/events.md's test vector."""
    text = open(os.path.join(ROOT, "docs", "events.md"), encoding="utf-8").read()
    block = re.search(r"```\n(POST .*?)\n```", text, re.S).group(1)
    head, body = block.split("\n\n", 1)
    secret = re.search(r"Its secret is\s+`(whsec_[^`]+)`", text).group(1)
    return secret, head.split("\n"), body.encode()


def header(lines, name):
    return next(l.split(":", 1)[1].strip() for l in lines
                if l.lower().startswith(name + ":"))


def write_request(tmp_path, lines, body, eol="\r\n", trailer=b""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "request.http"
    path.write_bytes((eol.join(lines) + eol + eol).encode() + body + trailer)
    return str(path)


@pytest.fixture
def vector(tmp_path):
    secret, lines, body = docs_vector()
    assert int(header(lines, "content-length")) == len(body)
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    return str(conf), secret, lines, body


def verify(conf, *args, stdin=None):
    return run(conf, "events", "verify", *args, stdin=stdin)


def test_verify_request_file(vector, tmp_path):
    conf, secret, lines, body = vector
    for eol in ("\r\n", "\n"):
        req = write_request(tmp_path, lines, body, eol, trailer=b"\n")
        r = verify(conf, "--secret", secret, "--tolerance", "0", "--request", req)
        assert (r.returncode, r.stdout) == (0, "OK\n"), (eol, r.stdout, r.stderr)
    r = verify(conf, "--secret", secret, "--request", req)            # 2026-03-02: stale
    assert r.returncode == 1 and r.stdout.startswith("STALE:"), r.stdout
    r = verify(conf, "--secret", secret, "--tolerance", "5m", "--request", req)
    assert r.returncode == 1 and r.stdout.startswith("STALE:")
    r = verify(conf, "--secret", secret, "--tolerance", "0", "--request", "-",
               stdin=open(req, "rb").read())
    assert r.returncode == 0, r.stdout + r.stderr
    mixed = ["WEBHOOK-ID:" + l.split(":", 1)[1] if l.lower().startswith("webhook-id")
             else l for l in lines]
    mixed = [l.replace("webhook-timestamp", "Webhook-Timestamp") for l in mixed]
    r = verify(conf, "--secret", secret, "--tolerance", "0", "--request",
               write_request(tmp_path, mixed, body))
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_without_content_length_takes_the_rest(vector, tmp_path):
    conf, secret, lines, body = vector
    lines = [l for l in lines if not l.lower().startswith("content-length")]
    r = verify(conf, "--secret", secret, "--tolerance", "0", "--request",
               write_request(tmp_path, lines, body))
    assert r.returncode == 0, r.stdout + r.stderr
    r = verify(conf, "--secret", secret, "--tolerance", "0", "--request",
               write_request(tmp_path, lines, body, trailer=b"\n"))
    assert r.returncode == 1 and r.stdout.startswith("MISMATCH:")


def test_verify_explicit_values(vector, tmp_path):
    conf, secret, lines, body = vector
    values = ["--id", header(lines, "webhook-id"), "--timestamp",
              header(lines, "webhook-timestamp"), "--signature",
              header(lines, "webhook-signature")]
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    r = verify(conf, "--secret", secret, "--tolerance", "0", *values, "--body", str(body_file))
    assert (r.returncode, r.stdout) == (0, "OK\n"), r.stderr
    r = verify(conf, "--secret", secret, "--tolerance", "0", *values, "--body", "-",
               stdin=body)
    assert r.returncode == 0, r.stdout + r.stderr
    r = verify(conf, "--secret", SECRET_OK, "--secret", secret, "--tolerance", "0",
               *values, "--body", "-", stdin=body)
    assert r.returncode == 0, r.stdout + r.stderr                       # rotation
    tampered = body.replace(b'"sequence":5', b'"sequence":6')
    r = verify(conf, "--secret", secret, "--tolerance", "0", *values, "--body", "-",
               stdin=tampered)
    assert r.returncode == 1 and r.stdout.startswith("MISMATCH:")
    r = verify(conf, "--secret", SECRET_OK, "--tolerance", "0", *values, "--body", "-",
               stdin=body)
    assert r.returncode == 1 and r.stdout.startswith("MISMATCH:")


def test_verify_fresh_request_within_tolerance(vector, tmp_path):
    conf, secret, lines, body = vector
    key = base64.b64decode(secret[len("whsec_"):])
    ts = str(int(time.time()))
    ev_id = header(lines, "webhook-id")
    sig = base64.b64encode(hmac.new(key, ("%s.%s." % (ev_id, ts)).encode() + body,
                                    hashlib.sha256).digest()).decode()
    args = ["--id", ev_id, "--timestamp", ts, "--signature", "v1," + sig, "--body", "-"]
    r = verify(conf, "--secret", secret, *args, stdin=body)
    assert (r.returncode, r.stdout) == (0, "OK\n"), r.stderr
    old = str(int(ts) - 600)
    r = verify(conf, "--secret", secret, "--tolerance", "5m", "--id", ev_id,
               "--timestamp", old, "--signature", "v1," + sig, "--body", "-", stdin=body)
    assert r.returncode == 1 and r.stdout.startswith("STALE:")


def test_verify_malformed_is_65(vector, tmp_path):
    conf, secret, lines, body = vector
    no_sig = [l for l in lines if not l.lower().startswith("webhook-signature")]
    twice = lines + [l for l in lines if l.lower().startswith("webhook-id")]
    longer = [re.sub(r"(?i)^content-length: \d+", "Content-Length: 9999", l) for l in lines]
    cases = {
        "no signature header": write_request(tmp_path / "a", no_sig, body),
        "header twice": write_request(tmp_path / "b", twice, body),
        "truncated body": write_request(tmp_path / "c", longer, body),
        "no request line": write_request(tmp_path / "d", lines[1:], body),
    }
    (tmp_path / "e").mkdir()
    nohead = tmp_path / "e" / "request.http"
    nohead.write_bytes("\r\n".join(lines).encode())
    cases["no empty line"] = str(nohead)
    for what, path in cases.items():
        r = verify(conf, "--secret", secret, "--tolerance", "0", "--request", path)
        assert r.returncode == 65, (what, r.stdout, r.stderr)
    values = ["--id", header(lines, "webhook-id"), "--timestamp",
              header(lines, "webhook-timestamp")]
    for extra, sec in ((["--signature", "v1,not-base64!"], secret),
                       (["--signature", header(lines, "webhook-signature")], "whsec_short"),
                       (["--signature", header(lines, "webhook-signature")], "nope")):
        r = verify(conf, "--secret", sec, "--tolerance", "0", *values, *extra)
        assert r.returncode == 65, (extra, sec, r.stdout, r.stderr)
    r = verify(conf, "--secret", secret, "--request", str(tmp_path / "missing"))
    assert r.returncode == 65


@pytest.mark.parametrize("args", [
    [],
    ["--request", "x"],
    ["--secret", SECRET_OK],
    ["--secret", SECRET_OK, "--request", "x", "--id", "y"],
    ["--secret", SECRET_OK, "--id", "y", "--timestamp", "1"],
    ["--secret", SECRET_OK, "--request", "x", "extra"],
])
def test_verify_usage(vector, args):
    conf = vector[0]
    r = verify(conf, *args)
    assert r.returncode == 64, (r.stdout, r.stderr)
    assert "usage: tnctl events verify" in r.stderr


# --- configuration -------------------------------------------------------------

def test_config_with_hookd_parameters(tmp_path):
    conf = tmp_path / "tenantmail.conf"
    conf.write_text("hookd_endpoints_dir = /srv/webhooks.d\nhookd_retry_window = 2d\n"
                    "[tn-hookd]\nhookd_log_level = debug\n")
    r = run(str(conf), "config", "-n")
    assert r.returncode == 0, r.stderr
    assert "hookd_endpoints_dir = /srv/webhooks.d" in r.stdout
    assert "hookd_retry_window = 2d" in r.stdout
    r = run(str(conf), "config", "--doc")
    names = [l.split("\t")[0] for l in r.stdout.splitlines()]
    assert {"hookd_endpoints_dir", "hookd_retry_window", "hookd_log_level"} <= set(names)
    conf.write_text("hookd_retry_window = soon\n")
    assert run(str(conf), "config").returncode == 78


# --- segments ------------------------------------------------------------------

def test_segments_list_show_stats(tmp_path):
    """A segment (one file, several events, one per line) in new/ and one
    in a queue beside the retry file of one of its events: list shows
    each event once (the retry state for that one), show finds an event
    that is not the file's first, stats counts events."""
    s = Spool(tmp_path)
    s.endpoint("billing")
    ids = [s.emit("mailbox.created", "acme") for _ in range(6)]

    def segment(where, members):
        text = b""
        for i in members:
            with open(s.path("new", i + ".json"), "rb") as f:
                text += f.read()
            os.unlink(s.path("new", i + ".json"))
        with open(os.path.join(where, members[0] + ".json"), "wb") as f:
            f.write(text)
    segment(s.path("new"), ids[:3])
    segment(s.path("hooks", "billing", "queue"), ids[3:])
    retry = "%s.1.%d.%d.retry" % (ids[4], s.now - 1000, s.now + 600000)
    with open(s.path("hooks", "billing", "queue", retry), "w") as f:
        with open(s.path("hooks", "billing", "queue", ids[3] + ".json")) as seg:
            f.write(seg.read().splitlines(True)[1])
    r = s.tnctl("events", "list", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert sorted((i["id"], i["state"], i["attempts"]) for i in items) == sorted(
        [(i, "new", 0) for i in ids[:3]] + [(ids[3], "queued", 0), (ids[4], "queued", 1),
                                             (ids[5], "queued", 0)])
    assert all(i["type"] == "mailbox.created" for i in items)
    for i, where in ((ids[1], "new"), (ids[5], "queued")):
        r = s.tnctl("events", "show", i, "--json")
        assert r.returncode == 0, r.stderr
        o = json.loads(r.stdout)
        assert o["event"]["id"] == i and o["error"] is None
        assert [loc["state"] for loc in o["locations"]] == [where]
    r = s.tnctl("events", "stats", "--json")
    o = json.loads(r.stdout)
    assert o["new_backlog"] == 3
    # the queue's segment counts its lines until it goes, the retry file too
    assert {e["name"]: e["queue_depth"] for e in o["endpoints"]}["billing"] == 4
