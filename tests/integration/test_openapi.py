"""test_openapi -- docs/openapi.yaml holds against the real tn-provisiond.

Run from the top of the tree (as root, like every integration test):
    TN_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/integration/test_openapi.py

Needs python3-yaml and python3-jsonschema (scripts/deps). Debian 12 has
no OpenAPI validator package, so the document is checked against the
OpenAPI Initiative's JSON Schema of 3.0 documents, kept beside this file
(openapi-3.0-schema.yaml), plus the rules that schema cannot express.

What is checked:
  * The document: valid OpenAPI 3.0 (that schema, with regex patterns
    compiled), every $ref resolves, path parameters declared, unique
    operationIds, nullable only beside a type (3.0.3), no null left by a
    stray comma in a flow mapping, every POST takes Idempotency-Key, every
    write If-Match, request bodies refuse unknown members, the headers
    each status promises (ETag, Location, Retry-After, Allow,
    WWW-Authenticate).
  * Document and source: the members of each resource, of its create and
    of its patch body, and which may be null, are those of the field
    tables in lib/tn-prov.c; the routes tn-provisiond.c serves (KNOWN_ROUTES
    below) each have an operation.
  * Document and server: one stack (slapd, Redis) and one daemon for the
    module. Every operation of the document is called through Api.call(),
    on its success paths and many error paths (bad JSON, unknown member,
    wrong type, no token, a bad token, another tenant's token, a stale
    If-Match, a duplicate, plan limits, an oversized body, slapd frozen).
    For each answer: the status is one the operation lists; the body
    validates against the schema of that status and content type (the
    OpenAPI schema converted to JSON Schema: nullable, readOnly,
    writeOnly); the headers the document marks required are there (and
    ETag equals the body's etag). Request bodies the server accepts
    validate against the document's request schema, and the malformed
    ones the tests send are refused by both. A method a route does not
    have is 405 with Allow naming exactly the document's methods.
  * Coverage, last: every operation of the document was answered with a
    success at least once -- except the operations and features in
    PENDING while the server does not have them yet. Whether it has them
    is probed, never assumed: POST .../restore on a deleted object that
    answers anything but 404 "no such route" is implemented, and is then
    exercised like the rest (so is purge; Idempotency-Key is implemented
    when a repeat carries Idempotent-Replayed). The final test prints what
    is still pending. POST /v1/batch/<kind> likewise: a batch answered
    with anything but 404 "no such route" is served, and exercised (items
    created, duplicates and bad items refused alone, the request refused
    whole, Idempotency-Key replays).

The tests of this module build on each other (the coverage test, last,
counts what the others called): run the module as a whole.
"""

import concurrent.futures
import copy
import datetime
import json
import os
import re
import time
import urllib.parse
import warnings

import jsonschema
import pytest
import yaml

import tnharness as th
from tnprovd import ACME, ADMIN, BILLING, FAST, Provd

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
DOC_PATH = os.path.join(TOP, "docs", "openapi.yaml")
OAS30_SCHEMA = os.path.join(HERE, "openapi-3.0-schema.yaml")
PROV_SOURCE = os.path.join(TOP, "lib", "tn-prov.c")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PURGE_GRACE = 3     # seconds: prov_purge_grace of the module's daemon
COLLECTIONS = ("tenants", "domains", "mailboxes", "aliases")
KEY_PARAM = {"tenants": "id", "domains": "domain", "mailboxes": "address",
             "aliases": "address"}

# The routes provisioning/tn-provisiond.c serves (provd_route, provd_item,
# provd_collection, provd_action, /metrics): each must have an operation.
KNOWN_ROUTES = {("GET", "/metrics")}
for _c in COLLECTIONS:
    _item = "/v1/%s/{%s}" % (_c, KEY_PARAM[_c])
    KNOWN_ROUTES |= {("GET", "/v1/" + _c), ("POST", "/v1/" + _c), ("GET", _item),
                     ("PATCH", _item), ("DELETE", _item), ("POST", _item + "/suspend"),
                     ("POST", _item + "/resume")}
KNOWN_ROUTES.add(("POST", "/v1/tenants/{id}/recount"))

# Documented, being added to the server: exercised as soon as a probe
# finds them served, reported as pending until then.
PENDING = set()
for _c in COLLECTIONS:
    PENDING |= {("POST", "/v1/%s/{%s}/restore" % (_c, KEY_PARAM[_c])),
                ("POST", "/v1/%s/{%s}/purge" % (_c, KEY_PARAM[_c])),
                ("POST", "/v1/batch/" + _c)}
PENDING_FEATURES = {"Idempotency-Key"}

# What the module saw: (METHOD, template) -> statuses answered; pending
# operations and features found not served yet -> the evidence.
SEEN = {}
NOT_YET = {}


# --- the document ----------------------------------------------------------------------

def load_doc():
    with open(DOC_PATH) as f:
        return yaml.safe_load(f)


DOC = load_doc()


def resolve(node, doc=DOC):
    """node with its $ref followed (repeatedly)."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), "only local references: %s" % ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        assert seen < 20, "reference loop at %s" % ref
    return node


def operations(doc=DOC):
    """{(METHOD, template): operation}, each with its path's parameters."""
    ops = {}
    for template, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                op = dict(item[method])
                op["_parameters"] = [resolve(p) for p in item.get("parameters", [])] + \
                    [resolve(p) for p in op.get("parameters", [])]
                ops[(method.upper(), template)] = op
    return ops


OPS = operations()


def path_methods(template):
    return {m.upper() for m in HTTP_METHODS if m in DOC["paths"][template]}


def _schema_flag(node, flag):
    node = resolve(node)
    if node.get(flag):
        return True
    return any(_schema_flag(s, flag) for s in node.get("allOf", []))


def to_jsonschema(node, mode):
    """An OpenAPI 3.0 schema as draft-4 JSON Schema, for a request body
    (mode "request": readOnly members dropped) or a response ("response":
    writeOnly members dropped, so with additionalProperties false they are
    refused). nullable adds null where a type is given (3.0.3)."""
    src = resolve(node)
    out = {}
    dropped = set()
    for k, v in src.items():
        if k in ("nullable", "readOnly", "writeOnly", "example", "description",
                 "discriminator", "xml", "externalDocs", "deprecated"):
            continue
        if k == "properties":
            props = {}
            for name, sub in v.items():
                if (mode == "request" and _schema_flag(sub, "readOnly")) or \
                        (mode == "response" and _schema_flag(sub, "writeOnly")):
                    dropped.add(name)
                    continue
                props[name] = to_jsonschema(sub, mode)
            out[k] = props
        elif k in ("items", "not") or (k == "additionalProperties" and isinstance(v, dict)):
            out[k] = to_jsonschema(v, mode)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_jsonschema(s, mode) for s in v]
        else:
            out[k] = copy.deepcopy(v)
    if "required" in out:
        out["required"] = [r for r in out["required"] if r not in dropped]
        if not out["required"]:
            del out["required"]
    if src.get("nullable") and "type" in src:
        out["type"] = [src["type"], "null"]
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
    return out


