#!/usr/bin/env python3
"""webhook-receiver.py -- a tenantmail billing-event receiver to start from.

Receives the signed POSTs of tn-hookd (docs/events.md, docs/billing.md)
and does what every receiver must do, with the Python 3 standard library
only:

  1. verify the Standard Webhooks signature over the raw body with every
     configured secret (rotation), and reject a webhook-timestamp more than
     --tolerance seconds away from the local clock: 401;
  2. store the event in SQLite, deduplicated by its id: a duplicate gets
     200 again and is not processed a second time;
  3. record per (tenant, origin) the highest sequence seen and log a gap;
  4. answer 200 only after the event is committed to the database;
  5. process stored events afterwards, in a worker thread, in sequence
     order per (tenant, origin): replace process_event() with your billing
     logic.

Secrets: WEBHOOK_SECRETS (whsec_... values separated by spaces or commas)
and/or --secret. Prefer the environment: other local users can read a
command line.

Run:  WEBHOOK_SECRETS=whsec_... ./webhook-receiver.py --port 8080 --db events.sqlite3
This example speaks plain HTTP: put it behind a TLS-terminating proxy, or
on a private network, in production.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import http.server
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time

LOG = logging.getLogger("webhook-receiver")

KEY_MIN, KEY_MAX = 16, 64          # bytes, as lib/tn-webhook.h
BODY_MAX = 1 << 20                 # events are at most 64 KiB
TIMESTAMP = re.compile(r"[0-9]{1,19}\Z")          # ASCII digits only
MSG_ID = re.compile(r"[\x21-\x7e]{1,128}\Z")      # printable, bounded
TENANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
SEQUENCE_MAX = (1 << 63) - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id           TEXT PRIMARY KEY,       -- webhook-id: the deduplication key
    tenant       TEXT NOT NULL,
    origin       TEXT NOT NULL,          -- "" when the envelope has none
    sequence     INTEGER NOT NULL,
    type         TEXT NOT NULL,
    body         BLOB NOT NULL,          -- the raw signed bytes
    received_at  REAL NOT NULL,
    processed_at REAL                    -- NULL: not processed yet
);
CREATE INDEX IF NOT EXISTS events_pending
    ON events (tenant, origin, sequence) WHERE processed_at IS NULL;
CREATE TABLE IF NOT EXISTS streams (     -- highest sequence seen
    tenant  TEXT NOT NULL,
    origin  TEXT NOT NULL,
    highest INTEGER NOT NULL,
    PRIMARY KEY (tenant, origin)
);
CREATE TABLE IF NOT EXISTS gaps (        -- numbers never seen: resynchronise
    tenant        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    first_missing INTEGER NOT NULL,
    last_missing  INTEGER NOT NULL,
    detected_at   REAL NOT NULL
);
"""


# -- signatures ---------------------------------------------------------------

