#!/usr/bin/python3
"""tnhookd -- a private outbox and tn-hookd for the integration tests.

Python 3 standard library only.

    Hookd(workdir, params=None, start=False)

makes WORKDIR/outbox/{tmp,new,seq} (mode 2770, as the install step does),
WORKDIR/webhooks.d/ for endpoint files and WORKDIR/tenantmail.conf:

    outbox_dir = WORKDIR/outbox
    hookd_endpoints_dir = WORKDIR/webhooks.d
    hookd_metrics_listen = 127.0.0.1:<free port>
    hookd_user =                         (run as root: stay root)
    hookd_rescan_interval = 1s ... (TEST_PARAMS, then params=)

All in the global part: tnctl (events emit, list, enable, ...) reads the
same file and knows the hookd_* parameters.  The daemon is `$TN_BUILD_DIR/billing-hook/tn-hookd
-c CONF -e`, its stderr in WORKDIR/hookd.log; it is ready when
GET /metrics answers 200.  Hookd is a tnharness._Server: start, stop
(SIGTERM), kill (SIGKILL), freeze (SIGSTOP), thaw, restart.

Events are emitted with tnctl (events emit ... --json): emit() one,
emit_many() many from several tnctl processes at once, Emitter to run
that in the background while a test does something else.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from tnharness import _Server, free_port, HarnessError, _tail  # noqa: E402
from tnprobe import binary, tnctl  # noqa: E402

# Short timings so that retries happen within a test (docs/hookd.md has
# the production defaults).
TEST_PARAMS = {
    "hookd_rescan_interval": "1s",
    "hookd_retry_initial_delay": "200ms",
    "hookd_retry_max_delay": "1s",
    "hookd_log_level": "info",
}


def wait_until(cond, timeout, what, details=None, interval=0.05):
    """Poll cond() until it returns something true (returned) or raise
    AssertionError naming what, with details() (logs) appended."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = ""
            if details is not None:
                try:
                    extra = "\n" + details()
                except Exception as e:          # noqa: BLE001
                    extra = "\n(details failed: %r)" % e
            raise AssertionError("timed out after %.0f s waiting for %s%s"
                                 % (timeout, what, extra))
        time.sleep(interval)


# --- /metrics ----------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v):
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def sample_key(name, labels):
    if not labels:
        return name
    return "%s{%s}" % (name, ",".join('%s="%s"' % (k, labels[k])
                                      for k in sorted(labels)))


