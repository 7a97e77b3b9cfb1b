"""`"host:port"` listen addresses, one parser for `[metrics] listen` and `[web] listen`.

Both are checked when the config loads, so a bad one is a one-line `ConfigError` naming its
key before anything starts, never an exception from deep in a bind.
"""

from __future__ import annotations

import ipaddress
import re

from actors.errors import ConfigError

#: A bracketed IPv6 address or a host without ':', '[', ']' or whitespace; an ASCII port
#: (`\d` would take "١٢" or a superscript, which `int()` reads or refuses).
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(?P<port>[0-9]{1,5})")


def parse_listen(listen: object, key: str) -> tuple[str, int]:
    """`"host:port"` (`"[::1]:9464"` for IPv6; port 0: any free one) -> (host, port);
    `ConfigError` naming `key` for anything else (a control character in the host too)."""
    match = _LISTEN.fullmatch(listen) if isinstance(listen, str) else None
    if match is None or int(match["port"]) > 65535 or not match["host"].isprintable():
        raise ConfigError(f'{key} must be "host:port" with a port of 0 to 65535 (e.g. '
                          f'"127.0.0.1:9464", "[::1]:0"), not {listen!r}')
    return match["host"].strip("[]"), int(match["port"])


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and addresses in 127.0.0.0/8 or ::1; names otherwise are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
