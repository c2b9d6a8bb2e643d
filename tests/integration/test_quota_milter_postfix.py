"""test_quota_milter_postfix -- tn-quota-milter behind a real Postfix 3.7.

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build-qmilter pytest-3 -q tests/integration/test_quota_milter_postfix.py

A private Postfix (tests/harness/tnpostfix.py) runs its port-25 smtpd
with the milter named per service (-o smtpd_milters=..., the snippet of
docs/milters.md), milter_protocol = 6 and milter_default_action =
tempfail; accepted mail goes to the discard transport.  slapd and Redis
come from tnharness.Stack, the milter from test_quota_milter.QuotaMilter.
An SMTP client (smtplib, low-level commands so that SIZE= is what the
test says) checks:
  * every reply through Postfix: 550 5.1.1 unknown and deleted,
    550 5.2.1 suspended, 452 4.2.2 over quota, 552 5.3.4 too large for
    the plan, 451 4.3.0 with slapd frozen; aliases and foreign domains
    accepted;
  * recipients of three tenants in one transaction, each with its own
    answer, the message delivered to the accepted ones only;
  * one tenant's pool shared by two mailboxes, with SIZE=;
  * Redis stopped: quotas unenforced, the directory's answers unchanged;
  * the queue id macro requested with smfi_setsymlist reaches the milter;
  * slapd frozen, and killed, in the middle of one SMTP transaction:
    451 4.3.0 for the recipient asked meanwhile, the real answer for the
    next once slapd is back, the message delivered to the accepted one;
  * the milter killed: Postfix tempfails and accepts nothing unchecked
    (no message in the queue, nothing delivered);
  * docs/milters.md's main.cf and master.cf blocks pass
    "postfix -c DIR check" and "postconf -n" without a warning.
"""

import os
import re
import signal
import smtplib
import subprocess
import time

import pytest

import tnharness as th
import tnpostfix
from test_quota_milter import (LOOKUP_TIMEOUT, MiB, GiB, QuotaMilter, drop_lookup_cache,
                               require_prerequisites, seed_usage, settle_directory)

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
DOC = os.path.join(TOP, "docs", "milters.md")
DOMAINS = ["acme.example", "acme-mail.example", "globex.example", "initech.example",
           "old-initech.example"]


@pytest.fixture(scope="module")
def milter(stack, tmp_path_factory):
    require_prerequisites()
    m = QuotaMilter(stack, tmp_path_factory.mktemp("qmilter"))
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
        "virtual_mailbox_domains": " ".join(DOMAINS),
        "virtual_mailbox_maps": "static:ok",   # tn-mapd's job; the milter decides
        "virtual_transport": "discard:",
        "default_transport": "discard:",     # external recipients too
        "message_size_limit": str(64 * MiB),  # the plan's limit is the milter's
        "milter_protocol": "6",
        "milter_default_action": "tempfail",
    }, services={"smtp": {"smtpd_milters": "inet:127.0.0.1:%d" % milter.port}})
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
    seed_usage(stack, {"mbx:dave@acme.example": 5 * MiB, "ten:acme": 5 * MiB})


def session(postfix):
    s = smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30)
    code, _ = s.ehlo("client.tnpostfix.test")
    assert code == 250
    assert s.has_extn("size")
    return s


def reply(code, msg):
    """'550 5.1.1' from smtplib's (code, message)."""
    m = re.match(r"(\d\.\d+\.\d+)", msg.decode(errors="replace"))
    return "%d %s" % (code, m.group(1) if m else "-")


