#!/usr/bin/python3
"""tnreceiver -- a real HTTP webhook receiver for tn-hookd's tests.

Python 3 standard library only.  The server runs as its own process (so a
test can SIGKILL or SIGSTOP it) on 127.0.0.1, answers every POST, and
records each request as one JSON line in DIR/requests.jsonl *before* it
answers (a request whose answer the client saw is always recorded; a
record may exist for an answer the client never saw: that is a
duplicate delivery, which webhooks allow).

    python3 tnreceiver.py serve --port P --dir DIR [--secret whsec_...]...
                                [--tls-cert PEM --tls-key PEM]

With --tls-cert and --tls-key it speaks HTTPS only (the handshake is done
in the request's thread, so a client that never finishes one blocks
nothing else).

A record:

    {"pid": 123, "n": 7, "t": 1790000000.123, "t_answer": 1790000000.124,
     "method": "POST", "path": "/hook", "headers": {"webhook-id": ...},
     "body_b64": "...", "status": 200, "rule": 0,
     "sig": {"ok": true, "signatures": 2, "matches": [0, 1],
             "skew": 0.4, "error": null}}

headers are lower-cased (the last value of a repeated header wins);
"matches" has one entry per v1 signature in the header: the index of the
secret it verifies with, or null.  "ok" is true when any v1 signature
verifies with any secret (docs/events.md), null when no secret is known.
"rule" is the index of the behaviour rule that answered, null for the
default (200).

Behaviour: DIR/control.json, re-read on every request (so it can be
changed while the server is down or frozen):

    {"generation": 3, "secrets": ["whsec_..."],
     "rules": [{"status": 500, "count": 5},
               {"status": 503, "until": 1790000010.0,
                "headers": {"Retry-After": "2"}},
               {"path": "/slow", "delay": 3.0, "status": 200},
               {"ids": ["019c..."], "status": 410}]}

Rules are tried in order; the first that matches answers.  A rule matches
when every condition it has holds: "path" (prefix of the request path),
"ids" (the webhook-id is one of them), "until" (now is before this Unix
time), "fraction" (a random draw per request: the rule matches that
fraction of the requests, e.g. 0.1), "count" (the rule has answered fewer
than this many requests since the generation was written: counters live
in the server's memory and start again when the generation changes or
the server restarts).  It
answers "status" (default 200) with "headers" and "body" after sleeping
"delay" seconds.  No rule matching: 200.  "secrets" replaces the
--secret list when present.

A request that a rule delays is also recorded when it arrives, as
{"kind": "arrival", "t", "path", "id", "rule"} (Receiver.arrivals()); the
full record ("kind": "request") follows when it is answered.

GET /__ready answers 200 and is not recorded (the readiness probe).

The Receiver class (tests) starts and controls one server process; it
reuses tnharness._Server (start/stop/kill/freeze/thaw/restart, logs).
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import ssl
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

REQUESTS = "requests.jsonl"
CONTROL = "control.json"
MAX_BODY = 16 * 1024 * 1024


# --- the server process ----------------------------------------------------

def secret_key(secret):
    """whsec_<base64> -> key bytes."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret)


def check_signature(secrets, headers, body, now):
    """The verdict recorded with each request (see the module doc)."""
    verdict = {"ok": None, "signatures": 0, "matches": [], "skew": None,
               "error": None}
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    if msg_id is None or ts is None or sig is None:
        verdict["ok"] = False
        verdict["error"] = "missing webhook-id, -timestamp or -signature"
        return verdict
    try:
        verdict["skew"] = now - int(ts)
    except ValueError:
        verdict["ok"] = False
        verdict["error"] = "webhook-timestamp is not an integer"
        return verdict
    macs = []
    for s in secrets:
        try:
            key = secret_key(s)
        except (ValueError, TypeError):
            verdict["error"] = "bad secret %r" % s[:10]
            continue
        mac = hmac.new(key, ("%s.%s." % (msg_id, ts)).encode() + body,
                       hashlib.sha256)
        macs.append(base64.b64encode(mac.digest()).decode())
    for element in sig.split(" "):
        if not element.startswith("v1,"):
            continue
        verdict["signatures"] += 1
        match = None
        for i, expected in enumerate(macs):
            if hmac.compare_digest(expected, element[3:]):
                match = i
                break
        verdict["matches"].append(match)
    if secrets:
        verdict["ok"] = any(m is not None for m in verdict["matches"])
        if not verdict["ok"] and verdict["error"] is None:
            verdict["error"] = "no v1 signature matches"
    return verdict


