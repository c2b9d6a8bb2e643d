"""test_docs -- the manual pages agree with the code (STYLE.md rules 5, 12).

Run with Debian's pytest from the top of the tree:
    pytest-3 -q tests/integration/test_docs.py

Environment:
  TN_BUILD_DIR  the build directory holding provisioning/tnctl
                (default: the top of the source tree, an in-tree build)
  TN_MAN_DIR    the directory holding the pages (default: <top>/man);
                lets a modified copy be checked.

What is checked:
  * man/tenantmail.conf.5 has one entry per parameter that
    "tnctl config --doc" prints, with the same default and type, and
    documents no parameter the code does not have.  An entry, in
    CONFIGURATION PARAMETERS, is
        .TP
        .BR name " (default: " "value" ")"     (or " (default: empty)")
        Type: \\fBtype\\fR ...
  * man/tn-webhook.5 has one entry per endpoint file parameter, in the
    same form, with the name, default and type of the table
    tn_hook_endpoint_params in lib/tn-hook-spool.c (read from the source:
    no program prints that table), and no other.
  * man/tnctl.1 documents every command of tnctl's usage message (with
    its options) in COMMANDS, no command tnctl does not have, the global
    options of the usage message in OPTIONS, and the exit statuses
    exercised here in EXIT STATUS.
  * docs/events.md: every ```json example parses and is an envelope of
    its section's type whose data has exactly the fields of that type's
    table; every provisioning event type (tenant, domain, mailbox, alias
    x created, updated, suspended, resumed, deleted) is catalogued; and
    every ```json block is a whole envelope (the seven members in the
    outbox's order, each of its JSON type and pattern).
  * The pages format with "groff -man -ww" without a warning.

Standard library only.  A missing tnctl or groff fails the test (it does
not skip): a skipped documentation test looks green.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", ".."))
MAN_DIR = os.environ.get("TN_MAN_DIR") or os.path.join(TOP, "man")
CONF_PAGE = os.path.join(MAN_DIR, "tenantmail.conf.5")
TNCTL_PAGE = os.path.join(MAN_DIR, "tnctl.1")
WEBHOOK_PAGE = os.path.join(MAN_DIR, "tn-webhook.5")
PROVD_PAGE = os.path.join(MAN_DIR, "tn-provisiond.8")
PAGES = (CONF_PAGE, TNCTL_PAGE, WEBHOOK_PAGE, PROVD_PAGE)
SPOOL_SOURCE = os.path.join(TOP, "lib", "tn-hook-spool.c")

EX_USAGE = 64
EX_CONFIG = 78


# --- the programs ----------------------------------------------------------

def build_program(relpath):
    """Path of a built program under TN_BUILD_DIR; fails clearly if absent."""
    build = os.environ.get("TN_BUILD_DIR") or TOP
    path = os.path.join(build, relpath)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("%s not found or not executable: build first "
                    "(make -C %s) or set TN_BUILD_DIR to the build directory"
                    % (path, build), pytrace=False)
    return path


@pytest.fixture(scope="module")
def empty_conf(tmp_path_factory):
    """An empty configuration file: the tests must not depend on
    /etc/tenantmail/tenantmail.conf or $TENANTMAIL_CONF."""
    path = tmp_path_factory.mktemp("docs") / "empty.conf"
    path.write_text("")
    return str(path)


def run_tnctl(*args):
    env = dict(os.environ)
    env.pop("TENANTMAIL_CONF", None)
    return subprocess.run([build_program("provisioning/tnctl")] + list(args),
                          capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, env=env)


def code_parameters(conf):
    """{name: (type, default)} from "tnctl config --doc"."""
    r = run_tnctl("-c", conf, "config", "--doc")
    assert r.returncode == 0, "tnctl config --doc: rc=%d %s" % (r.returncode,
                                                                r.stderr)
    params = {}
    for line in r.stdout.splitlines():
        fields = line.split("\t")
        assert len(fields) == 4, "bad --doc line: %r" % line
        name, ptype, default, _doc = fields
        assert name not in params, "--doc lists %s twice" % name
        params[name] = (ptype, default)
    assert params, "tnctl config --doc printed no parameter"
    return params


# --- a little roff -----------------------------------------------------------

_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),       # font changes
    (re.compile(r"\\\((aq)"), "'"),
    (re.compile(r"\\\((dq|lq|rq)"), '"'),
    (re.compile(r"\\\((bu)"), "*"),
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\[&|^]"), ""),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\e"), "\\\\"),
]


def roff_text(s):
    """Plain text of a roff fragment (the escapes these pages use)."""
    for pattern, repl in _ESCAPES:
        s = pattern.sub(repl, s)
    return s


def roff_args(s):
    """Split macro arguments: blanks separate, double quotes group, and
    "" inside a quoted argument is one quote character."""
    args, i, n = [], 0, len(s)
    while i < n:
        if s[i] in " \t":
            i += 1
            continue
        if s[i] == '"':
            i += 1
            arg = []
            while i < n:
                if s[i] == '"' and i + 1 < n and s[i + 1] == '"':
                    arg.append('"')
                    i += 2
                elif s[i] == '"':
                    i += 1
                    break
                else:
                    arg.append(s[i])
                    i += 1
            args.append("".join(arg))
        else:
            j = i
            while j < n and s[j] not in " \t":
                j += 2 if s[j] == "\\" else 1
            args.append(s[i:j])
            i = j
    return args


def line_text(line):
    """The text a man(7) line shows: font macros are resolved (the
    alternating ones join their arguments without a space)."""
    m = re.match(r"\.(B|I|SM|SB|BR|RB|IR|RI|BI|IB)(?:\s+(.*))?$", line)
    if m is None:
        return roff_text(line)
    args = roff_args(m.group(2) or "")
    sep = "" if len(m.group(1)) == 2 and m.group(1) not in ("SM", "SB") else " "
    return roff_text(sep.join(args))


def read_page(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def sections(lines):
    """{SECTION NAME: [(lineno, line), ...]} without comment lines."""
    out, name = {}, None
    for no, line in enumerate(lines, 1):
        if line.startswith('.\\"') or line.startswith("'\\\""):
            continue
        if re.match(r"\.SH(\s|$)", line):
            name = " ".join(roff_args(line[3:])).strip()
            out[name] = []
        elif name is not None:
            out[name].append((no, line))
    return out


def tp_entries(body, top_level_only=False):
    """[(lineno, header text, [following lines])] of the .TP items."""
    entries, depth, i = [], 0, 0
    while i < len(body):
        no, line = body[i]
        if re.match(r"\.RS(\s|$)", line):
            depth += 1
        elif re.match(r"\.RE(\s|$)", line):
            depth -= 1
        elif re.match(r"\.TP(\s|$)", line) and i + 1 < len(body):
            hno, header = body[i + 1]
            rest = [l for _, l in body[i + 2:i + 8]]
            if not top_level_only or depth == 0:
                entries.append((hno, line_text(header), header, rest))
            i += 1
        i += 1
    return entries


ENTRY_RE = re.compile(r"^(\S+) \(default: (.*)\)$")
TYPE_RE = re.compile(r"^Type: \\fB(\w+)\\f[RP]")


def page_parameters(page=CONF_PAGE):
    """({name: (type, default, lineno)}, [problems]) from the
    CONFIGURATION PARAMETERS of page (tenantmail.conf.5 by default)."""
    secs = sections(read_page(page))
    assert "CONFIGURATION PARAMETERS" in secs, \
        "%s has no CONFIGURATION PARAMETERS section" % page
    params, problems = {}, []
    for no, text, raw, rest in tp_entries(secs["CONFIGURATION PARAMETERS"]):
        m = ENTRY_RE.match(text)
        if m is None:
            problems.append("line %d: entry %r is not 'name (default: value)'"
                            % (no, raw))
            continue
        name, default = m.group(1), m.group(2)
        if default == "empty" and '" (default: empty)"' in raw:
            default = ""
        tm = TYPE_RE.match(rest[0]) if rest else None
        if tm is None:
            problems.append("line %d: %s: the line after the entry must "
                            "start with 'Type: \\fBtype\\fR'" % (no + 1, name))
        if name in params:
            problems.append("line %d: %s documented twice (first at line %d)"
                            % (no, name, params[name][2]))
            continue
        params[name] = (tm.group(1) if tm else None, default, no)
    return params, problems


def report(problems, header):
    """Fail with one readable message listing every problem."""
    if problems:
        pytest.fail("%s:\n  %s" % (header, "\n  ".join(problems)),
                    pytrace=False)


# --- tenantmail.conf(5) --------------------------------------------------------

def test_conf_page_entries_are_well_formed():
    params, problems = page_parameters()
    assert params, "no parameter entry found in %s" % CONF_PAGE
    report(problems, CONF_PAGE)


def test_every_code_parameter_is_documented_with_its_default(empty_conf):
    code = code_parameters(empty_conf)
    page, _ = page_parameters()
    problems = []
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s (default %r) is not documented" % (name, default))
            continue
        ptype_doc, default_doc, no = page[name]
        if default_doc != default:
            problems.append("line %d: %s: default %r in the page, %r in the code"
                            % (no, name, default_doc, default))
        if ptype_doc is not None and ptype_doc != ptype:
            problems.append("line %d: %s: type %r in the page, %r in the code"
                            % (no, name, ptype_doc, ptype))
    report(problems, "%s disagrees with 'tnctl config --doc'" % CONF_PAGE)


def test_every_documented_parameter_exists(empty_conf):
    code = code_parameters(empty_conf)
    page, _ = page_parameters()
    unknown = ["line %d: %s" % (page[n][2], n) for n in sorted(page)
               if n not in code]
    report(unknown, "%s documents parameters that 'tnctl config --doc' "
           "does not know" % CONF_PAGE)


# --- tn-webhook(5) ----------------------------------------------------------------

C_STRING = r'"((?:[^"\\]|\\.)*)"'
TABLE_ENTRY_RE = re.compile(r"\{\s*" + C_STRING + r",\s*TN_CONF_([A-Z]+),\s*" + C_STRING)


def endpoint_table():
    """{name: (type, default)} of tn_hook_endpoint_params in the source."""
    with open(SPOOL_SOURCE, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"tn_hook_endpoint_params\[\]\s*=\s*\{(.*?)TN_CONF_END", text, re.S)
    assert m, "%s: no tn_hook_endpoint_params table" % SPOOL_SOURCE
    params = {name: (ptype.lower(), default)
              for name, ptype, default in TABLE_ENTRY_RE.findall(m.group(1))}
    assert params, "%s: no entry parsed in tn_hook_endpoint_params" % SPOOL_SOURCE
    return params


def test_webhook_page_documents_every_endpoint_parameter():
    code = endpoint_table()
    page, problems = page_parameters(WEBHOOK_PAGE)
    for name, (ptype, default) in sorted(code.items()):
        if name not in page:
            problems.append("%s (default %r) is not documented" % (name, default))
            continue
        ptype_doc, default_doc, no = page[name]
        if default_doc != default:
            problems.append("line %d: %s: default %r in the page, %r in the code"
                            % (no, name, default_doc, default))
        if ptype_doc != ptype:
            problems.append("line %d: %s: type %r in the page, %r in the code"
                            % (no, name, ptype_doc, ptype))
    problems += ["line %d: %s is not in tn_hook_endpoint_params" % (page[n][2], n)
                 for n in sorted(page) if n not in code]
    report(problems, "%s disagrees with %s" % (WEBHOOK_PAGE, SPOOL_SOURCE))


# --- tnctl(1) --------------------------------------------------------------------

OPTION_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")


def tnctl_usage():
    """(global usage line, [command usage lines]) from tnctl without args."""
    r = run_tnctl()
    assert r.returncode == EX_USAGE, \
        "tnctl without arguments: rc=%d, expected %d" % (r.returncode, EX_USAGE)
    lines = r.stderr.splitlines()
    assert lines and lines[0].startswith("usage: tnctl "), \
        "unexpected usage message: %r" % r.stderr
    commands = [l.strip()[len("tnctl "):] for l in lines[1:]
                if l.strip().startswith("tnctl ")]
    assert commands, "no command in tnctl's usage message: %r" % r.stderr
    return lines[0][len("usage: tnctl "):], commands


def command_words(usage):
    """'cache invalidate --address A | ...' -> 'cache invalidate'."""
    words = []
    for word in usage.split():
        if not re.match(r"^[a-z][a-z0-9-]*$", word):
            break
        words.append(word)
    return " ".join(words)


def test_every_tnctl_command_is_documented():
    _, commands = tnctl_usage()
    secs = sections(read_page(TNCTL_PAGE))
    assert "COMMANDS" in secs, "%s has no COMMANDS section" % TNCTL_PAGE
    entries = tp_entries(secs["COMMANDS"], top_level_only=True)
    problems = []
    for usage in commands:
        cmd = command_words(usage)
        found = [text for _, text, _, _ in entries
                 if text == cmd or text.startswith(cmd + " ")]
        if not found:
            problems.append("command %r (usage: %s) has no entry" % (cmd, usage))
            continue
        for opt in OPTION_RE.findall(usage):
            if opt not in OPTION_RE.findall(found[0]):
                problems.append("command %r: option %s is not in the entry %r"
                                % (cmd, opt, found[0]))
    known = [command_words(u) for u in commands]
    for no, text, _, _ in entries:
        if not any(text == c or text.startswith(c + " ") for c in known):
            problems.append("line %d: entry %r is not a command of tnctl's "
                            "usage message" % (no, text))
    report(problems, TNCTL_PAGE)


def test_tnctl_global_options_are_documented():
    global_usage, _ = tnctl_usage()
    secs = sections(read_page(TNCTL_PAGE))
    assert "OPTIONS" in secs, "%s has no OPTIONS section" % TNCTL_PAGE
    headers = [text for _, text, _, _ in tp_entries(secs["OPTIONS"])]
    missing = [opt for opt in OPTION_RE.findall(global_usage)
               if not any(h.split()[0].split("=")[0] == opt for h in headers)]
    report(["OPTIONS lacks %s (usage: %s)" % (opt, global_usage)
            for opt in missing], TNCTL_PAGE)


def test_tnctl_exit_statuses_are_documented(empty_conf):
    r = run_tnctl("-c", empty_conf, "-o", "no_such_parameter=1", "config")
    assert r.returncode == EX_CONFIG, \
        "tnctl -o with an unknown parameter: rc=%d, expected %d" % (
            r.returncode, EX_CONFIG)
    secs = sections(read_page(TNCTL_PAGE))
    assert "EXIT STATUS" in secs, "%s has no EXIT STATUS section" % TNCTL_PAGE
    documented = {text for _, text, _, _ in tp_entries(secs["EXIT STATUS"])}
    missing = [str(s) for s in (0, 1, EX_USAGE, 75, EX_CONFIG)
               if str(s) not in documented]
    report(["EXIT STATUS lacks %s" % s for s in missing], TNCTL_PAGE)


# --- docs/events.md ------------------------------------------------------------------

EVENTS_MD = os.path.join(TOP, "docs", "events.md")
PROV_EVENT_TYPES = ["%s.%s" % (kind, verb)
                    for kind in ("tenant", "domain", "mailbox", "alias")
                    for verb in ("created", "updated", "suspended", "resumed", "deleted")]


def event_sections():
    """{type: (field names of its table, [example objects])} of the
    catalogue: a "## type" or "### type" heading, its first "| field |"
    table, and its ```json blocks (each must parse)."""
    with open(EVENTS_MD, encoding="utf-8") as f:
        text = f.read()
    out = {}
    parts = re.split(r"^#{2,3} ([a-z]+\.[a-z]+)\n", text, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        body = re.split(r"^#{1,3} ", body, flags=re.M)[0]
        table = re.search(r"^\| field \|.*\n\|[-|]+\|\n((?:\|.*\n)+)", body, re.M)
        fields = re.findall(r"^\| `([a-z_]+)` \|", table.group(1), re.M) if table else []
        examples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", body, re.S)]
        out[name] = (fields, examples)
    return out


def test_event_catalogue_examples_match_their_tables():
    """Every ```json example of docs/events.md parses, is an envelope of
    its section's type, and its data holds exactly the fields of that
    type's table; every type the provisioning core emits has a section
    and a row in the catalogue's first table."""
    with open(EVENTS_MD, encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        json.loads(block)
    secs = event_sections()
    problems = []
    listed = set(re.findall(r"`([a-z]+\.[a-z]+)`", text.split("\n\n|")[1].split("\n\n")[0]))
    for etype in PROV_EVENT_TYPES:
        if etype not in secs:
            problems.append("%s: no section" % etype)
        if etype not in listed:
            problems.append("%s: not in the catalogue's table" % etype)
    for etype, (fields, examples) in sorted(secs.items()):
        if not examples:
            problems.append("%s: no example" % etype)
        for ex in examples:
            if ex.get("type") != etype:
                problems.append("%s: example of type %r" % (etype, ex.get("type")))
                continue
            for member in ("id", "occurred_at", "tenant", "sequence", "origin", "data"):
                if member not in ex:
                    problems.append("%s: example without %s" % (etype, member))
            data = set(ex.get("data", {}))
            if fields and data != set(fields):
                problems.append("%s: example data %s, table %s" % (etype, sorted(data),
                                                                   sorted(fields)))
    report(problems, EVENTS_MD)


# --- formatting --------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_page_formats_without_warnings(page):
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff missing (apt-get install groff-base; scripts/deps "
                    "installs it)", pytrace=False)
    env = dict(os.environ, LC_ALL="C.UTF-8")
    r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", page],
                       capture_output=True, text=True, timeout=60, env=env)
    problems = r.stderr.splitlines()
    if r.returncode != 0:
        problems.append("exit status %d" % r.returncode)
    report(problems, "groff -man -Tutf8 -ww %s" % page)


