"""test_auth_cache -- Dovecot's own auth cache with the "tenant" driver,
kept fresh by the invalidation channel (dovecot-plugins/tn-auth-cache.h).

Run as root with Debian's pytest from the top of the tree, after a build:
    TN_BUILD_DIR=build pytest-3 -q tests/integration/test_auth_cache.py

One private Dovecot 2.3 with the driver in its default (asynchronous)
mode and Dovecot's auth cache ON (auth_cache_size 10M, auth_cache_ttl and
auth_cache_negative_ttl 1 hour, so nothing but the driver's flush can
make an entry go), slapd + Redis from tnharness.Stack and tn-provisiond
for the changes.  Logins are real IMAP LOGINs (imaplib):

  * the cache is really used: a second login of the same user is a
    "cache hit" in Dovecot's debug log (else every other test here would
    pass without the flush);
  * the userdb answer a login prepared is cached whole (uid, home,
    quota_rule, tenant), LMTP delivery works from it, and a quota change
    shows in the next answer within 1 s;
  * each provisioning change is in force for the next login within 1 s:
    a mailbox suspended and resumed, a password changed (the old one
    refused, the new one accepted), an address created right after it
    was cached as unknown (negative entry), a domain suspended (a
    cascade: the whole cache is emptied);
  * Redis killed (no invalidation can arrive): a change written straight
    into the directory is still in force within 1 s (the cache is
    emptied every 0.5 s while the subscription is down); Redis back, the
    cache is used again;
  * Redis restarted: the first change through tn-provisiond afterwards
    still invalidates (its pooled connection, closed by the old server,
    is found closed before use and replaced) and is seen within 1 s;
  * brute-force protection (dovecot_lockout_*) with the cache on stops
    the auth process at start (a cached login would skip the counters);
  * the control: the same Dovecot settings with dovecot_blocking = yes,
    where the driver cannot flush the cache: the auth process warns at
    start, and a suspended mailbox still logs in 2 s later -- the stale
    answer the flush exists to remove.

Missing prerequisites fail (never skip).
"""

import os
import re
import time

import pytest

import tndovecot as td
from tnprovd import Provd

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
MODULE = os.path.join(BUILD, "dovecot-plugins", ".libs", "libauthdb_tenant.so")
PASSWORD = "secret"
CACHE_ON = ("auth_cache_size = 10M\nauth_cache_ttl = 1 hour\n"
            "auth_cache_negative_ttl = 1 hour\nauth_debug = yes\n")


def require_dovecot():
    if not os.path.isfile(MODULE):
        pytest.fail("%s not found: build first (scripts/build DIR) and set "
                    "TN_BUILD_DIR" % MODULE, pytrace=False)
    problems = td.missing_prerequisites()
    if problems:
        pytest.fail("Dovecot test prerequisites: " + "; ".join(problems),
                    pytrace=False)


def start_dovecot(stack, workdir, blocking):
    with open(stack.conf) as f:
        text = f.read()
    text += "\n[dovecot-auth]\n" + "\n".join([
        "dovecot_blocking = %s" % ("yes" if blocking else "no"),
        "dovecot_home = %s/%%d/%%n" % td.home_dir_of(os.path.join(workdir, "dovecot")),
        "lookup_timeout = 2s",
        "ldap_timeout = 1s",
        "ldap_network_timeout = 1s",
        "ldap_retry_down = 0",
        ""])
    conf = os.path.join(workdir, "tenantmail.conf")
    with open(conf, "w") as f:
        f.write(text)
    os.chmod(conf, 0o644)
    passdb = "passdb {\n  driver = tenant\n  args = %s\n}\n" % conf
    userdb = "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf
    return td.Dovecot(os.path.join(workdir, "dovecot"), passdb=passdb, userdb=userdb,
                      auth_modules=[MODULE], extra_config=CACHE_ON)


class Env:
    def __init__(self, stack, workdir):
        self.stack = stack
        self.dc = None
        os.makedirs(os.path.join(workdir, "provd"), exist_ok=True)
        self.provd = Provd(stack, os.path.join(workdir, "provd"))
        try:
            self.dc = start_dovecot(stack, workdir, blocking=False)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        try:
            if self.dc is not None:
                self.dc.stop()
        finally:
            self.provd.stop()

    def request(self, method, path, body=None, headers=None):
        r = self.provd.request(method, path, body, headers=headers)
        assert r.status in (200, 201), (method, path, r.status, r.text)
        return r


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    require_dovecot()
    e = Env(stack, str(tmp_path_factory.mktemp("auth-cache")))
    try:
        yield e
    finally:
        e.stop()


