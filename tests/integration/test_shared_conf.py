"""One tenantmail.conf for every program of a host (lib/tn-conf-shared.h).

A line meant for one program must never be an error for another: the
top level of the file may hold the lookup (ldap_*, redis_*), outbox_*,
hookd_* and prov_* parameters, and tnctl, tn-hookd, tn-provisiond, the
Dovecot auth driver and the tenant_quota plugin each accept all of them
(their own parameters that no other program knows go in their sections:
[tn-provisiond] provd_*, [dovecot-auth] dovecot_*). Checked: tnctl
config, tn-hookd -n and tn-provisiond -n accept such a file; a private
Dovecot whose auth driver reads it authenticates alice; an unknown
top-level parameter is still refused, naming it.
"""

import os
import subprocess

import pytest

import tndovecot
from tnprobe import binary, tnctl

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
BUILD = os.environ.get("TN_BUILD_DIR") or TOP
MODULE = os.path.join(BUILD, "dovecot-plugins", ".libs", "libauthdb_tenant.so")


def shared_conf(stack, path, extra_top=""):
    with open(stack.conf) as f:
        text = f.read()
    # the top-level lines of the other programs, before any section
    top = "\n".join([
        "outbox_dir = %s" % os.path.join(os.path.dirname(path), "outbox"),
        "outbox_origin = node1",
        "hookd_endpoints_dir = %s" % os.path.join(os.path.dirname(path), "hooks.d"),
        "prov_timeout = 12s",
        "prov_purge_grace = 30d",
        extra_top,
        ""])
    first = text.find("\n[")
    text = top + text if first < 0 else text[:first] + "\n" + top + text[first:]
    text += "\n".join(["", "[tn-provisiond]", "provd_listen = 127.0.0.1:1",
                       "[dovecot-auth]", "dovecot_home = %s/home/%%d/%%n" %
                       os.path.dirname(path), ""])
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def test_every_program_accepts_the_others_lines(stack, tmp_path):
    conf = shared_conf(stack, str(tmp_path / "tenantmail.conf"))
    os.makedirs(str(tmp_path / "hooks.d"))        # tn-hookd -n reads its endpoints
    for sub in ("tmp", "new", "seq"):
        os.makedirs(str(tmp_path / "outbox" / sub))
    r = tnctl(conf, "config", "-n")
    assert r.returncode == 0, r.stderr
    assert "hookd_endpoints_dir" in r.stdout and "prov_timeout" in r.stdout
    for prog in ("billing-hook/tn-hookd", "provisioning/tn-provisiond"):
        r = subprocess.run([binary(prog), "-c", conf, "-n"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, (prog, r.stdout, r.stderr)


def test_an_unknown_top_level_parameter_is_still_refused(stack, tmp_path):
    conf = shared_conf(stack, str(tmp_path / "tenantmail.conf"),
                       extra_top="hookd_no_such_thing = 1")
    r = tnctl(conf, "config", "-n")
    assert r.returncode != 0 and "hookd_no_such_thing" in r.stderr, r
    r = subprocess.run([binary("billing-hook/tn-hookd"), "-c", conf, "-n"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "hookd_no_such_thing" in r.stdout + r.stderr, r


def test_the_dovecot_auth_driver_reads_the_shared_file(stack, tmp_path):
    if not os.path.isfile(MODULE):
        pytest.fail("%s not built" % MODULE, pytrace=False)
    conf = shared_conf(stack, str(tmp_path / "tenantmail.conf"))
    passdb = "passdb {\n  driver = tenant\n  args = %s\n}\n" % conf
    userdb = "userdb {\n  driver = tenant\n  args = %s\n}\n" % conf
    dc = tndovecot.Dovecot(str(tmp_path / "dovecot"), passdb=passdb, userdb=userdb,
                           auth_modules=[MODULE])
    try:
        r = dc.doveadm("auth", "test", "alice@acme.example", "secret")
        assert r.returncode == 0, r.stdout + r.stderr + dc.log_text()
        assert "unknown parameter" not in dc.log_text()
    finally:
        dc.stop()
