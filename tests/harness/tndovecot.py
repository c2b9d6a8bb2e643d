#!/usr/bin/python3
"""tndovecot -- private Dovecot 2.3 instances for tenantmail's tests.

Python 3 standard library only, run as root (the master must be root to
switch to the vmail user).  Everything listens on 127.0.0.1 and lives in
one work directory:

    WORKDIR/dovecot.conf     the generated configuration (dovecot -c)
    WORKDIR/dovecot.log      log_path: every process logs here (tests read it)
    WORKDIR/run/             base_dir (master.pid, auth-userdb, login/...)
    WORKDIR/state/           state_dir
    WORKDIR/home/            mail homes (vmail), one per user
    WORKDIR/modules/         mail_plugin_dir: symlinks to the stock
                             /usr/lib/dovecot/modules/*.so + extra_plugins
    WORKDIR/auth-modules/    the auth module dir seen by this instance
                             (only when auth_modules are given, see below)

    d = Dovecot(workdir, passdb=..., userdb=..., extra_config="",
                mail_plugins="", extra_plugins=(), auth_modules=(),
                listen="127.0.0.1", start=True)
    d.imap_port, d.pop3_port, d.lmtp_port, d.conf, d.log_path()
    d.start() / d.stop() / d.kill() / d.freeze() / d.thaw() / d.restart()
    d.imap(user, password)         -> logged-in imaplib.IMAP4
    d.imap_connect()               -> imaplib.IMAP4, not logged in
    d.lmtp_deliver(rcpt, msg)      -> (code, text) of the recipient
    d.doveadm(*args)               -> CompletedProcess (doveadm -c FILE ...)
    d.doveconf(*args)              -> CompletedProcess (doveconf -c FILE ...)
    d.log_text(), d.log_mark(), d.log_since(mark), d.wait_log(regex)
    d.processes()                  -> pids of this instance still alive
    d.maildir(user)                -> path of the user's Maildir

passdb / userdb are Dovecot config blocks as text (whole "passdb { ... }"
blocks, several allowed), so a test can use passwd-file, static, or our
"tenant" driver.  passwd_file_db(path) writes the usual pair for a
passwd-file made with write_passwd_file().

Facts this relies on (see /work/shared/RUNNING-SERVERS.md):
  * The master runs in the foreground (dovecot -F) as our child in its own
    session; every Dovecot process it forks stays in that session, which
    is how processes() finds them and stop() waits for them.  PID 1 reaps
    orphans slowly: a zombie counts as gone.
  * mail_plugin_dir is ONE directory: a directory of symlinks to the stock
    plugins plus ours keeps "quota" and friends loadable.
  * Auth drivers load only from the compiled-in /usr/lib/dovecot/modules/auth.
    With auth_modules=(paths...) the instance runs under "unshare -m"
    (a private mount namespace, nothing changes for the rest of the
    machine): inside it the stock directory is first bind-mounted onto
    WORKDIR/stock-auth (so the stock modules stay reachable), then
    WORKDIR/auth-modules -- symlinks to WORKDIR/stock-auth/*.so plus the
    given modules -- is bind-mounted over /usr/lib/dovecot/modules/auth.
    The master and every process it forks (auth, auth-worker) see the
    merged directory; doveadm and doveconf need no namespace (doveadm
    talks to the instance's sockets, doveconf does not load auth drivers).
  * The vmail user (uid 5000, scripts/deps creates it) owns the mail;
    login processes run as dovenull and auth as dovecot: the work
    directory and its ancestors get o+x (traverse only) so that they can
    reach their files -- pytest makes its temp dirs 0700.
"""

import glob
import imaplib
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import textwrap
import time

import tnharness as th

MODULE_DIR = "/usr/lib/dovecot/modules"
AUTH_MODULE_DIR = MODULE_DIR + "/auth"
VMAIL = "vmail"
VMAIL_UID = 5000

_counter = [0]


class DovecotError(th.HarnessError):
    pass


