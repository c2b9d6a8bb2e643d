"""tn-provisiond from the wrong side: a tenant's token against another
tenant's objects, and racing writers -- over real HTTP, real slapd and
Redis (tnharness.Stack, tnprovd.Provd).

The token ACME is scoped to tenant acme of the example DIT; globex (its
domain globex.example, mailbox hank@, alias info@) is another tenant's.
Checked for every kind and every route: reads, writes, status actions,
purge and recount of globex's objects by ACME are 404 (nothing is said
about whether they exist) and leave them unchanged (same ETag); list
filters naming globex, a cursor taken from an admin's listing of globex,
wildcards and filter syntax in keys and query values show nothing of
globex; creating into globex's domain or for globex is refused. Then 50
concurrent creates of one address: exactly one 201, one event.
"""

import concurrent.futures
import json
import urllib.parse

import pytest

from tnprobe import tnctl
from tnprovd import ACME, Provd

GLOBEX = {
    "tenants": "globex",
    "domains": "globex.example",
    "mailboxes": "hank@globex.example",
    "aliases": "info@globex.example",
}


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    p = Provd(stack, tmp_path_factory.mktemp("provd-scope"))
    yield p
    p.stop()


def q(key):
    return urllib.parse.quote(key, safe="@")


def etag(provd, coll, key):
    r = provd.request("GET", "/v1/%s/%s" % (coll, q(key)))
    assert r.status == 200, r.text
    return r.getheader("ETag")


def not_found(r):
    assert r.status == 404, (r.status, r.text)
    assert r.json["error"]["code"] == "not_found", r.text
    assert "globex" not in json.dumps(r.json["error"].get("field") or ""), r.text


@pytest.mark.parametrize("coll", sorted(GLOBEX))
def test_another_tenants_object_does_not_exist_for_a_tenant_token(provd, coll):
    key = GLOBEX[coll]
    before = etag(provd, coll, key)
    path = "/v1/%s/%s" % (coll, q(key))
    not_found(provd.request("GET", path, token=ACME))
    not_found(provd.request("PATCH", path, {"description": "owned"}, token=ACME))
    not_found(provd.request("PATCH", path, {"description": "owned"}, token=ACME,
                            headers={"If-Match": before}))
    not_found(provd.request("DELETE", path, token=ACME))
    for action in ("suspend", "resume", "restore", "purge"):
        not_found(provd.request("POST", path + "/" + action, {}, token=ACME))
    if coll == "tenants":
        not_found(provd.request("POST", path + "/recount", {}, token=ACME))
    # an upper-case or encoded spelling of the same key is the same object
    not_found(provd.request("GET", "/v1/%s/%s" % (coll, q(key.upper())), token=ACME))
    not_found(provd.request("GET", "/v1/%s/%s" % (coll, urllib.parse.quote(key, safe="")),
                            token=ACME))
    assert etag(provd, coll, key) == before


def listed(provd, path, token=ACME):
    r = provd.request("GET", path, token=token)
    return r, (json.dumps(r.json) if r.json is not None else "")


@pytest.mark.parametrize("coll", sorted(GLOBEX))
def test_lists_filters_and_cursors_show_nothing_of_another_tenant(provd, coll):
    for query in ("tenant=globex", "domain=globex.example", "tenant=GLOBEX",
                  "tenant=*", "domain=*", "tenant=acme)(tnTenantId=globex",
                  "domain=acme.example)(|(mail=*", "tenant=globex&tenant=acme",
                  "status=active", "status=*", "limit=100000"):
        r, text = listed(provd, "/v1/%s?%s" % (coll, query))
        assert r.status in (200, 400, 404), (query, r.status, r.text)
        assert "globex" not in text, (query, text)
    # a cursor from an admin's listing of globex's objects
    r = provd.request("GET", "/v1/%s?limit=1&tenant=globex" % coll
                      if coll != "tenants" else "/v1/tenants?limit=1")
    assert r.status == 200, r.text
    cursor = r.json.get("next_cursor")
    if cursor:
        for query in ("cursor=%s" % cursor, "cursor=%s&tenant=globex" % cursor,
                      "cursor=%s&tenant=acme" % cursor):
            r, text = listed(provd, "/v1/%s?%s" % (coll, query))
            assert r.status in (200, 400, 404), (query, r.status, r.text)
            assert "globex" not in text, (query, text)


def test_keys_with_wildcards_and_filter_syntax_match_nothing(provd):
    for coll, key in (("mailboxes", "*@globex.example"), ("mailboxes", "*"),
                      ("mailboxes", "hank@globex.example)(mail=*"),
                      ("domains", "*"), ("domains", "globex.*"), ("tenants", "*"),
                      ("tenants", "glob*"), ("aliases", "*@*"),
                      ("mailboxes", "hank@globex.example,tnTenantId=acme")):
        for token in (ACME, None):
            r = provd.request("GET", "/v1/%s/%s" % (coll, urllib.parse.quote(key, safe="")),
                              **({"token": token} if token else {}))
            assert r.status in (400, 404), (coll, key, r.status, r.text)
            assert "hank" not in r.text.decode() and '"etag"' not in r.text.decode(), r.text


def test_creating_into_another_tenant_is_refused(stack, provd):
    r = provd.request("POST", "/v1/mailboxes", {"address": "mole@globex.example"},
                      token=ACME)
    assert r.status in (404, 422), r.text
    r = provd.request("POST", "/v1/mailboxes", {"address": "mole@globex.example",
                                                "tenant": "globex"}, token=ACME)
    assert r.status in (404, 422), r.text
    r = provd.request("POST", "/v1/aliases", {"address": "mole@globex.example",
                                              "targets": ["alice@acme.example"]},
                      token=ACME)
    assert r.status in (404, 422), r.text
    r = provd.request("POST", "/v1/domains", {"domain": "mole.example",
                                              "tenant": "globex"}, token=ACME)
    assert r.status == 404, r.text
    r = provd.request("POST", "/v1/tenants", {"id": "mole"}, token=ACME)
    assert r.status == 403, r.text
    # a domain that exists under globex cannot be taken by acme
    r = provd.request("POST", "/v1/domains", {"domain": "globex.example"}, token=ACME)
    assert r.status == 409, r.text
    err = r.json["error"]
    assert err["field"] == "domain" and "already exists" in err["message"], r.text
    assert "tnTenantId" not in r.text.decode() and "(|" not in err["message"], r.text
    out = tnctl(stack.conf, "lookup", "--json", "mole@globex.example")
    assert json.loads(out.stdout)["result"] == "notfound"
    # acme's own alias may point outside: that is data, not access
    r = provd.request("POST", "/v1/aliases", {"address": "fwd@acme.example",
                                              "targets": ["hank@globex.example"]},
                      token=ACME)
    assert r.status == 201, r.text


def test_50_concurrent_creates_of_one_address(provd):
    assert provd.request("POST", "/v1/tenants", {"id": "race50"}).status == 201
    assert provd.request("POST", "/v1/domains", {"domain": "race50.example",
                                                 "tenant": "race50"}).status == 201

    def create(_):
        r = provd.request("POST", "/v1/mailboxes", {"address": "hot@race50.example"})
        return r.status

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        got = list(ex.map(create, range(50)))
    assert sorted(got) == [201] + [409] * 49, got
    evs = [e for e in provd.events("race50") if e["type"] == "mailbox.created"]
    assert len(evs) == 1 and evs[0]["data"]["address"] == "hot@race50.example"
    r = provd.request("GET", "/v1/tenants/race50")
    assert r.json["mailbox_count"] == 1, r.text