class Metrics(dict):
    """Prometheus text as a dict: 'name{a="x",b="y"}' (labels sorted) ->
    float.  .types: name -> type from the # TYPE lines."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        self.types = {}
        self.parsed = []                # (name, labels, value)
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3]
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise AssertionError("bad /metrics line: %r" % line)
            name, labels = m.group(1), {}
            if m.group(3):
                for lm in _LABEL.finditer(m.group(3)):
                    labels[lm.group(1)] = _unescape(lm.group(2))
            value = float(m.group(4))
            self.parsed.append((name, labels, value))
            self[sample_key(name, labels)] = value

    def names(self):
        return {n for n, _, _ in self.parsed} | set(self.types)

    def samples(self, name, **labels):
        return [(lb, v) for n, lb, v in self.parsed if n == name and
                all(lb.get(k) == str(v2) for k, v2 in labels.items())]

    def value(self, name, default=None, **labels):
        """Sum of the samples of name whose labels include labels."""
        s = self.samples(name, **labels)
        return sum(v for _, v in s) if s else default


# --- emitting events ----------------------------------------------------------

_WORKER = r'''
tnctl=$1 conf=$2
while IFS=' ' read -r type tenant data; do
	out=$("$tnctl" -c "$conf" events emit "$type" --tenant "$tenant" --data "$data" --json)
	rc=$?
	if [ $rc -eq 0 ]; then printf '%s\n' "$out"; else printf '{"error":%d}\n' $rc; fi
done
'''


class Emitter:
    """Emit specs [(type, tenant, data dict or None), ...] with procs tnctl
    loops at once (spec i goes to loop i % procs, so each loop emits its
    share in order).  start() returns at once; wait() returns the results
    in spec order: dicts {id, sequence, type, tenant} or {error: rc, ...}.
    """

    def __init__(self, conf, specs, procs=4, overrides=None, flavour="plain"):
        self.conf = conf
        self.specs = list(specs)
        self.procs = max(1, min(procs, len(self.specs) or 1))
        self.tnctl = binary("provisioning/tnctl", flavour)
        self.overrides = overrides or {}
        self.dir = None
        self.children = []
        self.results = None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="tn-emit-")
        conf = self.conf
        if self.overrides:
            # tnctl -o cannot be passed through the loop: a conf of its own
            conf = os.path.join(self.dir, "emit.conf")
            with open(self.conf) as src, open(conf, "w") as dst:
                head = src.read()
                extra = "".join("%s = %s\n" % kv for kv in self.overrides.items())
                # global settings must come before the first section
                i = head.find("\n[")
                dst.write(head if i < 0 else head[:i + 1])
                dst.write(extra)
                if i >= 0:
                    dst.write(head[i + 1:])
        for w in range(self.procs):
            lines = []
            for type_, tenant, data in self.specs[w::self.procs]:
                text = json.dumps(data if data is not None else {},
                                  separators=(",", ":"))
                lines.append("%s %s %s\n" % (type_, tenant, text))
            inp = os.path.join(self.dir, "in.%d" % w)
            with open(inp, "w") as f:
                f.writelines(lines)
            out = open(os.path.join(self.dir, "out.%d" % w), "wb")
            err = open(os.path.join(self.dir, "err.%d" % w), "wb")
            with open(inp, "rb") as stdin:
                p = subprocess.Popen(["sh", "-c", _WORKER, "sh", self.tnctl, conf],
                                     stdin=stdin, stdout=out, stderr=err,
                                     close_fds=True)
            out.close()
            err.close()
            self.children.append(p)
        return self

    def done(self):
        return all(p.poll() is not None for p in self.children)

    def wait(self, timeout=600):
        deadline = time.monotonic() + timeout
        for p in self.children:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in self.children:
                    q.kill()
                    q.wait()
                raise AssertionError("emitting %d events took over %d s"
                                     % (len(self.specs), timeout))
        results = [None] * len(self.specs)
        for w in range(self.procs):
            with open(os.path.join(self.dir, "out.%d" % w)) as f:
                outs = [json.loads(line) for line in f if line.strip()]
            idx = list(range(w, len(self.specs), self.procs))
            if len(outs) != len(idx):
                raise AssertionError("emit loop %d wrote %d results for %d events:"
                                     " %s" % (w, len(outs), len(idx), self.stderr()))
            for i, o in zip(idx, outs):
                o["type"], o["tenant"] = self.specs[i][0], self.specs[i][1]
                results[i] = o
        self.results = results
        return results

    def stderr(self):
        text = []
        for w in range(self.procs):
            text.append(_tail(os.path.join(self.dir, "err.%d" % w), 10))
        return "\n".join(text)

    def cleanup(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def specs_round_robin(n, tenants, types=("test.event",), data=None):
    """n specs cycling through tenants and types; data (a dict) gets the
    index as "i"."""
    out = []
    for i in range(n):
        d = dict(data or {})
        d["i"] = i
        out.append((types[i % len(types)], tenants[i % len(tenants)], d))
    return out


# --- the daemon ---------------------------------------------------------------

class Hookd(_Server):
    """A private outbox and tn-hookd (see the module doc)."""

    name = "tn-hookd"

    def __init__(self, workdir, params=None, start=False, flavour="plain"):
        super().__init__(workdir)
        self.flavour = flavour
        self.outbox = os.path.join(self.workdir, "outbox")
        for sub in ("tmp", "new", "seq"):
            d = os.path.join(self.outbox, sub)
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o2770)
        self.endpoints_dir = os.path.join(self.workdir, "webhooks.d")
        os.makedirs(self.endpoints_dir, exist_ok=True)
        os.chmod(self.endpoints_dir, 0o750)
        self.metrics_port = free_port()
        self.conf = os.path.join(self.workdir, "tenantmail.conf")
        self.params = dict(TEST_PARAMS)
        self.params["hookd_endpoints_dir"] = self.endpoints_dir
        self.params["hookd_metrics_listen"] = "127.0.0.1:%d" % self.metrics_port
        self.params["outbox_dir"] = self.outbox
        if os.geteuid() == 0:
            # empty: stay root (the tests' directories are root's)
            self.params["hookd_user"] = ""
        self.params.update(params or {})
        self.write_conf()
        if start:
            self.start()

    # configuration

    def write_conf(self):
        lines = ["# written by tests/harness/tnhookd.py"]
        lines += ["%s = %s" % kv for kv in self.params.items()]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def set_params(self, **params):
        """Change parameters (written at once; the daemon reads them at
        its next start)."""
        self.params.update({k: str(v) for k, v in params.items()})
        self.write_conf()

    def endpoint_path(self, name):
        return os.path.join(self.endpoints_dir, name + ".conf")

    def add_endpoint(self, name, url, secrets, reload=True, **opts):
        """Write NAME.conf (mode 0640): url, secrets (list), and any of
        events, tenants (lists or str), concurrency, connect_timeout,
        timeout, tls_ca_file, enabled.  SIGHUP the daemon when running."""
        lines = ["url = %s" % url, "secrets = %s" % " ".join(secrets)]
        for k, v in opts.items():
            if isinstance(v, (list, tuple)):
                v = " ".join(v)
            lines.append("%s = %s" % (k, v))
        path = self.endpoint_path(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o640)
        os.rename(tmp, path)
        if reload:
            self.reload()

    def remove_endpoint(self, name, reload=True):
        try:
            os.unlink(self.endpoint_path(name))
        except FileNotFoundError:
            pass
        if reload:
            self.reload()

    def reload(self):
        """SIGHUP: re-read the endpoint files."""
        if self.running():
            self._signal(signal.SIGHUP)

    # _Server

    def _logfile(self):
        return os.path.join(self.workdir, "hookd.log")

    def _argv(self):
        return [binary("billing-hook/tn-hookd", self.flavour), "-c", self.conf, "-e"]

    def _ready(self):
        try:
            return self._get("/metrics", timeout=1)[0] == 200
        except OSError:
            return False

    def start(self, timeout=30.0):
        super().start(timeout)

    def check(self, *extra):
        """tn-hookd -n: (returncode, stdout, stderr)."""
        r = subprocess.run(self._argv()[:-1] + ["-n"] + list(extra),
                           capture_output=True, text=True, errors="replace",
                           timeout=30)
        return r.returncode, r.stdout, r.stderr

    def _get(self, path, timeout=5):
        c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()

    def metrics(self, timeout=5):
        status, text = self._get("/metrics", timeout)
        if status != 200:
            raise AssertionError("/metrics answered %d: %s" % (status, text[:500]))
        return Metrics(text)

    # the spool

    def path(self, *parts):
        return os.path.join(self.outbox, *parts)

    def _list(self, *parts):
        try:
            return sorted(n for n in os.listdir(self.path(*parts))
                          if not n.startswith("."))
        except FileNotFoundError:
            return []

    def new_files(self):
        return self._list("new")

    def bad_files(self):
        return self._list("bad")

    def queue_files(self, endpoint):
        return self._list("hooks", endpoint, "queue")

    def dead_files(self, endpoint):
        return self._list("hooks", endpoint, "dead")

    def disabled_path(self, endpoint):
        return self.path("hooks", endpoint, "disabled")

    def deliveries(self):
        """The delivery log's records (deliveries.log.1 first)."""
        out = []
        for name in ("deliveries.log.1", "deliveries.log"):
            try:
                with open(self.path("hooks", name), errors="replace") as f:
                    for line in f:
                        if line.endswith("\n"):
                            try:
                                out.append(json.loads(line))
                            except ValueError:
                                pass
            except FileNotFoundError:
                pass
        return out

    def pending(self, endpoints):
        """new/ and the queues of endpoints, as one list (empty: drained)."""
        out = ["new/" + n for n in self.new_files()]
        for e in endpoints:
            out += ["%s/queue/%s" % (e, n) for n in self.queue_files(e)]
        return out

    def summary(self, endpoints=(), lines=40):
        """Log tail, spool listing and delivery log tail for a failure."""
        parts = ["tn-hookd running=%s pid=%s; log tail:\n%s"
                 % (self.running(), self.pid, _tail(self._logfile(), lines))]
        parts.append("new/: %d files; bad/: %s"
                     % (len(self.new_files()), self.bad_files()[:10]))
        for e in endpoints:
            q = self.queue_files(e)
            parts.append("%s: queue %d %s, dead %d, disabled %s"
                         % (e, len(q), q[:5], len(self.dead_files(e)),
                            os.path.exists(self.disabled_path(e))))
        tail = self.deliveries()[-10:]
        parts.append("deliveries.log tail:\n" +
                     "\n".join(json.dumps(d) for d in tail))
        return "\n".join(parts)

    # producing

    def emit(self, type_, tenant, data=None, overrides=None):
        """One event with tnctl; returns {id, sequence, type, tenant}."""
        r = self.emit_raw(type_, tenant, data, overrides)
        if r.returncode != 0:
            raise AssertionError("tnctl events emit failed (%d): %s"
                                 % (r.returncode, r.stderr))
        out = json.loads(r.stdout)
        out["type"], out["tenant"] = type_, tenant
        return out

    def emit_raw(self, type_, tenant, data=None, overrides=None):
        args = ["events", "emit", type_, "--tenant", tenant, "--json"]
        if data is not None:
            args += ["--data", json.dumps(data)]
        return tnctl(self.conf, *args, overrides=overrides, flavour=self.flavour)

    def emit_many(self, specs, procs=4, timeout=600, check=True):
        """Emit specs (see Emitter) from procs tnctl loops at once."""
        em = Emitter(self.conf, specs, procs, flavour=self.flavour).start()
        try:
            res = em.wait(timeout)
            if check:
                bad = [r for r in res if "error" in r]
                if bad:
                    raise AssertionError("%d of %d emits failed: %s\n%s"
                                         % (len(bad), len(res), bad[:3], em.stderr()))
            return res
        finally:
            em.cleanup()

    def tnctl(self, *args, timeout=30):
        """tnctl -c CONF args... (CompletedProcess, text)."""
        return tnctl(self.conf, *args, timeout=timeout, flavour=self.flavour)

    def emitter(self, specs, procs=4):
        """An Emitter started in the background: call .wait() later."""
        return Emitter(self.conf, specs, procs, flavour=self.flavour).start()


class Killer(threading.Thread):
    """Kill -9 a Hookd every interval (a random time in [lo, hi]) and start
    it again at once, until stop().  kills counts them; errors keeps what a
    restart raised (the test reports it)."""

    def __init__(self, hookd, lo=0.5, hi=1.0):
        super().__init__(daemon=True)
        import random
        self.random = random.Random(1234)
        self.hookd, self.lo, self.hi = hookd, lo, hi
        self.kills = 0
        self.errors = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.random.uniform(self.lo, self.hi)):
            try:
                self.hookd.kill()
                self.kills += 1
                self.hookd.start()
            except Exception as e:      # noqa: BLE001
                self.errors.append(repr(e))
                return

    def stop(self):
        self._halt.set()
        self.join(60)


__all__ = ["Hookd", "Emitter", "Killer", "Metrics", "specs_round_robin",
           "wait_until", "HarnessError"]
