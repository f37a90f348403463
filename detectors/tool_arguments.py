"""Tool-argument content detections (spec/detections.md, "Tools").

One detector, :class:`ArgumentContent`, emits four rules from one pass over the
strings of a call's ``tool.arguments`` (and ``tool.result.excerpt``):

* ``tool.command_injection``: a shell metacharacter (``;``, ``&&``, ``|``,
  ``||``, ``$(``, a backtick, a newline) next to a command word; in tools whose
  names say they take text, only a download-and-execute pattern;
* ``tool.path_traversal``: a path-like argument whose ``../`` segments climb
  out of its start (after URL-decoding and ``\\`` → ``/``), or that names a
  sensitive location;
* ``tool.ssrf``: in a fetching tool, a URL or host that resolves *by its
  spelling* to loopback / private / link-local / unspecified / metadata
  addresses (decimal, hex, octal, short and IPv6-mapped forms included), or a
  ``file:`` / ``gopher:`` / ``dict:`` / ``ftp:`` URL;
* ``tool.secret_exposure``: a credential in an argument or the result excerpt
  (known token formats, private key blocks, JWTs, high-entropy ``key=value``
  assignments, producer ``[REDACTED:<kind>]`` markers), never placeholders.

Cost model: ``mcp.tool_call`` is about 70 % of all events, so the common case is
collecting the string values not already known clean, joining them and one
compiled trigger regex over the join (every pattern family below needs one of
its literals; see "the prefilter"), well under a microsecond a call. Strings
the trigger found nothing in (and that are ASCII) are remembered by their
content, so the argument values a deployment repeats (repositories, folders,
URLs, query templates, boilerplate text) are scanned once; the cache is
bounded in entries and in the length of what it keeps. Only when the trigger
matches does any string get the detailed checks, with its argument path; the
SSRF check runs on fetching tools only (decided once per tool name, plus
``openWorldHint``), with per-host and per-URL caches. Work per event is
bounded (strings, depth, characters).

Descriptions never carry a secret: a credential is shown by its kind and a
masked form (first and last four characters of a token of a known format,
nothing of a password).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import unicodedata
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field

from mcpsift.alerts import Alert

from .base import NO_ALERTS, Detector, Params
from .tool_definitions import name_words, safe_excerpt, shannon_entropy

__all__ = ["DETECTORS", "ArgumentContent", "ArgumentParams", "scrub_secrets"]

RULE_CMD = "tool.command_injection"
RULE_PATH = "tool.path_traversal"
RULE_SSRF = "tool.ssrf"
RULE_SECRET = "tool.secret_exposure"


class ArgumentParams(Params):
    # -- bounds: the work per event ------------------------------------------
    #: nesting depth of argument JSON walked
    max_depth: int = Field(default=8, ge=1)
    #: string leaves examined per event
    max_strings: int = Field(default=256, ge=1)
    #: characters examined per event (arguments and result excerpt together)
    max_chars: int = Field(default=65536, ge=64)
    #: findings listed in one alert's description
    max_listed: int = Field(default=4, ge=1)

    # -- tool.command_injection ----------------------------------------------
    #: command words that make a metacharacter before them an injection (matched case-sensitively,
    #: as shells do): "; curl", "| sh", "$(whoami)"
    command_words: tuple[str, ...] = (
        "rm", "curl", "wget", "bash", "sh", "zsh", "ksh", "csh", "nc", "ncat", "netcat", "socat", "telnet",
        "python2", "python3", "chmod", "chown", "base64", "sudo", "whoami", "uname", "printenv", "pkill",
        "mkfifo", "scp", "tftp", "crontab", "nohup", "xargs", "powershell", "pwsh", "certutil", "bitsadmin",
        "systemctl", "useradd", "ifconfig", "netstat", "nslookup",
    )
    #: command words that are also English words: they count only when an argument-like token
    #: (a flag, a path, a file name, a variable) or the end of the command follows ("; cat /etc/passwd",
    #: not "salt; cat food")
    ambiguous_command_words: tuple[str, ...] = (
        "cat", "echo", "id", "ls", "env", "kill", "dd", "cp", "mv", "tee", "touch", "sed", "awk", "su", "ssh",
        "ftp", "python", "perl", "ruby", "php", "node", "lua", "eval", "exec", "passwd", "reboot", "shutdown",
        "dash", "fish", "cmd", "find", "ping", "head", "tail", "less", "more", "sleep", "export", "set",
    )
    #: a tool is a "text tool" (prose and code blocks expected) when a word of its name is one of these
    text_tool_words: tuple[str, ...] = (
        "write", "create", "send", "post", "comment", "reply", "note", "notes", "message", "messages",
        "issue", "email", "mail", "chat", "draft", "append", "update", "edit", "publish", "upload",
        "document", "page", "ticket", "memo", "compose", "annotate", "translate", "summarize", "save",
    )

    # -- tool.path_traversal -------------------------------------------------
    #: sensitive locations: "/x/y" anchored at the root (or reached by climbing), "~/x" anywhere
    #: under a home directory, a bare "name" as any path component (".env" also ".env.local")
    sensitive_paths: tuple[str, ...] = (
        "/etc/passwd", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/proc/self/", "/root/",
        "/var/run/secrets/", "~/.ssh", "~/.aws/credentials", "~/.netrc", "~/.git-credentials",
        "~/.kube/config", "~/.docker/config.json", "~/.pgpass", ".ssh", ".env", "id_rsa", "id_dsa",
        "id_ecdsa", "id_ed25519", "windows/system32/config/sam",
    )
    #: suffixes that make a ".env.*" name a template rather than a secret file
    template_suffixes: tuple[str, ...] = ("example", "sample", "template", "dist", "defaults")
    #: argument names whose value is a path even with spaces in it
    path_argument_names: tuple[str, ...] = (
        "path", "file", "filename", "filepath", "file_path", "file_name", "dir", "directory", "folder",
        "src", "source", "dest", "destination", "target", "location", "cwd", "root", "include",
    )
    #: more white-space separated words than this and a string is prose, not a path
    max_path_tokens: int = Field(default=4, ge=1)

    # -- tool.ssrf -----------------------------------------------------------
    #: a tool fetches when a word of its name is one of these (or openWorldHint is true)
    fetcher_name_words: tuple[str, ...] = (
        "fetch", "http", "https", "url", "uri", "browse", "browser", "download", "request", "requests",
        "curl", "wget", "crawl", "scrape", "webhook", "navigate", "proxy",
    )
    #: argument names whose value is a host (so a bare "127.1" or "2130706433" counts)
    host_argument_names: tuple[str, ...] = (
        "host", "hostname", "url", "uri", "endpoint", "address", "addr", "ip", "server", "domain",
        "target", "base_url", "webhook", "callback",
    )
    blocked_schemes: tuple[str, ...] = ("file", "gopher", "dict", "ftp", "ftps", "tftp", "ldap", "jar", "netdoc")
    blocked_networks: tuple[str, ...] = (
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "0.0.0.0/8",
        "100.100.100.200/32", "::1/128", "::/128", "fc00::/7", "fe80::/10", "fec0::/10",
    )
    internal_hostnames: tuple[str, ...] = (
        "localhost", "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
        "instance-data.ec2.internal", "metadata.azure.internal",
    )
    #: names under these resolve to loopback or internal addresses by definition (RFC 6761, ICANN .internal)
    internal_host_suffixes: tuple[str, ...] = (".localhost", ".internal", ".localtest.me", ".lvh.me")
    #: wildcard DNS services that answer a name with the IP written in it (127.0.0.1.nip.io)
    ip_echo_domains: tuple[str, ...] = ("nip.io", "sslip.io", "xip.io")

    # -- tool.secret_exposure ------------------------------------------------
    #: Shannon entropy (bits per character) a generic "password=" / "api_key:" value needs
    min_entropy: float = Field(default=3.0, ge=0)
    #: ... and its length
    min_secret_length: int = Field(default=8, ge=1)
    #: the random part of a known token format needs this entropy (rejects "AKIAAAAAAAAAAAAAAAAA")
    min_token_entropy: float = Field(default=2.5, ge=0)
    #: a key with one of these words is not a credential (page_token, max_tokens, public_key)
    non_secret_key_words: tuple[str, ...] = (
        "page", "next", "prev", "continuation", "pagination", "sync", "cursor", "resume", "idempotency", "max",
        "min", "num", "count", "limit", "public", "publishable", "csrf", "xsrf", "type", "name", "id", "length",
        "expiry", "expires", "ttl", "hint", "reset", "policy", "format", "field", "label",
    )
    #: a value containing one of these (case-insensitively) is a placeholder, not a credential
    placeholder_words: tuple[str, ...] = (
        "example", "changeme", "change_me", "change-me", "your", "placeholder", "dummy", "sample",
        "xxxx", "****", "....", "…", "insert", "replace", "fake", "todo", "redacted_value", "secret_here",
        "token_here", "key_here", "<", ">",
    )


#: the credential words a key or an assignment may end in (after optional prefix words: db_password)
_SECRET_WORDS = (
    r"api[_-]?key|apikey|secret|secret[_-]?key|client[_-]?secret|access[_-]?key(?:[_-]?id)?"
    r"|secret[_-]?access[_-]?key|password|passwd|pwd|passphrase|auth[_-]?token|access[_-]?token"
    r"|refresh[_-]?token|bearer[_-]?token|session[_-]?token|token|private[_-]?key|credentials?"
)
_SECRET_KEY_NAME_RE = re.compile(rf"(?i)^(?:[a-z0-9]+[_-])*(?:{_SECRET_WORDS})$")
_ASSIGN_RE = re.compile(
    rf"(?i)(?<![A-Za-z0-9_.-])((?:[A-Za-z0-9]+[_-]){{0,4}}(?:{_SECRET_WORDS}))[\"']?\s{{0,3}}(?:=|:(?!//))\s{{0,3}}[\"']?"
    r"([^\s\"'`,;&<>)}\]]{1,256})"
)
#: (kind, regex, length of the fixed prefix before the random part)
_TOKEN_PATTERNS: tuple[tuple[str, str, int], ...] = (
    ("AWS access key id", r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![A-Z0-9])", 4),
    ("GitHub token", r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,255}", 4),
    ("GitHub token", r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}", 11),
    ("GitLab token", r"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,}", 6),
    ("Slack token", r"(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}", 5),
    ("Stripe secret key", r"(?<![A-Za-z0-9])[rs]k_live_[A-Za-z0-9]{16,}", 8),
    ("OpenAI/Anthropic API key", r"(?<![A-Za-z0-9])sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}", 3),
    ("Google API key", r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}", 4),
)
_TOKEN_RE = re.compile("|".join(f"(?P<t{i}>{p})" for i, (_, p, _) in enumerate(_TOKEN_PATTERNS)))
_PRIVATE_KEY_RE = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----")
_KEY_BODY_RE = re.compile(r"[A-Za-z0-9+/=]{32,}")
_JWT_RE = re.compile(r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{6,})\.([A-Za-z0-9_-]{2,})\.([A-Za-z0-9_-]*)")
_BEARER_RE = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})")
_REDACTED_RE = re.compile(r"\[REDACTED:([^\]\s]{1,40})\]")
_ENV_REF_RE = re.compile(r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\(|\{\{|%\(|%[A-Za-z_]+%|process\.env|os\.environ|env:)")

_DOWNLOAD_EXEC_RE = re.compile(
    r"\b(?:curl|wget)\b[^\n]{0,400}?\|\s*(?:sudo\s+)?(?:/usr)?(?:/bin/)?(?:ba|z|da|k)?sh\b"
    r"|\b(?:curl|wget)\b[^\n]{0,400}?\|\s*(?:sudo\s+)?(?:python[23]?|perl|ruby|node|php)\b"
    r"|\b(?:curl|wget)\b[^\n]{0,400}?(?:&&|;|\|\||\n)\s*(?:sudo\s+)?chmod\s+(?:[ugoa]*\+[rwx]*x|[0-7]?[0-7][0-7][1357])"
    r"|(?:\$\(|`|<\()\s*(?:curl|wget)\b"
    r"|(?i:\b(?:iex|invoke-expression)\b[^\n]{0,200}?downloadstring|downloadstring[^\n]{0,200}?\|\s*iex\b)"
)
#: what may follow a command word for it to be a command, not a word of prose
_CMD_FOLLOW = r"(?=\s*(?:$|[;&|`)\n\r<>])|\s+(?:[-+/~.$\"'`{\\]|\d|[^\s;&|]*[./:=]))"
_IFS_RE = re.compile(r"\$\{IFS\}|\$IFS\b")


def _compile_cmd(strong: tuple[str, ...], ambiguous: tuple[str, ...]) -> re.Pattern[str]:
    def alts(words: tuple[str, ...]) -> str:
        return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)) or r"(?!x)x"

    windows = {"powershell", "pwsh", "cmd", "certutil", "bitsadmin"}
    prefix = r"(?:sudo\s+|nohup\s+|exec\s+|env\s+(?:\w+=\S*\s+)*)?(?:/usr(?:/local)?)?(?:/s?bin/)?"
    strong_alt = alts(tuple(w for w in strong if w not in windows))
    win_alt = alts(tuple(w for w in (*strong, *ambiguous) if w in windows))
    weak_alt = alts(tuple(w for w in ambiguous if w not in windows and w not in strong))
    return re.compile(
        r"(?P<op>;|&&|&|\|\||\||\r|\n|\$\(|`)\s*" + prefix + r"(?P<cmd>"
        + rf"(?:{strong_alt})\b(?![-.]\w)(?=\s|$|[;&|`)'\"<>])"
        + rf"|(?i:{win_alt})(?:\.exe)?\b(?![-.]\w)(?=\s|$|[;&|`)'\"<>])"
        + rf"|(?:{weak_alt})\b(?![-.]\w){_CMD_FOLLOW})"
    )


# -- the prefilter ----------------------------------------------------------
#
# Python's regex engine scans fast only for a pattern whose every top-level
# alternative starts with a literal character (it then skips to positions
# holding one of those characters); an alternation with a class or a letter
# run first tries every branch at every position, ten times slower. So every
# trigger below is written to begin with a character that is rare in ordinary
# text, with look-behinds for the letters before it ("eyJ" is "J" preceded by
# "ey"), and the triggers are grouped by that first character. Inside a group
# the same holds at a smaller scale: the engine skips an alternative that
# begins with a literal (or a class) not matching the next character without
# entering it, but enters every one that begins with a look-around or a
# case-insensitive letter. So case-insensitive words are spelt as two
# alternatives (lower and upper first letter: the trigger only decides for
# ASCII text, non-ASCII text always gets the detailed checks), and look-behinds
# are guarded by a one-character look-behind that most positions fail.

#: shell metacharacters, encodings, and download cradles
_SHELL_LITERALS = frozenset({"%", "\\", "..", "<(", "$(", "${", "$IFS", ".DownloadString", ".downloadstring"})


def _shell_triggers(words: tuple[str, ...]) -> set[Any]:
    """Each operator followed (after blanks, sudo, a /bin/ prefix) by a command word: the prose
    "review; they want" does not trigger, "x; rm -rf /" does."""
    alts = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    cmd = rf"(?=\s*(?:sudo\s+|nohup\s+|exec\s+|env\s+)?(?:/usr(?:/local)?)?(?:/s?bin/)?(?:{alts}|(?i:powershell|pwsh|cmd|certutil|bitsadmin))\b)"
    return {(";", cmd), ("&", "&?" + cmd), ("|", r"\|?" + cmd), ("\n", cmd), ("\r", cmd), ("`", cmd)}


def _ci(text: str) -> str:
    """``text`` matched case-insensitively, as alternatives that each begin with a literal
    character, the first letter's two ASCII cases (the engine skips those that cannot match
    without entering them). For the trigger only: it decides for ASCII text alone."""
    rest = "(?i:" + re.escape(text[1:]) + ")" if len(text) > 1 else ""
    first = text[:1]
    if first.lower() != first.upper():
        return f"{re.escape(first.lower())}{rest}|{re.escape(first.upper())}{rest}"
    return re.escape(first) + rest


#: the last three letters of the credential words (key, pwd, password, secret, token, auth, passphrase),
#: in either case (ASCII only: also the secret gate, which sees non-ASCII text), each alternative
#: beginning with a literal character
_KW3 = "(?:" + "|".join(
    first + "".join(f"[{ch.upper()}{ch}]" for ch in w[1:])
    for w in ("key", "pwd", "swd", "ass", "ord", "ret", "ken", "uth", "ase")
    for first in (w[0], w[0].upper())
) + ")"
#: the character before the "=" or ":" of those (their last letter, or a quote or blank after it):
#: a cheap first test
_KW1 = "[YyDdSsTtNnHhEe\"' ]"
#: every secret pattern contains one of these (a regex fragment after its literal first character);
#: the look-behinds are guarded by a one-character one
_SECRET_TRIGGERS = frozenset({
    "[REDACTED:", "AKIA", "ASIA", "ABIA", "ACCA", "AIza", "-----BEGIN", "_live_", "_pat_",
    ("J", "(?<=eyJ)"), ("_", "(?<=gh[pousr]_)"), ("-", "(?<=[abkprst]-)(?:(?<=xox[baprs]-)|(?<=glpat-)|(?<=sk-))"),
    ("B", r"(?=earer\s)"),
    ("=", rf"(?<={_KW1}=)(?:(?<={_KW3}=)|(?<={_KW3}[\"' ]=))"),
    (":", rf"(?<={_KW1}:)(?:(?<={_KW3}:)|(?<={_KW3}[\"' ]:))"),
})


def _path_trigger(kind: str, comps: tuple[str, ...]) -> Optional[tuple[str, str]]:
    """A literal starting with a separator that every spelling of a sensitive location contains,
    as (first character, the rest matched case-insensitively) for the trigger."""
    literal = None
    for comp in comps:
        if comp.startswith("."):
            literal = comp  # ".ssh", ".env", ".git-credentials"
            break
    else:
        if kind == "root":
            literal = "/" + comps[0] + ("/" if len(comps) > 1 else "")  # "/etc/", "/proc/", "/root"
        else:
            for i, ch in enumerate(comps[0]):
                if i and ch in "_-.":
                    literal = comps[0][i:]  # "id_rsa" -> "_rsa"
                    break
            else:
                if len(comps) > 1:
                    literal = "/" + comps[1]  # "windows/system32/..." -> "/system32"
    if literal is None:
        return None  # a bare word: found only when another trigger fires
    return literal[0], _ci(literal[1:]) if len(literal) > 1 else ""


def _build_trigger(triggers: Any) -> re.Pattern[str]:
    by_first: dict[str, list[str]] = {}
    for t in triggers:
        first, rest = (t[0], t[1]) if isinstance(t, tuple) else (t[0], re.escape(t[1:]))
        by_first.setdefault(first, []).append(rest)
    alts = []
    for first in sorted(by_first):
        rests = sorted(set(by_first[first]), key=len, reverse=True)
        if "" in rests:
            alts.append(re.escape(first))  # the character alone already triggers
        else:
            alts.append(re.escape(first) + "(?:" + "|".join(rests) + ")")
    return re.compile("|".join(alts))


#: strings found clean by the trigger are remembered when the call's strings to scan total at
#: most this many characters (so each is at most that long), URLs found no SSRF target when at
#: most that long, up to this many strings per cache (cleared when full): a few MB at worst
_CLEAN_MAX_LEN = 1024
_CLEAN_SIZE = 8192
#: what a string known clean may add to the length of a call's joined strings, at most
_CLEAN_SPAN = _CLEAN_MAX_LEN + 1


class _Compiled:
    """Everything derived from one Params object, built once."""

    def __init__(self, p: ArgumentParams):
        self.p = p
        self.cmd_re = _compile_cmd(p.command_words, p.ambiguous_command_words)
        self.text_words = frozenset(w.lower() for w in p.text_tool_words)
        self.fetch_words = frozenset(w.lower() for w in p.fetcher_name_words)
        self.path_keys = frozenset(k.lower() for k in p.path_argument_names)
        self.host_keys = frozenset(k.lower() for k in p.host_argument_names)
        self.schemes = frozenset(s.lower() for s in p.blocked_schemes)
        self.networks = [ipaddress.ip_network(n, strict=False) for n in p.blocked_networks]
        self.internal_names = frozenset(h.lower().rstrip(".") for h in p.internal_hostnames)
        self.internal_suffixes = tuple(s.lower() for s in p.internal_host_suffixes)
        self.echo_re = (
            re.compile(
                r"(?:^|\.)((?:\d{1,3}[.-]){3}\d{1,3})\.(?:" + "|".join(re.escape(d) for d in p.ip_echo_domains) + r")$"
            )
            if p.ip_echo_domains
            else None
        )
        self.echo_suffixes = tuple("." + d.lower() for d in p.ip_echo_domains)
        self.placeholders = tuple(w.lower() for w in p.placeholder_words)
        self.non_secret = frozenset(w.lower() for w in p.non_secret_key_words)
        self.templates = tuple(s.lower() for s in p.template_suffixes)
        # sensitive locations as (kind, entry, components), and the literal that announces each
        self.sensitive: list[tuple[str, str, tuple[str, ...]]] = []
        path_triggers: set[tuple[str, str]] = set()
        for entry in p.sensitive_paths:
            e = entry.strip().lower().replace("\\", "/")
            if e.startswith("~/"):
                kind, body = "home", e[2:]
            elif e.startswith("/"):
                kind, body = "root", e
            else:
                kind, body = ("name", e) if "/" not in e.strip("/") else ("seq", e)
            comps = tuple(comp for comp in body.split("/") if comp)
            if not comps:
                continue
            self.sensitive.append((kind, entry, comps))
            literal = _path_trigger(kind, comps)
            if literal:
                path_triggers.add(literal)
        self.trigger = _build_trigger(
            path_triggers | _SHELL_LITERALS | _shell_triggers(p.command_words + p.ambiguous_command_words) | _SECRET_TRIGGERS
        )
        self.secret_gate = _build_trigger(_SECRET_TRIGGERS)
        self.name_cache: dict[str, tuple[bool, bool]] = {}
        #: URL host -> its SSRF label (None: not internal), for explicit URLs
        self.host_cache: dict[str, Optional[str]] = {}
        self.search = self.trigger.search
        self.max_chars = p.max_chars
        self.max_strings = p.max_strings
        #: strings found clean by the trigger (no literal, ASCII): not scanned again
        self.clean: dict[str, None] = {}
        #: explicit URLs found no SSRF target (a verdict on the value alone, whatever its key and tool)
        self.ssrf_clean: dict[str, None] = {}
        self.key_cache: dict[str, tuple[bool, bool, bool]] = {}
        #: argument names known not to name a credential (a superset test per call is cheap)
        self.plain_keys: set[str] = set()

    def name_profile(self, name: str) -> tuple[bool, bool]:
        """(is a text tool, fetches by its name), cached per tool name."""
        prof = self.name_cache.get(name)
        if prof is None:
            words = name_words(name)
            text = any(w in self.text_words for w in words)
            # "pull_request" / "merge_request" name a code review, not an HTTP request
            words = [w for i, w in enumerate(words) if not (w == "request" and i and words[i - 1] in ("pull", "merge"))]
            by_name = any(
                w in self.fetch_words
                or (len(w) > 4 and any(w.startswith(f) or w.endswith(f) for f in self.fetch_words if len(f) >= 4))
                for w in words
            )
            prof = (text, by_name)
            if len(self.name_cache) > 4096:
                self.name_cache.clear()
            self.name_cache[name] = prof
        return prof

    def any_secret_key(self, keys: Any) -> bool:
        """Whether an argument name says its value is a credential; names found plain are remembered."""
        found = False
        for key in keys:
            if self.key_profile(key)[2]:
                found = True
            elif len(self.plain_keys) < 65536:
                self.plain_keys.add(key)
        return found

    def key_profile(self, key: str) -> tuple[bool, bool, bool]:
        """(names a path, names a host, names a secret) for an argument name, cached."""
        prof = self.key_cache.get(key)
        if prof is None:
            k = key.lower()
            words = set(name_words(key)) | {k}
            path = bool(words & self.path_keys)
            host = bool(words & self.host_keys) or k.endswith(("url", "uri", "host", "endpoint"))
            secret = bool(_SECRET_KEY_NAME_RE.match(k)) and not (words & self.non_secret)
            prof = (path, host, secret)
            if len(self.key_cache) > 4096:
                self.key_cache.clear()
            self.key_cache[key] = prof
        return prof


class ArgumentContent(Detector):
    """Command injection, path traversal, SSRF and exposed secrets in one pass over a call's strings."""

    rule_ids = (RULE_CMD, RULE_PATH, RULE_SSRF, RULE_SECRET)
    severities = {RULE_CMD: "high", RULE_PATH: "high", RULE_SSRF: "high", RULE_SECRET: "high"}
    event_types = frozenset({"mcp.tool_call"})
    key_kind = None
    Params = ArgumentParams

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        self._compiled: dict[int, _Compiled] = {}
        self._default = self._compile(self.params)

    def _compile(self, p: Any) -> _Compiled:
        c = self._compiled.get(id(p))
        if c is None or c.p is not p:
            c = self._compiled[id(p)] = _Compiled(p)
        return c

    # -- the pass ------------------------------------------------------------
    #
    # One regex (the trigger) over the join of a call's strings that are not
    # already known clean (no trigger, ASCII: remembered per content): it matches
    # the join iff it matches one of them, since "\x00" is no part of a trigger,
    # nor white space, nor a word character. ``triggered`` only gates the detailed
    # checks: it may be true without a finding (a long call), never false with
    # one. step() is that for the common call (a flat object of strings and
    # numbers, no credential-named argument, not a fetching tool); anything else
    # goes on in _examine().

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        tool = ev.tool
        args = tool.arguments
        result = tool.result
        c = self._default if not self.tenant_params else self._compile(self.params_for(ev.tenant))
        clean = c.clean
        scan: list[str] = []
        if args:
            for v in args.values():
                if type(v) is str:
                    if v not in clean:
                        scan.append(v)
                elif type(v) is list or type(v) is dict:
                    return self._examine(state, ev, c, None)
                # numbers, booleans and nulls have nothing to find
            if result is not None and result.excerpt and result.excerpt not in clean:
                scan.append(result.excerpt)
        elif result is None or not result.excerpt:
            return state, NO_ALERTS
        elif result.excerpt not in clean:
            scan.append(result.excerpt)
        if scan:
            joined = scan[0] if len(scan) == 1 else "\x00".join(scan)
            n = len(joined)
            if n > c.max_chars or c.search(joined) is not None or not joined.isascii():
                return self._examine(state, ev, c, True)
            if n <= _CLEAN_MAX_LEN:
                if len(clean) >= _CLEAN_SIZE:
                    clean.clear()
                for v in scan:
                    clean[v] = None
        else:
            n = 0
        if not args:
            return state, NO_ALERTS
        # too long a call (the strings known clean counted too, each at most _CLEAN_SPAN): the walk
        if n + (len(args) + 1) * _CLEAN_SPAN > c.max_chars and _call_chars(c, args, result) > c.max_chars:
            return self._examine(state, ev, c, True)
        if not c.plain_keys.issuperset(args):
            return self._examine(state, ev, c, False)  # perhaps a credential-named argument
        fetch_by_name = (c.name_cache.get(tool.name) or c.name_profile(tool.name))[1]
        if not fetch_by_name:
            annotations = tool.annotations
            if annotations is None or annotations.get("openWorldHint") is not True:
                return state, NO_ALERTS
        # a fetching tool: an internal or non-web target among the (top-level, string) arguments?
        ssrf_clean = c.ssrf_clean
        for k, v in args.items():
            if type(v) is str and v not in ssrf_clean and _ssrf(c, k, v, fetch_by_name) is not None:
                return self._examine(state, ev, c, False)
        return state, NO_ALERTS

    def _examine(self, state: Any, ev: Any, c: _Compiled, triggered: Optional[bool]) -> tuple[Any, list[Alert]]:
        """The rest of step(): ``triggered`` when step() knew it, None for nested arguments."""
        tool = ev.tool
        args = tool.arguments
        result = tool.result
        excerpt = result.excerpt if result is not None else None
        keys: Any = args
        if triggered is None:
            clean = c.clean
            gathered = _gather(c, args) if args else ([], 0)
            if gathered is None:  # nested deeper than a list of strings: keys at any depth
                keys = []
                found = _strings(args, c.p.max_depth, c.max_strings, keys)
                scan = [v for v in found if v not in clean]
                count = len(found)
            else:
                scan, count = gathered
            if excerpt:
                count += 1
                if excerpt not in clean:
                    scan.append(excerpt)
            joined = "\x00".join(scan)
            n = len(joined)
            if n > c.max_chars or c.search(joined) is not None or not joined.isascii():
                triggered = True
            else:
                # too long a call (the strings known clean counted too): the walk
                triggered = n + count * _CLEAN_SPAN > c.max_chars and _call_chars(c, args, result) > c.max_chars
                if n <= _CLEAN_MAX_LEN:
                    if len(clean) >= _CLEAN_SIZE:
                        clean.clear()
                    for v in scan:
                        clean[v] = None
        text_tool, fetch_by_name = c.name_cache.get(tool.name) or c.name_profile(tool.name)
        annotations = tool.annotations
        fetcher = fetch_by_name or (annotations is not None and annotations.get("openWorldHint") is True)
        if not triggered:
            if args and not c.plain_keys.issuperset(keys) and c.any_secret_key(keys):
                pass  # a credential under a secret-named key ({"password": "..."}) needs no trigger literal
            elif not fetcher or not args:
                return state, NO_ALERTS
            else:
                ssrf_clean = c.ssrf_clean
                for k, v in args.items():  # nested values are rare in fetchers: the slow path checks them
                    if type(v) is str:
                        if v not in ssrf_clean and _ssrf(c, k, v, fetch_by_name) is not None:
                            break
                    elif type(v) is dict or type(v) is list:
                        break
                else:
                    return state, NO_ALERTS

        # -- the slow path: leaves with their paths, bounded -------------------
        p = c.p
        leaves: list[tuple[str, str, str]] = []
        budget = p.max_chars
        if args:
            budget = _walk(args, "", "", 0, leaves, budget, p)
        if excerpt and budget > 0:
            excerpt = excerpt[:budget]
        else:
            excerpt = None

        findings: dict[str, list[tuple[str, str, str]]] = {}  # rule -> [(path, kind, detail)]
        trigger = c.trigger.search
        secret_gate = c.secret_gate.search
        for path, key, value in leaves:
            if fetcher:
                hit = _ssrf(c, key, value, fetch_by_name)
                if hit:
                    findings.setdefault(RULE_SSRF, []).append((path, hit[0], hit[1]))
            secret_key = c.key_profile(key)[2]
            if not triggered or (trigger(value) is None and value.isascii()):
                if secret_key:
                    for kind, detail in _secrets(c, key, value, True):
                        findings.setdefault(RULE_SECRET, []).append((path, kind, detail))
                continue
            hit = _command_injection(c, value, text_tool)
            if hit:
                findings.setdefault(RULE_CMD, []).append((path, hit[0], hit[1]))
            hit = _path_traversal(c, key, value)
            if hit:
                findings.setdefault(RULE_PATH, []).append((path, hit[0], hit[1]))
            if secret_key or secret_gate(value) is not None:
                for kind, detail in _secrets(c, key, value, secret_key):
                    findings.setdefault(RULE_SECRET, []).append((path, kind, detail))
        if excerpt is not None and triggered and secret_gate(excerpt) is not None:
            for kind, detail in _secrets(c, "", excerpt, False):
                findings.setdefault(RULE_SECRET, []).append(("result.excerpt", kind, detail))
        if not findings:
            return state, NO_ALERTS
        return state, [self._alert(rule, ev, found, p) for rule, found in findings.items()]

    def _alert(self, rule: str, ev: Any, found: list[tuple[str, str, str]], p: ArgumentParams) -> Alert:
        tool = ev.tool
        server = ev.server.name or ev.server.resource if ev.server is not None else None
        where = f"tool '{tool.name}'" + (f" on server '{server}'" if server else "")
        listed = "; ".join(
            (f"result.excerpt: {detail}" if path == "result.excerpt" else f"argument {path}: {detail}")
            for path, _, detail in found[: p.max_listed]
        )
        more = f" (and {len(found) - p.max_listed} more)" if len(found) > p.max_listed else ""
        first_path, first_kind, _ = found[0]
        title, lead, attack = _RULE_TEXT[rule]
        return self.alert(
            rule,
            ev,
            identity=(ev.event_id, tool.name, first_path, first_kind),
            title=f"{title}: {tool.name}",
            # an excerpt of an injection may quote a credential: never let one into an alert
            description=scrub_secrets(f"{lead} in a call to {where}: {listed}{more}."),
            attack=attack,
        )


