"""Tool-definition content detections (spec/detections.md, "Tools").

* ``tool.poisoning`` (:class:`ToolPoisoning`): a tool's description, a string
  inside its ``input_schema`` (parameter descriptions at any depth, titles,
  defaults, examples) or its annotations' title carries hidden-instruction
  markers: instruction tags (``<IMPORTANT>``, ``<SYSTEM>``, chat-template
  tokens), phrasing that tells the model to hide things from the user or to act
  before / instead of the user's request, references to credential and
  agent-config files, invisible Unicode (tag characters, zero-width characters,
  bidi controls), or a long base64 / hex blob. A file reference is not a
  finding in a tool whose name is about that file (``ssh_exec`` naming
  ``~/.ssh``, ``env_editor`` naming ``.env``). Scan results are cached by the
  definition's content (not by the producer's hash, which nobody verifies).
  One alert per (server, tool, definition hash).
* ``tool.shadowing`` (:class:`ToolShadowing`): within one tenant, two servers
  expose tools whose names are equal or confusable (NFKC, case folded,
  separators ``_ - . space`` and invisible characters removed, UTS #39
  homoglyph skeleton, edit distance 1 on names of six or more characters), or
  one server's tool description (or parameter description) names another
  server's tool. A name counts as "named" when it is distinctive: an
  identifier-like name (separator or camelCase) of six or more characters
  written as a word, or a non-generic name of four or more quoted in
  backticks or quotes; generic words (search, list, fetch ...) never. The
  state, keyed by tenant, holds each server's tool names with their normalised
  forms and the identifiers its descriptions mention. One alert per pair of
  (server, tool), in either order of listing.

The homoglyph skeleton follows UTS #39 (``skeleton(X) = NFD(map(NFD(X)))``)
with the mapping built once, lazily, from the ``confusable_homoglyphs``
package's copy of ``confusables.txt``. That package only offers "is this
confusable" queries over an undirected source↔prototype graph; every connected
component of it is a star around the prototype, so the prototype is the hub
(or, in a two-node component, the multi-character sequence, else the ASCII
character, else the lower code point).

The small helpers used by both this module and ``tool_arguments``
(:func:`name_words`, :func:`safe_excerpt`, :func:`shannon_entropy`) live here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
import unicodedata
from collections import Counter
from typing import Any, Optional

from pydantic import Field

from mcpsift.alerts import Alert

from .base import NO_ALERTS, Detector, Params

__all__ = [
    "DETECTORS",
    "ToolPoisoning",
    "ToolShadowing",
    "PoisoningParams",
    "ShadowingParams",
    "name_words",
    "name_keys",
    "skeleton",
    "safe_excerpt",
    "shannon_entropy",
    "poisoning_findings",
]


# ---------------------------------------------------------------------------
# shared helpers

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")


def name_words(name: str) -> list[str]:
    """Lower-cased words of an identifier: ``fetchURL`` → fetch, url; ``get_pull_request`` → get, pull, request."""
    return [w.lower() for w in _WORD_RE.findall(name)]


def shannon_entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character (0 for an empty string)."""
    n = len(s)
    if n == 0:
        return 0.0
    return -sum(k / n * math.log2(k / n) for k in Counter(s).values())