def missing_prerequisites():
    """What a Dovecot test needs and this machine lacks (scripts/deps
    installs it all); an empty list when everything is there."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    for prog in ("dovecot", "doveadm", "doveconf"):
        if not th._which(prog):
            problems.append("%s missing (apt-get install dovecot-core)" % prog)
    for prog, pkg in (("imap", "dovecot-imapd"), ("lmtp", "dovecot-lmtpd"),
                      ("pop3", "dovecot-pop3d")):
        if not os.path.exists("/usr/lib/dovecot/" + prog):
            problems.append("%s missing" % pkg)
    if not shutil.which("unshare") or not shutil.which("mount"):
        problems.append("unshare/mount missing (util-linux, mount)")
    elif os.geteuid() == 0:
        # the private mount namespace of every instance; in a chroot whose
        # root is not a mount point it fails ("cannot change root
        # filesystem propagation"): every Dovecot would exit at start-up
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            problems.append("unshare -m --propagation private fails (%s); in a "
                            "chroot, make its root a mount point first (mount "
                            "--bind DIR DIR)" % r.stderr.strip())
    try:
        vmail_ids()
    except DovecotError as e:
        problems.append(str(e))
    return problems


def vmail_ids():
    try:
        pw = pwd.getpwnam(VMAIL)
    except KeyError:
        raise DovecotError("user vmail missing: run scripts/deps as root "
                           "(useradd -u 5000 -U -M -s /usr/sbin/nologin vmail)")
    return pw.pw_uid, pw.pw_gid


def write_passwd_file(path, users):
    """users: {name: (password, extra_fields)} or {name: password}.
    Writes a Dovecot passwd-file with {PLAIN} passwords and the vmail
    uid/gid; extra is "key=value ..." (userdb_ prefixed fields go to the
    userdb, others, e.g. proxy=y host=.. port=.., to the passdb).
    Mode 0644: the auth process runs as the dovecot user."""
    uid, gid = vmail_ids()
    lines = []
    for name, v in users.items():
        pw, extra = (v, "") if isinstance(v, str) else v
        # user:password:uid:gid:(gecos):home:(shell):extra_fields
        lines.append("%s:{PLAIN}%s:%d:%d::::%s" % (name, pw, uid, gid, extra))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def passwd_file_db(path, home_dir=None):
    """passdb + userdb blocks for a passwd-file (homes under home_dir/%u
    when given, else the instance's mail_home, WORKDIR/home/%u: the file's
    home field is left empty)."""
    passdb = "passdb {\n  driver = passwd-file\n  args = %s\n}\n" % path
    userdb = "userdb {\n  driver = passwd-file\n  args = %s\n" % path
    if home_dir:
        userdb += "  default_fields = home=%s/%%u\n" % home_dir
    userdb += "}\n"
    return passdb, userdb


def free_port_on(*addrs):
    """A TCP port free a moment ago on every one of addrs (127.x.y.z
    addresses all reach the loopback: stores on 127.0.0.2 and 127.0.0.3
    can share one port, as a proxy with one store port needs)."""
    for _ in range(50):
        port = th.free_port()
        ok = True
        for a in addrs:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((a, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise DovecotError("no common free port on %s" % (addrs,))


def home_dir_of(workdir):
    """WORKDIR/home, the homes of the instance made in workdir (for
    configurations written before the instance exists)."""
    return os.path.join(os.path.abspath(str(workdir)), "home")


def _make_traversable(path):
    """o+x on path and its ancestors owned by root (test temp dirs)."""
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


def _session_pids(sid):
    """Live (non-zombie) processes whose session id is sid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()
        # rest[0] state, [1] ppid, [2] pgrp, [3] session
        if rest[0] in ("Z", "X"):
            continue
        if int(rest[3]) == sid:
            out.append(int(d))
    return out


