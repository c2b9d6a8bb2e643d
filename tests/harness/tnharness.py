#!/usr/bin/python3
"""tnharness -- private slapd and Redis instances for tenantmail's tests.

Python 3 standard library only (runs under Debian's /usr/bin/python3 with
pytest-3).  Everything listens on 127.0.0.1 only and lives in one work
directory.

    Slapd(workdir, port=None, provider=None)   slapd.conf-based back-mdb
    Redis(workdir, port=None)
    Stack(workdir)           one Slapd with ldap-schema/example-dit.ldif,
                             one Redis with usage seeded, tenantmail.conf

Command line (used by the sandbox script):

    python3 tests/harness/tnharness.py up DIR     start a Stack in DIR and
                                                  leave it running (DIR/pids)
    python3 tests/harness/tnharness.py down DIR   stop it (TERM, KILL after 5 s)

"up" prints the path of DIR/tenantmail.conf on its first line, then
"export NAME=value" lines (TENANTMAIL_CONF, TN_LDAP_URI, TN_LDAP_BASE,
TN_LDAP_PORT, TN_REDIS_HOST, TN_REDIS_PORT, TN_HARNESS_DIR); in a shell:
    eval "$(python3 tests/harness/tnharness.py up DIR | grep '^export ')"
It refuses (exit 1) while DIR's servers still run; a new "up" in the same
DIR starts from the example DIT again.

Facts this relies on (see /work/shared/RUNNING-SERVERS.md):
  * slapd logs nowhere but stderr, and only in the foreground with -d:
    it runs with "-d stats,filter" and its output goes to
    WORKDIR/slapd.log ("not indexed" warnings are at the filter level).
  * ldapsearch has no client-side timeout for a server that accepted the
    connection and never answers (-o nettimeout is the connect timeout,
    -l a server-side limit): callers bound their calls (subprocess
    timeouts everywhere here).
  * Debian builds back_mdb, syncprov and unique as modules (moduleload).
  * PID 1 reaps orphans slowly: a process in state Z counts as gone.
  * ldap-utils run with LDAPNOINIT=1 so that /etc/ldap/ldap.conf and
    ~/.ldaprc cannot change what a test does.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SCHEMA_DIR = os.path.join(ROOT, "ldap-schema")

BASE = "dc=example,dc=net"
ROOTDN = "cn=admin," + BASE
ROOTPW = "admin-secret"
LOOKUP_DN = "cn=lookup,ou=services," + BASE
LOOKUP_PW = "lookup-secret"
PROV_DN = "cn=provisioning,ou=services," + BASE
PROV_PW = "provisioning-secret"
TENANTS = "ou=tenants," + BASE

SYSTEM_SCHEMA = "/etc/ldap/schema"
MODULE_PATH = "/usr/lib/ldap"

# Usage of the over-quota example mailbox (dave@acme.example, quota 1 MiB).
SEED_USAGE = {
    "tn:v1:usage:mbx:dave@acme.example": {"bytes": "5242880", "messages": "42"},
    "tn:v1:usage:ten:acme": {"bytes": "5242880", "messages": "42"},
}


def _which(prog, extra=("/usr/sbin", "/usr/local/sbin", "/sbin")):
    path = shutil.which(prog)
    if path:
        return path
    for d in extra:
        p = os.path.join(d, prog)
        if os.access(p, os.X_OK):
            return p
    return None


def _env():
    env = dict(os.environ)
    env["LDAPNOINIT"] = "1"
    return env


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=10.0):
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError("nothing listens on %s:%d after %.1f s"
                                   % (host, port, timeout))
            time.sleep(0.02)


def _proc_state(pid):
    """State letter of a process from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(")") + 2]


def pid_alive(pid):
    """True unless the process is gone or a zombie (PID 1 reaps slowly)."""
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "(no log: %s)" % e


class HarnessError(Exception):
    pass


class LdapError(HarnessError):
    """An ldap-utils command failed: returncode is the LDAP result code
    (e.g. 32 noSuchObject, 49 invalidCredentials, 50 insufficientAccess)
    or 255 when the server could not be reached."""

    def __init__(self, cmd, returncode, stdout, stderr):
        self.cmd, self.returncode = cmd, returncode
        self.stdout, self.stderr = stdout, stderr
        super().__init__("%s failed (rc=%d): %s"
                         % (cmd[0], returncode, (stderr or stdout).strip()))