FORMATS = jsonschema.FormatChecker()
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value):
    if not isinstance(value, str):
        return True
    if not RFC3339.match(value):
        raise ValueError("not RFC 3339: %r" % value)
    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def schema_errors(schema, instance, mode):
    js = to_jsonschema(schema, mode)
    v = jsonschema.Draft4Validator(js, format_checker=FORMATS)
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)", e.message)
            for e in v.iter_errors(instance)]


def request_schema(op):
    body = op.get("requestBody")
    if body is None:
        return None
    return resolve(body)["content"]["application/json"]["schema"]


# --- the server, through the document ---------------------------------------------------

class Api:
    """Calls the daemon by operation and checks each answer against it."""

    def __init__(self, provd):
        self.provd = provd

    def call(self, method, template, params=None, query=None, body=None, raw=None,
             token=ADMIN, headers=None, expect=None, doc_valid=None):
        key = (method, template)
        assert key in OPS, "the document has no operation %s %s" % key
        op = OPS[key]
        path = template
        for name, value in (params or {}).items():
            path = path.replace("{%s}" % name, urllib.parse.quote(value, safe="@"))
        assert "{" not in path, path
        if query:
            path += "?" + urllib.parse.urlencode(query)
        r = self.provd.request(method, path, body=body, raw=raw, token=token,
                               headers=headers)
        where = "%s %s -> %d %s" % (method, path, r.status, r.text[:300])
        if r.status == 404 and r.json and r.json["error"]["message"] == "no such route":
            assert key in PENDING, "the server has no route for %s %s: %s" % (
                method, template, where)
            NOT_YET[key] = where
            return r
        check_response(op, r, where)
        SEEN.setdefault(key, set()).add(r.status)
        if body is not None:
            schema = request_schema(op)
            assert schema is not None, "%s takes no body in the document" % (key,)
            errors = schema_errors(schema, body, "request")
            if 200 <= r.status < 300:
                assert not errors, "the server accepted what the document refuses: " \
                    "%s; %s" % (errors, where)
            if doc_valid is not None:
                assert (not errors) == doc_valid, (
                    "the document %s the body %r: %s" % (
                        "accepts" if not errors else "refuses", body, errors))
        if expect is not None:
            assert r.status == expect, where
        return r


def check_response(op, r, where):
    code = str(r.status)
    assert code in op["responses"], "status not in the document (%s): %s" % (
        sorted(op["responses"]), where)
    spec = resolve(op["responses"][code])
    ctype = (r.getheader("Content-Type") or "").split(";")[0].strip()
    content = spec.get("content")
    if not content:
        assert r.text == b"", "the document gives no body: %s" % where
    else:
        assert ctype in content, "Content-Type %r, the document has %s: %s" % (
            ctype, sorted(content), where)
        schema = content[ctype]["schema"]
        if ctype == "application/json":
            instance = json.loads(r.text)
        else:
            instance = r.text.decode("utf-8")
        errors = schema_errors(schema, instance, "response")
        assert not errors, "the body does not match the document: %s; %s" % (errors, where)
    for name, h in spec.get("headers", {}).items():
        h = resolve(h)
        value = r.getheader(name)
        if h.get("required"):
            assert value is not None, "%s missing: %s" % (name, where)
        if value is None:
            continue
        hs = to_jsonschema(h["schema"], "response")
        if hs.get("type") == "integer":
            assert re.fullmatch(r"[0-9]+", value), "%s: %r: %s" % (name, value, where)
            value = int(value)
        errors = [e.message for e in jsonschema.Draft4Validator(hs).iter_errors(value)]
        assert not errors, "%s: %s: %s" % (name, errors, where)
    if r.getheader("ETag") is not None and r.json is not None and "etag" in r.json:
        assert r.getheader("ETag") == '"%s"' % r.json["etag"], where
    if r.json is not None and "error" in r.json:
        assert r.json["error"]["status"] == r.status, where


@pytest.fixture(scope="module")
def provd(stack, tmp_path_factory):
    overrides = dict(FAST)
    overrides["prov_purge_grace"] = "%ds" % PURGE_GRACE
    p = Provd(stack, tmp_path_factory.mktemp("provd"), overrides=overrides)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(provd):
    a = Api(provd)
    a.call("POST", "/v1/tenants", body={"id": "oa", "name": "OpenAPI Co",
                                         "max_mailboxes": 50}, expect=201)
    a.call("POST", "/v1/domains", body={"domain": "oa.example", "tenant": "oa"},
           expect=201)
    for local in ("ann", "bob"):
        a.call("POST", "/v1/mailboxes", body={"address": local + "@oa.example"},
               expect=201)
    return a


# --- (a) the document --------------------------------------------------------------------