_RULE_TEXT = {
    RULE_CMD: ("Shell command injection in a tool argument", "Shell injection pattern", ["T1059", "AML.T0051"]),
    RULE_PATH: ("Path traversal in a tool argument", "Path escaping its start or naming a sensitive location", ["T1083"]),
    RULE_SSRF: ("Server-side request forgery through a fetching tool", "Internal or non-web target", ["T1090", "T1552.005"]),
    RULE_SECRET: ("Credential exposed in a tool call", "Credential material", ["T1552"]),
}


def _walk(obj: Any, path: str, key: str, depth: int, leaves: list[tuple[str, str, str]], budget: int, p: ArgumentParams) -> int:
    """Append the string leaves of nested arguments; returns the remaining character budget."""
    if depth > p.max_depth:
        return budget
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in items:
        if budget <= 0 or len(leaves) >= p.max_strings:
            break
        if isinstance(k, int):
            sub, sub_key = f"{path}[{k}]", key
        else:
            sub, sub_key = (f"{path}.{k}" if path else str(k)), k
        if type(v) is str:
            if len(v) > budget:
                v = v[:budget]
            budget -= len(v)
            leaves.append((sub, sub_key, v))
        elif isinstance(v, (dict, list)):
            budget = _walk(v, sub, sub_key, depth + 1, leaves, budget, p)
    return budget


