"""The private Dovecot instances of tests/harness/tndovecot.py work: IMAP
login/APPEND/SELECT, LMTP delivery into the Maildir, a proxy in front of
two stores, two instances side by side, an auth driver loaded from outside
/usr/lib/dovecot/modules/auth through a private mount namespace, and a
stop that leaves no process behind.  Fast: one instance and one proxy
topology per module."""

import os
import subprocess
import time

import pytest

from conftest import require_prerequisites
import tndovecot as td

HARNESS = os.path.dirname(os.path.abspath(td.__file__))
USERS = {"alice@a.example": "alice-pw", "bob@b.example": "bob-pw"}


def _title(pid):
    """The process title (cmdline) of pid, b"" when it has exited."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def require_dovecot():
    """Missing prerequisites FAIL (never skip), as in conftest.py."""
    require_prerequisites()
    problems = td.missing_prerequisites()
    if problems:
        pytest.fail("Dovecot test prerequisites: " + "; ".join(problems),
                    pytrace=False)


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    require_dovecot()
    d = tmp_path_factory.mktemp("dovecot")
    pf = td.write_passwd_file(str(d / "users"), USERS)
    passdb, userdb = td.passwd_file_db(pf)
    inst = td.Dovecot(str(d / "inst"), passdb=passdb, userdb=userdb)
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    require_dovecot()
    d = tmp_path_factory.mktemp("pair")
    pf = td.write_passwd_file(str(d / "store-users"), USERS)
    passdb, userdb = td.passwd_file_db(pf)
    store = {"passdb": passdb, "userdb": userdb}

    def proxy(stores):
        p, u = td.proxy_passwd_db(str(d / "proxy-users"),
                                  {"alice@a.example": 0, "bob@b.example": 1},
                                  stores, USERS.get)
        return {"passdb": p, "userdb": u}

    with td.DovecotPair(str(d), store, proxy) as p:
        yield p


def _msg(subject, body="hello\r\n"):
    return ("From: t@example.org\r\nTo: alice@a.example\r\nSubject: %s\r\n"
            "Message-ID: <%s@tndovecot.test>\r\n\r\n%s"
            % (subject, subject, body)).encode()


def test_doveconf_accepts_the_generated_config(dovecot):
    r = dovecot.doveconf("-n")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr
    assert "base_dir = %s" % dovecot.base_dir in r.stdout
    assert "instance_name = %s" % dovecot.name in r.stdout
    assert "port = %d" % dovecot.imap_port in r.stdout


def test_imap_login_append_select(dovecot):
    c = dovecot.imap("alice@a.example", "alice-pw")
    try:
        typ, data = c.append("INBOX", None, None, _msg("append-1"))
        assert typ == "OK", data
        typ, data = c.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1, data
        typ, data = c.search(None, "HEADER", "Message-ID", "append-1@tndovecot.test")
        assert typ == "OK" and data[0].split(), data
        typ, data = c.fetch(data[0].split()[0], "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert b"append-1" in data[0][1]
    finally:
        c.logout()
    dovecot.wait_log(r"imap-login: Info: Login: user=<alice@a\.example>")
    # the mail is the vmail user's, in this instance's home
    md = dovecot.maildir("alice@a.example")
    assert os.stat(md).st_uid == td.VMAIL_UID
    assert len(os.listdir(os.path.join(md, "cur")) +
               os.listdir(os.path.join(md, "new"))) >= 1


def test_imap_wrong_password(dovecot):
    c = dovecot.imap_connect()
    try:
        with pytest.raises(c.error) as e:
            c.login("alice@a.example", "wrong")
        assert b"AUTHENTICATIONFAILED" in e.value.args[0] or \
            "AUTHENTICATIONFAILED" in str(e.value)
    finally:
        c.shutdown()


def test_lmtp_delivery_lands_in_the_maildir(dovecot):
    md = dovecot.maildir("bob@b.example")
    code, text = dovecot.lmtp_deliver("bob@b.example", _msg("lmtp-1"))
    assert code == 250, text
    found = []
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(md, sub)):
            with open(os.path.join(md, sub, name), "rb") as f:
                if b"lmtp-1@tndovecot.test" in f.read():
                    found.append(name)
    assert len(found) == 1, os.listdir(os.path.join(md, "new"))
    # and IMAP sees it
    c = dovecot.imap("bob@b.example", "bob-pw")
    try:
        typ, data = c.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) >= 1
    finally:
        c.logout()
    code, text = dovecot.lmtp_deliver("nobody@b.example", _msg("lmtp-2"))
    assert code == 550, (code, text)


def test_pop3_login(dovecot):
    dovecot.lmtp_deliver("alice@a.example", _msg("pop-1"))
    c = dovecot.pop3("alice@a.example", "alice-pw")
    try:
        count, _ = c.stat()
        assert count >= 1
    finally:
        c.quit()


def test_doveadm_talks_to_the_instance(dovecot):
    f = dovecot.user_fields("alice@a.example")
    assert f["uid"] == str(td.VMAIL_UID)
    assert f["home"] == os.path.join(dovecot.home_dir, "alice@a.example")
    r = dovecot.doveadm("auth", "test", "alice@a.example", "alice-pw")
    assert r.returncode == 0 and "auth succeeded" in r.stdout, r.stdout + r.stderr
    r = dovecot.doveadm("auth", "test", "alice@a.example", "nope")
    assert r.returncode != 0 and "auth failed" in r.stdout, r.stdout + r.stderr
    r = dovecot.doveadm("user", "nobody@b.example")
    assert r.returncode == 67, r.stdout + r.stderr    # EX_NOUSER


def test_proxy_sends_each_user_to_its_store(pair):
    front, (a, b) = pair.proxy, pair.stores
    for user, idx, box in (("alice@a.example", 0, "on-store-A"),
                           ("bob@b.example", 1, "on-store-B")):
        marks = pair.marks()
        c = front.imap(user, USERS[user])
        try:
            typ, data = c.create(box)
            assert typ == "OK", data
        finally:
            c.logout()
        assert pair.stores_seen(user, marks) == [idx]
        store, other = pair.stores[idx], pair.stores[1 - idx]
        # the marker mailbox exists on that store only
        assert os.path.isdir(os.path.join(store.maildir(user), "." + box))
        assert not os.path.exists(other.maildir(user) and
                                  os.path.join(other.maildir(user), "." + box))
    # the front end says where it went (its log names the store's port)
    front.wait_log(r"proxy\(alice@a\.example,127\.0\.0\.1:%d\): Started proxying"
                   % a.imap_port)
    front.wait_log(r"proxy\(bob@b\.example,127\.0\.0\.1:%d\): Started proxying"
                   % b.imap_port)


def test_proxy_wrong_password_is_refused_at_the_front(pair):
    c = pair.proxy.imap_connect()
    try:
        with pytest.raises(c.error):
            c.login("alice@a.example", "wrong")
    finally:
        c.shutdown()


def test_side_by_side_with_an_auth_module_from_a_namespace_and_clean_stop(
        dovecot, tmp_path):
    """A second instance beside the module's one, whose passdb is a driver
    ("tntest", tests/harness/authdb_tntest.c, built here) that is not in
    /usr/lib/dovecot/modules/auth: the harness's private mount namespace
    makes it loadable without touching the system directory.  Stopping it
    leaves no process and the first instance keeps serving."""
    src = os.path.join(HARNESS, "authdb_tntest.c")
    so = str(tmp_path / "libauthdb_tntest.so")
    r = subprocess.run(["cc", "-shared", "-fPIC", "-std=gnu99",
                        "-DHAVE_CONFIG_H", "-I/usr/include/dovecot", "-o", so, src],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    system_before = sorted(os.listdir(td.AUTH_MODULE_DIR))
    userdb = "userdb {\n  driver = static\n  args = uid=vmail gid=vmail\n}\n"
    t0 = time.monotonic()
    second = td.Dovecot(str(tmp_path / "second"),
                        passdb="passdb {\n  driver = tntest\n}\n",
                        userdb=userdb, auth_modules=[so])
    started = time.monotonic() - t0
    try:
        assert second.imap_port != dovecot.imap_port
        assert second.base_dir != dovecot.base_dir
        c = second.imap("anyone@x.example", "tntest")
        typ, _ = c.select("INBOX")
        assert typ == "OK"
        c.logout()
        second.wait_log(r"tntest\(anyone@x\.example,.*\): tntest driver asked")
        c = second.imap_connect()
        with pytest.raises(c.error):
            c.login("anyone@x.example", "other")
        c.shutdown()
        # the system directory is untouched; the auth process sees ours
        assert sorted(os.listdir(td.AUTH_MODULE_DIR)) == system_before
        assert "libauthdb_tntest.so" not in system_before
        pids = second.processes()
        # process titles are "dovecot-<instance_name>/auth [...]"; a
        # process listed a moment ago (a login process) may be gone now
        auth = [p for p in pids if _title(p).startswith(("dovecot-%s/auth" %
                                                          second.name).encode())]
        assert auth, pids
        seen = os.listdir("/proc/%d/root%s" % (auth[0], td.AUTH_MODULE_DIR))
        assert "libauthdb_tntest.so" in seen
        assert set(system_before) <= set(seen)
        with open("/proc/self/mountinfo") as f:
            assert td.AUTH_MODULE_DIR not in f.read()
        # the first instance answers at the same time
        c = dovecot.imap("alice@a.example", "alice-pw")
        c.logout()
        c = second.imap_connect()       # an open connection at stop time
    finally:
        t0 = time.monotonic()
        second.stop()
        stopped = time.monotonic() - t0
    assert second.processes() == []
    for pid in pids:
        assert not td.th.pid_alive(pid), pid
    assert not os.path.exists(os.path.join(second.base_dir, "master.pid"))
    assert started < 5 and stopped < 5, (started, stopped)
    c = dovecot.imap("alice@a.example", "alice-pw")
    c.logout()