class Entry(dict):
    """One LDAP entry: attribute -> list of str values; .dn.
    Attribute names are case-insensitive."""

    def __init__(self, dn):
        super().__init__()
        self.dn = dn

    @staticmethod
    def _k(key):
        return key.lower()

    def add(self, attr, value):
        super().setdefault(self._k(attr), []).append(value)

    def __getitem__(self, key):
        return super().__getitem__(self._k(key))

    def __contains__(self, key):
        return super().__contains__(self._k(key))

    def get(self, key, default=None):
        return super().get(self._k(key), default)

    def first(self, key, default=None):
        v = self.get(key)
        return v[0] if v else default

    def __repr__(self):
        return "Entry(%r, %s)" % (self.dn, dict.__repr__(self))


def parse_ldif(text):
    """Parse ldapsearch -LLL output into a list of Entry."""
    lines = []
    for raw in text.split("\n"):
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    entries, cur = [], None
    for line in lines:
        if line == "":
            cur = None
            continue
        if line.startswith("#"):
            continue
        attr, sep, rest = line.partition(":")
        if not sep:
            raise HarnessError("bad LDIF line: %r" % line)
        if rest.startswith(":"):
            data = base64.b64decode(rest[1:].strip())
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                value = data
        else:
            value = rest[1:] if rest.startswith(" ") else rest
        if cur is None:
            if attr.lower() != "dn":
                raise HarnessError("LDIF record without dn: %r" % line)
            cur = Entry(value)
            entries.append(cur)
        else:
            cur.add(attr, value)
    return entries


