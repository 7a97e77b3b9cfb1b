"""The daemon: engine + journal + publisher + control server (+ metrics, + the `[web]`
gateway and dashboard, transport/web/) in one process.

    daemon = Daemon(Config.load("daemon.toml"))
    daemon.start()          # journal recovered, sockets bound, triggers running
    daemon.serve_forever()  # until SIGTERM/SIGINT (a second one exits at once)

Start-up refuses, with one line each: a bad config (the caller's ConfigError), a data_dir
held by another process (JournalLocked, naming its pid), a journal file that is not one, a
port in use, a non-loopback address without CURVE keys (unless `insecure`).

Shutdown (SIGTERM/SIGINT, or `stop()`): no new execution is admitted and queued ones end
cancelled; running ones may finish within `[daemon] shutdown_grace_s`; the rest end
cancelled (their started actions stay as unresolved intents); the journal is flushed and
the last events are handed to the publisher before the sockets close.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import resource
import threading
from typing import TYPE_CHECKING

from actors.config import Config, TransportConfig
from actors.engine import Engine
from actors.logs import get_logger
from actors.triggers import IntervalTriggers
from actors.version import VERSION
from transport.control import ControlServer
from transport.engine_sockets import EngineSockets, stop_servers
from transport.metrics import MetricsServer
from transport.publisher import Publisher
from transport.stop_signals import StopSignals
from transport.web.gateway import WebGateway

if TYPE_CHECKING:
    from actors.webhook import WebhookManager

log = get_logger("tradeloom.daemon")



class Daemon:
    def __init__(self, config: Config, *, insecure: bool = False) -> None:
        # The daemon always keeps a journal: at data_dir, ".tradeloom" unless given.
        self.config = dataclasses.replace(config, daemon=dataclasses.replace(
            config.daemon, data_dir=str(config.daemon.data_dir)))
        self.transport = config.transport or TransportConfig()
        self._insecure = insecure
        self.engine: Engine | None = None
        self.sockets: EngineSockets | None = None
        self.metrics: MetricsServer | None = None
        self.web: WebGateway | None = None  # [web] listen: the gateway and dashboard
        self.webhooks: WebhookManager | None = None
        self._stop_requested = threading.Event()
        self._stopped = False
        self._signals: StopSignals | None = None
        #: False once a stop could not write everything to the journal (a failing disk):
        #: `tradeloom daemon` then exits 1, not the 0 of a clean stop.
        self.clean = True
        #: The open-files limit in force once `start()` raised it (`raise_fd_limit`).
        self.fd_limit: int | None = None

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the journal, recover, bind the sockets, start the triggers. On any failure
        what was started is stopped again and the error is raised."""
        if self.config.daemon.gc_threshold:
            gc.set_threshold(*self.config.daemon.gc_threshold)
        self.fd_limit = raise_fd_limit()
        try:
            self._start()
        except BaseException:
            self._close()
            raise

    def _start(self) -> None:
        # The engine gets no [transport]: its sockets are bound here, beside the servers
        # only the daemon runs (Engine.start would bind them itself).
        self.engine = engine = Engine.start(dataclasses.replace(self.config, transport=None),
                                            _triggers_later=True)
        self.webhooks = self._start_webhooks(engine)
        self.sockets = EngineSockets(engine, self.transport, insecure=self._insecure,
                                     webhooks=self.webhooks)
        self.sockets.start()
        publisher, control = self.sockets.publisher, self.sockets.control
        assert publisher is not None and control is not None  # bound by start()
        if self.config.metrics.listen:
            self.metrics = self._start_metrics(self.config.metrics.listen)
        if self.config.web.listen:
            self.web = WebGateway(self.config.web, engine, warn_at=self.config.emergency.warn_at,
                                  epoch=publisher.epoch)
            self.web.start()
        engine.sink.emit([{"v": 1, "type": "daemon_started", "version": VERSION,
                           "pid": os.getpid(), "events": publisher.endpoint,
                           "control": control.endpoint}])
        engine.triggers.start()  # after daemon_started: no execution's events before it
        log.info("daemon_started", pid=os.getpid(), version=VERSION,
                 events=publisher.endpoint, control=control.endpoint,
                 data_dir=self.config.daemon.data_dir, state=engine.state.value,
                 fd_limit=self.fd_limit)

    def bound_endpoints(self) -> tuple[str, str]:
        """(events, control) as bound, a `*` port as the OS picked it; as configured
        before the sockets are bound."""
        publisher, control = self.publisher, self.control
        if publisher is None or control is None:
            return self.transport.events, self.transport.control
        return publisher.endpoint, control.endpoint

    @property
    def triggers(self) -> IntervalTriggers | None:
        """The engine's interval triggers (the metrics read them), once it is started."""
        return self.engine.triggers if self.engine is not None else None

    @property
    def publisher(self) -> Publisher | None:
        """The event stream's server (the metrics read it), while the sockets are open."""
        return self.sockets.publisher if self.sockets is not None else None

    @property
    def control(self) -> ControlServer | None:
        """The control socket's server (the metrics read it), while the sockets are open."""
        return self.sockets.control if self.sockets is not None else None

    def _start_webhooks(self, engine: Engine) -> WebhookManager | None:
        """One deliverer per `[[webhooks]]` endpoint, each resuming at its journal cursor
        (a missing secret env variable is a ConfigError: exit 2)."""
        if not self.config.webhooks or engine.journal is None:
            return None
        from actors.webhook import WebhookManager  # httpx only when webhooks are on

        webhooks = WebhookManager(self.config.webhooks, engine.journal)
        webhooks.start()
        return webhooks

    def _start_metrics(self, listen: str) -> MetricsServer:
        metrics = MetricsServer(listen, self, insecure=self._insecure)
        metrics.start()
        return metrics

    # -- run and stop ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT request a clean stop; a second one, `REPEAT_SIGNAL_WINDOW_S` or
        more after the first, exits at once (the journal is WAL: what was committed stays
        committed). Handled on a thread of their own (transport/stop_signals.py)."""
        self._signals = StopSignals(on_stop=lambda name: self._stop_requested.set())
        self._signals.install()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def serve_forever(self) -> None:
        """Until a stop is requested; then stop cleanly."""
        while not self._stop_requested.wait(0.5):
            pass
        self.stop()
        if self._signals is not None:
            self._signals.ignore_from_now()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        engine = self.engine
        if engine is not None:
            engine.triggers.stop()
            grace = self.config.daemon.shutdown_grace_s
            engine.sink.emit([{"v": 1, "type": "daemon_stopping", "version": VERSION,
                               "pid": os.getpid()}])
            # (Counted first: the queued ones end cancelled through running slots.)
            running, queued = engine.admission.running, engine.admission.queued
            engine.close_admission("the daemon is stopping")
            log.info("daemon_stopping", running=running, queued_cancelled=queued,
                     grace_s=grace)
            if not engine.wait_idle(grace):
                log.warning("shutdown_grace_over", still_running=engine.admission.running)
        self._close()
        if self._signals is not None:  # (before the line a supervisor may act on)
            self._signals.stop_done = True
        log.info("daemon_stopped")

    def _close(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.stop(close_journal=False)  # the rest end cancelled
            engine.journal_flush()
            if self.sockets is not None:
                self.sockets.send_committed()  # bounded
        if self.webhooks is not None:  # before the journal closes: their cursors commit
            self.webhooks.stop()
        stop_servers(self.web, self.metrics)
        if self.sockets is not None:
            self.sockets.close(final_send_s=0.0)  # the last events were sent above
        if engine is not None and not engine.close_journal():  # (logged, at error level)
            self.clean = False


#: The most open files the daemon asks for (each client connection holds one).
FD_LIMIT_MAX = 65536


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard one (at most FD_LIMIT_MAX) and return the
    soft limit in force (None: no limit). Every client connection (control, stream, web)
    holds a file descriptor, and a daemon out of them refuses new connections (the kill
    switch over a new control connection included) while ZeroMQ's listener retries its
    failing accept() without pause, at 100% of a core. A soft limit of 1024 below a far
    higher hard one is the usual default (systemd's, a login shell's); nothing here uses
    select(), which cannot watch descriptors past 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT_MAX if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_MAX)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # a sandbox may refuse it: keep what there is
            log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return None if soft == resource.RLIM_INFINITY else soft