def transaction(postfix, rcpts, size=None, body_bytes=200):
    """MAIL (with SIZE= when given), RCPT each, DATA if any was accepted.
    Returns ({rcpt: 'code x.y.z'}, data reply or None)."""
    s = session(postfix)
    try:
        opts = ["SIZE=%d" % size] if size is not None else []
        code, msg = s.mail("sender@external.example", opts)
        assert code == 250, (code, msg)
        answers = {r: reply(*s.rcpt(r)) for r in rcpts}
        data = None
        if any(a.startswith("250") for a in answers.values()):
            body = ("Subject: tn-quota-milter through Postfix\r\n\r\n" +
                    "y" * 76 + "\r\n") * max(1, body_bytes // 78)
            data = reply(*s.data(body.encode()))
        return answers, data
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def test_every_reply_through_postfix(postfix, milter):
    mark = postfix.log_mark()
    milter_mark = milter.log_mark()
    answers, data = transaction(postfix, [
        "alice@acme.example", "nobody@acme.example", "zed@acme.example",
        "carol@acme.example", "milton@old-initech.example", "hank@globex.example",
        "dave@acme.example", "sales@acme.example", "partner@external.example"],
        size=3000, body_bytes=3000)
    assert answers == {
        "alice@acme.example": "250 2.1.5",
        "nobody@acme.example": "550 5.1.1",
        "zed@acme.example": "550 5.1.1",
        "carol@acme.example": "550 5.2.1",
        "milton@old-initech.example": "550 5.2.1",
        "hank@globex.example": "550 5.2.1",
        "dave@acme.example": "452 4.2.2",
        "sales@acme.example": "250 2.1.5",
        "partner@external.example": "250 2.1.5",
    }
    assert data == "250 2.0.0"
    sent = postfix.wait_sent(3, mark)
    got = sorted(re.search(r"to=<([^>]+)>", line).group(1) for line in sent)
    assert got == ["alice@acme.example", "partner@external.example", "sales@acme.example"]
    milter_log = milter.log_since(milter_mark)
    # the macro asked for with smfi_setsymlist reached the milter: its
    # lines carry Postfix's queue id (from the second RCPT on: smtpd opens
    # the queue file after the first valid recipient)
    qid = re.search(r"([0-9A-F]{8,}): milter-reject: RCPT", postfix.log_since(mark)).group(1)
    assert "queue=%s tenant=acme: rcpt=<nobody@acme.example>" % qid in milter_log
    assert re.search(r"queue=%s tenant=acme: end of message: size=\d+ recipients=3" % qid,
                     milter.log_text())
    # too large for the plan: erin's 10 MiB
    answers, _ = transaction(postfix, ["erin@acme-mail.example"], size=10 * MiB + 1)
    assert answers == {"erin@acme-mail.example": "552 5.3.4"}


def test_three_tenants_in_one_transaction(postfix, milter):
    mark = postfix.log_mark()
    answers, data = transaction(postfix, ["peter@initech.example", "hank@globex.example",
                                          "bob@acme.example", "dave@acme.example"],
                                size=1000)
    assert answers == {"peter@initech.example": "250 2.1.5",
                       "hank@globex.example": "550 5.2.1",
                       "bob@acme.example": "250 2.1.5",
                       "dave@acme.example": "452 4.2.2"}
    assert data == "250 2.0.0"
    sent = postfix.wait_sent(2, mark)
    got = sorted(re.search(r"to=<([^>]+)>", line).group(1) for line in sent)
    assert got == ["bob@acme.example", "peter@initech.example"]


def test_pool_shared_by_two_mailboxes_with_size(postfix, milter, stack):
    seed_usage(stack, {"mbx:alice@acme.example": GiB, "mbx:bob@acme.example": 100,
                       "ten:acme": 10 * GiB - 50000})
    answers, _ = transaction(postfix, ["alice@acme.example", "bob@acme.example"],
                             size=40000, body_bytes=1000)
    assert answers == {"alice@acme.example": "250 2.1.5", "bob@acme.example": "250 2.1.5"}
    answers, _ = transaction(postfix, ["alice@acme.example", "bob@acme.example",
                                       "peter@initech.example"], size=50001)
    assert answers == {"alice@acme.example": "452 4.2.2", "bob@acme.example": "452 4.2.2",
                       "peter@initech.example": "250 2.1.5"}


def test_slapd_frozen_is_451_through_postfix(postfix, milter, stack):
    drop_lookup_cache(stack)
    stack.slapd.freeze()
    try:
        t0 = time.monotonic()
        answers, data = transaction(postfix, ["bob@acme.example", "nobody@acme.example"])
        assert time.monotonic() - t0 < 2 * LOOKUP_TIMEOUT + 3
        assert answers == {"bob@acme.example": "451 4.3.0",
                           "nobody@acme.example": "451 4.3.0"}
        assert data is None
    finally:
        stack.slapd.thaw()
    answers, _ = transaction(postfix, ["bob@acme.example", "nobody@acme.example"])
    assert answers == {"bob@acme.example": "250 2.1.5", "nobody@acme.example": "550 5.1.1"}


def test_redis_stopped_through_postfix(postfix, milter, stack):
    """The documented policy: quotas unenforced, the directory's answers
    unchanged, mail delivered; enforced again once Redis is back."""
    mark = postfix.log_mark()
    stack.redis.stop()
    try:
        answers, data = transaction(postfix, ["dave@acme.example", "nobody@acme.example",
                                              "hank@globex.example"], size=100)
        assert answers == {"dave@acme.example": "250 2.1.5",
                           "nobody@acme.example": "550 5.1.1",
                           "hank@globex.example": "550 5.2.1"}
        assert data == "250 2.0.0"
        postfix.wait_sent(1, mark)
    finally:
        stack.redis.start()
    seed_usage(stack, {"mbx:dave@acme.example": 5 * MiB, "ten:acme": 5 * MiB})
    deadline = time.monotonic() + 10     # the cache's down-marking backs off to 5 s
    while transaction(postfix, ["dave@acme.example"])[0]["dave@acme.example"] != "452 4.2.2":
        assert time.monotonic() < deadline, "quota not enforced again"
        time.sleep(0.3)


@pytest.mark.parametrize("fault", ["frozen", "killed"])
def test_slapd_lost_in_the_middle_of_a_transaction(postfix, milter, stack, fault):
    """One SMTP transaction: a recipient before, one while slapd is
    frozen or killed (451 4.3.0 within the deadline), one after it is
    back (its real answer); the message goes to the accepted ones."""
    mark = postfix.log_mark()
    s = session(postfix)
    try:
        assert s.mail("sender@external.example", ["SIZE=500"])[0] == 250
        assert reply(*s.rcpt("alice@acme.example")) == "250 2.1.5"
        drop_lookup_cache(stack)
        if fault == "frozen":
            stack.slapd.freeze()
        else:
            stack.slapd.kill()
        try:
            t0 = time.monotonic()
            assert reply(*s.rcpt("bob@acme.example")) == "451 4.3.0"
            assert time.monotonic() - t0 < LOOKUP_TIMEOUT + 1.5
        finally:
            if fault == "frozen":
                stack.slapd.thaw()
            else:
                stack.slapd.start()
        deadline = time.monotonic() + 15     # a killed URI is retried after ldap_retry_down
        while True:
            got = reply(*s.rcpt("carol@acme.example"))
            if got != "451 4.3.0" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == "550 5.2.1"
        assert reply(*s.data(b"Subject: mid-run\r\n\r\nhello\r\n")) == "250 2.0.0"
    finally:
        s.close()
        if fault == "killed":
            settle_directory(milter, stack)
    sent = postfix.wait_sent(1, mark)
    assert [re.search(r"to=<([^>]+)>", x).group(1) for x in sent] == ["alice@acme.example"]


def test_docs_snippets_pass_postfix_check(tmp_path):
    with open(DOC) as f:
        text = f.read()
    main = re.findall(r"^```main\.cf\n(.*?)^```", text, re.M | re.S)
    masters = re.findall(r"^```master\.cf\n(.*?)^```", text, re.M | re.S)
    assert len(main) >= 1 and len(masters) >= 2, "docs/milters.md lost its snippets"
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
        r = subprocess.run(["postconf", "-c", p.config_dir, "-P", "smtp/inet/smtpd_milters"],
                           capture_output=True, text=True, timeout=60)
        assert "smtpd_milters" in r.stdout, r
        r = subprocess.run(["postconf", "-c", p.config_dir, "-h", "milter_default_action",
                            "milter_protocol"], capture_output=True, text=True, timeout=60)
        assert r.stdout.split() == ["tempfail", "6"], r


def test_milter_killed_postfix_tempfails_and_accepts_nothing(postfix, milter):
    """Last: the milter is killed (once in the middle of a transaction,
    then while a new session starts) and restarted."""
    queued = postfix.queue_count()
    mark = postfix.log_mark()
    s = session(postfix)
    try:
        assert s.mail("sender@external.example", ["SIZE=100"])[0] == 250
        assert s.rcpt("alice@acme.example")[0] == 250
        milter.proc.send_signal(signal.SIGKILL)
        milter.proc.wait(10)
        code, msg = s.data(b"Subject: unchecked\r\n\r\nnot checked at end of message\r\n")
        assert code // 100 == 4, (code, msg)
    finally:
        s.close()
    try:
        s = session(postfix)
        try:
            code, msg = s.mail("sender@external.example", ["SIZE=100"])
            codes = [code]
            if code == 250:
                code, msg = s.rcpt("alice@acme.example")
                codes.append(code)
            if code == 250:
                code, msg = s.data(b"Subject: unchecked\r\n\r\nnot checked\r\n")
                codes.append(code)
            assert codes[-1] // 100 == 4, (codes, msg)
            assert 250 not in codes[1:], "a recipient or the message was accepted unchecked"
        finally:
            s.close()
        time.sleep(1.5)
        assert postfix.queue_count() == queued
        log = postfix.log_since(mark)
        assert "status=sent" not in log
        assert re.search(r"(?i)milter service .*connection refused", log), log[-2000:]
    finally:
        milter.start()
    mark = postfix.log_mark()
    answers, data = transaction(postfix, ["alice@acme.example"])
    assert answers == {"alice@acme.example": "250 2.1.5"} and data == "250 2.0.0"
    postfix.wait_sent(1, mark)
