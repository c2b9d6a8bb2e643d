#!/usr/bin/python3
"""tnpostfix -- private Postfix 3.7 instances for tenantmail's tests.

Python 3 standard library only, run as root (postfix -c, postqueue -c and
sendmail -C need no alternate_config_directories then).  Everything
listens on 127.0.0.1 and lives in one work directory:

    WORKDIR/etc/main.cf, master.cf   config_directory (postfix -c)
    WORKDIR/queue/                   queue_directory (Postfix makes it)
    /tmp/tnpostfix-data-XXXX/        data_directory, outside WORKDIR (see
                                     below); removed by stop()
    WORKDIR/postfix.log              maillog_file (postlogd): tests read it

    p = Postfix(workdir, main_cf=None, master_extra="", services=None,
                start=True)
    p.smtp_port, p.submission_port (None unless services asks for it),
    p.config_dir, p.log_path, p.queue_dir
    p.start() / p.stop() / p.reload() / p.flush()
    p.postconf(*args)        -> stdout of "postconf -c DIR ARGS..."
    p.queue_count()          -> messages in the queue (postqueue -j)
    p.log_text(), p.log_mark(), p.log_since(mark)
    p.wait_log(regex, mark=0, timeout=10)      -> re.Match
    p.wait_sent(n, mark=0, timeout=20)         -> the n status=sent lines
    missing_prerequisites()  -> [] or what this machine lacks

main_cf: a dict of main.cf parameters added to or overriding the
defaults below (values as Postfix text; a list is joined with ", ").
master_extra: text appended to master.cf as is.
services: None (one smtpd listener, .smtp_port) or a dict naming the
listeners wanted, each with a dict of "-o name=value" overrides (or None):
    {"smtp": {"smtpd_milters": "inet:127.0.0.1:9999"},
     "submission": {"smtpd_sasl_auth_enable": "yes"}}
"submission" gets its own free port (.submission_port) and
syslog_name postfix/submission, so its log lines can be told apart.

Defaults: inet_protocols = ipv4, mydestination empty, no DNS
(smtp_dns_support_level = disabled), smtpd_peername_lookup = no,
compatibility_level = 3.6, mynetworks 127.0.0.0/8, retries after 1 s
(queue_run_delay, minimal_backoff_time, maximal_backoff_time), every
service with chroot "n", a postlogd service writing WORKDIR/postfix.log.

Facts this relies on (see /work/shared/RUNNING-SERVERS.md):
  * postfix(1) prints its errors only to a terminal, else exits 1 with
    nothing said: after a failed start the harness runs "postfix check"
    and the start again under "script -qec" to capture them.
  * Config files written within the last second make "postfix start"
    wait ~2 s: their mtimes are set 10 s in the past before every start
    and reload.
  * Readiness is the 220 banner of every listener.
  * The master holds WORKDIR/queue/pid/master.pid; stop() waits until
    that process is gone (PID 1 reaps slowly: a zombie counts as gone).
  * The master opens data_directory/master.lock as the postfix user, so
    every directory above it must be traversable by that user. pytest
    resets /tmp/pytest-of-root to 0700 whenever any pytest session
    starts (colleagues run theirs at the same time): the data directory
    lives in /tmp itself. The queue directory needs no such care (the
    master enters it as root; daemons use relative paths).
"""

import atexit
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import tnharness as th

_PRIVATE_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_counter = [0]
_instances = []


def _cleanup_at_exit():
    """Data directories of instances that are not running (never started,
    or never stopped after a failure) go when the test process ends; a
    running instance is left alone with its directory."""
    for p in _instances:
        if not p.running():
            shutil.rmtree(p.data_dir, ignore_errors=True)


atexit.register(_cleanup_at_exit)


class PostfixError(th.HarnessError):
    pass


