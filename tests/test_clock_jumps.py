"""A strategy that runs for weeks sees DST switches and wall-clock corrections (NTP steps,
an operator setting the date): the daily_loss reset happens once per local trading day,
never twice for a clock set back, and is not lost for good after a clock that ran ahead
is corrected. Driven by ManualClock.set_wall, which moves the wall clock only."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import EmergencyState, ManualClock
from actors.config import LimitConfig
from actors.risk import RiskBook
from tests.conftest import EngineFactory, Recorder

DAY_S = 86_400.0


def wall(text: str) -> float:
    """A UTC instant, "2026-03-08 20:59"."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def loss_book(clock: ManualClock, *, reset_at: str = "00:00",
              timezone: str = "UTC") -> RiskBook:
    limit = LimitConfig(name="loss", kind="daily_loss", threshold=1e9, reset_at=reset_at,
                        timezone=timezone)
    return RiskBook((limit,), warn_at=0.8, clock=clock)


def value(book: RiskBook) -> float:
    return float(book.stats()["loss"]["value"])


def test_a_clock_set_back_an_hour_across_the_reset_does_not_reset_again() -> None:
    clock = ManualClock(start_wall=wall("2026-06-01 23:50"))
    book = loss_book(clock)
    book.update("loss", delta=100.0)
    clock.set_wall(wall("2026-06-02 00:10"))           # the day's reset
    book.update("loss", delta=10.0)
    clock.set_wall(wall("2026-06-01 23:10"))           # NTP steps back an hour
    book.update("loss", delta=20.0)
    clock.set_wall(wall("2026-06-02 00:05"))           # past 00:00 a second time
    assert value(book) == 30.0
    clock.set_wall(wall("2026-06-03 00:01"))           # the next day's reset still comes
    assert value(book) == 0.0


def test_a_clock_stepping_a_day_ahead_resets_once_and_not_again_at_the_same_day() -> None:
    clock = ManualClock(start_wall=wall("2026-06-01 12:00"))
    book = loss_book(clock)
    book.update("loss", delta=100.0)
    clock.set_wall(wall("2026-06-02 12:00"))           # steps forward a day: a new day
    assert value(book) == 0.0
    book.update("loss", delta=40.0)
    clock.set_wall(wall("2026-06-01 12:30"))           # corrected: back one day
    book.update("loss", delta=5.0)
    clock.set_wall(wall("2026-06-02 00:01"))           # that day already had its reset
    assert value(book) == 45.0
    clock.set_wall(wall("2026-06-03 00:01"))
    assert value(book) == 0.0


def test_after_a_clock_that_ran_a_year_ahead_is_corrected_resets_come_daily() -> None:
    clock = ManualClock(start_wall=wall("2026-06-01 12:00"))
    book = loss_book(clock, reset_at="17:00", timezone="America/New_York")
    book.update("loss", delta=100.0)
    clock.set_wall(wall("2027-06-01 12:00"))           # NTP steps a year ahead
    book.update("loss", delta=10.0)
    clock.set_wall(wall("2026-06-01 12:05"))           # ... and is corrected
    book.update("loss", delta=50.0)
    assert value(book) == 60.0                         # the figure is kept ...
    clock.set_wall(wall("2026-06-01 21:01"))           # ... until 17:01 EDT that day
    assert value(book) == 0.0
    book.update("loss", delta=7.0)
    clock.set_wall(wall("2026-06-02 21:01"))
    assert value(book) == 0.0


def test_a_day_saved_by_a_clock_running_ahead_does_not_stop_resets_after_restart() -> None:
    ahead = ManualClock(start_wall=wall("2027-06-01 12:00"))
    first = loss_book(ahead)
    first.update("loss", delta=300.0)
    saved = first.snapshot()
    clock = ManualClock(start_wall=wall("2026-06-01 12:00"))  # restarted, clock corrected
    book = loss_book(clock)
    book.restore(saved)
    assert value(book) == 300.0
    clock.set_wall(wall("2026-06-02 00:01"))
    assert value(book) == 0.0


def test_a_book_started_in_the_repeated_hour_after_the_reset_does_not_reset_again() -> None:
    # New York went back on 2026-11-01: 01:15 EDT (05:15 UTC) was that day's reset;
    # 01:05 EST (06:05 UTC) comes after it, and 01:15 EST must not be a second one.
    clock = ManualClock(start_wall=wall("2026-11-01 06:05"))
    book = loss_book(clock, reset_at="01:15", timezone="America/New_York")
    book.update("loss", delta=100.0)
    clock.set_wall(wall("2026-11-01 06:16"))           # 01:16 EST
    assert value(book) == 100.0
    clock.set_wall(wall("2026-11-02 06:16"))           # 01:16 EST the next day
    assert value(book) == 0.0


def test_a_non_hour_offset_zone_resets_at_its_own_midnight() -> None:
    # Kathmandu is UTC+05:45 all year: its midnight is 18:15 UTC.
    clock = ManualClock(start_wall=wall("2026-06-01 18:14"))
    book = loss_book(clock, timezone="Asia/Kathmandu")
    book.update("loss", delta=100.0)
    clock.set_wall(wall("2026-06-01 18:16"))
    assert value(book) == 0.0