def test_document_is_openapi_3_0():
    with open(OAS30_SCHEMA) as f:
        meta = yaml.safe_load(f)
    v = jsonschema.Draft4Validator(meta, format_checker=jsonschema.FormatChecker())
    errors = []

    def walk(e):
        errors.append("%s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message[:200]))
        for c in e.context:
            walk(c)
    for e in v.iter_errors(DOC):
        walk(e)
    assert not errors, "\n".join(errors[:40])
    assert DOC["openapi"] == "3.0.3"


def _walk(node, path=""):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, "%s/%s" % (path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, "%s/%d" % (path, i))


def test_document_rules_the_schema_cannot_express():
    problems = []
    for path, node in _walk(DOC):
        if node is None:
            problems.append("%s: null (a stray comma in a flow mapping?)" % path)
        if isinstance(node, dict) and "$ref" in node:
            try:
                resolve(node)
            except (KeyError, TypeError):
                problems.append("%s: $ref %s does not resolve" % (path, node["$ref"]))
        if isinstance(node, dict) and node.get("nullable") and "type" not in node:
            problems.append("%s: nullable without type has no effect in 3.0.3" % path)
    ids = [op["operationId"] for op in OPS.values()]
    problems += ["operationId %s twice" % i for i in set(ids) if ids.count(i) > 1]
    for (method, template), op in OPS.items():
        where = "%s %s" % (method, template)
        params = op["_parameters"]
        in_path = set(re.findall(r"\{(\w+)\}", template))
        declared = {p["name"] for p in params if p["in"] == "path"}
        if in_path != declared:
            problems.append("%s: path parameters %s, declared %s" % (where, in_path, declared))
        problems += ["%s: path parameter %s not required" % (where, p["name"])
                     for p in params if p["in"] == "path" and not p.get("required")]
        headers = {p["name"] for p in params if p["in"] == "header"}
        responses = op["responses"]
        if template == "/metrics":
            continue
        if method == "POST" and "Idempotency-Key" not in headers:
            problems.append("%s: no Idempotency-Key" % where)
        is_action = method == "POST" and template.count("/") == 4
        if (method in ("PATCH", "DELETE") or is_action) and "If-Match" not in headers:
            problems.append("%s: no If-Match" % where)
        for status in ("401", "404", "429", "500", "503"):
            if status not in responses and (status != "404" or "{" in template):
                problems.append("%s: no %s" % (where, status))
        wanted = {"201": ("ETag", "Location"), "503": ("Retry-After",),
                  "429": ("Retry-After",), "401": ("WWW-Authenticate",)}
        if method == "GET" and "{" in template:
            wanted["200"] = ("ETag",)
        for status, names in wanted.items():
            if status not in responses:
                continue
            have = resolve(responses[status]).get("headers", {})
            problems += ["%s %s: header %s not documented as required" % (where, status, n)
                         for n in names if not resolve(have.get(n, {})).get("required")]
        body = request_schema(op)
        if body is not None and resolve(body).get("additionalProperties") is not False:
            problems.append("%s: the request body accepts unknown members" % where)
    for name, schema in DOC["components"]["schemas"].items():
        for mode in ("request", "response"):
            try:
                jsonschema.Draft4Validator.check_schema(to_jsonschema(schema, mode))
            except jsonschema.SchemaError as e:
                problems.append("schema %s (%s): %s" % (name, mode, e.message))
    assert not problems, "\n".join(problems)


def test_document_has_every_route_the_server_serves():
    missing = sorted(KNOWN_ROUTES - set(OPS))
    assert not missing, "routes of tn-provisiond.c without an operation: %s" % missing
    assert PENDING <= set(OPS), sorted(PENDING - set(OPS))


# --- the document and lib/tn-prov.c's field tables ------------------------------------------

FLAG_BITS = {"C": {"create"}, "M": {"modify"}, "E": set(), "O": {"out"}, "Z": {"zero"},
             "S": {"status"}, "TN_PF_REQUIRED": {"required"},
             "KEY": {"key", "create", "out", "required"}}


def source_fields():
    """{kind: {field: (type, flags)}} from the tables of lib/tn-prov.c."""
    with open(PROV_SOURCE) as f:
        src = f.read()
    macro = re.search(r"#define TN_PROV_STATUS_FIELDS \\\n(.*?)\n\n", src, re.S)
    assert macro, "TN_PROV_STATUS_FIELDS not found in %s" % PROV_SOURCE
    src = src.replace("TN_PROV_STATUS_FIELDS,", macro.group(1).replace("\\\n", "\n") + ",")
    kinds = {}
    for kind, body in re.findall(
            r"static const struct tn_prov_field tn_prov_(\w+)_fields\[\] = \{(.*?)\n\};",
            src, re.S):
        fields = {}
        for name, ftype, flags in re.findall(
                r'\{\s*"(\w+)",\s*(?:"\w+"|NULL),\s*(TN_PF_\w+),\s*([^,]+),', body):
            bits = set()
            for tok in re.split(r"\s*\|\s*", flags.strip()):
                assert tok in FLAG_BITS, "unknown flag %s of %s.%s" % (tok, kind, name)
                bits |= FLAG_BITS[tok]
            fields[name] = (ftype, bits)
        kinds[kind] = fields
    assert set(kinds) == {"tenant", "domain", "mailbox", "alias"}, sorted(kinds)
    assert all(kinds.values()), "a field table read empty: %s" % kinds
    return kinds


JSON_TYPE = {"TN_PF_COUNT": "integer", "TN_PF_BOOL": "boolean", "TN_PF_TARGETS": "array"}


def _props(name):
    return {k: resolve(v) for k, v in DOC["components"]["schemas"][name]["properties"].items()}


def _type_of(schema):
    schema = resolve(schema)
    if "type" in schema:
        return schema["type"]
    for s in schema.get("allOf", []):
        if _type_of(s):
            return _type_of(s)
    return None


def test_document_members_are_the_field_tables():
    problems = []
    for kind, fields in source_fields().items():
        res = kind.capitalize()
        out = {n for n, (_, b) in fields.items() if "out" in b}
        create = {n for n, (_, b) in fields.items() if "create" in b}
        modify = {n for n, (_, b) in fields.items() if "modify" in b}
        required = {n for n, (_, b) in fields.items() if "required" in b}
        pairs = ((res, out | {"etag", "purge_after"}), (res + "Create", create),
                 (res + "Patch", modify))
        for schema, want in pairs:
            have = set(_props(schema))
            if have != want:
                problems.append("%s: document %s, source %s" % (
                    schema, sorted(have - want), sorted(want - have)))
        doc_required = set(DOC["components"]["schemas"][res + "Create"].get("required", []))
        if doc_required != required:
            problems.append("%sCreate required: %s, source %s" % (res, doc_required, required))
        for name, (ftype, bits) in fields.items():
            want_type = JSON_TYPE.get(ftype, "string")
            for schema in (res, res + "Create", res + "Patch"):
                prop = _props(schema).get(name)
                if prop is None:
                    continue
                if _type_of(prop) != want_type:
                    problems.append("%s.%s: type %s, source %s" % (
                        schema, name, _type_of(prop), want_type))
                # null is refused for keys, required members, status, tenant
                may_null = not (bits & {"key", "required"}) and \
                    ftype not in ("TN_PF_STATUS", "TN_PF_TENANT")
                if schema != res and bool(prop.get("nullable")) != may_null:
                    problems.append("%s.%s: nullable %s, the server %s null" % (
                        schema, name, prop.get("nullable"),
                        "takes" if may_null else "refuses"))
            # as emitted: a value, or null when absent unless it reads as 0
            prop = _props(res).get(name)
            if prop is not None and ftype not in ("TN_PF_STATUS", "TN_PF_TENANT") and \
                    not bits & {"key", "required"}:
                if bool(prop.get("nullable")) == ("zero" in bits):
                    problems.append("%s.%s: nullable %s in the output" % (
                        res, name, prop.get("nullable")))
    assert not problems, "\n".join(problems)


# --- (b) the server against the document ------------------------------------------------------

def item(kind):
    return "/v1/%s/{%s}" % (kind, KEY_PARAM[kind])


def key_of(kind, obj):
    return obj[KEY_PARAM[kind]]


# Per kind: a create body for a name, a patch, a patch that removes
# (nulls), members of the wrong type, a create without its key.
KINDS = {
    "tenants": dict(
        create=lambda n: {"id": n, "name": "T " + n, "plan": "basic", "max_mailboxes": 10,
                          "overcommit": False, "pool": "pool-a"},
        patch={"name": "Renamed", "description": "patched", "storage_quota_bytes": 0},
        nulls={"name": None, "plan": None, "max_mailboxes": None, "pool": None,
               "overcommit": None},
        wrong={"max_mailboxes": "many"}, keyless={"name": "no id"},
        acme_create=403),
    "domains": dict(
        create=lambda n: {"domain": n + ".example", "tenant": "oa",
                          "description": "d " + n},
        patch={"description": "patched"}, nulls={"description": None},
        wrong={"description": 5}, keyless={"tenant": "oa"}, acme_create=404),
    "mailboxes": dict(
        create=lambda n: {"address": n + "@oa.example", "name": "M " + n,
                          "quota_bytes": 1000000, "password": "s3cret pw",
                          "host": "store1.example:24"},
        patch={"name": "Renamed", "quota_bytes": 2000000, "send_rate_per_hour": 10,
               "password_hash": "{SHA512-CRYPT}$6$rounds=5000$abcdefghijklmnop$"
                                + "a" * 86},
        nulls={"name": None, "quota_bytes": None, "host": None, "pool": None,
               "password": None},
        wrong={"quota_bytes": -1}, keyless={"name": "no address"}, acme_create=422),
    "aliases": dict(
        create=lambda n: {"address": n + "@oa.example", "targets": ["ann@oa.example"]},
        patch={"targets": ["ann@oa.example", "bob@oa.example"], "description": "p"},
        nulls={"description": None},
        wrong={"targets": "ann@oa.example"}, keyless={"targets": ["ann@oa.example"]},
        acme_create=422),
}


def etag_of(r):
    return r.getheader("ETag")


def suspend_of(kind):
    return item(kind) + "/suspend"


def probe_pending(api, kind, action, key, **kw):
    """Call a PENDING action; None when the server does not have it yet."""
    r = api.call("POST", item(kind) + "/" + action, params={KEY_PARAM[kind]: key}, **kw)
    if ("POST", item(kind) + "/" + action) in NOT_YET and \
            r.status == 404 and r.json["error"]["message"] == "no such route":
        return None
    return r


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_create_and_get(api, kind):
    k = KINDS[kind]
    coll = "/v1/" + kind
    name = "oac" + kind[:3]
    body = k["create"](name)
    api.call("POST", coll, body=body, token=None, expect=401)
    api.call("POST", coll, body=body, token="not-a-token", expect=401)
    api.call("POST", coll, body=body, token=ACME, expect=k["acme_create"])
    r = api.call("POST", coll, body=body, expect=201, doc_valid=True)
    key = key_of(kind, r.json)
    assert r.getheader("Location") == "/v1/%s/%s" % (kind, key)
    created = r.json
    assert "password" not in created and "password_hash" not in created
    r = api.call("GET", item(kind), params={KEY_PARAM[kind]: key}, expect=200)
    assert r.json == created and etag_of(r) == '"%s"' % created["etag"]
    r = api.call("GET", item(kind), params={KEY_PARAM[kind]: key.upper()}, expect=200)
    assert key_of(kind, r.json) == key, "keys are lower-cased"

    api.call("POST", coll, body=body, expect=409)
    bad = dict(body, colour="red")
    err = api.call("POST", coll, body=bad, expect=400, doc_valid=False).json["error"]
    assert err["field"] == "colour"
    err = api.call("POST", coll, body=dict(body, **k["wrong"]), expect=400,
                   doc_valid=False).json["error"]
    assert err["field"] == list(k["wrong"])[0]
    api.call("POST", coll, body=k["keyless"], expect=400, doc_valid=False)
    api.call("POST", coll, body=dict(body, status="deleted"), expect=400, doc_valid=False)
    api.call("POST", coll, body=dict(body, etag="x"), expect=400, doc_valid=False)
    api.call("POST", coll, body={KEY_PARAM[kind]: None},
             expect=400, doc_valid=False)
    for raw in ('{"id": "x",', "[]", '{"id":"a","id":"b"}', "", "null"):
        api.call("POST", coll, raw=raw, expect=400)
    api.call("POST", coll, raw='{"x": "%s"}' % ("y" * 5000), expect=413)
    # status at create
    r = api.call("POST", coll, body=dict(k["create"](name + "s"), status="suspended",
                                         status_reason="from the start"),
                 expect=201, doc_valid=True)
    assert r.json["status"] == "suspended" and r.json["status_reason"] == "from the start"

    params = {KEY_PARAM[kind]: key}
    api.call("GET", item(kind), params=params, token=None, expect=401)
    api.call("GET", item(kind), params=params, token=ACME, expect=404)
    api.call("GET", item(kind), params={KEY_PARAM[kind]: "no-such" + key}, expect=404)
    api.call("GET", item(kind), params={KEY_PARAM[kind]: "bad_key!"}, expect=400)
    api.call("GET", item(kind), params=params, headers={"If-Match": '"\x01"'}, expect=400)


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_list(api, kind):
    coll = "/v1/" + kind
    r = api.call("GET", coll, query={"limit": 1}, expect=200)
    assert len(r.json["items"]) == 1 and r.json["next_cursor"]
    seen = [key_of(kind, r.json["items"][0])]
    while "next_cursor" in r.json:
        r = api.call("GET", coll, query={"limit": 2, "cursor": r.json["next_cursor"]},
                     expect=200)
        seen += [key_of(kind, o) for o in r.json["items"]]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) > 1
    assert not api.call("GET", coll, query={"limit": 1000}, expect=200).json.get("next_cursor")
    r = api.call("GET", coll, query={"tenant": "oa", "status": "active"}, expect=200)
    assert r.json["items"] and all(o["status"] == "active" for o in r.json["items"])
    if kind != "tenants":
        assert {o["tenant"] for o in r.json["items"]} == {"oa"}
    r = api.call("GET", coll, query={"tenant": "no-such-tenant"}, expect=200)
    assert r.json == {"items": []}
    if kind in ("mailboxes", "aliases"):
        r = api.call("GET", coll, query={"domain": "oa.example", "limit": 1000},
                     expect=200)
        assert r.json["items"] and all(o["address"].endswith("@oa.example")
                                       for o in r.json["items"])
    else:
        err = api.call("GET", coll, query={"domain": "oa.example"}, expect=400).json["error"]
        assert err["field"] == "domain"
    r = api.call("GET", coll, token=ACME, expect=200)
    assert {o["tenant"] if kind != "tenants" else o["id"] for o in r.json["items"]} <= {"acme"}
    err = api.call("GET", coll, query={"tenant": "oa"}, token=ACME, expect=404).json["error"]
    assert err["field"] == "tenant"
    for query, field in (({"limit": "abc"}, "limit"), ({"limit": -1}, "limit"),
                         ({"limit": 1001}, "limit"), ({"status": "gone"}, "status"),
                         ({"cursor": "bogus"}, "cursor"), ({"tenant": "Bad_Id"}, "tenant")):
        err = api.call("GET", coll, query=query, expect=400).json["error"]
        assert err["field"] == field, (query, err)
    cursor = api.call("GET", coll, query={"limit": 1}, expect=200).json["next_cursor"]
    api.call("GET", coll, query={"limit": 1, "cursor": cursor, "status": "deleted"},
             expect=400)
    api.call("GET", coll, token=None, expect=401)
    api.call("GET", coll, token="not-a-token", expect=401)


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_patch(api, kind):
    k = KINDS[kind]
    r = api.call("POST", "/v1/" + kind, body=k["create"]("oap" + kind[:3]), expect=201)
    params = {KEY_PARAM[kind]: key_of(kind, r.json)}
    tag = etag_of(r)
    r = api.call("PATCH", item(kind), params=params, body=k["patch"],
                 headers={"If-Match": tag}, expect=200, doc_valid=True)
    for name, value in k["patch"].items():
        if not name.startswith("password"):
            assert r.json[name] == value, (name, r.json)
    assert etag_of(r) != tag
    api.call("PATCH", item(kind), params=params, body=k["patch"], headers={"If-Match": tag},
             expect=412)
    api.call("PATCH", item(kind), params=params, body={}, headers={"If-Match": "*"},
             expect=200, doc_valid=True)
    r = api.call("PATCH", item(kind), params=params, body=k["nulls"], expect=200,
                 doc_valid=True)
    for name in k["nulls"]:
        if not name.startswith("password"):
            assert r.json[name] in (None, 0, False), (name, r.json)
    api.call("PATCH", item(kind), params=params, body={"colour": "red"}, expect=400,
             doc_valid=False)
    api.call("PATCH", item(kind), params=params, body=k["wrong"], expect=400,
             doc_valid=False)
    for member in (KEY_PARAM[kind], "status",
                   "status_reason", "status_time", "etag"):
        err = api.call("PATCH", item(kind), params=params, body={member: "x"}, expect=400,
                       doc_valid=False).json["error"]
        assert err["field"] == member, err
    if kind != "tenants":
        api.call("PATCH", item(kind), params=params, body={"tenant": "acme"}, expect=400,
                 doc_valid=False)
    api.call("PATCH", item(kind), params=params, raw="", expect=400)
    api.call("PATCH", item(kind), params=params, raw="{", expect=400)
    api.call("PATCH", item(kind), params=params, raw='{"d": "%s"}' % ("y" * 5000),
             expect=413)
    api.call("PATCH", item(kind), params=params, body=k["patch"], token=None, expect=401)
    api.call("PATCH", item(kind), params=params, body=k["patch"], token=ACME, expect=404)
    api.call("PATCH", item(kind), params={KEY_PARAM[kind]: "no-such-" + params[
        KEY_PARAM[kind]]}, body={}, expect=404)


