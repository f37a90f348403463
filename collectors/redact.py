"""Redaction and truncation shared by every hook (docs/events.md "Privacy rules").

A hook calls :meth:`Redactor.redact_arguments` on a tool call's arguments,
:meth:`Redactor.scrub_text` on a result excerpt or an error text, and
:func:`secret_kind` to keep a credential-looking string out of ``token`` and
``principal``, on the MCP request path, once per event. So the common case
(short strings under ordinary keys, repeated values) costs a cached key
lookup and a cached "known clean" lookup per string; a new string costs about
a microsecond (one literal-led regex per credential family), and a long one is
scanned only as far as it will be kept (its first ``max_string_bytes`` plus
1 KiB), so the work per event is bounded whatever a client sends.

What is replaced by ``"[REDACTED:<kind>]"``:

* the value under a key that names a credential (``password``, ``api_key``,
  ``clientSecret``, ``Authorization``, ``cookie``, ``db_password`` ...), whole,
  whatever its type, unless the key is qualified as not being one
  (``max_tokens``, ``page_token``, ``public_key``, ``password_hint``);
* inside any string, each credential-shaped substring: JWTs, ``Bearer``/``Basic``
  credentials, AWS / GitHub / GitLab / Slack / Stripe / OpenAI-style / Google
  keys, private key blocks, the password of a URL's user info, and the value
  of a ``password=...`` / ``"api_key": "..."`` assignment in free text.

``allow_keys`` exempts key names from the key rule (values are still scanned);
``deny_keys`` adds key names (a list, or a mapping key -> kind). Strings are
then truncated to ``max_string_bytes`` UTF-8 bytes (default 4 KiB) and a whole
argument object to ``max_event_bytes`` (default 32 KiB), the spec's defaults.
Redaction runs before truncation, so half a secret is never left behind.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional, Union

import orjson

__all__ = [
    "Redactor",
    "secret_kind",
    "truncate_utf8",
    "redacted",
    "scrub",
    "DEFAULT_MAX_STRING_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
]

DEFAULT_MAX_STRING_BYTES = 4096
DEFAULT_MAX_EVENT_BYTES = 32768

_TRUNCATED = "…[TRUNCATED:{} bytes]"


def redacted(kind: str) -> str:
    """The replacement text for a credential of ``kind``."""
    return f"[REDACTED:{kind}]"


# --------------------------------------------------------------------------
# Keys

#: the last word(s) of a key name that make its value a credential -> kind
_KEY_WORDS: dict[str, str] = {
    "password": "password",
    "passwd": "password",
    "pwd": "password",
    "passphrase": "password",
    "passcode": "password",
    "secret": "secret",
    "token": "token",
    "jwt": "token",
    "bearer": "token",
    "apikey": "api_key",
    "authorization": "authorization",
    "auth": "authorization",
    "cookie": "cookie",
    "cookies": "cookie",
    "credential": "credential",
    "credentials": "credential",
    "creds": "credential",
    "otp": "password",
    "totp": "password",
}
#: two-word endings ("api key", "private key" ...) -> kind
_KEY_PAIRS: dict[tuple[str, str], str] = {
    ("api", "key"): "api_key",
    ("access", "key"): "api_key",
    ("secret", "key"): "secret",
    ("private", "key"): "private_key",
    ("signing", "key"): "private_key",
    ("encryption", "key"): "private_key",
    ("ssh", "key"): "private_key",
    ("master", "key"): "secret",
    ("set", "cookie"): "cookie",
    ("client", "secret"): "secret",
    ("api", "secret"): "secret",
}
#: a word in the key that makes it not a credential (pagination, limits, public material, hints)
_NOT_SECRET_WORDS = frozenset(
    {
        "page", "next", "prev", "previous", "continuation", "pagination", "cursor", "sync", "resume",
        "idempotency", "max", "min", "num", "count", "limit", "limits", "public", "publishable", "csrf",
        "xsrf", "type", "name", "length", "len", "expiry", "expires", "expiration", "ttl", "hint", "reset",
        "policy", "format", "field", "label", "usage", "budget", "estimate", "estimated", "total", "path",
        "file", "url", "uri", "endpoint", "header", "kind", "strength", "required", "enabled",
    }
)
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_KEY_CACHE_MAX = 4096
_CLEAN_CACHE_MAX = 8192
_CLEAN_MAX_LEN = 256
_SCAN_MARGIN = 1024
_UNSEEN = object()


def _normalise(key: str) -> str:
    return "_".join(w for w in _WORD_SPLIT.split(key) if w).lower()


def _key_rule_kind(key: str) -> Optional[str]:
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if not words or len(words) > 8:
        return None
    last = words[-1]
    kind = None
    if len(words) >= 2:
        kind = _KEY_PAIRS.get((words[-2], last))
    if kind is None:
        kind = _KEY_WORDS.get(last)
    if kind is None:
        return None
    if any(w in _NOT_SECRET_WORDS for w in words[:-1]):
        return None
    return kind


# --------------------------------------------------------------------------
# Values
#
# Each family is one regex that starts with a literal (so the regex engine
# skips to candidate positions instead of trying every alternative at every
# character: one alternation of all families costs ~0.3 us per character, this
# costs about 0.1 us per family on a short string and stays linear on 4 KiB).
# A family's `check` validates what a regex cannot express cheaply (the
# character before the literal) and returns the span to replace.

_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _whole(m: re.Match[str]) -> Optional[tuple[int, int]]:
    return m.span()


def _whole_if_free(chars: frozenset[str]) -> Any:
    def check(m: re.Match[str]) -> Optional[tuple[int, int]]:
        start = m.start()
        if start and m.string[start - 1] in chars:
            return None
        return m.span()

    return check


def _value(m: re.Match[str]) -> Optional[tuple[int, int]]:
    return m.span("v")


def _prefixed(first: str) -> Any:
    """A match of ``k_live_...`` / ``k-...`` counts when preceded by one of
    ``first`` that itself starts a word (``sk_live_``, ``rk-``)."""

    def check(m: re.Match[str]) -> Optional[tuple[int, int]]:
        start, text = m.start(), m.string
        if start == 0 or text[start - 1] not in first:
            return None
        if start >= 2 and text[start - 2] in _ALNUM:
            return None
        return start - 1, m.end()

    return check


_FAMILIES: tuple[tuple[str, "re.Pattern[str]", Any], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
            re.DOTALL,
        ),
        _whole,
    ),
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), _whole_if_free(_ID)),
    ("aws_access_key", re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![A-Z0-9])"), _whole_if_free(frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))),
    ("github_token", re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{30,255}|ithub_pat_[A-Za-z0-9_]{22,255})"), _whole_if_free(_ID)),
    ("gitlab_token", re.compile(r"glpat-[A-Za-z0-9_-]{20,}"), _whole_if_free(_ID)),
    ("slack_token", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), _whole_if_free(_ALNUM)),
    ("stripe_key", re.compile(r"k_(?:live|test)_[A-Za-z0-9]{16,}"), _prefixed("rs")),
    ("api_key", re.compile(r"k-(?:proj-|ant-(?:api\d\d-)?|live-|test-)?[A-Za-z0-9_-]{20,}"), _prefixed("rs")),
    ("google_api_key", re.compile(r"AIza[0-9A-Za-z_-]{35}"), _whole_if_free(_ALNUM)),
    # the password of a URL's user info: scheme://user:PASSWORD@host
    ("password", re.compile(r"://[^\s:/?#@]{0,128}:(?P<v>[^\s/?#@]{1,256})@"), _value),
    # an Authorization header value; a credential has a digit or a symbol ("Bearer authentication" is prose)

    ("basic_auth", re.compile(r"Basic\s+(?P<v>(?=[A-Za-z]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"), _value),
)

#: words that end a key in a ``key = value`` assignment found in free text
_ASSIGN_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_VALUE_STOP = frozenset(" \t\r\n\"'`,;&<>)}]")
_PLACEHOLDER_RE = re.compile(
    r"(?i)^(?:\$\{?[a-z_][a-z0-9_]*\}?|\$\(|\{\{|%\(|%[a-z_]+%|env:|process\.env|os\.environ|<[^>]*>?$|\*+$|x+$|\.\.\.)"
    r"|your[_-]|example|changeme|placeholder|redacted|dummy"
)


def _plain_value(value: str) -> bool:
    """True for the value of an assignment that is not a credential: a
    placeholder, a reference, or a plain word (``password: required``)."""
    if len(value) < 6 or _PLACEHOLDER_RE.search(value):
        return True
    return value.isalpha() and (len(value) < 12 or value.islower() or value.isupper())


_ASSIGN_RES = tuple(
    re.compile(word + r"[a-z0-9_-]{0,40}[\"']?[ ]{0,3}(?:=|:(?!//))[ \"']{0,4}") for word in _ASSIGN_WORDS
)


def _assignments(text: str, low: str) -> list[tuple[int, int, str]]:
    """Spans of the values of ``password=...`` / ``"api_key": "..."`` in free text."""
    spans: list[tuple[int, int, str]] = []
    n = len(text)
    for regex in _ASSIGN_RES:
        if regex.search(low) is None:
            continue
        for m in regex.finditer(low):
            begin = m.start()
            while begin > 0 and low[begin - 1] in _KEY_CHARS:
                begin -= 1
            if begin and low[begin - 1] == ".":  # obj.token = ..., code, not a credential
                continue
            key_end = m.start() + len(m.group(0).rstrip(" \"'=:"))
            kind = _key_kind_cached(text[begin:key_end])
            if kind is None:
                continue
            i = j = m.end()
            while j < n and j - i < 256 and text[j] not in _VALUE_STOP:
                j += 1
            if j > i and not _plain_value(text[i:j]) and not text.startswith("[REDACTED:", i):
                spans.append((i, j, kind))
    return spans


_RULE_CACHE: dict[str, Optional[str]] = {}


def _key_kind_cached(key: str) -> Optional[str]:
    try:
        return _RULE_CACHE[key]
    except KeyError:
        pass
    kind = _key_rule_kind(key)
    if len(_RULE_CACHE) >= _KEY_CACHE_MAX:
        _RULE_CACHE.clear()
    _RULE_CACHE[key] = kind
    return kind


# matched on the lower-cased text (a literal start keeps the scan fast; "Bearer", "bearer", "BEARER")
_BEARER_RE = re.compile(r"bearer\s+(?P<v>(?=[a-z]*[0-9._~+/=-])[a-z0-9._~+/=-]{8,})")


def _lower(text: str) -> str:
    """``text.lower()`` with the same length, so spans found in it apply to ``text``."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _spans(text: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for kind, regex, check in _FAMILIES:
        if regex.search(text) is None:  # the common case, cheaper than an empty finditer
            continue
        for m in regex.finditer(text):
            span = check(m)
            if span is not None:
                spans.append((span[0], span[1], kind))
    low = _lower(text)
    if "bearer" in low:
        for m in _BEARER_RE.finditer(low):
            if m.start() == 0 or low[m.start() - 1] not in _KEY_CHARS:
                spans.append((m.start("v"), m.end("v"), "bearer"))
    if "=" in text or ":" in text:
        spans.extend(_assignments(text, low))
    return spans