def _strings(obj: Any, max_depth: int, max_strings: int, keys: list[str]) -> list[str]:
    """The string leaves of nested arguments, without their paths (the fast path's view);
    the object keys met on the way are appended to ``keys``."""
    out: list[str] = []
    stack = [(obj, 0)]
    while stack and len(out) < max_strings:
        node, depth = stack.pop()
        if type(node) is dict:
            keys.extend(node)
        for v in node.values() if type(node) is dict else node:
            if type(v) is str:
                out.append(v)
            elif (type(v) is dict or type(v) is list) and depth < max_depth:
                stack.append((v, depth + 1))
    return out


def _call_chars(c: _Compiled, args: Optional[dict[str, Any]], result: Any) -> int:
    """The length of all the strings of a call joined, known clean or not: the top-level strings
    of a flat object, else what _strings finds, and the result excerpt. A call longer than
    max_chars goes the bounded walk even when the trigger found nothing in its strings (the walk
    may cut a string, or take others than _strings did)."""
    strs: list[str] = []
    if args:
        if any(type(v) is list or type(v) is dict for v in args.values()):
            strs = _strings(args, c.p.max_depth, c.max_strings, [])
        else:
            strs = [v for v in args.values() if type(v) is str]
    if result is not None and result.excerpt:
        strs.append(result.excerpt)
    return sum(map(len, strs)) + len(strs) - 1 if strs else 0


