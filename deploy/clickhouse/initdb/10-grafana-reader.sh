#!/bin/bash
# Run by the clickhouse-server image on its first start (empty data volume), after it has
# made CLICKHOUSE_USER and CLICKHOUSE_DB: a read-only user for Grafana, SELECT on
# mcpsift's database only, so a dashboard (or anyone with Grafana's datasource) can
# never alter the audit log. Values come from docker-compose.yml (see deploy/env.example).
set -eo pipefail

: "${GRAFANA_CLICKHOUSE_USER:?}" "${GRAFANA_CLICKHOUSE_PASSWORD:?}" "${CLICKHOUSE_DB:?}"

# single quotes and backslashes escaped for a SQL string literal
sql_string() { printf "'%s'" "$(printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g")"; }
sql_name() { printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"; }

# the SQL (with the password) goes through stdin, never on a command line; the client
# logs in as CLICKHOUSE_USER with CLICKHOUSE_PASSWORD from the environment
printf '%s\n' \
  "CREATE USER OR REPLACE $(sql_name "$GRAFANA_CLICKHOUSE_USER") IDENTIFIED WITH sha256_password BY $(sql_string "$GRAFANA_CLICKHOUSE_PASSWORD");" \
  "GRANT SELECT ON $(sql_name "$CLICKHOUSE_DB").* TO $(sql_name "$GRAFANA_CLICKHOUSE_USER");" \
  | clickhouse client --host 127.0.0.1 --multiquery
