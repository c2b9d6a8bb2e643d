"""POST /v1/batch/<collection>: many creates in one request, each with
its own result, exactly as that many single creates in item order --
over real HTTP, slapd and Redis (tnharness.Stack, tnprovd.Provd).

Checked: mixed batches (valid, invalid, duplicates of existing objects
and within the batch, a plan limit reached mid-batch) give per-item
201/400/409/422 in order, one event per created item, lookups see them at
once, and the plan counters equal a recount; tenants and domains too; a
tenant token cannot create into another tenant; whole-request errors are
400 naming the field; an Idempotency-Key replays the whole answer without
a second write; slapd frozen: 503 with Retry-After within the deadline,
nothing written, and the same batch succeeds after the thaw.
"""

import json
import time

import pytest

import tnharness as th
from tnprobe import tnctl
from tnprovd import ACME, FAST, Provd


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd-batch"),
              overrides={"provd_max_body": "1m", "provd_batch_max": "50"})
    yield p
    p.stop()


def batch(provd, coll, items, **kw):
    return provd.request("POST", "/v1/batch/" + coll, {"items": items}, **kw)


def statuses(r):
    assert r.status == 200, r.text
    return [x["status"] for x in r.json["results"]]


def lookup(stack, name, *opts):
    return json.loads(tnctl(stack.conf, "lookup", "--json", *opts, name).stdout)


def test_a_mixed_batch_of_mailboxes(stack, provd):
    assert provd.request("POST", "/v1/tenants", {"id": "bat", "max_mailboxes": 5,
                                                 "storage_quota_bytes": 10000,
                                                 "mailbox_quota_bytes": 1000}).status == 201
    assert provd.request("POST", "/v1/domains", {"domain": "bat.example",
                                                 "tenant": "bat"}).status == 201
    assert provd.request("POST", "/v1/mailboxes", {"address": "old@bat.example"}).status == 201
    items = [
        {"address": "a@bat.example"},                          # 201
        {"address": "not an address"},                         # 400
        {"address": "old@bat.example"},                        # 409 exists
        {"address": "b@bat.example", "quota_bytes": 2000},     # 201
        {"address": "a@bat.example"},                          # 409 earlier in batch
        {"address": "c@bat.example", "quota_bytes": 0},        # 422 unlimited, no overcommit
        {"address": "d@bat.example", "colour": "blue"},        # 400 unknown field
        {"address": "e@bat.example"},                          # 201
        {"address": "f@bat.example"},                          # 201 (5th place)
        {"address": "g@bat.example"},                          # 422 max 5
        {"address": "x@nosuchdomain.example"},                 # 422 not hosted
    ]
    before = len(provd.events("bat"))
    r = batch(provd, "mailboxes", items)
    assert statuses(r) == [201, 400, 409, 201, 409, 422, 400, 201, 201, 422, 422], r.text
    res = r.json["results"]
    assert res[0]["object"]["address"] == "a@bat.example"
    assert res[0]["etag"].startswith('"') and res[3]["object"]["quota_bytes"] == 2000
    assert res[1]["error"]["field"] == "address" and res[6]["error"]["field"] == "colour"
    assert res[2]["error"]["code"] == "conflict"
    assert "allows 5 mailboxes" in res[9]["error"]["message"], res[9]
    assert "unlimited" in res[5]["error"]["message"], res[5]
    evs = [e for e in provd.events("bat")[before:] if e["type"] == "mailbox.created"]
    assert sorted(e["data"]["address"] for e in evs) == \
        ["a@bat.example", "b@bat.example", "e@bat.example", "f@bat.example"]
    assert len(provd.events("bat")) == before + 4
    seqs = [e["sequence"] for e in provd.events("bat")]
    assert seqs == list(range(1, len(seqs) + 1))
    for a in ("a", "b", "e", "f"):
        assert lookup(stack, "%s@bat.example" % a)["result"] == "found"
    assert lookup(stack, "g@bat.example")["result"] == "notfound"
    t = provd.request("GET", "/v1/tenants/bat").json
    counted = provd.request("POST", "/v1/tenants/bat/recount", {}).json
    for c in ("mailbox_count", "quota_explicit_bytes", "quota_default_count",
              "quota_unlimited_count"):
        assert t[c] == counted[c], (c, t, counted)
    assert t["mailbox_count"] == 5


