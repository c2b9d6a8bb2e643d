"""The private Postfix of tests/harness/tnpostfix.py works: it delivers
through LMTP to a real Dovecot store, refuses a recipient its tables do
not know, reports start-up errors with Postfix's own words, and two
instances run side by side, stop and start again."""

import os
import smtplib
import time

import pytest

import tndovecot
import tnharness
import tnpostfix

USERS = {"alice@example.test": "pw-a", "bob@example.test": "pw-b"}


def _require():
    problems = (tnpostfix.missing_prerequisites() +
                tndovecot.missing_prerequisites())
    if problems:
        pytest.fail("prerequisites: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    _require()
    d = tmp_path_factory.mktemp("store")
    pw = tndovecot.write_passwd_file(str(d / "users"), USERS)
    passdb, userdb = tndovecot.passwd_file_db(pw)
    dc = tndovecot.Dovecot(str(d / "dovecot"), passdb=passdb, userdb=userdb)
    try:
        yield dc
    finally:
        dc.stop()


def _main_cf(store):
    return {
        "virtual_mailbox_domains": "example.test",
        "virtual_mailbox_maps":
            "inline:{ alice@example.test=ok, bob@example.test=ok }",
        "virtual_transport": "lmtp:inet:127.0.0.1:%d" % store.lmtp_port,
    }


@pytest.fixture(scope="module")
def postfix(store, tmp_path_factory):
    p = tnpostfix.Postfix(str(tmp_path_factory.mktemp("postfix")),
                          main_cf=_main_cf(store))
    try:
        yield p
    finally:
        p.stop()


def _maildir_messages(store, user):
    new = os.path.join(store.maildir(user), "new")
    try:
        return [os.path.join(new, f) for f in os.listdir(new)]
    except FileNotFoundError:
        return []


def _wait_message(store, user, token, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in _maildir_messages(store, user):
            with open(path, errors="replace") as f:
                if token in f.read():
                    return path
        time.sleep(0.05)
    raise AssertionError("no message with %s in %s's Maildir" % (token, user))


def test_delivers_to_dovecot_lmtp(postfix, store):
    mark = postfix.log_mark()
    token = "token-%d" % time.monotonic_ns()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as s:
        refused = s.sendmail("sender@remote.test",
                             ["alice@example.test", "bob@example.test"],
                             "Subject: %s\r\n\r\nhello %s\r\n" % (token, token))
    assert refused == {}
    lines = postfix.wait_sent(2, mark)
    assert any("to=<alice@example.test>" in x for x in lines), lines
    assert any("to=<bob@example.test>" in x for x in lines), lines
    assert all("relay=127.0.0.1[127.0.0.1]:%d" % store.lmtp_port in x
               for x in lines), lines
    _wait_message(store, "alice@example.test", token)
    _wait_message(store, "bob@example.test", token)
    deadline = time.monotonic() + 5
    while postfix.queue_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert postfix.queue_count() == 0


def test_unknown_recipient_refused_by_postfix(postfix):
    mark = postfix.log_mark()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=10) as s:
        s.mail("sender@remote.test")
        code, text = s.rcpt("nobody@example.test")
    assert code == 550, (code, text)
    assert b"5.1.1" in text
    m = postfix.wait_log(r"NOQUEUE: reject: RCPT .*<nobody@example\.test>",
                         mark)
    assert "User unknown in virtual mailbox table" in m.group(0)


def test_wait_log_fails_with_the_log_tail(postfix):
    with pytest.raises(AssertionError) as e:
        postfix.wait_log(r"this line never appears", timeout=0.2)
    assert "daemon started" in str(e.value) or "Postfix log" in str(e.value)


def test_deferred_mail_is_retried(postfix, store, tmp_path):
    """A store that is down defers; retries come within seconds."""
    p = tnpostfix.Postfix(str(tmp_path / "pf"), main_cf={
        "virtual_mailbox_domains": "example.test",
        "virtual_mailbox_maps": "static:ok",
        "virtual_transport": "lmtp:inet:127.0.0.1:%d"
                             % tnharness.free_port()})
    try:
        with smtplib.SMTP("127.0.0.1", p.smtp_port, timeout=10) as s:
            s.sendmail("a@remote.test", ["carol@example.test"],
                       "Subject: x\r\n\r\nx\r\n")
        p.wait_log(r"status=deferred", timeout=10)
        assert p.queue_count() == 1
        mark = p.log_mark()
        p.postconf("-e", "virtual_transport=lmtp:inet:127.0.0.1:%d"
                   % store.lmtp_port)
        p.reload()
        p.flush()
        # carol is not a Dovecot user: the store itself refuses her now
        p.wait_log(r"to=<carol@example\.test>.*status=bounced", mark)
    finally:
        p.stop()


def test_start_error_shows_postfix_words(tmp_path):
    _require()
    p = tnpostfix.Postfix(str(tmp_path / "bad"),
                          main_cf={"virtual_mailbox_maps": "nosuchtype:x",
                                   "inet_protocols": "ipv9"}, start=False)
    with pytest.raises(tnharness.HarnessError) as e:
        p.start()
    assert "ipv9" in str(e.value)
    assert not p.running()
    p.stop()
    p.stop()


def test_two_instances_side_by_side_twice(store, tmp_path):
    _require()
    for round_ in range(2):
        a = tnpostfix.Postfix(str(tmp_path / "a"), main_cf=_main_cf(store),
                              services={"smtp": None, "submission": {
                                  "smtpd_recipient_restrictions":
                                      "permit_mynetworks, reject"}})
        b = tnpostfix.Postfix(str(tmp_path / "b"), main_cf=_main_cf(store))
        try:
            assert len({a.smtp_port, a.submission_port, b.smtp_port}) == 3
            assert b.submission_port is None
            for p, port in ((a, a.submission_port), (b, b.smtp_port)):
                mark = p.log_mark()
                token = "side-%d-%d" % (round_, port)
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.sendmail("s@remote.test", ["alice@example.test"],
                               "Subject: %s\r\n\r\n%s\r\n" % (token, token))
                p.wait_sent(1, mark)
                _wait_message(store, "alice@example.test", token)
            assert "postfix/submission/smtpd" in a.log_text()
        finally:
            a.stop()
            b.stop()
        assert not a.running() and not b.running()
        assert not a._children_alive() and not b._children_alive()