class _Server:
    """A daemon run in the foreground in its own process group."""

    name = "server"

    def __init__(self, workdir):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        self.proc = None
        self.frozen = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _argv(self):
        raise NotImplementedError

    def _logfile(self):
        raise NotImplementedError

    def _ready(self):
        raise NotImplementedError

    def start(self, timeout=10.0):
        if self.running():
            return
        log = open(self._logfile(), "ab")
        try:
            self.proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, cwd=self.workdir, env=_env())
        finally:
            log.close()
        self.frozen = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise HarnessError("%s exited with %s during start-up; log:\n%s"
                                   % (self.name, self.proc.returncode,
                                      _tail(self._logfile())))
            if self._ready():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise HarnessError("%s not ready after %.0f s; log:\n%s"
                                   % (self.name, timeout,
                                      _tail(self._logfile())))
            time.sleep(0.02)

    def _signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10.0):
        """SIGTERM and wait (SIGKILL after timeout). Safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)    # a frozen server must see it
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        self.frozen = False

    def kill(self):
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.frozen = False

    def freeze(self):
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        if not self.running():
            raise HarnessError("%s is not running" % self.name)
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _proc_state(self.proc.pid) not in ("T", "t", None):
            if time.monotonic() >= deadline:
                raise HarnessError("%s did not stop" % self.name)
            time.sleep(0.005)
        self.frozen = True

    def thaw(self):
        self._signal(signal.SIGCONT)
        self.frozen = False

    def restart(self):
        """Stop (if running) and start again: same port, same data."""
        self.stop()
        self.start()

    def log_path(self):
        return self._logfile()

    def log_text(self):
        try:
            with open(self._logfile(), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """Current size of the log: pass it to log_since()."""
        try:
            return os.path.getsize(self._logfile())
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        try:
            with open(self._logfile(), "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class Slapd(_Server):
    """A private slapd (back-mdb, slapd.conf) for dc=example,dc=net.

    Without provider=: loads the syncprov overlay (it can serve consumers).
    With provider=<Slapd>: a syncrepl consumer of it (refreshAndPersist,
    retry every second) with updateref to it; it starts empty and fills
    itself from the provider.

    debug: slapd's -d levels, output in WORKDIR/slapd.log.  "stats" gives
    the CONN/BIND/SRCH/RESULT lines; slapd 2.5 writes "<= mdb_*_candidates:
    (ATTR) not indexed" at the "filter" level only, hence the default
    "stats,filter" (about 100 lines per search: use debug="stats" for
    benchmarks).
    """

    name = "slapd"
    base = BASE
    rootdn = ROOTDN
    rootpw = ROOTPW

    def __init__(self, workdir, port=None, provider=None,
                 debug="stats,filter", start=True):
        super().__init__(workdir)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.provider = provider
        self.debug = debug
        self.datadir = os.path.join(self.workdir, "data")
        self.conf = os.path.join(self.workdir, "slapd.conf")
        self.slapd = _which("slapd")
        if not self.slapd:
            raise HarnessError("slapd not found (apt-get install slapd)")
        os.makedirs(self.datadir, exist_ok=True)
        self._write_conf()
        if start:
            self.start()

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d/" % self.port

    def _write_conf(self):
        s = os.path.join
        lines = [
            "# written by tests/harness/tnharness.py",
            "include %s" % s(SYSTEM_SCHEMA, "core.schema"),
            "include %s" % s(SYSTEM_SCHEMA, "cosine.schema"),
            # displayName (used by tnMailbox) comes from inetorgperson.schema
            "include %s" % s(SYSTEM_SCHEMA, "inetorgperson.schema"),
            "include %s" % s(SCHEMA_DIR, "tenantmail.schema"),
            "pidfile %s" % s(self.workdir, "slapd.pid"),
            "argsfile %s" % s(self.workdir, "slapd.args"),
            "modulepath %s" % MODULE_PATH,
            "moduleload back_mdb",
            "moduleload syncprov",
            "moduleload unique",
            "",
            "database mdb",
            "maxsize 1073741824",
            'suffix "%s"' % BASE,
            'rootdn "%s"' % ROOTDN,
            "rootpw %s" % ROOTPW,
            "directory %s" % self.datadir,
            "include %s" % s(SCHEMA_DIR, "indexes.conf"),
            "include %s" % s(SCHEMA_DIR, "acl.conf"),
            "include %s" % s(SCHEMA_DIR, "unique.conf"),
            "include %s" % s(SCHEMA_DIR, "limits.conf"),
        ]
        if self.provider is None:
            lines += ["overlay syncprov", "syncprov-checkpoint 100 10"]
        else:
            p = self.provider
            lines += [
                "syncrepl rid=001",
                "\tprovider=%s" % p.uri,
                "\ttype=refreshAndPersist",
                '\tretry="1 +"',
                "\tsearchbase=\"%s\"" % BASE,
                "\tscope=sub",
                "\tbindmethod=simple",
                "\tbinddn=\"%s\"" % p.rootdn,
                "\tcredentials=%s" % p.rootpw,
                "\tnetwork-timeout=2",
                "\ttimeout=2",
                "updateref %s" % p.uri,
            ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _logfile(self):
        return os.path.join(self.workdir, "slapd.log")

    def _argv(self):
        return [self.slapd, "-f", self.conf, "-h", self.uri, "-d", self.debug]

    def _ready(self):
        # a probe that hangs (slapd still starting) is "not ready yet":
        # start() keeps trying until its own timeout
        try:
            r = subprocess.run(
                ["ldapwhoami", "-x", "-H", self.uri, "-D", ROOTDN, "-w", ROOTPW,
                 "-o", "nettimeout=1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=_env(), timeout=2)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    # -- ldap-utils wrappers --------------------------------------------

    def _auth(self, bind_dn, password):
        if bind_dn is None:
            return ["-x", "-D", ROOTDN, "-w", ROOTPW]
        if bind_dn == "":
            return ["-x"]                       # anonymous
        return ["-x", "-D", bind_dn, "-w", password]

    def run_tool(self, tool, args, input=None, bind_dn=None, password=None,
                 check=True, timeout=30):
        """Run an ldap-utils tool against this server. bind_dn None = rootdn,
        "" = anonymous. Returns CompletedProcess, raises LdapError if check."""
        cmd = [tool, "-H", self.uri] + self._auth(bind_dn, password) + \
            ["-o", "nettimeout=5"] + list(args)
        r = subprocess.run(cmd, input=input, capture_output=True, text=True,
                           env=_env(), timeout=timeout)
        if check and r.returncode != 0:
            raise LdapError(cmd, r.returncode, r.stdout, r.stderr)
        return r

    def load_ldif(self, path, bind_dn=None, password=None):
        """ldapadd a file (as the rootdn unless told otherwise)."""
        return self.run_tool("ldapadd", ["-f", str(path)], bind_dn=bind_dn,
                             password=password)

    def add(self, ldif_text, bind_dn=None, password=None, check=True):
        return self.run_tool("ldapadd", [], input=ldif_text, bind_dn=bind_dn,
                             password=password, check=check)

    def modify(self, ldif_text, bind_dn=None, password=None, check=True):
        """ldapmodify with LDIF text (changetype lines allowed)."""
        return self.run_tool("ldapmodify", [], input=ldif_text,
                             bind_dn=bind_dn, password=password, check=check)

    def delete(self, dn, bind_dn=None, password=None, check=True):
        return self.run_tool("ldapdelete", [dn], bind_dn=bind_dn,
                             password=password, check=check)

    def search(self, filter="(objectClass=*)", base=None, attrs=(),
               scope="sub", bind_dn=None, password=None, extra=()):
        """ldapsearch -LLL; returns a list of Entry. Raises LdapError on a
        non-zero exit (32 = noSuchObject, e.g. a base the binder may not
        see)."""
        args = ["-LLL", "-o", "ldif-wrap=no", "-s", scope,
                "-b", base or BASE] + list(extra) + [filter] + list(attrs)
        r = self.run_tool("ldapsearch", args, bind_dn=bind_dn,
                          password=password)
        return parse_ldif(r.stdout)

    def wait_for(self, filter, base=None, timeout=10.0, count=1):
        """Poll (as rootdn) until a search returns at least count entries."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = self.search(filter, base=base, attrs=("1.1",))
                if len(found) >= count:
                    return found
            except LdapError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError("%s: %s not found within %.1f s"
                                   % (self.uri, filter, timeout))
            time.sleep(0.05)