def test_patch_mailbox_passwords(api):
    params = {"address": "ann@oa.example"}
    both = {"password": "x1", "password_hash": KINDS["mailboxes"]["patch"]["password_hash"]}
    api.call("PATCH", item("mailboxes"), params=params, body=both, expect=400,
             doc_valid=False)
    api.call("PATCH", item("mailboxes"), params=params, body={"password_hash": "{MD5}abc"},
             expect=400, doc_valid=False)
    r = api.call("PATCH", item("mailboxes"), params=params, body={"password": "n3w pw"},
                 expect=200, doc_valid=True)
    assert "password" not in r.json


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_status_actions_and_delete(api, kind):
    k = KINDS[kind]
    r = api.call("POST", "/v1/" + kind, body=k["create"]("oas" + kind[:3]), expect=201)
    params = {KEY_PARAM[kind]: key_of(kind, r.json)}
    stale = etag_of(r)
    suspend, resume = item(kind) + "/suspend", item(kind) + "/resume"
    r = api.call("POST", suspend, params=params, body={"reason": "unpaid"},
                 headers={"If-Match": stale}, expect=200, doc_valid=True)
    assert r.json["status"] == "suspended" and r.json["status_reason"] == "unpaid"
    api.call("POST", suspend, params=params, body={"reason": "again"},
             headers={"If-Match": stale}, expect=412)
    r = api.call("POST", suspend, params=params, expect=200)
    assert r.json["status_reason"] is None
    api.call("POST", suspend, params=params, body={"reason": None}, expect=200,
             doc_valid=True)
    api.call("POST", suspend, params=params, body={"reasons": "x"}, expect=400,
             doc_valid=False)
    api.call("POST", suspend, params=params, body={"reason": 5}, expect=400, doc_valid=False)
    api.call("POST", suspend, params=params, raw="[]", expect=400)
    api.call("POST", suspend, params=params, raw='{"reason": "%s"}' % ("y" * 5000),
             expect=413)
    api.call("POST", suspend, params=params, token=None, expect=401)
    api.call("POST", suspend, params=params, token=ACME, expect=404)
    api.call("POST", resume, params=params, token=ACME, expect=404)
    api.call("POST", resume, params=params, token=None, expect=401)
    api.call("POST", resume, params=params, headers={"If-Match": stale}, expect=412)
    r = api.call("POST", resume, params=params, body={}, expect=200, doc_valid=True)
    assert r.json["status"] == "active"
    api.call("POST", resume, params=params, expect=200)      # no change
    api.call("POST", resume, params={KEY_PARAM[kind]: "no-such-" + params[KEY_PARAM[kind]]},
             expect=404)

    api.call("DELETE", item(kind), params=params, headers={"If-Match": stale}, expect=412)
    api.call("DELETE", item(kind), params=params, token=ACME, expect=404)
    api.call("DELETE", item(kind), params=params, token=None, expect=401)
    api.call("DELETE", item(kind), params=params, expect=204)
    r = api.call("GET", item(kind), params=params, expect=200)
    assert r.json["status"] == "deleted" and "purge_after" in r.json
    api.call("DELETE", item(kind), params=params, expect=204)     # again: no change
    api.call("POST", suspend, params=params, expect=422)
    r = api.call("GET", "/v1/" + kind, query={"status": "deleted", "limit": 1000}, expect=200)
    assert params[KEY_PARAM[kind]] in [key_of(kind, o) for o in r.json["items"]]


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_restore_and_purge(api, kind):
    """restore and purge (PENDING: probed, exercised once served); resume
    is for suspended objects, a deleted one is restored."""
    k = KINDS[kind]
    r = api.call("POST", "/v1/" + kind, body=k["create"]("oar" + kind[:3]), expect=201)
    params = {KEY_PARAM[kind]: key_of(kind, r.json)}
    key = params[KEY_PARAM[kind]]
    restore = item(kind) + "/restore"
    purge = item(kind) + "/purge"
    resume = item(kind) + "/resume"

    r = probe_pending(api, kind, "purge", key)
    if r is not None:
        assert r.status == 422 and r.json["error"]["field"] == "status", r.text
    r = probe_pending(api, kind, "restore", key)
    if r is not None:
        assert r.status == 422 and r.json["error"]["field"] == "status", r.text
    api.call("DELETE", item(kind), params=params, expect=204)
    r = probe_pending(api, kind, "restore", key, body={"reason": "by mistake"})
    if r is not None:
        assert r.status == 200 and r.json["status"] == "active", r.text
        api.call("POST", restore, params=params, token=ACME, expect=404)
        api.call("POST", restore, params=params, token=None, expect=401)
        api.call("POST", restore, params=params, body={"why": "x"}, expect=400,
                 doc_valid=False)
        api.call("DELETE", item(kind), params=params, expect=204)
        stale = api.call("GET", item(kind), params=params, expect=200).getheader("ETag")
        api.call("POST", suspend_of(kind), params=params, expect=422)
        err = api.call("POST", resume, params=params, expect=422).json["error"]
        assert err["field"] == "status", err
        r = api.call("POST", restore, params=params, headers={"If-Match": stale}, body={},
                     expect=200, doc_valid=True)
        api.call("DELETE", item(kind), params=params, headers={"If-Match": stale},
                 expect=412)
        api.call("DELETE", item(kind), params=params, headers={"If-Match": etag_of(r)},
                 expect=204)
    else:      # before restore: resume made a deleted object active
        api.call("POST", resume, params=params, expect=200)
        api.call("DELETE", item(kind), params=params, expect=204)
    deleted_at = time.monotonic()
    r = probe_pending(api, kind, "purge", key)
    if r is not None:
        assert r.status == 422 and r.json["error"]["field"] == "purge_after", r.text
        api.call("POST", purge, params=params, token=ACME, expect=404)
        api.call("POST", purge, params=params, token=None, expect=401)
        err = api.call("POST", purge, params=params, body={"force": True}, expect=400,
                       doc_valid=False).json["error"]
        assert err["field"] == "force", err
    time.sleep(max(0.0, deleted_at + PURGE_GRACE + 0.5 - time.monotonic()))
    api.call("POST", resume, params=params, expect=422)
    r = probe_pending(api, kind, "restore", key)
    if r is not None:
        assert r.status == 422 and r.json["error"]["field"] == "status", r.text
    r = probe_pending(api, kind, "purge", key, body={})
    if r is not None:
        assert r.status == 204, r.text
        api.call("GET", item(kind), params=params, expect=404)
        api.call("POST", purge, params=params, expect=404)
        api.call("POST", restore, params=params, expect=404)


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_batch_create(api, kind):
    """POST /v1/batch/<kind> (PENDING: probed, exercised once served):
    each item answered as its single create would be."""
    k = KINDS[kind]
    path = "/v1/batch/" + kind
    name = "oab" + kind[:3]
    good = [k["create"]("%s%d" % (name, i)) for i in range(3)]
    r = api.call("POST", path, body={"items": good}, doc_valid=True)
    if ("POST", path) in NOT_YET and r.status == 404:
        return
    assert r.status == 200, r.text
    res = r.json["results"]
    assert [x["status"] for x in res] == [201] * 3, res
    for body, x in zip(good, res):
        assert key_of(kind, x["object"]) == key_of(kind, body)
        got = api.call("GET", item(kind), params={KEY_PARAM[kind]: key_of(kind, body)},
                       expect=200)
        assert got.json == x["object"] and etag_of(got) == x["etag"]
        assert "password" not in x["object"]

    # per item: a new one, an existing one, a bad one, a duplicate within
    # the request -- each as its single create (bad items: not the
    # document's create bodies, so sent raw)
    fresh = k["create"](name + "x")
    bad = dict(k["create"](name + "y"), colour="red")
    r = api.call("POST", path, raw=json.dumps({"items": [fresh, good[0], bad, fresh]}),
                 expect=200)
    res = r.json["results"]
    assert [x["status"] for x in res] == [201, 409, 400, 409], res
    single = api.call("POST", "/v1/" + kind, body=good[0], expect=409).json
    assert res[1]["error"] == single["error"] and res[3]["error"]["code"] == "conflict"
    single = api.call("POST", "/v1/" + kind, body=bad, expect=400, doc_valid=False).json
    assert res[2]["error"] == single["error"] and res[2]["error"]["field"] == "colour"
    # a token's rights hold per item
    r = api.call("POST", path, body={"items": [k["create"](name + "a")]}, token=ACME)
    assert (r.status == 200 and r.json["results"][0]["status"] == k["acme_create"]) or \
        r.status == k["acme_create"], r.text

    # the request refused as a whole
    for raw, field in (("{}", "items"), ('{"items": []}', "items"),
                       ('{"items": {}}', "items"), ('{"items": [{}], "x": 1}', "x"),
                       ('{"items": [%s]}' % ",".join(["{}"] * 501), "items")):
        err = api.call("POST", path, raw=raw, expect=400).json["error"]
        assert err["field"] == field, (raw[:40], err)
    for raw in ("[]", "", '{"items": [', "null"):
        api.call("POST", path, raw=raw, expect=400)
    api.call("POST", path, body={"items": []}, expect=400, doc_valid=False)
    api.call("POST", path, body={"items": good, "all": True}, expect=400, doc_valid=False)
    api.call("POST", path, raw='{"items": [{"x": "%s"}]}' % ("y" * 5000), expect=413)
    api.call("POST", path, body={"items": good}, token=None, expect=401)
    api.call("POST", path, body={"items": good}, token="not-a-token", expect=401)
    r = api.provd.request("GET", path)
    assert r.status == 405 and r.getheader("Allow") == "POST", r.text

    # one Idempotency-Key for the whole request
    h = {"Idempotency-Key": "oa-batch-" + kind}
    body = {"items": [k["create"](name + "k1"), k["create"](name + "k2")]}
    a = api.call("POST", path, body=body, headers=h, expect=200)
    b = api.call("POST", path, body=body, headers=h, expect=200)
    assert a.getheader("Idempotent-Replayed") is None
    assert b.getheader("Idempotent-Replayed") == "true" and b.json == a.json
    assert [x["status"] for x in b.json["results"]] == [201, 201]
    err = api.call("POST", path, body={"items": [k["create"](name + "k3")]}, headers=h,
                   expect=422).json["error"]
    assert err["code"] == "idempotency_key_reused"


