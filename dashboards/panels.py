"""The four mcpsift dashboards, panel by panel (the specs every other module reads).

Conventions of the SQL below:

* tables are named ``${database}.<table>`` (``database`` is a dashboard
  variable, default ``mcpsift``, so the same JSON serves any database name);
* ``events`` and ``alerts`` are ReplacingMergeTree tables read through
  ``FINAL``, so a redelivered event or alert counts once;
* every panel filters on the time range and, through ``$__conditionalAll``,
  on the ``tenant`` and ``server`` variables (no filter at all when "All" is
  selected); ``server`` holds server resource URIs, which alerts carry too;
* time series return ``t`` (a DateTime bucket of ``$__timeInterval``), then
  optional label columns (one series per value), then values, ordered by ``t``.
"""

from __future__ import annotations

from .spec import DashboardSpec, Link, PanelSpec, VariableSpec

__all__ = ["DASHBOARDS", "OVERVIEW", "IDENTITY", "TOOLS", "INVESTIGATION", "API_BASE_URL_DEFAULT"]

#: where ``mcpsift serve`` answers by default (settings ``host``/``port``)
API_BASE_URL_DEFAULT = "http://localhost:8765"

EVENTS = "${database}.events FINAL"
ALERTS = "${database}.alerts FINAL"
TENANT = "$__conditionalAll(tenant IN (${tenant:singlequote}), $tenant)"
SERVER = "$__conditionalAll(server_resource IN (${server:singlequote}), $server)"
SCOPE = f"$__timeFilter(time) AND {TENANT} AND {SERVER}"
ENTITY = (
    "$__conditionalAll(principal_subject = ${principal:singlequote}, $principal) "
    "AND $__conditionalAll(session_id = ${session:singlequote}, $session) "
    "AND $__conditionalAll(token_fingerprint = ${token:singlequote}, $token)"
)
SEVERITIES = "countIf(severity = 'critical') AS critical, countIf(severity = 'high') AS high, " \
             "countIf(severity = 'medium') AS medium, countIf(severity = 'low') AS low"
AUTH_FAILURE = "((type = 'auth.token' AND outcome_status = 'denied') OR type = 'auth.challenge')"
TOOL_RULES = (
    "'tool.definition_drift', 'tool.poisoning', 'tool.shadowing', 'tool.command_injection', "
    "'tool.path_traversal', 'tool.ssrf', 'tool.secret_exposure', 'tool.unusual_sequence', "
    "'tool.error_burst', 'flow.exfiltration'"
)

_INVESTIGATE = "/d/mcpsift-investigation?${__url_time_range}&${tenant:queryparam}"