def _gather(c: _Compiled, args: dict[str, Any]) -> Optional[tuple[list[str], int]]:
    """The strings of a call's arguments not already known clean, and how many strings there are
    in all, when they are top-level values or in flat lists of strings, max_strings at most (so
    all that _strings would find); None otherwise (the caller walks them with _strings then)."""
    clean = c.clean
    scan: list[str] = []
    count = 0
    for v in args.values():
        t = type(v)
        if t is str:
            if v not in clean:
                scan.append(v)
            count += 1
        elif t is list:
            count += len(v)
            if count > c.max_strings:
                return None
            for x in v:
                if type(x) is str:
                    if x not in clean:
                        scan.append(x)
                elif type(x) is list or type(x) is dict:
                    return None
        elif t is dict:
            return None
    return (scan, count) if count <= c.max_strings else None


# ---------------------------------------------------------------------------
# tool.command_injection


def _command_injection(c: _Compiled, value: str, text_tool: bool) -> Optional[tuple[str, str]]:
    candidates = [value]
    if "%" in value:
        decoded = unquote(value)
        if decoded != value:
            candidates.append(decoded)
    for s in candidates:
        m = _DOWNLOAD_EXEC_RE.search(s) if ("curl" in s or "wget" in s or "ownload" in s) else None
        if m is not None:
            return "download-and-execute", f"download-and-execute {safe_excerpt(s, m.start(), m.end())}"
        if text_tool:
            continue
        if "$" in s and "IFS" in s:
            s = _IFS_RE.sub(" ", s)
        m = c.cmd_re.search(s)
        if m is not None:
            op = m.group("op")
            op_name = _OPERATORS.get(op, repr(op))
            return f"{op_name} {m.group('cmd')}", (
                f"{op_name} followed by command '{m.group('cmd')}' {safe_excerpt(s, m.start(), m.end())}"
            )
    return None