class ConfigSlapd(Slapd):
    """A slapd run from cn=config (slapd.d), the way Debian runs it.

    Starts from a minimal slapd.conf (system schemas only, NOT tenantmail's;
    an empty mdb database "olcDatabase={1}mdb" for dc=example,dc=net with the
    objectClass index only, Debian-like) converted by "slapd -f ... -F
    slapd.d" on first start.  Listens on ldap://127.0.0.1:PORT/ and on
    ldapi (a socket in the workdir) where root's SASL EXTERNAL identity
    manages cn=config, as on Debian: config_modify() runs the README's
    "ldapadd/ldapmodify -Y EXTERNAL -H ldapi://..." commands.
    """

    name = "slapd (cn=config)"
    CONFIG_PW = "config-secret"

    def __init__(self, workdir, port=None, debug="stats,filter", start=True):
        workdir = os.path.abspath(str(workdir))
        self.confdir = os.path.join(workdir, "slapd.d")
        self.socket_path = os.path.join(workdir, "ldapi")
        if len(self.socket_path) > 100:
            raise HarnessError("ldapi socket path too long: %s"
                               % self.socket_path)
        os.makedirs(self.confdir, exist_ok=True)
        super().__init__(workdir, port=port, debug=debug, start=start)

    @property
    def ldapi_uri(self):
        from urllib.parse import quote
        return "ldapi://%s/" % quote(self.socket_path, safe="")

    def _write_conf(self):
        s = os.path.join
        lines = [
            "# written by tests/harness/tnharness.py (converted to slapd.d)",
            "include %s" % s(SYSTEM_SCHEMA, "core.schema"),
            "include %s" % s(SYSTEM_SCHEMA, "cosine.schema"),
            "include %s" % s(SYSTEM_SCHEMA, "inetorgperson.schema"),
            "pidfile %s" % s(self.workdir, "slapd.pid"),
            "argsfile %s" % s(self.workdir, "slapd.args"),
            "modulepath %s" % MODULE_PATH,
            "moduleload back_mdb",
            "",
            "database config",
            'rootdn "cn=config"',
            "rootpw %s" % self.CONFIG_PW,
            "access to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,"
            "cn=external,cn=auth manage by * break",
            "",
            "database mdb",
            "maxsize 1073741824",
            'suffix "%s"' % BASE,
            'rootdn "%s"' % ROOTDN,
            "rootpw %s" % ROOTPW,
            "directory %s" % self.datadir,
            "index objectClass eq",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _argv(self):
        argv = [self.slapd]
        if not os.path.exists(os.path.join(self.confdir, "cn=config.ldif")):
            argv += ["-f", self.conf]       # first start: convert
        return argv + ["-F", self.confdir, "-h",
                       "%s %s" % (self.uri, self.ldapi_uri), "-d", self.debug]

    def config_modify(self, ldif_path, add=False, check=True):
        """ldapadd (add=True) or ldapmodify -Y EXTERNAL over ldapi."""
        cmd = ["ldapadd" if add else "ldapmodify", "-Q", "-Y", "EXTERNAL",
               "-H", self.ldapi_uri, "-f", str(ldif_path)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                           timeout=30)
        if check and r.returncode != 0:
            raise LdapError(cmd, r.returncode, r.stdout, r.stderr)
        return r

    def config_search(self, base="cn=config", filter="(objectClass=*)",
                      attrs=(), scope="sub"):
        cmd = ["ldapsearch", "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri,
               "-LLL", "-o", "ldif-wrap=no", "-s", scope, "-b", base,
               filter] + list(attrs)
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                           timeout=30)
        if r.returncode != 0:
            raise LdapError(cmd, r.returncode, r.stdout, r.stderr)
        return parse_ldif(r.stdout)