class _State:
    def __init__(self, directory, secrets):
        self.dir = directory
        self.secrets = list(secrets)
        self.lock = threading.Lock()
        self.counters = {}          # (generation, rule index) -> answered
        self.n = 0
        path = os.path.join(directory, REQUESTS)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A record cut short by a SIGKILL must not swallow the next one.
        size = os.fstat(self.fd).st_size
        if size > 0:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def control(self):
        try:
            with open(os.path.join(self.dir, CONTROL)) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            sys.stderr.write("tnreceiver: control.json: %s\n" % e)
            return {}

    def choose(self, ctl, path, msg_id, now):
        """(rule index or None, rule) for a request."""
        gen = ctl.get("generation", 0)
        for i, rule in enumerate(ctl.get("rules", [])):
            if "path" in rule and not path.startswith(rule["path"]):
                continue
            if "ids" in rule and msg_id not in rule["ids"]:
                continue
            if "until" in rule and now >= rule["until"]:
                continue
            if "fraction" in rule and random.random() >= rule["fraction"]:
                continue
            if "count" in rule:
                with self.lock:
                    used = self.counters.get((gen, i), 0)
                    if used >= rule["count"]:
                        continue
                    self.counters[(gen, i)] = used + 1
            return i, rule
        return None, {}

    def record(self, rec):
        with self.lock:
            self.n += 1
            rec["n"] = self.n
            line = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
            os.write(self.fd, line)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tnreceiver/1"

    def log_message(self, fmt, *args):     # requests are in requests.jsonl
        pass

    def do_GET(self):
        if self.path == "/__ready":
            self._answer(200, {}, b"ready\n")
        else:
            self._answer(404, {}, b"not found\n")

    def do_POST(self):
        t = time.time()
        state = self.server.state
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._answer(400, {}, b"bad Content-Length\n")
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        ctl = state.control()
        secrets = ctl.get("secrets", state.secrets)
        msg_id = headers.get("webhook-id")
        index, rule = state.choose(ctl, self.path, msg_id, t)
        if rule.get("delay"):
            # the test can see that a slow request has arrived
            state.record({"pid": os.getpid(), "kind": "arrival", "t": t,
                          "path": self.path, "id": msg_id, "rule": index})
            time.sleep(float(rule["delay"]))
        status = int(rule.get("status", 200))
        extra = dict(rule.get("headers", {}))
        reply = rule.get("body", "ok\n" if status < 300 else "status %d\n" % status)
        rec = {"pid": os.getpid(), "kind": "request", "t": t, "t_answer": time.time(),
               "method": self.command, "path": self.path, "headers": headers,
               "body_b64": base64.b64encode(body).decode(), "status": status,
               "rule": index,
               "sig": check_signature(secrets, headers, body, time.time())}
        state.record(rec)
        self._answer(status, extra, reply.encode())

    def _answer(self, status, headers, body):
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            # the client gave up (its timeout): it will send again
            self.close_connection = True


def serve(argv):
    ap = argparse.ArgumentParser(prog="tnreceiver.py serve")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args(argv)
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                     do_handshake_on_connect=False)
    srv.daemon_threads = True
    srv.state = _State(args.dir, args.secret)
    sys.stderr.write("tnreceiver: pid %d listening on 127.0.0.1:%d\n"
                     % (os.getpid(), args.port))
    sys.stderr.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


# --- the test side ---------------------------------------------------------

try:
    from tnharness import _Server, free_port
except ImportError:     # the server process needs none of it
    _Server = object


