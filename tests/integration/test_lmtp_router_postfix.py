"""test_lmtp_router_postfix -- a real Postfix 3.7 -> tn-lmtp-router -> real
Dovecot LMTP stores.

Postfix (tests/harness/tnpostfix.py) takes mail over SMTP for the example
DIT's domains (virtual_mailbox_maps static:ok: recipient validation is
tn-mapd's job, tested elsewhere) and hands it to the router with
virtual_transport = lmtp:inet:127.0.0.1:<router port>, retrying deferred
mail after 1 s. The router and its three stores are the topology of
test_lmtp_router (pool-a = S0, S1; pool-b = S2, the default pool).

Checked: one message for recipients on two stores arrives once in each
(one domain through the router's unix socket);
with S2 stopped in the middle of a run its recipients are deferred by
Postfix with the router's 451 4.4.x while the others are delivered, and
after S2's restart Postfix's retries deliver them: every message exactly
once in every mailbox, nothing left in the queue.
"""

import re
import smtplib

import pytest

import tnpostfix
import tnrouter
from test_lmtp_router import SENDER, Topology, marker, message, wait_counts

DOMAINS = ["acme.example", "acme-mail.example", "initech.example", "globex.example"]


@pytest.fixture(scope="module")
def topo(stack):
    with tnrouter.module_workdir("tn-lmtp-router-pf-") as workdir:
        t = Topology(stack, workdir)
        try:
            yield t
        finally:
            t.stop()


@pytest.fixture(scope="module")
def postfix(topo, tmp_path_factory):
    problems = tnpostfix.missing_prerequisites()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    p = tnpostfix.Postfix(tmp_path_factory.mktemp("postfix"), main_cf={
        "virtual_mailbox_domains": " ".join(DOMAINS),
        "virtual_mailbox_maps": "static:ok",
        "virtual_transport": "lmtp:inet:127.0.0.1:%d" % topo.router.port,
        # one domain through the router's unix socket
        "transport_maps": "inline:{globex.example=lmtp:unix:%s}" % topo.router.unix_path,
        "lmtp_send_xforward_command": "yes",    # the queue id on the router's lines
    })
    try:
        yield p
    finally:
        p.stop()


def send(postfix, rcpts, body):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as c:
        c.sendmail(SENDER, rcpts, body.encode())


def test_postfix_router_two_stores(topo, postfix):
    m = marker()
    mark = postfix.log_mark()
    send(postfix, ["bob@acme.example", "peter@initech.example"], message(m))
    lines = postfix.wait_sent(2, mark)
    assert all("relay=127.0.0.1[127.0.0.1]:%d" % topo.router.port in l for l in lines), lines
    qid = re.search(r"postfix/lmtp\[\d+\]: ([0-9A-F]+): to=<bob@acme\.example>",
                    "\n".join(lines)).group(1)
    topo.router.wait_log(r"queue=%s tenant=acme: to=<bob@acme\.example>" % qid)
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]
    assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1]


def test_postfix_through_the_unix_socket(topo, postfix):
    m = marker()
    mark = postfix.log_mark()
    send(postfix, ["hank@globex.example", "bob@acme.example"], message(m))
    lines = postfix.wait_sent(2, mark)
    hank = [l for l in lines if "hank@globex.example" in l]
    assert hank and "[%s]" % topo.router.unix_path in hank[0], lines
    assert wait_counts(topo, "hank@globex.example", m, [0, 0, 1]) == [0, 0, 1]
    assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0]


def test_store_stopped_mid_run_postfix_retries_no_duplicates(topo, postfix):
    s2 = topo.stores[2]
    mark = postfix.log_mark()
    marks = [marker() for _ in range(10)]
    for m in marks[:5]:
        send(postfix, ["bob@acme.example", "peter@initech.example"], message(m))
    # stopped between transactions: a store killed after saving a message
    # and before answering makes any LMTP hop deliver it again (RFC 1047;
    # docs/lmtp-router.md), which is not what this test is about
    postfix.wait_sent(10, mark, timeout=30)
    s2.stop()
    try:
        for m in marks[5:]:
            send(postfix, ["bob@acme.example", "peter@initech.example"], message(m))
        postfix.wait_log(r"to=<peter@initech\.example>.*status=deferred.*451 4\.4\.", mark,
                         timeout=20)
        # the others are not held back
        for m in marks[5:]:
            assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0], timeout=20) == [1, 0, 0]
    finally:
        s2.start()
    postfix.flush()
    postfix.wait_sent(20, mark, timeout=60)
    for m in marks:
        assert wait_counts(topo, "bob@acme.example", m, [1, 0, 0]) == [1, 0, 0], m
        assert wait_counts(topo, "peter@initech.example", m, [0, 0, 1]) == [0, 0, 1], m
    assert postfix.queue_count() == 0
