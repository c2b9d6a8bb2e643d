"""test_submit_milter_postfix -- tn-submit-milter behind a real Postfix 3.7.

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build-smilter pytest-3 -q tests/integration/test_submit_milter_postfix.py

A private Postfix (tests/harness/tnpostfix.py) runs a submission smtpd
with the milter named per service (-o smtpd_milters=..., the snippet of
docs/submit-milter.md), milter_protocol = 6 and milter_default_action =
tempfail; accepted mail goes to the discard transport.  slapd and Redis
come from tnharness.Stack, the milter from test_submit_milter.SubmitMilter.

The SASL login: this test does not run a SASL backend.  Postfix's
submission service has smtpd_sasl_auth_enable = no and trusts 127.0.0.1
for XCLIENT (smtpd_authorized_xclient_hosts); the client says
"XCLIENT LOGIN=<address>" and Postfix hands that login to the milter as
{auth_authen}, exactly the macro real SASL sets (docs/submit-milter.md
says why this is a faithful stand-in and when to use Dovecot SASL).
Checked with smtplib:
  * a spoofed sender and another tenant's address: 553 5.7.1 from
    Postfix, nothing queued; the login's own address and an alias
    naming it: delivered; no login at all: 530 5.7.0;
  * the send limit reached through Postfix: erin's 50th message of the
    hour delivered, the 51st 450 4.7.1 at RCPT with the wait in the text;
    a transaction abandoned with RSET gives its slot back;
  * Redis stopped: the limits unenforced, mail delivered, enforced again
    once it is back; slapd frozen: 451 4.3.0 within the deadline;
  * the milter killed: Postfix tempfails and queues nothing;
  * docs/submit-milter.md's main.cf and master.cf blocks pass
    "postfix -c DIR check" and "postconf -n" without a warning.
"""

import os
import re
import signal
import smtplib
import subprocess
import time

import pytest

import tnpostfix
from test_submit_milter import (LOOKUP_TIMEOUT, SubmitMilter, clear_rate_keys,
                                drop_lookup_cache, members, require_prerequisites, seed_window)

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
DOC = os.path.join(TOP, "docs", "submit-milter.md")


@pytest.fixture(scope="module")
def milter(stack, tmp_path_factory):
    require_prerequisites()
    m = SubmitMilter(stack, tmp_path_factory.mktemp("smilter"))
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def postfix(milter, tmp_path_factory):
    problems = tnpostfix.missing_prerequisites()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    p = tnpostfix.Postfix(tmp_path_factory.mktemp("postfix"), main_cf={
        "default_transport": "discard:",
        "milter_protocol": "6",
        "milter_default_action": "tempfail",
    }, services={"submission": {
        "smtpd_milters": "inet:127.0.0.1:%d" % milter.port,
        "smtpd_sasl_auth_enable": "no",
        "smtpd_authorized_xclient_hosts": "127.0.0.1",
        "smtpd_relay_restrictions": "permit_mynetworks,reject",
    }})
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(autouse=True)
def seeded(stack):
    for server in (stack.slapd, stack.redis):
        if server.frozen:
            server.thaw()
        if not server.running():
            server.start()
    clear_rate_keys(stack)


def session(postfix, login):
    s = smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=30)
    assert s.ehlo("client.tnpostfix.test")[0] == 250
    if login is not None:
        assert s.has_extn("xclient"), "XCLIENT not offered to 127.0.0.1"
        code, msg = s.docmd("XCLIENT", "LOGIN=%s" % login)
        assert code == 220, (code, msg)
        assert s.ehlo("client.tnpostfix.test")[0] == 250
    return s


def reply(code, msg):
    m = re.match(r"(\d\.\d+\.\d+)", msg.decode(errors="replace"))
    return "%d %s" % (code, m.group(1) if m else "-")


def send(postfix, login, sender, rcpts=("friend@external.example",), s=None):
    """One transaction: (mail reply, {rcpt: reply}, data reply or None)."""
    own = s is None
    s = s or session(postfix, login)
    try:
        mail = reply(*s.mail(sender))
        answers, data = {}, None
        if mail.startswith("250"):
            answers = {r: reply(*s.rcpt(r)) for r in rcpts}
            if any(a.startswith("250") for a in answers.values()):
                data = reply(*s.data(b"Subject: submitted\r\n\r\nhello\r\n"))
            else:
                s.rset()
        return mail, answers, data
    finally:
        if own:
            try:
                s.quit()
            except smtplib.SMTPException:
                s.close()


def test_sender_ownership_through_postfix(postfix, milter):
    mark = postfix.log_mark()
    assert send(postfix, "alice@acme.example", "ceo@bank.example") == \
        ("553 5.7.1", {}, None)
    assert send(postfix, "alice@acme.example", "hank@globex.example") == \
        ("553 5.7.1", {}, None)
    assert send(postfix, None, "alice@acme.example") == ("530 5.7.0", {}, None)
    ok = ("250 2.1.0", {"friend@external.example": "250 2.1.5"}, "250 2.0.0")
    assert send(postfix, "alice@acme.example", "alice@acme.example") == ok
    assert send(postfix, "alice@acme.example", "sales@acme.example") == ok
    sent = postfix.wait_sent(2, mark)
    assert len(sent) == 2
    log = postfix.log_since(mark)
    assert re.search(r"milter-reject: MAIL from .*553 5\.7\.1 .*not owned", log), log[-2000:]
    # the login came through as {auth_authen}, with the queue id
    assert re.search(r"queue=\w+ tenant=acme: end of message: login=<alice@acme.example> "
                     r"from=<sales@acme.example>", milter.log_text())


