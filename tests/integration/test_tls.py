"""StartTLS and ldaps:// with a CA made by openssl in the temp dir: the
right CA works, a wrong CA (or a server without TLS) is a temporary
failure with a clear message, and nothing is ever sent in plain text
instead."""

import json
import os
import re
import subprocess

import pytest

import tnharness
from tnprobe import tnctl

FAST = {"lookup_timeout": "3s", "ldap_timeout": "1s", "redis_enabled": "no"}


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=%s" % name, "-keyout", "%s.key" % name,
            "-out", "%s.pem" % name, cwd=d)
    return os.path.join(d, "%s.pem" % name)


def make_server_cert(d, ca):
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "%s.pem" % ca,
            "-CAkey", "%s.key" % ca, "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.pem", cwd=d)
    return os.path.join(d, "server.pem"), os.path.join(d, "server.key")


class TlsSlapd(tnharness.Slapd):
    """A Slapd with a server certificate, listening on ldap:// (StartTLS)
    and ldaps://."""

    def __init__(self, workdir, cert, key, **kw):
        self.cert, self.key = cert, key
        self.ldaps_port = tnharness.free_port()
        super().__init__(workdir, **kw)

    def _write_conf(self):
        super()._write_conf()
        text = open(self.conf).read()
        tls = "TLSCertificateFile %s\nTLSCertificateKeyFile %s\n" % (self.cert, self.key)
        text = text.replace("pidfile ", tls + "pidfile ", 1)
        with open(self.conf, "w") as f:
            f.write(text)

    @property
    def ldaps_uri(self):
        return "ldaps://127.0.0.1:%d/" % self.ldaps_port

    def _argv(self):
        return [self.slapd, "-f", self.conf, "-h", "%s %s" % (self.uri, self.ldaps_uri),
                "-d", self.debug]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    good = make_ca(d, "goodca")
    bad = make_ca(d, "badca")
    cert, key = make_server_cert(d, "goodca")
    slapd = TlsSlapd(os.path.join(d, "slapd"), cert, key)
    plain = tnharness.Slapd(os.path.join(d, "plain"))
    try:
        slapd.load_ldif(os.path.join(tnharness.SCHEMA_DIR, "example-dit.ldif"))
        plain.load_ldif(os.path.join(tnharness.SCHEMA_DIR, "example-dit.ldif"))
        pw = tnharness.write_password_file(os.path.join(d, "lookup.secret"))
        yield dict(dir=d, good=good, bad=bad, slapd=slapd, plain=plain, pw=pw)
    finally:
        slapd.stop()
        plain.stop()


def conf(tls, uri, name, **extra):
    path = os.path.join(tls["dir"], name + ".conf")
    lines = ["ldap_uri = " + uri, "ldap_base = " + tnharness.BASE,
             "ldap_bind_dn = " + tnharness.LOOKUP_DN,
             "ldap_bind_password_file = " + tls["pw"]]
    lines += ["%s = %s" % kv for kv in extra.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def lookup(path):
    r = tnctl(path, "lookup", "--json", "alice@acme.example", overrides=FAST)
    return r.returncode, json.loads(r.stdout)


def test_starttls_right_ca(tls):
    rc, out = lookup(conf(tls, tls["slapd"].uri, "st-good", ldap_starttls="yes",
                          ldap_tls_ca_file=tls["good"]))
    assert rc == 0 and out["result"] == "found", out


def test_ldaps_right_ca(tls):
    rc, out = lookup(conf(tls, tls["slapd"].ldaps_uri, "ldaps-good",
                          ldap_tls_ca_file=tls["good"], ldap_starttls="yes"))
    assert rc == 0 and out["result"] == "found", out


@pytest.mark.parametrize("kind", ["starttls", "ldaps"])
def test_wrong_ca_is_tempfail_without_plaintext(tls, kind):
    slapd = tls["slapd"]
    uri = slapd.uri if kind == "starttls" else slapd.ldaps_uri
    mark = slapd.log_mark()
    rc, out = lookup(conf(tls, uri, kind + "-bad", ldap_starttls="yes",
                          ldap_tls_ca_file=tls["bad"]))
    assert rc == 75 and out["result"] == "tempfail", out
    err = out["error"].lower()
    assert "certificate" in err or "tls" in err or "connect" in err, out
    log = slapd.log_since(mark)
    assert not re.search(r"op=\d+ (BIND|SRCH) ", log), log


def test_server_without_tls_is_tempfail_not_plaintext(tls):
    plain = tls["plain"]
    mark = plain.log_mark()
    rc, out = lookup(conf(tls, plain.uri, "st-plain", ldap_starttls="yes",
                          ldap_tls_ca_file=tls["good"]))
    assert rc == 75 and out["result"] == "tempfail", out
    assert "starttls" in out["error"].lower(), out
    log = plain.log_since(mark)
    assert not re.search(r"op=\d+ (BIND|SRCH) ", log), log


def test_plain_ldap_still_works_without_starttls(tls):
    rc, out = lookup(conf(tls, tls["plain"].uri, "plain"))
    assert rc == 0 and out["result"] == "found", out
