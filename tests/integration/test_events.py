"""tnctl events emit: an event written to a real outbox directory exactly
as a component writes it (lib/tn-outbox, docs/outbox.md)."""

import json
import os
import re
import socket

import pytest

from tnprobe import tnctl

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def outbox(tmp_path):
    d = tmp_path / "outbox"
    for sub in ("tmp", "new", "seq"):
        (d / sub).mkdir(parents=True)
        os.chmod(d / sub, 0o2770)
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    return str(d), str(conf)


def emit(conf, d, *args):
    return tnctl(conf, "events", "emit", *args, overrides={"outbox_dir": d})


def test_emit_writes_a_durable_event(outbox):
    d, conf = outbox
    data = {"address": "alice@acme.example", "quota_bytes": 2147483648}
    r = emit(conf, d, "mailbox.created", "--tenant", "acme", "--data", json.dumps(data), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert UUID7.match(out["id"]) and out["sequence"] == 1
    files = os.listdir(os.path.join(d, "new"))
    assert files == [out["id"] + ".json"]
    text = open(os.path.join(d, "new", files[0])).read()
    assert text.endswith("\n") and text.count("\n") == 1
    ev = json.loads(text)
    assert list(ev) == ["id", "type", "occurred_at", "tenant", "sequence", "origin", "data"]
    assert ev["origin"] == socket.gethostname()
    assert (ev["id"], ev["type"], ev["tenant"], ev["sequence"], ev["data"]) == \
        (out["id"], "mailbox.created", "acme", 1, data)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ev["occurred_at"])
    assert os.listdir(os.path.join(d, "tmp")) == []
    r = emit(conf, d, "mailbox.updated", "--tenant", "acme")
    assert r.returncode == 0 and r.stdout.split()[1:] == ["mailbox.updated", "sequence", "2"]
    r = emit(conf, d, "tenant.created", "--tenant", "globex", "--json")
    assert json.loads(r.stdout)["sequence"] == 1


@pytest.mark.parametrize("args,code", [
    (["Mailbox.Created", "--tenant", "acme"], 65),
    (["mailbox", "--tenant", "acme"], 65),
    (["mailbox.created", "--tenant", "ACME"], 65),
    (["mailbox.created", "--tenant", "a/b"], 65),
    (["mailbox.created", "--tenant", "acme", "--data", "[1,2]"], 65),
    (["mailbox.created", "--tenant", "acme", "--data", "{bad"], 65),
    (["mailbox.created"], 64),
])
def test_emit_bad_input_writes_nothing(outbox, args, code):
    d, conf = outbox
    r = emit(conf, d, *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert os.listdir(os.path.join(d, "new")) == []
    assert os.listdir(os.path.join(d, "seq")) == []


def test_emit_into_missing_outbox_is_tempfail(outbox):
    d, conf = outbox
    os.rmdir(os.path.join(d, "new"))
    r = emit(conf, d, "mailbox.created", "--tenant", "acme")
    assert r.returncode == 75, r.stderr
    assert "new" in r.stderr
    os.mkdir(os.path.join(d, "new"))
    r = emit(conf, d, "mailbox.created", "--tenant", "acme", "--json")
    assert json.loads(r.stdout)["sequence"] == 1        # no gap left behind
