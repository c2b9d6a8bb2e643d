#!/usr/bin/python3
"""tnrouter -- a private tn-lmtp-router for tenantmail's tests.

Python 3 standard library only, run as root.

    r = Router(workdir, conf, overrides={...}, start=True, wrapper=None)
    r.port, r.unix_path, r.control_path, r.metrics_port, r.pid
    r.start() / r.stop() -> exit status / r.kill()
    r.control("pools")          -> [lines], the last one "ok ..." or "error ..."
    r.metrics()                 -> the /metrics text
    r.lmtp()                    -> smtplib.LMTP connected over TCP (LHLO done)
    r.transaction(sender, rcpts, body, client=None)
                                -> ([(code, text) per RCPT], [(code, text)
                                   per accepted RCPT after DATA])
    r.log_text(), r.log_mark(), r.log_since(mark), r.wait_log(regex, mark)

For the modules' topologies of stores behind routers:

    start_stores(workdir, n)    -> n Dovecot LMTP stores accepting every user
    maildir_messages(store, user, marker)
                                -> the messages of user's Maildir holding marker
    with module_workdir(prefix) as workdir: ...

The binary is TN_BUILD_DIR/lmtp-router/tn-lmtp-router (tnprobe.binary);
wrapper is a command run in front of it (valgrind).
It runs in the foreground with -e: its log lines go to WORKDIR/router.log.
Its file descriptor limit is raised to 65536 (sessions are sockets).
smtplib.LMTP does not read LMTP's one reply per recipient after DATA:
transaction() sends the message itself and reads them with getreply().
"""

import contextlib
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import urllib.request

import tndovecot as td
import tnharness as th
import tnprobe


def _raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else max(hard, 4096)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Router:
    def __init__(self, workdir, conf, overrides=None, start=True, wrapper=None,
                 start_timeout=10.0):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        self.conf = conf
        self.port = th.free_port()
        self.metrics_port = th.free_port()
        self.unix_path = os.path.join(self.workdir, "lmtp.sock")
        self.control_path = os.path.join(self.workdir, "control.sock")
        self.overrides = {
            "router_listen": "127.0.0.1:%d unix:%s" % (self.port, self.unix_path),
            "router_control_socket": self.control_path,
            "router_metrics_listen": "127.0.0.1:%d" % self.metrics_port,
            "router_user": "",
        }
        self.overrides.update(overrides or {})
        self._log = os.path.join(self.workdir, "router.log")
        self.binary = tnprobe.binary("lmtp-router/tn-lmtp-router")
        self.wrapper = list(wrapper or [])
        self.start_timeout = start_timeout
        self.proc = None
        if start:
            self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        argv = self.wrapper + [self.binary, "-c", self.conf, "-e"]
        for k, v in self.overrides.items():
            argv += ["-o", "%s=%s" % (k, v)]
        return argv

    def start(self, timeout=None):
        timeout = timeout or self.start_timeout
        log = open(self._log, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_raise_nofile,
                                         cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise th.HarnessError("tn-lmtp-router exited with %s:\n%s"
                                      % (self.proc.returncode, th._tail(self._log)))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(200).startswith(b"220 "):
                        return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise th.HarnessError("tn-lmtp-router not ready:\n%s" % th._tail(self._log))
            time.sleep(0.02)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM; the exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- control and metrics ---------------------------------------------

    def control(self, command, timeout=10.0):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.control_path)
            s.sendall(command.encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                lines = data.decode(errors="replace").split("\n")
                if any(l.startswith(("ok", "error")) for l in lines[:-1]):
                    break
        lines = data.decode(errors="replace").split("\n")
        out = []
        for l in lines:
            out.append(l)
            if l.startswith(("ok", "error")):
                break
        return out

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=10) as f:
            return f.read().decode()

    def metric(self, name, **labels):
        """The value of one series (0.0 when absent)."""
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in self.metrics().splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
        return 0.0

    # -- LMTP --------------------------------------------------------------

    def lmtp(self, timeout=30, unix=False):
        if unix:
            c = smtplib.LMTP(self.unix_path, timeout=timeout)
        else:
            c = smtplib.LMTP("127.0.0.1", self.port, timeout=timeout)
        code, _ = c.ehlo("client.test")
        if code != 250:
            raise th.HarnessError("LHLO refused: %d" % code)
        return c

    def transaction(self, sender, rcpts, body, client=None, timeout=30):
        """One LMTP transaction; see the module docstring."""
        c = client or self.lmtp(timeout=timeout)
        try:
            return lmtp_transaction(c, sender, rcpts, body)
        finally:
            if client is None:
                try:
                    c.quit()
                except (smtplib.SMTPException, OSError):
                    c.close()

    # -- log ---------------------------------------------------------------

    def log_text(self):
        try:
            with open(self._log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        try:
            return os.path.getsize(self._log)
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        with open(self._log, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, regex, mark=0, timeout=5.0):
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.log_since(mark))
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("%r not in the router's log within %.1f s; tail:\n%s"
                                     % (regex, timeout, th._tail(self._log)))
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def _reply(c):
    code, text = c.getreply()
    return code, text.decode(errors="replace")


def lmtp_transaction(c, sender, rcpts, body):
    """MAIL, RCPTs, DATA on an smtplib.LMTP after LHLO: (rcpt replies,
    data replies), the data replies one per accepted recipient."""
    if isinstance(body, str):
        body = body.encode()
    code, text = c.mail(sender)
    if code != 250:
        raise th.HarnessError("MAIL refused: %d %s" % (code, text))
    rcpt_replies = []
    for r in rcpts:
        code, text = c.rcpt(r)
        rcpt_replies.append((code, text.decode(errors="replace")))
    accepted = sum(1 for code, _ in rcpt_replies if code // 100 == 2)
    c.putcmd("data")
    code, text = _reply(c)
    if code != 354:
        return rcpt_replies, [(code, text)]
    body = re.sub(rb"(?m)^\.", b"..", body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    c.send(body + b".\r\n")
    return rcpt_replies, [_reply(c) for _ in range(accepted)]


def start_stores(workdir, n=3):
    """n private Dovecot instances taking LMTP for every user (static
    passdb and userdb, Maildir as vmail) in workdir/store0..; all are
    stopped again if one fails to start."""
    passdb = "passdb {\n  driver = static\n  args = nopassword=y\n}\n"
    userdb = ("userdb {\n  driver = static\n"
              "  args = uid=vmail gid=vmail allow_all_users=yes\n}\n")
    stores = []
    try:
        for i in range(n):
            stores.append(td.Dovecot(os.path.join(str(workdir), "store%d" % i),
                                     passdb=passdb, userdb=userdb, protocols="lmtp imap"))
    except BaseException:
        td.stop_all(stores)
        raise
    return stores


def maildir_messages(store, user, marker):
    """The messages (bytes) in store's Maildir of user that hold marker."""
    found = []
    for sub in ("new", "cur"):
        d = os.path.join(store.maildir(user), sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            try:
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
            except FileNotFoundError:       # moved from new/ to cur/ meanwhile
                continue
            if marker.encode() in data:
                found.append(data)
    return found


@contextlib.contextmanager
def module_workdir(prefix):
    """A work directory for a module's stores and routers, not under
    /tmp/pytest-of-root (pytest resets that to 0700 whenever a session
    starts, and the stores' vmail processes must traverse it); removed
    afterwards unless TN_KEEP_WORKDIR is set (to keep the logs)."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    try:
        yield workdir
    finally:
        if not os.environ.get("TN_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
