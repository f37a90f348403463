"""The syslog output against real loopback receivers (UDP, TCP, TLS): exact
RFC 5424 bytes, structured-data and CEF escaping checked with parsers written
here independently of the output, octet-counted framing, truncation,
certificate checks, outages and reconnects."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import pytest

import mcpsift
from mcpsift.alerts import Alert
from mcpsift.streams.sinks.outputs import (
    Outcome,
    OutputConfigError,
    alert_document,
    build_outputs,
    clean_alert,
    clean_text,
    parse_output_configs,
)
from tests.fixtures.receivers import wait_until
from tests.helpers.outputs import hostile_alert, make_alert, send_through

PID = str(os.getpid())
BOM = b"\xef\xbb\xbf"


# -- independent parsers -----------------------------------------------------

_HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
)
_SD_NAME = r'[!#-<>-\\^-~]{1,32}'  # PRINTUSASCII except = ] " (and space)
_SD_ID = re.compile(r"\[(" + _SD_NAME + ")")
_SD_PARAM = re.compile(" (" + _SD_NAME + ')="')


@dataclass
class Syslog:
    pri: int
    time: str
    host: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, list[tuple[str, str]]]
    msg: bytes


def parse_rfc5424(raw: bytes) -> Syslog:
    """A strict RFC 5424 parser (section 6): fails on anything out of the grammar."""
    text = raw.decode("utf-8")  # the whole message must be valid UTF-8
    header = _HEADER.match(text)
    assert header, f"bad HEADER: {text[:120]!r}"
    pos = header.end()
    sd: dict[str, list[tuple[str, str]]] = {}
    if text[pos] == "-":
        pos += 1
    while pos < len(text) and text[pos] == "[":
        sd_id = _SD_ID.match(text, pos)
        assert sd_id, f"bad SD-ID at {pos}"
        pos = sd_id.end()
        params: list[tuple[str, str]] = []
        while text[pos] == " ":
            name = _SD_PARAM.match(text, pos)
            assert name, f"bad PARAM-NAME at {pos}: {text[pos:pos + 40]!r}"
            pos = name.end()
            value: list[str] = []
            while text[pos] != '"':
                assert text[pos] != "]", "unescaped ] in PARAM-VALUE"
                if text[pos] == "\\" and text[pos + 1] in '"\\]':
                    pos += 1
                value.append(text[pos])
                pos += 1
            pos += 1
            params.append((name.group(1), "".join(value)))
        assert text[pos] == "]", f"SD-ELEMENT not closed at {pos}"
        pos += 1
        sd[sd_id.group(1)] = params
    assert pos == len(text) or text[pos] == " "
    msg = raw[len(text[: pos + 1].encode("utf-8")) :]
    return Syslog(int(header["pri"]), header["time"], header["host"], header["app"], header["procid"],
                  header["msgid"], sd, msg)


_CEF_KEY = re.compile(r"[A-Za-z0-9_.\[\]]+=")
_CEF_HEADER_ESCAPES = {"\\": "\\", "|": "|"}
_CEF_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Header fields (split on unescaped ``|``, unescaped) and extension pairs
    (a value runs to the next unescaped `` key=``); fails on a bad escape."""
    header: list[str] = []
    field: list[str] = []
    pos = 0
    while len(header) < 7:
        char = text[pos]
        if char == "\\":
            field.append(_CEF_HEADER_ESCAPES[text[pos + 1]])
            pos += 2
            continue
        if char == "|":
            header.append("".join(field))
            field = []
        else:
            field.append(char)
        pos += 1
    pairs: list[tuple[str, str]] = []
    while pos < len(text):
        key = _CEF_KEY.match(text, pos)
        assert key, f"no extension key at {pos}: {text[pos:pos + 30]!r}"
        pos = key.end()
        value: list[str] = []
        while pos < len(text) and not (text[pos] == " " and _CEF_KEY.match(text, pos + 1)):
            assert text[pos] != "=", f"unescaped = in value of {key.group()}"
            if text[pos] == "\\":
                value.append(_CEF_VALUE_ESCAPES[text[pos + 1]])
                pos += 2
            else:
                value.append(text[pos])
                pos += 1
        pairs.append((key.group()[:-1], "".join(value)))
        pos += 1
    return header, pairs


def one_line(text: str) -> str:
    """The documented replacement where a format cannot escape: line-break
    controls -> space, other C0/C1 controls and DEL -> U+FFFD."""
    return "".join(
        " " if c in "\t\n\v\f\r" else "\ufffd" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c
        for c in clean_text(text)
    )