def write_password_file(path, password=LOOKUP_PW):
    """The lookup service account's password, mode 0600, no newline."""
    path = str(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    os.chmod(path, 0o600)
    return path


class Redis(_Server):
    """A private redis-server on 127.0.0.1 without persistence (a restart
    empties it)."""

    name = "redis"

    def __init__(self, workdir, port=None, start=True):
        super().__init__(workdir)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.redis_server = _which("redis-server")
        self.redis_cli = _which("redis-cli")
        if not self.redis_server or not self.redis_cli:
            raise HarnessError("redis-server/redis-cli not found "
                               "(apt-get install redis-server)")
        if start:
            self.start()

    def _logfile(self):
        return os.path.join(self.workdir, "redis.log")

    def _argv(self):
        return [self.redis_server, "--port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.workdir, "--daemonize", "no",
                "--logfile", self._logfile()]

    def _ready(self):
        try:
            r = subprocess.run([self.redis_cli, "-h", self.host, "-p",
                                str(self.port), "PING"],
                               capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0 and r.stdout.strip() == "PONG"

    def cli(self, *args, timeout=10):
        """redis-cli -p PORT ARGS...; returns stdout without the last newline."""
        r = subprocess.run([self.redis_cli, "-h", self.host, "-p",
                            str(self.port)] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError("redis-cli %s: rc=%d %s"
                               % (" ".join(map(str, args)), r.returncode,
                                  r.stderr.strip()))
        return r.stdout.rstrip("\n")

    def flushall(self):
        return self.cli("FLUSHALL")


class Stack:
    """One Slapd loaded with ldap-schema/example-dit.ldif and one Redis with
    the over-quota example's usage; writes WORKDIR/tenantmail.conf.
    A context manager; stop() always stops everything."""

    def __init__(self, workdir, slapd_debug="stats,filter"):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        self.slapd = None
        self.redis = None
        # A Stack always starts from the example DIT: drop what an earlier
        # Stack left in the same directory (its own subdirectories only).
        for sub in ("slapd", "redis"):
            shutil.rmtree(os.path.join(self.workdir, sub), ignore_errors=True)
        try:
            self.slapd = Slapd(os.path.join(self.workdir, "slapd"), debug=slapd_debug)
            self.slapd.load_ldif(os.path.join(SCHEMA_DIR, "example-dit.ldif"))
            self.redis = Redis(os.path.join(self.workdir, "redis"))
            self.seed_redis()
            self.password_file = write_password_file(
                os.path.join(self.workdir, "lookup.secret"))
            # the provisioning account's (prov_ldap_bind_password_file)
            self.prov_password_file = write_password_file(
                os.path.join(self.workdir, "prov.secret"), PROV_PW)
            self.conf = self._write_conf()
        except BaseException:
            self.stop()
            raise

    def seed_redis(self):
        for key, fields in SEED_USAGE.items():
            args = ["HSET", key]
            for k, v in fields.items():
                args += [k, v]
            self.redis.cli(*args)

    def _write_conf(self):
        path = os.path.join(self.workdir, "tenantmail.conf")
        text = "\n".join([
            "# tenantmail.conf written by tests/harness/tnharness.py",
            "ldap_uri = %s" % self.slapd.uri,
            "ldap_base = %s" % BASE,
            "ldap_bind_dn = %s" % LOOKUP_DN,
            "ldap_bind_password_file = %s" % os.path.join(self.workdir,
                                                          "lookup.secret"),
            "redis_host = %s" % self.redis.host,
            "redis_port = %d" % self.redis.port,
        ]) + "\n"
        with open(path, "w") as f:
            f.write(text)
        return path

    def mail_host(self, address):
        """The mailbox's tnMailHost in the directory (None: not set)."""
        found = self.slapd.search("(mail=%s)" % address, base=TENANTS,
                                  attrs=("tnMailHost",))
        assert len(found) == 1, found
        return found[0].first("tnMailHost")

    def wait_mail_host(self, address, timeout=10.0):
        """mail_host() once it is set, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            host = self.mail_host(address)
            if host is not None or time.monotonic() >= deadline:
                return host
            time.sleep(0.05)

    def stop(self):
        errors = []
        for server in (self.redis, self.slapd):
            if server is None:
                continue
            try:
                server.stop()
            except Exception as e:      # stop the others anyway
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# -- command line ---------------------------------------------------------

def _read_pids(d):
    pids = []
    try:
        with open(os.path.join(d, "pids")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    pids.append((parts[0], int(parts[1])))
    except FileNotFoundError:
        pass
    return pids


def _is_ours(pid, name):
    """The pid still runs the program we started (pids get reused)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    prog = {"slapd": "slapd", "redis": "redis-server"}.get(name, name)
    return os.path.basename(argv0).startswith(prog)


def _down(d):
    pids = [(n, p) for n, p in _read_pids(d) if pid_alive(p) and _is_ours(p, n)]
    for _, pid in pids:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for _, p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, pid in pids:
        if pid_alive(pid):
            sys.stderr.write("%s (pid %d) ignored SIGTERM: SIGKILL\n"
                             % (name, pid))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for _, p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for _, p in pids if pid_alive(p)]
    try:
        os.unlink(os.path.join(d, "pids"))
    except FileNotFoundError:
        pass
    return 1 if left else 0


def main(argv):
    usage = "usage: tnharness.py up DIR | down DIR\n"
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        sys.stderr.write(usage)
        return 2
    d = os.path.abspath(argv[2])
    if argv[1] == "down":
        return _down(d)
    running = [(n, p) for n, p in _read_pids(d) if pid_alive(p)
               and _is_ours(p, n)]
    if running:
        sys.stderr.write("tnharness: %s already runs %s; run 'down' first\n"
                         % (d, ", ".join("%s %d" % x for x in running)))
        return 1
    os.makedirs(d, exist_ok=True)
    stack = Stack(d)
    with open(os.path.join(d, "pids"), "w") as f:
        f.write("slapd %d\nredis %d\n" % (stack.slapd.pid, stack.redis.pid))
    print(stack.conf)
    print("export TENANTMAIL_CONF=%s" % stack.conf)
    print("export TN_LDAP_URI=%s" % stack.slapd.uri)
    print("export TN_LDAP_BASE=%s" % BASE)
    print("export TN_LDAP_PORT=%d" % stack.slapd.port)
    print("export TN_REDIS_HOST=%s" % stack.redis.host)
    print("export TN_REDIS_PORT=%d" % stack.redis.port)
    print("export TN_HARNESS_DIR=%s" % d)
    sys.stdout.flush()
    # The servers run in their own sessions: they outlive this process.
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
