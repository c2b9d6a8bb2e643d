"""pytest fixtures for tenantmail's integration tests.

Run with Debian's pytest: cd <top> && pytest-3 -q tests/integration

Fixtures:
  stack    one tnharness.Stack (slapd with the example DIT + Redis with the
           seeded usage + tenantmail.conf) per test module, stopped at the
           end of the module even when tests fail.
  workdir  a fresh directory per test (tmp_path).

These tests need root and the real servers.  Missing prerequisites FAIL
the tests (never skip): CI runs as root with everything installed, and a
skipped integration suite looks green.
"""

import os
import shutil
import sys

import pytest

HARNESS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..",
                                        "harness"))
if HARNESS not in sys.path:
    sys.path.insert(0, HARNESS)

import tnharness  # noqa: E402


def _missing_prerequisites():
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    for prog in ("slapd", "slappasswd"):
        if not tnharness._which(prog):
            problems.append("%s missing (apt-get install slapd)" % prog)
    for prog in ("ldapadd", "ldapsearch", "ldapmodify", "ldapwhoami"):
        if not shutil.which(prog):
            problems.append("%s missing (apt-get install ldap-utils)" % prog)
    for prog in ("redis-server", "redis-cli"):
        if not tnharness._which(prog):
            problems.append("%s missing (apt-get install redis-server)" % prog)
    return problems


def require_prerequisites():
    problems = _missing_prerequisites()
    if problems:
        pytest.fail("integration test prerequisites: " + "; ".join(problems),
                    pytrace=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_prerequisites()
    s = tnharness.Stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def workdir(tmp_path):
    require_prerequisites()
    return tmp_path