class Dovecot:
    """A private Dovecot 2.3 instance (see the module docstring)."""

    def __init__(self, workdir, passdb=None, userdb=None, extra_config="",
                 mail_plugins="", extra_plugins=(), auth_modules=(),
                 listen="127.0.0.1", name=None, protocols=None,
                 auth_failure_delay="0", trusted_networks="127.0.0.0/8",
                 auth_penalty=False, imap_port=None, pop3_port=None,
                 lmtp_port=None, start=True, env=None):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        _counter[0] += 1
        self.name = name or "tn-%d-%d" % (os.getpid(), _counter[0])
        self.listen = listen
        if protocols is None:
            protocols = "imap lmtp"
            if os.path.exists("/usr/lib/dovecot/pop3"):
                protocols = "imap pop3 lmtp"
        self.protocols = protocols
        self.auth_failure_delay = auth_failure_delay
        self.trusted_networks = trusted_networks
        self.auth_penalty = auth_penalty
        self.imap_port = imap_port or free_port_on(listen)
        self.pop3_port = pop3_port or free_port_on(listen)
        self.lmtp_port = lmtp_port or free_port_on(listen)
        self.base_dir = os.path.join(self.workdir, "run")
        self.state_dir = os.path.join(self.workdir, "state")
        self.home_dir = home_dir_of(self.workdir)
        self.plugin_dir = os.path.join(self.workdir, "modules")
        self.auth_dir = os.path.join(self.workdir, "auth-modules")
        self.stock_auth_dir = os.path.join(self.workdir, "stock-auth")
        self.conf = os.path.join(self.workdir, "dovecot.conf")
        self._log = os.path.join(self.workdir, "dovecot.log")
        self.mail_plugins = mail_plugins
        self.extra_plugins = list(extra_plugins)
        self.auth_modules = list(auth_modules)
        self.extra_config = extra_config
        self.env = env
        if passdb is None or userdb is None:
            raise DovecotError("passdb and userdb config blocks are required")
        self.passdb, self.userdb = passdb, userdb
        self.proc = None
        self.frozen = False
        self.dovecot = th._which("dovecot")
        self.doveadm_bin = th._which("doveadm")
        self.doveconf_bin = th._which("doveconf")
        if not self.dovecot or not self.doveadm_bin:
            raise DovecotError("dovecot not found (apt-get install dovecot-core "
                               "dovecot-imapd dovecot-lmtpd)")
        self._prepare()
        if start:
            self.start()

    # -- files ------------------------------------------------------------

    def _prepare(self):
        uid, gid = vmail_ids()
        for d in (self.state_dir, self.plugin_dir):
            os.makedirs(d, exist_ok=True)
        os.makedirs(self.home_dir, exist_ok=True)
        os.chown(self.home_dir, uid, gid)
        os.chmod(self.home_dir, 0o700)
        os.chmod(self.workdir, 0o755)
        _make_traversable(self.workdir)
        # mail_plugin_dir: stock plugins + ours (one directory only)
        for old in glob.glob(os.path.join(self.plugin_dir, "*")):
            os.unlink(old)
        for so in glob.glob(os.path.join(MODULE_DIR, "*.so")):
            os.symlink(so, os.path.join(self.plugin_dir, os.path.basename(so)))
        for so in self.extra_plugins:
            # a copy, not a link: processes running as the mail user
            # (imap, lmtp, dovecot-lda from a quota-warning script) load
            # it, and the build tree may be where only root enters (/root)
            self._link(so, self.plugin_dir, copy=True)
        if self.auth_modules:
            os.makedirs(self.stock_auth_dir, exist_ok=True)
            os.makedirs(self.auth_dir, exist_ok=True)
            for old in glob.glob(os.path.join(self.auth_dir, "*")):
                os.unlink(old)
            # inside the namespace the stock dir is bind-mounted on
            # stock-auth first: these links do not point into the mount
            # that hides them
            for so in glob.glob(os.path.join(AUTH_MODULE_DIR, "*.so")):
                os.symlink(os.path.join(self.stock_auth_dir,
                                        os.path.basename(so)),
                           os.path.join(self.auth_dir, os.path.basename(so)))
            for so in self.auth_modules:
                self._link(so, self.auth_dir)
        self.write_conf()

    @staticmethod
    def _link(so, d, copy=False):
        so = os.path.abspath(so)
        if not os.path.exists(so):
            raise DovecotError("module %s does not exist" % so)
        dst = os.path.join(d, os.path.basename(so))
        if os.path.lexists(dst):
            os.unlink(dst)
        if copy:
            shutil.copy(so, dst)
            os.chmod(dst, 0o755)
        else:
            os.symlink(so, dst)

    def config_text(self):
        uid, _ = vmail_ids()
        plugins = self.mail_plugins.strip()
        text = textwrap.dedent("""\
            # written by tests/harness/tndovecot.py
            instance_name = {name}
            base_dir = {base_dir}
            state_dir = {state_dir}
            log_path = {log}
            protocols = {protocols}
            listen = {listen}
            ssl = no
            disable_plaintext_auth = no
            auth_mechanisms = plain login
            auth_verbose = yes
            auth_cache_size = 0
            auth_failure_delay = {delay}
            login_trusted_networks = {trusted}
            mail_location = maildir:~/Maildir
            mail_home = {home_dir}/%u
            first_valid_uid = {uid}
            mail_plugin_dir = {plugin_dir}
            mail_plugins = $mail_plugins {plugins}
            verbose_proctitle = yes
            shutdown_clients = yes
            lmtp_rcpt_check_quota = yes

            service imap-login {{
              inet_listener imap {{
                address = {listen}
                port = {imap}
              }}
              inet_listener imaps {{
                port = 0
              }}
            }}
            service pop3-login {{
              inet_listener pop3 {{
                address = {listen}
                port = {pop3}
              }}
              inet_listener pop3s {{
                port = 0
              }}
            }}
            service lmtp {{
              inet_listener lmtp {{
                address = {listen}
                port = {lmtp}
              }}
            }}
            service auth {{
              unix_listener auth-userdb {{
                mode = 0600
                user = root
              }}
            }}
            """).format(name=self.name, base_dir=self.base_dir,
                        state_dir=self.state_dir, log=self._log,
                        protocols=self.protocols, listen=self.listen,
                        uid=uid, plugin_dir=self.plugin_dir, plugins=plugins,
                        imap=self.imap_port, pop3=self.pop3_port,
                        lmtp=self.lmtp_port, delay=self.auth_failure_delay,
                        home_dir=self.home_dir, trusted=self.trusted_networks)
        if not self.auth_penalty:
            # anvil's per-IP penalty (2, 4, 8.. s after failures from
            # 127.0.0.1) would slow every later login of a test module;
            # Dovecot's documented way off: no access to its socket
            text += textwrap.dedent("""\
                service anvil {
                  unix_listener anvil-auth-penalty {
                    mode = 0
                  }
                }
                """)
        return "\n".join([text, self.passdb.strip(), self.userdb.strip(),
                          self.extra_config.strip(), ""])

    def write_conf(self):
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        os.chmod(self.conf, 0o644)

    # -- process ----------------------------------------------------------

    def _argv(self):
        run = [self.dovecot, "-F", "-c", self.conf]
        if not self.auth_modules:
            return run
        script = ("set -e; mount --bind {stock} {stockdir}; "
                  "mount --bind {ours} {stock}; exec \"$@\"").format(
                      stock=AUTH_MODULE_DIR, stockdir=self.stock_auth_dir,
                      ours=self.auth_dir)
        return ["unshare", "-m", "--propagation", "private",
                "sh", "-c", script, "tndovecot"] + run

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        if self.running():
            return
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        env.update(self.env or {})
        log = open(os.path.join(self.workdir, "master.out"), "ab")
        try:
            self.proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, cwd=self.workdir, env=env)
        finally:
            log.close()
        self.frozen = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DovecotError(
                    "dovecot exited with %s during start-up:\n%s\n%s"
                    % (self.proc.returncode,
                       th._tail(os.path.join(self.workdir, "master.out")),
                       th._tail(self._log)))
            if self._greeting_ok():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise DovecotError("dovecot not ready after %.0f s:\n%s"
                                   % (timeout, th._tail(self._log)))
            time.sleep(0.02)

    def _greeting_ok(self):
        try:
            with socket.create_connection((self.listen, self.imap_port),
                                          timeout=1) as s:
                s.settimeout(2)
                return s.recv(200).startswith(b"* OK")
        except OSError:
            return False

    def processes(self):
        """Pids of this instance's live processes (its session)."""
        if self.proc is None:
            return []
        return _session_pids(self.proc.pid)

    def _signal_all(self, sig):
        for pid in self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _wait_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while self.processes():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout=10.0):
        """SIGTERM to the master, wait until the master and every process
        of the instance are gone (zombies count as gone); SIGKILL after
        timeout.  Safe to call twice."""
        if self.proc is None:
            return
        if self.frozen:
            self.thaw()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_all(signal.SIGKILL)
                self.proc.wait(10)
        # login processes keep their pre-login clients after the master
        # has gone (shutdown_clients is about mail processes): TERM them
        if not self._wait_gone(0.5):
            self._signal_all(signal.SIGTERM)
            if not self._wait_gone(timeout):
                self._signal_all(signal.SIGKILL)
                self._wait_gone(5)

    def kill(self):
        """SIGKILL to every process of the instance."""
        if self.proc is None:
            return
        self._signal_all(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._wait_gone(5)
        self.frozen = False

    def freeze(self):
        """SIGSTOP to every process of the instance: connections are
        accepted by the kernel, nothing answers."""
        self._signal_all(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        self._signal_all(signal.SIGCONT)
        self.frozen = False

    def restart(self):
        self.stop()
        self.start()

    def reload(self):
        """Rewrite the configuration and SIGHUP the master."""
        self.write_conf()
        r = self.doveadm("reload")
        if r.returncode != 0:
            raise DovecotError("doveadm reload: %s" % r.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- tools ------------------------------------------------------------

    def doveadm(self, *args, timeout=30, input=None):
        return subprocess.run([self.doveadm_bin, "-c", self.conf] +
                              [str(a) for a in args], capture_output=True,
                              text=True, errors="replace", timeout=timeout,
                              input=input)

    def doveconf(self, *args, timeout=30):
        return subprocess.run([self.doveconf_bin, "-c", self.conf] +
                              [str(a) for a in args], capture_output=True,
                              text=True, errors="replace", timeout=timeout)

    def user_fields(self, user, timeout=30):
        """doveadm user USER as a dict (raises on failure)."""
        r = self.doveadm("user", user, timeout=timeout)
        if r.returncode != 0:
            raise DovecotError("doveadm user %s: rc=%d %s%s"
                               % (user, r.returncode, r.stdout, r.stderr))
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.strip().partition("\t")
            if not _:
                k, _, v = line.strip().partition(" ")
            if k.strip() == "field" and v.strip() == "value":
                continue                    # doveadm's header line
            out[k.strip()] = v.strip()
        return out

    def imap_connect(self, timeout=10):
        return imaplib.IMAP4(self.listen, self.imap_port, timeout=timeout)

    def imap(self, user, password, timeout=10):
        """A logged-in imaplib.IMAP4 (imaplib.IMAP4.error on a NO)."""
        c = self.imap_connect(timeout=timeout)
        try:
            c.login(user, password)
        except BaseException:
            try:
                c.shutdown()
            except OSError:
                pass
            raise
        return c

    def pop3(self, user, password, timeout=10):
        """A logged-in poplib.POP3 (poplib.error_proto on -ERR)."""
        import poplib
        c = poplib.POP3(self.listen, self.pop3_port, timeout=timeout)
        try:
            c.user(user)
            c.pass_(password)
        except BaseException:
            c.close()
            raise
        return c

    def lmtp_deliver(self, rcpt, msg, sender="sender@example.org",
                     timeout=30):
        """Deliver msg (str or bytes) to one recipient over LMTP.
        Returns (code, text) of the RCPT refusal or of the DATA answer."""
        if isinstance(msg, str):
            msg = msg.encode()
        c = smtplib.LMTP(self.listen, self.lmtp_port, timeout=timeout)
        try:
            c.ehlo("tndovecot.test")
            code, text = c.mail(sender)
            if code != 250:
                return code, text.decode(errors="replace")
            code, text = c.rcpt(rcpt)
            if code not in (250, 251):
                return code, text.decode(errors="replace")
            code, text = c.data(msg)
            return code, text.decode(errors="replace")
        finally:
            try:
                c.quit()
            except (smtplib.SMTPException, OSError):
                c.close()

    def maildir(self, user):
        return os.path.join(self.home_dir, user, "Maildir")

    # -- log --------------------------------------------------------------

    def log_path(self):
        return self._log

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
        try:
            with open(self._log, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, mark=0, timeout=5.0):
        """Wait until the log (from mark) matches regex; returns the match
        (Dovecot's log process writes asynchronously)."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.log_since(mark))
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("%r not in %s within %.1f s; tail:\n%s"
                                     % (regex, self._log, timeout,
                                        th._tail(self._log)))
            time.sleep(0.02)


def stop_all(instances, timeout=10.0):
    """Stop several instances at once: SIGTERM to every master first, then
    wait for each (Dovecot's master takes ~1 s to exit, in parallel)."""
    live = [d for d in instances if d is not None and d.proc is not None]
    for d in live:
        if d.frozen:
            d.thaw()
        if d.proc.poll() is None:
            try:
                os.kill(d.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    errors = []
    for d in live:
        try:
            d.stop(timeout)
        except Exception as e:     # stop the others anyway
            errors.append(e)
    if errors:
        raise errors[0]


class DovecotPair:
    """A front-end proxy Dovecot and two store Dovecots ("A" and "B").

    stores: the store instances, made with store_kwargs (passdb/userdb...);
    the proxy is made with proxy_kwargs, which may be a function of the
    stores (proxy_kwargs(stores) -> dict) so that the proxy's passdb can
    name the stores' ports.  proxy_passwd_file() builds that for the
    passwd-file case: {user: store_index}.

        pair = DovecotPair(workdir, store_kwargs=..., proxy_kwargs=...)
        pair.proxy, pair.stores[0], pair.stores[1]; pair.stop()
    """

    def __init__(self, workdir, store_kwargs, proxy_kwargs, nstores=2):
        self.workdir = os.path.abspath(str(workdir))
        self.stores = []
        self.proxy = None
        try:
            for i in range(nstores):
                kw = store_kwargs(i) if callable(store_kwargs) else \
                    dict(store_kwargs)
                self.stores.append(Dovecot(self.store_dir(self.workdir, i),
                                           **kw))
            kw = proxy_kwargs(self.stores) if callable(proxy_kwargs) else \
                dict(proxy_kwargs)
            self.proxy = Dovecot(self.proxy_dir(self.workdir), **kw)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def store_dir(workdir, i):
        """Work directory of store i of a pair made in workdir (for store
        configurations written before the store exists: home_dir_of())."""
        return os.path.join(os.path.abspath(str(workdir)),
                            "store-%s" % ("AB"[i] if i < 2 else str(i)))

    @staticmethod
    def proxy_dir(workdir):
        return os.path.join(os.path.abspath(str(workdir)), "proxy")

    def stop(self):
        stop_all([self.proxy] + self.stores)

    def stores_seen(self, user, marks=None, timeout=5.0):
        """Indexes of the stores whose log shows a login of user (since
        marks, from marks()); waits up to timeout for at least one (the
        log process writes asynchronously)."""
        pat = re.compile(r"imap-login: Info: Login: user=<%s>" % re.escape(user))
        deadline = time.monotonic() + timeout
        while True:
            found = [i for i, s in enumerate(self.stores)
                     if pat.search(s.log_since(marks[i] if marks else 0))]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def marks(self):
        return [s.log_mark() for s in self.stores]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def proxy_passwd_db(path, users, stores, password_of):
    """passdb/userdb for a proxy front-end from a passwd-file: users is
    {user: store_index}; each line carries proxy=y host=.. port=<that
    store's IMAP port>.  The proxy needs a userdb only to satisfy the auth
    process: a static one."""
    entries = {}
    for user, idx in users.items():
        s = stores[idx]
        entries[user] = (password_of(user), "proxy=y host=%s port=%d"
                         % (s.listen, s.imap_port))
    write_passwd_file(path, entries)
    passdb = "passdb {\n  driver = passwd-file\n  args = %s\n}\n" % path
    userdb = "userdb {\n  driver = static\n  args = uid=%d gid=%d\n}\n" \
        % vmail_ids()
    return passdb, userdb


# -- command line (used by scripts/sandbox) -------------------------------

CLI_USAGE = """\
usage: tndovecot.py up DIR --tenant-conf FILE --auth-module SO
                       [--listen ADDR] [--imap-port N] [--name NAME]
                       [--mail-plugins NAMES] [--plugin SO]...
                       [--extra-config FILE]
       tndovecot.py down DIR...
"""


def _cli_master_pid(d):
    try:
        with open(os.path.join(d, "pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cli_is_master(pid, d):
    """pid is the master of the instance in d: a dovecot session leader
    reading d's dovecot.conf (pids get reused)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
        return os.getsid(pid) == pid and \
            os.path.basename(argv[0]) == "dovecot" and \
            os.path.join(d, "dovecot.conf") in argv
    except (OSError, ProcessLookupError):
        return False


def _cli_down(dirs, timeout=10.0):
    """Stop the instances "up" left in dirs: SIGTERM to every master at
    once (each takes ~1 s to exit), then to what is left of each session
    (login processes keep their pre-login clients), SIGKILL after
    timeout.  0 when nothing of them runs."""
    masters = []
    for d in dirs:
        pid = _cli_master_pid(d)
        if pid is None:
            continue
        masters.append((d, pid))
        if _cli_is_master(pid, d):
            for sig in (signal.SIGTERM, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    rc = 0
    # the session id stays the master's pid after it exits
    for d, pid in masters:
        deadline = time.monotonic() + timeout
        while pid in _session_pids(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig, wait in ((None, 0.5), (signal.SIGTERM, timeout),
                          (signal.SIGKILL, 5.0)):
            if sig is not None:
                for p in _session_pids(pid):
                    try:
                        os.kill(p, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + wait
            while _session_pids(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _session_pids(pid):
                break
        left = _session_pids(pid)
        if left:
            print("tndovecot: %s: pids %s still run" % (d, left))
            rc = 1
        else:
            os.unlink(os.path.join(d, "pid"))
    return rc


def main(argv):
    """up DIR: start one instance in DIR whose passdb and userdb are the
    tenant driver reading --tenant-conf, loading --auth-module (the
    built libauthdb_tenant.so, through the private mount namespace), and
    leave it running (DIR/pid: the master, leader of its own session);
    prints one line: its addresses and log.  --mail-plugins adds to
    mail_plugins, --plugin links a built mail plugin into the instance's
    plugin dir, --extra-config appends a file's text (e.g. a plugin {}
    block) to dovecot.conf.  Refuses (exit 1) while DIR's instance runs.
    down DIR...: stop each (exit 1 if a process stays)."""
    import argparse
    import sys
    if len(argv) < 3 or argv[1] not in ("up", "down"):
        sys.stderr.write(CLI_USAGE)
        return 2
    if argv[1] == "down":
        return _cli_down([os.path.abspath(d) for d in argv[2:]])
    p = argparse.ArgumentParser(prog="tndovecot.py up", usage=CLI_USAGE)
    p.add_argument("dir")
    p.add_argument("--tenant-conf", required=True)
    p.add_argument("--auth-module", required=True, action="append")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--imap-port", type=int)
    p.add_argument("--name")
    p.add_argument("--mail-plugins", default="")
    p.add_argument("--plugin", action="append", default=[])
    p.add_argument("--extra-config")
    a = p.parse_args(argv[2:])
    extra = ""
    if a.extra_config:
        with open(a.extra_config) as f:
            extra = f.read()
    d = os.path.abspath(a.dir)
    pid = _cli_master_pid(d)
    if pid is not None and _cli_is_master(pid, d):
        sys.stderr.write("tndovecot: %s already runs (pid %d); run 'down' "
                         "first\n" % (d, pid))
        return 1
    conf = os.path.abspath(a.tenant_conf)
    dbs = ("passdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
           "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf)
    try:
        dc = Dovecot(d, passdb=dbs[0], userdb=dbs[1], listen=a.listen,
                     imap_port=a.imap_port, name=a.name,
                     auth_modules=a.auth_module, mail_plugins=a.mail_plugins,
                     extra_plugins=a.plugin, extra_config=extra)
    except DovecotError as e:
        sys.stderr.write("tndovecot: %s\n" % e)
        return 1
    with open(os.path.join(d, "pid"), "w") as f:
        f.write("%d\n" % dc.pid)
    print("%s: dovecot pid %d, imap %s:%d, pop3 %s:%d, lmtp %s:%d, log %s"
          % (d, dc.pid, dc.listen, dc.imap_port, dc.listen, dc.pop3_port,
             dc.listen, dc.lmtp_port, dc.log_path()))
    sys.stdout.flush()
    # the master runs in its own session: it outlives this process
    dc.proc = None
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
