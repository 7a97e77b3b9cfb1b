"""One delivery to one webhook endpoint: the signed POST, and its retries.

    sender = Sender(config, secrets, client, sleep=stop_event_wait, wall=time.time)
    outcome = sender.deliver(events)     # events: 1 (a map body) or more (a list body)

Each attempt is a POST of JSON with these headers:

    Content-Type: application/json
    X-Tradeloom-Event: <the event's type>           ("batch" for a list body)
    X-Tradeloom-Seq: <seq>                           ("<first>-<last>" for a list body)
    X-Tradeloom-Delivery: <uuid4 hex, the same on every attempt of this delivery>
    X-Tradeloom-Timestamp: <unix seconds, taken per attempt>
    X-Tradeloom-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

2xx is delivered. Connection errors, timeouts, 408, 429 and 5xx are retried (tenacity:
`backoff_initial_s`, x2 per attempt, jitter, at most `backoff_max_s`; a Retry-After of
seconds or an HTTP date is honoured instead, capped the same), up to `max_attempts` in
all; anything else (other 4xx, a 3xx: redirects are not followed) is final at once.
`sleep(seconds)` is injected (tests observe it; the deliverer passes its stop event's
wait, so a shutdown cuts a backoff short with `WebhookStopped`).
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from actors.errors import WebhookAddressRefused, WebhookAttemptFailed, WebhookError
from actors.json_text import json_text
from actors.logs import get_logger
from actors.webhook_config import WebhookConfig, WebhookSecrets

log = get_logger("tradeloom.webhooks")

#: Statuses worth another attempt (besides every 5xx).
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "tradeloom-webhooks/1"
#: Most bytes of an answer's body read (nobody looks at it; read to reuse the connection).
RESPONSE_BODY_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended. `unreachable`: no HTTP answer at all on the last attempt (the
    endpoint is down or refused by the SSRF guard): the deliverer's breaker, not a dead
    letter."""

    delivered: bool
    delivery_id: str
    attempts: int
    http_status: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    unreachable: bool = False


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The X-Tradeloom-Signature value for a body sent at `timestamp`."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def body_of(events: list[dict[str, Any]], *, as_list: bool = False) -> bytes:
    """The JSON body: the event's map, or a list of maps for a batch (`as_list`: a list
    even of one, as an endpoint with `batch_max > 1` always gets)."""
    value: Any = events[0] if len(events) == 1 and not as_list else events
    # Strict JSON whatever a node's outputs held: NaN as "nan", a bytes key as its text
    # (actors.json_text); plain json.dumps would send `NaN` or raise, every turn, for ever.
    return json_text(value, default=str, ensure_ascii=False).encode()


def retry_after_s(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "¹"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Sender:
    """Posts deliveries for one endpoint through its own client (one thread uses it)."""

    def __init__(self, config: WebhookConfig, secrets: WebhookSecrets, client: httpx.Client,
                 *, sleep: Callable[[float], None], wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.secrets = secrets
        self.client = client
        self.sleep = sleep
        self.wall = wall
        self.monotonic = monotonic
        # initial x 2^(n-1), plus up to `initial` of jitter (capped again in _wait).
        self._backoff = tenacity.wait_exponential(
            multiplier=config.backoff_initial_s, exp_base=2, max=config.backoff_max_s,
        ) + tenacity.wait_random(0, config.backoff_initial_s)

    def deliver(self, events: list[dict[str, Any]], *, max_attempts: int | None = None
                ) -> Outcome:
        """POST `events` until delivered, final, or out of attempts."""
        delivery_id = uuid.uuid4().hex
        # batch_max > 1: always a list, one event too (its receiver parses one form).
        as_list = self.config.batch_max > 1 or len(events) > 1
        body = body_of(events, as_list=as_list)
        attempts = 0
        started = self.monotonic()

        def attempt() -> int:
            nonlocal attempts
            attempts += 1
            return self.post(events, body, delivery_id, as_list=as_list)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max_attempts or self.config.max_attempts),
            wait=self._wait, sleep=self.sleep, reraise=True,
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, WebhookAttemptFailed) and exc.retryable))
        try:
            status = retrying(attempt)
        except WebhookAttemptFailed as exc:
            return Outcome(False, delivery_id, attempts, exc.status, str(exc),
                           unreachable=exc.status is None)
        latency_ms = (self.monotonic() - started) * 1000.0
        return Outcome(True, delivery_id, attempts, status, latency_ms=latency_ms)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, WebhookAttemptFailed) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.config.backoff_max_s)
        return min(float(self._backoff(state)), self.config.backoff_max_s)

    def post(self, events: list[dict[str, Any]], body: bytes, delivery_id: str, *,
             as_list: bool = False) -> int:
        """One attempt: the status on 2xx, else WebhookAttemptFailed. `as_list`: `body` is
        a JSON list (the headers say `batch`, `<first>-<last>`)."""
        timestamp = str(int(self.wall()))
        first, last = events[0], events[-1]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Tradeloom-Event": "batch" if as_list else str(first.get("type")),
            "X-Tradeloom-Seq": (f"{first.get('seq')}-{last.get('seq')}" if as_list
                                else str(first.get("seq"))),
            "X-Tradeloom-Delivery": delivery_id,
            "X-Tradeloom-Timestamp": timestamp,
            "X-Tradeloom-Signature": sign(self.secrets.signing_key, timestamp, body),
        }
        if self.secrets.auth_header is not None:
            name, value = self.secrets.auth_header
            headers[name] = value
        status: int | None = None
        retry_after: str | None = None
        try:
            # Streamed: of the answer's body at most RESPONSE_BODY_MAX bytes are read
            # (a 10 MB or endless body is not held), then the connection is let go.
            with self.client.stream("POST", self.config.url, content=body,
                                    headers=headers) as response:
                status, retry_after = response.status_code, response.headers.get("Retry-After")
                _drain(response)
        except WebhookAddressRefused as exc:
            raise WebhookAttemptFailed(f"refused: {exc}", status=None,
                                       retryable=False) from exc
        except httpx.HTTPError as exc:  # connect/read/write errors, timeouts, bad framing
            if status is None:
                raise WebhookAttemptFailed(f"{type(exc).__name__}: {exc}", status=None,
                                           retryable=True) from exc
            # The status was in: only it counts. A body cut short, dripping past the
            # timeout or badly framed after a 200 once read as "no answer", and the
            # event went again and again while the breaker kept the endpoint down.
            log.info("webhook_answer_body_failed", webhook=self.config.name, status=status,
                     error=f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return status
        retryable = status in RETRY_STATUSES or status >= 500
        reason = f"HTTP {status}"
        if 300 <= status < 400:
            reason += " (redirects are not followed)"
        raise WebhookAttemptFailed(
            reason, status=status, retryable=retryable,
            retry_after_s=retry_after_s(retry_after, self.wall())
            if status in (429, 503) else None)


def _drain(response: httpx.Response) -> None:
    """Read a small body to its end (the connection is then reused); stop at
    RESPONSE_BODY_MAX bytes (closing the response then drops the connection)."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > RESPONSE_BODY_MAX:
            return


__all__ = ["Outcome", "Sender", "WebhookError", "body_of", "retry_after_s", "sign"]