def _sql(text: str) -> str:
    """One query, its lines stripped of the indentation they have here."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


def session_links(column: str = "session_id") -> tuple[Link, ...]:
    return (
        Link(column, "Session in the query API", "${api_base_url:raw}/v1/sessions/${__value.raw:percentencode}"),
        Link(column, "Investigate this session", _INVESTIGATE + "&var-session=${__value.raw:percentencode}", False),
    )


def principal_links(column: str = "principal_subject") -> tuple[Link, ...]:
    return (
        Link(column, "Principal timeline in the query API",
             "${api_base_url:raw}/v1/principals/${__value.raw:percentencode}/timeline"),
        Link(column, "Investigate this principal", _INVESTIGATE + "&var-principal=${__value.raw:percentencode}", False),
    )


def token_links(column: str = "token_fingerprint") -> tuple[Link, ...]:
    return (
        Link(column, "Token in the query API", "${api_base_url:raw}/v1/tokens/${__value.raw:percentencode}"),
        Link(column, "Investigate this token", _INVESTIGATE + "&var-token=${__value.raw:percentencode}", False),
    )


# ---------------------------------------------------------------------------
# Overview

OVERVIEW = DashboardSpec(
    uid="mcpsift-overview",
    slug="overview",
    title="mcpsift / Overview",
    description="Traffic, authentication verdicts, alerts, top principals and tools, and the pipeline's own health.",
    panels=(
        PanelSpec(
            key="events", title="Events", kind="stat", grid=(0, 0, 4, 4),
            description="Events stored in the time range (each event once).",
            sql=_sql(f"SELECT count() AS events FROM {EVENTS} WHERE {SCOPE}"),
            columns=("events",),
        ),
        PanelSpec(
            key="open_alerts", title="Open alerts", kind="stat", grid=(4, 0, 4, 4),
            description="Alerts raised in the time range. The store keeps no triage state yet, so every alert "
                        "counts as open until it ages out of the range.",
            sql=_sql(f"SELECT count() AS alerts FROM {ALERTS} WHERE {SCOPE}"),
            columns=("alerts",),
        ),
        PanelSpec(
            key="high_alerts", title="Critical + high alerts", kind="stat", grid=(8, 0, 4, 4),
            description="Alerts of severity critical or high raised in the time range.",
            sql=_sql(f"SELECT countIf(severity IN ('critical', 'high')) AS high FROM {ALERTS} WHERE {SCOPE}"),
            columns=("high",),
        ),
        PanelSpec(
            key="token_denials", title="Token denials", kind="stat", grid=(12, 0, 4, 4),
            description="auth.token events a server or gateway denied (any reason).",
            sql=_sql(f"SELECT count() AS denials FROM {EVENTS} WHERE {SCOPE} "
                     "AND type = 'auth.token' AND outcome_status = 'denied'"),
            columns=("denials",),
        ),
        PanelSpec(
            key="dead_letters", title="Dead letters", kind="stat", grid=(16, 0, 4, 4),
            description="Inputs rejected as invalid events in the time range (by arrival time). Dead letters have "
                        "no tenant: this panel ignores the tenant and server variables.",
            sql=_sql("SELECT count() AS dead_letters FROM ${database}.dead_letter WHERE $__timeFilter(received_at)"),
            columns=("dead_letters",),
        ),
        PanelSpec(
            key="siem_backlog", title="SIEM backlog", kind="stat", grid=(20, 0, 4, 4),
            description="Alert deliveries to SIEM outputs now waiting (pending) or given up (dead, re-drivable with "
                        "`mcpsift outputs redrive`). Current state: not filtered by time, tenant or server.",
            sql=_sql("SELECT countIf(state = 'pending') AS pending, countIf(state = 'dead') AS dead "
                     "FROM ${database}.deliveries FINAL"),
            columns=("pending", "dead"),
        ),
        PanelSpec(
            key="events_per_min", title="Events/min by type", kind="timeseries", grid=(0, 4, 12, 8),
            format="time_series", time_column="t", label_columns=("type",), unit="cpm", stacked=True,
            description="Event rate per event type, in events per minute (whatever the bucket size).",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t, type, count() / ($__interval_s / 60) AS events_per_min
                FROM {EVENTS}
                WHERE {SCOPE}
                GROUP BY t, type
                ORDER BY t, type
            """),
            columns=("t", "type", "events_per_min"),
        ),
        PanelSpec(
            key="auth_verdicts", title="Auth verdicts", kind="timeseries", grid=(12, 4, 12, 8),
            format="time_series", time_column="t", label_columns=("verdict",), stacked=True,
            description="auth.token verdicts per bucket: ok, or denied by reason (expired, wrong_audience, ...).",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t,
                       if(outcome_status = 'ok', 'ok',
                          concat('denied: ', if(outcome_reason = '', 'unspecified', outcome_reason))) AS verdict,
                       count() AS tokens
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'auth.token'
                GROUP BY t, verdict
                ORDER BY t, verdict
            """),
            columns=("t", "verdict", "tokens"),
        ),
        PanelSpec(
            key="alerts_by_rule", title="Alerts by rule and severity", kind="barchart", grid=(0, 12, 12, 9),
            label_columns=("rule_id",), stacked=True,
            description="Alerts raised in the time range per rule, stacked by severity.",
            sql=_sql(f"""
                SELECT rule_id, {SEVERITIES}
                FROM {ALERTS}
                WHERE {SCOPE}
                GROUP BY rule_id
                ORDER BY count() DESC, rule_id
            """),
            columns=("rule_id", "critical", "high", "medium", "low"),
        ),
        PanelSpec(
            key="latest_alerts", title="Latest alerts", kind="table", grid=(12, 12, 12, 9),
            description="The 100 most recent alerts; the principal, session and token cells link to the query API "
                        "and to the Investigation dashboard.",
            sql=_sql(f"""
                SELECT time, severity, rule_id, tenant, principal_subject, session_id, token_fingerprint, title
                FROM {ALERTS}
                WHERE {SCOPE}
                ORDER BY time DESC, alert_id
                LIMIT 100
            """),
            columns=("time", "severity", "rule_id", "tenant", "principal_subject", "session_id",
                     "token_fingerprint", "title"),
            links=principal_links() + session_links() + token_links(),
        ),
        PanelSpec(
            key="top_principals", title="Top principals", kind="table", grid=(0, 21, 8, 9),
            description="The ten principals with the most events, with their tool calls and failed (error or "
                        "denied) events.",
            sql=_sql(f"""
                SELECT principal_subject, count() AS events, countIf(type = 'mcp.tool_call') AS tool_calls,
                       countIf(outcome_status IN ('error', 'denied')) AS failures
                FROM {EVENTS}
                WHERE {SCOPE} AND principal_subject != ''
                GROUP BY principal_subject
                ORDER BY events DESC, principal_subject
                LIMIT 10
            """),
            columns=("principal_subject", "events", "tool_calls", "failures"),
            links=principal_links(),
        ),
        PanelSpec(
            key="top_tools", title="Top tools", kind="barchart", grid=(8, 21, 8, 9),
            label_columns=("tool",),
            description="The ten most called tools (server/tool), by calls in the time range.",
            sql=_sql(f"""
                SELECT concat(server_name, '/', tool_name) AS tool, count() AS calls
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'mcp.tool_call'
                GROUP BY tool
                ORDER BY calls DESC, tool
                LIMIT 10
            """),
            columns=("tool", "calls"),
        ),
        PanelSpec(
            key="alerts_by_severity", title="Alerts by severity", kind="piechart", grid=(16, 21, 8, 9),
            label_columns=("severity",),
            description="Share of the alerts in the time range per severity.",
            sql=_sql(f"""
                SELECT severity, count() AS alerts
                FROM {ALERTS}
                WHERE {SCOPE}
                GROUP BY severity
                ORDER BY indexOf(['critical', 'high', 'medium', 'low'], severity), severity
            """),
            columns=("severity", "alerts"),
        ),
        PanelSpec(
            key="ingest_rate", title="Ingest rate", kind="timeseries", grid=(0, 30, 8, 8),
            format="time_series", time_column="t", unit="cps",
            description="Events the pipeline stored per second, by arrival time (received_at). Counts every "
                        "stored row, so a redelivered event counts again: this is load, not traffic.",
            sql=_sql(f"""
                SELECT $__timeInterval(received_at) AS t, count() / $__interval_s AS events_per_s
                FROM ${{database}}.events
                WHERE $__timeFilter(received_at) AND {TENANT} AND {SERVER}
                GROUP BY t
                ORDER BY t
            """),
            columns=("t", "events_per_s"),
        ),
        PanelSpec(
            key="ingest_lag", title="Ingest lag", kind="timeseries", grid=(8, 30, 8, 8),
            format="time_series", time_column="t", unit="s",
            description="Seconds from an event's time at its source to its arrival in the store (p50, p95, max). "
                        "Includes the producer's clock skew and any buffering before ingest.",
            sql=_sql(f"""
                SELECT $__timeInterval(received_at) AS t,
                       quantile(0.5)(dateDiff('millisecond', time, received_at)) / 1000 AS p50,
                       quantile(0.95)(dateDiff('millisecond', time, received_at)) / 1000 AS p95,
                       max(dateDiff('millisecond', time, received_at)) / 1000 AS max
                FROM ${{database}}.events
                WHERE $__timeFilter(received_at) AND {TENANT} AND {SERVER}
                GROUP BY t
                ORDER BY t
            """),
            columns=("t", "p50", "p95", "max"),
        ),
        PanelSpec(
            key="dead_letters_by_source", title="Dead letters by source", kind="timeseries", grid=(16, 30, 8, 8),
            format="time_series", time_column="t", label_columns=("source",), stacked=True,
            description="Rejected inputs per bucket and ingest source (http, otlp, file...). See `GET "
                        "/v1/dead-letters` or the dead_letter table for the reasons.",
            sql=_sql("""
                SELECT $__timeInterval(received_at) AS t, source, count() AS dead_letters
                FROM ${database}.dead_letter
                WHERE $__timeFilter(received_at)
                GROUP BY t, source
                ORDER BY t, source
            """),
            columns=("t", "source", "dead_letters"),
        ),
        PanelSpec(
            key="siem_outbox", title="SIEM delivery outbox", kind="table", grid=(0, 38, 24, 6),
            column_units={"oldest_pending_s": "s"},
            description="Per SIEM output: deliveries pending, delivered and dead, and how long the oldest pending "
                        "one has waited. Current state of the outbox, not filtered by time.",
            sql=_sql("""
                SELECT output, countIf(state = 'pending') AS pending, countIf(state = 'delivered') AS delivered,
                       countIf(state = 'dead') AS dead,
                       if(pending > 0, dateDiff('second', minIf(enqueued_at, state = 'pending'), now64(3)), 0)
                           AS oldest_pending_s
                FROM ${database}.deliveries FINAL
                GROUP BY output
                ORDER BY output
            """),
            columns=("output", "pending", "delivered", "dead", "oldest_pending_s"),
        ),
    ),
)

# ---------------------------------------------------------------------------
# Identity & tokens

IDENTITY = DashboardSpec(
    uid="mcpsift-identity",
    slug="identity",
    title="mcpsift / Identity & tokens",
    description="Token presentations, tokens replayed across resources, weak or expired tokens accepted, "
                "OAuth client activity (CIMD, DCR) and authentication failure bursts.",
    panels=(
        PanelSpec(
            key="presentations", title="Token presentations", kind="stat", grid=(0, 0, 6, 4),
            description="auth.token events: a server or gateway verified a presented access token.",
            sql=_sql(f"SELECT count() AS presentations FROM {EVENTS} WHERE {SCOPE} AND type = 'auth.token'"),
            columns=("presentations",),
        ),
        PanelSpec(
            key="denied_ratio", title="Denied presentations", kind="stat", grid=(6, 0, 6, 4), unit="percentunit",
            decimals=1,
            description="Share of token presentations that were denied.",
            sql=_sql(f"SELECT countIf(outcome_status = 'denied') / greatest(count(), 1) AS denied "
                     f"FROM {EVENTS} WHERE {SCOPE} AND type = 'auth.token'"),
            columns=("denied",),
        ),
        PanelSpec(
            key="distinct_tokens", title="Distinct tokens", kind="stat", grid=(12, 0, 6, 4),
            description="Distinct token fingerprints presented.",
            sql=_sql(f"SELECT uniqExact(token_fingerprint) AS tokens FROM {EVENTS} "
                     f"WHERE {SCOPE} AND type = 'auth.token' AND token_fingerprint != ''"),
            columns=("tokens",),
        ),
        PanelSpec(
            key="active_clients", title="Active clients", kind="stat", grid=(18, 0, 6, 4),
            description="Distinct OAuth client ids seen on any event.",
            sql=_sql(f"SELECT uniqExact(client_id) AS clients FROM {EVENTS} WHERE {SCOPE} AND client_id != ''"),
            columns=("clients",),
        ),
        PanelSpec(
            key="presentations_by_server", title="Token presentations by server", kind="timeseries",
            grid=(0, 4, 12, 8), format="time_series", time_column="t", label_columns=("server_name",), stacked=True,
            description="auth.token events per bucket and MCP server.",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t, server_name, count() AS presentations
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'auth.token'
                GROUP BY t, server_name
                ORDER BY t, server_name
            """),
            columns=("t", "server_name", "presentations"),
        ),
        PanelSpec(
            key="client_activity", title="CIMD / DCR client activity", kind="timeseries", grid=(12, 4, 12, 8),
            format="time_series", time_column="t", label_columns=("activity",), stacked=True,
            description="Client ID Metadata Document fetches (auth.client_metadata) and dynamic client "
                        "registrations (auth.client_registered) per bucket.",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t,
                       if(type = 'auth.client_metadata', 'CIMD fetch', 'DCR registration') AS activity,
                       count() AS events
                FROM {EVENTS}
                WHERE {SCOPE} AND type IN ('auth.client_metadata', 'auth.client_registered')
                GROUP BY t, activity
                ORDER BY t, activity
            """),
            columns=("t", "activity", "events"),
        ),
        PanelSpec(
            key="multi_resource_tokens", title="Tokens seen at more than one resource", kind="table",
            grid=(0, 12, 24, 8),
            description="One token presented to two or more MCP server resources (replay across audiences, or a "
                        "token minted for one server accepted by another). Accepted = how many of its "
                        "presentations were accepted.",
            sql=_sql(f"""
                SELECT token_fingerprint, tenant, any(principal_subject) AS subject,
                       uniqExact(server_resource) AS resources,
                       arrayStringConcat(arraySort(groupUniqArray(server_resource)), ', ') AS seen_at,
                       countIf(outcome_status = 'ok') AS accepted, countIf(outcome_status = 'denied') AS denied,
                       min(time) AS first_seen, max(time) AS last_seen
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'auth.token' AND token_fingerprint != '' AND server_resource != ''
                GROUP BY token_fingerprint, tenant
                HAVING resources > 1
                ORDER BY resources DESC, last_seen DESC, token_fingerprint
                LIMIT 100
            """),
            columns=("token_fingerprint", "tenant", "subject", "resources", "seen_at", "accepted",
                     "denied", "first_seen", "last_seen"),
            links=token_links() + principal_links("subject"),
        ),
        PanelSpec(
            key="weak_tokens", title="Expired / weak token acceptances", kind="table", grid=(0, 20, 12, 9),
            description="Alerts auth.expired_token_accepted (accepted more than 60 s after expiry) and "
                        "auth.weak_token_accepted (alg none or absent, no expiry, or no audience).",
            sql=_sql(f"""
                SELECT time, rule_id, tenant, principal_subject, server_resource, token_fingerprint, title
                FROM {ALERTS}
                WHERE {SCOPE} AND rule_id IN ('auth.expired_token_accepted', 'auth.weak_token_accepted')
                ORDER BY time DESC, alert_id
                LIMIT 100
            """),
            columns=("time", "rule_id", "tenant", "principal_subject", "server_resource", "token_fingerprint",
                     "title"),
            links=token_links() + principal_links(),
        ),
        PanelSpec(
            key="new_clients", title="New clients", kind="table", grid=(12, 20, 12, 9),
            description="OAuth clients whose first event ever (per tenant) falls in the time range. CIMD clients "
                        "have an https client_id; the others were registered (DCR) or configured. Reads the "
                        "client_id column of the whole event log.",
            sql=_sql(f"""
                SELECT first_seen, tenant, client_id,
                       if(startsWith(client_id, 'https://'), 'CIMD', 'DCR / static') AS kind, events
                FROM (
                    SELECT tenant, client_id, min(time) AS first_seen, count() AS events
                    FROM {EVENTS}
                    WHERE client_id != '' AND {TENANT} AND {SERVER}
                    GROUP BY tenant, client_id
                )
                WHERE first_seen >= $__fromTime AND first_seen <= $__toTime
                ORDER BY first_seen DESC, client_id
                LIMIT 100
            """),
            columns=("first_seen", "tenant", "client_id", "kind", "events"),
        ),
        PanelSpec(
            key="failure_bursts", title="Auth failure bursts by client IP", kind="table", grid=(0, 29, 12, 9),
            description="Client IPs with the most authentication failures (denied tokens and 401/403 challenges), "
                        "with their busiest minute. auth.failure_burst fires at 20 in 60 s.",
            sql=_sql(f"""
                SELECT client_ip, sum(n) AS failures, max(n) AS peak_per_min,
                       argMax(minute, n) AS peak_minute, uniqExact(tenant) AS tenants
                FROM (
                    SELECT client_ip, tenant, toStartOfMinute(time) AS minute, count() AS n
                    FROM {EVENTS}
                    WHERE {SCOPE} AND client_ip != '' AND {AUTH_FAILURE}
                    GROUP BY client_ip, tenant, minute
                )
                GROUP BY client_ip
                ORDER BY peak_per_min DESC, failures DESC, client_ip
                LIMIT 20
            """),
            columns=("client_ip", "failures", "peak_per_min", "peak_minute", "tenants"),
        ),
        PanelSpec(
            key="auth_failures", title="Auth failures by reason", kind="timeseries", grid=(12, 29, 12, 9),
            format="time_series", time_column="t", label_columns=("reason",), stacked=True,
            description="Denied token presentations by reason, and 401/403 challenges, per bucket.",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t,
                       if(type = 'auth.challenge', 'challenge',
                          if(outcome_reason = '', 'unspecified', outcome_reason)) AS reason,
                       count() AS failures
                FROM {EVENTS}
                WHERE {SCOPE} AND {AUTH_FAILURE}
                GROUP BY t, reason
                ORDER BY t, reason
            """),
            columns=("t", "reason", "failures"),
        ),
    ),
)