def test_plan_limits_are_422(api):
    api.call("POST", "/v1/tenants", body={"id": "oaplan", "max_mailboxes": 2,
                                          "storage_quota_bytes": 3000,
                                          "mailbox_quota_bytes": 1000}, expect=201)
    api.call("POST", "/v1/domains", body={"domain": "oaplan.example", "tenant": "oaplan"},
             expect=201)
    for local in ("m1", "m2"):
        api.call("POST", "/v1/mailboxes", body={"address": local + "@oaplan.example"},
                 expect=201)
    api.call("POST", "/v1/mailboxes", body={"address": "m3@oaplan.example"}, expect=422)
    err = api.call("PATCH", "/v1/tenants/{id}", params={"id": "oaplan"},
                   body={"max_mailboxes": 1}, expect=422).json["error"]
    assert err["field"] == "max_mailboxes"
    err = api.call("PATCH", "/v1/tenants/{id}", params={"id": "oaplan"},
                   body={"storage_quota_bytes": 1500}, expect=422).json["error"]
    assert err["field"] == "storage_quota_bytes"
    err = api.call("PATCH", "/v1/mailboxes/{address}", params={"address": "m1@oaplan.example"},
                   body={"quota_bytes": 2500}, expect=422).json["error"]
    assert err["field"] == "quota_bytes"
    # ownership: the tenant given must own the domain; a deleted owner
    api.call("POST", "/v1/mailboxes", body={"address": "x@oaplan.example", "tenant": "oa"},
             expect=422)
    api.call("POST", "/v1/aliases", body={"address": "x@nowhere.example",
                                          "targets": ["ann@oa.example"]}, expect=422)
    api.call("POST", "/v1/domains", body={"domain": "oaplan2.example", "tenant": "nobody"},
             expect=404)
    api.call("POST", "/v1/domains", body={"domain": "oaplan2.example"}, expect=400)
    api.call("POST", "/v1/aliases", body={"address": "loop@oa.example",
                                          "targets": ["loop@oa.example"]}, expect=400)
    api.call("POST", "/v1/aliases", body={"address": "dup@oa.example",
                                          "targets": ["ann@oa.example", "ann@oa.example"]},
             expect=400, doc_valid=False)
    api.call("POST", "/v1/aliases", body={"address": "ann@oa.example",
                                          "targets": ["bob@oa.example"]}, expect=409)