def cef_value(text: str) -> str:
    """The documented replacement in CEF extension values (LF and CR are escaped, so they survive)."""
    return "".join(c if c in "\n\r" else one_line(c) for c in clean_text(text))


# -- helpers -----------------------------------------------------------------


def syslog_config(receiver: Any, **options: Any) -> dict[str, Any]:
    return {"type": "syslog", "host": "127.0.0.1", "port": receiver.port, "transport": receiver.kind,
            "hostname": "mcpsift-test", **options}


def session(config: dict[str, Any], steps: Sequence[Union[Sequence[Alert], Callable[[], None]]]) -> list[list[Outcome]]:
    """One output kept open across ``steps``: a list of alerts is a batch to
    send, a callable runs in between (stop or start the receiver)."""
    (output,) = build_outputs(parse_output_configs([config]))

    async def run() -> list[list[Outcome]]:
        await output.open()
        try:
            results = []
            for step in steps:
                if callable(step):
                    step()
                else:
                    results.append(await output.send([clean_alert(a) for a in step]))
            return results
        finally:
            await output.close()

    return asyncio.run(run())


def alerts(n: int, prefix: str = "s") -> list[Alert]:
    return [make_alert(session_id=f"{prefix}{i}") for i in range(n)]


def received(receiver: Any, n: int) -> list[bytes]:
    assert wait_until(lambda: len(receiver.messages) >= n, timeout=5), receiver.messages
    return receiver.messages


def json_msg(message: bytes) -> dict[str, Any]:
    msg = parse_rfc5424(message).msg
    assert msg.startswith(BOM)
    return json.loads(msg[len(BOM):])


# -- config ------------------------------------------------------------------


def test_defaults_depend_on_the_transport() -> None:
    udp, tcp, tls = parse_output_configs([
        {"type": "syslog", "host": "siem.example", "name": "a"},
        {"type": "syslog", "host": "siem.example", "name": "b", "transport": "tcp", "facility": "authpriv"},
        {"type": "syslog", "host": "siem.example", "name": "c", "transport": "tls", "facility": 3},
    ])
    assert (udp.port, udp.max_message_bytes, udp.facility, udp.format, udp.app_name, udp.sd_id) == (
        514, 2048, 16, "json", "mcpsift", "mcpsift@32473")
    assert (tcp.port, tcp.max_message_bytes, tcp.facility) == (514, 8192, 10)
    assert (tls.port, tls.max_message_bytes, tls.facility) == (6514, 8192, 3)
    (output,) = build_outputs([tcp])
    assert output.describe() == "syslog tcp://siem.example:514 (json, facility authpriv)"


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, r"host: Field required"),
        ({"host": "udp://siem:514"}, r"host: .*not a host name or IP address"),
        ({"host": "siem", "facility": "local9"}, r"facility: .*unknown facility 'local9'.*local7"),
        ({"host": "siem", "facility": 24}, r"facility: .*less than or equal to 23"),
        ({"host": "siem", "transport": "relp"}, r"transport: .*'udp', 'tcp' or 'tls'"),
        ({"host": "siem", "format": "leef"}, r"format: .*'json' or 'cef'"),
        ({"host": "siem", "hostname": "my host"}, r"hostname: .*1 to 255 printable US-ASCII"),
        ({"host": "siem", "app_name": "a" * 49}, r"app_name: .*1 to 48 printable US-ASCII"),
        ({"host": "siem", "sd_id": "mcpsift"}, r"sd_id: .*name@<private enterprise number>"),
        ({"host": "siem", "sd_id": "mc=p@1"}, r"sd_id: .*name@<private enterprise number>"),
        ({"host": "siem", "max_message_bytes": 100_000}, r"max_message_bytes is at most 65507 over udp"),
        ({"host": "siem", "max_message_bytes": 100}, r"max_message_bytes: .*greater than or equal to 480"),
        ({"host": "siem", "tls": {"verify": False}}, r"'tls' options need transport: tls"),
        ({"host": "siem", "protocol": "tcp"}, r"unknown key 'protocol' for type syslog"),
    ],
)
def test_bad_config_is_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OutputConfigError, match=message):
        parse_output_configs([{"type": "syslog", **options}])


# -- RFC 5424 over UDP ---------------------------------------------------------