_OPERATORS = {
    ";": "';'", "&&": "'&&'", "&": "'&'", "||": "'||'", "|": "'|'", "\n": "newline", "\r": "carriage return",
    "$(": "'$('", "`": "backtick",
}


# ---------------------------------------------------------------------------
# tool.path_traversal

#: a short command line's words: white space, shell separators, ${IFS}
_PATH_TOKEN_SPLIT = re.compile(r"\s+|[;&|`()<>]|\$\{IFS\}|\$IFS\b")
_OVERLONG = (("%c0%af", "/"), ("%c0%2f", "/"), ("%c1%9c", "\\"), ("%c1%1c", "\\"), ("%c0%ae", "."), ("%c0%2e", "."))
_STRIP = "'\"`()<>[]{},;"


def _path_traversal(c: _Compiled, key: str, value: str) -> Optional[tuple[str, str]]:
    s = value.strip()
    if not s or len(s) > 4096 or "\n" in s:
        return None
    if c.key_profile(key)[0]:
        candidates = [s]
    else:
        if len(s.split()) > c.p.max_path_tokens:
            return None  # prose: a sentence that mentions a path is not a path argument
        candidates = []
        for t in _PATH_TOKEN_SPLIT.split(s):
            t = t.strip(_STRIP)
            if "=" in t and "://" not in t:
                t = t.rsplit("=", 1)[1]
            if t and ("/" in t or "\\" in t or "%" in t or t[0] in ".~"):
                candidates.append(t)
    for cand in candidates:
        hit = _check_path(c, cand, 0)
        if hit:
            return hit
    return None