def test_token_roles(api):
    """A tenant's token works within its tenant (a domain it creates is its
    own); a billing token has an admin's rights."""
    r = api.call("POST", "/v1/domains", body={"domain": "oa-acme.example"}, token=ACME,
                 expect=201, doc_valid=True)
    assert r.json["tenant"] == "acme"
    api.call("GET", "/v1/domains/{domain}", params={"domain": "oa-acme.example"}, token=ACME,
             expect=200)
    api.call("POST", "/v1/domains", body={"domain": "oa-acme2.example", "tenant": "oa"},
             token=ACME, expect=404)
    api.call("GET", "/v1/tenants/{id}", params={"id": "acme"}, token=ACME, expect=200)
    api.call("GET", "/v1/tenants/{id}", params={"id": "oa"}, token=ACME, expect=404)
    api.call("POST", "/v1/mailboxes", body={"address": "x@oa.example"}, token=ACME,
             expect=422)
    r = api.call("POST", "/v1/tenants", body={"id": "oabill"}, token=BILLING, expect=201)
    api.call("GET", "/v1/tenants/{id}", params={"id": "oa"}, token=BILLING, expect=200)
    api.call("POST", "/v1/tenants/{id}/suspend", params={"id": "oabill"}, token=BILLING,
             body={"reason": "unpaid"}, expect=200)
    actors = [e["data"]["actor"] for e in api.provd.events("oabill")]
    assert actors and all(a["kind"] == "billing" for a in actors), actors


