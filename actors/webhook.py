"""Outbound webhooks: one deliverer thread per `[[webhooks]]` endpoint, each a durable
cursor over the journal.

    manager = WebhookManager(config.webhooks, journal)     # secrets from the environment
    manager.start()       # after the engine: each cursor resumes where it stopped
    manager.failed(name=None) / manager.retry(name=None, ids=()) / manager.log(name=None)
    manager.delete(name=None, ids=())    # dead letters, a removed endpoint's included
    manager.stop()        # before the journal closes

A deliverer reads only committed events, from the journal (never from the engine's
in-memory log, so a dead endpoint holds nothing but its cursor), a page at a time, in seq
order, and POSTs those its `events` filter wants (`batch_max` per POST; actors/
webhook_delivery.py). It never slows the engine: it shares nothing with it but the
journal's committed data, and its cursor and records go through the journal's writer
queue like any other record.

- Delivered: the cursor moves past it (registered with the journal at most every
  CURSOR_EVERY_S, and at stop, so retention never prunes what it has not sent; a restart
  resends from the registered cursor: at least once; receivers de-duplicate by seq).
- Final failure (a 4xx other than 408/429, a 3xx, or the retries used up on 408/429/5xx):
  the events go to the dead-letter table and the cursor moves on. `retry` re-queues dead
  letters; the deliverer sends them again between pages (out of seq order); `delete`
  deletes them (those of an endpoint since removed from the config too). Each endpoint
  keeps at most `max_dead_letters`: past it, its oldest dead letters are deleted (in the
  commit that adds the new one), counted in its status (`dropped`), and a warning says so
  the first time and then at most every DROP_WARN_EVERY_S.
- Unreachable (no HTTP answer on the last attempt: connection refused, timeouts, an
  address the SSRF guard refuses): its breaker opens and the deliverer pauses, holding its
  cursor, probing with one attempt after a pause that doubles up to `backoff_max_s`; when
  a probe gets through it catches up, a page at a time.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from actors.errors import NotFound, WebhookStopped
from actors.events import topic_of
from actors.inbox import MAX_WAIT_S
from actors.journal import Journal
from actors.logs import get_logger
from actors.throttled_log import ThrottledWarning
from actors.webhook_config import WebhookConfig, WebhookSecrets, resolve_secrets
from actors.webhook_delivery import Outcome, Sender
from actors.webhook_store import WebhookStore
from actors.webhook_transport import Resolver, make_client, system_resolver

log = get_logger("tradeloom.webhooks")

#: Events read from the journal per page (the most a deliverer holds at once).
PAGE = 256
#: How long an idle deliverer waits for a commit before it looks at its stop flag again.
IDLE_WAIT_S = 0.2
#: The cursor is registered with the journal at most this often while busy (and at stop).
CURSOR_EVERY_S = 0.5
#: Re-queued dead letters sent per turn.
LETTERS_PER_TURN = 100
#: At most one `webhook_dead_letters_dropped` warning per endpoint this often.
DROP_WARN_EVERY_S = 60.0
#: Dead letters are logged one line each at first, then one summary line at most this
#: often (an endpoint refusing every event would otherwise write a log line per event).
DEAD_WARN_EVERY_S = 10.0


class Deliverer:
    """One endpoint's thread, client, cursor and breaker."""

    def __init__(self, hook: WebhookConfig, secrets: WebhookSecrets, journal: Journal,
                 store: WebhookStore, *, resolver: Resolver = system_resolver,
                 sleep: Callable[[float], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.hook = hook
        self.journal = journal
        self.store = store
        self._stopping = threading.Event()
        self._letters = threading.Event()
        self._letters.set()  # letters re-queued before a restart are sent too
        #: The last re-queued letter sent in this round of pages: the next page starts
        #: after it (its "delivered" may not be committed yet, so it can still read as
        #: queued). 0: from the oldest. Written by this deliverer's thread only.
        self._letters_after = 0
        #: Bumped by each `retry` (another thread), seen by the next page, which then
        #: starts from the oldest: a reset written from there was overwritten by a page
        #: under way, and the letters re-queued below its position were never sent.
        self._retries = 0
        self._retries_seen = 0
        self.client = make_client(timeout_s=hook.timeout_s, allow_private=hook.allow_private,
                                  resolver=resolver, name=hook.name)
        self._inject_sleep = sleep
        self.sender = Sender(hook, secrets, self.client, sleep=self._sleep)
        self.next_seq = 0
        self._registered = 0
        self._registered_at = 0.0
        self._thread: threading.Thread | None = None
        self.breaker_open = False
        self._down_streak = 0
        # counters for status
        self.delivered = 0
        self.deliveries = 0
        self.last_error: str | None = None
        #: Dead letters since the start (`dead`): logged the first time, then at most
        #: every DEAD_WARN_EVERY_S with the last one's details and how many since.
        self.dead_letters = ThrottledWarning(
            log, "webhook_dead_letter", every_s=DEAD_WARN_EVERY_S, monotonic=monotonic,
            since_key="dead_since_last_line", total_key="dead_total", webhook=hook.name)
        #: Dead letters deleted to keep max_dead_letters, the oldest first (`dropped`).
        self.drops = ThrottledWarning(
            log, "webhook_dead_letters_dropped", every_s=DROP_WARN_EVERY_S,
            monotonic=monotonic, since_key="dropped", total_key="dropped_total",
            webhook=hook.name, max_dead_letters=hook.max_dead_letters)

    def _sleep(self, seconds: float) -> None:
        """Between attempts: the injected sleep (tests), else the stop flag's wait."""
        if self._inject_sleep is not None:
            self._inject_sleep(seconds)
        else:
            # In steps: a `backoff_max_s` of 1e12 overflowed one wait (an OverflowError
            # every turn: the endpoint retried each second instead of backing off).
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if self._stopping.wait(min(left, MAX_WAIT_S)):
                    raise WebhookStopped("stopping")
        if self._stopping.is_set():
            raise WebhookStopped("stopping")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.next_seq = self.store.start_seq(self.hook, self.journal.last_committed_seq())
        self._registered = self.next_seq - 1
        self._thread = threading.Thread(
            target=self._run, name=f"tradeloom-webhook-{self.hook.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop the thread (an attempt in flight is given `timeout`); register the cursor."""
        self._stopping.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if stopped:
            self.client.close()
        return stopped

    def wake_letters(self) -> None:
        self._retries += 1  # (before the flag: the page it wakes sees the bump)
        self._letters.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._loop()
            except WebhookStopped:
                break
            except Exception as exc:  # a deliverer must outlive a bad turn
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("webhook_turn_failed", webhook=self.hook.name)
                self._stopping.wait(1.0)
        self._register(force=True)
        self.dead_letters.flush(now=True)
        self.drops.flush(now=True)

    def _loop(self) -> None:
        hook = self.hook
        while not self._stopping.is_set():
            self.dead_letters.flush()
            self.drops.flush()
            if self._letters.is_set():
                self._letters.clear()
                self._send_letters()
            if not self.journal.wait_committed(self.next_seq, IDLE_WAIT_S):
                self._register(force=True)
                continue
            events = self.journal.read_events(self.next_seq, PAGE)
            if not events:  # committed but gone: only retention without our cursor
                committed = self.journal.last_committed_seq()
                log.warning("webhook_skipped_unreadable", webhook=hook.name,
                            since_seq=self.next_seq, committed_seq=committed)
                self._passed(committed)
                continue
            wanted = [e for e in events if hook.wants(str(e.get("type")), topic_of(e))]
            for i in range(0, len(wanted), hook.batch_max):
                # A stop is taken between POSTs: with a backlog and a slow endpoint, a page
                # (PAGE events) outlasted the stop's budget and the cursor went unregistered
                # (the endpoint got what it had been sent again after the restart).
                if self._stopping.is_set():
                    return
                chunk = wanted[i:i + hook.batch_max]
                self._deliver(chunk)
                self._passed(int(chunk[-1]["seq"]))
            self._passed(int(events[-1]["seq"]))

    # -- delivering --------------------------------------------------------------------------

    def _deliver(self, chunk: list[dict[str, Any]]) -> None:
        """Until delivered or dead-lettered; while unreachable, pause and probe."""
        while True:
            outcome = self.sender.deliver(chunk, max_attempts=1 if self.breaker_open else None)
            self.deliveries += 1
            if outcome.delivered:
                self._reachable()
                self.delivered += len(chunk)
                self._log(chunk, outcome, "delivered")
                return
            self.last_error = outcome.error
            if outcome.unreachable:
                self._unreachable(chunk, outcome)
                continue
            if self.breaker_open:  # a probe got an answer: back to full attempts
                self._reachable()
                continue
            self.dead_letters.add(len(chunk), first_seq=chunk[0]["seq"],
                                  last_seq=chunk[-1]["seq"], attempts=outcome.attempts,
                                  http_status=outcome.http_status, error=outcome.error)
            dropped = 0
            for event in chunk:
                dropped += self.store.dead_letter(
                    self.hook.name, event, attempts=outcome.attempts,
                    http_status=outcome.http_status, error=outcome.error,
                    max_dead_letters=self.hook.max_dead_letters)
            self._log(chunk, outcome, "dead")
            if dropped > 0:
                self.drops.add(dropped)
            return

    def _unreachable(self, chunk: list[dict[str, Any]], outcome: Outcome) -> None:
        hook = self.hook
        if not self.breaker_open:
            self.breaker_open = True
            log.warning("webhook_endpoint_down", webhook=hook.name, seq=chunk[0]["seq"],
                        error=outcome.error)
            self._log(chunk, outcome, "unreachable")
        self.dead_letters.flush()  # (a probe loop can last: what a burst held back is told)
        self.drops.flush()
        pause = min(hook.backoff_initial_s * 2 ** min(self._down_streak, 30),
                    hook.backoff_max_s)
        self._down_streak += 1
        self._sleep(pause * random.uniform(0.5, 1.0))  # jitter, not secrecy

    def _reachable(self) -> None:
        if self.breaker_open:
            log.info("webhook_endpoint_back", webhook=self.hook.name)
        self.breaker_open = False
        self._down_streak = 0

    def _send_letters(self) -> None:
        """One page of re-queued letters, then back to new events; a full page sets the
        flag again, so the next turn sends the next page (only the first page was sent,
        and the rest stayed queued with nothing to show for it)."""
        retries = self._retries
        if retries != self._retries_seen:
            self._retries_seen = retries
            self._letters_after = 0
        page = self.store.queued(self.hook.name, LETTERS_PER_TURN, after_id=self._letters_after)
        for letter_id, _attempts, event in page:
            if self._stopping.is_set():
                self._letters.set()
                return
            outcome = self.sender.deliver([event])
            if outcome.unreachable:
                self._letters.set()  # still queued: the next turn tries again
                self._unreachable([event], outcome)
                return
            self._letters_after = letter_id
            # An answer came (whatever its status): the endpoint is up, as after a normal
            # delivery or probe; else its breaker stayed "open" until the next new event.
            self._reachable()
            if outcome.delivered:  # (counted as any delivery: it was one)
                self.delivered += 1
            state = "delivered" if outcome.delivered else "dead"
            self.store.letter_state(letter_id, state, endpoint=self.hook.name,
                                    attempts=outcome.attempts,
                                    http_status=outcome.http_status, error=outcome.error)
            self._log([event], outcome, f"retry_{state}")
        if len(page) == LETTERS_PER_TURN:
            self._letters.set()  # more may wait: the next page after the next turn's events
        else:
            self._letters_after = 0  # all sent: the next `retry` starts from the oldest

    def _log(self, chunk: list[dict[str, Any]], outcome: Outcome, what: str) -> None:
        self.store.log(self.hook.name, outcome.delivery_id, chunk, outcome=what,
                       attempts=outcome.attempts, http_status=outcome.http_status,
                       latency_ms=outcome.latency_ms, error=outcome.error)

    def _passed(self, seq: int) -> None:
        self.next_seq = max(self.next_seq, seq + 1)
        self._register()

    def _register(self, force: bool = False) -> None:
        seq = self.next_seq - 1
        now = time.monotonic()
        if seq > self._registered and (force or now - self._registered_at >= CURSOR_EVERY_S):
            self.store.advance(self.hook, seq)
            self._registered, self._registered_at = seq, now

    def status(self) -> dict[str, Any]:
        return {"name": self.hook.name, "url": self.hook.url, "next_seq": self.next_seq,
                "breaker": "open" if self.breaker_open else "closed",
                "delivered": self.delivered, "dead": self.dead_letters.total,
                "dropped": self.drops.total,
                "max_dead_letters": self.hook.max_dead_letters,
                "deliveries": self.deliveries, "last_error": self.last_error}


class WebhookManager:
    """The daemon's webhooks: their deliverers and the control ops over their state."""

    def __init__(self, hooks: tuple[WebhookConfig, ...], journal: Journal, *,
                 environ: Mapping[str, str] | None = None,
                 resolver: Resolver = system_resolver,
                 sleep: Callable[[float], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        secrets = resolve_secrets(hooks, os.environ if environ is None else environ)
        self.store = WebhookStore(journal)
        self.deliverers = {hook.name: Deliverer(hook, secrets[hook.name], journal,
                                                self.store, resolver=resolver, sleep=sleep,
                                                monotonic=monotonic)
                           for hook in hooks}
        self._hooks = hooks

    def start(self) -> None:
        for name in self.store.forget_others(self._hooks):
            log.info("webhook_cursor_dropped", cursor=name)
        unqueued = self.store.unqueue_removed(self._hooks)
        if unqueued:
            log.warning("webhook_letters_unqueued", count=unqueued,
                        why="their endpoint is no longer configured: dead letters again")
        for deliverer in self.deliverers.values():
            deliverer.start()

    def stop(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for deliverer in self.deliverers.values():
            deliverer._stopping.set()
        for deliverer in self.deliverers.values():
            if not deliverer.stop(max(0.0, deadline - time.monotonic())):
                log.warning("webhook_stop_abandoned", webhook=deliverer.hook.name)
        self.store.close()

    # -- control ops -------------------------------------------------------------------------

    def _check(self, name: str | None, *, removed: bool = False) -> None:
        """NotFound unless `name` is None or configured (with `removed`: or an endpoint
        since removed from the config whose dead letters the journal still holds)."""
        if name is None or name in self.deliverers:
            return
        held = self.store.held(name)
        if removed and held:
            return
        raise NotFound(f"no webhook named {name!r}; configured: "
                       f"{', '.join(sorted(self.deliverers)) or 'none'}" + (
                           f"; {held} dead letter(s) of it are left from before: nothing can "
                           "send them (list them with `webhooks failed --name`, delete them"
                           " with `webhooks delete --name`)" if held else ""))

    def failed(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self._check(name, removed=True)
        return self.store.failed(name, limit)

    def retry(self, name: str | None = None, ids: tuple[int, ...] = ()) -> dict[str, Any]:
        self._check(name)
        # Only letters a configured endpoint will send: a letter of an endpoint since
        # removed (or renamed) would leave `failed` as "queued" and never be sent.
        letters = self.store.letters(ids)
        for letter_id, (endpoint, state) in letters.items():
            if state == "dead" and endpoint not in self.deliverers:
                raise NotFound(f"dead letter {letter_id} is of webhook {endpoint!r}, not "
                               "configured: no endpoint would send it (delete it with "
                               f"`webhooks delete --id {letter_id}`)")
        requeued = self.store.requeue(name, ids, endpoints=frozenset(self.deliverers))
        if ids and not requeued.count:
            raise NotFound(_none_done(ids, letters))
        for deliverer in self.deliverers.values():
            deliverer.wake_letters()
        return {"requeued": requeued.ids, "count": requeued.count}

    def delete(self, name: str | None = None, ids: tuple[int, ...] = ()) -> dict[str, Any]:
        """Delete dead letters: these ids (of `name` when given), else all of `name`'s; an
        endpoint removed from the config included. ValueError with neither: every
        endpoint's letters go only by naming each."""
        if name is None and not ids:
            raise ValueError("name a webhook or dead letter ids to delete")
        self._check(name, removed=True)
        deleted = self.store.delete(name, ids)
        if ids and not deleted.count:
            raise NotFound(_none_done(ids, self.store.letters(ids[:5])))
        return {"deleted": deleted.ids, "count": deleted.count}

    def log(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self._check(name, removed=True)
        return self.store.deliveries(name, limit)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each configured endpoint's state (`name`: that one's; none for one removed)."""
        return [d.status() for d in self.deliverers.values()
                if name is None or d.hook.name == name]


def _none_done(ids: tuple[int, ...], letters: dict[int, tuple[str, str]]) -> str:
    """Why none of `ids` was re-queued or deleted (`letters`: id -> (endpoint, state)): a
    second retry of an id finds it queued (or sent) already."""
    reasons = [f"no dead letter with id {i}" if i not in letters
               else f"dead letter {i} is {letters[i][1]} already" if letters[i][1] != "dead"
               else f"dead letter {i} is of webhook {letters[i][0]!r}" for i in ids[:5]]
    more = f" (and {len(ids) - 5} more ids)" if len(ids) > 5 else ""
    return "; ".join(reasons) + more
