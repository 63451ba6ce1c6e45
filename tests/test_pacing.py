"""The pacer: even spacing under the limit, pauses on 429, and the rate spec."""

from __future__ import annotations

import random

import anyio
import pytest
from aiolimiter import AsyncLimiter

from bulk_issuer.pacing import DEFAULT_MARGIN, Pacer, Rate
from tests.conftest import most_in_window

pytestmark = pytest.mark.looptime


async def _drive(acquire: object, senders: int, each: int) -> list[float]:
    """Run `senders` tasks that each take `each` slots; return the send times."""
    times: list[float] = []

    async def sender() -> None:
        for _ in range(each):
            await acquire()  # type: ignore[operator]
            times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(senders):
            tg.start_soon(sender)
    return times


@pytest.mark.parametrize("spec", ["5/2s", "50/1s", "3/1s", "150/1m"])
async def test_never_more_than_the_limit_in_any_window(spec: str) -> None:
    """However many senders, no window of P seconds holds more than N sends."""
    rate = Rate.parse(spec)
    pacer = Pacer(rate)
    times = await _drive(pacer.acquire, senders=12, each=max(rate.requests, 10))
    assert most_in_window(times, rate.period) <= rate.requests


async def test_naive_leaky_bucket_breaks_the_window() -> None:
    """The check above can fail: AsyncLimiter(5, 2) puts more than 5 in a 2 s window."""
    # One sender: aiolimiter spins under fake loop time with concurrent waiters.
    limiter = AsyncLimiter(5, 2)
    times = await _drive(limiter.acquire, senders=1, each=12)
    assert most_in_window(times, 2.0) > 5


async def test_spacing_survives_arrival_jitter() -> None:
    """Arrivals up to the margin late still never put N+1 into a server window."""
    rate = Rate(5, 2.0)
    pacer = Pacer(rate)
    times = await _drive(pacer.acquire, senders=8, each=20)
    rng = random.Random(7)
    arrivals = [t + rng.uniform(0, DEFAULT_MARGIN) for t in times]
    assert most_in_window(arrivals, rate.period) <= rate.requests


async def test_uses_at_least_95_percent_of_the_limit() -> None:
    """Sustained, the pacer sends within 5% of the configured rate."""
    rate = Rate(5, 2.0)
    pacer = Pacer(rate)
    times = await _drive(pacer.acquire, senders=6, each=50)
    achieved = (len(times) - 1) / (max(times) - min(times))
    assert achieved >= 0.95 * rate.per_second
    assert achieved <= rate.per_second


async def test_a_429_pauses_every_sender_and_slows_down() -> None:
    """After a 429 nobody sends before Retry-After, and the gap widens for good."""
    rate = Rate(5, 2.0)
    pacer = Pacer(rate)
    gap = pacer.gap
    times: list[float] = []
    paused_at: list[float] = []

    async def sender() -> None:
        for _i in range(10):
            await pacer.acquire()
            times.append(anyio.current_time())
            if len(times) == 7 and not paused_at:
                paused_at.append(anyio.current_time())
                assert pacer.rate_limited_for(3.0) == pytest.approx(3.0)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(sender)
    after = [t for t in times if t > paused_at[0]]
    assert min(after) >= paused_at[0] + 3.0
    assert pacer.gap > gap
    assert most_in_window(times, rate.period) <= rate.requests


async def test_429s_already_on_the_wire_slow_down_once() -> None:
    """Several 429s of one episode widen the gap once, not once each."""
    once, many = Pacer(Rate(5, 2.0)), Pacer(Rate(5, 2.0))
    gap = once.gap
    once.rate_limited_for(None)
    for _ in range(4):
        many.rate_limited_for(None)
    assert many.gap == pytest.approx(once.gap)
    assert many.gap > gap
    assert many.rate_limited == 4


async def test_slowdown_is_bounded() -> None:
    """Repeated episodes never slow the pacer past four times the even spacing."""
    pacer = Pacer(Rate(5, 2.0))
    for _ in range(40):
        pacer.rate_limited_for(0.0)
        await anyio.sleep(pacer.gap * 2)
    assert pacer.gap <= 4 * 2.0 / 5


async def test_unlimited_does_not_wait() -> None:
    """With no rate, acquire returns at once."""
    pacer = Pacer(None)
    start = anyio.current_time()
    await _drive(pacer.acquire, senders=4, each=100)
    assert anyio.current_time() == start
    assert pacer.sent == 400


@pytest.mark.parametrize(
    ("text", "requests", "period"),
    [
        ("5/2s", 5, 2.0),
        ("50/1s", 50, 1.0),
        ("150/1m", 150, 60.0),
        ("10/500ms", 10, 0.5),
        ("7/s", 7, 1.0),
    ],
)
def test_rate_parse(text: str, requests: int, period: float) -> None:
    """Rates read as N/P with a unit."""
    rate = Rate.parse(text)
    assert rate.requests == requests
    assert rate.period == pytest.approx(period)


@pytest.mark.parametrize("text", ["", "5", "five/2s", "5/2 parsecs", "0/1s", "5/0s"])
def test_rate_parse_rejects_with_a_teaching_message(text: str) -> None:
    """A bad rate is a ValueError that shows the form to use."""
    with pytest.raises(ValueError, match=r"5/2s|at least one request"):
        Rate.parse(text)


async def test_a_late_send_pushes_the_next_slot() -> None:
    """A request that left 0.2 s after its slot (a new connection) keeps a full gap behind it."""
    pacer = Pacer(Rate(5, 2.0))
    await pacer.acquire()
    await anyio.sleep(0.2)  # connecting...
    left = anyio.current_time()
    pacer.note_sent()
    await pacer.acquire()
    assert anyio.current_time() - left >= pacer.gap - 0.005 - 1e-6


async def test_an_ordinary_send_does_not_drift_the_grid() -> None:
    """Sends a millisecond after their slot leave the long-run rate untouched."""
    pacer = Pacer(Rate(5, 2.0))
    start = anyio.current_time()
    for _ in range(50):
        await pacer.acquire()
        await anyio.sleep(0.001)
        pacer.note_sent()
    assert anyio.current_time() - start == pytest.approx(49 * pacer.gap + 0.001, abs=1e-3)


async def test_a_request_that_ends_without_an_answer_frees_its_place() -> None:
    """A request without an answer may still arrive, so a window's worth of them holds
    every later one; one that ended without an answer (a timeout, a dropped connection) is
    told to the pacer (`note_ended`), arrived by then at the latest, and frees its place."""
    rate = Rate(2, 1.0)
    for ends in (False, True):
        pacer = Pacer(rate)
        await pacer.acquire()
        pacer.observe(200, {})  # a pacer told of answers

        async def unanswered(pacer: Pacer = pacer, ends: bool = ends) -> None:
            await pacer.acquire()
            pacer.note_sent()
            await anyio.sleep(0.1)
            if ends:
                pacer.note_ended()

        async with anyio.create_task_group() as tg:
            tg.start_soon(unanswered)
            tg.start_soon(unanswered)
        started = anyio.current_time()
        with anyio.move_on_after(30):
            await pacer.acquire()
        waited = anyio.current_time() - started
        if ends:
            assert waited < 2.0
        else:
            assert waited >= 30  # still possibly arriving: nothing more is sent