def logs_in(dc, user, password=PASSWORD):
    """True when an IMAP LOGIN succeeds, False when it is refused."""
    c = dc.imap_connect()
    try:
        try:
            c.login(user, password)
        except c.error:
            return False
        c.logout()
        return True
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def within(seconds, check):
    """Seconds until check() was true; fails after `seconds`."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, "not within %.1f s" % seconds
        time.sleep(0.05)
    return time.monotonic() - t0


def cached(dc, user, password=PASSWORD, accepted=True):
    """Log in until Dovecot answers user from its cache ("cache hit")."""
    def hit():
        mark = dc.log_mark()
        assert logs_in(dc, user, password) == accepted
        try:    # Dovecot's log process writes asynchronously
            dc.wait_log(r"\(%s,[^)]*\): cache hit" % re.escape(user), mark, timeout=0.5)
            return True
        except AssertionError:
            return False
    within(5, hit)


def test_cache_is_used(env):
    """Without this, the tests below would pass whether or not the driver
    flushes anything."""
    # the first answer may be flushed once more when the invalidation
    # subscription comes up (nothing is known fresh before): cached()
    # logs in until a login is answered from the cache
    mark = env.dc.log_mark()
    cached(env.dc, "alice@acme.example")
    env.dc.wait_log(r"\(alice@acme\.example,[^)]*\): cache miss", mark)


def test_userdb_answer_cached_whole_and_kept_fresh(env):
    """The userdb answer a login's passdb step prepared is what Dovecot
    caches (uid, home, quota_rule, tenant: not an empty entry), LMTP
    delivery finds the user through it, and a quota change shows in the
    next userdb answer within 1 s."""
    user = "carl@acme.example"
    env.request("POST", "/v1/mailboxes", {"address": user, "password": PASSWORD,
                                          "quota_bytes": 1 << 30})
    assert logs_in(env.dc, user)
    mark = env.dc.log_mark()
    fields = env.dc.user_fields(user)
    env.dc.wait_log(r"userdb cache hit", mark)
    assert fields.get("uid") and fields.get("home"), fields
    assert fields.get("tenant") == "acme", fields
    assert fields.get("quota_rule") == "*:bytes=%d" % (1 << 30), fields
    code, text = env.dc.lmtp_deliver(user, "Subject: cached\r\n\r\nhello\r\n")
    assert code == 250, (code, text)
    env.request("PATCH", "/v1/mailboxes/%s" % user, {"quota_bytes": 2 << 30},
                headers={"If-Match": "*"})
    within(1.0, lambda: env.dc.user_fields(user).get("quota_rule")
           == "*:bytes=%d" % (2 << 30))


def test_suspension_and_resume_within_1s(env):
    user = "bob@acme.example"
    cached(env.dc, user)
    env.request("POST", "/v1/mailboxes/%s/suspend" % user, {"reason": "cache test"})
    within(1.0, lambda: not logs_in(env.dc, user))
    env.request("POST", "/v1/mailboxes/%s/resume" % user, {})
    within(1.0, lambda: logs_in(env.dc, user))


def test_password_change_within_1s(env):
    user = "dave@acme.example"
    cached(env.dc, user)
    env.request("PATCH", "/v1/mailboxes/%s" % user, {"password": "new-secret"},
                headers={"If-Match": "*"})
    within(1.0, lambda: not logs_in(env.dc, user, PASSWORD))
    assert logs_in(env.dc, user, "new-secret")


def test_created_after_cached_as_unknown(env):
    user = "cachenew@acme.example"
    cached(env.dc, user, "new-pw", accepted=False)      # a negative entry
    env.request("POST", "/v1/mailboxes", {"address": user, "password": "new-pw"})
    within(1.0, lambda: logs_in(env.dc, user, "new-pw"))


def test_domain_suspension_within_1s(env):
    user = "erin@acme-mail.example"
    cached(env.dc, user)
    cached(env.dc, "alice@acme.example")
    env.request("POST", "/v1/domains/acme-mail.example/suspend", {"reason": "cache test"})
    try:
        within(1.0, lambda: not logs_in(env.dc, user))
        assert logs_in(env.dc, "alice@acme.example")    # another domain
    finally:
        env.request("POST", "/v1/domains/acme-mail.example/resume", {})
    within(1.0, lambda: logs_in(env.dc, user))


def test_redis_down_cache_still_fresh(env):
    """No invalidation can arrive while Redis is down: the cache is
    emptied every 0.5 s instead, so a change made straight in the
    directory is in force within 1 s."""
    stack, user = env.stack, "alice@acme.example"
    cached(env.dc, user)
    stack.redis.kill()
    try:
        time.sleep(0.3)         # the subscriber sees its connection go
        stack.slapd.modify("dn: mail=%s,tnTenantId=acme,ou=tenants,dc=example,dc=net\n"
                           "changetype: modify\nreplace: tnStatus\ntnStatus: suspended\n"
                           % user)
        within(1.0, lambda: not logs_in(env.dc, user))
        stack.slapd.modify("dn: mail=%s,tnTenantId=acme,ou=tenants,dc=example,dc=net\n"
                           "changetype: modify\nreplace: tnStatus\ntnStatus: active\n"
                           % user)
        within(1.0, lambda: logs_in(env.dc, user))
    finally:
        stack.redis.start()
        stack.seed_redis()
    # subscribed again: the cache answers again
    cached(env.dc, user)


def test_first_change_after_redis_restart(env):
    """tn-provisiond's pooled Redis connections all died with the old
    server: its first invalidation afterwards must still happen (the dead
    connection replaced before use), not leave the cache stale."""
    stack, user = env.stack, "alice@acme.example"
    env.request("POST", "/v1/mailboxes/%s/resume" % user, {})  # pools a connection
    cached(env.dc, user)        # the auth process is up and subscribed
    mark = env.dc.log_mark()
    stack.redis.kill()
    try:
        time.sleep(0.2)
    finally:
        stack.redis.start()
        stack.seed_redis()
    env.dc.wait_log(r"subscribed to", mark, timeout=10)
    cached(env.dc, user)
    provd_log = env.provd.log.name
    pmark = len(open(provd_log).read())
    env.request("POST", "/v1/mailboxes/%s/suspend" % user, {"reason": "restart test"})
    try:
        assert "invalidation failed" not in open(provd_log).read()[pmark:]
        within(1.0, lambda: not logs_in(env.dc, user))
    finally:
        env.request("POST", "/v1/mailboxes/%s/resume" % user, {})
    within(1.0, lambda: logs_in(env.dc, user))


def test_lockout_with_the_cache_is_refused_at_start(stack, tmp_path):
    """Brute-force protection counts in the driver: a login answered from
    Dovecot's cache would skip it, so the two together stop the auth
    process at start, with the file named."""
    conf = str(tmp_path / "tenantmail.conf")
    with open(stack.conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text + "\n[dovecot-auth]\ndovecot_lockout_user_failures = 5\n")
    os.chmod(conf, 0o644)
    dc = td.Dovecot(str(tmp_path / "dovecot"),
                    passdb="passdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
                    userdb="userdb {\n  driver = tenant\n  args = %s\n}\n" % conf,
                    auth_modules=[MODULE], extra_config=CACHE_ON, start=False)
    try:
        with pytest.raises(td.DovecotError):
            dc.start(timeout=3)
        assert ("auth: Fatal: passdb tenant: %s: dovecot_lockout_* needs every login"
                % conf) in dc.log_text(), dc.log_text()
    finally:
        dc.stop()


def test_blocking_mode_control_stays_stale(stack, env, tmp_path):
    """dovecot_blocking = yes: the auth process (which holds the cache)
    has no lookup of its own to hear invalidations from. It says so, and
    a suspension is not seen for as long as the cache holds the answer."""
    dc = start_dovecot(stack, str(tmp_path), blocking=True)
    user = "bob@acme.example"
    try:
        assert "flushed on provisioning changes only in the asynchronous mode" \
            in dc.log_text()
        cached(dc, user)
        env.request("POST", "/v1/mailboxes/%s/suspend" % user, {"reason": "control"})
        try:
            time.sleep(2.0)
            assert logs_in(dc, user)            # stale, from Dovecot's cache
            assert not logs_in(env.dc, user)    # the flushed one is fresh
        finally:
            env.request("POST", "/v1/mailboxes/%s/resume" % user, {})
    finally:
        dc.stop()