def _decode_path(s: str) -> str:
    for _ in range(3):
        if "%" not in s:
            break
        low = s.lower()
        for enc, dec in _OVERLONG:
            if enc in low:
                s = re.sub(re.escape(enc), dec.replace("\\", "\\\\"), s, flags=re.I)
        decoded = unquote(s)
        if decoded == s:
            break
        s = decoded
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    return s.replace("\\", "/")


def _check_path(c: _Compiled, raw: str, depth: int) -> Optional[tuple[str, str]]:
    s = _decode_path(raw)
    extra: list[str] = []
    if "://" in s[:24]:
        try:
            parts = urlsplit(s)
        except ValueError:
            return None
        s = parts.path
        if depth == 0 and parts.query:
            extra = [v for _, v in parse_qsl(parts.query, keep_blank_values=False)][:16]
    elif s[:5].lower() == "file:":
        s = s[5:]
    home = False
    absolute = s.startswith("/")
    if len(s) > 2 and s[1] == ":" and s[0].isalpha() and s[2:3] == "/":
        s, absolute = s[2:], True  # a Windows drive
    if s.startswith("~"):
        home = True
        s = s[1:]
    comps: list[str] = []
    climbed = 0
    for seg in s.split("/"):
        seg = seg.strip()
        if seg in ("", "."):
            continue
        if seg == "..":
            if comps:
                comps.pop()
            else:
                climbed += 1
            continue
        comps.append(seg.lower())
    why = []
    if climbed:
        start = "home directory" if home else ("root" if absolute else "its start")
        why.append(f"climbs {climbed} level{'s' if climbed > 1 else ''} above {start}")
    sensitive = _sensitive(c, comps, absolute or climbed > 0, home)
    if sensitive:
        why.append(f"names sensitive location {sensitive}")
    if why:
        kind = "traversal" if climbed else "sensitive location"
        return kind, f"{' and '.join(why)} {safe_excerpt(raw, 0, len(raw))}"
    for q in extra:
        hit = _check_path(c, q, depth + 1)
        if hit:
            return hit
    return None