def test_tenants_domains_aliases_in_batches(stack, provd):
    r = batch(provd, "tenants", [{"id": "bt1"}, {"id": "bt2", "max_mailboxes": 3},
                                 {"id": "bt1"}, {"id": "BAD ID"}])
    assert statuses(r) == [201, 201, 409, 400], r.text
    assert r.json["results"][1]["object"]["mailbox_count"] == 0
    r = batch(provd, "domains", [{"domain": "bt1.example", "tenant": "bt1"},
                                 {"domain": "bt2.example", "tenant": "bt2"},
                                 {"domain": "bt3.example", "tenant": "nosuch"},
                                 {"domain": "acme.example", "tenant": "bt1"}])
    assert statuses(r) == [201, 201, 404, 409], r.text
    r = batch(provd, "mailboxes", [{"address": "u%d@bt%d.example" % (i, 1 + i % 2)}
                                   for i in range(8)])
    assert statuses(r) == [201] * 7 + [422], r.text   # bt2 has 3 places: u1 u3 u5
    r = batch(provd, "aliases", [{"address": "all@bt1.example",
                                  "targets": ["u0@bt1.example", "u2@bt1.example"]},
                                 {"address": "loop@bt1.example", "targets": []}])
    assert statuses(r) == [201, 400], r.text
    assert lookup(stack, "all@bt1.example")["result"] == "found"
    assert lookup(stack, "bt2", "--tenant")["result"] == "found"
    # each created object has its own event, aliases included
    evs = provd.events("bt1")
    assert [e["type"] for e in evs] == ["tenant.created", "domain.created"] + \
        ["mailbox.created"] * 4 + ["alias.created"], evs
    assert evs[-1]["data"]["address"] == "all@bt1.example" and \
        evs[-1]["data"]["targets"] == ["u0@bt1.example", "u2@bt1.example"]


def test_a_tenant_token_creates_only_in_its_tenant(stack, provd):
    r = batch(provd, "mailboxes", [{"address": "own@acme.example"},
                                   {"address": "mole@globex.example"},
                                   {"address": "mole2@globex.example", "tenant": "globex"}],
              token=ACME)
    assert statuses(r) == [201, 422, 422], r.text
    assert lookup(stack, "mole@globex.example")["result"] == "notfound"
    r = batch(provd, "tenants", [{"id": "notallowed"}], token=ACME)
    assert statuses(r) == [403], r.text
    r = batch(provd, "domains", [{"domain": "m.example", "tenant": "globex"}], token=ACME)
    assert statuses(r) == [404], r.text


@pytest.mark.parametrize("body,field", [
    ({"items": []}, "items"),
    ({"items": {"address": "a@acme.example"}}, "items"),
    ({}, "items"),
    ({"items": [{"address": "z@acme.example"}], "dry_run": True}, "dry_run"),
    ({"items": [{"address": "z%d@acme.example" % i} for i in range(51)]}, "items"),
])
def test_bad_batches_are_400_naming_the_field(provd, body, field):
    r = provd.request("POST", "/v1/batch/mailboxes", body)
    assert r.status == 400, r.text
    assert r.json["error"]["field"] == field, r.text
    assert provd.request("GET", "/v1/mailboxes/z@acme.example").status == 404


def test_batch_routes(provd):
    assert provd.request("GET", "/v1/batch/mailboxes").status == 405
    assert provd.request("POST", "/v1/batch/things", {"items": [{}]}).status == 404
    assert provd.request("POST", "/v1/batch", {"items": [{}]}).status == 404
    assert provd.request("POST", "/v1/batch/mailboxes/x", {"items": [{}]}).status == 404
    r = provd.request("POST", "/v1/batch/mailboxes", raw=b"[1,2")
    assert r.status == 400, r.text


def test_an_idempotent_batch_writes_once(provd):
    items = [{"address": "idem%d@acme.example" % i, "quota_bytes": 1000} for i in range(5)]
    before = len(provd.events("acme"))
    h = {"Idempotency-Key": "batch-once-1"}
    r1 = batch(provd, "mailboxes", items, headers=h)
    r2 = batch(provd, "mailboxes", items, headers=h)
    assert statuses(r1) == [201] * 5
    assert r2.status == 200 and r2.getheader("Idempotent-Replayed") == "true"
    assert r2.json == r1.json
    assert len(provd.events("acme")) == before + 5
    r3 = batch(provd, "mailboxes", items)                  # no key: they exist
    assert statuses(r3) == [409] * 5


def test_directory_frozen_is_503_and_nothing_written(workdir):
    with th.Stack(workdir / "stack") as stack:
        p = Provd(stack, workdir, overrides=FAST)
        try:
            items = [{"address": "fz%d@acme.example" % i, "quota_bytes": 1000}
                     for i in range(10)]
            stack.slapd.freeze()
            try:
                t0 = time.monotonic()
                r = batch(p, "mailboxes", items)
                took = time.monotonic() - t0
            finally:
                stack.slapd.thaw()
            assert r.status == 503, r.text
            assert r.getheader("Retry-After"), r.text
            assert took < 6, took
            for i in range(10):
                found = stack.slapd.search("(mail=fz%d@acme.example)" % i,
                                           base=th.TENANTS, attrs=("1.1",))
                assert not found
            deadline = time.monotonic() + 15
            while True:
                r = batch(p, "mailboxes", items)
                if r.status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert statuses(r) == [201] * 10, r.text
        finally:
            p.stop()
