"""The Redis coordinator: one account's slots and claims shared by every host.

Slots are reserved in one Lua script on Redis's own clock (`TIME`), so hosts whose clocks
disagree still share one even grid; the script is the GCRA of `gcra.py`, in microseconds.
A claim is a key set with `SET NX PX` (a lease the run renews while it is alive) beside a
record of how the learner was left (`issued`, `held`, `unconfirmed`; `claimed`, then
`sending` once a send may leave, while a run holds it), which outlives the lease for a day.
Every key of an account shares one hash tag, so a cluster keeps them on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from typing import Any
from urllib.parse import urlsplit

from ..errors import UnavailableError
from .gcra import HOLD_WIDER, MAX_WIDEN, RING, WIDEN, Window
from .protocol import Claim, Ending, Verdict

__all__ = ["RedisCoordinator", "redacted"]

#: Settled records are kept this long (seconds).
RETAIN = 86400

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gap = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'tat', 'resume', 'floor', 'until', 'owner', 'last',
  'streak', 'fence', 'ring')
local tat = tonumber(s[1]) or 0
local resume = tonumber(s[2]) or 0
local floor = tonumber(s[3]) or 0
local untl = tonumber(s[4]) or 0
local owner = ARGV[3]
local alone = tonumber(ARGV[4])
local mine = owner ~= '' and owner == s[5]
local streak = tonumber(s[7]) or 0
-- The window rule: ARGV 6-10 = requests (0: no part), reach, late, slot id, answers.
local n = tonumber(ARGV[6])
local ring = {}
if s[9] then
  for key, a, r in string.gmatch(s[9], '([^|;]+)|(%d+)|(%d+)') do
    ring[#ring + 1] = {key, tonumber(a), tonumber(r)}
  end
end
if n > 0 and ARGV[10] ~= '' then
  local trips = {}
  for key, rt in string.gmatch(ARGV[10], '([^|;]+)|(%d+)') do trips[key] = tonumber(rt) end
  for _, e in ipairs(ring) do
    local rt = trips[e[1]]
    if rt then e[3] = math.min(e[3], e[2] + rt) end
  end
end
if mine then streak = streak + 1 else streak = 1 end
if alone > 0 and owner ~= '' and n > 0 and n <= RING then
  -- Every remembered slot, and the last slot at this reserver's latest way in, reached
  -- the server a window before this one can: alone.
  local idle = (tonumber(s[6]) or 0) + tonumber(ARGV[8]) + tonumber(ARGV[7]) <= now
  for _, e in ipairs(ring) do
    if e[3] + tonumber(ARGV[7]) > now then idle = false end
  end
  if idle then
    mine = true
    streak = math.max(streak, alone + 1)
  end
end
local at
if mine and alone > 0 and streak > alone then
  at = math.max(now, resume, tonumber(s[6]) or 0)
else
  at = math.max(now, tat, resume)
  if not mine then at = math.max(at, tonumber(s[8]) or 0) end
  if n > 0 and n <= #ring then
    local reached = {}
    for i, e in ipairs(ring) do reached[i] = e[3] end
    table.sort(reached, function(x, y) return x > y end)
    at = math.max(at, reached[n] + tonumber(ARGV[7]))
  end
end
if now < untl and floor > gap then gap = floor end
local kept = s[9] or ''
if n > 0 then
  ring[#ring + 1] = {ARGV[9], at, at + tonumber(ARGV[8])}
  local parts = {}
  for i = math.max(1, #ring - RING + 1), #ring do
    local e = ring[i]
    parts[#parts + 1] = e[1] .. '|' .. string.format('%.0f', e[2]) .. '|'
      .. string.format('%.0f', e[3])
  end
  kept = table.concat(parts, ';')
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', at + gap),
  'owner', owner, 'last', string.format('%.0f', at), 'streak', streak,
  'fence', string.format('%.0f', at + tonumber(ARGV[5])), 'ring', kept)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return at - now
""".replace("RING", str(RING))

_RATE_LIMITED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(ARGV[1])
local gap = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'tat', 'resume', 'floor', 'until')
local tat = tonumber(s[1]) or 0
local resume = tonumber(s[2]) or 0
local floor = tonumber(s[3]) or 0
local untl = tonumber(s[4]) or 0
if now >= resume then
  local base = gap
  if now < untl and floor > gap then base = floor end
  floor = math.min(base * tonumber(ARGV[3]), gap * tonumber(ARGV[4]))
  untl = now + tonumber(ARGV[5])
end
resume = math.max(resume, now + pause)
tat = math.max(tat, resume)
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat),
  'resume', string.format('%.0f', resume), 'floor', string.format('%.0f', floor),
  'until', string.format('%.0f', untl))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# The store's epoch: set once, read by every run as it opens the store. Gone or another
