"""The sandbox's server-side rate limit models, on hand-picked timelines (5 per 2 s)."""

from __future__ import annotations

import argparse
import copy

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_issuer.pacing import read_hints
from bulk_issuer.sandbox import SandboxConfig, run_sandbox
from bulk_issuer.sandbox import cli as sandbox_cli
from bulk_issuer.sandbox.limits import (
    FixedWindow,
    MovingWindow,
    RateLimitModel,
    SlidingWindowCounter,
    TokenBucket,
    make_limiter,
    max_in_window,
)
from bulk_issuer.sandbox.ratelimit_headers import ratelimit_headers

MODELS = ["fixed", "moving", "sliding", "bucket"]


def hits(model: RateLimitModel, times: list[float]) -> list[bool]:
    """Feed ``times`` to ``model`` and return which were accepted."""
    return [model.hit(t) for t in times]


def test_fixed_window_resets_at_aligned_boundary() -> None:
    """A fixed window takes 5 at t=1.9 and 5 more at t=2.0: a new window has begun."""
    limiter = FixedWindow(5, 2.0)
    assert hits(limiter, [1.9] * 6) == [True] * 5 + [False]
    assert hits(limiter, [2.0] * 5) == [True] * 5
    assert limiter.hit(2.0) is False


def test_fixed_window_retry_after_is_time_to_boundary() -> None:
    """When full, a fixed window says to come back when the window ends."""
    limiter = FixedWindow(5, 2.0)
    assert limiter.retry_after(0.5) == 0.0
    hits(limiter, [0.5] * 7)  # the rejected knocks count too, and change nothing
    assert limiter.retry_after(0.5) == pytest.approx(1.5)
    assert limiter.hit(1.999) is False
    assert limiter.hit(2.0) is True


def test_moving_window_rejects_the_boundary_burst() -> None:
    """A moving window takes 5 at t=1.9 but none at t=2.0, and tells to wait until t=3.9."""
    limiter = MovingWindow(5, 2.0)
    assert hits(limiter, [1.9] * 5) == [True] * 5
    assert limiter.hit(2.0) is False
    assert limiter.retry_after(2.0) == pytest.approx(1.9)
    assert limiter.hit(3.89) is False
    assert hits(limiter, [3.9] * 6) == [True] * 5 + [False]


def test_moving_window_counts_only_accepted_hits() -> None:
    """Rejected requests do not keep a moving window full."""
    limiter = MovingWindow(5, 2.0)
    hits(limiter, [0.0] * 5)
    assert hits(limiter, [0.5, 1.0, 1.5, 1.99]) == [False] * 4
    assert hits(limiter, [2.0] * 5) == [True] * 5


def test_sliding_window_weights_the_previous_window() -> None:
    """The sliding counter weighs the previous window by how much of it still overlaps."""
    limiter = SlidingWindowCounter(5, 2.0)
    assert hits(limiter, [0.0] * 5) == [True] * 5
    # t=2.0: previous 5 weighs 5 * 2/2 = 5, so nothing fits.
    assert limiter.hit(2.0) is False
    # t=2.4: 5 * 1.6/2 = 4.0 -> floor 4, room for exactly one.
    assert limiter.hit(2.4) is True
    assert limiter.hit(2.4) is False
    # t=3.0: 5 * 1.0/2 + 1 = 3.5 -> floor 3, room for one more (then 4.5 -> floor 4, one more).
    assert hits(limiter, [3.0, 3.0, 3.0]) == [True, True, False]


def test_sliding_window_retry_after_lands_on_acceptance() -> None:
    """Waiting exactly what the sliding counter says is enough, and not a moment less."""
    limiter = SlidingWindowCounter(5, 2.0)
    hits(limiter, [0.0] * 5)
    wait = limiter.retry_after(0.5)
    assert wait == pytest.approx(1.5, abs=1e-5)
    assert limiter.retry_after(2.0) == pytest.approx(0.0, abs=1e-5)
    probe = copy.deepcopy(limiter)
    assert probe.hit(2.0) is False
    assert limiter.hit(0.5 + wait) is True