class Request(dict):
    """One recorded request; .body is the raw bytes, .id the webhook-id."""

    @property
    def body(self):
        return base64.b64decode(self["body_b64"])

    @property
    def id(self):
        return self["headers"].get("webhook-id")

    @property
    def ok(self):
        return 200 <= self["status"] < 300

    def event(self):
        """The body parsed as JSON, or None."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Receiver(_Server):
    """A tnreceiver server process in WORKDIR (requests.jsonl, control.json,
    receiver.log).  The port stays the same across restarts, so an
    endpoint file can name it before the server is started."""

    name = "tnreceiver"

    def __init__(self, workdir, port=None, secrets=(), start=True, tls=None):
        """tls: (cert file, key file) for HTTPS."""
        super().__init__(workdir)
        self.port = port or free_port()
        self.secrets = list(secrets)
        self.tls = tls
        self.generation = 0
        self._records = []
        self._arrivals = []
        self._offset = 0
        self.bad_lines = 0
        self.set_behaviour([])
        if start:
            self.start()

    def url(self, path="/hook"):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls else "http", self.port, path)

    def _logfile(self):
        return os.path.join(self.workdir, "receiver.log")

    def _argv(self):
        argv = [sys.executable, os.path.abspath(__file__), "serve",
                "--port", str(self.port), "--dir", self.workdir]
        for s in self.secrets:
            argv += ["--secret", s]
        if self.tls:
            argv += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        return argv

    def _ready(self):
        try:
            if self.tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=1,
                                                context=ctx)
            else:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                c.request("GET", "/__ready")
                return c.getresponse().status == 200
            finally:
                c.close()
        except OSError:
            return False

    # behaviour

    def set_behaviour(self, rules, secrets=None):
        """Replace the rules (list of dicts, see the module doc); the
        counters of "count" rules start again."""
        self.generation += 1
        ctl = {"generation": self.generation, "rules": list(rules)}
        if secrets is not None:
            ctl["secrets"] = list(secrets)
        path = os.path.join(self.workdir, CONTROL)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(ctl, f)
        os.rename(tmp, path)

    def always(self, status, headers=None, delay=None):
        rule = {"status": status}
        if headers:
            rule["headers"] = headers
        if delay:
            rule["delay"] = delay
        self.set_behaviour([rule])

    def fail_next(self, count, status=500, headers=None):
        """Answer status to the next count requests, then 200."""
        rule = {"status": status, "count": count}
        if headers:
            rule["headers"] = headers
        self.set_behaviour([rule])

    def fail_for(self, seconds, status=500, headers=None):
        """Answer status until seconds from now, then 200."""
        rule = {"status": status, "until": time.time() + seconds}
        if headers:
            rule["headers"] = headers
        self.set_behaviour([rule])

    # what arrived

    def requests(self):
        """Every recorded request so far (a list of Request, in the order
        they were recorded)."""
        path = os.path.join(self.workdir, REQUESTS)
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return list(self._records)
        end = data.rfind(b"\n")
        if end >= 0:
            for line in data[:end].split(b"\n"):
                if not line:
                    continue
                try:
                    rec = Request(json.loads(line))
                except ValueError:
                    self.bad_lines += 1     # cut short by a SIGKILL
                    continue
                if rec.get("kind") == "arrival":
                    self._arrivals.append(rec)
                else:
                    self._records.append(rec)
            self._offset += end + 1
        return list(self._records)

    def arrivals(self):
        """Requests that a "delay" rule holds: recorded when they arrive
        (dicts with t, path, id, rule); their answers are in requests()."""
        self.requests()
        return list(self._arrivals)

    def delivered(self):
        """webhook-id -> list of the requests answered 2xx for it."""
        out = {}
        for r in self.requests():
            if r.ok:
                out.setdefault(r.id, []).append(r)
        return out

    def unique_ids(self, ok_only=True):
        """The webhook-ids received (by default: answered 2xx)."""
        return {r.id for r in self.requests() if r.ok or not ok_only}

    def events(self):
        """id -> the event (parsed body) of each request answered 2xx."""
        return {i: rs[0].event() for i, rs in self.delivered().items()}

    def summary(self, last=15):
        """A few lines for a failure message."""
        reqs = self.requests()
        lines = ["receiver %s: %d requests, %d unique ids answered 2xx"
                 % (self.url(""), len(reqs), len(self.unique_ids()))]
        for r in reqs[-last:]:
            lines.append("  %.3f %s %s status=%s id=%s sig=%s"
                         % (r["t"], r["method"], r["path"], r["status"], r.id,
                            r["sig"].get("ok")))
        lines.append(self.log_text()[-2000:])
        return "\n".join(lines)


def main(argv):
    if len(argv) >= 2 and argv[1] == "serve":
        return serve(argv[2:])
    sys.stderr.write("usage: tnreceiver.py serve --port P --dir DIR "
                     "[--secret whsec_...]...\n")
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
