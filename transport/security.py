"""CURVE encryption and ZAP client authentication for the daemon's sockets, and client keys.

Server side: one `CurveServer` per zmq context. It loads the daemon's key pair from
`curve_secret_key_file` (as `tradeloom keys DIR --name daemon` writes it: DIR/daemon.key_secret)
and starts `zmq.auth`'s `ThreadAuthenticator` admitting every public key found in
`curve_authorized_keys_dir` (`*.key` files, as `tradeloom keys` writes them). The keys are
read here, not by `zmq.auth`'s directory loader: that one logs a file it cannot read and
then admits no key at all (one stray file locked every client out, `tradeloom halt`
included); here such a file stops start-up, named. `apply(socket)`
makes a socket a CURVE server before it binds; the publisher and the control server share
one `CurveServer`, so one directory authorizes both. A client whose key is not there fails
the handshake: it receives nothing and nothing it sends is delivered.

Client side: `ClientKeys(secret_key_file, server_public_key_file)`.

The rule for plain text: binding a non-loopback address without CURVE is refused unless
`insecure=True` (`check_bind`).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.utils import z85

from actors.logs import get_logger
from transport.errors import TransportError

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

log = get_logger("tradeloom.security")

_TCP = re.compile(r"^tcp://(?:[^;]*;)?(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>[^:]+)$")


def is_loopback(endpoint: str) -> bool:
    """True when `endpoint` is reachable from this machine only: `ipc://`, `inproc://`, or
    `tcp://` on 127.0.0.0/8, ::1, `localhost` or the `lo` interface. Wildcards (`*`), other
    names and addresses are not."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP.match(endpoint)
    if match is None:
        return False
    host = match["host"].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uses_ipv6(endpoint: str) -> bool:
    """True for `tcp://[v6 address]:port`: such a socket needs `ZMQ_IPV6` on, without which
    a bind fails ("No such device") and a connect never connects."""
    match = _TCP.match(endpoint)
    return match is not None and match["host"].startswith("[")


def check_bind(endpoint: str, *, curve: bool, insecure: bool) -> None:
    """Refuse a plain-text bind on an address other machines can reach."""
    if not curve and not insecure and not is_loopback(endpoint):
        raise TransportError(
            f"refusing to bind {endpoint} without CURVE: it is not a loopback address; set "
            "[transport] curve_secret_key_file and curve_authorized_keys_dir, or pass "
            "--insecure (tradeloom daemon)")


#: A CURVE key in a certificate file: 32 bytes as 40 Z85 characters.
_Z85_KEY = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def _load(path: str | Path, *, secret: bool, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (ValueError, IndexError):  # (IndexError: a `public-key` line with no `=`)
        raise TransportError(f"{what} {path}: cannot load a CURVE key: it has no "
                             "public-key line of the form public-key = \"...\"") from None
    except OSError as exc:  # (zmq.auth's own for a missing file has no strerror)
        raise TransportError(f"{what} {path}: cannot load a CURVE key: "
                             f"{exc.strerror or 'no such file'}") from None
    if secret and secret_key is None:
        raise TransportError(f"{what} {path} holds no secret key (use the .key_secret file)")
    for name, key in (("public", public), ("secret", secret_key)):
        # (libzmq takes any 40 bytes, or fails the bind with a bare "Invalid argument".)
        if key is not None and not _is_z85_key(key):
            raise TransportError(f"{what} {path}: its {name}-key is not a CURVE key "
                                 "(40 Z85 characters)")
    return public, secret_key


def _is_z85_key(key: bytes) -> bool:
    """40 Z85 characters that decode (a 5-character group may overflow 32 bits)."""
    if _Z85_KEY.fullmatch(key) is None:
        return False
    try:
        z85.decode(key)
    except Exception:  # noqa: BLE001 - struct.error, ValueError: not a key
        return False
    return True


def authorized_keys(directory: Path) -> frozenset[bytes]:
    """The public keys (Z85) of the `*.key` files in `directory` (not hidden ones, as
    zmq.auth; an editor's `.#name.key` lock is none); a file that holds none, or not a
    well-formed one, or is not a regular file (a FIFO would hang the start), is refused
    naming it."""
    if not directory.is_dir():
        raise TransportError(f"curve_authorized_keys_dir {directory}: not a directory")
    keys = set()
    for path in sorted(directory.glob("*.key")):
        if path.name.startswith(".") or path.is_dir():
            continue
        if not path.is_file():
            raise TransportError(f"curve_authorized_keys_dir file {path}: not a regular file")
        keys.add(_load(path, secret=False, what="curve_authorized_keys_dir file")[0])
    return frozenset(keys)


class _AuthorizedKeys:
    """`zmq.auth`'s credentials provider: admits exactly the keys it was built with."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


class CurveServer:
    """CURVE + ZAP for every server socket of one zmq context.

    Build it, `start()` it before any socket binds, `apply()` it to each server socket (from
    the thread that owns the socket), and `stop()` it after the sockets are closed."""

    def __init__(self, context: zmq.Context[Any], secret_key_file: str | Path,
                 authorized_keys_dir: str | Path) -> None:
        self.public_key, secret = _load(secret_key_file, secret=True,
                                        what="curve_secret_key_file")
        assert secret is not None
        self._secret_key = secret
        self.authorized_keys_dir = Path(authorized_keys_dir)
        self.authorized = authorized_keys(self.authorized_keys_dir)
        if not self.authorized:
            log.warning("curve_no_authorized_keys", directory=str(self.authorized_keys_dir),
                        note="no *.key file: no client can connect")
        self._context = context
        self._auth: ThreadAuthenticator | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._auth is not None:
                return
            from zmq.auth.thread import ThreadAuthenticator  # (a client needs none)

            auth = ThreadAuthenticator(self._context)
            auth.start()
            auth.configure_curve_callback(domain="*",
                                          credentials_provider=_AuthorizedKeys(self.authorized))
            self._auth = auth

    def apply(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_server = True
        socket.curve_secretkey = self._secret_key
        socket.curve_publickey = self.public_key

    def stop(self) -> None:
        with self._lock:
            if self._auth is not None:
                self._auth.stop()
                self._auth = None


class ClientKeys:
    """A client's key pair and the daemon's public key, for `ControlClient` and `Subscriber`.

    `secret_key_file`: the client's `.key_secret` (from `tradeloom keys DIR --name NAME`; its
    `.key` goes into the daemon's authorized keys directory). `server_public_key_file`: the
    daemon's `.key` file. Both are read at construction, so a bad path fails at once."""

    __slots__ = ("_public", "_secret", "_server")

    def __init__(self, secret_key_file: str | Path, server_public_key_file: str | Path) -> None:
        self._public, secret = _load(secret_key_file, secret=True, what="client secret key file")
        assert secret is not None
        self._secret = secret
        self._server, _ = _load(server_public_key_file, secret=False,
                                what="server public key file")

    def apply(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_secretkey = self._secret
        socket.curve_publickey = self._public
        socket.curve_serverkey = self._server
