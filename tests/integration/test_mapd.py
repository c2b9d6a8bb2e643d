"""tn-mapd, the Postfix socketmap server, through a real Postfix (from
tests/harness/tnpostfix.py, configured with the lines of docs/postfix.md),
real slapd + Redis (the module's stack) and a real Dovecot LMTP store.

One tn-mapd, one Postfix, one Dovecot and one SMTP sink (the "Internet"
that external alias targets are relayed to) serve the whole module.
"""

import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

import tndovecot
import tnharness
import tnprobe
import tnpostfix
from test_docs import TABLE_ENTRY_RE, build_program, page_parameters, report

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
SOURCE = os.path.join(TOP, "milters", "tn-mapd.c")
PAGE = os.path.join(TOP, "man", "tn-mapd.8")
DOC = os.path.join(TOP, "docs", "postfix.md")
DOC_PORT = "127.0.0.1:9466"

LOOKUP_TIMEOUT = 1.5                    # mapd_lookup_timeout below
STORE_USERS = ["alice@acme.example", "bob@acme.example",
               "erin@acme-mail.example", "carol@acme.example",
               "hank@globex.example", "milton@old-initech.example"]


def _require():
    problems = (tnpostfix.missing_prerequisites() +
                tndovecot.missing_prerequisites())
    if problems:
        pytest.fail("prerequisites: " + "; ".join(problems), pytrace=False)


# --- a socketmap client ------------------------------------------------------

class MapClient:
    """One connection to tn-mapd speaking netstrings."""

    def __init__(self, port=None, path=None, timeout=10):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port),
                                                 timeout=timeout)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        return b"%d:%s," % (len(payload), payload)

    def read_reply(self):
        """One reply netstring's payload as str; None when the server
        closed the connection."""
        while True:
            m = re.match(rb"(\d+):", self.buf)
            if m and len(self.buf) >= m.end() + int(m.group(1)) + 1:
                n, start = int(m.group(1)), m.end()
                assert self.buf[start + n:start + n + 1] == b",", self.buf
                out = self.buf[start:start + n]
                self.buf = self.buf[start + n + 1:]
                return out.decode()
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def query(self, name, key):
        if isinstance(key, str):
            key = key.encode()
        self.send_raw(self.request(name.encode() + b" " + key))
        return self.read_reply()

    def closed(self):
        """True when the server has closed the connection."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


# --- the daemon --------------------------------------------------------------

class Mapd:
    def __init__(self, workdir, stack, extra="", flavour="plain", env=None):
        self.workdir = str(workdir)
        self.program = tnprobe.binary("milters/tn-mapd", flavour)
        self.env = env
        self.port = tnharness.free_port()
        self.metrics_port = tnharness.free_port()
        self.socket_path = os.path.join(self.workdir, "mapd.sock")
        self.conf = os.path.join(self.workdir, "tenantmail.conf")
        self.log = os.path.join(self.workdir, "tn-mapd.log")
        with open(stack.conf) as f:
            base = f.read()
        with open(self.conf, "w") as f:
            f.write(base + "\n" + "\n".join([
                "[tn-mapd]",
                "mapd_listen = inet:127.0.0.1:%d, unix:%s"
                % (self.port, self.socket_path),
                "mapd_metrics_listen = 127.0.0.1:%d" % self.metrics_port,
                "mapd_user = nobody",
                "mapd_lookup_timeout = %dms" % (LOOKUP_TIMEOUT * 1000),
                "ldap_retry_down = 500ms",
                "ldap_network_timeout = 1s",
                "ldap_timeout = 1s",
                # entries filled during the module stay in memory (a hit
                # does not renew them): the hung-directory test relies on it
                "memory_cache_ttl = 60s",
            ]) + "\n" + extra)
        self.proc = None
        self.start()

    def start(self):
        out = open(self.log, "ab")
        try:
            env = dict(os.environ)
            env.update(self.env or {})
            self.proc = subprocess.Popen(
                [self.program, "-c", self.conf, "-e"], env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("tn-mapd exited (%s):\n%s"
                                     % (self.proc.returncode, self.log_text()))
            try:
                c = MapClient(self.port, timeout=2)
                c.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("tn-mapd not listening:\n%s"
                                         % self.log_text())
                time.sleep(0.02)

    def stop(self):
        """SIGTERM; the exit status (None when it had to be killed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode if self.proc else None

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def client(self):
        return MapClient(self.port)

    def q(self, name, key):
        c = self.client()
        try:
            return c.query(name, key)
        finally:
            c.close()

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                    % self.metrics_port, timeout=5) as r:
            return r.read().decode()

    def metric(self, name, **labels):
        text = self.metrics()
        sel = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        pat = re.escape(name) + (r"\{" + re.escape(sel) + r"\}" if labels else "")
        m = re.search(r"^" + pat + r" (\S+)$", text, re.M)
        assert m, "%s{%s} not in /metrics:\n%s" % (name, sel, text[:3000])
        return float(m.group(1))