def test_idempotency_key(api):
    """PENDING until a repeat carries Idempotent-Replayed (before, the key
    was ignored and a repeated create was 409 conflict)."""
    body = {"id": "oaidem"}
    h = {"Idempotency-Key": "oa-test-key-1"}
    r1 = api.call("POST", "/v1/tenants", body=body, headers=h, expect=201)
    r2 = api.call("POST", "/v1/tenants", body=body, headers=h)
    if r2.getheader("Idempotent-Replayed") is None:
        assert r2.status == 409, r2.text
        NOT_YET["Idempotency-Key"] = "a repeated create answered %d without " \
            "Idempotent-Replayed" % r2.status
        return
    NOT_YET.pop("Idempotency-Key", None)
    assert r1.getheader("Idempotent-Replayed") is None
    assert r2.status == 201 and r2.getheader("Idempotent-Replayed") == "true"
    assert r2.json == r1.json and r2.getheader("Location") == r1.getheader("Location")
    assert etag_of(r2) == etag_of(r1)
    err = api.call("POST", "/v1/tenants", body={"id": "oaidem2"}, headers=h,
                   expect=422).json["error"]
    assert err["code"] == "idempotency_key_reused" and err["field"] == "Idempotency-Key"
    # an error (not 5xx) is kept and replayed too
    h = {"Idempotency-Key": '"oa-test-key-2"'}
    a = api.call("POST", "/v1/tenants", body=body, headers=h, expect=409)
    b = api.call("POST", "/v1/tenants", body=body, headers=h, expect=409)
    assert b.getheader("Idempotent-Replayed") == "true" and b.json == a.json
    # on each action
    p = {"id": "oaidem"}
    for n, action in enumerate(("suspend", "resume")):
        h = {"Idempotency-Key": "oa-action-%d" % n}
        a = api.call("POST", "/v1/tenants/{id}/" + action, params=p, body={"reason": "r"},
                     headers=h, expect=200)
        b = api.call("POST", "/v1/tenants/{id}/" + action, params=p, body={"reason": "r"},
                     headers=h, expect=200)
        assert b.getheader("Idempotent-Replayed") == "true" and b.json == a.json
    api.call("DELETE", "/v1/tenants/{id}", params=p, expect=204)
    h = {"Idempotency-Key": "oa-restore"}
    a = probe_pending(api, "tenants", "restore", "oaidem", headers=h)
    if a is not None:
        b = api.call("POST", "/v1/tenants/{id}/restore", params=p, headers=h, expect=200)
        assert b.getheader("Idempotent-Replayed") == "true" and b.json == a.json
    # the key belongs to the token: acme's same key is another request
    r = api.call("POST", "/v1/domains", body={"domain": "oaidem.example"}, token=ACME,
                 headers={"Idempotency-Key": "oa-test-key-1"}, expect=201)
    assert r.getheader("Idempotent-Replayed") is None
    # malformed keys
    for bad in ("", "x" * 256, '"a"b"', '"a\\b"', "caf\u00e9"):
        err = api.call("POST", "/v1/tenants", body={"id": "oaidem3"},
                       headers={"Idempotency-Key": bad}, expect=400).json["error"]
        assert err["field"] == "Idempotency-Key", (bad, err)
    # other methods ignore it
    api.call("PATCH", "/v1/tenants/{id}", params={"id": "oa"}, body={},
             headers={"Idempotency-Key": "x" * 300}, expect=200)