def test_token_bucket_refills_continuously() -> None:
    """A full bucket takes a burst of 5, then one every 0.4 s."""
    limiter = TokenBucket(5, 2.0)
    assert hits(limiter, [0.0] * 6) == [True] * 5 + [False]
    assert limiter.retry_after(0.0) == pytest.approx(0.4)
    assert limiter.hit(0.3) is False
    assert limiter.hit(0.4) is True
    assert limiter.hit(0.4) is False


@pytest.mark.parametrize(
    ("model", "accepted"),
    [
        # t = 0.4 .. 1.6 fall in the first window/bucket period after a burst of 5.
        ("fixed", [False] * 4 + [True] * 5),
        ("moving", [False] * 4 + [True] * 5),
        ("sliding", [False] * 5 + [True] * 4),
        ("bucket", [True] * 9),
    ],
)
def test_burst_then_steady_pace(model: str, accepted: list[bool]) -> None:
    """A burst of 5 then one every 0.4 s (aiolimiter's default shape) is rejected by windows."""
    limiter = make_limiter(model, 5, 2.0)
    assert hits(limiter, [0.0] * 5) == [True] * 5
    paced = [round(0.4 * k, 10) for k in range(1, 10)]
    assert hits(limiter, paced) == accepted


@pytest.mark.parametrize("model", ["fixed", "moving", "bucket"])
def test_even_spacing_is_always_accepted(model: str) -> None:
    """One request every 0.4 s (AsyncLimiter(1, 0.4)) passes the exact models."""
    limiter = make_limiter(model, 5, 2.0)
    assert all(hits(limiter, [0.4 * k for k in range(50)]))


def test_sliding_window_rejects_exact_pace_on_boundaries() -> None:
    """The sliding counter, like `limits`, rejects an exact 5/2s pace landing on window edges."""
    # At t=2.0 the previous window's 5 hits still weigh 5 * 2/2 = 5; the same pace shifted
    # off the edges passes. A client pacing at exactly the nominal rate must handle a 429.
    aligned = hits(SlidingWindowCounter(5, 2.0), [0.4 * k for k in range(50)])
    assert [k for k, ok in enumerate(aligned) if not ok] == [5, 15, 25, 35, 45]
    assert all(hits(SlidingWindowCounter(5, 2.0), [0.13 + 0.4 * k for k in range(50)]))


_timelines = st.lists(
    st.floats(min_value=0.0, max_value=0.7, allow_nan=False), min_size=1, max_size=40
)


@pytest.mark.parametrize("model", MODELS)
@given(gaps=_timelines)
def test_retry_after_is_exact(model: str, gaps: list[float]) -> None:
    """retry_after is 0 exactly when a hit would pass, and a hit after waiting it passes."""
    limiter = make_limiter(model, 5, 2.0)
    now = 10.0
    for gap in gaps:
        now += gap
        wait = limiter.retry_after(now)
        accepted = copy.deepcopy(limiter).hit(now)
        assert (wait == 0.0) == accepted
        if not accepted:
            assert copy.deepcopy(limiter).hit(now + wait) is True
        limiter.hit(now)


@given(gaps=_timelines)
def test_moving_window_never_exceeds_limit(gaps: list[float]) -> None:
    """Whatever a client sends, a moving window accepts at most 5 in any 2 s."""
    limiter = MovingWindow(5, 2.0)
    now, accepted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.hit(now):
            accepted.append(now)
    assert max_in_window(accepted, 2.0) <= 5


def test_max_in_window_is_half_open() -> None:
    """Hits exactly one period apart are in different windows."""
    assert max_in_window([0.0, 1.0, 2.0, 2.0], 2.0) == 3
    assert max_in_window([], 2.0) == 0


@pytest.mark.parametrize(
    ("model", "limit", "period"), [("fixed", 0, 2.0), ("moving", 5, 0.0), ("leaky", 5, 2.0)]
)
def test_bad_limits_are_refused(model: str, limit: int, period: float) -> None:
    """A limit that cannot be enforced raises ValueError with a reason."""
    with pytest.raises(ValueError, match=r"rate limit|model"):
        make_limiter(model, limit, period)


