"""An engine's event stream (XPUB) and control socket (ROUTER), bound from `[transport]`.

`Engine.start()` opens no sockets, nor does a config without `[transport]`; a config with
it does (no sockets unless configured). `Engine.start` opens these for
such a config and closes them in `stop()`; the daemon (transport/daemon.py) uses the same
class for its own sockets, beside the metrics, web and webhook servers only it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import zmq

from actors.config import TransportConfig
from actors.errors import ConfigError
from actors.logs import get_logger
from transport.control import ControlServer
from transport.engine_handler import EngineControlHandler
from transport.publisher import Publisher
from transport.security import CurveServer

if TYPE_CHECKING:
    from actors.engine import Engine
    from actors.webhook import WebhookManager

log = get_logger("tradeloom.transport")


#: How long `close()` gives the publisher to send the last committed events.
FINAL_SEND_S = 2.0


class EngineSockets:
    """The publisher and control server of one engine, with CURVE when keys are given.

    `start()` binds both or raises (`TransportError`: a port in use; `ConfigError`: half a
    CURVE key pair; a non-loopback address without CURVE unless `insecure`), leaving
    nothing open. `close()` sends what is committed, then closes; idempotent."""

    def __init__(self, engine: Engine, transport: TransportConfig, *, insecure: bool = False,
                 webhooks: WebhookManager | None = None) -> None:
        self._engine = engine
        self._transport = transport
        self._insecure = insecure
        self._webhooks = webhooks
        self._context: zmq.Context[Any] | None = None
        self._curve: CurveServer | None = None
        self.publisher: Publisher | None = None
        self.control: ControlServer | None = None
        #: What `start()` bound, with the port the OS picked for `tcp://host:*` (or `:0`):
        #: {"events": ..., "control": ...}; kept after `close()`.
        self.endpoints: dict[str, str] = {}

    @classmethod
    def bind_for(cls, engine: Engine, transport: TransportConfig) -> EngineSockets:
        """The sockets of an engine started in-process; if they cannot be bound, the
        engine is stopped and the error raised (Engine.start refuses, leaving nothing)."""
        sockets = cls(engine, transport)
        try:
            sockets.start()
        except BaseException:
            engine.stop()
            raise
        return sockets

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close(final_send_s=0.0)
            raise

    def _start(self) -> None:
        transport, engine = self._transport, self._engine
        self._context = zmq.Context()
        if transport.curve_secret_key_file or transport.curve_authorized_keys_dir:
            self._curve = CurveServer(self._context, _required(
                transport.curve_secret_key_file, "transport.curve_secret_key_file"),
                _required(transport.curve_authorized_keys_dir,
                          "transport.curve_authorized_keys_dir"))
            self._curve.start()
        self.publisher = Publisher(
            transport.events, engine.sink.log.reader(), heartbeat_s=transport.heartbeat_s,
            state_fn=lambda: engine.state.value, context=self._context, curve=self._curve,
            insecure=self._insecure)
        self.publisher.start()
        self.control = ControlServer(transport.control,
                                     EngineControlHandler(
                                         engine, self._webhooks,
                                         heartbeat_s=transport.heartbeat_s),
                                     context=self._context, curve=self._curve,
                                     insecure=self._insecure)
        self.control.start()
        self.endpoints = {"events": self.publisher.endpoint, "control": self.control.endpoint}

    def send_committed(self, timeout: float = FINAL_SEND_S) -> None:
        """Hand every committed event to the socket (bounded): live subscribers get the
        last events without a replay."""
        publisher = self.publisher
        # Only a running publisher sends: one that never bound would only make us wait.
        if publisher is not None and publisher.running and timeout > 0:
            publisher.wait_sent(self._engine.sink.log.committed_seq, timeout)

    def close(self, final_send_s: float = FINAL_SEND_S) -> None:
        self.send_committed(final_send_s)
        stop_servers(self.control, self.publisher)
        self.control = self.publisher = None
        if self._curve is not None:
            self._curve.stop()
            self._curve = None
        if self._context is not None:
            self._context.term()
            self._context = None


class Stoppable(Protocol):
    """A server `stop_servers` can stop (the publisher, control, metrics, web servers)."""

    def stop(self) -> object: ...


def stop_servers(*servers: Stoppable | None) -> None:
    """Stop each server there is; one that fails to stop is logged and the rest go on."""
    for server in servers:
        if server is not None:
            try:
                server.stop()
            except Exception:
                log.exception("server_stop_failed", server=type(server).__name__)


def _required(value: str | None, key: str) -> str:
    if not value:
        raise ConfigError(f"{key} is required when CURVE is configured")
    return value
