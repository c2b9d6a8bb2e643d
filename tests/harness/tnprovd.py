"""tn-provisiond for tests: a running daemon over a tnharness.Stack.

Provd writes a [tn-provisiond] section onto the stack's configuration
(the provisioning account, an outbox, a free port, a tokens file with an
admin token and one scoped to tenant "acme"), starts the daemon in the
foreground and talks HTTP to it with http.client.

Optional: tls=(cert_file, key_file, ca_file) makes the daemon listen with
HTTPS (provd_tls_*) and request() talk HTTPS trusting ca_file; the tokens
file also holds a billing token (BILLING).
"""

import glob
import hashlib
import http.client
import json
import os
import ssl
import subprocess

import tnharness as th
from tnprobe import binary

ADMIN = "admin-token-0123456789"
ACME = "acme-token-0123456789"
BILLING = "billing-token-0123456789"
FAST = {"prov_timeout": "2s", "ldap_timeout": "1s", "ldap_network_timeout": "1s",
        "ldap_retry_down": "1s"}


class Provd:
    """A running tn-provisiond for a stack."""

    def __init__(self, stack, workdir, overrides=None, tls=None):
        self.stack = stack
        self.tls = tls
        self.outbox = os.path.join(str(workdir), "outbox")
        for sub in ("tmp", "new", "seq"):
            os.makedirs(os.path.join(self.outbox, sub), exist_ok=True)
        tokens = self.tokens = os.path.join(str(workdir), "tokens")
        with open(tokens, "w") as f:
            f.write("# test tokens\n\n")
            f.write("%s admin\n" % hashlib.sha256(ADMIN.encode()).hexdigest())
            f.write("%s tenant:acme\n" % hashlib.sha256(ACME.encode()).hexdigest())
            f.write("%s billing\n" % hashlib.sha256(BILLING.encode()).hexdigest())
        self.port = th.free_port()
        self.conf = os.path.join(str(workdir), "provd.conf")
        with open(stack.conf) as f:
            text = f.read()
        text += "\n".join([
            "", "[tn-provisiond]",
            "prov_ldap_bind_dn = %s" % th.PROV_DN,
            "prov_ldap_bind_password_file = %s" % stack.prov_password_file,
            "outbox_dir = %s" % self.outbox,
            "outbox_min_free = 0",
            "provd_listen = 127.0.0.1:%d" % self.port,
            "provd_tokens_file = %s" % tokens,
            "provd_max_body = 4k",
            "provd_user =",
        ] + ([] if tls is None else ["provd_tls_cert_file = %s" % tls[0],
                                     "provd_tls_key_file = %s" % tls[1]])) + "\n"
        with open(self.conf, "w") as f:
            f.write(text)
        args = [binary("provisioning/tn-provisiond"), "-c", self.conf, "-e"]
        for k, v in (overrides or {}).items():
            args += ["-o", "%s=%s" % (k, v)]
        self.log = open(os.path.join(str(workdir), "provd.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            th.wait_port("127.0.0.1", self.port)
        except TimeoutError:
            self.proc.kill()
            self.log.seek(0)
            raise AssertionError(self.log.read())

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(10) == 0
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        assert "Sanitizer" not in text and "runtime error" not in text, text
        return text

    def request(self, method, path, body=None, token=ADMIN, headers=None, raw=None,
                timeout=30):
        if self.tls is not None:
            ctx = ssl.create_default_context(cafile=self.tls[2])
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        resp.json = json.loads(text) if text and \
            resp.getheader("Content-Type", "").startswith("application/json") else None
        resp.text = text
        return resp

    def events(self, tenant):
        out = []
        for path in glob.glob(os.path.join(self.outbox, "new", "*.json")):
            with open(path) as f:       # a segment: one event per line
                for ev in map(json.loads, f):
                    if ev["tenant"] == tenant:
                        out.append(ev)
        return sorted(out, key=lambda e: e["sequence"])