# --- an SMTP sink: the Internet for external alias targets ---------------------

class Sink:
    """A minimal SMTP server that accepts everything and records
    (rcpts, data) per message."""

    def __init__(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.messages = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        f = conn.makefile("rwb")
        rcpts, out = [], f

        def say(line):
            out.write(line.encode() + b"\r\n")
            out.flush()
        try:
            say("220 sink.test ESMTP")
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                up = cmd.upper()
                if up.startswith(("EHLO", "HELO")):
                    say("250 sink.test")
                elif up.startswith("MAIL"):
                    rcpts = []
                    say("250 2.1.0 ok")
                elif up.startswith("RCPT"):
                    rcpts.append(re.search(r"<([^>]*)>", cmd).group(1))
                    say("250 2.1.5 ok")
                elif up == "DATA":
                    say("354 go ahead")
                    data = []
                    while True:
                        dl = f.readline()
                        if not dl or dl in (b".\r\n", b".\n"):
                            break
                        data.append(dl)
                    with self.lock:
                        self.messages.append((list(rcpts), b"".join(data)))
                    say("250 2.0.0 queued")
                elif up == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 ok")
        finally:
            conn.close()

    def wait_for(self, token, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for rcpts, data in self.messages:
                    if token.encode() in data:
                        return rcpts
            time.sleep(0.05)
        raise AssertionError("sink got no message with %s" % token)

    def stop(self):
        self.stopped = True
        self.srv.close()


# --- docs/postfix.md ---------------------------------------------------------

def doc_block(kind):
    """The text of the ```kind fenced block of docs/postfix.md."""
    with open(DOC) as f:
        text = f.read()
    m = re.search(r"^```%s\n(.*?)^```" % re.escape(kind), text, re.M | re.S)
    assert m, "docs/postfix.md has no ```%s block" % kind
    return m.group(1)


def doc_main_cf(mapd_port, lmtp_port):
    """docs/postfix.md's main.cf lines as a dict, with the test's ports."""
    params = {}
    for line in doc_block("main.cf").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        value = value.strip().replace(DOC_PORT, "127.0.0.1:%d" % mapd_port)
        if name.strip() == "virtual_transport":
            value = "lmtp:inet:127.0.0.1:%d" % lmtp_port
        params[name.strip()] = value
    return params


# --- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def mapd(stack, tmp_path_factory):
    _require()
    m = Mapd(tmp_path_factory.mktemp("mapd"), stack)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    _require()
    d = tmp_path_factory.mktemp("store")
    pw = tndovecot.write_passwd_file(str(d / "users"),
                                     {u: "pw" for u in STORE_USERS})
    passdb, userdb = tndovecot.passwd_file_db(pw)
    dc = tndovecot.Dovecot(str(d / "dovecot"), passdb=passdb, userdb=userdb)
    try:
        yield dc
    finally:
        dc.stop()


@pytest.fixture(scope="module")
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def postfix(mapd, store, sink, tmp_path_factory):
    main_cf = doc_main_cf(mapd.port, store.lmtp_port)
    main_cf["relayhost"] = "[127.0.0.1]:%d" % sink.port
    p = tnpostfix.Postfix(str(tmp_path_factory.mktemp("postfix")),
                          main_cf=main_cf)
    try:
        yield p
    finally:
        p.stop()


def rcpt(postfix, address, sender="someone@remote.test"):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as s:
        s.ehlo()
        s.mail(sender)
        code, text = s.rcpt(address)
        s.rset()
    return code, text.decode(errors="replace")


def maildir_has(store, user, token, timeout=10):
    deadline = time.monotonic() + timeout
    new = os.path.join(store.maildir(user), "new")
    while time.monotonic() < deadline:
        for name in os.listdir(new) if os.path.isdir(new) else ():
            with open(os.path.join(new, name), errors="replace") as f:
                if token in f.read():
                    return True
        time.sleep(0.05)
    raise AssertionError("%s has no message with %s" % (user, token))


def tnctl(stack, *args):
    return subprocess.run([build_program("provisioning/tnctl"), "-c",
                           stack.conf] + list(args), capture_output=True,
                          text=True, timeout=30)


def slapd_searches(stack):
    return len(re.findall(r" SRCH base=", stack.slapd.log_text()))


# --- the tables, asked directly ----------------------------------------------

def test_tables_answer_from_the_example_directory(mapd):
    expect = [
        ("domains", "acme.example", "OK acme"),
        ("domains", "ACME.Example", "OK acme"),
        ("domains", "old-initech.example", "OK initech"),   # suspended domain
        ("domains", "globex.example", "OK globex"),         # suspended tenant
        ("domains", "nowhere.example", "NOTFOUND "),
        ("mailboxes", "alice@acme.example", "OK alice@acme.example"),
        ("mailboxes", "carol@acme.example", "OK carol@acme.example"),  # suspended
        ("mailboxes", "zed@acme.example", "OK zed@acme.example"),      # deleted
        ("mailboxes", "sales@acme.example", "NOTFOUND "),   # an alias
        ("mailboxes", "nobody@acme.example", "NOTFOUND "),
        ("aliases", "alice@acme.example", "NOTFOUND "),     # Postfix keeps it
        ("aliases", "sales@acme.example",
         "OK alice@acme.example,bob@acme.example"),
        ("aliases", "team@acme.example",
         "OK alice@acme.example,bob@acme.example,erin@acme-mail.example,"
         "partner@external.example"),
        ("aliases", "loop1@acme.example", "NOTFOUND "),     # expands to nothing
        ("aliases", "partner@external.example", "NOTFOUND "),
        ("senders", "alice@acme.example", "OK alice@acme.example"),
        ("senders", "team@acme.example",
         "OK alice@acme.example,bob@acme.example,erin@acme-mail.example"),
        ("senders", "info@globex.example", "OK hank@globex.example"),
        ("senders", "nobody@acme.example", "NOTFOUND "),
    ]
    c = mapd.client()
    try:
        got = [(n, k, c.query(n, k)) for n, k, _ in expect]
    finally:
        c.close()
    assert got == expect


def test_postfix_own_client_reads_the_tables(mapd, tmp_path):
    """postmap -q uses Postfix's socketmap client: the protocol as Postfix
    speaks it, answers as Postfix reads them."""
    # a configuration directory of its own: a fresh machine has no
    # /etc/postfix/main.cf (the package is installed "No configuration")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")

    def postmap(key, name):
        return subprocess.run(["postmap", "-c", str(tmp_path), "-q", key,
                               "socketmap:inet:127.0.0.1:%d:%s" % (mapd.port, name)],
                              capture_output=True, text=True, timeout=30)
    r = postmap("team@acme.example", "aliases")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("alice@acme.example,bob@acme.example,"
                                "erin@acme-mail.example,partner@external.example")
    r = postmap("sales@acme.example", "senders")
    assert (r.returncode, r.stdout.strip()) == (0, "alice@acme.example,bob@acme.example")
    r = postmap("nobody@acme.example", "mailboxes")
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)


def test_unix_socket_serves_too(mapd):
    st = os.stat(mapd.socket_path)
    assert oct(st.st_mode & 0o777) == "0o660"
    import grp
    assert grp.getgrgid(st.st_gid).gr_name == "postfix"
    c = MapClient(path=mapd.socket_path)
    try:
        assert c.query("domains", "acme.example") == "OK acme"
    finally:
        c.close()


def test_runs_as_mapd_user(mapd):
    import pwd
    with open("/proc/%d/status" % mapd.proc.pid) as f:
        uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
    assert {int(u) for u in uids} == {pwd.getpwnam("nobody").pw_uid}


# --- through Postfix ------------------------------------------------------------

def test_postfix_check_accepts_the_doc_snippets(mapd, store, tmp_path):
    p = tnpostfix.Postfix(str(tmp_path / "pf"),
                          main_cf=doc_main_cf(mapd.port, store.lmtp_port),
                          master_extra=doc_block("master.cf"), start=False)
    try:
        r = subprocess.run(["postfix", "-c", p.config_dir, "check"],
                           capture_output=True, text=True, timeout=60)
        out = p._tty_output("postfix -c %s check" % p.config_dir)
    finally:
        p.stop()                            # its data directory goes
    assert r.returncode == 0, out
    assert not re.search(r"warning|error|fatal", out + r.stderr, re.I), out
    # and postconf sees the four tables as written in the doc
    for name, table in (("virtual_mailbox_domains", "domains"),
                        ("virtual_mailbox_maps", "mailboxes"),
                        ("virtual_alias_maps", "aliases"),
                        ("smtpd_sender_login_maps", "senders")):
        assert p.postconf("-h", name).strip() == \
            "socketmap:inet:127.0.0.1:%d:%s" % (mapd.port, table)


def test_unknown_user_gets_550_from_postfix(postfix):
    mark = postfix.log_mark()
    code, text = rcpt(postfix, "no-such-user@acme.example")
    assert code == 550 and "5.1.1" in text, (code, text)
    postfix.wait_log(r"reject: RCPT .*no-such-user@acme\.example.*"
                     r"User unknown in virtual mailbox table", mark)


def test_other_domains_are_not_virtual(postfix, mapd):
    """A domain the directory does not hold is not virtual: this client
    (127.0.0.1, in mynetworks) may relay to it, nothing is refused as an
    unknown user."""
    assert mapd.q("domains", "nowhere.example") == "NOTFOUND "
    code, _ = rcpt(postfix, "x@nowhere.example")
    assert code == 250


def test_suspended_domain_and_tenant_still_accepted(postfix, mapd):
    # the tables know them; refusing is the milter's business
    for addr in ("milton@old-initech.example", "hank@globex.example",
                 "carol@acme.example"):
        code, text = rcpt(postfix, addr)
        assert code == 250, (addr, code, text)


def test_alias_to_two_local_and_one_external_delivered_to_all(
        postfix, mapd, store, sink, stack):
    alias = "crew-%d@acme.example" % os.getpid()
    dn = "mail=%s,tnTenantId=acme,%s" % (alias, tnharness.TENANTS)
    stack.slapd.add("dn: %s\nobjectClass: tnMailAlias\nmail: %s\n"
                    "tnAliasTarget: alice@acme.example\n"
                    "tnAliasTarget: erin@acme-mail.example\n"
                    "tnAliasTarget: friend@external.example\n" % (dn, alias))
    try:
        assert tnctl(stack, "cache", "invalidate", "--address", alias).returncode == 0
        mark = postfix.log_mark()
        token = "alias-token-%d" % time.monotonic_ns()
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as s:
            refused = s.sendmail("sender@remote.test", [alias],
                                 "Subject: %s\r\n\r\n%s\r\n" % (token, token))
        assert refused == {}
        lines = postfix.wait_sent(3, mark)
        sent_to = sorted(re.search(r"to=<([^>]+)>", x).group(1) for x in lines)
        assert sent_to == ["alice@acme.example", "erin@acme-mail.example",
                           "friend@external.example"], lines
        assert all("orig_to=<%s>" % alias in x for x in lines), lines
        maildir_has(store, "alice@acme.example", token)
        maildir_has(store, "erin@acme-mail.example", token)
        assert sink.wait_for(token) == ["friend@external.example"]
    finally:
        stack.slapd.delete(dn)
        tnctl(stack, "cache", "invalidate", "--address", alias)


def test_provisioning_change_visible_to_postfix_within_1s(postfix, mapd, stack):
    addr = "newhire-%d@acme.example" % os.getpid()
    dn = "mail=%s,tnTenantId=acme,%s" % (addr, tnharness.TENANTS)
    # unknown first: the negative answer is now cached in Redis and memory
    assert rcpt(postfix, addr)[0] == 550
    assert stack.redis.cli("GET", "tn:v1:adr:" + addr).strip() == "!"
    stack.slapd.add("dn: %s\nobjectClass: tnMailbox\nmail: %s\n" % (dn, addr))
    try:
        assert rcpt(postfix, addr)[0] == 550        # still cached: not asked
        r = tnctl(stack, "cache", "invalidate", "--address", addr)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        while True:
            code, text = rcpt(postfix, addr)
            if code == 250:
                break
            assert time.monotonic() - t0 < 1.0, (code, text)
            time.sleep(0.05)
        assert time.monotonic() - t0 < 1.0
        assert mapd.q("mailboxes", addr) == "OK " + addr
    finally:
        stack.slapd.delete(dn)
        tnctl(stack, "cache", "invalidate", "--address", addr)


def _wait_recovered(postfix, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        addr = "fresh-%d@acme.example" % time.monotonic_ns()
        code, text = rcpt(postfix, addr)
        if code == 550:
            return
        assert code == 451 and time.monotonic() < deadline, (code, text)
        time.sleep(0.2)


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_directory_down_gives_451_then_recovers(postfix, mapd, stack, fault):
    def temps():
        return sum(mapd.metric("tn_mapd_requests_total", map=m, result="temp")
                   for m in ("aliases", "mailboxes"))
    before = temps()
    if fault == "killed":
        stack.slapd.kill()
    else:
        stack.slapd.freeze()
    try:
        for _ in range(2):
            # a fresh address: no cache has it, only the directory can say
            addr = "fresh-%d@acme.example" % time.monotonic_ns()
            t0 = time.monotonic()
            code, text = rcpt(postfix, addr)
            took = time.monotonic() - t0
            assert code == 451 and "4.3.0" in text, (code, text)
            # the deadline bounds it: one lookup per table Postfix asks
            # (virtual_alias_maps, then virtual_mailbox_maps)
            assert took < 2 * LOOKUP_TIMEOUT + 1.5, took
        # a known address from the caches is still accepted meanwhile
        assert rcpt(postfix, "alice@acme.example")[0] == 250
    finally:
        if fault == "killed":
            stack.slapd.start()
        else:
            stack.slapd.thaw()
    assert temps() >= before + 2
    assert "temporary failure" in mapd.log_text()
    _wait_recovered(postfix)
    assert mapd.q("domains", "acme.example") == "OK acme"


def test_a_hung_directory_delays_only_the_lookups_that_need_it(mapd, stack):
    """More requests for uncached addresses than there are lookup threads,
    all stuck on a frozen slapd: cached answers still come at once, the
    stuck ones get TEMP by the deadline, clients that leave early cost
    nothing."""
    assert mapd.q("domains", "acme.example") == "OK acme"
    assert mapd.q("mailboxes", "alice@acme.example") == "OK alice@acme.example"
    stack.slapd.freeze()
    waiting = []
    try:
        for i in range(20):                     # mapd_workers is 8
            c = mapd.client()
            c.send_raw(c.request("mailboxes hung-%d-%d@acme.example"
                                 % (i, time.monotonic_ns())))
            waiting.append(c)
        time.sleep(0.1)
        t0 = time.monotonic()
        assert mapd.q("domains", "acme.example") == "OK acme"
        assert mapd.q("mailboxes", "alice@acme.example") == "OK alice@acme.example"
        assert mapd.q("aliases", "alice@acme.example") == "NOTFOUND "
        assert time.monotonic() - t0 < 0.3
        for c in waiting[:10]:                  # gone before their answer
            c.close()
        for c in waiting[10:]:
            reply = c.read_reply()
            assert reply is not None and reply.startswith("TEMP "), reply
        assert time.monotonic() - t0 < LOOKUP_TIMEOUT + 0.5
    finally:
        stack.slapd.thaw()
        for c in waiting:
            c.close()
    assert mapd.proc.poll() is None
    assert mapd.q("domains", "acme.example") == "OK acme"


# --- bad input ---------------------------------------------------------------

def test_invalid_keys_are_notfound_without_a_directory_search(mapd, stack):
    keys = [b"*)(mail=*@acme.example", b"alice@*", b"*", b"a\\2a@acme.example",
            b"alice@acme.example)(objectClass=*", b"a,b@acme.example",
            b"a\x00b@acme.example", b"alice@acme.example\r\nQUIT",
            b"caf\xc3\xa9@acme.example", b"\xff\xfe@acme.example",
            b"x" * 300 + b"@acme.example", b"alice", b"@acme.example",
            b"alice@", b"alice@[127.0.0.1]", b'"a b"@acme.example', b""]
    before_invalid = mapd.metric("tn_mapd_invalid_keys_total")
    time.sleep(0.2)
    searches = slapd_searches(stack)
    c = mapd.client()
    try:
        for name in ("mailboxes", "aliases", "senders", "domains"):
            for key in keys:
                assert c.query(name, key) == "NOTFOUND ", (name, key)
        time.sleep(0.2)                     # slapd's log is written late
        assert slapd_searches(stack) == searches
        # the same connection still answers real questions
        assert c.query("mailboxes", "bob@acme.example") == "OK bob@acme.example"
    finally:
        c.close()
    assert mapd.metric("tn_mapd_invalid_keys_total") >= before_invalid + 4 * len(keys)


def test_unknown_map_is_perm_and_the_connection_goes_on(mapd):
    c = mapd.client()
    try:
        assert c.query("passwd", "root").startswith("PERM ")
        c.send_raw(c.request("nospace"))
        assert c.read_reply().startswith("PERM ")
        assert c.query("domains", "acme.example") == "OK acme"
    finally:
        c.close()


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.0\r\n\r\n",
    b"5:domainsacme,",                      # no ',' where the length says
    b"200000:" + b"x" * 100,                # announces more than allowed
    b"99999999999999999999:x,",
    b":domains acme.example,",
], ids=["http", "bad-terminator", "too-large", "huge-length", "no-length"])
def test_malformed_netstrings_get_perm_and_close(mapd, garbage):
    errors = mapd.metric("tn_mapd_protocol_errors_total")
    c = mapd.client()
    try:
        c.send_raw(garbage)
        reply = c.read_reply()
        assert reply is not None and reply.startswith("PERM "), reply
        assert c.read_reply() is None           # closed by the server
    finally:
        c.close()
    assert mapd.metric("tn_mapd_protocol_errors_total") == errors + 1
    # everyone else is served on
    assert mapd.q("domains", "acme.example") == "OK acme"