def test_a_wall_clock_jump_neither_makes_a_feed_stale_nor_keeps_it_fresh(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    feed = {"name": "feed", "kind": "custom", "threshold": 1e9, "auto_halt": False,
            "stale_after_s": 30.0}
    barrier = {"name": "barrier", "kind": "custom", "threshold": 1.0, "auto_halt": False}
    engine = make_engine({"emergency": {"limits": [feed, barrier]}}, clock=clock)
    rec = Recorder().follow(engine)
    clock.set_wall(clock.time() + 365 * DAY_S)         # a year ahead: not thirty seconds
    clock.advance(10.0)
    engine.risk_update("feed", value=1.0)              # fed: silent from here
    clock.set_wall(clock.time() - 2 * 365 * DAY_S)     # a year behind: the silence counts
    clock.advance(29.0)
    engine.risk_update("barrier", value=0.0)           # the watchdog's tick is handled
    assert engine.state is EmergencyState.NORMAL and not rec.of_type("emergency_state_changed")
    clock.advance(1.0)                                 # 30 s of monotonic silence
    (event,) = rec.wait_type("emergency_state_changed")
    assert (event["state"], event["source"]) == ("ALERT", "stale_feed")


# -- exactly one reset per local trading day, around real DST switches -------------------------

ZONES = ("America/New_York", "Europe/London", "Asia/Kathmandu", "Australia/Lord_Howe",
         "America/Santiago", "Pacific/Chatham", "America/St_Johns", "Africa/Casablanca",
         "Europe/Dublin", "UTC")


@functools.cache
def offset_changes(zone_name: str, year: int) -> tuple[float, ...]:
    """The instants (to the half hour) at which the zone's UTC offset changed that year."""
    zone = ZoneInfo(zone_name)
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    found, previous = [], datetime.fromtimestamp(start, zone).utcoffset()
    for half_hour in range(1, 366 * 48):
        t = start + half_hour * 1800.0
        offset = datetime.fromtimestamp(t, zone).utcoffset()
        if offset != previous:
            found.append(t)
        previous = offset
    return tuple(found) or (start + 180 * DAY_S,)


def reset_instant(date: datetime, minutes: int, zone: ZoneInfo) -> float:
    """The first instant whose local wall-clock time is at or after `date` + `minutes`: in
    a repeated hour its first occurrence; a reset time a DST gap skips falls at the end of
    the gap (found by bisection over the gap, where local time only moves forward)."""
    target = (date + timedelta(minutes=minutes)).replace(tzinfo=None)
    first = int(target.replace(tzinfo=zone, fold=0).timestamp())
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == target:
        return float(first)
    low, high = int(target.replace(tzinfo=zone, fold=1).timestamp()), first
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= target:
            high = mid
        else:
            low = mid
    return float(high)


@settings(max_examples=60, deadline=None)
@given(zone_name=st.sampled_from(ZONES), year=st.integers(2024, 2028),
       which=st.integers(0, 5), minutes=st.integers(0, 24 * 60 - 1),
       lead_h=st.integers(0, 72), steps=st.lists(st.integers(60, 6 * 3600), min_size=30,
                                                 max_size=60))
def test_exactly_one_reset_per_local_trading_day(zone_name: str, year: int, which: int,
                                                 minutes: int, lead_h: int,
                                                 steps: list[int]) -> None:
    zone = ZoneInfo(zone_name)
    changes = offset_changes(zone_name, year)
    start = changes[which % len(changes)] - lead_h * 3600.0
    clock = ManualClock(start_wall=start)
    book = loss_book(clock, reset_at=f"{minutes // 60:02d}:{minutes % 60:02d}",
                     timezone=zone_name)
    book.update("loss", delta=1.0)
    first_date = datetime.fromtimestamp(start, zone).replace(hour=0, minute=0, second=0,
                                                             microsecond=0) - timedelta(days=2)
    resets = [reset_instant(first_date + timedelta(days=n), minutes, zone) for n in range(30)]
    before = start
    for step in steps:
        now = before + step
        clock.set_wall(now)
        reset_due = any(before < r <= now for r in resets)
        after = book.update("loss", delta=1.0).limit.value
        assert (after == 1.0) == reset_due, (datetime.fromtimestamp(now, zone), after)
        before = now


@settings(max_examples=60, deadline=None)
@given(zone_name=st.sampled_from(ZONES), year=st.integers(2024, 2028),
       which=st.integers(0, 5), minutes=st.integers(0, 24 * 60 - 1),
       steps=st.lists(st.integers(-20 * 3600, 6 * 3600), min_size=20, max_size=60))
def test_a_clock_stepping_back_less_than_a_day_never_resets_a_day_twice(
        zone_name: str, year: int, which: int, minutes: int, steps: list[int]) -> None:
    changes = offset_changes(zone_name, year)
    clock = ManualClock(start_wall=changes[which % len(changes)] - DAY_S)
    book = loss_book(clock, reset_at=f"{minutes // 60:02d}:{minutes % 60:02d}",
                     timezone=zone_name)
    book.update("loss", delta=1.0)
    reset_days = [book.limits["loss"].day]
    newest = clock.time()
    for step in steps:
        newest = max(newest, clock.time() + step)
        clock.set_wall(max(clock.time() + step, newest - 20 * 3600))  # < a day behind
        if book.update("loss", delta=1.0).limit.value == 1.0:
            reset_days.append(book.limits["loss"].day)
    assert reset_days == sorted(set(reset_days)), reset_days   # each day once, in order
    latest = max(reset_days)
    clock.set_wall(clock.time() + 3 * DAY_S)             # the days go on: a reset comes
    assert book.update("loss", delta=1.0).limit.value == 1.0
    assert book.limits["loss"].day > latest
