"""Fixtures are factories kept in tests/fixtures/ and registered once here."""

pytest_plugins = [
    "tests.fixtures.clickhouse",
    "tests.fixtures.serve",
]