def test_over_long_key_within_the_request_limit_is_notfound(mapd):
    c = mapd.client()
    try:
        assert c.query("aliases", "a" * 3000 + "@acme.example") == "NOTFOUND "
        assert c.query("aliases", "sales@acme.example").startswith("OK ")
    finally:
        c.close()


def test_a_slow_writer_is_served_byte_by_byte(mapd):
    c = mapd.client()
    try:
        for b in c.request("domains acme.example"):
            c.send_raw(bytes([b]))
            time.sleep(0.001)
        assert c.read_reply() == "OK acme"
    finally:
        c.close()


# --- many clients -------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(mapd):
    keys = []
    for i in range(200):
        keys.append(("mailboxes", "alice@acme.example") if i % 3 == 0 else
                    ("aliases", "sales@acme.example") if i % 3 == 1 else
                    ("mailboxes", "ghost-%d@acme.example" % i))
    want = ["OK alice@acme.example", "OK alice@acme.example,bob@acme.example",
            "NOTFOUND "]
    c = mapd.client()
    try:
        c.send_raw(b"".join(c.request("%s %s" % k) for k in keys))
        got = [c.read_reply() for _ in keys]
    finally:
        c.close()
    assert got == [want[i % 3] for i in range(len(keys))]


def test_many_concurrent_clients(mapd):
    results, errors = [], []

    def worker(n):
        try:
            c = mapd.client()
            try:
                for i in range(20):
                    results.append(c.query("senders", "sales@acme.example") ==
                                   "OK alice@acme.example,bob@acme.example")
            finally:
                c.close()
        except Exception as e:          # reported below
            errors.append(e)
    conns = mapd.metric("tn_mapd_connections_total")
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 1000 and all(results)
    assert mapd.metric("tn_mapd_connections_total") >= conns + 50