def _sensitive(c: _Compiled, comps: list[str], anchored: bool, home: bool) -> Optional[str]:
    if not comps:
        return None
    n = len(comps)
    for kind, entry, want in c.sensitive:
        k = len(want)
        if kind == "root":
            if anchored and comps[:k] == list(want):
                return entry
            continue
        if kind == "name":
            name = want[0]
            for comp in comps:
                if comp == name:
                    return entry
                if name.startswith(".") and comp.startswith(name + ".") and not comp.endswith(c.templates):
                    return entry
            continue
        # "home" and "seq": the components appear in this order anywhere
        for i in range(n - k + 1):
            if tuple(comps[i : i + k]) == want:
                return entry
    return None


# ---------------------------------------------------------------------------
# tool.ssrf

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,15}):")
_HOSTISH_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.%]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?(?:[/?#].*)?$")


_AUTHORITY_RE = re.compile(r"[^/?#]*")
#: the common authority: a plain host name or IPv4 literal, no user, port, brackets or backslash
_PLAIN_HOST_RE = re.compile(r"[A-Za-z0-9.-]*(?=[/?#]|\Z)")


def _host_of(authority: str) -> str:
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    return authority.split(":", 1)[0] if authority.count(":") <= 1 else authority


def _url_hosts(s: str, start: int) -> list[str]:
    r"""The host of the URL whose authority starts at ``s[start]``, as RFC 3986 / urllib read it
    and, when they differ, as WHATWG URL parsers (browsers, many HTTP clients) do, where a
    backslash ends the authority too ("http://127.0.0.1\@evil.example")."""
    m = _PLAIN_HOST_RE.match(s, start)
    if m is not None:
        return [m.group()]
    authority = _AUTHORITY_RE.match(s, start).group()  # type: ignore[union-attr]
    hosts = [_host_of(authority)]
    if "\\" in authority:
        hosts.append(_host_of(authority.split("\\", 1)[0]))
    return hosts


def _ssrf(c: _Compiled, key: str, value: str, by_name: bool) -> Optional[tuple[str, str]]:
    s = value.strip()
    if not s or len(s) > 4096 or " " in s or "\n" in s or "\t" in s:
        return None  # an argument that *is* a URL or a host, not text around one
    colon = s.find(":", 0, 17)
    if colon > 0:
        scheme = s[:colon].lower()
        if scheme in c.schemes:
            return f"{scheme} scheme", f"{scheme}: URL {safe_excerpt(s, 0, len(s))}"
        if s[colon + 1 : colon + 3] in ("//", "\\\\", "/\\", "\\/"):
            # an explicit URL: decimal, hex and short IPv4 spellings count
            for host in _url_hosts(s, colon + 3):
                label = c.host_cache.get(host, False)
                if label is False:
                    label = _classify_host(c, host, True)
                    if len(c.host_cache) >= 4096:
                        c.host_cache.clear()
                    c.host_cache[host] = label
                if label is not None:
                    return label, f"{label} {safe_excerpt(s, 0, len(s))}"
            # a verdict on the value alone, whatever its key and tool: remembered
            if len(value) <= _CLEAN_MAX_LEN:
                if len(c.ssrf_clean) >= _CLEAN_SIZE:
                    c.ssrf_clean.clear()
                c.ssrf_clean[value] = None
            return None
    # no scheme (or "host:port"): a bare host, in a tool that fetches by name or under a host-like key
    host_key = c.key_profile(key)[1]
    if not (host_key or by_name):
        return None
    if s.startswith("//"):
        s = s[2:]
    if not _HOSTISH_RE.match(s):
        return None
    # outside a host-like key, only unambiguous spellings: a dotted quad, an IPv6 literal, a name
    for host in _url_hosts(s, 0):
        label = _classify_host(c, host, host_key)
        if label is not None:
            return label, f"{label} {safe_excerpt(s, 0, len(s))}"
    return None


def _classify_host(c: _Compiled, host: str, loose: bool) -> Optional[str]:
    if "%" in host:
        host = unquote(host)
    host = host.rstrip(".").lower()
    if not host:
        return None
    if host in c.internal_names:
        return f"host '{host}' ({'loopback' if 'localhost' in host else 'internal / cloud metadata'} name)"
    if host.endswith(c.internal_suffixes):
        return f"host '{host}' (internal name)"
    if ":" in host:
        try:
            ip: Any = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
        return _classify_ip(c, ip, host)
    last = host[host.rfind(".") + 1 :]
    if not last[:1].isdigit():
        # a DNS name: public as far as its spelling tells, unless a wildcard-DNS echo of an IP
        if c.echo_re is not None and host.endswith(c.echo_suffixes):
            m = c.echo_re.search(host)
            if m is not None:
                try:
                    ip = ipaddress.IPv4Address(m.group(1).replace("-", "."))
                except ValueError:
                    return None
                label = _classify_ip(c, ip, host)
                return f"{label} via wildcard DNS" if label else None
        return None
    dotted = host.count(".") == 3 and all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in host.split("."))
    if dotted:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        return _classify_ip(c, ip, host)
    if not loose:
        return None
    ip = _loose_ipv4(host)
    if ip is None:
        return None
    label = _classify_ip(c, ip, host)
    return f"{label}, non-canonical IPv4 spelling" if label else None


def _loose_ipv4(host: str) -> Optional[ipaddress.IPv4Address]:
    """inet_aton(3) reading: 1-4 parts, each decimal, 0x-hex or 0-octal; the last fills the rest."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for part in parts:
        try:
            if part[:2] in ("0x", "0X"):
                nums.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part[0] == "0":
                nums.append(int(part, 8))
            elif part.isdigit():
                nums.append(int(part))
            else:
                return None
        except ValueError:
            return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (4 - len(head))) | last
    return ipaddress.IPv4Address(value)


def _classify_ip(c: _Compiled, ip: Any, shown: str) -> Optional[str]:
    via = ""
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and int(ip) >> 32 == 0x0064FF9B << 64:  # NAT64 64:ff9b::/96
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 0xFFFF:  # IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            via = f" (IPv4 {embedded} embedded in IPv6 {shown})"
            ip = embedded
    for net in c.networks:
        if ip.version == net.version and ip in net:
            return f"{_net_label(ip)} address {ip}{via or (f' (spelled {shown})' if shown != str(ip) else '')}"
    return None


def _net_label(ip: Any) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.version == 4 and any(ip in net for net in _METADATA_V4):
        return "cloud metadata"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NET):
        return "unspecified"
    if ip.is_private:
        return "private"
    return "blocked"


_METADATA_V4 = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("100.100.100.200/32"))
_THIS_NET = ipaddress.ip_network("0.0.0.0/8")


# ---------------------------------------------------------------------------
# tool.secret_exposure


def _secrets(c: _Compiled, key: str, value: str, secret_key: bool) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _REDACTED_RE.finditer(value):
        out.append(("redacted", f"producer redaction marker [REDACTED:{_printable(m.group(1))}] (a credential was present)"))
        break
    for m in _TOKEN_RE.finditer(value):
        kind, _, prefix = _TOKEN_PATTERNS[int(m.lastgroup[1:])]  # type: ignore[index]
        token = m.group(0)
        if _placeholder(c, token) or shannon_entropy(token[prefix:]) < c.p.min_token_entropy:
            continue
        out.append((kind, f"{kind} {_mask(token)}"))
    m = _PRIVATE_KEY_RE.search(value)
    if m is not None:
        body = value[m.end() : m.end() + 200]
        if _KEY_BODY_RE.search(body) or "[REDACTED" in body:
            label = (m.group(1) or "").strip()
            out.append(("private key", f"{label + ' ' if label else ''}private key block"))
    for m in _JWT_RE.finditer(value):
        alg = _jwt_alg(m.group(1))
        if alg is not None:
            out.append(("JWT", f"JWT (alg {_printable(alg)}, {len(m.group(0))} chars, {_mask(m.group(0))})"))
            break
    for m in _BEARER_RE.finditer(value):
        tok = m.group(1)
        if not tok.startswith("eyJ") and _strong(c, tok):
            out.append(("bearer token", f"bearer token ({len(tok)} chars, {_mask(tok)})"))
            break
    if secret_key and not out:
        v = value.strip()
        if " " not in v and _strong(c, v) and not _REDACTED_RE.search(v):
            out.append(("secret-named argument", f"value of secret-named argument '{key}' ({len(v)} chars, entropy {shannon_entropy(v):.1f} bits/char)"))
    for m in _ASSIGN_RE.finditer(value):
        if set(name_words(m.group(1))) & c.non_secret:
            continue
        v = m.group(2).rstrip(".")
        if _REDACTED_RE.search(value[m.start(2) - 1 : m.end(2) + 48]):
            continue
        if _strong(c, v) and not _TOKEN_RE.fullmatch(v):
            out.append(("assignment", f"'{m.group(1)}' assignment with a high-entropy value ({len(v)} chars, entropy {shannon_entropy(v):.1f} bits/char)"))
            break
    return out


def scrub_secrets(text: str) -> str:
    """``text`` with every credential-shaped substring masked (known token formats and JWTs to their
    first and last four characters, assignment values and bearer tokens to ``****``)."""
    if not _SECRET_SHAPES.search(text):
        return text
    text = _TOKEN_RE.sub(lambda m: _mask(m.group(0)), text)
    text = _JWT_RE.sub(lambda m: _mask(m.group(0)), text)
    text = _BEARER_RE.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + "****", text)
    return _ASSIGN_RE.sub(lambda m: m.group(0)[: m.start(2) - m.start(0)] + "****", text)


_SECRET_SHAPES = re.compile(
    "|".join((_TOKEN_RE.pattern, _JWT_RE.pattern, _BEARER_RE.pattern.removeprefix("(?i)"), _ASSIGN_RE.pattern.removeprefix("(?i)"))),
    re.IGNORECASE,
)


def _strong(c: _Compiled, v: str) -> bool:
    return (
        len(v) >= c.p.min_secret_length
        and not _placeholder(c, v)
        and shannon_entropy(v) >= c.p.min_entropy
    )


def _placeholder(c: _Compiled, v: str) -> bool:
    low = v.lower()
    if _ENV_REF_RE.match(v):
        return True
    if any(w in low for w in c.placeholders):
        return True
    # a run of one repeated character ("sk-0000000000", "AKIAXXXXXXXXXXXXXXXX")
    return re.search(r"(.)\1{5,}", v) is not None


def _jwt_alg(header_b64: str) -> Optional[str]:
    try:
        raw = base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if isinstance(header, dict) and isinstance(header.get("alg"), str):
        return header["alg"]
    return None


def _mask(token: str) -> str:
    if len(token) >= 16:
        return f"{token[:4]}…{token[-4:]}"
    return f"{len(token)} chars"


def _printable(s: str) -> str:
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04X}" for ch in s)


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (ArgumentContent,)