def _escape(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F or ch in _INVISIBLE_SET or not ch.isprintable() or 0xE0000 <= o <= 0xE0FFF:
            out.append(f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}")
        else:
            out.append(ch)
    return "".join(out)


def safe_excerpt(s: str, start: int, end: int, width: int = 48, max_match: int = 80) -> str:
    """A short double-quoted excerpt of ``s`` around ``s[start:end]`` (``width`` characters of
    context): invisible and control characters escaped as ``\\uXXXX`` so an analyst sees them,
    a match longer than ``max_match`` shown by its head and tail."""
    if end - start > max_match:
        half = max_match // 2
        body = _escape(s[start : start + half]) + "…" + _escape(s[end - half : end])
        lo, hi = start, end
    else:
        lo = max(0, start - width // 2)
        hi = min(len(s), end + width // 2)
        body = _escape(s[lo:hi])
    return f"\"{'…' if lo > 0 else ''}{body}{'…' if hi < len(s) else ''}\""


# ---------------------------------------------------------------------------
# tool.poisoning

#: zero-width, bidi-control and other invisible characters (tag characters are a range, below)
_INVISIBLE = {
    "\u200b": "zero-width space",
    "\u200c": "zero-width non-joiner",
    "\u200d": "zero-width joiner",
    "\u2060": "word joiner",
    "\ufeff": "zero-width no-break space",
    "\u180e": "Mongolian vowel separator",
    "\u2061": "invisible function application",
    "\u2062": "invisible times",
    "\u2063": "invisible separator",
    "\u2064": "invisible plus",
    "\u202a": "bidi left-to-right embedding",
    "\u202b": "bidi right-to-left embedding",
    "\u202c": "bidi pop directional formatting",
    "\u202d": "bidi left-to-right override",
    "\u202e": "bidi right-to-left override",
    "\u2066": "bidi left-to-right isolate",
    "\u2067": "bidi right-to-left isolate",
    "\u2068": "bidi first strong isolate",
    "\u2069": "bidi pop directional isolate",
    "\u115f": "Hangul choseong filler",
    "\u1160": "Hangul jungseong filler",
    "\u3164": "Hangul filler",
    "\uffa0": "halfwidth Hangul filler",
    "\ufff9": "interlinear annotation anchor",
    "\ufffa": "interlinear annotation separator",
    "\ufffb": "interlinear annotation terminator",
}
_INVISIBLE_SET = frozenset(_INVISIBLE)
_INVISIBLE_RE = re.compile(
    "[" + "".join(_INVISIBLE) + "\U000e0000-\U000e007f]|[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}"
)

_TAG_RE = re.compile(
    r"(?i)<\s*/?\s*(important|system|instructions?|system[_ -]?prompt|sys|hidden|secret|admin|override|critical"
    r"|assistant[_ -]?instructions?|tool[_ -]?instructions?)\b[^<>\n]{0,60}>"
    r"|<\|\s*(?:im_start|im_end|system|endoftext|start_header_id|eot_id)\s*\|>"
    r"|\[/?INST\]|<<\s*/?SYS\s*>>|\{\{\s*SYSTEM\s*\}\}|\[/?SYSTEM\]|\[/?IMPORTANT\]"
)

#: phrasing that hides from the user or takes precedence over the user's request:
#: (what it tells the model to do, words one of which the text must contain, pattern on lower-cased text)
_PHRASES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("hide from the user", ("not", "n't", "never", "dont", "without"),
     r"\b(?:do\s+not|don'?t|dont|never|must\s+not|should\s+not|without)\s+(?:ever\s+)?"
     r"(?:tell(?:ing)?|inform(?:ing)?|notify(?:ing)?|alert(?:ing)?|mention(?:ing)?|reveal(?:ing)?|show(?:ing)?"
     r"|disclos(?:e|ing)|let(?:ting)?|ask(?:ing)?|explain(?:ing)?|report(?:ing)?)\b[^.\n]{0,40}?"
     r"\b(?:the\s+)?(?:user|human|operator|them|anyone|customer)s?\b"),
    ("hide from the user", ("mention",), r"\b(?:do\s+not|don'?t|dont|never)\s+mention\b"),
    ("hide from the user", ("hide", "conceal", "keep"),
     r"\b(?:hide|conceal|keep)\b[^.\n]{0,30}?\bfrom\s+(?:the\s+)?(?:user|human|operator)s?\b"),
    ("hide from the user", ("user",),
     r"\b(?:the\s+)?user\s+(?:must|should|will|need)\s*(?:not|never|n't)\s+(?:know|see|notice|find\s+out|be\s+(?:told|informed|aware))"),
    ("hide from the user", ("silently", "secretly", "covertly", "quietly"),
     r"\b(?:silently|secretly|covertly|quietly)\s+(?:send|upload|forward|copy|include|attach|read|exfiltrat|post|pass)"),
    ("act before the user's request", ("before",),
     r"\bbefore\s+(?:using|calling|invoking|running|executing|answering|responding|any)\b[^.\n]{0,40}?\b(?:other\s+)?tools?\b"),
    ("act before the user's request", ("this tool",),
     r"\b(?:always|must|first)\s+(?:call|use|run|invoke)\s+this\s+tool\s+(?:first|before)\b"),
    ("act instead of the user's request", ("instead",),
     r"\binstead\s+of\s+(?:using|calling|invoking|running|the\s+[\w-]+\s+tool|what\s+the\s+user|the\s+user'?s?)\b"
     r"|\buse\s+this\s+(?:tool\s+)?instead\b"),
    ("override instructions", ("ignore", "disregard", "forget", "override"),
     r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier|other|system|user'?s?)\s+"
     r"(?:instructions?|prompts?|rules|requests?|guidelines|messages?)"),
)
_PHRASE_CHECKS = tuple((label, hints, re.compile(pattern)) for label, hints, pattern in _PHRASES)

_HEX_RE = re.compile(r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_B64_RE = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}")

#: structural JSON Schema keys whose string values are not prose
_STRUCTURAL_KEYS = frozenset(
    {"type", "format", "$schema", "$id", "$ref", "$anchor", "pattern", "required", "contentEncoding",
     "contentMediaType", "additionalProperties", "propertyNames"}
)


class PoisoningParams(Params):
    #: credential / agent-config file references (matched as path-like tokens, case-insensitively)
    sensitive_files: tuple[str, ...] = (
        "~/.ssh", ".ssh/", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".env", "mcp.json", "mcp_config.json",
        "claude_desktop_config.json", ".cursor/", "credentials.json", ".aws/credentials", ".git-credentials",
        "/credentials", ".netrc", ".npmrc", ".pypirc", ".pgpass", ".kube/config", ".docker/config.json",
        "/etc/passwd", "/etc/shadow", ".bash_history", ".zsh_history", "wallet.dat", "keychain", ".gnupg",
        "secrets.yaml", "secrets.json",
    )
    #: a base64 run at least this long is a blob (mixed case and digits, entropy below)
    min_base64_len: int = Field(default=80, ge=16)
    #: a hex run at least this long is a blob (a SHA-256 example is 64)
    min_hex_len: int = Field(default=96, ge=16)
    #: entropy (bits/char) a base64 run needs to count as a blob
    min_blob_entropy: float = Field(default=4.0, ge=0)
    #: strings examined per tool definition, and nesting depth of input_schema
    max_strings: int = Field(default=512, ge=1)
    max_depth: int = Field(default=12, ge=1)
    #: findings listed in the description
    max_listed: int = Field(default=4, ge=1)


#: words of a file reference that say what it is about (so a tool *for* that file may name it)
_GENERIC_FILE_WORDS = frozenset({"json", "yaml", "yml", "config", "etc", "dat", "history", "bash", "zsh", "id"})
_SSH_WORDS = frozenset({"ssh", "rsa", "dsa", "ecdsa", "ed25519", "key", "keys", "keygen"})


def _continues_name(ch: str, dotted: bool) -> bool:
    """Whether ``ch`` next to a match makes it part of a longer name ("process.env", "my_id_rsa_x").

    Before a dot-file (``dotted``) and after any match a dot is a separator ("x/.env", ".env.local");
    before a plain name it is not ("config.mcp.json" is not "mcp.json")."""
    return ch.isalnum() or ch == "_" or ch == "-" or (not dotted and ch == ".")


class _PoisonCompiled:
    def __init__(self, p: PoisoningParams):
        self.p = p
        #: (entry, lower-cased needle, topic words, left boundary (None: none, True: dot-file, False: name),
        #:  check the right boundary)
        self.files: list[tuple[str, str, frozenset[str], bool, bool]] = []
        for entry in p.sensitive_files:
            e = entry.strip()
            if not e:
                continue
            topics = {w for w in name_words(e) if w not in _GENERIC_FILE_WORDS and len(w) >= 3}
            if topics & _SSH_WORDS:
                topics |= _SSH_WORDS
            # the left boundary: none after a leading "/" or "~" (itself a separator); a dot-file must not
            # continue a word ("process.env"); a plain name must not continue a name ("config.mcp.json")
            left = None if e[0] in "/~" else (e[0] == ".")
            self.files.append((e, e.lower(), frozenset(topics), left, e[-1].isalnum()))
        #: (name, definition hash) -> (description, input schema, annotations, findings)
        self.cache: dict[tuple[Any, ...], tuple[Any, Any, Any, tuple[tuple[str, str, str], ...]]] = {}


def poisoning_findings(
    name: str,
    description: Optional[str],
    input_schema: Optional[dict[str, Any]],
    annotations: Optional[dict[str, Any]] = None,
    params: Optional[PoisoningParams] = None,
    _compiled: Optional[_PoisonCompiled] = None,
) -> list[tuple[str, str, str]]:
    """Every poisoning finding in one tool definition: ``(field, kind, detail)``."""
    c = _compiled or (_default_poison() if params is None else _PoisonCompiled(params))
    fields: list[tuple[str, str]] = []
    if description:
        fields.append(("description", description))
    if input_schema:
        _schema_strings(input_schema, "input_schema", fields, 0, c.p)
    if annotations:
        for k, v in annotations.items():
            if isinstance(v, str) and v:
                fields.append((f"annotations.{k}", v))
    findings: list[tuple[str, str, str]] = []
    words = frozenset(name_words(name))
    if not name.isascii():
        for m in _INVISIBLE_RE.finditer(name):
            findings.append(("name", "invisible Unicode", f"invisible character {_describe_invisible(m.group(0))} in the tool name {safe_excerpt(name, m.start(), m.end())}"))
            break
    for field, text in fields[: c.p.max_strings]:
        findings.extend(_scan_text(c, field, text, words))
    return findings


_DEFAULT_POISON: list[_PoisonCompiled] = []


def _default_poison() -> _PoisonCompiled:
    if not _DEFAULT_POISON:
        _DEFAULT_POISON.append(_PoisonCompiled(PoisoningParams()))
    return _DEFAULT_POISON[0]


def _schema_strings(obj: Any, path: str, out: list[tuple[str, str]], depth: int, p: PoisoningParams) -> None:
    if depth > p.max_depth or len(out) >= p.max_strings:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _STRUCTURAL_KEYS and not isinstance(v, dict):
                continue
            sub = f"{path}.{k}"
            if isinstance(v, str):
                if v:
                    out.append((sub, v))
            elif isinstance(v, (dict, list)):
                _schema_strings(v, sub, out, depth + 1, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            sub = f"{path}[{i}]"
            if isinstance(v, str):
                if v:
                    out.append((sub, v))
            elif isinstance(v, (dict, list)):
                _schema_strings(v, sub, out, depth + 1, p)


def _scan_text(c: _PoisonCompiled, field: str, s: str, tool_words: frozenset[str]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    # invisible Unicode (only possible outside ASCII)
    if not s.isascii():
        found = _invisible(s)
        if found:
            out.append((field, "invisible Unicode", found))
    # instruction tags
    m = _TAG_RE.search(s)
    if m is not None:
        out.append((field, "instruction tag", f"instruction tag {safe_excerpt(m.group(0), 0, len(m.group(0)), 0)} {safe_excerpt(s, m.start(), m.end())}"))
    # hide / precedence phrasing (on the lower-cased text; every pattern is lower case)
    low = s.lower()
    for label, hints, rx in _PHRASE_CHECKS:
        if any(h in low for h in hints):
            m = rx.search(low)
            if m is not None:
                out.append((field, label, f"phrase telling the model to {label} {safe_excerpt(s, m.start(), m.end())}"))
                break
    # credential / config file references: str.find per entry, then the boundaries
    skipped: list[tuple[int, int]] = []  # spans naming a file the tool is for
    for entry, needle, topics, left, alnum_end in c.files:
        i = low.find(needle)
        while i >= 0:
            j = i + len(needle)
            if (
                (left is None or i == 0 or not _continues_name(low[i - 1], left))
                and (not alnum_end or j == len(low) or not _continues_name(low[j], True))
                and not any(a <= i and j <= b for a, b in skipped)
            ):
                if topics and topics & tool_words:
                    skipped.append((i, j))  # a tool *for* that file naming it (an ssh tool and ~/.ssh)
                else:
                    break
            i = low.find(needle, i + 1)
        if i < 0:
            continue
        out.append((field, "credential file reference", f"reference to credential/config file '{entry}' {safe_excerpt(s, i, i + len(needle))}"))
        break
    # long blobs
    blob = _blob(c.p, s)
    if blob:
        out.append((field, "encoded blob", blob))
    return out


def _describe_invisible(chars: str) -> str:
    ch = chars[0]
    o = ord(ch)
    if 0xE0000 <= o <= 0xE007F:
        return f"U+{o:04X} (tag character)"
    if 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF:
        return f"run of {len(chars)} variation selectors (U+{o:04X}…)"
    return f"U+{o:04X} ({_INVISIBLE.get(ch, 'invisible')})"


def _invisible(s: str) -> Optional[str]:
    hits = []
    tags = []
    for m in _INVISIBLE_RE.finditer(s):
        ch = m.group(0)
        o = ord(ch[0])
        i = m.start()
        if 0xE0000 <= o <= 0xE007F:
            # a subdivision flag emoji (black flag, then tag letters, then CANCEL TAG) is legitimate
            j = i
            while j > 0 and 0xE0000 <= ord(s[j - 1]) <= 0xE007F:
                j -= 1
            k = i
            while k < len(s) and 0xE0000 <= ord(s[k]) <= 0xE007F:
                k += 1
            if j > 0 and s[j - 1] == "\U0001F3F4" and s[k - 1] == "\U000E007F" and k - j <= 7:
                continue
            tags.append(chr(o - 0xE0000) if 0x20 <= o - 0xE0000 < 0x7F else "")
        elif ch == "\u200d" and 0 < i < len(s) - 1 and _emoji_like(s[i - 1]) and _emoji_like(s[i + 1]):
            continue  # emoji ZWJ sequence
        elif ch == "\u200c" and 0 < i < len(s) - 1 and _joining_script(s[i - 1]) and _joining_script(s[i + 1]):
            continue  # ZWNJ inside Persian / Indic words
        elif ch == "\ufeff" and i == 0:
            continue  # a byte-order mark at the start
        if not hits:
            hits.append((m.start(), m.end(), ch))
    if not hits:
        return None
    start, end, ch = hits[0]
    detail = f"invisible character {_describe_invisible(ch)} {safe_excerpt(s, start, end)}"
    hidden = "".join(tags)
    if hidden.strip():
        detail += f"; the tag characters spell {safe_excerpt(hidden, 0, len(hidden), 0)}"
    return detail


def _emoji_like(ch: str) -> bool:
    o = ord(ch)
    return o >= 0x2190 and (unicodedata.category(ch) in ("So", "Sk", "Mn") or 0x1F3FB <= o <= 0x1F3FF or o == 0xFE0F)


def _joining_script(ch: str) -> bool:
    return ord(ch) >= 0x0600 and unicodedata.category(ch)[0] in ("L", "M")


def _blob(p: PoisoningParams, s: str) -> Optional[str]:
    shortest = min(p.min_hex_len, p.min_base64_len)
    if len(s) < shortest or max(map(len, s.split())) < shortest:
        return None  # no run of that length without white space
    for m in _HEX_RE.finditer(s):
        run = m.group(0)
        digits = len(run) - (2 if run[:2].lower() == "0x" else 0)
        if digits >= p.min_hex_len:
            return f"hex blob of {digits} digits {safe_excerpt(s, m.start(), m.end(), 24)}{_decoded_hex(run)}"
    for m in _B64_RE.finditer(s):
        run = m.group(0)
        core = run.rstrip("=")
        if len(core) < p.min_base64_len:
            continue
        if not (any(ch.isupper() for ch in core) and any(ch.islower() for ch in core) and any(ch.isdigit() for ch in core)):
            continue
        if core.count("/") > len(core) // 16 or shannon_entropy(core) < p.min_blob_entropy:
            continue  # a long path or identifier, not an encoding
        return f"base64 blob of {len(run)} chars {safe_excerpt(s, m.start(), m.end(), 24)}{_decoded_b64(run)}"
    return None


def _decoded_b64(run: str) -> str:
    try:
        raw = base64.b64decode(run.replace("-", "+").replace("_", "/") + "=" * (-len(run) % 4))
    except (binascii.Error, ValueError):
        return ""
    return _decoded_preview(raw)


def _decoded_hex(run: str) -> str:
    h = run[2:] if run[:2].lower() == "0x" else run
    try:
        raw = bytes.fromhex(h[: len(h) // 2 * 2])
    except ValueError:
        return ""
    return _decoded_preview(raw)


def _decoded_preview(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not text or sum(ch.isprintable() or ch in "\n\t" for ch in text) < 0.9 * len(text):
        return ""
    return f", decoding to text {safe_excerpt(text, 0, len(text), 0)}"


class ToolPoisoning(Detector):
    """Hidden-instruction markers in a listed tool's description or input schema."""

    rule_ids = ("tool.poisoning",)
    severities = {"tool.poisoning": "high"}
    event_types = frozenset({"mcp.tools_list"})
    key_kind = None
    Params = PoisoningParams
    #: scan results remembered (per distinct definition content)
    cache_size = 8192

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        self._compiled: dict[int, _PoisonCompiled] = {}
        self._default = self._compile(self.params)

    def _compile(self, p: Any) -> _PoisonCompiled:
        c = self._compiled.get(id(p))
        if c is None or c.p is not p:
            c = self._compiled[id(p)] = _PoisonCompiled(p)
        return c

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        tools = ev.tools
        if not tools:
            return state, NO_ALERTS
        c = self._default if not self.tenant_params else self._compile(self.params_for(ev.tenant))
        cache = c.cache
        alerts: list[Alert] = NO_ALERTS
        for t in tools:
            # Remembered by the definition's content, not by the producer's hash (which nobody
            # checks): the name and hash only file the entry; a hit is one whose description,
            # schema and annotations equal this one's too (string and dict equality, in C).
            key = (t.name, t.definition_hash)
            entry = cache.get(key)
            if (
                entry is not None
                and entry[0] == t.description
                and entry[1] == t.input_schema
                and entry[2] == t.annotations
            ):
                found = entry[3]
            else:
                found = tuple(poisoning_findings(t.name, t.description, t.input_schema, t.annotations, _compiled=c))
                if len(cache) >= self.cache_size:
                    cache.clear()
                # copies: the entry must not change if the event's objects do
                cache[key] = (t.description, copy.deepcopy(t.input_schema), copy.deepcopy(t.annotations), found)
            if found:
                if alerts is NO_ALERTS:
                    alerts = []
                alerts.append(self._alert(ev, t, found, c.p))
        return state, alerts

    def _alert(self, ev: Any, t: Any, found: tuple[tuple[str, str, str], ...], p: PoisoningParams) -> Alert:
        server = _server_label(ev)
        listed = "; ".join(f"{detail} in {field}" for field, _, detail in found[: p.max_listed])
        more = f" (and {len(found) - p.max_listed} more)" if len(found) > p.max_listed else ""
        kinds = sorted({kind for _, kind, _ in found})
        return self.alert(
            "tool.poisoning",
            ev,
            identity=(server, t.name, t.definition_hash or ""),
            title=f"Hidden instructions in tool definition: {t.name}",
            description=(
                f"Tool '{t.name}' listed by server '{server}' (definition {t.definition_hash or 'unhashed'}) "
                f"carries {', '.join(kinds)}: {listed}{more}. "
                f"Text the model reads but the user rarely sees may steer it (tool poisoning)."
            ),
            attack=["AML.T0051", "AML.T0054"],
        )


def _server_label(ev: Any) -> str:
    server = ev.server
    if server is not None and (server.name or server.resource):
        return server.name or server.resource
    return ev.source.name


# ---------------------------------------------------------------------------
# tool.shadowing: names

_SEP_RE = re.compile(r"[_\-.\s]+")
_SKELETON: Optional[dict[str, str]] = None


def _skeleton_map() -> dict[str, str]:
    """char → prototype of UTS #39 confusables, from the confusable_homoglyphs data (built once)."""
    global _SKELETON
    if _SKELETON is None:
        from confusable_homoglyphs.confusables import confusables_data

        adj: dict[str, set[str]] = {}
        for key, entries in confusables_data.items():
            a = key.replace("\u200e", "")
            for entry in entries:
                b = entry["c"].replace("\u200e", "")
                if a and b and a != b:
                    adj.setdefault(a, set()).add(b)
                    adj.setdefault(b, set()).add(a)
        mapping: dict[str, str] = {}
        for node, nbrs in adj.items():
            if len(node) != 1 or len(nbrs) != 1:
                continue  # hubs (and multi-character sequences) are prototypes: they map to themselves
            (other,) = nbrs
            if len(adj[other]) > 1 or len(other) > 1:
                mapping[node] = other
                continue
            # a two-node component of single characters: the ASCII one, else the lower code point
            if other.isascii() != node.isascii():
                proto = other if other.isascii() else node
            else:
                proto = min(node, other)
            if proto != node:
                mapping[node] = proto
        _SKELETON = mapping
    return _SKELETON


def skeleton(s: str) -> str:
    """UTS #39 skeleton: NFD, map every character to its confusable prototype, NFD."""
    m = _skeleton_map()
    return unicodedata.normalize("NFD", "".join(m.get(ch, ch) for ch in unicodedata.normalize("NFD", s)))


_KEYS_CACHE: dict[str, tuple[str, ...]] = {}


def name_keys(name: str) -> tuple[str, ...]:
    """The comparison forms of a tool name: NFKC, separators and invisible characters removed,
    case folded, homoglyph skeleton. Two names are confusable when their forms intersect.

    Two forms, because case folding and the skeleton do not commute (``I`` → ``l``
    by skeleton, → ``i`` by folding); the first is the primary one.
    """
    keys = _KEYS_CACHE.get(name)
    if keys is None:
        n = name
        if not n.isascii():
            # compatibility forms first (fullwidth, mathematical letters: UAX #31 identifiers are NFKC),
            # then drop invisible format characters
            n = "".join(ch for ch in unicodedata.normalize("NFKC", n) if unicodedata.category(ch) != "Cf")
        n = _SEP_RE.sub("", n)
        k1 = _SEP_RE.sub("", skeleton(skeleton(n).casefold()))
        k2 = _SEP_RE.sub("", skeleton(n.casefold()).casefold())
        keys = (k1,) if k1 == k2 else (k1, k2)
        if len(_KEYS_CACHE) > 65536:
            _KEYS_CACHE.clear()
        _KEYS_CACHE[name] = keys
    return keys


def within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance of ``a`` and ``b`` is at most 1."""
    la, lb = len(a), len(b)
    if la > lb:
        a, b, la, lb = b, a, lb, la
    if lb - la > 1:
        return False
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


_IDENT_RE = re.compile(
    r"(?<![\w.-])([A-Za-z][A-Za-z0-9]*(?:[_.-][A-Za-z0-9]+)+|[a-z]+[0-9]*(?:[A-Z][a-z0-9]*)+|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)(?![\w-])"
)
_QUOTED_RE = re.compile(r"[`'\"]([A-Za-z][A-Za-z0-9_.-]{2,63})[`'\"]")
_IDENT_FULL_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_.\- ][A-Za-z0-9]+)+|[a-z]+[0-9]*(?:[A-Z][a-z0-9]*)+|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+")


class ShadowingParams(Params):
    #: names at least this long (after normalising) are confusable at edit distance 1
    min_edit_len: int = Field(default=6, ge=1)
    #: an identifier-like tool name (separator or camelCase) at least this long may be "named" in another
    #: server's description; shorter or one-word names only when quoted (`name`)
    min_mention_len: int = Field(default=6, ge=1)
    #: tool names too generic to count as "named" in a description even when quoted
    generic_tool_names: tuple[str, ...] = (
        "search", "get", "list", "read", "write", "fetch", "query", "run", "call", "find", "open", "create",
        "update", "delete", "send", "post", "put", "help", "info", "status", "ping", "echo", "login", "logout",
        "save", "load", "upload", "download", "execute", "exec", "lookup", "browse", "edit", "limit", "next",
        "page", "user", "users", "file", "files", "data", "text", "time", "date", "name", "type", "value",
    )
    #: two names differing in one word, both from this list, are not confusable (get_item / set_item)
    distinct_words: tuple[str, ...] = ("get", "set", "put", "let", "add", "new", "min", "max", "pop", "run", "log", "tag")
    #: bounds of the per-tenant state
    max_servers: int = Field(default=2000, ge=1)
    max_tools_per_server: int = Field(default=512, ge=1)
    max_mentions_per_server: int = Field(default=2048, ge=0)
    #: event-time seconds a tenant's server inventory is remembered after its last tools list
    memory_s: float = Field(default=30 * 24 * 3600.0, gt=0)


class ToolShadowing(Detector):
    """Two servers of a tenant expose the same or confusable tool names, or one names the other's tool."""

    rule_ids = ("tool.shadowing",)
    severities = {"tool.shadowing": "medium"}
    event_types = frozenset({"mcp.tools_list"})
    key_kind = "tenant"
    Params = ShadowingParams

    def key(self, ev: Any) -> Optional[str]:
        if not ev.tools:
            return None
        return ev.tenant

    def state_ttl_s(self) -> float:
        return self.params.memory_s

    def initial_state(self) -> Any:
        # servers: {label: {"sig": [name, hash, ...], "tools": {name: [keys, first event id]},
        #                   "ident": {key: [tool, event id]}, "quoted": {key: [tool, event id]}}}
        # aliases: {resource: name}; alerted: {pair id: 1}
        return {"servers": {}, "aliases": {}, "alerted": {}}

    def _label(self, ev: Any, state: dict[str, Any]) -> Optional[str]:
        server = ev.server
        if server is None:
            return None
        name, resource = server.name, server.resource
        aliases = state["aliases"]
        if name and resource:
            if aliases.get(resource) != name:
                aliases[resource] = name
                old = state["servers"].pop(resource, None)
                if old is not None:  # seen before under its resource only: the same server
                    mine = state["servers"].setdefault(name, {"sig": [], "tools": {}, "ident": {}, "quoted": {}})
                    for part in ("tools", "ident", "quoted"):
                        for k, v in old[part].items():
                            mine[part].setdefault(k, v)
                    mine["sig"] = []
            return name
        if name:
            return name
        if resource:
            return aliases.get(resource, resource)
        return None

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        label = self._label(ev, state)
        if label is None:
            return state, NO_ALERTS
        servers: dict[str, Any] = state["servers"]
        tools = ev.tools
        entry = servers.get(label)
        if entry is not None:
            # the common case: the same server re-listing the same tools (names and hashes)
            sig = entry["sig"]
            if len(sig) == 2 * len(tools):
                i = 0
                for t in tools:
                    if t.name != sig[i] or t.definition_hash != sig[i + 1]:
                        break
                    i += 2
                else:
                    return state, NO_ALERTS
        sig = []  # [name, hash, name, hash, ...]
        for t in tools:
            sig.append(t.name)
            sig.append(t.definition_hash)
        p = self.params_for(ev.tenant)
        if entry is None:
            if len(servers) >= p.max_servers:
                return state, NO_ALERTS
            entry = servers[label] = {"sig": [], "tools": {}, "ident": {}, "quoted": {}}
        entry["sig"] = sig
        tools = entry["tools"]
        for t in ev.tools:
            if t.name not in tools and len(tools) < p.max_tools_per_server:
                tools[t.name] = [list(name_keys(t.name)), ev.event_id]
            texts = [t.description or ""]
            if t.input_schema:
                extra: list[tuple[str, str]] = []
                _schema_strings(t.input_schema, "", extra, 0, _SCHEMA_BOUNDS)
                texts.extend(v for _, v in extra)
            for text in texts:
                if not text:
                    continue
                for m in _IDENT_RE.finditer(text):
                    self._mention(entry["ident"], m.group(1), t.name, ev.event_id, p)
                if "`" in text or "'" in text or '"' in text:
                    for m in _QUOTED_RE.finditer(text):
                        self._mention(entry["quoted"], m.group(1), t.name, ev.event_id, p)
        alerts: list[Alert] = []
        for other_label, other in servers.items():
            if other_label == label:
                continue
            for hit in self._pairs(label, entry, other_label, other, p):
                pair = sorted([(label, hit[0]), (other_label, hit[1])])
                pair_id = "\x1f".join((*pair[0], *pair[1]))
                if pair_id in state["alerted"]:
                    continue
                state["alerted"][pair_id] = 1
                alerts.append(self._alert(ev, pair, hit, label, other_label, other))
        return state, alerts or NO_ALERTS

    @staticmethod
    def _mention(index: dict[str, Any], token: str, tool: str, event_id: str, p: ShadowingParams) -> None:
        key = name_keys(token)[0]
        if key not in index and len(index) < p.max_mentions_per_server:
            index[key] = [tool, event_id]

    def _pairs(self, label: str, mine: dict[str, Any], other_label: str, other: dict[str, Any], p: ShadowingParams):
        """(my tool, other tool, reason, other evidence event) for every related pair."""
        my_tools, their_tools = mine["tools"], other["tools"]
        distinct = frozenset(p.distinct_words)
        for a, (a_keys, _) in my_tools.items():
            for b, (b_keys, b_event) in their_tools.items():
                reason = _confusable(a, a_keys, b, b_keys, p, distinct)
                if reason:
                    yield a, b, reason, b_event
        # descriptions naming the other server's tools, both ways
        my_keys = {ks[0] for ks, _ in my_tools.values()}
        their_keys = {ks[0] for ks, _ in their_tools.values()}
        for b, (b_keys, b_event) in their_tools.items():
            if b_keys[0] in my_keys:
                continue  # a name I expose myself: my description may mean my own tool
            how = _mentioned(b, b_keys[0], mine, p)
            if how:
                a, _ = how
                yield a, b, f"the description of '{a}' on '{label}' names '{b}', a tool of '{other_label}'", b_event
        for a, (a_keys, _) in my_tools.items():
            if a_keys[0] in their_keys:
                continue
            how = _mentioned(a, a_keys[0], other, p)
            if how:
                b, ev_id = how
                yield a, b, f"the description of '{b}' on '{other_label}' names '{a}', a tool of '{label}'", ev_id

    def _alert(self, ev: Any, pair: list[tuple[str, str]], hit: tuple[str, str, str, str], label: str, other_label: str, other: dict[str, Any]) -> Alert:
        a, b, reason, other_event = hit
        return self.alert(
            "tool.shadowing",
            ev,
            identity=(*pair[0], *pair[1]),
            title=f"Tool shadowing between servers: {a} / {b}",
            description=(
                f"Server '{label}' lists tool '{a}' and server '{other_label}' lists tool '{b}' in tenant "
                f"'{ev.tenant}': {reason}. A model choosing tools by name or description may call the wrong "
                f"server's tool, or be steered by one server into using another's."
            ),
            event_ids=[other_event, ev.event_id],
            attack=["AML.T0051"],
        )


_SCHEMA_BOUNDS = PoisoningParams(max_strings=128, max_depth=8)


def _confusable(a: str, a_keys: list[str], b: str, b_keys: list[str], p: ShadowingParams, distinct: frozenset[str]) -> Optional[str]:
    if a == b:
        return f"both are named '{a}'"
    if set(a_keys) & set(b_keys):
        plain_a, plain_b = _SEP_RE.sub("", a).casefold(), _SEP_RE.sub("", b).casefold()
        if a.casefold() == b.casefold():
            return f"'{_escape(a)}' and '{_escape(b)}' differ only in case"
        if plain_a == plain_b:
            return f"'{_escape(a)}' and '{_escape(b)}' differ only in case and separators (both '{_escape(plain_a)}')"
        shown = next(k for k in a_keys if k in b_keys)
        return (
            f"'{_escape(a)}' and '{_escape(b)}' are homoglyph-confusable{_lookalikes(a, b)}: "
            f"same UTS #39 skeleton '{_escape(shown)}'"
        )
    ka, kb = a_keys[0], b_keys[0]
    if min(len(ka), len(kb)) >= p.min_edit_len and within_one_edit(ka, kb):
        wa, wb = name_words(a), name_words(b)
        if len(wa) == len(wb):
            diff = [(x, y) for x, y in zip(wa, wb) if x != y]
            if len(diff) == 1 and diff[0][0] in distinct and diff[0][1] in distinct:
                return None  # get_item / set_item: different verbs, not a look-alike
        return f"'{_escape(a)}' and '{_escape(b)}' are one edit apart ('{_escape(ka)}' / '{_escape(kb)}')"
    return None


def _lookalikes(a: str, b: str) -> str:
    """The non-ASCII characters of two names, named, so the analyst sees what differs."""
    seen = []
    for ch in a + b:
        if not ch.isascii() and ch not in seen:
            seen.append(ch)
    if not seen:
        return ""
    shown = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in seen[:4])
    return f" ({shown})"


def _mentioned(name: str, key: str, server: dict[str, Any], p: ShadowingParams) -> Optional[tuple[str, str]]:
    """(describing tool, event id) when ``server``'s descriptions name tool ``name``."""
    if name.lower() in p.generic_tool_names:
        return None
    if len(key) >= p.min_mention_len and _IDENT_FULL_RE.fullmatch(name):
        found = server["ident"].get(key)
        if found:
            return found[0], found[1]
    if len(key) >= 4:
        found = server["quoted"].get(key)
        if found:
            return found[0], found[1]
    return None


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (ToolPoisoning, ToolShadowing)