def test_metrics_count_requests_by_map_and_result(mapd):
    before = mapd.metric("tn_mapd_requests_total", map="domains", result="ok")
    mapd.q("domains", "acme.example")
    assert mapd.metric("tn_mapd_requests_total", map="domains",
                       result="ok") == before + 1
    text = mapd.metrics()
    assert re.search(r'^tn_mapd_request_seconds_count\{map="domains"\} [1-9]',
                     text, re.M)
    assert re.search(r"^tn_mapd_connections \d+$", text, re.M)
    assert re.search(r"^tn_mapd_lookups_total [1-9]", text, re.M)
    assert re.search(r"^tn_mapd_cache_subscribed 1$", text, re.M)


def test_connection_limit_and_idle_timeout(stack, tmp_path):
    m = Mapd(tmp_path, stack, extra="mapd_max_connections = 2\n"
                                     "mapd_idle_timeout = 1s\n")
    try:
        deadline = time.monotonic() + 5         # the readiness probe has left
        while m.metric("tn_mapd_connections") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        a, b = m.client(), m.client()
        assert a.query("domains", "acme.example") == "OK acme"
        assert b.query("domains", "acme.example") == "OK acme"
        c = m.client()                          # the third is closed at once
        assert c.closed()
        assert m.metric("tn_mapd_connections_refused_total") == 1
        assert m.metric("tn_mapd_connections") == 2
        t0 = time.monotonic()
        assert a.closed() and b.closed()        # idle: closed by the server
        assert 0.5 < time.monotonic() - t0 < 3
        assert m.metric("tn_mapd_connections") == 0
        assert m.q("domains", "acme.example") == "OK acme"
    finally:
        m.stop()