# -- what the rate-limit headers report ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "times", "remaining", "reset"),
    [
        ("fixed", [0.5, 0.6, 0.7], 2, 1.3),  # window [0, 2) ends in 1.3 s
        ("moving", [0.5, 0.6, 0.7], 2, 1.8),  # the hit at 0.5 leaves at 2.5
        ("bucket", [0.5, 0.6, 0.7], 2, 1.0),  # 2.5 tokens short (0.5 refilled), 0.4 s each
        ("sliding", [0.5, 0.6, 0.7], 2, 1.3),  # room left: until the window ends
    ],
)
def test_remaining_and_reset(model: str, times: list[float], remaining: int, reset: float) -> None:
    """After three hits of five, each model reports two left and when its window is done."""
    limiter = make_limiter(model, 5, 2.0)
    hits(limiter, times)
    assert limiter.remaining(0.7) == remaining
    assert limiter.reset(0.7) == pytest.approx(reset, abs=1e-6)


@pytest.mark.parametrize("model", MODELS)
@given(gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_remaining_is_what_would_be_accepted(model: str, gaps: list[float]) -> None:
    """`remaining` back-to-back hits at that moment are accepted, and one more is not."""
    limiter = make_limiter(model, 5, 2.0)
    now = 0.0
    for gap in gaps:
        now += gap
        limiter.hit(now)
    left = limiter.remaining(now)
    probe = copy.deepcopy(limiter)
    assert hits(probe, [now] * (left + 1)) == [True] * left + [False]


def test_reset_of_a_full_moving_window_is_when_the_oldest_leaves() -> None:
    """A full moving window resets when its oldest hit is a period old."""
    limiter = MovingWindow(5, 2.0)
    hits(limiter, [0.0, 0.4, 0.8, 1.2, 1.6])
    assert limiter.remaining(1.7) == 0
    assert limiter.reset(1.7) == pytest.approx(0.3)


# -- the headers on the wire -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("switch", "on_200", "on_429"),
    [(False, False, False), (True, False, True), ("429", False, True), ("all", True, True)],
)
async def test_ratelimit_headers_switch(switch: bool | str, on_200: bool, on_429: bool) -> None:
    """Off: none; True or "429": on 429s only; "all": on every /v1 answer."""
    config = SandboxConfig(rate=(2, 2.0), ratelimit_headers=switch)  # type: ignore[arg-type]
    async with run_sandbox(config) as sandbox, aiohttp.ClientSession() as session:
        answers = []
        for _ in range(3):
            async with session.get(
                f"{sandbox.url}/v1/user_detail/0", headers={"X-Access-Token": "sandbox-demo-pat"}
            ) as response:
                answers.append((response.status, dict(response.headers)))
    (s1, h1), (s2, h2), (s3, h3) = answers
    assert (s1, s2, s3) == (200, 200, 429)
    assert ("X-RateLimit-Remaining" in h1) is on_200
    assert ("X-RateLimit-Remaining" in h3) is on_429
    if on_200:
        assert h1["RateLimit-Policy"] == "2;w=2"
        assert h1["RateLimit"].startswith("limit=2, remaining=1, reset=")
        assert (h1["X-RateLimit-Limit"], h1["X-RateLimit-Remaining"]) == ("2", "1")
        assert h2["X-RateLimit-Remaining"] == "0"
    if on_429:
        assert h3["X-RateLimit-Remaining"] == "0"
        assert int(h3["X-RateLimit-Reset"]) > 1e9


def test_ratelimit_headers_read_back() -> None:
    """What the sandbox sends, the pacer reads."""
    limiter = FixedWindow(4, 2.0)
    hits(limiter, [0.1, 0.2])
    said = read_hints(ratelimit_headers(limiter, 0.3, wall=1e9), now=1e9)
    assert (said.limit, said.window, said.remaining) == (4, 2.0, 2)
    assert said.reset == pytest.approx(2.0)  # 1.7 s, rounded up to whole seconds


@pytest.mark.parametrize(
    ("argv", "switch"),
    [
        ([], False),
        (["--ratelimit-headers"], "429"),
        (["--ratelimit-headers", "all"], "all"),
        (["--ratelimit-headers", "off"], False),
    ],
)
def test_ratelimit_headers_flag(argv: list[str], switch: bool | str) -> None:
    """`--ratelimit-headers [off|429|all]`: the flag alone means on 429s, as it did."""
    parser = argparse.ArgumentParser()
    sandbox_cli.add_arguments(parser)
    assert sandbox_cli.config_from_args(parser.parse_args(argv)).ratelimit_headers == switch