def test_rate_limit_is_429_with_retry_after(stack, tmp_path):
    """provd_rate_limit is read at start: a second daemon, 1 request/s."""
    p = Provd(stack, tmp_path, overrides={"provd_rate_limit": "1", "provd_rate_burst": "2"})
    try:
        limited = Api(p)

        def until_429(method, template, **kw):
            statuses = []
            while 429 not in statuses and len(statuses) < 20:
                r = limited.call(method, template, **kw)
                statuses.append(r.status)
            assert statuses[-1] == 429, statuses
            return statuses, r
        statuses, r = until_429("GET", "/v1/tenants/{id}", params={"id": "oa"})
        assert statuses[:2] == [200, 200], statuses
        statuses, r = until_429("POST", "/v1/tenants", body={"id": "oarate"})
        assert r.json["error"]["code"] == "rate_limited" and int(r.getheader("Retry-After")) >= 1
        # per token: acme's bucket is its own
        limited.call("GET", "/v1/tenants/{id}", params={"id": "acme"}, token=ACME, expect=200)
    finally:
        p.stop()


def test_early_413_before_the_token(api):
    for method, template, params in (("POST", "/v1/tenants", None),
                                     ("PATCH", "/v1/tenants/{id}", {"id": "oa"}),
                                     ("POST", "/v1/tenants/{id}/suspend", {"id": "oa"})):
        api.call(method, template, params=params, raw='{"x": "%s"}' % ("y" * 5000),
                 token=None, expect=413)


def test_methods_not_allowed_name_the_documented_methods(api):
    params = {"id": "oa", "domain": "oa.example", "address": "ann@oa.example"}
    for template in DOC["paths"]:
        if template == "/metrics":
            continue
        have = path_methods(template)
        if all((m, template) in NOT_YET for m in have):
            continue
        path = template
        for name, value in params.items():
            path = path.replace("{%s}" % name, value)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            if method in have:
                continue
            r = api.provd.request(method, path)
            where = "%s %s -> %d %s" % (method, path, r.status, r.text[:200])
            assert r.status == 405, where
            assert set(r.getheader("Allow").split(", ")) == have, where
            errors = schema_errors(DOC["components"]["schemas"]["Error405"], r.json,
                                   "response")
            assert not errors, (errors, where)
    # and no route the document lacks
    for path in ("/v1/tenants/oa/frobnicate", "/v1/users", "/v2/tenants",
                 "/v1/tenants/oa/suspend/now"):
        r = api.provd.request("POST", path, body={})
        assert r.status == 404 and r.json["error"]["message"] == "no such route", path


def test_metrics(api):
    r = api.call("GET", "/metrics", token=None, expect=200)
    assert b'tn_provd_responses_total{code="201"}' in r.text


def test_directory_frozen_is_503_with_retry_after(api, stack):
    api.call("POST", "/v1/tenants", body={"id": "oafrz"}, expect=201)
    p = {"id": "oafrz"}
    stack.slapd.freeze()
    try:
        for method, template, params, body in (
                ("GET", "/v1/tenants/{id}", p, None),
                ("GET", "/v1/tenants", None, None),
                ("POST", "/v1/tenants", None, {"id": "oafrz2"}),
                ("PATCH", "/v1/tenants/{id}", p, {"name": "x"}),
                ("POST", "/v1/tenants/{id}/suspend", p, None),
                ("POST", "/v1/batch/tenants", None, {"items": [{"id": "oafrz4"}]}),
                ("DELETE", "/v1/tenants/{id}", p, None)):
            r = api.call(method, template, params=params, body=body)
            if (method, template) in NOT_YET and r.status == 404:
                continue        # PENDING, not served yet
            assert r.status == 503, r.text
            assert r.json["error"]["code"] == "tempfail"
        if "Idempotency-Key" not in NOT_YET:
            # the first request with a key still running: the repeat is 409
            h = {"Idempotency-Key": "oa-frozen-key"}
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                first = ex.submit(api.call, "POST", "/v1/tenants", body={"id": "oafrz3"},
                                  headers=h)
                time.sleep(0.5)
                r = api.call("POST", "/v1/tenants", body={"id": "oafrz3"}, headers=h,
                             expect=409)
                assert r.json["error"]["code"] == "idempotency_in_progress", r.text
                assert r.getheader("Retry-After") == "1"
                assert first.result().status == 503
    finally:
        stack.slapd.thaw()
    deadline = time.monotonic() + 10
    while api.provd.request("GET", "/v1/tenants/oafrz").status != 200:
        assert time.monotonic() < deadline, "no recovery after the thaw"
        time.sleep(0.1)


def test_recount(api):
    api.call("POST", "/v1/tenants", body={"id": "oarecount", "max_mailboxes": 5},
             expect=201)
    r = api.call("POST", "/v1/tenants/{id}/recount", params={"id": "oarecount"},
                 expect=200)
    assert r.json["id"] == "oarecount" and r.json["mailbox_count"] == 0
    api.call("POST", "/v1/tenants/{id}/recount", params={"id": "oarecount"}, body={},
             expect=200)
    err = api.call("POST", "/v1/tenants/{id}/recount", params={"id": "oarecount"},
                   body={"all": True}, expect=400)
    assert err.json["error"]["field"] == "all"
    api.call("POST", "/v1/tenants/{id}/recount", params={"id": "nosuchtenant"},
             expect=404)
    api.call("POST", "/v1/tenants/{id}/recount", params={"id": "oarecount"},
             token=None, expect=401)


# --- (c) coverage: last ------------------------------------------------------------------------

def test_every_documented_operation_was_exercised():
    not_served = {k for k in NOT_YET if k in OPS}
    assert not_served <= PENDING, sorted(not_served - PENDING)
    missing = sorted(k for k in OPS if k not in not_served and
                     not any(200 <= s < 300 for s in SEEN.get(k, ())))
    assert not missing, "operations of the document never answered with a success " \
        "(run the whole module): %s" % missing
    unknown = set(NOT_YET) - set(OPS) - PENDING_FEATURES
    assert not unknown, unknown
    pending = sorted(set(NOT_YET) & (PENDING | PENDING_FEATURES), key=str)
    if pending:
        warnings.warn("documented, not served yet (PENDING): " + ", ".join(
            " ".join(k) if isinstance(k, tuple) else k for k in pending))