def test_send_limit_reached_through_postfix(postfix, milter, stack):
    seed_window(stack, "mbx:erin@acme-mail.example", 48)
    mark = postfix.log_mark()
    s = session(postfix, "erin@acme-mail.example")
    try:
        # a transaction abandoned with RSET holds no slot afterwards
        assert reply(*s.mail("erin@acme-mail.example")) == "250 2.1.0"
        assert reply(*s.rcpt("a@external.example")) == "250 2.1.5"
        s.rset()
        for _ in range(2):          # the 49th and the 50th
            got = send(postfix, None, "erin@acme-mail.example", s=s)
            assert got[2] == "250 2.0.0", got
        assert reply(*s.mail("erin@acme-mail.example")) == "250 2.1.0"
        code, msg = s.rcpt("b@external.example")
        assert reply(code, msg) == "450 4.7.1", (code, msg)
        assert b"50 messages per hour" in msg and b"try again in" in msg, msg
        s.rset()
    finally:
        s.close()
    assert len(postfix.wait_sent(2, mark)) == 2
    assert len(members(stack, "mbx:erin@acme-mail.example")) == 50


def test_redis_stopped_through_postfix(postfix, milter, stack):
    """The documented policy: limits unenforced, mail delivered; enforced
    again once Redis is back."""
    seed_window(stack, "mbx:erin@acme-mail.example", 50)
    mark = postfix.log_mark()
    stack.redis.stop()
    try:
        got = send(postfix, "erin@acme-mail.example", "erin@acme-mail.example")
        assert got == ("250 2.1.0", {"friend@external.example": "250 2.1.5"}, "250 2.0.0")
        postfix.wait_sent(1, mark)
    finally:
        stack.redis.start()
    deadline = time.monotonic() + 10     # the cache's down-marking backs off to 5 s
    while True:
        clear_rate_keys(stack)
        seed_window(stack, "mbx:erin@acme-mail.example", 50)
        got = send(postfix, "erin@acme-mail.example", "erin@acme-mail.example")
        if got[1] == {"friend@external.example": "450 4.7.1"}:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.3)


def test_slapd_frozen_is_451_through_postfix(postfix, milter, stack):
    drop_lookup_cache(stack)
    stack.slapd.freeze()
    try:
        t0 = time.monotonic()
        got = send(postfix, "alice@acme.example", "sales@acme.example")
        assert time.monotonic() - t0 < LOOKUP_TIMEOUT + 3
        assert got == ("451 4.3.0", {}, None)
    finally:
        stack.slapd.thaw()
    assert send(postfix, "alice@acme.example", "sales@acme.example")[2] == "250 2.0.0"


def test_docs_snippets_pass_postfix_check(tmp_path):
    with open(DOC) as f:
        text = f.read()
    main = re.findall(r"^```main\.cf\n(.*?)^```", text, re.M | re.S)
    masters = re.findall(r"^```master\.cf\n(.*?)^```", text, re.M | re.S)
    assert len(main) >= 1 and len(masters) >= 1, "docs/submit-milter.md lost its snippets"
    for i, master in enumerate(masters):
        p = tnpostfix.Postfix(tmp_path / ("check%d" % i), start=False)
        with open(os.path.join(p.config_dir, "main.cf"), "a") as f:
            f.write("".join(main))
        with open(os.path.join(p.config_dir, "master.cf"), "a") as f:
            f.write(master)
        for argv in (["postfix", "-c", p.config_dir, "check"],
                     ["postconf", "-c", p.config_dir, "-n"],
                     ["postconf", "-c", p.config_dir, "-M"]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "warning" not in r.stderr, (argv, r.stderr)
        r = subprocess.run(["postconf", "-c", p.config_dir, "-P",
                            "submission/inet/smtpd_milters"],
                           capture_output=True, text=True, timeout=60)
        assert "submit-milter" in r.stdout or "10026" in r.stdout, r
        r = subprocess.run(["postconf", "-c", p.config_dir, "-h", "milter_default_action",
                            "milter_protocol"], capture_output=True, text=True, timeout=60)
        assert r.stdout.split() == ["tempfail", "6"], r


def test_milter_killed_postfix_tempfails_and_accepts_nothing(postfix, milter):
    """Last: the milter is killed mid-transaction, then while a session
    starts; restarted afterwards."""
    queued = postfix.queue_count()
    mark = postfix.log_mark()
    s = session(postfix, "alice@acme.example")
    try:
        assert reply(*s.mail("alice@acme.example")) == "250 2.1.0"
        assert reply(*s.rcpt("friend@external.example")) == "250 2.1.5"
        milter.proc.send_signal(signal.SIGKILL)
        milter.proc.wait(10)
        code, msg = s.data(b"Subject: unchecked\r\n\r\nnot checked\r\n")
        assert code // 100 == 4, (code, msg)
    finally:
        s.close()
    try:
        mail, answers, data = send(postfix, "alice@acme.example", "ceo@bank.example")
        codes = [mail] + list(answers.values()) + ([data] if data else [])
        assert codes[-1].startswith("4"), codes
        assert not any(c.startswith("250") for c in codes[1:]), codes
        time.sleep(1.5)
        assert postfix.queue_count() == queued
        assert "status=sent" not in postfix.log_since(mark)
    finally:
        milter.start()
    assert send(postfix, "alice@acme.example", "alice@acme.example")[2] == "250 2.0.0"