# --- documentation -------------------------------------------------------------

def test_man_page_documents_every_parameter():
    with open(SOURCE) as f:
        text = f.read()
    m = re.search(r"tn_mapd_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "no tn_mapd_params table in %s" % SOURCE
    code = {name: (ptype.lower(), default)
            for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert len(code) >= 10
    page, problems = page_parameters(PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s is not documented" % name)
            continue
        if page[name][:2] != (ptype, default):
            problems.append("line %d: %s: %r in the page, %r in the code"
                            % (page[name][2], name, page[name][:2], (ptype, default)))
    problems += ["%s is not in tn_mapd_params" % n for n in sorted(page)
                 if n not in code]
    report(problems, "%s disagrees with %s" % (PAGE, SOURCE))
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", "-z", PAGE],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    with open(PAGE) as f:
        page_text = f.read()
    assert ".SH SECURITY" in page_text


def test_check_mode_and_bad_settings(stack, tmp_path):
    prog = build_program("milters/tn-mapd")
    r = subprocess.run([prog, "-c", stack.conf, "-n", "-o", "mapd_workers=3"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "mapd_workers = 3" in r.stdout
    r = subprocess.run([prog, "-c", stack.conf, "-n", "-o", "mapd_socket_mode=999"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and "mapd_socket_mode" in r.stderr
    r = subprocess.run([prog, "-c", stack.conf, "-n", "-o",
                        "mapd_max_request_size=200000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 78, (r.stdout, r.stderr)


# --- memory safety --------------------------------------------------------------

SANITIZERS = {
    "asan": ({"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
             ("AddressSanitizer", "LeakSanitizer", "runtime error")),
    "tsan": ({"TSAN_OPTIONS": "halt_on_error=0:exitcode=23"},
             ("ThreadSanitizer",)),
}


@pytest.mark.parametrize("flavour", sorted(SANITIZERS))
def test_no_memory_errors_or_races_under_sanitizers(stack, tmp_path, flavour):
    """The ASan+UBSan and the TSan builds through the paths where
    connections, jobs and lookups end in unusual orders: pipelining,
    malformed input, clients leaving while their lookups (and an alias's
    owner fan-out) wait on a frozen slapd, /metrics read meanwhile, then
    a clean stop (leaks checked)."""
    _require()
    env, markers = SANITIZERS[flavour]
    m = Mapd(tmp_path, stack, extra="mapd_user =\n", flavour=flavour, env=env)
    try:
        c = m.client()
        c.send_raw(b"".join(c.request(x) for x in (
            "domains acme.example", "senders team@acme.example",
            "aliases team@acme.example", "mailboxes nobody@acme.example",
            "bogus x", "aliases a(b)@acme.example")))
        assert [c.read_reply()[:2] for _ in range(6)] == \
            ["OK", "OK", "OK", "NO", "PE", "NO"]
        c.send_raw(b"12:domains")                # then leaves mid-request
        c.close()
        c = m.client()
        c.send_raw(b"x:y,")
        assert c.read_reply().startswith("PERM ")
        c.close()
        stack.slapd.freeze()
        try:
            for i in range(12):
                c = m.client()
                c.send_raw(c.request("mailboxes gone-%d-%d@acme.example"
                                     % (i, time.monotonic_ns())))
                c.send_raw(c.request("domains d%d.example" % i))
                c.close()
            c = m.client()
            c.send_raw(c.request("senders team@acme.example"))
            c.close()
            c = m.client()
            # a name no earlier run asked for: the other flavour's lookup of
            # it completes after the thaw and caches "not found" in Redis
            assert c.query("domains", "gone-%d.example"
                           % time.monotonic_ns()).startswith("TEMP ")
            c.close()
        finally:
            stack.slapd.thaw()
        assert m.q("senders", "sales@acme.example") == \
            "OK alice@acme.example,bob@acme.example"
        assert m.metric("tn_mapd_protocol_errors_total") == 1
        open_conn = m.client()                   # still open at the stop
        open_conn.send_raw(b"3:dom")
        time.sleep(0.1)
    finally:
        rc = m.stop()
    log = m.log_text()
    assert not [x for x in markers if x in log], log[-6000:]
    assert rc == 0, (rc, log[-3000:])