def parse_secret(text):
    """"whsec_<base64>" -> key bytes; ValueError that never shows the secret."""
    if not text.startswith("whsec_"):
        raise ValueError("a secret does not start with whsec_")
    try:
        key = base64.b64decode(text[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a secret is not base64 after whsec_") from None
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise ValueError("a secret's key is not %d to %d bytes" % (KEY_MIN, KEY_MAX))
    return key


def verify(keys, msg_id, timestamp, signature, body, now, tolerance):
    """None when the request is authentic, else the reason (for the log).

    msg_id, timestamp, signature: the header values (str, or None when
    missing); body: the raw bytes received; tolerance 0 disables the time
    check."""
    if msg_id is None or timestamp is None or signature is None:
        return "webhook-id, webhook-timestamp or webhook-signature missing"
    if not MSG_ID.match(msg_id):
        return "webhook-id is not printable ASCII"
    if not TIMESTAMP.match(timestamp):
        return "webhook-timestamp is not decimal Unix seconds"
    if tolerance and abs(now - int(timestamp)) > tolerance:
        return "webhook-timestamp outside the tolerance (stale or replayed)"
    # The header text is what the sender signed; http.server decoded the
    # header bytes as Latin-1, so encoding them back gives those bytes.
    signed = ("%s.%s." % (msg_id, timestamp)).encode("latin-1") + body
    expected = [base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest())
                for k in keys]
    for element in signature.split(" "):
        if not element.startswith("v1,"):
            continue                    # other versions, empty elements
        given = element[3:].encode("latin-1")
        if any(hmac.compare_digest(given, e) for e in expected):
            return None
    return "no webhook-signature matches"


# -- the envelope -------------------------------------------------------------

def parse_envelope(body, msg_id):
    """The fields we index, or ValueError. The body stays stored as received."""
    try:
        ev = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body is not JSON") from None
    if not isinstance(ev, dict):
        raise ValueError("body is not a JSON object")
    if ev.get("id") != msg_id:
        raise ValueError("envelope id differs from webhook-id")
    tenant, seq, etype = ev.get("tenant"), ev.get("sequence"), ev.get("type")
    origin = ev.get("origin") or ""     # older producers send no origin
    if not isinstance(tenant, str) or not TENANT.match(tenant):
        raise ValueError("envelope tenant missing or malformed")
    if type(seq) is not int or not 1 <= seq <= SEQUENCE_MAX:
        raise ValueError("envelope sequence missing or malformed")
    if not isinstance(etype, str) or not isinstance(origin, str):
        raise ValueError("envelope type or origin malformed")
    return {"id": msg_id, "tenant": tenant, "origin": origin[:255],
            "sequence": seq, "type": etype[:64]}


def show(text):
    """Untrusted text for a log line: quoted, escaped, bounded."""
    return repr(text[:100])


# -- storage ------------------------------------------------------------------

class Store:
    """One SQLite database; one connection per request or thread."""

    def __init__(self, path):
        self.path = path
        db = self.connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    def connect(self):
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")   # committed means on disk
        return db

    def add(self, ev, body):
        """Store an event once. Returns (stored, gap, note): gap is True
        when numbers are missing before it, note says what for the log."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")       # one writer: no lost update
            cur = db.execute(
                "INSERT OR IGNORE INTO events (id, tenant, origin, sequence,"
                " type, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev["id"], ev["tenant"], ev["origin"], ev["sequence"],
                 ev["type"], body, time.time()))
            if cur.rowcount == 0:
                db.execute("ROLLBACK")
                return False, False, None
            gap, note = self._track(db, ev)
            db.execute("COMMIT")
            return True, gap, note
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @staticmethod
    def _track(db, ev):
        key = (ev["tenant"], ev["origin"])
        seq = ev["sequence"]
        row = db.execute("SELECT highest FROM streams WHERE tenant = ? AND"
                         " origin = ?", key).fetchone()
        if row is None:
            # The first event seen of this stream: an endpoint added later
            # starts in the middle, which is no gap.
            db.execute("INSERT INTO streams VALUES (?, ?, ?)", key + (seq,))
            return False, None
        highest = row[0]
        if seq <= highest:
            return False, "late: sequence %d after %d" % (seq, highest)
        db.execute("UPDATE streams SET highest = ? WHERE tenant = ? AND"
                   " origin = ?", (seq,) + key)
        if seq == highest + 1:
            return False, None
        db.execute("INSERT INTO gaps VALUES (?, ?, ?, ?, ?)",
                   key + (highest + 1, seq - 1, time.time()))
        return True, "gap: sequence %d..%d missing (got %d after %d)" % (
            highest + 1, seq - 1, seq, highest)


# -- processing, after the answer ----------------------------------------------

def process_event(db, event):
    """Your billing logic. It runs inside the transaction that marks the
    event processed: keep your writes in this database (db) and each event
    is applied exactly once, even across crashes."""
    LOG.info("processed id=%s type=%s tenant=%s origin=%s sequence=%d",
             show(event["id"]), show(event["type"]), show(event["tenant"]),
             show(event.get("origin") or ""), event["sequence"])


class Worker(threading.Thread):
    """Processes stored events in (tenant, origin, sequence) order."""

    def __init__(self, store):
        super().__init__(name="worker", daemon=True)
        self.store, self.wake, self.stopping = store, threading.Event(), False

    def run(self):
        db = self.store.connect()
        while not self.stopping:
            try:
                busy = self.process_some(db)
            except Exception:           # retried after the pause
                LOG.exception("processing stopped; retrying in 5 s")
                busy = False
            if not busy:
                self.wake.wait(5)
                self.wake.clear()
        db.close()

    def process_some(self, db):
        rows = db.execute("SELECT id, body FROM events WHERE processed_at IS"
                          " NULL ORDER BY tenant, origin, sequence"
                          " LIMIT 100").fetchall()
        for msg_id, body in rows:
            db.execute("BEGIN IMMEDIATE")
            try:
                process_event(db, json.loads(body))
                db.execute("UPDATE events SET processed_at = ? WHERE id = ?",
                           (time.time(), msg_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return bool(rows)

    def stop(self):
        self.stopping = True
        self.wake.set()


# -- HTTP ---------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive: tn-hookd reuses connections
    server_version = "tenantmail-webhook-receiver"
    timeout = 30                        # seconds per socket read

    def do_POST(self):
        app = self.server.app
        if self.path.split("?", 1)[0] != app.path:
            return self.answer(404, "not found")
        body = self.read_body()
        if body is None:
            return None
        msg_id = self.headers.get("webhook-id")
        why = verify(app.keys, msg_id, self.headers.get("webhook-timestamp"),
                     self.headers.get("webhook-signature"), body, time.time(),
                     app.tolerance)
        if why is not None:
            LOG.warning("rejected id=%s from %s: %s", show(msg_id or ""),
                        self.client_address[0], why)
            return self.answer(401, "bad signature")
        return self.accept(body, msg_id)

    def accept(self, body, msg_id):
        try:
            ev = parse_envelope(body, msg_id)
        except ValueError as e:
            LOG.error("signed but unusable id=%s: %s", show(msg_id), e)
            return self.answer(400, "bad event")
        try:
            stored, gap, note = self.server.app.store.add(ev, body)
        except sqlite3.Error as e:
            LOG.error("cannot store id=%s: %s", show(msg_id), e)
            return self.answer(500, "not stored")   # tn-hookd retries
        where = "tenant=%s origin=%s" % (show(ev["tenant"]), show(ev["origin"]))
        if not stored:
            LOG.info("duplicate id=%s %s sequence=%d: already stored",
                     show(msg_id), where, ev["sequence"])
        elif note is not None:
            LOG.warning("%s %s (id=%s)%s", note, where, show(msg_id),
                        "; resynchronise this tenant" if gap else "")
        self.answer(200, "ok")
        if stored:
            self.server.app.worker.wake.set()
        return None

    def read_body(self):
        length = self.headers.get("Content-Length") or ""
        if self.headers.get("Transfer-Encoding") or \
                not re.fullmatch(r"[0-9]{1,10}", length):
            self.close_connection = True
            self.answer(411, "Content-Length required")
            return None
        if int(length) > BODY_MAX:
            self.close_connection = True
            self.answer(413, "too large")
            return None
        try:
            body = self.rfile.read(int(length))
        except OSError:                 # timeout, reset
            body = b""
        if len(body) != int(length):
            self.close_connection = True
            return None
        return body

    def answer(self, code, text):
        data = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):     # access log: debug only
        LOG.debug("%s %s", self.client_address[0], fmt % args)


class App:
    def __init__(self, keys, store, worker, path, tolerance):
        self.keys, self.store, self.worker = keys, store, worker
        self.path, self.tolerance = path, tolerance


# -- main ---------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Receive tenantmail billing events (signed webhooks from"
        " tn-hookd): verify, deduplicate, store in SQLite, answer 200, then"
        " process in order. See docs/billing.md.",
        epilog="Secrets come from --secret and from the environment variable"
        " WEBHOOK_SECRETS (whsec_... values separated by spaces or commas);"
        " a request is accepted when its signature matches any of them, so"
        " during a rotation give both the old and the new one."
        " Exit status: 0 after SIGTERM or Ctrl-C, 2 on a usage or secret error.")
    p.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080,
                   help="TCP port; 0 picks a free one, logged at start"
                   " (default: %(default)s)")
    p.add_argument("--path", default="/hooks/tenantmail",
                   help="URL path events are POSTed to (default: %(default)s)")
    p.add_argument("--db", default="webhook-events.sqlite3", metavar="FILE",
                   help="SQLite database, created if missing"
                   " (default: %(default)s)")
    p.add_argument("--secret", action="append", default=[], metavar="whsec_...",
                   help="a signing secret; repeat during rotation (visible in"
                   " ps: prefer WEBHOOK_SECRETS)")
    p.add_argument("--tolerance", type=int, default=300, metavar="SECONDS",
                   help="largest difference between webhook-timestamp and"
                   " the local clock; 0 disables the check (tests only)"
                   " (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    if args.tolerance < 0:
        p.error("--tolerance must be 0 or more")
    texts = args.secret + re.split(r"[\s,]+", os.environ.get("WEBHOOK_SECRETS", ""))
    texts = [t for t in texts if t]
    if not texts:
        p.error("no secret: set WEBHOOK_SECRETS or give --secret")
    try:
        args.keys = [parse_secret(t) for t in texts]
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr,
                        level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    store = Store(args.db)
    worker = Worker(store)
    server = http.server.ThreadingHTTPServer((args.listen, args.port), Handler)
    server.daemon_threads = True
    server.app = App(args.keys, store, worker, args.path, args.tolerance)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=server.shutdown).start())
    worker.start()
    host, port = server.server_address[:2]
    LOG.info("listening on %s:%d%s with %d secret(s), tolerance %ds, db %s",
             host, port, args.path, len(args.keys), args.tolerance, args.db)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    worker.stop()
    worker.join(10)
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