# (the store emptied: FLUSHALL, a restart without persistence, keys evicted), the
# records of learners issued meanwhile are gone too, and a claim would be granted for a
# learner another run issued: every claim then says so, and the runs stop.
# KEYS: epoch. ARGV: a new epoch, if none.
_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
return epoch
"""

# A record is WHAT:WHEN:RUN (WHEN in microseconds on Redis's clock).
# KEYS: claim, record, epoch. ARGV: run, lease ms, retain s, since (microseconds), epoch.
_CLAIM = """
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return {'lost', ''} end
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local rec = redis.call('GET', KEYS[2])
local who = nil
local what = nil
if rec then
  local a = string.find(rec, ':', 1, true)
  local b = string.find(rec, ':', a + 1, true)
  what = string.sub(rec, 1, a - 1)
  local at = tonumber(string.sub(rec, a + 1, b - 1))
  who = string.sub(rec, b + 1)
  if what == 'issued' or what == 'held' then
    if at >= tonumber(ARGV[4]) then return {'done', who} end
    who = nil
  end
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'held', holder} end
if holder then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
local verify = '0'
if who and (what == 'sending' or what == 'unconfirmed') then verify = '1' end
redis.call('SET', KEYS[2], 'claimed:' .. now .. ':' .. ARGV[1], 'EX', ARGV[3])
return {'granted', verify}
"""

# KEYS: claim, record. ARGV: run, ending, retain s.
_SETTLE = """
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if ARGV[2] == 'released' then
  local rec = redis.call('GET', KEYS[2])
  if rec and (string.sub(rec, 1, 8) == 'claimed:' or string.sub(rec, 1, 8) == 'sending:')
     and string.sub(rec, -string.len(ARGV[1]) - 1) == ':' .. ARGV[1] then
    redis.call('DEL', KEYS[2])
  end
