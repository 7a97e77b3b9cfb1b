"""`[[webhooks]]`: outbound webhook endpoints, parsed and checked at config load.

    [[webhooks]]
    name = "ops-slack"                      # [A-Za-z0-9_.-]{1,64}, unique: the cursor's name
    url = "https://hooks.example.com/x"     # http or https; no user:password in it
    events = ["execution_failed", "emergency/"]   # types, or topic prefixes (with a "/");
                                            # empty or absent: every event
    secret_env = "OPS_HOOK_SECRET"          # or secret = "..." (one of the two is required)
    timeout_s = 10.0                        # per attempt (DNS, connect, read, write)
    max_attempts = 5                        # per event, before a dead letter
    backoff_initial_s = 1.0                 # then x2 per attempt, with jitter ...
    backoff_max_s = 300.0                   # ... up to this
    batch_max = 1                           # events per POST (> 1: the body is a list)
    allow_private = false                   # true: private/loopback/link-local allowed
    max_dead_letters = 10000                # kept in the journal; past it the oldest go
    auth = { type = "bearer", token_env = "OPS_HOOK_TOKEN" }
    # auth types: bearer (token_env), basic (username, password_env), header (header,
    # token_env: e.g. an api-key header). Auth secrets come from the environment only.

Parsing (`parse_webhooks`) checks names, types and ranges, naming the key
(`webhooks[0].url: ...`). Environment variables are read later, at daemon start
(`resolve_secrets`), so a config can be checked on a machine without the secrets.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.errors import ConfigError

AuthType = Literal["bearer", "basic", "header"]
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
HEADER_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
#: Headers the deliverer sets itself: an auth header may not replace them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "user-agent",
                              "x-tradeloom-event", "x-tradeloom-seq", "x-tradeloom-delivery",
                              "x-tradeloom-timestamp", "x-tradeloom-signature"})
MAX_BATCH = 1000
#: Upper bounds of the other counts: far past any real use; beyond them a value is a typo
#: (max_dead_letters is compared with a SQLite INTEGER count).
MAX_ATTEMPTS = 1000
MAX_DEAD_LETTERS = 10_000_000
#: The longest attempt: a day. A socket timeout of 1e10 s overflows time_t, and then
#: every attempt raised OverflowError (a traceback a second, nothing ever delivered).
MAX_TIMEOUT_S = 86_400.0
#: What an HTTP header value may hold (RFC 9110 field-value: visible ASCII, space, tab).
#: httpx encodes header values as ASCII: a "pässword" raised UnicodeEncodeError at every
#: attempt, and a newline made every attempt a protocol error (the endpoint "down").
HEADER_VALUE_RE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookAuth:
    """`auth = {...}` of one endpoint: how it authenticates us (secrets from env only)."""

    type: AuthType
    #: bearer / header: the environment variable holding the token or key.
    token_env: str | None = None
    #: basic: the user name, and the environment variable holding the password.
    username: str | None = None
    password_env: str | None = None
    #: header: the header's name (e.g. "X-Api-Key").
    header: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookConfig:
    """One `[[webhooks]]` table (see the module docstring for every key)."""

    name: str
    url: str
    events: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)
    secret_env: str | None = None
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    batch_max: int = 1
    allow_private: bool = False
    #: Dead letters kept (state "dead"): one more deletes the oldest, so an endpoint that
    #: refuses every event cannot fill the disk with them.
    max_dead_letters: int = 10_000
    auth: WebhookAuth | None = None

    @property
    def cursor_name(self) -> str:
        """Its cursor in the journal (retention keeps what it has not sent)."""
        return f"webhook:{self.name}"

    def wants(self, event_type: str, topic: str) -> bool:
        """Whether an event of this type and topic goes to this endpoint."""
        if not self.events:
            return True
        return any(topic.startswith(f) if "/" in f else event_type == f for f in self.events)


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """What the environment gave one endpoint at daemon start."""

    #: The HMAC-SHA256 key of X-Tradeloom-Signature.
    signing_key: bytes
    #: (header name, value) of its auth, or None.
    auth_header: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print a secret
        return "WebhookSecrets(<hidden>)"


def parse_webhooks(raw: Any) -> tuple[WebhookConfig, ...]:
    """The `webhooks` array of tables; ConfigError naming the key on any problem."""
    from actors.config_parse import _array, _build

    hooks: list[WebhookConfig] = []
    for i, item in enumerate(_array(raw, "webhooks")):
        where = f"webhooks[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a table")
        hook: WebhookConfig = _build(WebhookConfig, {k: v for k, v in item.items()
                                                     if k != "auth"}, where, exclude={"auth"})
        auth = None
        if "auth" in item:
            auth = _build(WebhookAuth, item["auth"], f"{where}.auth")
            _check_auth(auth, f"{where}.auth")
        hook = dataclasses.replace(hook, auth=auth)
        _check(hook, where)
        if any(hook.name == seen.name for seen in hooks):
            raise ConfigError(f"{where}.name: duplicate webhook name {hook.name!r}")
        hooks.append(hook)
    return tuple(hooks)


def _check(hook: WebhookConfig, where: str) -> None:
    if not NAME_RE.fullmatch(hook.name):
        raise ConfigError(f"{where}.name must match [A-Za-z0-9_.-]{{1,64}}, not {hook.name!r}")
    check_url(hook.url, f"{where}.url")
    _check_literal_address(hook, f"{where}.url")
    if (hook.secret is None) == (hook.secret_env is None):
        raise ConfigError(f"{where}.secret: give exactly one of secret and secret_env "
                          "(every delivery is signed)")
    if hook.secret is not None and not hook.secret:
        raise ConfigError(f"{where}.secret must not be empty")
    if hook.secret_env is not None and not hook.secret_env:
        raise ConfigError(f"{where}.secret_env must name an environment variable")
    checks = [
        (0 < hook.timeout_s <= MAX_TIMEOUT_S,
         f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S:g}"),
        (1 <= hook.max_attempts <= MAX_ATTEMPTS,
         f"max_attempts must be between 1 and {MAX_ATTEMPTS}"),
        (hook.backoff_initial_s > 0, "backoff_initial_s must be > 0"),
        (hook.backoff_max_s >= hook.backoff_initial_s,
         "backoff_max_s must be >= backoff_initial_s"),
        (1 <= hook.batch_max <= MAX_BATCH, f"batch_max must be between 1 and {MAX_BATCH}"),
        (1 <= hook.max_dead_letters <= MAX_DEAD_LETTERS,
         f"max_dead_letters must be between 1 and {MAX_DEAD_LETTERS}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}.{message}")
    for j, entry in enumerate(hook.events):
        if not entry:
            raise ConfigError(f"{where}.events[{j}] must not be empty")
        problem = _events_entry_problem(entry)
        if problem:
            raise ConfigError(f"{where}.events[{j}]: {problem}")


def _events_entry_problem(entry: str) -> str | None:
    """Why an `events` entry can match no event (a typo would otherwise silently filter
    out everything, as `EventSink.subscribe` refuses too); None when it can match."""
    from actors.event_types import SEQUENCED_TYPES
    from actors.topics import prefix_problem

    if "/" in entry:
        return prefix_problem(entry)
    if entry in SEQUENCED_TYPES:
        return None
    return f"unknown event type {entry!r} (known: {', '.join(sorted(SEQUENCED_TYPES))}; or " \
           "a topic prefix such as \"emergency/\")"


def check_url(url: str, key: str) -> None:
    """An absolute http(s) URL with a host and no credentials in it, that the client can
    send to (urlsplit takes a space or newline httpx refuses at every delivery)."""
    import httpx  # here, not at the top: a daemon without webhooks never loads it (~30 ms)

    # Anywhere in it: a space in the host never resolves (an endpoint down for ever, whose
    # cursor holds retention back); one in the path is sent as %20, not what was written.
    if any(c.isspace() for c in url) or not url.isprintable():
        raise ConfigError(f"{key}: whitespace or control characters in the URL: {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        httpx.URL(url)  # an IDNA host it cannot encode, say
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigError(f"{key}: not a valid URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{key} must be an http:// or https:// URL, not {url!r}")
    if not parts.hostname:
        raise ConfigError(f"{key} has no host: {url!r}")
    host = httpx.URL(url).raw_host.decode("ascii")
    try:  # what the resolver does with it: "a..b" or a 64-letter label fails there
        host.encode("idna")
    except UnicodeError:
        raise ConfigError(f"{key}: {host!r} is not a DNS name (a label is empty or longer "
                          f"than 63 characters): {url!r}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: credentials in the URL would be logged; use auth instead")
    if port == 0:
        raise ConfigError(f"{key}: port 0 is not a port: {url!r}")


#: What `inet_aton` reads as an IPv4 address: one to four dot-separated numbers, decimal,
#: octal or hex (a host name has a letter beyond a hex prefix's).
_NUMERIC_IPV4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


def _check_literal_address(hook: WebhookConfig, key: str) -> None:
    """A URL naming a non-public IP address fails now, not at the first delivery (host
    names are checked at connect time: actors/webhook_transport.py)."""
    import ipaddress

    from actors.webhook_transport import is_public

    host = urllib.parse.urlsplit(hook.url).hostname or ""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        # The resolver takes short, decimal and hex IPv4 forms too (127.1, 2130706433,
        # 0x7f000001): each is an address, not a name, and is checked as one.
        if not _NUMERIC_IPV4.fullmatch(host):
            return
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return
    if not hook.allow_private and not is_public(address):
        raise ConfigError(f"{key}: {host} is not a public address (private, loopback or "
                          "link-local); set allow_private = true to allow it")


def _check_auth(auth: WebhookAuth, where: str) -> None:
    needs = {"bearer": ("token_env",), "basic": ("username", "password_env"),
             "header": ("header", "token_env")}[auth.type]
    for key in ("token_env", "username", "password_env", "header"):
        value = getattr(auth, key)
        if key in needs and not value:
            raise ConfigError(f"{where}.{key} is required for auth type {auth.type!r}")
        if key not in needs and value is not None:
            raise ConfigError(f"{where}.{key} does not go with auth type {auth.type!r}")
    if auth.username is not None and ":" in auth.username:
        # RFC 7617: the receiver splits "user:password" at the first colon, so every
        # delivery would be refused (401, a dead letter each) with no hint why.
        raise ConfigError(f"{where}.username must not contain ':'")
    if auth.header is not None and (not HEADER_RE.fullmatch(auth.header)
                                    or auth.header.lower() in RESERVED_HEADERS):
        raise ConfigError(f"{where}.header: {auth.header!r} is not a header an auth key "
                          "may use")


def resolve_secrets(hooks: tuple[WebhookConfig, ...],
                    environ: Mapping[str, str]) -> dict[str, WebhookSecrets]:
    """name -> its secrets, read from `environ` (at daemon start). ConfigError naming the
    key when a variable is unset or empty."""
    import base64

    def env(name: str, key: str) -> str:
        value = environ.get(name)
        if not value:
            raise ConfigError(f"{key}: environment variable {name} is not set (or empty)")
        return value

    def header_value(name: str, key: str) -> str:
        value = env(name, key)
        if not HEADER_VALUE_RE.fullmatch(value):
            raise ConfigError(f"{key}: environment variable {name} holds characters an HTTP "
                              "header cannot carry (only visible ASCII; no newline or "
                              "leading/trailing space)")
        return value

    resolved: dict[str, WebhookSecrets] = {}
    for i, hook in enumerate(hooks):
        where = f"webhooks[{i}]"
        key = hook.secret if hook.secret is not None else env(
            hook.secret_env or "", f"{where}.secret_env")
        header: tuple[str, str] | None = None
        auth = hook.auth
        if auth is not None and auth.type == "bearer":
            header = ("Authorization",
                      f"Bearer {header_value(auth.token_env or '', f'{where}.auth.token_env')}")
        elif auth is not None and auth.type == "basic":
            password = env(auth.password_env or "", f"{where}.auth.password_env")
            pair = base64.b64encode(f"{auth.username}:{password}".encode()).decode()
            header = ("Authorization", f"Basic {pair}")
        elif auth is not None:
            header = (auth.header or "",
                      header_value(auth.token_env or "", f"{where}.auth.token_env"))
        resolved[hook.name] = WebhookSecrets(key.encode(), header)
    return resolved