def test_udp_json_message_exact_bytes(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    alert = make_alert()
    assert send_through(syslog_config(receiver), [alert]) == [Outcome.ok()]
    (message,) = received(receiver, 1)
    expected = (
        f"<131>1 2026-11-20T08:00:01.250Z mcpsift-test mcpsift {PID} token.audience_mismatch "
        f'[mcpsift@32473 alert_id="{alert.alert_id}" rule_id="token.audience_mismatch" severity="high" '
        'score="0.9" tenant="acme" principal_subject="alice@example.com" '
        'client_id="https://client.example/cimd.json" session_id="sess-1" '
        f'token_fingerprint="hmac-sha256:{"ab" * 32}" server_resource="https://mcp.example.com/mcp" '
        'attack="T1550.001" detector="auth_tokens.AudienceMismatch"] '
    ).encode() + BOM + json.dumps(alert_document(alert), separators=(",", ":"), ensure_ascii=False).encode()
    assert message == expected
    assert json_msg(message)["time"] == "2026-11-20T08:00:01.250000Z"


def test_pri_is_facility_times_8_plus_severity(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    cases = [("local0", "critical", 130), ("local0", "low", 133), ("authpriv", "high", 83),
             ("authpriv", "medium", 84), (4, "critical", 34), ("kern", "low", 5), ("local7", "high", 187)]
    for n, (facility, severity, pri) in enumerate(cases, 1):
        send_through(syslog_config(receiver, facility=facility), [make_alert(severity=severity)])
        assert parse_rfc5424(received(receiver, n)[-1]).pri == pri, (facility, severity)


def test_header_fields_are_sanitised_and_time_is_utc(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    alert = make_alert(
        rule_id="règle ünïcode with spaces and a very long tail",
        time=dt.datetime(2026, 11, 20, 10, 0, 1, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        principal_subject=None, client_id=None, token_fingerprint=None, attack=[], detector=None,
    )
    config = syslog_config(receiver, app_name="mcp-sift", sd_id="acme@1.2.3")
    del config["hostname"]
    send_through(config, [alert])
    parsed = parse_rfc5424(received(receiver, 1)[0])
    assert (parsed.time, parsed.app, parsed.procid) == ("2026-11-20T08:00:01.999Z", "mcp-sift", PID)
    assert parsed.host == (re.sub(r"[^!-~]", "_", socket.gethostname())[:255] or "-")
    assert parsed.msgid == "r_gle__n_code_with_spaces_and_a_"
    # unset fields are left out, not sent empty
    assert [name for name, _ in parsed.sd["acme@1.2.3"]] == [
        "alert_id", "rule_id", "severity", "score", "tenant", "session_id", "server_resource"]
    assert dict(parsed.sd["acme@1.2.3"])["rule_id"] == alert.rule_id


def test_hostile_alert_structured_data_and_json(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    alert = hostile_alert()
    assert send_through(syslog_config(receiver, max_message_bytes=65_507), [alert]) == [Outcome.ok()]
    (message,) = received(receiver, 1)
    assert not re.search(rb"[\x00-\x1f\x7f]", message), "a raw control byte in the message"
    assert b'tenant="t|=\\\\ "' in message  # backslash escaped, newline replaced, | and = kept
    parsed = parse_rfc5424(message)
    cleaned = clean_alert(alert)
    sd = dict(parsed.sd["mcpsift@32473"])
    for name in ("tenant", "principal_subject", "client_id", "session_id", "server_resource"):
        assert sd[name] == one_line(getattr(alert, name)), name
    assert sd["alert_id"] == alert.alert_id and sd["score"] == "0.9"
    # JSON keeps everything (its own escaping), the 20k description included
    assert json_msg(message) == json.loads(json.dumps(alert_document(cleaned)))
    assert len(json_msg(message)["description"]) == 20_000


# -- CEF -----------------------------------------------------------------------


def test_cef_hostile_alert_round_trips(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    alert = hostile_alert(severity="critical")
    assert send_through(syslog_config(receiver, format="cef", max_message_bytes=65_507), [alert]) == [Outcome.ok()]
    (message,) = received(receiver, 1)
    assert not re.search(rb"[\x00-\x1f\x7f]", message), "a raw control byte in the message"
    parsed = parse_rfc5424(message)
    assert parsed.pri == 16 * 8 + 2
    assert parsed.msg.startswith(b"CEF:0|mcpsift|mcpsift|"), "CEF goes without a BOM"
    header, pairs = parse_cef(parsed.msg.decode("utf-8"))
    assert header == ["CEF:0", "mcpsift", "mcpsift", mcpsift.__version__, "tool.poisoning",
                      one_line(alert.title), "10"]
    rt = (alert.time - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)
    assert pairs == [
        ("rt", str(rt)),
        ("externalId", alert.alert_id),
        ("cat", "tool.poisoning"),
        ("suser", cef_value(alert.principal_subject)),
        ("request", cef_value(alert.server_resource)),
        ("cs1Label", "tenant"), ("cs1", cef_value(alert.tenant)),
        ("cs2Label", "session_id"), ("cs2", cef_value(alert.session_id)),
        ("cs3Label", "client_id"), ("cs3", cef_value(alert.client_id)),
        ("cs4Label", "token_fingerprint"), ("cs4", alert.token_fingerprint),
        ("cs5Label", "attack"), ("cs5", "T1550.001"),
        ("cs6Label", "event_ids"), ("cs6", "01JEVENT0000000000000000001"),
        ("cfp1Label", "score"), ("cfp1", "0.9"),
        ("flexString1Label", "detector"), ("flexString1", "auth_tokens.AudienceMismatch"),
        ("msg", cef_value(alert.description)),
    ]
    assert rt == 1795161601250  # date -u -d 2026-11-20T08:00:01Z +%s
    # the escapes on the wire, spelled out
    assert b"cs1=t|\\=\\\\\\n cs2Label=" in parsed.msg
    assert b"|Poisoned a\\|b\\\\c=d e f]g" in parsed.msg


def test_cef_severity(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    for n, (severity, cef) in enumerate([("low", "3"), ("medium", "5"), ("high", "8"), ("critical", "10")], 1):
        send_through(syslog_config(receiver, format="cef"), [make_alert(severity=severity)])
        header, _ = parse_cef(parse_rfc5424(received(receiver, n)[-1]).msg.decode())
        assert header[6] == cef, severity


# -- length --------------------------------------------------------------------


def test_cef_truncation_keeps_escapes_and_characters_whole(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    description = "\\=\n€😀|" * 400  # escapes and 3-/4-byte characters at every cut point
    alert = make_alert(description=description)
    for n, limit in enumerate(range(1500, 1540), 1):  # without the description the message is ~1200 bytes
        send_through(syslog_config(receiver, format="cef", max_message_bytes=limit), [alert])
        message = received(receiver, n)[-1]
        assert limit - 8 < len(message) <= limit
        _, pairs = parse_cef(parse_rfc5424(message).msg.decode("utf-8"))
        msg = dict(pairs)["msg"]
        assert msg.endswith("…") and description.startswith(msg[:-1]) and len(msg) > 50, limit


@pytest.mark.parametrize("format_", ["json", "cef"])
def test_hostile_alert_truncated_to_the_udp_default(syslog_receiver: Any, format_: str) -> None:
    receiver = syslog_receiver("udp")
    alert = clean_alert(hostile_alert())
    send_through(syslog_config(receiver, format=format_), [alert])
    (message,) = received(receiver, 1)
    assert 2048 - 8 < len(message) <= 2048
    parsed = parse_rfc5424(message)
    if format_ == "json":
        doc = json_msg(message)
        description = doc.pop("description")
        expected = alert_document(alert)
        assert description.endswith("…") and expected.pop("description").startswith(description[:-1])
        assert doc == expected  # every other field whole
    else:
        description = dict(parse_cef(parsed.msg.decode())[1])["msg"]
        assert description.endswith("…") and cef_value(alert.description).startswith(description[:-1])


def test_long_title_is_cut_after_the_description_and_unfittable_alert_fails(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("tcp")
    long_title = make_alert(title="T" * 3000, description="D" * 3000, session_id="long")
    too_big = make_alert(rule_id="r" * 600, session_id="big")
    plain = make_alert(session_id="plain")
    outcomes = send_through(syslog_config(receiver, max_message_bytes=1600), [long_title, too_big, plain])
    assert [o.kind for o in outcomes] == ["delivered", "failed", "delivered"]
    assert outcomes[1].error == f"alert {too_big.alert_id} does not fit in max_message_bytes=1600: raise it"
    first, second = received(receiver, 2)
    doc = json_msg(first)
    assert doc["description"] == "…" and doc["title"].startswith("TTT") and doc["title"].endswith("T…")
    assert 1600 - 8 < len(first) <= 1600 and json_msg(second)["session_id"] == "plain"


# -- TCP and TLS -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_octet_counted_frames_on_one_connection(syslog_receiver: Any, tls_certs: Any, kind: str) -> None:
    receiver = syslog_receiver(kind, tls=tls_certs if kind == "tls" else None)
    options = {"tls": {"ca_file": str(tls_certs.ca_file)}} if kind == "tls" else {}
    first, second = alerts(3, "a"), alerts(2, "b") + [hostile_alert()]
    results = session(syslog_config(receiver, **options), [first, second])
    assert results == [[Outcome.ok()] * 3, [Outcome.ok()] * 3]
    messages = received(receiver, 6)
    assert len(receiver.streams) == 1, "one persistent connection"
    stream = bytes(receiver.streams[0])
    assert stream == b"".join(b"%d %s" % (len(m), m) for m in messages)
    assert stream.startswith(b"%d <131>1 2026-11-20T08:00:01.250Z mcpsift-test " % len(messages[0]))
    assert [json_msg(m)["session_id"] for m in messages] == ["a0", "a1", "a2", "b0", "b1", "s\n1|=\\"]
    assert len(messages[5]) <= 8192 and json_msg(messages[5])["description"].endswith("…")


def test_tls_without_the_ca_is_a_retry_with_the_certificate_error(syslog_receiver: Any, tls_certs: Any) -> None:
    receiver = syslog_receiver("tls", tls=tls_certs)
    outcomes = send_through(syslog_config(receiver), alerts(2))
    assert [o.kind for o in outcomes] == ["retry", "retry"]
    assert "SSLCertVerificationError" in outcomes[0].error and "certificate verify failed" in outcomes[0].error
    assert receiver.messages == []


def test_tls_checks_the_host_name(syslog_receiver: Any, tls_certs: Any) -> None:
    receiver = syslog_receiver("tls", tls=tls_certs)
    config = syslog_config(receiver, tls={"ca_file": str(tls_certs.ca_file), "server_name": "siem.example"})
    (outcome,) = send_through(config, alerts(1))
    assert outcome.kind == "retry" and "Hostname mismatch" in outcome.error


def test_receiver_down_is_a_retry(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("tcp")
    receiver.stop()
    outcomes = send_through(syslog_config(receiver), alerts(3))
    assert [o.kind for o in outcomes] == ["retry"] * 3
    assert outcomes[0].error.startswith("ConnectionRefusedError")


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_reconnects_after_the_receiver_restarts(syslog_receiver: Any, tls_certs: Any, kind: str) -> None:
    receiver = syslog_receiver(kind, tls=tls_certs if kind == "tls" else None)
    options = {"tls": {"ca_file": str(tls_certs.ca_file)}} if kind == "tls" else {}
    batches = [alerts(2, "one"), alerts(2, "down"), alerts(2, "back"), alerts(2, "again")]

    def restart(received_so_far: int, start: bool) -> Callable[[], None]:
        # once the receiver has the frames, its handler holds the connection that stop() drops
        return lambda: (received(receiver, received_so_far), receiver.stop(), start and receiver.start())

    results = session(syslog_config(receiver, **options), [
        batches[0],
        restart(2, start=False),  # drops the connection, nothing listens
        batches[1],
        receiver.start,  # same port
        batches[2],
        restart(4, start=True),  # a quick restart between two batches
        batches[3],
    ])
    assert [[o.kind for o in r] for r in results] == [["delivered"] * 2, ["retry"] * 2, ["delivered"] * 2,
                                                       ["delivered"] * 2]
    assert results[1][0].error.startswith("ConnectionRefusedError")
    messages = received(receiver, 6)
    assert [json_msg(m)["session_id"] for m in messages] == ["one0", "one1", "back0", "back1", "again0", "again1"]
    assert len(receiver.streams) == 3


def test_udp_sends_one_datagram_per_alert(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("udp")
    assert send_through(syslog_config(receiver), alerts(3)) == [Outcome.ok()] * 3
    datagrams = received(receiver, 3)
    assert sorted(json_msg(d)["session_id"] for d in datagrams) == ["s0", "s1", "s2"]  # threads may reorder


def test_concurrent_batches_take_turns_on_the_connection(syslog_receiver: Any) -> None:
    receiver = syslog_receiver("tcp")
    (output,) = build_outputs(parse_output_configs([syslog_config(receiver)]))

    async def run() -> list[list[Outcome]]:
        await output.open()
        try:
            return await asyncio.gather(*(output.send(alerts(50, f"b{b}-")) for b in range(4)))
        finally:
            await output.close()

    assert asyncio.run(run()) == [[Outcome.ok()] * 50] * 4
    messages = received(receiver, 200)  # split_octet_counted: whole frames, none interleaved
    assert len(receiver.streams) == 1
    expected = sorted(f"b{b}-{i}" for b in range(4) for i in range(50))
    assert sorted(json_msg(m)["session_id"] for m in messages) == expected