# ---------------------------------------------------------------------------
# Tools

TOOLS = DashboardSpec(
    uid="mcpsift-tools",
    slug="tools",
    title="mcpsift / Tools",
    description="Tool calls by server and tool, error and denied ratios, tool definition drift, poisoning and "
                "shadowing findings, toxic-flow sessions.",
    panels=(
        PanelSpec(
            key="tool_calls", title="Tool calls", kind="stat", grid=(0, 0, 6, 4),
            description="mcp.tool_call events in the time range.",
            sql=_sql(f"SELECT count() AS calls FROM {EVENTS} WHERE {SCOPE} AND type = 'mcp.tool_call'"),
            columns=("calls",),
        ),
        PanelSpec(
            key="error_ratio", title="Error ratio", kind="stat", grid=(6, 0, 6, 4), unit="percentunit", decimals=1,
            description="Share of tool calls that failed (outcome error).",
            sql=_sql(f"SELECT countIf(outcome_status = 'error') / greatest(count(), 1) AS error_ratio "
                     f"FROM {EVENTS} WHERE {SCOPE} AND type = 'mcp.tool_call'"),
            columns=("error_ratio",),
        ),
        PanelSpec(
            key="denied_ratio", title="Denied ratio", kind="stat", grid=(12, 0, 6, 4), unit="percentunit", decimals=1,
            description="Share of tool calls refused (outcome denied: scope, policy).",
            sql=_sql(f"SELECT countIf(outcome_status = 'denied') / greatest(count(), 1) AS denied_ratio "
                     f"FROM {EVENTS} WHERE {SCOPE} AND type = 'mcp.tool_call'"),
            columns=("denied_ratio",),
        ),
        PanelSpec(
            key="tool_findings", title="Tool findings", kind="stat", grid=(18, 0, 6, 4),
            description="Alerts of the tool and flow rules (drift, poisoning, shadowing, argument attacks, "
                        "sequences, error bursts, exfiltration flows).",
            sql=_sql(f"SELECT count() AS findings FROM {ALERTS} WHERE {SCOPE} AND rule_id IN ({TOOL_RULES})"),
            columns=("findings",),
        ),
        PanelSpec(
            key="calls_by_server", title="Tool calls by server", kind="timeseries", grid=(0, 4, 12, 8),
            format="time_series", time_column="t", label_columns=("server_name",), stacked=True,
            description="mcp.tool_call events per bucket and MCP server.",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t, server_name, count() AS calls
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'mcp.tool_call'
                GROUP BY t, server_name
                ORDER BY t, server_name
            """),
            columns=("t", "server_name", "calls"),
        ),
        PanelSpec(
            key="failure_ratios", title="Error / denied ratio", kind="timeseries", grid=(12, 4, 12, 8),
            format="time_series", time_column="t", unit="percentunit",
            description="Per bucket, the share of tool calls that failed (error) and that were refused (denied).",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t,
                       countIf(outcome_status = 'error') / count() AS error_ratio,
                       countIf(outcome_status = 'denied') / count() AS denied_ratio
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'mcp.tool_call'
                GROUP BY t
                ORDER BY t
            """),
            columns=("t", "error_ratio", "denied_ratio"),
        ),
        PanelSpec(
            key="calls_by_tool", title="Calls by server / tool", kind="table", grid=(0, 12, 14, 9),
            column_units={"error_ratio": "percentunit", "denied_ratio": "percentunit", "p95_ms": "ms"},
            description="Per server and tool: calls, failures, their ratios and the 95th percentile duration "
                        "(outcome.duration_ms, where the producer sends it).",
            sql=_sql(f"""
                SELECT server_name, tool_name, count() AS calls,
                       countIf(outcome_status = 'error') AS errors, countIf(outcome_status = 'denied') AS denied,
                       errors / calls AS error_ratio, denied / calls AS denied_ratio,
                       quantileIf(0.95)(JSONExtractFloat(payload, 'outcome', 'duration_ms'),
                                        JSONHas(payload, 'outcome', 'duration_ms')) AS p95_ms
                FROM {EVENTS}
                WHERE {SCOPE} AND type = 'mcp.tool_call'
                GROUP BY server_name, tool_name
                ORDER BY calls DESC, server_name, tool_name
                LIMIT 50
            """),
            columns=("server_name", "tool_name", "calls", "errors", "denied", "error_ratio", "denied_ratio",
                     "p95_ms"),
        ),
        PanelSpec(
            key="findings_by_rule", title="Tool findings by rule", kind="barchart", grid=(14, 12, 10, 9),
            label_columns=("rule_id",),
            description="Alerts of the tool and flow rules in the time range, per rule.",
            sql=_sql(f"""
                SELECT rule_id, count() AS alerts
                FROM {ALERTS}
                WHERE {SCOPE} AND rule_id IN ({TOOL_RULES})
                GROUP BY rule_id
                ORDER BY alerts DESC, rule_id
            """),
            columns=("rule_id", "alerts"),
        ),
        PanelSpec(
            key="drift_over_time", title="Tool definition changes (drift)", kind="timeseries", grid=(0, 21, 12, 8),
            format="time_series", time_column="t",
            description="tool.definition_drift alerts per bucket: a server's tool came back with a definition "
                        "hash different from the first one seen (a rug pull).",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t, count() AS changes
                FROM {ALERTS}
                WHERE {SCOPE} AND rule_id = 'tool.definition_drift'
                GROUP BY t
                ORDER BY t
            """),
            columns=("t", "changes"),
        ),
        PanelSpec(
            key="drifted_tools", title="Tools with more than one definition", kind="table", grid=(12, 21, 12, 8),
            description="From the tool lists themselves (mcp.tools_list): tools that were listed with more than "
                        "one definition_hash in the time range.",
            sql=_sql(f"""
                SELECT tenant, server_name, JSONExtractString(tool, 'name') AS tool_name,
                       uniqExact(JSONExtractString(tool, 'definition_hash')) AS definitions,
                       min(time) AS first_seen, max(time) AS last_seen
                FROM {EVENTS}
                ARRAY JOIN JSONExtractArrayRaw(payload, 'tools') AS tool
                WHERE {SCOPE} AND type = 'mcp.tools_list'
                GROUP BY tenant, server_name, tool_name
                HAVING definitions > 1
                ORDER BY definitions DESC, last_seen DESC, tenant, server_name, tool_name
                LIMIT 50
            """),
            columns=("tenant", "server_name", "tool_name", "definitions", "first_seen", "last_seen"),
        ),
        PanelSpec(
            key="poisoning_shadowing", title="Poisoning / shadowing findings", kind="table", grid=(0, 29, 12, 9),
            description="tool.poisoning (hidden instructions in a tool description) and tool.shadowing "
                        "(confusable tool names across servers of a tenant) alerts.",
            sql=_sql(f"""
                SELECT time, rule_id, severity, tenant, server_resource, title
                FROM {ALERTS}
                WHERE {SCOPE} AND rule_id IN ('tool.poisoning', 'tool.shadowing')
                ORDER BY time DESC, alert_id
                LIMIT 100
            """),
            columns=("time", "rule_id", "severity", "tenant", "server_resource", "title"),
        ),
        PanelSpec(
            key="toxic_flows", title="Toxic-flow sessions", kind="table", grid=(12, 29, 12, 9),
            description="flow.exfiltration alerts: within one session a tool read private data and another tool "
                        "then sent data out. The session cell opens the session in the query API or the "
                        "Investigation dashboard.",
            sql=_sql(f"""
                SELECT time, tenant, session_id, principal_subject, title
                FROM {ALERTS}
                WHERE {SCOPE} AND rule_id = 'flow.exfiltration'
                ORDER BY time DESC, alert_id
                LIMIT 100
            """),
            columns=("time", "tenant", "session_id", "principal_subject", "title"),
            links=session_links() + principal_links(),
        ),
    ),
)

# ---------------------------------------------------------------------------
# Investigation

INVESTIGATION = DashboardSpec(
    uid="mcpsift-investigation",
    slug="investigation",
    title="mcpsift / Investigation",
    description="Everything about one principal, session or token: set any of the three variables (they "
                "combine), or click an entity in another dashboard.",
    variables=(
        VariableSpec("principal", "Principal", "textbox",
                     description="principal.subject to investigate (empty: any)"),
        VariableSpec("session", "Session", "textbox", description="session id (Mcp-Session-Id) to investigate (empty: any)"),
        VariableSpec("token", "Token fingerprint", "textbox",
                     description="token fingerprint (sha256:...) to investigate (empty: any)"),
    ),
    panels=(
        PanelSpec(
            key="entity_summary", title="Selected entity", kind="stat", grid=(0, 0, 16, 4),
            description="Events of the selected principal / session / token, and the sessions, servers and "
                        "client IPs they span.",
            sql=_sql(f"""
                SELECT count() AS events, uniqExact(session_id) AS sessions,
                       uniqExact(server_resource) AS servers, uniqExact(client_ip) AS client_ips,
                       countIf(outcome_status IN ('error', 'denied')) AS failures
                FROM {EVENTS}
                WHERE {SCOPE} AND {ENTITY}
            """),
            columns=("events", "sessions", "servers", "client_ips", "failures"),
        ),
        PanelSpec(
            key="entity_alerts", title="Alerts", kind="stat", grid=(16, 0, 8, 4),
            description="Alerts naming the selected principal / session / token.",
            sql=_sql(f"SELECT count() AS alerts, countIf(severity IN ('critical', 'high')) AS high "
                     f"FROM {ALERTS} WHERE {SCOPE} AND {ENTITY}"),
            columns=("alerts", "high"),
        ),
        PanelSpec(
            key="entity_activity", title="Activity by event type", kind="timeseries", grid=(0, 4, 12, 8),
            format="time_series", time_column="t", label_columns=("type",), stacked=True,
            description="Events of the selected entity per bucket and type.",
            sql=_sql(f"""
                SELECT $__timeInterval(time) AS t, type, count() AS events
                FROM {EVENTS}
                WHERE {SCOPE} AND {ENTITY}
                GROUP BY t, type
                ORDER BY t, type
            """),
            columns=("t", "type", "events"),
        ),
        PanelSpec(
            key="alerted_entities", title="Principals with alerts", kind="table", grid=(12, 4, 12, 8),
            description="Principals named by alerts in the range (and matching the selection): click one to "
                        "investigate it.",
            sql=_sql(f"""
                SELECT principal_subject, count() AS alerts, uniqExact(rule_id) AS rules,
                       arrayStringConcat(arraySort(groupUniqArray(rule_id)), ', ') AS rule_ids, max(time) AS last_alert
                FROM {ALERTS}
                WHERE {SCOPE} AND {ENTITY} AND principal_subject != ''
                GROUP BY principal_subject
                ORDER BY alerts DESC, last_alert DESC, principal_subject
                LIMIT 50
            """),
            columns=("principal_subject", "alerts", "rules", "rule_ids", "last_alert"),
            links=principal_links(),
        ),
        PanelSpec(
            key="entity_alert_list", title="Alerts of the selection", kind="table", grid=(0, 12, 24, 8),
            description="Alerts naming the selected principal / session / token, newest first.",
            sql=_sql(f"""
                SELECT time, severity, rule_id, principal_subject, session_id, token_fingerprint, title
                FROM {ALERTS}
                WHERE {SCOPE} AND {ENTITY}
                ORDER BY time DESC, alert_id
                LIMIT 200
            """),
            columns=("time", "severity", "rule_id", "principal_subject", "session_id", "token_fingerprint", "title"),
            links=principal_links() + session_links() + token_links(),
        ),
        PanelSpec(
            key="timeline", title="Timeline", kind="table", grid=(0, 20, 24, 14),
            description="The selected entity's events in time order (first 1,000). Principal, session and token "
                        "cells link to the query API (/v1/principals/{subject}/timeline, /v1/sessions/{id}, "
                        "/v1/tokens/{fingerprint}) and back into this dashboard.",
            sql=_sql(f"""
                SELECT time, type, tenant, server_name, principal_subject, session_id, token_fingerprint, client_ip,
                       outcome_status, outcome_reason, tool_name, event_id
                FROM {EVENTS}
                WHERE {SCOPE} AND {ENTITY}
                ORDER BY time, event_id
                LIMIT 1000
            """),
            columns=("time", "type", "tenant", "server_name", "principal_subject", "session_id", "token_fingerprint",
                     "client_ip", "outcome_status", "outcome_reason", "tool_name", "event_id"),
            links=principal_links() + session_links() + token_links(),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (OVERVIEW, IDENTITY, TOOLS, INVESTIGATION)
