"""`[web]`: the WebSocket gateway and dashboard (transport/web/), parsed into `WebConfig`.

    [web]
    listen = "127.0.0.1:8450"        # off when absent
    token_env = "TRADELOOM_WEB_TOKEN"  # the env var holding the token; unset: one is generated
    allowed_origins = ["https://ops.example:8450"]  # default: the listener's own origin
    certfile = "web.crt"             # TLS (wss:// and https://); both or neither
    keyfile = "web.key"
    max_clients = 16                 # WebSocket clients at once; more are answered 503

Every error names its key. A `listen` that is not a loopback address must have TLS
(`certfile` and `keyfile`) here; that its token then comes from the environment (never a
generated one) is checked when the gateway starts, where the environment is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.errors import ConfigError
from actors.listen_address import is_loopback_host, parse_listen

#: The environment variable read for the token unless `[web] token_env` names another.
DEFAULT_TOKEN_ENV = "TRADELOOM_WEB_TOKEN"
#: WebSocket clients at once unless `[web] max_clients` says otherwise.
DEFAULT_MAX_CLIENTS = 16

_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True, slots=True)
class WebConfig:
    """The `[web]` table. `listen` None: no gateway (the default)."""

    #: "host:port" ("[::1]:8450" for IPv6; port 0: any free one).
    listen: str | None = None
    #: The environment variable that holds the token; when it is unset or empty, a token is
    #: generated at start and logged once (loopback only).
    token_env: str = DEFAULT_TOKEN_ENV
    #: Origins (scheme://host[:port]) whose pages may open the stream; empty: the
    #: listener's own (http or https, by name and by address).
    allowed_origins: tuple[str, ...] = ()
    #: PEM certificate chain and private key for TLS; required off loopback.
    certfile: str | None = None
    keyfile: str | None = None
    #: WebSocket clients connected at once; a handshake past it is answered 503. Each
    #: holds a few threads: the dashboard is for a handful of operators, not the public.
    max_clients: int = DEFAULT_MAX_CLIENTS

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def host_port(self) -> tuple[str, int]:
        """`listen` as (host, port); ValueError when it is None (parse_web checked it)."""
        if self.listen is None:
            raise ValueError("[web] listen is not set")
        return parse_listen(self.listen, "web.listen")


def parse_web(raw: Mapping[str, Any]) -> WebConfig:
    """The `[web]` table -> `WebConfig`; ConfigError naming the key on any bad value."""
    if not isinstance(raw, Mapping):
        raise ConfigError("[web] must be a table")
    known = {"listen", "token_env", "allowed_origins", "certfile", "keyfile", "max_clients"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown config key 'web.{key}'")
    listen = _optional_str(raw, "listen")
    token_env = _optional_str(raw, "token_env") or DEFAULT_TOKEN_ENV
    if "token_env" in raw and not _ENV_NAME.fullmatch(token_env):
        raise ConfigError(f"web.token_env must be an environment variable name, "
                          f"not {token_env!r}")
    origins = raw.get("allowed_origins", [])
    if not isinstance(origins, list):
        raise ConfigError("web.allowed_origins must be an array of strings")
    for i, origin in enumerate(origins):
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            raise ConfigError(f"web.allowed_origins[{i}] must be an origin such as "
                              f"\"https://host:8450\" (no path), not {origin!r}")
    certfile, keyfile = _optional_str(raw, "certfile"), _optional_str(raw, "keyfile")
    if (certfile is None) != (keyfile is None):
        missing = "keyfile" if keyfile is None else "certfile"
        raise ConfigError(f"web.{missing} is required with web.certfile/web.keyfile (TLS "
                          "needs both)")
    if listen is not None:
        host, _port = parse_listen(listen, "web.listen")
        if not is_loopback_host(host) and certfile is None:
            raise ConfigError(f"web.certfile: web.listen {listen!r} is not a loopback "
                              "address; off this machine the gateway needs TLS (certfile "
                              "and keyfile) and a token from the environment")
    max_clients = raw.get("max_clients", DEFAULT_MAX_CLIENTS)
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) \
            or not 1 <= max_clients <= 1000:
        raise ConfigError(f"web.max_clients must be an integer from 1 to 1000, "
                          f"not {max_clients!r}")
    return WebConfig(listen=listen, token_env=token_env, allowed_origins=tuple(origins),
                     certfile=certfile, keyfile=keyfile, max_clients=max_clients)


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web.{key} must be a non-empty string, not {value!r}")
    return value