else
  redis.call('SET', KEYS[2], ARGV[2] .. ':' .. now .. ':' .. ARGV[1], 'EX', ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: claim, record. ARGV: run, retain s.
_SENDING = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('SET', KEYS[2], 'sending:' .. now .. ':' .. ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: claim. ARGV: run, lease ms.
_CONFIRM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: this run's claims. ARGV: run, lease ms.
_RENEW = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 1
"""

_MICRO = 1_000_000


def redacted(url: str) -> str:
    """The Redis URL without user name or password: `redis://host:port/db`."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


class RedisCoordinator:
    """Slots and claims of one account in Redis, shared by every host.

    Args:
        url: `redis://HOST:PORT/DB` or `rediss://...` (credentials in the URL are used,
            never shown).
        account: the account's key (`account_key`).
        timeout: seconds each command may take before the coordinator counts as lost.
    """

    def __init__(self, url: str, account: str, *, timeout: float = 3.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a coordinator is redis://HOST:PORT/DB or rediss://..., got {redacted(url)!r}"
            )
        self._url = url
        self._timeout = timeout
        self.name = f"coordinator {redacted(url)}"
        self._prefix = f"bulk-issuer:{{{account}}}:"
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._mine: dict[tuple[int, str], str] = {}
        self._epoch_key = self._prefix + "epoch"
        self._epoch = ""

    def _lost(self, exc: BaseException) -> UnavailableError:
        from redis.exceptions import AuthenticationError, ResponseError

        what = str(exc) or type(exc).__name__
        # Redis answered, and refused (a password, memory full, a read-only replica):
        # reached, but not usable; said so, not as a network trouble.
        answered = isinstance(exc, ResponseError | AuthenticationError)
        how = "refused the run" if answered else "could not be reached"
        return UnavailableError(f"the {self.name} {how}: {what}", host=redacted(self._url))

    async def open(self) -> None:
        """Connect and load the scripts; `UnavailableError` if Redis does not answer."""
        from redis import asyncio as aioredis

        client = aioredis.from_url(
            self._url,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            decode_responses=True,
        )
        self._redis = client
        for name, text in (
            ("reserve", _RESERVE),
            ("rate_limited", _RATE_LIMITED),
            ("claim", _CLAIM),
            ("settle", _SETTLE),
            ("sending", _SENDING),
            ("confirm", _CONFIRM),
            ("renew", _RENEW),
            ("epoch", _EPOCH),
        ):
            self._scripts[name] = client.register_script(text)
        try:
            await self._call(client.ping())
            self._epoch = str(await self._run("epoch", [self._epoch_key], [uuid.uuid4().hex]))
        except UnavailableError:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connections."""
        client, self._redis = self._redis, None
        if client is not None:
            # Closing a connection that is already gone may fail: nothing to do about it.
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout * 2):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._lost(exc) from None

    async def _run(self, name: str, keys: list[str], args: list[object]) -> Any:
        if self._redis is None:
            raise RuntimeError("open the coordinator first")
        return await self._call(self._scripts[name](keys=keys, args=args))

    async def reserve(
        self,
        interval: float,
        *,
        urgent: bool = False,
        owner: str = "",
        alone: int = 0,
        fence: float = 0.0,
        window: Window | None = None,
    ) -> float:
        """Reserve the next slot on Redis's clock; see `Coordinator.reserve`."""
        hold = int((HOLD_WIDER + 60) * 1000)
        args: list[object] = [
            round(interval * _MICRO),
            hold,
            owner,
            alone,
            round(max(fence, 0.0) * _MICRO),
        ]
        if window is None:
            args += [0, 0, 0, "", ""]
        else:
            answers = ";".join(
                f"{key}|{round(max(trip, 0.0) * _MICRO)}" for key, trip in window.answers
            )
            args += [
                window.requests,
                round(window.reach * _MICRO),
                round(max(window.late, 0.0) * _MICRO),
                window.slot_id,
                answers,
            ]
        wait = await self._run("reserve", [self._prefix + "pace"], args)
        return int(wait) / _MICRO

    async def rate_limited(self, pause: float, interval: float) -> None:
        """Pause and widen for every host; see `Coordinator.rate_limited`."""
        hold = int((HOLD_WIDER + 60) * 1000)
        await self._run(
            "rate_limited",
            [self._prefix + "pace"],
            [
                round(pause * _MICRO),
                round(interval * _MICRO),
                WIDEN,
                MAX_WIDEN,
                round(HOLD_WIDER * _MICRO),
                hold,
            ],
        )

    def _keys(self, badge_id: int, learner_key: str) -> list[str]:
        tail = f"{badge_id}:{learner_key}"
        return [f"{self._prefix}claim:{tail}", f"{self._prefix}rec:{tail}"]

    async def clock(self) -> float:
        """Redis's clock (`TIME`), in seconds."""
        if self._redis is None:
            raise RuntimeError("open the coordinator first")
        seconds, micros = await self._call(self._redis.time())
        return int(seconds) + int(micros) / _MICRO

    async def claim(
        self,
        badge_id: int,
        learner_key: str,
        run_id: str,
        lease_seconds: float,
        *,
        since: float = -math.inf,
    ) -> Claim:
        """Claim a learner; see `Coordinator.claim`."""
        keys = self._keys(badge_id, learner_key)
        floor = round(since * _MICRO) if math.isfinite(since) else -1
        lease = max(1, round(lease_seconds * 1000))
        verdict, detail = await self._run(
            "claim", [*keys, self._epoch_key], [run_id, lease, RETAIN, floor, self._epoch]
        )
        if verdict == "lost":
            raise UnavailableError(
                f"the {self.name} lost its records since this run opened it (emptied, "
                "restarted without persistence, or keys evicted: give it a Redis with "
                "maxmemory-policy noeviction): learners issued meanwhile could be sent "
                "again, so the run stops; rerun to go on (each run's journal and the "
                "server's holders say who holds the badge)",
                host=redacted(self._url),
            )
        if verdict == "granted":
            self._mine[(badge_id, learner_key)] = keys[0]
            return Claim(Verdict.GRANTED, verify=detail == "1")
        return Claim(Verdict(verdict), detail)

    async def sending(self, badge_id: int, learner_key: str, run_id: str) -> bool:
        """Note a send; see `Coordinator.sending`."""
        return bool(await self._run("sending", self._keys(badge_id, learner_key), [run_id, RETAIN]))

    async def confirm(
        self, badge_id: int, learner_key: str, run_id: str, lease_seconds: float
    ) -> bool:
        """Whether the claim is still the run's; see `Coordinator.confirm`."""
        claim = self._keys(badge_id, learner_key)[0]
        lease = max(1, round(lease_seconds * 1000))
        return bool(await self._run("confirm", [claim], [run_id, lease]))

    async def renew(self, run_id: str, lease_seconds: float) -> None:
        """Extend this run's claims; see `Coordinator.renew`."""
        keys = list(self._mine.values())
        if keys:
            await self._run("renew", keys, [run_id, max(1, round(lease_seconds * 1000))])
        elif self._redis is not None:
            await self._call(self._redis.ping())

    async def settle(self, badge_id: int, learner_key: str, run_id: str, ending: Ending) -> None:
        """Record how a run left a learner; see `Coordinator.settle`."""
        self._mine.pop((badge_id, learner_key), None)
        await self._run("settle", self._keys(badge_id, learner_key), [run_id, ending.value, RETAIN])