def missing_prerequisites():
    """What a Postfix test needs and this machine lacks (scripts/deps
    installs it); an empty list when everything is there."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    for prog in ("postfix", "postconf", "postqueue", "postsuper"):
        if not th._which(prog):
            problems.append("%s missing (apt-get install postfix)" % prog)
    if not shutil.which("script"):
        problems.append("script missing (apt-get install bsdutils)")
    for user in ("postfix",):
        try:
            pwd.getpwnam(user)
        except KeyError:
            problems.append("user %s missing (apt-get install postfix)" % user)
    return problems


def _make_traversable(path):
    """o+x on path and its ancestors owned by root: Postfix daemons run
    as the postfix user and pytest makes its temp dirs 0700."""
    path = os.path.abspath(path)
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return
        if st.st_uid == 0 and not st.st_mode & 0o001:
            os.chmod(path, (st.st_mode & 0o7777) | 0o011)
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _banner_ok(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port),
                                      timeout=timeout) as s:
            s.settimeout(2)
            data = s.recv(512)
            if data.startswith(b"220"):
                try:
                    s.sendall(b"QUIT\r\n")
                except OSError:
                    pass
                return True
            return False
    except OSError:
        return False


class Postfix:
    """A private Postfix instance (see the module docstring)."""

    def __init__(self, workdir, main_cf=None, master_extra="",
                 services=None, start=True):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        _counter[0] += 1
        self.config_dir = os.path.join(self.workdir, "etc")
        self.queue_dir = os.path.join(self.workdir, "queue")
        self.data_dir = tempfile.mkdtemp(prefix="tnpostfix-data-", dir="/tmp")
        _instances.append(self)
        self.log_path = os.path.join(self.workdir, "postfix.log")
        self.main_cf = dict(main_cf or {})
        self.master_extra = master_extra or ""
        self.services = dict(services) if services else {"smtp": None}
        unknown = set(self.services) - {"smtp", "submission"}
        if unknown:
            raise PostfixError("unknown services %s (smtp, submission)"
                               % sorted(unknown))
        self.smtp_port = th.free_port() if "smtp" in self.services else None
        self.submission_port = (th.free_port()
                                if "submission" in self.services else None)
        self.master_pid = None
        self.postfix = th._which("postfix")
        self.postconf_bin = th._which("postconf")
        self.postqueue_bin = th._which("postqueue")
        if not self.postfix or not self.postconf_bin:
            raise PostfixError("postfix not found (apt-get install postfix)")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.queue_dir, exist_ok=True)
        self._make_data_dir()
        self.write_conf()
        if start:
            self.start()

    # -- files ------------------------------------------------------------

    def main_cf_defaults(self):
        w = self.workdir
        return {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "meta_directory": "/etc/postfix",
            "myhostname": "mx%d.tnpostfix.test" % _counter[0],
            "mydomain": "tnpostfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_relay_restrictions":
                "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relayhost": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": w,
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "1s",
            "delay_warning_time": "0",
            "in_flow_delay": "0",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
        }

    def main_cf_text(self):
        params = self.main_cf_defaults()
        params.update(self.main_cf)
        lines = ["# written by tests/harness/tnpostfix.py"]
        for k, v in params.items():
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            lines.append("%s = %s" % (k, v))
        return "\n".join(lines) + "\n"

    @staticmethod
    def _service_line(name, port, overrides):
        lines = ["127.0.0.1:%d inet n - n - - smtpd" % port]
        opts = {}
        if name != "smtp":
            opts["syslog_name"] = "postfix/%s" % name
        opts.update(overrides or {})
        for k, v in opts.items():
            v = str(v)
            if "}" in v or "\n" in v:
                raise PostfixError("-o %s: value not representable in "
                                   "master.cf: %r" % (k, v))
            if re.search(r"[\s{]", v):
                # Postfix 3.0+: -o { name = value with spaces }
                lines.append("  -o { %s = %s }" % (k, v))
            else:
                lines.append("  -o %s=%s" % (k, v))
        return "\n".join(lines)

    def master_cf_text(self):
        parts = ["# written by tests/harness/tnpostfix.py"]
        if "smtp" in self.services:
            parts.append(self._service_line("smtp", self.smtp_port,
                                            self.services["smtp"]))
        if "submission" in self.services:
            parts.append(self._service_line("submission",
                                            self.submission_port,
                                            self.services["submission"]))
        parts.append(_PRIVATE_SERVICES.rstrip("\n"))
        if self.master_extra.strip():
            parts.append(self.master_extra.rstrip("\n"))
        return "\n".join(parts) + "\n"

    def write_conf(self):
        for name, text in (("main.cf", self.main_cf_text()),
                           ("master.cf", self.master_cf_text())):
            with open(os.path.join(self.config_dir, name), "w") as f:
                f.write(text)
        self._age_config()

    def _age_config(self):
        """mtimes 10 s in the past (a fresh file makes start wait ~2 s)."""
        t = time.time() - 10
        for name in os.listdir(self.config_dir):
            os.utime(os.path.join(self.config_dir, name), (t, t))

    # -- commands ---------------------------------------------------------

    def _run(self, argv, timeout=60, check=False):
        r = subprocess.run(argv, capture_output=True, text=True,
                           errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise PostfixError("%s: rc=%d %s%s\n%s"
                               % (" ".join(argv), r.returncode, r.stdout,
                                  r.stderr, self._log_tail()))
        return r

    def _tty_output(self, command):
        """Run a postfix command under script(1): postfix(1) writes its
        errors only to a terminal."""
        try:
            r = subprocess.run(["script", "-qec", command, "/dev/null"],
                               capture_output=True, text=True,
                               errors="replace", timeout=30,
                               stdin=subprocess.DEVNULL)
            return r.stdout.replace("\r", "") + r.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            return "(script %r: %s)" % (command, e)

    def postconf(self, *args):
        """postconf -c DIR ARGS...; returns stdout (raises on failure)."""
        r = self._run([self.postconf_bin, "-c", self.config_dir] +
                      [str(a) for a in args], check=True)
        return r.stdout

    def _log_tail(self, lines=30):
        return th._tail(self.log_path, lines)

    # -- process ----------------------------------------------------------

    def _pid_file(self):
        return os.path.join(self.queue_dir, "pid", "master.pid")

    def _read_master_pid(self):
        try:
            with open(self._pid_file()) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self._read_master_pid()
        return pid is not None and th.pid_alive(pid)

    def _ports(self):
        return [p for p in (self.smtp_port, self.submission_port) if p]

    def _make_data_dir(self):
        """data_directory belongs to mail_owner (master.lock, caches)."""
        os.makedirs(self.data_dir, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)

    def start(self, timeout=15.0):
        if self.running():
            return
        _make_traversable(self.workdir)
        self._make_data_dir()
        self._age_config()
        r = self._run([self.postfix, "-c", self.config_dir, "start"])
        if r.returncode != 0:
            check = self._tty_output("%s -c %s check"
                                     % (self.postfix, self.config_dir))
            again = self._tty_output("%s -c %s start"
                                     % (self.postfix, self.config_dir))
            self.stop()
            raise PostfixError(
                "postfix start failed (rc=%d)\n%s%s\npostfix check:\n%s\n"
                "postfix start:\n%s\nlog:\n%s"
                % (r.returncode, r.stdout, r.stderr, check, again,
                   self._log_tail()))
        self.master_pid = self._read_master_pid()
        deadline = time.monotonic() + timeout
        pending = self._ports()
        while pending:
            pending = [p for p in pending if not _banner_ok(p)]
            if not pending:
                break
            if not self.running() or time.monotonic() >= deadline:
                why = ("not running" if not self.running()
                       else "no 220 banner on port(s) %s after %.0f s"
                       % (pending, timeout))
                self.stop()
                raise PostfixError("postfix %s; log:\n%s"
                                   % (why, self._log_tail()))
            time.sleep(0.02)

    def stop(self, timeout=15.0):
        """postfix stop and wait for the master to be gone (SIGKILL to it
        after timeout).  Safe after a failed start and to call twice."""
        pid = self._read_master_pid() or self.master_pid
        if pid is None or not th.pid_alive(pid):
            shutil.rmtree(self.data_dir, ignore_errors=True)
            return
        try:
            self._run([self.postfix, "-c", self.config_dir, "stop"],
                      timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while th.pid_alive(pid):
            if time.monotonic() >= deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.02)
        # the master's children leave with it; give them a moment
        deadline = time.monotonic() + 5
        while self._children_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _children_alive(self):
        """Live processes that run a Postfix daemon with our config dir."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % d, "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if (b"MAIL_CONFIG=" + self.config_dir.encode() + b"\0") in env \
                    and th.pid_alive(int(d)):
                out.append(int(d))
        return out

    def reload(self):
        """Rewrite nothing; age the config files and "postfix reload"."""
        self._age_config()
        self._run([self.postfix, "-c", self.config_dir, "reload"], check=True)

    def flush(self):
        """postqueue -f: deliver the deferred mail now."""
        self._run([self.postqueue_bin, "-c", self.config_dir, "-f"],
                  check=True)

    def queue_count(self):
        """Messages in the queue (postqueue -j)."""
        r = self._run([self.postqueue_bin, "-c", self.config_dir, "-j"],
                      check=True)
        n = 0
        for line in r.stdout.splitlines():
            if line.strip():
                json.loads(line)
                n += 1
        return n

    def queue(self):
        """The queue as postqueue -j objects."""
        r = self._run([self.postqueue_bin, "-c", self.config_dir, "-j"],
                      check=True)
        return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- log --------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """Current size of the log: pass it to log_since()."""
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, mark=0, timeout=10.0):
        """Wait for regex (re.M) in the log after mark; returns the match,
        raises AssertionError with the log tail."""
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.log_since(mark))
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("%r not in the Postfix log within "
                                     "%.1f s; log since mark:\n%s"
                                     % (regex, timeout,
                                        self.log_since(mark)[-4000:]))
            time.sleep(0.02)

    def wait_sent(self, n, mark=0, timeout=20.0):
        """Wait for n "status=sent" lines after mark; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [x for x in self.log_since(mark).splitlines()
                     if "status=sent" in x]
            if len(lines) >= n:
                return lines
            if time.monotonic() >= deadline:
                raise AssertionError("%d status=sent line(s) of %d within "
                                     "%.1f s; log since mark:\n%s"
                                     % (len(lines), n, timeout,
                                        self.log_since(mark)[-4000:]))
            time.sleep(0.02)