# --- docs/events.md: every example is an envelope ------------------------------------

# The envelope's members in the order the outbox writes them (docs/outbox.md),
# with their JSON type and, for strings, the pattern they match.
ENVELOPE = (
    ("id", str, r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ("type", str, r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+"),
    ("occurred_at", str, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"),
    ("tenant", str, r"[a-z0-9][a-z0-9._-]{0,62}"),
    ("sequence", int, None),
    ("origin", str, r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}"),
    ("data", dict, None),
)


def envelope_problems(block):
    """What is wrong with one ```json block as an envelope ([] if nothing)."""
    try:
        ev = json.loads(block)
    except ValueError as e:
        return ["does not parse: %s" % e]
    if not isinstance(ev, dict):
        return ["not a JSON object"]
    names = [name for name, _, _ in ENVELOPE]
    problems = []
    if list(ev) != names:
        problems.append("members %s, want %s" % (list(ev), names))
    for name, kind, pattern in ENVELOPE:
        v = ev.get(name)
        if not isinstance(v, kind) or isinstance(v, bool):
            problems.append("%s: %r is not a %s" % (name, v, kind.__name__))
        elif pattern is not None and not re.fullmatch(pattern, v):
            problems.append("%s: %r does not match %s" % (name, v, pattern))
    if isinstance(ev.get("sequence"), int) and ev["sequence"] < 1:
        problems.append("sequence %d is not 1 or more" % ev["sequence"])
    return problems


def test_events_doc_json_blocks_are_envelopes():
    """Every ```json block of docs/events.md parses and is a whole envelope:
    id, type, occurred_at, tenant, sequence, origin and data, in that order,
    each of its JSON type and pattern (what receivers are told to expect)."""
    with open(EVENTS_MD, encoding="utf-8") as f:
        text = f.read()
    problems = []
    blocks = list(re.finditer(r"^```json\n(.*?)^```", text, re.S | re.M))
    assert blocks, "no ```json block in %s" % EVENTS_MD
    for m in blocks:
        line = text.count("\n", 0, m.start()) + 1
        problems += ["line %d: %s" % (line, p) for p in envelope_problems(m.group(1))]
    report(problems, EVENTS_MD)


def test_envelope_check_finds_a_missing_member():
    """The check above fails on a block that lacks a member or is cut."""
    good = json.dumps({"id": "019cade3-3f7d-7847-ba09-c18b78b7d0ac",
                       "type": "mailbox.created",
                       "occurred_at": "2026-03-02T09:31:17.245Z", "tenant": "acme",
                       "sequence": 5, "origin": "mail1", "data": {}})
    assert envelope_problems(good) == []
    assert envelope_problems(good.replace('"origin": "mail1", ', ""))
    assert envelope_problems(good.replace('"sequence": 5', '"sequence": "5"'))
    assert envelope_problems(good[:-10])