def _apply(text: str, spans: list[tuple[int, int, str]]) -> str:
    spans.sort()
    out = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:  # overlaps one already replaced (a JWT inside "token=...")
            continue
        out.append(text[pos:start])
        out.append(redacted(kind))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def secret_kind(text: str) -> Optional[str]:
    """The kind of a credential-shaped substring of ``text``, or None.

    Hooks call it on every string they put in ``token`` or ``principal`` (a
    ``jti`` or ``sub`` a client chose can be anything), and drop one that is
    not None: the pipeline would reject the whole event otherwise.
    """
    if len(text) < 8:
        return None
    spans = _spans(text)
    return min(spans)[2] if spans else None


def scrub(text: str) -> str:
    """``text`` with every credential-shaped substring replaced (no truncation)."""
    if len(text) < 8:
        return text
    spans = _spans(text)
    return _apply(text, spans) if spans else text


def truncate_utf8(text: str, max_bytes: int, original_bytes: Optional[int] = None) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes (on a character
    boundary), ending in ``…[TRUNCATED:<original bytes> bytes]`` when cut."""
    if len(text) * 4 <= max_bytes and original_bytes is None:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes and (original_bytes is None or original_bytes <= max_bytes):
        return text
    marker = _TRUNCATED.format(original_bytes if original_bytes is not None else len(raw))
    keep = max(0, max_bytes - len(marker.encode("utf-8")))
    return raw[:keep].decode("utf-8", "ignore") + marker


# --------------------------------------------------------------------------


class Redactor:
    """Redacts and truncates what a hook puts in an event (see the module doc).

    One instance per hook configuration; thread-safe (its only state is a
    bounded cache of key decisions, where a lost update is harmless).
    """

    def __init__(
        self,
        *,
        allow_keys: Iterable[str] = (),
        deny_keys: Union[Iterable[str], Mapping[str, str]] = (),
        max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_depth: int = 32,
    ) -> None:
        if isinstance(allow_keys, str) or isinstance(deny_keys, str):
            raise TypeError("allow_keys and deny_keys take a list of key names, not one string")
        if max_string_bytes < 64:
            raise ValueError(f"max_string_bytes must be at least 64, got {max_string_bytes}")
        if max_event_bytes < max_string_bytes:
            raise ValueError(
                f"max_event_bytes ({max_event_bytes}) must be at least max_string_bytes ({max_string_bytes})"
            )
        self.max_string_bytes = max_string_bytes
        self.max_event_bytes = max_event_bytes
        self.max_depth = max_depth
        self._allow = frozenset(_normalise(k) for k in allow_keys)
        if isinstance(deny_keys, Mapping):
            self._deny = {_normalise(k): str(v) for k, v in deny_keys.items()}
        else:
            self._deny = {_normalise(k): "secret" for k in deny_keys}
        self._key_cache: dict[str, Optional[str]] = {}
        self._clean: dict[str, None] = {}

    # -- keys ------------------------------------------------------------------
    def key_kind(self, key: str) -> Optional[str]:
        """The credential kind a key name stands for, or None for an ordinary key."""
        try:
            return self._key_cache[key]
        except KeyError:
            pass
        norm = _normalise(key)
        if norm in self._deny:
            kind: Optional[str] = self._deny[norm]
        elif norm in self._allow:
            kind = None
        else:
            kind = _key_rule_kind(key)
        if len(self._key_cache) >= _KEY_CACHE_MAX:
            self._key_cache.clear()
        self._key_cache[key] = kind
        return kind

    # -- strings -----------------------------------------------------------------
    def scrub_text(self, text: str, max_bytes: Optional[int] = None) -> str:
        """``text`` with credential-shaped substrings replaced, then truncated."""
        return self._scrub_and_cut(text, self.max_string_bytes if max_bytes is None else max_bytes)

    def _scrub_and_cut(self, text: str, limit: int) -> str:
        if len(text) <= limit // 4:
            return self._scrub_cached(text)
        # Only what can be kept is scanned (plus a margin, so a credential
        # across the cut is still recognised and replaced, never half kept):
        # the work per string is bounded whatever a client sends.
        original = len(text.encode("utf-8", "surrogatepass")) if len(text) > limit // 4 else None
        if original is not None and original <= limit:
            return truncate_utf8(self._scrub_cached(text), limit)
        return truncate_utf8(scrub(text[: limit + _SCAN_MARGIN]), limit, original)

    def _scrub_cached(self, text: str) -> str:
        # argument values repeat (folders, queries, URLs): a short string found
        # clean once is not scanned again
        if len(text) < 8:
            return text
        if len(text) <= _CLEAN_MAX_LEN:
            if text in self._clean:
                return text
            out = scrub(text)
            if out is text:
                if len(self._clean) >= _CLEAN_CACHE_MAX:
                    self._clean.clear()
                self._clean[text] = None
            return out
        return scrub(text)

    # -- structures --------------------------------------------------------------
    def redact(self, value: Any, max_bytes: Optional[int] = None) -> Any:
        """A copy of a JSON-like ``value`` with credentials replaced and strings truncated."""
        return self._walk(value, self.max_string_bytes if max_bytes is None else max_bytes, 0)

    def _walk(self, value: Any, limit: int, depth: int) -> Any:
        if isinstance(value, str):
            return self._scrub_and_cut(value, limit)
        if isinstance(value, dict):
            if depth >= self.max_depth:
                return "[TRUNCATED:depth]"
            out = {}
            for key, item in value.items():
                key_text = key if isinstance(key, str) else str(key)
                kind = self.key_kind(key_text)
                if kind is not None and item is not None and item != "" and not isinstance(item, bool):
                    out[key_text] = redacted(kind)
                else:
                    out[key_text] = self._walk(item, limit, depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            if depth >= self.max_depth:
                return "[TRUNCATED:depth]"
            return [self._walk(item, limit, depth + 1) for item in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        # not JSON (a tool called in-process with an object): its text, scrubbed
        return self._walk(str(value), limit, depth)

    def _top_level(self, arguments: Mapping[str, Any], limit: int) -> dict[str, Any]:
        # the common shape inline (a flat object of short strings and numbers):
        # no call per member unless it needs one
        key_cache = self._key_cache
        clean = self._clean
        quick = limit // 4
        out: dict[str, Any] = {}
        for key, value in arguments.items():
            kind = key_cache.get(key, _UNSEEN) if key.__class__ is str else _UNSEEN
            if kind is _UNSEEN:
                key = key if isinstance(key, str) else str(key)
                kind = self.key_kind(key)
            if kind is not None:
                if value is not None and value != "" and value is not True and value is not False:
                    out[key] = redacted(kind)
                    continue
            cls = value.__class__
            if cls is str:
                if len(value) < 8 or (len(value) <= quick and value in clean):
                    out[key] = value
                    continue
            elif cls is int or cls is bool or cls is float or value is None:
                out[key] = value
                continue
            out[key] = self._walk(value, limit, 1)
        return out

    def redact_arguments(
        self,
        arguments: Optional[Mapping[str, Any]],
        budget: Optional[int] = None,
        source_size: Optional[int] = None,
    ) -> dict[str, Any]:
        """Tool-call arguments for ``tool.arguments``: redacted, each string cut
        to ``max_string_bytes``, the whole cut to ``budget`` bytes of JSON
        (default ``max_event_bytes`` minus room for the rest of the event).

        Over budget, strings are cut shorter and shorter; when even that does
        not fit, each top-level value becomes ``"[TRUNCATED]"`` (the argument
        names stay, detectors read them), and as a last resort the object is
        ``{"_truncated": "<n> bytes"}``.

        ``source_size`` (the length of the arguments' JSON, when the caller
        has it from hashing) lets a small object skip the size check.
        """
        if not arguments:
            return {}
        if budget is None:
            budget = self.max_event_bytes - 4096
        limit = self.max_string_bytes
        out = self._top_level(arguments, limit)
        if source_size is not None and source_size * 2 + 1024 <= budget:
            return out  # markers add far less than that
        size = _json_size(out)
        while size > budget and limit > 64:
            limit = max(64, limit // 4)
            out = self._walk(arguments, limit, 0)
            size = _json_size(out)
        if size <= budget:
            return out
        names = {str(k): "[TRUNCATED]" for k in arguments}
        if _json_size(names) <= budget:
            return names
        return {"_truncated": f"{size} bytes"}


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        return len(str(value).encode("utf-8", "replace"))
