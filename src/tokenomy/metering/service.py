"""Metering: authentication, rate limits, budgets (reserve -> settle) and the usage ledger.

The request path uses the async API (aauthenticate, acheck_rate, areserve, atop_up,
aheadroom_usd): a cache hit and in-process counters answer inline; a ledger read (cache miss)
runs on a worker thread and shared counters (Redis) are awaited, so the event loop never waits
on the network. Unknown key ids are cached negatively (bounded, short TTL) and looked up in a
lane of their own, so a flood of them cannot delay known keys. The synchronous methods
(authenticate, check_rate, reserve, ...) stay for the CLI and threads without a loop.
`commit` awaits the group-commit writer, so it returns only once the event is durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from tokenomy.metering import keyfmt
from tokenomy.metering.counters import InProcessCounters
from tokenomy.metering.errors import (
    AuthError, BudgetExceeded, Conflict, InvalidInput, MeteringError, NotFound, RateLimited,
)
from tokenomy.metering.money import from_pusd, money_str, to_pusd
from tokenomy.metering.periods import period_bounds, period_key
from tokenomy.metering.records import (
    BUDGET_FIELDS, budget_dict, change_dict, check_event, check_limit, check_name, check_user, iso_utc, key_dict,
    merge_budget, parse_budget, tenant_dict, usd_text, user_cap_dict,
)
from tokenomy.metering.changes import split_user_subject, user_subject
from tokenomy.metering.store import AuditRecord, ChangeRecord, CounterStore, Ledger, Scope
from tokenomy.metering.types import (
    DEFAULT_USER, Budget, KeyRecord, Principal, Reservation, TenantRecord, UsageEvent, UserCap,
)
from tokenomy.metering.usage import summarize
from tokenomy.metering.writer import GroupCommitWriter, Pending, blocking_future

ENV_ADMIN_KEY = "TOKENOMY_ADMIN_KEY"
_MAX_VERIFIED = 10_000
_MAX_UNKNOWN = 10_000  # negative key-id cache entries (bounded: oldest dropped first)
DEFAULT_BUDGET_WAIT_S = 2.0  # areserve: how long to wait for in-flight reservations to settle
HELD_RETRY_AFTER_S = 1.0  # a refusal because requests in flight hold the budget: retry soon
_POLL_S = (0.02, 0.25)  # shared counters: re-check a held budget from 20 ms, backing off to 250 ms
ADMIN_TENANT = "admin"
CLI_ACTOR = "cli"  # the audit trail's actor for changes made outside the HTTP API (CLI, config)


class Metering:
    def __init__(
        self,
        ledger: Ledger,
        counters: CounterStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cache_ttl_s: float = 1.0,
        max_batch: int = 512,
        commit_linger_s: float = 0.0,
        budget_wait_s: float = DEFAULT_BUDGET_WAIT_S,
    ):
        self._ledger = ledger
        self.budget_wait_s = max(0.0, float(budget_wait_s))
        self._counters: CounterStore = counters if counters is not None else InProcessCounters()
        self._clock = clock
        self._monotonic = monotonic
        self._ttl = cache_ttl_s
        self._keys: dict[str, tuple[float, KeyRecord]] = {}
        self._tenants: dict[str, tuple[float, TenantRecord]] = {}
        self._user_caps: dict[str, tuple[float, dict[str, UserCap]]] = {}  # tenant -> (expiry, {user: cap})
        self._admin: tuple[float, str | None] = (-math.inf, None)
        # secret -> (the key record it was verified against, its principal): skips the HMAC
        # while that cached record is current (a new record, e.g. after a revoke, re-verifies)
        self._verified: dict[str, tuple[KeyRecord, Principal]] = {}
        self._unknown: dict[str, float] = {}  # key id -> until when it is known not to exist
        # ledger reads off the loop: ids not cached yet (unknown ones, a flood of them) in a
        # narrow lane of their own, refreshes of known keys/tenants in another
        self._cold_lane: concurrent.futures.ThreadPoolExecutor | None = None
        self._warm_lane: concurrent.futures.ThreadPoolExecutor | None = None
        self._lanes_lock = threading.Lock()
        # areserve waiters: woken when any reservation is released or settled
        self._settle_gen = 0
        self._settle_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._shared_counters = not isinstance(self._counters, InProcessCounters)
        # shared counters with a non-blocking async path (redis.asyncio, lazy loads on a thread)
        self._async_counters = bool(getattr(self._counters, "async_ready", False))
        self._day: tuple[int, str] = (-1, "")  # (UTC day number, "YYYY-MM-DD") of the last event
        self._apply_lock = threading.Lock()  # ledger commit + counter update vs. spend loads
        self._settle_lock = threading.Lock()
        self._rid = itertools.count(1)
        self._soft_recorded: set[tuple[Scope, int]] = set()
        # ids whose commit raised: it may have landed anyway, so a retry that finds the id
        # recorded still counts its spend in-process (once)
        self._uncertain: set[str] = set()
        self._writer = GroupCommitWriter(self._apply, max_batch=max_batch, linger_s=commit_linger_s)
        # Inline commits (ledgers whose commit never blocks, e.g. SQLite at synchronous NORMAL):
        # events committed on the event loop itself, one transaction per loop iteration, saving
        # the two thread hand-offs per request; anything that could block goes to the writer.
        self._nowait = getattr(ledger, "append_nowait", None) if commit_linger_s == 0 else None
        self._inline_lock = threading.Lock()  # the pending list vs. shutdown (another thread)
        self._inline: list[Pending] = []
        self._inline_loop: asyncio.AbstractEventLoop | None = None
        self.generated_admin_key: str | None = None
        self.data_dir: Path | None = None
        self._closed = False

    # construction ------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        *,
        admin_key: str | None = None,
        ensure_admin: bool = True,
        synchronous: str = "FULL",
        **kwargs,
    ) -> "Metering":
        """Open (creating if needed) the SQLite ledger in data_dir/ledger.db.

        Admin key: argument, else env TOKENOMY_ADMIN_KEY, else (ensure_admin) one generated
        on first open and stored hashed; `generated_admin_key` holds it for this call only.
        The CLI passes ensure_admin=False so only `tokenomy up` generates (and prints) it."""
        from tokenomy.metering.sqlite_ledger import SqliteLedger

        ledger = SqliteLedger.open(Path(data_dir), synchronous=synchronous)
        m = cls(ledger, **kwargs)
        m.data_dir = Path(data_dir)
        m._init_admin(admin_key, ensure_admin)
        return m

    @classmethod
    def in_memory(cls, *, admin_key: str | None = None, ensure_admin: bool = True, **kwargs) -> "Metering":
        from tokenomy.metering.memory_ledger import MemoryLedger

        m = cls(MemoryLedger(), **kwargs)
        m._init_admin(admin_key, ensure_admin)
        return m

    def _init_admin(self, admin_key: str | None, ensure_admin: bool) -> None:
        key = admin_key or os.environ.get(ENV_ADMIN_KEY) or None
        stored = self._ledger.get_admin_hash()
        if key:
            wanted = keyfmt.hash_admin_key(key)
            if stored is None or not keyfmt.same_hash(stored, wanted):
                self._ledger.set_admin_hash(wanted, replace=True)
        elif stored is None and ensure_admin:
            key = keyfmt.new_admin_key()
            wanted = keyfmt.hash_admin_key(key)
            if keyfmt.same_hash(self._ledger.set_admin_hash(wanted, replace=False), wanted):
                self.generated_admin_key = key  # else another process generated one first

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    async def start(self) -> None:
        self._ensure_writer()

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        """Synchronous close: commit what is pending, stop the writer, close the ledger."""
        if self._closed:
            return
        self._closed = True
        with self._inline_lock:  # queued inline events are committed by the writer below
            pending, self._inline, self._nowait = self._inline, [], None
        if pending:
            self._writer.start()
            for item in pending:
                self._writer.submit(item)
        self._writer.stop()
        for lane in (self._cold_lane, self._warm_lane):
            if lane is not None:
                lane.shutdown(wait=True, cancel_futures=True)
        self._ledger.close()
        close_counters = getattr(self._counters, "close", None)  # e.g. Redis: heartbeat thread
        if callable(close_counters):
            close_counters()

    def __enter__(self) -> "Metering":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # cached look-ups (another process may create/revoke: TTL keeps us within ~1 s) ---------
    def _cached_key(self, key_id: str) -> tuple[bool, KeyRecord | None]:
        """(True, record or None) if the cache answers without the ledger, else (False, None)."""
        now = self._monotonic()
        hit = self._keys.get(key_id)
        if hit is not None and hit[0] > now:
            return True, hit[1]
        until = self._unknown.get(key_id)
        if until is not None and until > now:
            return True, None
        return False, None

    def _key(self, key_id: str) -> KeyRecord | None:
        known, record = self._cached_key(key_id)
        if known:
            return record
        now = self._monotonic()
        record = self._ledger.get_key(key_id)
        if record is None:
            self._keys.pop(key_id, None)
            if len(self._unknown) >= _MAX_UNKNOWN:
                try:
                    self._unknown.pop(next(iter(self._unknown)))  # the oldest
                except (StopIteration, KeyError, RuntimeError):
                    pass
            self._unknown[key_id] = now + self._ttl
        else:
            self._unknown.pop(key_id, None)
            self._keys[key_id] = (now + self._ttl, record)
        return record

    def _lane(self, cold: bool) -> concurrent.futures.ThreadPoolExecutor:
        lane = self._cold_lane if cold else self._warm_lane
        if lane is None:
            with self._lanes_lock:
                if cold and self._cold_lane is None:
                    self._cold_lane = concurrent.futures.ThreadPoolExecutor(2, "tokenomy-auth-cold")
                elif not cold and self._warm_lane is None:
                    self._warm_lane = concurrent.futures.ThreadPoolExecutor(4, "tokenomy-metering-io")
                lane = self._cold_lane if cold else self._warm_lane
        return lane

    async def _off_loop(self, fn, *args, cold: bool = False):
        return await asyncio.get_running_loop().run_in_executor(self._lane(cold), fn, *args)

    async def _akey(self, key_id: str) -> KeyRecord | None:
        known, record = self._cached_key(key_id)
        if known:
            return record
        return await self._off_loop(self._key, key_id, cold=key_id not in self._keys)

    async def _atenant(self, name: str) -> TenantRecord | None:
        hit = self._tenants.get(name)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        return await self._off_loop(self._tenant, name)

    async def _aadmin_hash(self) -> str | None:
        if self._admin[0] > self._monotonic():
            return self._admin[1]
        return await self._off_loop(self._admin_hash)

    def _tenant(self, name: str) -> TenantRecord | None:
        now = self._monotonic()
        hit = self._tenants.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self._ledger.get_tenant(name)
        if record is None:
            self._tenants.pop(name, None)
        else:
            self._tenants[name] = (now + self._ttl, record)
        return record

    def _tenant_user_caps(self, tenant: str) -> dict[str, UserCap]:
        now = self._monotonic()
        hit = self._user_caps.get(tenant)
        if hit is not None and hit[0] > now:
            return hit[1]
        caps = {c.user: c for c in self._ledger.user_caps(tenant)}
        self._user_caps[tenant] = (now + self._ttl, caps)
        return caps

    @staticmethod
    def _cap_of(caps: dict[str, UserCap], user: str | None) -> UserCap | None:
        """The end user's own cap, else the tenant's default (user "*"); None: uncapped."""
        if user is None or not caps:
            return None
        return caps.get(user) or caps.get(DEFAULT_USER)

    def _user_cap(self, p: Principal) -> UserCap | None:
        return None if p.user is None else self._cap_of(self._tenant_user_caps(p.tenant), p.user)

    async def _auser_cap(self, p: Principal) -> UserCap | None:
        if p.user is None:
            return None
        hit = self._user_caps.get(p.tenant)
        if hit is not None and hit[0] > self._monotonic():
            return self._cap_of(hit[1], p.user)
        return self._cap_of(await self._off_loop(self._tenant_user_caps, p.tenant), p.user)

    def _admin_hash(self) -> str | None:
        now = self._monotonic()
        if self._admin[0] <= now:
            self._admin = (now + self._ttl, self._ledger.get_admin_hash())
        return self._admin[1]

    # authentication ----------------------------------------------------------------------
    def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        hit = self._verified.get(secret)
        if hit is not None and self._key(hit[0].key_id) is hit[0]:
            # Same (TTL-cached) key record this secret was verified against: the hash check
            # would give the same answer, and the record's revocation was checked then.
            return hit[1]
        parsed = keyfmt.parse_key(secret)
        if parsed is not None and parsed[0] != keyfmt.ADMIN_KEY_ID:
            principal = self._verify(secret, parsed, self._key(parsed[0]))
            if principal is not None:
                return principal
        return self._verify_admin(secret, self._admin_hash())

    async def aauthenticate(self, secret: str | None) -> Principal:
        """authenticate, without blocking the loop: cache hits answer inline, ledger reads
        run on a worker thread (ids never seen before in their own narrow lane)."""
        if not secret:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        hit = self._verified.get(secret)
        if hit is not None and (await self._akey(hit[0].key_id)) is hit[0]:
            return hit[1]
        parsed = keyfmt.parse_key(secret)
        if parsed is not None and parsed[0] != keyfmt.ADMIN_KEY_ID:
            principal = self._verify(secret, parsed, await self._akey(parsed[0]))
            if principal is not None:
                return principal
        return self._verify_admin(secret, await self._aadmin_hash())

    def _verify(self, secret: str, parsed: tuple[str, str], record: KeyRecord | None) -> Principal | None:
        if record is None or not keyfmt.same_hash(record.secret_hash, keyfmt.hash_secret(*parsed)):
            return None
        if record.revoked_at is not None:
            raise AuthError(f"API key {record.key_id} was revoked at {iso_utc(record.revoked_at)}")
        principal = Principal(record.key_id, record.tenant, False)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()  # bounded: valid secrets only, re-verified when dropped
        self._verified[secret] = (record, principal)
        return principal

    @staticmethod
    def _verify_admin(secret: str, admin: str | None) -> Principal:
        if admin is not None and keyfmt.same_hash(admin, keyfmt.hash_admin_key(secret)):
            return Principal(keyfmt.ADMIN_KEY_ID, ADMIN_TENANT, True)
        raise AuthError("invalid API key")

    # rate limits -------------------------------------------------------------------------
    def check_rate(self, p: Principal, tokens: int) -> None:
        """Take one request and `tokens` tokens from the key's per-minute token buckets."""
        if p.is_admin:
            return
        record, cap = self._key(p.key_id), self._user_cap(p)
        buckets = self._rate_buckets(p, record, cap, tokens)
        if buckets:
            self._rate_verdict(p, record, cap, tokens, self._counters.take(buckets, self._monotonic()))

    async def acheck_rate(self, p: Principal, tokens: int) -> None:
        """check_rate without blocking the loop (a key without limits touches no counter)."""
        if p.is_admin:
            return
        record, cap = await self._akey(p.key_id), await self._auser_cap(p)
        buckets = self._rate_buckets(p, record, cap, tokens)
        if not buckets:
            return
        now = self._monotonic()
        atake = getattr(self._counters, "atake", None)
        if atake is not None:
            wait = await atake(buckets, now)
        elif self._shared_counters:
            wait = await self._off_loop(self._counters.take, buckets, now)
        else:
            wait = self._counters.take(buckets, now)
        self._rate_verdict(p, record, cap, tokens, wait)

    @staticmethod
    def _rate_buckets(p: Principal, record: KeyRecord | None, cap: UserCap | None,
                      tokens: int) -> list[tuple[str, float, float, float]]:
        """The key's and the end user's per-minute buckets, taken together (all or none)."""
        buckets = []
        for name, limits in ((p.key_id, record), (None if cap is None else user_subject(p.tenant, p.user), cap)):
            if limits is None:
                continue
            tag = "" if name == p.key_id else "u"  # user buckets: urpm:/utpm:<tenant>/<user>
            if limits.rpm is not None:
                buckets.append((f"{tag}rpm:{name}", float(limits.rpm), limits.rpm / 60.0, 1.0))
            if limits.tpm is not None and tokens > 0:
                buckets.append((f"{tag}tpm:{name}", float(limits.tpm), limits.tpm / 60.0, float(tokens)))
        return buckets

    @staticmethod
    def _rate_verdict(p: Principal, record: KeyRecord | None, cap: UserCap | None, tokens: int, wait: float) -> None:
        if wait == 0.0:
            return
        whose = []
        for who, limits in ((f"key {p.key_id}", record), (f"user '{p.user}' of tenant '{p.tenant}'", cap)):
            shown = ", ".join(f"{v} {unit}/min" for v, unit in ((getattr(limits, "rpm", None), "requests"),
                                                                (getattr(limits, "tpm", None), "tokens")) if v is not None)
            if shown:
                whose.append(f"{who} ({shown})")
        if math.isinf(wait):
            raise RateLimited(
                f"request of {tokens} tokens exceeds the tokens/min limit of {' or '.join(whose)}; "
                "lower max_tokens or the prompt size", retry_after_s=None)
        raise RateLimited(f"rate limit of {' and '.join(whose)} reached; retry in {wait:.2f}s", retry_after_s=wait)

    # budgets -----------------------------------------------------------------------------
    def _budgets(self, p: Principal) -> list[tuple[str, str, Budget]]:
        return self._budget_list(p, self._key(p.key_id), self._tenant(p.tenant), self._user_cap(p))

    async def _abudgets(self, p: Principal) -> list[tuple[str, str, Budget]]:
        return self._budget_list(p, await self._akey(p.key_id), await self._atenant(p.tenant),
                                 await self._auser_cap(p))

    @staticmethod
    def _budget_list(p: Principal, record: KeyRecord | None, tenant: TenantRecord | None,
                     cap: UserCap | None = None) -> list[tuple[str, str, Budget]]:
        out = []
        if cap is not None:  # the end user's cap first: a refusal names the narrowest cap hit
            out.append(("user", user_subject(p.tenant, p.user), cap.budget))
        if record is not None:
            out.append(("key", p.key_id, record.budget))
        if tenant is not None:
            out.append(("tenant", p.tenant, tenant.budget))
        return out

    @staticmethod
    def _hard_limits(budgets: list[tuple[str, str, Budget]], now: float) -> list[tuple[Scope, int]]:
        return [((kind, subject, b.period, period_key(b.period, now)), b.budget_pusd)
                for kind, subject, b in budgets if b.budget_pusd is not None]

    def _ensure_loaded(self, scope: Scope, now: float) -> None:
        if self._counters.is_loaded(scope):
            return
        kind, subject, period, _ = scope
        since, until = period_bounds(period, now)
        with self._apply_lock:  # no commit can land between this read and the load
            spent = self._ledger.spend_pusd(kind=kind, subject=subject, since=since, until=until)
            self._counters.load(scope, spent)

    def _inline_ok(self, limits: Sequence[tuple[Scope, int]]) -> bool:
        """In-process counters with every scope loaded: nothing below can block."""
        return not self._shared_counters and all(self._counters.is_loaded(scope) for scope, _ in limits)

    def _reserve_limits(self, limits: list[tuple[Scope, int]], amount: int, now: float):
        for scope, _ in limits:
            self._ensure_loaded(scope, now)
        return self._counters.try_reserve(limits, amount)

    def reserve(self, p: Principal, worst_case_usd: Decimal) -> Reservation:
        """Hold the worst-case cost against the key's and the tenant's hard budgets (no waiting:
        areserve waits for requests in flight)."""
        amount = max(0, to_pusd(worst_case_usd))
        now = self._clock()
        limits = [] if p.is_admin else self._hard_limits(self._budgets(p), now)
        refused = self._reserve_limits(limits, amount, now) if limits else None  # no budget: no lock
        if refused is not None:
            raise self._refusal(p, refused, amount, now)
        return self._reservation(p, amount, limits)

    async def areserve(self, p: Principal, usd: Decimal, *, wait_s: float | None = None) -> Reservation:
        """reserve without blocking the loop. While requests in flight hold what this one needs
        (reason "held"), wait up to wait_s (default budget_wait_s) for them to settle; an
        exhausted budget is refused at once."""
        amount = max(0, to_pusd(usd))
        if p.is_admin:
            return self._reservation(p, amount, [])
        budgets = await self._abudgets(p)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.budget_wait_s if wait_s is None else max(0.0, float(wait_s)))
        poll = _POLL_S[0]
        while True:
            gen = self._settle_gen
            now = self._clock()
            limits = self._hard_limits(budgets, now)
            if not limits:
                return self._reservation(p, amount, [])
            if self._inline_ok(limits):
                refused = self._counters.try_reserve(limits, amount)
            elif self._async_counters:
                refused = await self._counters.atry_reserve(limits, amount)
            else:
                refused = await self._off_loop(self._reserve_limits, limits, amount, now)
            if refused is None:
                return self._reservation(p, amount, limits)
            error = self._refusal(p, refused, amount, now)
            left = deadline - loop.time()
            if error.reason != "held" or left <= 0:
                raise error
            if gen != self._settle_gen:
                continue  # something settled meanwhile: try again now
            # other replicas' settlements are not signalled here: poll shared counters
            await self._settled(loop, min(left, poll) if self._shared_counters else left)
            poll = min(poll * 2, _POLL_S[1])

    async def _settled(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        event = asyncio.Event()
        waiter = (loop, event)
        self._settle_waiters.add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self._settle_waiters.discard(waiter)

    def _notify_settled(self) -> None:
        self._settle_gen += 1
        for loop, event in list(self._settle_waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed
                self._settle_waiters.discard((loop, event))

    def _reservation(self, p: Principal, amount: int, limits: list[tuple[Scope, int]]) -> Reservation:
        return Reservation(
            id=next(self._rid), key_id=p.key_id, tenant=p.tenant, amount_usd=from_pusd(amount),
            amount_pusd=amount, scopes=tuple(scope for scope, _ in limits),
            limits_pusd=tuple(limit for _, limit in limits))

    async def atop_up(self, reservation: Reservation, extra_usd: Decimal) -> bool:
        """Grow a held reservation by extra_usd on every scope it holds, atomically: False (and
        the reservation unchanged) if that does not fit, the counters are unreachable, or it
        was already settled."""
        extra = to_pusd(extra_usd)
        if extra <= 0:
            return not reservation.settled
        with self._settle_lock:
            if reservation.settled:
                return False
            held = reservation.amount_pusd
            if not reservation.scopes:  # no hard budget: nothing to check
                reservation.amount_pusd += extra
                reservation.amount_usd = from_pusd(reservation.amount_pusd)
                return True
        limits = list(zip(reservation.scopes, reservation.limits_pusd))
        try:
            if self._async_counters:
                grown = await self._counters.atop_up(limits, held, extra)
            elif self._shared_counters:
                grown = await self._off_loop(self._counters.top_up, limits, held, extra)
            else:
                grown = self._counters.top_up(limits, held, extra)
        except MeteringError:
            return False
        if not grown:
            return False
        with self._settle_lock:
            if not reservation.settled and reservation.amount_pusd == held:
                reservation.amount_pusd += extra
                reservation.amount_usd = from_pusd(reservation.amount_pusd)
                return True
        self._counters.unreserve(reservation.scopes, extra)  # released (or grown) meanwhile: undo ours
        self._notify_settled()
        return False

    async def aheadroom_usd(self, p: Principal) -> Decimal | None:
        """What p can still reserve now: the least, over its hard budgets, of limit - spent -
        reserved (never below 0); None when no hard budget applies."""
        if p.is_admin:
            return None
        now = self._clock()
        limits = self._hard_limits(await self._abudgets(p), now)
        if not limits:
            return None
        if self._inline_ok(limits):
            room = self._headroom(limits, now)
        elif self._async_counters:
            rooms = []
            for scope, limit in limits:
                spent, reserved = await self._counters.aspent(scope)
                rooms.append(limit - spent - reserved)
            room = max(0, min(rooms))
        else:
            room = await self._off_loop(self._headroom, limits, now)
        return from_pusd(room)

    def _headroom(self, limits: list[tuple[Scope, int]], now: float) -> int:
        rooms = []
        for scope, limit in limits:
            self._ensure_loaded(scope, now)
            spent, reserved = self._counters.spent(scope)
            rooms.append(limit - spent - reserved)
        return max(0, min(rooms))

    def _refusal(self, p: Principal, refused, amount: int, now: float) -> BudgetExceeded:
        (kind, subject, period, pkey), limit, spent, reserved = refused
        reason = "exhausted" if spent + amount > limit else "held"
        reset_at = None if period == "total" else period_bounds(period, now)[1]
        if reason == "held":
            retry_after = HELD_RETRY_AFTER_S
        else:
            retry_after = None if reset_at is None else max(0.0, reset_at - now)
        return BudgetExceeded(self._budget_message(p, refused, amount, now, reason), reason=reason,
                              reset_at=reset_at, retry_after_s=retry_after, scope=kind)

    @staticmethod
    def _budget_message(p: Principal, refused, amount: int, now: float, reason: str) -> str:
        (kind, subject, period, pkey), limit, spent, reserved = refused
        if kind == "user":
            who = "user '{1}' of tenant '{0}'".format(*split_user_subject(subject))
        else:
            who = f"key {subject} (tenant '{p.tenant}')" if kind == "key" else f"tenant '{subject}'"
        when = {"total": "total", "daily": f"daily ({pkey} UTC)", "monthly": f"monthly ({pkey} UTC)"}[period]
        reset = ""
        if period != "total":
            reset = f"; resets at {iso_utc(period_bounds(period, now)[1])}"
        why = ("exhausted: the committed spend alone leaves no room for it" if reason == "exhausted"
               else "held by requests in flight: retry when they settle")
        return (
            f"budget exceeded for {who} ({why}): {when} budget {usd_text(limit)}, spent {usd_text(spent)}"
            f" + {usd_text(reserved)} reserved by requests in flight; this request may cost up to {usd_text(amount)}{reset}")

    def release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        with self._settle_lock:
            if reservation.settled:
                return
            reservation.settled = True
            amount = reservation.amount_pusd
        self._counters.unreserve(reservation.scopes, amount)
        if reservation.scopes:
            self._notify_settled()

    def warnings(self, p: Principal) -> list[str]:
        """Soft-limit warnings (committed spend >= soft budget); each recorded once per period."""
        if p.is_admin:
            return []
        now = self._clock()
        out = []
        for kind, subject, budget, scope in self._soft_scopes(self._budgets(p), now):
            self._ensure_loaded(scope, now)
            out += self._soft_warning(kind, subject, budget, scope, self._counters.spent(scope)[0], now)
        return out

    async def awarnings(self, p: Principal) -> list[str]:
        """warnings without blocking the loop (no soft budget: no counter touched)."""
        if p.is_admin:
            return []
        now = self._clock()
        out = []
        for kind, subject, budget, scope in self._soft_scopes(await self._abudgets(p), now):
            if self._inline_ok([(scope, 0)]):
                spent = self._counters.spent(scope)[0]
            elif self._async_counters:
                spent = (await self._counters.aspent(scope))[0]
            else:
                spent = await self._off_loop(lambda s=scope: (self._ensure_loaded(s, now), self._counters.spent(s))[1][0])
            out += self._soft_warning(kind, subject, budget, scope, spent, now)
        return out

    @staticmethod
    def _soft_scopes(budgets, now: float):
        return [(kind, subject, b, (kind, subject, b.period, period_key(b.period, now)))
                for kind, subject, b in budgets if b.soft_budget_pusd is not None]

    def _soft_warning(self, kind: str, subject: str, budget: Budget, scope: Scope, spent: int, now: float) -> list[str]:
        soft = budget.soft_budget_pusd
        if spent < soft:
            return []
        who = f"key {subject}" if kind == "key" else f"tenant '{subject}'"
        hard = f" (hard budget {usd_text(budget.budget_pusd)})" if budget.budget_pusd is not None else ""
        message = f"{who} has spent {usd_text(spent)} of its {budget.period} soft budget of {usd_text(soft)}{hard}"
        if (scope, soft) not in self._soft_recorded:
            self._soft_recorded.add((scope, soft))
            audit = AuditRecord("soft_limit", kind, subject, f"{budget.period}:{scope[3]}", now, message)
            if not self._writer.submit_audit(audit):
                self._append_audits([audit])
        return [message]

    # events ------------------------------------------------------------------------------
    def _event_scopes(self, event: UsageEvent) -> list[Scope]:
        day_no = int(event.ts // 86400)
        cached = self._day
        if cached[0] == day_no:
            day = cached[1]
        else:
            day = datetime.fromtimestamp(event.ts, timezone.utc).strftime("%Y-%m-%d")
            self._day = (day_no, day)
        keys = (("total", "all"), ("daily", day), ("monthly", day[:7]))
        subjects = [("key", event.key_id), ("tenant", event.tenant)]
        user = event.extra.get("user") if event.extra else None
        if isinstance(user, str):  # the end user's scopes (counted only where a cap loaded them)
            subjects.append(("user", user_subject(event.tenant, user)))
        return [(kind, subject, period, pk) for kind, subject in subjects for period, pk in keys]

    def _apply_nowait(self, batch: Sequence[Pending]) -> list[bool] | None:
        """Event loop: `_apply` if it cannot block (None, nothing recorded, if it could)."""
        nowait = self._nowait
        if nowait is None or not self._apply_lock.acquire(blocking=False):
            return None
        try:
            try:
                outcomes = nowait([i.event for i in batch])
            except BaseException:
                self._uncertain.update(item.event.id for item in batch)
                return None  # the writer retries (and, if need be, isolates the bad event)
            if outcomes is None:
                return None
            for item, counted_now in zip(batch, outcomes):
                event = item.event
                if event.id in self._uncertain:
                    self._uncertain.discard(event.id)
                    counted_now = True
                if counted_now:
                    self._counters.add_spent(self._event_scopes(event), to_pusd(event.price_usd))
                self.release(item.reservation)
            return outcomes
        finally:
            self._apply_lock.release()

    def _flush_inline(self) -> None:
        with self._inline_lock:
            batch, self._inline = self._inline, []
        if not batch:
            return
        outcomes = self._apply_nowait(batch)
        if outcomes is not None:
            for item, outcome in zip(batch, outcomes):
                if not item.future.done():  # else the caller gave up; recorded regardless
                    item.future.set_result(outcome)
            return
        for item in batch:  # the ledger is busy: the writer thread waits for it instead
            try:
                self._ensure_writer()
                self._writer.submit(item)
            except RuntimeError as exc:
                if not item.future.done():
                    item.future.set_exception(exc)

    def _apply(self, batch: Sequence[Pending], audits: Sequence[AuditRecord]) -> list[bool | BaseException]:
        """Writer thread: one durable transaction, then settle reservations and spend. If the
        transaction fails, each event is retried alone so one bad event cannot fail the others."""
        with self._apply_lock:
            try:
                outcomes: list[bool | BaseException] = list(self._ledger.append([i.event for i in batch], audits))
            except BaseException:
                self._uncertain.update(item.event.id for item in batch)
                if len(batch) == 1:
                    raise
                outcomes = [self._append_one(item.event) for item in batch]
                if audits:
                    self._append_audits(audits)
            for item, outcome in zip(batch, outcomes):
                if isinstance(outcome, BaseException):
                    continue  # not recorded: the reservation stays until retried or released
                event = item.event
                counted_now = outcome
                if event.id in self._uncertain:  # an earlier failed attempt may have landed it
                    self._uncertain.discard(event.id)
                    counted_now = True
                if counted_now:
                    self._counters.add_spent(self._event_scopes(event), to_pusd(event.price_usd))
                # release only after the spend is counted: a shared counter store (another
                # replica reserving meanwhile) must never see neither
                self.release(item.reservation)
        return outcomes

    def _append_one(self, event: UsageEvent) -> bool | BaseException:
        try:
            return self._ledger.append([event])[0]
        except BaseException as exc:
            return exc

    def _append_audits(self, audits: Sequence[AuditRecord]) -> None:
        try:
            self._ledger.append([], audits)
        except Exception:  # audit rows are best effort; the warning itself was already returned
            pass

    async def commit(self, event: UsageEvent, reservation: Reservation | None = None) -> bool:
        """Record the event durably (group commit) and settle the reservation at its price.
        True if recorded now, False if an event with this id was already recorded. On an
        exception nothing was recorded and the reservation is still held: retry or release."""
        check_event(event)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._nowait is not None and (self._inline_loop is loop or self._inline_loop is None):
            with self._inline_lock:
                queued = self._nowait is not None  # not shut down meanwhile
                if queued:
                    self._inline_loop = loop
                    self._inline.append(Pending(event, reservation, future, loop))
                    if len(self._inline) == 1:
                        loop.call_soon(self._flush_inline)  # one transaction per loop iteration
            if queued:
                return await future
        self._ensure_writer()
        # Queued now: even if the awaiting task is cancelled, the event is still recorded.
        self._writer.submit(Pending(event, reservation, future, loop))
        return await future

    def _ensure_writer(self) -> None:
        if self._closed:
            raise RuntimeError("metering is closed")
        if not self._writer.running:
            self._writer.start()

    def commit_blocking(self, event: UsageEvent, reservation: Reservation | None = None) -> bool:
        """Same as commit, for threads without an event loop."""
        check_event(event)
        future = blocking_future()
        self._ensure_writer()
        self._writer.submit(Pending(event, reservation, future, None))
        return future.result()

    # reports -----------------------------------------------------------------------------
    def _require_tenant(self, tenant: str) -> None:
        if self._ledger.get_tenant(tenant) is None:
            raise NotFound("tenant", tenant, [t.name for t in self._ledger.list_tenants()])

    def usage(self, tenant: str | None, since: float | None = None, until: float | None = None) -> dict:
        """Totals over [since, until) (epoch s): requests, tokens by category, cost_usd and
        price_usd (exact, as str), energy_joules, by_model and by_deployment."""
        if tenant is not None:
            self._require_tenant(tenant)
        out = summarize(self._ledger.usage_rows(tenant, since, until))
        out.update(tenant=tenant, since=iso_utc(since), until=iso_utc(until))
        return out

    def events(self, tenant: str | None = None, since: float | None = None, until: float | None = None,
               limit: int = 100) -> list[UsageEvent]:
        """Events newest first."""
        return self._ledger.events(tenant, since, until, max(0, int(limit)))

    def audits(self, kind: str | None = None) -> list[AuditRecord]:
        return self._ledger.audits(kind)

    def spend(self, p: Principal) -> dict:
        """Current committed and reserved spend of the key and its tenant, per budget."""
        out = {}
        now = self._clock()
        for kind, subject, budget in self._budgets(p):
            scope = (kind, subject, budget.period, period_key(budget.period, now))
            self._ensure_loaded(scope, now)
            spent, reserved = self._counters.spent(scope)
            out[kind] = {"spent_usd": money_str(from_pusd(spent)), "reserved_usd": money_str(from_pusd(reserved)),
                         **budget_dict(budget)}
        return out

    # tenants and keys (every change recorded in admin_audit; caches of this process dropped at
    # once, other replicas' within cache_ttl_s) ------------------------------------------------
    def _change(self, actor: str, action: str, target: str, before: dict | None, after: dict | None) -> ChangeRecord:
        return ChangeRecord(ts=self._clock(), actor=actor, action=action, target=target, before=before, after=after)

    def create_tenant(self, name: str, *, budget_usd=None, budget_period: str = "total", soft_budget_usd=None,
                      exist_ok: bool = False, actor: str = CLI_ACTOR) -> dict:
        record = TenantRecord(check_name("tenant", name), self._clock(), parse_budget(budget_usd, budget_period, soft_budget_usd))
        created = self._ledger.create_tenant(record, exist_ok=exist_ok)
        self._tenants.pop(name, None)
        out = tenant_dict(self._ledger.get_tenant(name))
        if created:
            self._ledger.record_change(self._change(actor, "tenant.create", f"tenant:{name}", None, out))
        return out

    def list_tenants(self) -> list[dict]:
        return [tenant_dict(t) for t in self._ledger.list_tenants()]

    def update_tenant(self, name: str, *, actor: str = CLI_ACTOR, **fields) -> dict:
        """Change a tenant's budget: budget_usd, budget_period, soft_budget_usd (None clears one;
        a field not given is kept)."""
        old = self._ledger.get_tenant(name)
        if old is None:
            raise NotFound("tenant", name, [t.name for t in self._ledger.list_tenants()])
        new = replace(old, budget=merge_budget(old.budget, fields))
        if new != old and not self._ledger.update_tenant(
                new, self._change(actor, "tenant.update", f"tenant:{name}", tenant_dict(old), tenant_dict(new))):
            raise NotFound("tenant", name, [])
        self._tenants.pop(name, None)
        return tenant_dict(new)

    def create_key(self, tenant: str, *, budget_usd=None, budget_period: str = "total", rpm: int | None = None,
                   tpm: int | None = None, soft_budget_usd=None, name: str | None = None,
                   actor: str = CLI_ACTOR) -> tuple[str, str]:
        """Create a key (and its tenant if missing); returns (key_id, key). Only the hash is stored."""
        budget = parse_budget(budget_usd, budget_period, soft_budget_usd)
        rpm, tpm = check_limit("rpm", rpm), check_limit("tpm", tpm)
        if self._ledger.get_tenant(tenant) is None:
            self.create_tenant(tenant, exist_ok=True, actor=actor)
        key_id, secret = keyfmt.new_key_id(), keyfmt.new_secret()
        record = KeyRecord(
            key_id=key_id, tenant=tenant, name=name, secret_hash=keyfmt.hash_secret(key_id, secret),
            created=self._clock(), revoked_at=None, budget=budget, rpm=rpm, tpm=tpm)
        self._ledger.insert_key(record)
        self._ledger.record_change(self._change(actor, "key.create", f"key:{key_id}", None, key_dict(record)))
        self._unknown.pop(key_id, None)
        return key_id, keyfmt.format_key(key_id, secret)

    def list_keys(self, tenant: str | None = None) -> list[dict]:
        if tenant is not None:
            self._require_tenant(tenant)
        return [key_dict(k) for k in self._ledger.list_keys(tenant)]

    def _get_key(self, key_id: str) -> KeyRecord:
        record = self._ledger.get_key(key_id)
        if record is None:
            raise NotFound("key id", key_id, [k.key_id for k in self._ledger.list_keys(None)])
        return record

    def _update_key(self, old: KeyRecord, new: KeyRecord, action: str, actor: str) -> dict:
        if not self._ledger.update_key(new, self._change(actor, action, f"key:{old.key_id}", key_dict(old), key_dict(new))):
            raise NotFound("key id", old.key_id, [])
        self._keys.pop(old.key_id, None)  # the next request reads the new record (and re-verifies its secret)
        return key_dict(new)

    def revoke_key(self, key_id: str, *, actor: str = CLI_ACTOR) -> dict:
        """Revoke a key (idempotent: revoking a revoked key changes nothing and records nothing)."""
        old = self._get_key(key_id)
        if old.revoked_at is not None:
            return key_dict(old)
        return self._update_key(old, replace(old, revoked_at=self._clock()), "key.revoke", actor)

    def rotate_key(self, key_id: str, *, actor: str = CLI_ACTOR) -> tuple[dict, str]:
        """A new secret for the key (same id, budgets, limits and spend); the old secret stops
        working at once here, within cache_ttl_s on other replicas. Returns (key, new secret)."""
        old = self._get_key(key_id)
        if old.revoked_at is not None:
            raise Conflict(f"key {key_id} was revoked at {iso_utc(old.revoked_at)}: create a new key instead")
        secret = keyfmt.new_secret()
        out = self._update_key(old, replace(old, secret_hash=keyfmt.hash_secret(key_id, secret)), "key.rotate", actor)
        return out, keyfmt.format_key(key_id, secret)

    def update_key(self, key_id: str, *, actor: str = CLI_ACTOR, **fields) -> dict:
        """Change a key's budget (budget_usd, budget_period, soft_budget_usd), limits (rpm, tpm)
        or name; None clears one, a field not given is kept."""
        old = self._get_key(key_id)
        unknown = set(fields) - {*BUDGET_FIELDS, "rpm", "tpm", "name"}
        if unknown:
            raise InvalidInput(f"unknown key field(s): {', '.join(sorted(unknown))}")
        new = replace(old, budget=merge_budget(old.budget, fields),
                      rpm=check_limit("rpm", fields["rpm"]) if "rpm" in fields else old.rpm,
                      tpm=check_limit("tpm", fields["tpm"]) if "tpm" in fields else old.tpm,
                      name=(None if fields["name"] is None else check_name("key name", fields["name"]))
                      if "name" in fields else old.name)
        return key_dict(new) if new == old else self._update_key(old, new, "key.update", actor)

    # end-user caps within a tenant (the requests' `user`; "*" is the tenant's default) ------------
    def user_caps(self, tenant: str) -> list[dict]:
        self._require_tenant(tenant)
        return [user_cap_dict(c) for c in self._ledger.user_caps(tenant)]

    def set_user_cap(self, tenant: str, user: str, *, budget_usd=None, budget_period: str = "total",
                     rpm: int | None = None, tpm: int | None = None, actor: str = CLI_ACTOR) -> dict:
        """Cap one end user of a tenant (user "*": every user without a cap of their own): a hard
        budget over a period and/or requests and tokens per minute. Replaces the user's cap."""
        self._require_tenant(tenant)
        cap = UserCap(tenant, check_user(user), parse_budget(budget_usd, budget_period, None),
                      check_limit("rpm", rpm), check_limit("tpm", tpm))
        if cap.budget.budget_pusd is None and cap.rpm is None and cap.tpm is None:
            raise InvalidInput("a user cap needs budget_usd, rpm or tpm (to remove a cap, delete it)")
        old = {c.user: c for c in self._ledger.user_caps(tenant)}.get(user)
        after = user_cap_dict(cap)
        if old != cap:
            self._ledger.set_user_cap(tenant, user, cap, self._change(
                actor, "user_cap.set", f"user:{user_subject(tenant, user)}",
                None if old is None else user_cap_dict(old), after))
        self._user_caps.pop(tenant, None)
        return after

    def delete_user_cap(self, tenant: str, user: str, *, actor: str = CLI_ACTOR) -> None:
        self._require_tenant(tenant)
        old = {c.user: c for c in self._ledger.user_caps(tenant)}.get(user)
        if old is None or not self._ledger.set_user_cap(tenant, user, None, self._change(
                actor, "user_cap.delete", f"user:{user_subject(tenant, user)}", user_cap_dict(old), None)):
            raise NotFound(f"user cap of tenant '{tenant}' for user", user, [])
        self._user_caps.pop(tenant, None)

    def changes(self, limit: int = 100, target: str | None = None) -> list[dict]:
        """The administrative audit trail, newest first."""
        return [change_dict(c) for c in self._ledger.changes(max(0, int(limit)), target)]


__all__ = ["Metering", "key_dict", "tenant_dict"]
