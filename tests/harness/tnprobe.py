"""tnprobe -- run tenantmail's programs from the integration tests.

Build directories come from the environment (scripts/test sets them):
  TN_BUILD_DIR       the normal build        (default: <top>/build)
  TN_ASAN_BUILD_DIR  ASan+UBSan build        (default: <top>/build-asan)
  TN_TSAN_BUILD_DIR  ThreadSanitizer build   (default: <top>/build-tsan)
A missing binary is an error, never a skip.
"""

import json
import os
import select
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

BUILD_ENV = {
    "plain": ("TN_BUILD_DIR", "build"),
    "asan": ("TN_ASAN_BUILD_DIR", "build-asan"),
    "tsan": ("TN_TSAN_BUILD_DIR", "build-tsan"),
}


def binary(rel, flavour="plain"):
    var, default = BUILD_ENV[flavour]
    path = os.path.join(os.environ.get(var, os.path.join(ROOT, default)), rel)
    if not os.access(path, os.X_OK):
        raise AssertionError("%s not built (%s); run scripts/build" % (path, var))
    return path


def _overrides(overrides):
    args = []
    for k, v in (overrides or {}).items():
        args += ["-o", "%s=%s" % (k, v)]
    return args


def tnctl(conf, *args, overrides=None, timeout=30, flavour="plain"):
    """Run tnctl; returns CompletedProcess (text)."""
    cmd = [binary("provisioning/tnctl", flavour), "-c", conf] + \
        _overrides(overrides) + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout,
                          errors="replace", text=True)


def probe(conf, *args, overrides=None, timeout=60, flavour="plain", env=None):
    cmd = [binary("tests/tn-probe", flavour), "-c", conf] + \
        _overrides(overrides) + list(args)
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, timeout=timeout,
                          errors="replace", text=True, env=e)


def resolve(conf, *addrs, overrides=None, flavour="plain"):
    """One-shot resolves (no in-process cache): list of JSON answers."""
    r = probe(conf, "resolve", *addrs, overrides=overrides, flavour=flavour)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


class Serve:
    """A long-lived `tn-probe serve`: in-process cache + subscriber."""

    def __init__(self, conf, overrides=None, flavour="plain", wait_subscribed=True):
        cmd = [binary("tests/tn-probe", flavour), "-c", conf] + \
            _overrides(overrides) + ["serve"]
        self.errfile = tempfile.TemporaryFile(mode="w+", errors="replace")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self.errfile, text=True,
                                     bufsize=1, errors="replace")
        assert self.read(10).get("ready"), "tn-probe serve did not start"
        if wait_subscribed:
            self.wait_subscribed(True)

    def read(self, timeout=15):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise AssertionError("tn-probe serve: no answer in %s s" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("tn-probe serve exited: %s" % self.stderr())
        return json.loads(line)

    def send(self, line, timeout=15):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def resolve(self, addr, timeout=15):
        return self.send("resolve " + addr, timeout)

    def stats(self):
        return self.send("stats")

    def wait_subscribed(self, state, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bool(self.stats()["subscribed"]) == state:
                return
            time.sleep(0.02)
        raise AssertionError("subscription did not become %s" % state)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        return self.stderr()

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
