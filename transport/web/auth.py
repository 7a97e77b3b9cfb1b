"""Who may use the gateway: the token and the allowed `Origin`s.

The token comes from the environment variable `[web] token_env` names; when it is unset or
empty, a random one is generated at start (loopback only: off this machine the operator
must set it, so a restart never hands out a fresh one in a log). It travels in the first
WebSocket message only, never in a URL, and is compared in constant time.

`Origin` is checked at the WebSocket handshake: a browser page from elsewhere cannot open
the stream with the operator's cookies or network position. The default list is the
listener's own origin (http or https per TLS, by the configured host, and for a loopback
listener also by `localhost`, `127.0.0.1` and `[::1]`). A request with no `Origin` header at all is
not a browser's (browsers always send it on a WebSocket handshake) and is let through to
the token check.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping

from actors.errors import ConfigError
from actors.listen_address import is_loopback_host
from actors.web_config import WebConfig

#: Bytes of randomness in a generated token (URL-safe base64: 43 characters).
TOKEN_BYTES = 32


def resolve_token(config: WebConfig, env: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """(token, generated): from `config.token_env` in `env` (default os.environ), else a new
    random one. ConfigError when the listener is not loopback and the env var is unset."""
    env = os.environ if env is None else env
    token = env.get(config.token_env, "")
    if token:
        return token, False
    host, _port = config.host_port()
    if not is_loopback_host(host):
        raise ConfigError(f"web.token_env: {config.listen!r} is not a loopback address, so "
                          f"the token must come from the environment; set "
                          f"{config.token_env}")
    return secrets.token_urlsafe(TOKEN_BYTES), True


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison; anything but a non-empty string is wrong."""
    if not isinstance(given, str) or not given:
        return False
    # surrogatepass: JSON's "\ud800" escape decodes to a lone surrogate, which strict
    # UTF-8 refuses; such a token is simply wrong.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def default_origins(host: str, port: int, *, tls: bool) -> tuple[str, ...]:
    """The listener's own origin(s): the scheme by TLS, the host as configured, and for a
    loopback listener the usual names of this machine too."""
    scheme = "https" if tls else "http"
    hosts = [f"[{host}]" if ":" in host else host]
    if is_loopback_host(host):
        hosts += [h for h in ("127.0.0.1", "localhost", "[::1]") if h not in hosts]
    return tuple(f"{scheme}://{h}:{port}" for h in hosts)


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """None (no header: not a browser) passes to the token check; otherwise an exact,
    case-insensitive match of scheme://host[:port]."""
    if origin is None:
        return True
    return origin.lower().rstrip("/") in {a.lower() for a in allowed}
