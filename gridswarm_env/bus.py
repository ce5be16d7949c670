"""Agent Message Bus (AMB): topics, four priority lanes, capacity, backpressure, latency.

Description
-----------
Every price signal, bid, forecast, contract and emergency broadcast of gridswarm travels
over this bus (DESIGN §4). A message is published on a *topic* in one of four priority
*lanes* and becomes visible to its recipient at ``delivery_time_s = publish_time_s +
latency_s``, where ``latency_s`` is drawn per message from a configurable distribution
(default: exponential, mean 15 ms, clipped at 50 ms). :meth:`AgentMessageBus.deliver`
hands out everything that is due, ordered by ``(delivery_time_s, lane)`` (emergency
first on ties, then publish order), within each lane's per-step delivery capacity.

Lanes and what happens under load
---------------------------------
============  =====  ==================================================================
lane          value  when due beyond capacity / when the queue is past its hard bound
============  =====  ==================================================================
EMERGENCY     0      never limited: its capacity is *reserved*, never deferred, never
                     dropped, queue unbounded, never reports backpressure (BusConfig
                     refuses EMERGENCY entries other than the defaults)
CONTROL       1      deferred (kept, delivered by a later ``deliver``); past
                     ``queue_limit`` a new message is refused (tail drop, counted
                     ``dropped``, publish returns backpressure); a message deferred
                     longer than ``max_deferral_s`` (default: one agent step) is
                     obsolete and dropped at the next ``deliver``
MARKET        2      same as CONTROL (bids are deferred to the next step, DESIGN §4)
TELEMETRY     3      deferred; past ``queue_limit`` the *oldest* queued telemetry
                     messages are dropped first (fresh telemetry supersedes old)
============  =====  ==================================================================

Why obsolete messages are dropped: a lane hands out its due messages earliest first, so
under sustained overload messages that no longer matter (last round's bids, an old
price signal, a contract whose delivery window has passed) would take every step's
capacity before fresh ones and the backlog would grow for ever. At each ``deliver``, a
lane first drops the queued messages with ``now_s − delivery_time_s > max_deferral_s``
(counted ``dropped``, listed by :meth:`Delivery.expired` so that a publisher can settle
them), then hands out its capacity. The bus resolves a ``None`` entry to the ``step_s``
it was built with (the environment passes ``dt_s``; without it: no limit). A message
that is never deferred is delivered at the first ``deliver`` after it is due, so with
capacity to spare and deliveries less than a step apart (the environment's: gate
closure and step end) none ever reaches that age.

Why tail drop for CONTROL/MARKET: a sender already told "backpressure" should not see an
earlier, acknowledged bid vanish in favour of a later one; the refusal of the newest
message is visible to it through the returned flag, and memory stays bounded.

Backpressure: a publish returns ``True`` when the lane's queue depth *after* enqueueing
the message exceeds ``high_water_mark`` for that lane (never on EMERGENCY).
:meth:`AgentMessageBus.congested` also says when the last ``deliver`` could not hand out
everything due on a lane (deferred or dropped as obsolete); the environment shows agents
either (observation field ``backpressure``).

Accounting, per lane (holds after every call)::

    published = delivered + dropped + queue_depth

``deferred`` counts deferrals to a later step, not a terminal state: a message that is
due but beyond its lane's capacity counts once for every step (:meth:`~AgentMessageBus.begin_step`
to the next) it has to wait through, however many ``deliver`` calls the step makes, also
when telemetry drops it later in the step (a call that defers spends the step's
capacity, so a later call of the step counts only the due messages that were not yet
due at the last call that counted).

Latency model
-------------
``latency_s = min(X, latency_max_s)`` with ``X`` from ``latency_distribution``. The
parameter of ``X`` is solved so that the *clipped* mean equals ``latency_mean_s``:

* exponential, scale ``b``:  E[min(X, M)] = b · (1 − exp(−M / b))
* lognormal, ``ln X ~ N(mu, sigma²)``:
  E[min(X, M)] = exp(mu + sigma²/2) · Φ((ln M − mu − sigma²)/sigma) + M · (1 − Φ((ln M − mu)/sigma))
* constant: ``latency_s = latency_mean_s``.

With the defaults the exponential scale is b = 15.64 ms and P(latency = 50 ms) =
exp(−50/15.64) = 4.1 % (the clipped tail). Defaults: mean 15 ms (DESIGN §4), bounded at
50 ms so that the bus share of the 100 ms emergency response budget (DESIGN §7) always
holds; the mean meets transfer-time class TT4 (≤ 20 ms) and the bound class TT3
(≤ 100 ms) of IEC 61850-5:2013 (communication requirements for power utility automation).
Latencies are drawn in pre-sampled blocks from one ``numpy.random.Generator``, so a seed
fixes every latency (deterministic for a given sequence of calls).

Time
----
A message is visible at the first ``deliver(now_s)`` with ``now_s >= delivery_time_s``
(capacity permitting), never before. ``deliver`` times may not decrease, and a publish may
not be earlier than the last ``deliver`` time (``ValueError``). ``begin_step()`` renews the
per-step capacity; several ``deliver`` calls per step (e.g. at physics sub-steps, to catch
emergency broadcasts within milliseconds) share it.

Implementation notes
--------------------
Single unicast publishes take a fast path that appends to three per-lane Python lists
(no per-message objects, no heap, no RNG call); at ``deliver`` time they become NumPy
columns in one conversion each and get their latencies from the pre-sampled stream.
Broadcasts and batches are appended as one segment per call, whose topic and publish time
stay scalars. A lane whose queued messages are all due (every publish time is at least
``latency_max_s`` before ``now_s``, as latencies never exceed it) and fit in the
remaining capacity is handed over whole, without looking at its rows (the usual step);
a topic delivered as one call's segment is sorted and gathered from it directly, and its
``lanes``/``publish_times_s``/``delivery_times_s`` are filled on first access. Otherwise
(partial delivery, deferral, telemetry head drop) the segments are concatenated into
columns and selection of due messages, capacity, ordering (a stable sort on delivery time
over lane-major, publish-ordered rows) and the compaction of the undelivered remainder
are vectorized; a lane whose earliest queued delivery time is in the future is skipped
without touching its columns. Whether a lane may hold a message past ``max_deferral_s``
is an O(1) test against a lower bound of its queued publish times (delivery times are
not earlier); only then are its columns materialized and the obsolete rows dropped with
one vectorized comparison. Latency statistics live in a fixed-size histogram per lane
(bounded memory over millions of steps), folded in batches. The fast path takes only
calls the checked path would accept (a :class:`Lane`, a time of class float, int,
``np.float64`` or ``np.int64``, int ids within ±(2**30 − 1)); any other call is validated in full (ids within int64), and a refused
call raises ``ValueError`` and changes nothing.

Payloads
--------
Single-publish payloads are arbitrary Python objects, stored by reference (do not mutate
them after publishing); they are delivered in ``object`` arrays, and all recipients of one
broadcast share the same object. Batch payloads are copied rows of a 1-D NumPy array (any
dtype, structured included) and come back with that dtype. A topic whose delivered
messages come from sources of different dtypes is delivered as an ``object`` array
(structured rows become tuples, numbers Python scalars).

Version history: v0 — first version. v1 — one segment per publish call, whole-lane
delivery and per-segment topic batches (identical results, several times faster per step).
v2 — ``max_deferral_s`` (obsolete CONTROL/MARKET messages dropped), ``congested``,
``Delivery.expired``; EMERGENCY entries fixed, and never any backpressure on that lane.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from gridswarm_env.config import REAL_TYPES_TEXT, is_real, wrong_type_text

__all__ = [
    "LATENCY_DISTRIBUTIONS",
    "AgentMessageBus",
    "BusConfig",
    "Delivery",
    "Lane",
    "Message",
    "TopicBatch",
    "latency_parameter",
    "sample_latencies_s",
]

_INF = math.inf
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
#: publish-time classes besides float that the single-publish fast path takes (all of
#: them accepted by :func:`_check_time`; any other class goes through the checked path)
_FAST_TIME_CLASSES = frozenset({int, np.float64, np.int64})


class Lane(enum.IntEnum):
    """Priority lanes of the bus; a lower value is a higher priority."""

    EMERGENCY = 0
    CONTROL = 1
    MARKET = 2
    TELEMETRY = 3


_LANES: tuple[Lane, ...] = tuple(Lane)
_N_LANES = len(_LANES)
#: lanes whose messages are refused (tail drop) past ``queue_limit``
_TAIL_DROP_LANES = frozenset({Lane.CONTROL, Lane.MARKET})
#: the same, indexed by lane value
_TAIL_DROP: tuple[bool, ...] = tuple(lane in _TAIL_DROP_LANES for lane in _LANES)

LATENCY_DISTRIBUTIONS: tuple[str, ...] = ("exponential", "constant", "lognormal")

#: pending delivered rows / deliveries before they are folded into the latency histogram
#: (small enough for the temporaries to stay in cache, large enough to amortize calls)
_FOLD_ROWS = 16_384
_FOLD_PARTS = 256

_COUNTER_KEYS = ("published", "delivered", "deferred", "dropped", "queue_depth")
#: BusConfig defaults of the per-lane tuples; the EMERGENCY entry must keep them
_LANE_DEFAULTS = {"capacity_per_step": 1_000_000, "high_water_mark": 100_000,
                  "queue_limit": 500_000}


def _check_finite_positive(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is finite and > 0."""
    if not is_real(value):
        raise ValueError(f"{name} must be a finite number > 0 ({REAL_TYPES_TEXT}), "
                         f"{wrong_type_text(value)}: {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {_shown(value)}")
    return number


def _shown(value: object) -> str:
    """``repr(value)``, shortened when longer than 40 characters (a huge int)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an int in
    ``[minimum, maximum]`` (no upper bound when ``maximum`` is None)."""
    if (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum
            or (maximum is not None and value > maximum)):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum:_}]"
        raise ValueError(f"{name} must be an int {allowed}, got {_shown(value)}")
    return int(value)


def _check_lane_tuple(name: str, value: object) -> tuple[int, int, int, int]:
    """Validate a per-lane tuple ``(EMERGENCY, CONTROL, MARKET, TELEMETRY)`` of ints >= 1."""
    if not isinstance(value, tuple | list) or len(value) != _N_LANES:
        raise ValueError(
            f"{name} must be a tuple of {_N_LANES} positive ints "
            f"(EMERGENCY, CONTROL, MARKET, TELEMETRY), got {value!r}"
        )
    return tuple(  # type: ignore[return-value]
        _check_int(f"{name}[{lane.name}]", v, 1) for lane, v in zip(_LANES, value, strict=True)
    )


def _check_deferrals(value: object) -> tuple[float | None, ...]:
    """Validate ``max_deferral_s``: 4 entries, each ``None`` or a number > 0 (``inf``
    allowed); the EMERGENCY entry must be ``inf`` (that lane never defers)."""
    if not isinstance(value, tuple | list) or len(value) != _N_LANES:
        raise ValueError(
            f"max_deferral_s must be a tuple of {_N_LANES} entries (EMERGENCY, CONTROL, "
            f"MARKET, TELEMETRY), each None or a number of s > 0, got {value!r}"
        )
    out: list[float | None] = []
    for lane, v in zip(_LANES, value, strict=True):
        name = f"max_deferral_s[{lane.name}]"
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise ValueError(f"{name} must be None or a number of s > 0, got {v!r}")
        number = float(v)
        if not number > 0:
            raise ValueError(f"{name} must be None or a number of s > 0, got {_shown(v)}")
        out.append(number)
    if out[Lane.EMERGENCY] != _INF:
        raise ValueError(
            f"max_deferral_s[EMERGENCY]={value[Lane.EMERGENCY]!r} is not accepted: the emergency "
            "lane is unlimited by design (never deferred or dropped); leave it at inf"
        )
    return tuple(out)


@dataclass(frozen=True)
class BusConfig:
    """Settings of the Agent Message Bus (all validated; see the module docstring).

    :param latency_mean_s: mean simulated latency after clipping, s (default 15 ms,
        DESIGN §4).
    :param latency_max_s: latencies are clipped to this bound, s (default 50 ms; half of
        the 100 ms emergency response budget of DESIGN §7).
    :param latency_distribution: one of ``LATENCY_DISTRIBUTIONS``: ``"exponential"``,
        ``"constant"`` or ``"lognormal"``.
    :param latency_sigma: shape (std. dev. of ``ln X``) of the lognormal distribution;
        unused by the others (default 0.5, a moderate tail).
    :param capacity_per_step: deliveries per step per lane (EMERGENCY, CONTROL, MARKET,
        TELEMETRY). Defaults (10**6 each) never bind for 10 000 agents at normal load.
        The EMERGENCY lane is unlimited by design: its entry must stay at the default
        (another value is refused, not silently ignored).
    :param high_water_mark: queue depth per lane beyond which publish reports
        backpressure (default 10**5 each, 5x the ~2·10**4 queued messages of a
        10 000-agent step). EMERGENCY never reports backpressure: its entry must stay at
        the default.
    :param queue_limit: hard bound of queue depth per lane: CONTROL/MARKET refuse new
        messages past it (tail drop), TELEMETRY drops its oldest; EMERGENCY is never
        dropped: its entry must stay at the default. Must be >= ``high_water_mark``.
        Default 5·10**5 each (56 bytes of columns a queued message plus its payload:
        ~28 MB of columns per full lane).
    :param max_deferral_s: per lane, how long a due message may wait (deferred beyond
        capacity) before it is obsolete: at a ``deliver`` at ``now_s``, a queued message with
        ``now_s − delivery_time_s > max_deferral_s`` is dropped (counted ``dropped``, listed
        in :meth:`Delivery.expired`) before the lane's capacity is handed out. ``None`` means
        *one agent step*: the ``step_s`` the bus was built with (the environment passes
        ``dt_s``; rounds are per step and contracts cover the next step, so a bid, price
        signal or contract deferred longer is obsolete), or no limit on a bus built without
        it. Default ``(inf, None, None, inf)``: CONTROL and MARKET one agent step, TELEMETRY
        unlimited (dropped oldest first past ``queue_limit``), EMERGENCY must be ``inf`` (never
        deferred). Without binding capacity no message ever waits that long: the
        environment delivers at gate closure and at the step end, both less than a step
        apart (so ``EnvConfig`` refuses CONTROL, MARKET and TELEMETRY entries below
        ``dt_s``: a message on time may wait up to ``max(gate_s, dt_s - gate_s)`` for its
        delivery).
        A longer MARKET entry keeps bids past their round: the environment clears only
        the current round's bids, so under a lasting backlog it clears none (README,
        *Where this differs from DESIGN.md*).
    :param latency_block_size: latencies pre-sampled per RNG call (1 to 2**24).
    :param latency_hist_bins: bins of the per-lane latency histogram over
        ``[0, latency_max_s]`` used for p50/p99 (resolution ``latency_max_s / bins``;
        16 to 10**6).
    """

    latency_mean_s: float = 0.015
    latency_max_s: float = 0.05
    latency_distribution: str = "exponential"
    latency_sigma: float = 0.5
    capacity_per_step: tuple[int, int, int, int] = (1_000_000,) * 4
    high_water_mark: tuple[int, int, int, int] = (100_000,) * 4
    queue_limit: tuple[int, int, int, int] = (500_000,) * 4
    max_deferral_s: tuple[float | None, float | None, float | None, float | None] = (
        math.inf, None, None, math.inf)
    latency_block_size: int = 65_536
    latency_hist_bins: int = 5_000

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "latency_mean_s", _check_finite_positive("latency_mean_s", self.latency_mean_s))
        set_(self, "latency_max_s", _check_finite_positive("latency_max_s", self.latency_max_s))
        set_(self, "latency_sigma", _check_finite_positive("latency_sigma", self.latency_sigma))
        if self.latency_distribution not in LATENCY_DISTRIBUTIONS:
            raise ValueError(
                f"latency_distribution must be one of {LATENCY_DISTRIBUTIONS}, "
                f"got {self.latency_distribution!r}"
            )
        if self.latency_distribution == "constant":
            if self.latency_max_s < self.latency_mean_s:
                raise ValueError(
                    f"latency_max_s must be >= latency_mean_s for a constant latency, got "
                    f"latency_max_s={self.latency_max_s} < latency_mean_s={self.latency_mean_s}"
                )
        elif self.latency_max_s <= self.latency_mean_s:
            raise ValueError(
                f"latency_max_s must be > latency_mean_s for a {self.latency_distribution} "
                f"latency (the clipped mean is always below the bound), got "
                f"latency_max_s={self.latency_max_s} <= latency_mean_s={self.latency_mean_s}"
            )
        for name in ("capacity_per_step", "high_water_mark", "queue_limit"):
            set_(self, name, _check_lane_tuple(name, getattr(self, name)))
            emergency, default = getattr(self, name)[Lane.EMERGENCY], _LANE_DEFAULTS[name]
            if emergency != default:
                raise ValueError(
                    f"{name}[EMERGENCY]={emergency} is not accepted: the emergency lane is "
                    f"unlimited by design (never deferred, dropped or flagged); leave it at "
                    f"{default}"
                )
        set_(self, "max_deferral_s", _check_deferrals(self.max_deferral_s))
        for lane, hwm, limit in zip(_LANES, self.high_water_mark, self.queue_limit, strict=True):
            if hwm > limit:
                raise ValueError(
                    f"high_water_mark[{lane.name}]={hwm} must be <= queue_limit[{lane.name}]="
                    f"{limit} (backpressure must show before messages are dropped)"
                )
        # upper bounds: both size arrays the bus allocates (a block of float64 latencies;
        # 4 lanes x bins int64 counts), so a typo fails here, not as a MemoryError later
        set_(self, "latency_block_size", _check_int("latency_block_size",
                                                    self.latency_block_size, 1, 2**24))
        set_(self, "latency_hist_bins", _check_int("latency_hist_bins", self.latency_hist_bins,
                                                   16, 10**6))
        # the bus solves it when built: a shape whose clipped mean float64 cannot reach
        # (a lognormal latency_sigma of 30 overflowed, one of 1e10 never returned) is
        # refused here, naming the fields, not as an OverflowError in the environment
        latency_parameter(self)

    @property
    def latency_bin_width_s(self) -> float:
        """Resolution of the latency statistics, s."""
        return self.latency_max_s / self.latency_hist_bins


def latency_parameter(config: BusConfig) -> float:
    """Parameter of the unclipped latency distribution whose clipped mean is the target.

    Solves ``E[min(X, latency_max_s)] = latency_mean_s`` (equations in the module
    docstring) with Brent's method; the clipped mean is increasing in the parameter.

    :param config: the bus settings.
    :return: the exponential scale ``b`` in s, the lognormal ``mu`` (of ``ln X``, X in s),
        or ``latency_mean_s`` for the constant distribution.
    """
    mean_s, max_s = config.latency_mean_s, config.latency_max_s
    if config.latency_distribution == "constant":
        return mean_s
    try:
        return _solve_latency_parameter(config, mean_s, max_s)
    except (OverflowError, ValueError, ZeroDivisionError) as exc:
        lognormal = config.latency_distribution == "lognormal"
        raise ValueError(
            f"latency_distribution={config.latency_distribution!r} with "
            + (f"latency_sigma={config.latency_sigma!r}, " if lognormal else "")
            + f"latency_mean_s={mean_s!r} and latency_max_s={max_s!r}: float64 cannot solve "
            f"for the latency whose clipped mean is latency_mean_s ({exc}); expected "
            + ("a smaller latency_sigma (real networks: about 0.3 to 1.5)" if lognormal
               else "a latency_max_s further above latency_mean_s")) from None


#: how often :func:`latency_parameter` doubles its bracket before giving up
_BRACKET_DOUBLINGS = 200


def _solve_latency_parameter(config: BusConfig, mean_s: float, max_s: float) -> float:
    """:func:`latency_parameter` of the exponential or lognormal distribution.

    :raises OverflowError, ValueError: no bracket in float64 (the caller words it).
    """
    if config.latency_distribution == "exponential":

        def excess(scale_s: float) -> float:
            return scale_s * -math.expm1(-max_s / scale_s) - mean_s

        low, high = mean_s, 2.0 * mean_s
    else:
        sigma = config.latency_sigma
        log_max = math.log(max_s)

        def excess(mu: float) -> float:
            body = math.exp(mu + 0.5 * sigma**2) * ndtr((log_max - mu - sigma**2) / sigma)
            return body + max_s * (1.0 - ndtr((log_max - mu) / sigma)) - mean_s

        low = math.log(mean_s) - 0.5 * sigma**2  # the unclipped solution; clipping lowers it
        high = low + 1.0
        if excess(low) >= 0.0:   # clipping too rare to lower the mean in float64
            return float(low)
    for _ in range(_BRACKET_DOUBLINGS):
        if excess(high) > 0.0:
            break
        high = high + (high - low) * 2.0
    else:
        raise ValueError("no parameter found whose clipped mean reaches latency_mean_s")
    return float(brentq(excess, low, high, xtol=1e-15, rtol=1e-13))


def sample_latencies_s(
    config: BusConfig, rng: np.random.Generator, n: int, parameter: float | None = None
) -> np.ndarray:
    """Draw ``n`` clipped latencies, s (``float64``, in ``[0, latency_max_s]``).

    :param config: the bus settings (distribution, bound).
    :param rng: the generator to draw from (not used by the constant distribution).
    :param n: number of samples.
    :param parameter: ``latency_parameter(config)``, passed to avoid solving it again.
    :return: array of shape ``(n,)``.
    """
    if parameter is None:
        parameter = latency_parameter(config)
    if config.latency_distribution == "constant":
        return np.full(n, parameter)
    if config.latency_distribution == "exponential":
        samples = rng.exponential(parameter, n)
    else:
        samples = rng.lognormal(parameter, config.latency_sigma, n)
    return np.minimum(samples, config.latency_max_s, out=samples)


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Build the bus generator from a Generator, a seed, or ``None`` (fresh OS entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}")


class _Cols(NamedTuple):
    """Columnar messages of one lane, one row per message (all arrays of shape (n,))."""

    delivery_s: np.ndarray  # float64, simulated delivery time
    publish_s: np.ndarray  # float64, publish time
    topic: np.ndarray  # int64, topic id
    sender: np.ndarray  # int64
    recipient: np.ndarray  # int64
    store: np.ndarray  # int64, id of the payload store holding the payload
    row: np.ndarray  # int64, row of the payload in its store

    @property
    def n(self) -> int:
        """Number of rows."""
        return self.sender.size


class _Seg:
    """Messages appended by one publish call (or one staging flush), in publish order.

    The queue holds these until a ``deliver`` needs row-level work (a partial delivery,
    a telemetry head drop), when :meth:`AgentMessageBus._materialize` turns them into
    :class:`_Cols`. A *uniform* segment (every batch and broadcast, and a staging flush of
    one run) keeps its topic id and publish time as scalars (``topics``/``publish_s`` are
    ``None``); a mixed staging flush has those columns and ``topic == -1``. Payload row i
    is ``payloads[rows[i]]`` (``rows=None``: ``payloads[i]``). Arrays are private to the
    bus and never written after construction.
    """

    __slots__ = (
        "n",
        "topic",
        "publish",
        "delivery_s",
        "sender",
        "recipient",
        "payloads",
        "rows",
        "topics",
        "publish_s",
        "latest_s",
    )

    def __init__(
        self,
        n: int,
        topic: int,
        publish: float,
        delivery_s: np.ndarray,
        sender: np.ndarray,
        recipient: np.ndarray,
        payloads: np.ndarray,
        rows: np.ndarray | None,
        topics: np.ndarray | None,
        publish_s: np.ndarray | None,
        latest_s: float,
    ) -> None:
        self.n = n
        self.topic = topic  # topic id (uniform) or -1 (mixed: see ``topics``)
        self.publish = publish  # publish time (uniform) or NaN (mixed: see ``publish_s``)
        self.delivery_s = delivery_s
        self.sender = sender
        self.recipient = recipient
        self.payloads = payloads
        self.rows = rows
        self.topics = topics
        self.publish_s = publish_s
        self.latest_s = latest_s  # upper bound of delivery_s (publish time + latency_max_s)

    def cols(self, store_id: int) -> _Cols:
        """The segment as columns, its payloads addressed as store ``store_id`` (shared arrays)."""
        n = self.n
        return _Cols(
            self.delivery_s,
            _full(n, self.publish, np.float64) if self.publish_s is None else self.publish_s,
            _full(n, self.topic, np.int64) if self.topics is None else self.topics,
            self.sender,
            self.recipient,
            _full(n, store_id, np.int64),
            np.arange(n) if self.rows is None else self.rows,
        )

    def batch(self, name: str, lane: int) -> TopicBatch:
        """The (uniform) segment as a :class:`TopicBatch` in delivery order."""
        delivery_s = self.delivery_s
        n = self.n
        order = delivery_s.argsort(kind="stable") if n < 512 else _order_by_time(delivery_s)
        rows = self.rows
        # what the frozen dataclass __init__ sets, cheaper; lanes and times on first access
        batch = object.__new__(TopicBatch)
        batch.__dict__.update(
            topic=name,
            # np.take: the same rows as fancy indexing, much faster on structured dtypes
            payloads=self.payloads.take(order if rows is None else rows.take(order)),
            senders=self.sender.take(order),
            recipients=self.recipient.take(order),
            _lazy_columns=(self, order, lane),
        )
        return batch


_EMPTY_F = np.empty(0, np.float64)
_EMPTY_I = np.empty(0, np.int64)
_EMPTY_I8 = np.empty(0, np.int8)
_EMPTY_OBJ = np.empty(0, object)
for _empty in (_EMPTY_F, _EMPTY_I, _EMPTY_I8, _EMPTY_OBJ):  # shared: never written
    _empty.flags.writeable = False
_EMPTY_COLS = _Cols(_EMPTY_F, _EMPTY_F, _EMPTY_I, _EMPTY_I, _EMPTY_I, _EMPTY_I, _EMPTY_I)
_I64 = np.dtype(np.int64)


def _full(n: int, value: float, dtype: type) -> np.ndarray:
    """``np.full(n, value, dtype)`` without its Python-level overhead (hot path)."""
    out = np.empty(n, dtype)
    out.fill(value)
    return out


def _copy_rows(rows: np.ndarray) -> np.ndarray:
    """A copy of a 1-D array (read-only when its dtype is structured).

    NumPy copies a structured array field by field (several µs for 100 rows); one copy of
    its bytes gives the same rows. Dtypes holding Python objects are copied normally.
    """
    dtype = rows.dtype
    if dtype.names is None or dtype.hasobject or not dtype.itemsize or type(rows) is not np.ndarray:
        return rows.copy()
    return np.frombuffer(rows.tobytes(), dtype)


def _take(cols: _Cols, index: np.ndarray) -> _Cols:
    """Rows of ``cols`` selected by a boolean mask or an index array."""
    return _Cols(*(c[index] for c in cols))


def _concat(parts: list[_Cols]) -> _Cols:
    """Concatenate column sets row-wise (``parts`` non-empty)."""
    if len(parts) == 1:
        return parts[0]
    return _Cols(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _order_by_time(times_s: np.ndarray) -> np.ndarray:
    """Indices sorting ``times_s`` (>= 0) ascending, ties in index order (a stable argsort).

    NumPy's argsort has no SIMD path on AVX2 machines, but its value sort does. For
    non-negative floats the IEEE-754 bit pattern read as int64 is monotone in the value,
    so ``(bits - min_bits) << index_bits | index`` is an exact, unique key; sorting those
    keys by value and masking the low bits yields the stable order (about 3x faster at
    10 000 rows). Falls back to the stable argsort for small inputs or when the key would
    not fit in 63 bits (a span of more than ~2**49 ulps).
    """
    n = times_s.size
    if n < 512:
        return times_s.argsort(kind="stable")
    bits = times_s.view(np.int64)
    low = int(bits.min())
    index_bits = (n - 1).bit_length()
    if int(bits.max()) - low >= 1 << (62 - index_bits):
        return times_s.argsort(kind="stable")
    keys = bits - low
    keys <<= index_bits
    keys |= np.arange(n)
    keys.sort()
    keys &= (1 << index_bits) - 1
    return keys


def _run_starts(sorted_ids: np.ndarray) -> np.ndarray:
    """Distinct values of a non-decreasing int array (O(n), no sort)."""
    if sorted_ids.size == 0:
        return sorted_ids
    keep = np.empty(sorted_ids.size, bool)
    keep[0] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=keep[1:])
    return sorted_ids[keep]


def _gather_payloads(
    stores: dict[int, np.ndarray], store: np.ndarray, row: np.ndarray
) -> np.ndarray:
    """Payloads addressed by ``(store, row)`` in the given order.

    One source dtype: an array of that dtype. Several: an ``object`` array (structured rows
    become tuples).
    """
    if store.size == 0:
        return np.empty(0, object)
    # np.take: the same rows as fancy indexing, several times faster on structured dtypes
    if len(stores) == 1:
        (source,) = stores.values()
        return np.take(source, row)
    first = int(store[0])
    if not np.count_nonzero(store != first):
        return np.take(stores[first], row)
    ids = np.unique(store)
    sources = [stores[int(i)] for i in ids]
    dtype = sources[0].dtype
    if any(src.dtype != dtype for src in sources):
        dtype = np.dtype(object)
    out = np.empty(store.size, dtype)
    for i, src in zip(ids, sources, strict=True):
        mask = store == i
        out[mask] = src[row[mask]]
    return out


class Message(NamedTuple):
    """One delivered message (the row view of a :class:`Delivery`)."""

    topic: str
    payload: object
    lane: Lane
    sender: int
    recipient: int
    publish_time_s: float
    delivery_time_s: float


@dataclass(frozen=True)
class TopicBatch:
    """The delivered messages of one topic as NumPy columns, in delivery order.

    :param topic: topic name.
    :param payloads: shape (n,), the payload dtype (``object`` for single publishes).
    :param senders: shape (n,), int64 sender ids.
    :param recipients: shape (n,), int64 recipient ids (-1 is the operator).
    :param lanes: shape (n,), int8 lane values (see :class:`Lane`).
    :param publish_times_s: shape (n,), float64 publish times, s.
    :param delivery_times_s: shape (n,), float64 simulated delivery times, s.

    A batch the bus builds from one publish call's messages fills ``lanes``,
    ``publish_times_s`` and ``delivery_times_s`` on first access (same values; the
    environment reads only payloads, senders and recipients on most topics).
    """

    topic: str
    payloads: np.ndarray
    senders: np.ndarray
    recipients: np.ndarray
    lanes: np.ndarray
    publish_times_s: np.ndarray
    delivery_times_s: np.ndarray

    def __len__(self) -> int:
        return int(self.senders.size)

    @property
    def latencies_s(self) -> np.ndarray:
        """Simulated latency of each message, s."""
        return self.delivery_times_s - self.publish_times_s

    def __getattr__(self, name: str) -> np.ndarray:
        # only reached for an attribute missing from the instance: a lazy column
        lazy = self.__dict__.get("_lazy_columns")
        if lazy is None or name not in _LAZY_COLUMNS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        segment, order, lane = lazy  # a uniform _Seg: one topic, one publish time
        n = segment.n
        self.__dict__.update(
            lanes=_full(n, lane, np.int8),
            publish_times_s=_full(n, segment.publish, np.float64),
            delivery_times_s=segment.delivery_s.take(order),
        )
        del self.__dict__["_lazy_columns"]
        return self.__dict__[name]


_LAZY_COLUMNS = frozenset({"lanes", "publish_times_s", "delivery_times_s"})


class Delivery:
    """The result of one :meth:`AgentMessageBus.deliver`: columnar, sorted lazily.

    Building it costs a few references; the global ``(delivery time, lane)`` order and the
    per-topic views are computed on first access and cached. A topic delivered as one
    publish call's messages (the usual case) is sorted and gathered from that segment
    directly.
    """

    __slots__ = (
        "now_s",
        "_parts",
        "_topic_ids",
        "_topic_names",
        "_stores",
        "_sorted",
        "_topics",
        "_general",
        "_uniform",
        "_empty",
        "_expired",
    )

    def __init__(
        self,
        now_s: float,
        parts: list[tuple[int, _Cols | _Seg]],
        stores: dict[int, np.ndarray],
        topic_ids: dict[str, int],
        topic_names: list[str],
        empty_batches: dict[str, TopicBatch] | None = None,
        uniform: bool = False,
        expired: Delivery | None = None,
    ) -> None:
        self.now_s = now_s
        self._expired = expired  # the messages this call dropped as expired, if any
        self._parts = parts  # (lane, rows) lane-major, publish-ordered within a lane
        self._stores = stores  # payload stores of the _Cols parts
        self._topic_ids = topic_ids
        self._topic_names = topic_names
        self._sorted: tuple[_Cols, np.ndarray] | None = None
        self._topics: dict[str, TopicBatch] = {}
        self._general: tuple[list[tuple[int, _Cols]], dict[int, np.ndarray]] | None = None
        self._uniform = uniform  # every part is a uniform _Seg
        self._empty = {} if empty_batches is None else empty_batches

    def __len__(self) -> int:
        return sum(int(rows.n) for _, rows in self._parts)

    def _cols_parts(self) -> tuple[list[tuple[int, _Cols]], dict[int, np.ndarray]]:
        """Every part as :class:`_Cols` and the payload stores they address."""
        if self._general is None:
            stores = self._stores
            parts: list[tuple[int, _Cols]] = []
            temp_id = -1  # segments get negative store ids: distinct from the queue's
            for lane, rows in self._parts:
                if rows.__class__ is _Seg:
                    if stores is self._stores:
                        stores = dict(stores)
                    stores[temp_id] = rows.payloads
                    parts.append((lane, rows.cols(temp_id)))
                    temp_id -= 1
                else:
                    parts.append((lane, rows))
            self._general = (parts, stores)
        return self._general

    def _columns(self) -> tuple[_Cols, np.ndarray]:
        """All delivered rows in (delivery time, lane, publish order) order, and their lanes."""
        if self._sorted is None:
            parts, _ = self._cols_parts()
            if not parts:
                self._sorted = (_EMPTY_COLS, np.empty(0, np.int8))
            elif len(parts) == 1:
                lane, cols = parts[0]
                order = _order_by_time(cols.delivery_s)
                self._sorted = (_take(cols, order), _full(cols.sender.size, lane, np.int8))
            else:
                cols = _concat([c for _, c in parts])
                lanes = np.concatenate([_full(c.sender.size, lane, np.int8) for lane, c in parts])
                # rows are lane-major and publish-ordered within a lane: a stable sort on
                # time alone yields (delivery time, lane, publish order)
                order = _order_by_time(cols.delivery_s)
                self._sorted = (_take(cols, order), lanes[order])
        return self._sorted

    def _stored_payloads(self, cols: _Cols) -> np.ndarray:
        return _gather_payloads(self._cols_parts()[1], cols.store, cols.row)

    @property
    def topics(self) -> list[str]:
        """Names of the topics with at least one delivered message, sorted."""
        cols, _ = self._columns()
        return sorted(self._topic_names[int(t)] for t in np.unique(cols.topic))

    def topic(self, name: str) -> TopicBatch:
        """The messages of one topic, in delivery order (an empty batch if none).

        :param name: the topic name.
        :return: the :class:`TopicBatch`.
        """
        if name.__class__ is not str or not name:
            if not isinstance(name, str) or not name:
                raise ValueError(f"topic must be a non-empty str, got {name!r}")
        batch = self._topics.get(name)
        if batch is not None:
            return batch
        topic_id = self._topic_ids.get(name, -1)
        if self._uniform:  # one topic per part: pick the parts by their topic id
            hit = None
            for part in self._parts:
                if part[1].topic == topic_id:
                    if hit is not None:
                        break  # several parts: the general path merges them
                    hit = part
            else:
                if hit is None:
                    return self._empty_batch(name, topic_id)
                batch = self._topics[name] = hit[1].batch(name, hit[0])
                return batch
        batch = self._topics[name] = self._general_topic(name, topic_id)
        return batch

    def expired(self, name: str) -> TopicBatch:
        """The messages of one topic that this ``deliver`` dropped as obsolete (queued past
        their lane's ``max_deferral_s``; counted ``dropped``), in delivery-time order; an
        empty batch if none (the usual call). Their payloads were never delivered: a
        publisher that keeps books on them (the environment's contracts) settles them here.

        :param name: the topic name.
        :return: the :class:`TopicBatch`.
        """
        if self._expired is None:
            batch = self._empty.get(name)  # the usual call: nothing expired
            if batch is not None:
                return batch
            if not isinstance(name, str) or not name:
                raise ValueError(f"topic must be a non-empty str, got {name!r}")
            return self._empty_batch(name, self._topic_ids.get(name, -1), cache=False)
        return self._expired.topic(name)

    def _empty_batch(self, name: str, topic_id: int, cache: bool = True) -> TopicBatch:
        batch = self._empty.get(name)
        if batch is None:
            batch = TopicBatch(name, _EMPTY_OBJ, _EMPTY_I, _EMPTY_I, _EMPTY_I8, _EMPTY_F, _EMPTY_F)
            if topic_id >= 0:  # immutable: shared by the deliveries of this bus
                self._empty[name] = batch
        if cache:
            self._topics[name] = batch
        return batch

    def _general_topic(self, name: str, topic_id: int) -> TopicBatch:
        """The topic's rows of each lane, lane-major and publish-ordered, then stably sorted
        by delivery time: the same order as filtering the globally sorted rows (a stable
        sort keeps the relative order of any subset), without sorting the other topics."""
        parts, stores = self._cols_parts()
        pieces: list[tuple[int, _Cols]] = []
        for lane, cols in parts:
            hit = cols.topic == topic_id
            n_hit = int(np.count_nonzero(hit))
            if n_hit:
                pieces.append((lane, cols if n_hit == hit.size else _take(cols, hit)))
        if not pieces:
            return TopicBatch(name, _EMPTY_OBJ, _EMPTY_I, _EMPTY_I, _EMPTY_I8, _EMPTY_F, _EMPTY_F)
        if len(pieces) == 1:
            lane, cols = pieces[0]
            lanes = _full(cols.sender.size, lane, np.int8)
        else:
            cols = _concat([c for _, c in pieces])
            lanes = np.concatenate([_full(c.sender.size, lane, np.int8) for lane, c in pieces])
        order = _order_by_time(cols.delivery_s)
        picked = _take(cols, order)
        return TopicBatch(
            topic=name,
            payloads=_gather_payloads(stores, picked.store, picked.row),
            senders=picked.sender,
            recipients=picked.recipient,
            lanes=lanes if len(pieces) == 1 else lanes[order],
            publish_times_s=picked.publish_s,
            delivery_times_s=picked.delivery_s,
        )

    def __iter__(self) -> Iterator[Message]:
        cols, lanes = self._columns()
        payloads = self._stored_payloads(cols)
        names = self._topic_names
        for topic, payload, lane, sender, recipient, publish_s, delivery_s in zip(
            cols.topic.tolist(),
            payloads,
            lanes.tolist(),
            cols.sender.tolist(),
            cols.recipient.tolist(),
            cols.publish_s.tolist(),
            cols.delivery_s.tolist(),
            strict=True,
        ):
            yield Message(
                names[topic], payload, _LANES[lane], sender, recipient, publish_s, delivery_s
            )

    def __repr__(self) -> str:
        return f"Delivery(now_s={self.now_s!r}, messages={len(self)})"


class _LaneQueue:
    """Queue of one lane: a compacted column remainder, column segments, a staging area.

    Rows are kept in publish order across ``cols`` -> ``segments`` -> staging lists.
    """

    __slots__ = (
        "lane",
        "cols",
        "segments",
        "n_rows",
        "earliest_s",
        "latest_s",
        "lazy_drop",
        "now_s",
        "topic",
        "run_starts",
        "run_times_s",
        "run_topics",
        "senders",
        "recipients",
        "payloads",
        "room",
        "stores",
        "published",
        "delivered",
        "deferred",
        "deferred_mark_s",
        "dropped",
        "min_publish_s",
        "short_at",
    )

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.cols: _Cols = _EMPTY_COLS  # compacted remainder of earlier deliveries
        self.segments: list[_Seg] = []  # batches, broadcasts, flushed staging, in order
        self.n_rows = 0  # rows in cols + segments (including those lazily dropped)
        # bounds of the delivery times in cols + segments: the lower one is computed when
        # a deliver needs it (None: unknown), the upper one kept up to date
        self.earliest_s: float | None = _INF
        self.latest_s = -_INF
        self.lazy_drop = 0  # oldest rows still to be removed (telemetry head drop)
        # staging of single unicast publishes, in publish order:
        self.senders: list[int] = []  # sender id per message
        self.recipients: list[int] = []  # recipient id per message
        self.payloads: list[object] = []  # payload per message
        # ... as runs of equal (publish time, topic): run k starts at staged row
        # run_starts[k]; the fast path only appends to the current run
        self.run_starts: list[int] = []
        self.run_times_s: list[float] = []
        self.run_topics: list[int] = []
        self.now_s = math.nan  # publish time of the current run (NaN: none; never equal)
        self.topic: str | None = None  # topic of the current run
        self.room = 0  # staged messages that fit before the slow path must run
        self.stores: dict[int, np.ndarray] = {}  # payload stores addressed by ``cols``
        self.published = 0  # counted when a message is refused or leaves staging
        self.delivered = 0
        self.deferred = 0
        # time of the last deliver call of this step that deferred (None: none yet); the
        # queued messages due by then have been counted in ``deferred`` for this step
        self.deferred_mark_s: float | None = None
        self.dropped = 0
        # lower bound of the publish times queued (INF: empty); delivery times are not
        # earlier, so no queued message can be past max_deferral_s while
        # now_s - min_publish_s <= max_deferral_s (checked in O(1) per deliver)
        self.min_publish_s = _INF
        # number of the last deliver() call that left due messages of this lane undelivered
        # (deferred) or dropped expired ones (AgentMessageBus.congested compares it)
        self.short_at = -1

    @property
    def depth(self) -> int:
        return self.n_rows - self.lazy_drop + len(self.payloads)


class AgentMessageBus:
    """Topic-based message bus with priority lanes, capacity, backpressure and latency.

    Subscriber and sender ids are ints (the environment uses agent indices ``0..n-1`` and
    ``-1`` for the operator) that fit in int64. Times are simulated seconds, finite and
    >= 0; a publish may not be earlier than the last ``deliver`` time.

    :param config: bus settings (default :class:`BusConfig`).
    :param rng: ``numpy.random.Generator``, int seed, or ``None`` (fresh OS entropy).
    :param step_s: length of one agent step, s: what a ``None`` entry of
        ``config.max_deferral_s`` stands for (the environment passes ``dt_s``); ``None``
        (default): those lanes keep deferred messages without an age limit.
    """

    def __init__(
        self,
        config: BusConfig | None = None,
        rng: np.random.Generator | int | None = None,
        *,
        step_s: float | None = None,
    ) -> None:
        if config is None:
            config = BusConfig()
        if not isinstance(config, BusConfig):
            raise ValueError(f"config must be a BusConfig, got {type(config).__name__}")
        if step_s is not None:
            step_s = _check_finite_positive("step_s", step_s)
        self.config = config
        self.step_s = step_s
        #: per lane, the age (s past its delivery time) beyond which a queued message is
        #: dropped at deliver (INF: never)
        self._max_deferral_s = tuple(
            (_INF if step_s is None else step_s) if v is None else v
            for v in config.max_deferral_s
        )
        self._latency_param = latency_parameter(config)
        self._max_s = config.latency_max_s
        # EMERGENCY never reports backpressure (it is never limited)
        self._hwm = (_INF, *config.high_water_mark[1:])
        self._limit = (_INF, *config.queue_limit[1:])
        #: queue depth up to which staged/batched messages raise no flag and drop nothing
        self._room_bound = tuple(min(h, m) for h, m in zip(self._hwm, self._limit, strict=True))
        self._capacity = (_INF, *config.capacity_per_step[1:])
        self._bin_per_s = config.latency_hist_bins / config.latency_max_s
        self._topic_ids: dict[str, int] = {}
        self._topic_names: list[str] = []
        self._subscribers: dict[int, set[int]] = {}
        self._subscriber_arrays: dict[int, np.ndarray] = {}
        self._empty_batches: dict[str, TopicBatch] = {}
        self.reset(rng if rng is not None else _as_generator(None))

    # ------------------------------------------------------------------ lifecycle
    def reset(self, rng: np.random.Generator | int | None = None) -> None:
        """Empty all queues and counters for a new episode; subscriptions are kept.

        :param rng: a new generator or seed; ``None`` keeps drawing from the current one.
        """
        if rng is not None:
            self._rng = _as_generator(rng)
            self._lat_block = _EMPTY_F
            self._lat_pos = 0
        self._queues: dict[Lane, _LaneQueue] = {lane: _LaneQueue(lane) for lane in _LANES}
        self._lane_queues: tuple[_LaneQueue, ...] = tuple(self._queues.values())
        for queue in self._lane_queues:
            self._update_room(queue)
        self._next_store = 0
        self._deliveries = 0  # deliver() calls since reset
        self._clock_s = 0.0
        self._hist = np.zeros((_N_LANES, self.config.latency_hist_bins), np.int64)
        self._latency_sum_s = np.zeros(_N_LANES)
        # per lane: (delivery times, publish time(s)) of delivered rows not yet folded
        self._pending_latency: list[list[tuple[np.ndarray, np.ndarray | float]]] = [
            [] for _ in _LANES
        ]
        self._pending_rows = self._pending_parts = 0
        self.begin_step()

    def begin_step(self) -> None:
        """Reset the per-step delivery capacity (the environment calls it once per step)."""
        self._remaining: list[float] = list(self._capacity)
        for queue in self._lane_queues:
            queue.deferred_mark_s = None

    # ------------------------------------------------------------------ subscriptions
    def _topic_id(self, topic: str) -> int:
        """Id of ``topic``, registering it on first use."""
        topic_id = self._topic_ids.get(topic) if isinstance(topic, str) else None
        if topic_id is None:
            if not isinstance(topic, str) or not topic:
                raise ValueError(f"topic must be a non-empty str, got {topic!r}")
            topic_id = len(self._topic_names)
            self._topic_ids[topic] = topic_id
            self._topic_names.append(topic)
            self._subscribers[topic_id] = set()
        return topic_id

    def subscribe(self, topic: str, subscriber: int) -> None:
        """Subscribe one id to broadcasts on ``topic`` (idempotent).

        :param topic: topic name (non-empty).
        :param subscriber: subscriber id (int).
        """
        subscriber = _as_id("subscriber", subscriber)
        topic_id = self._topic_id(topic)  # registered only once the call is valid
        self._subscribers[topic_id].add(subscriber)
        self._subscriber_arrays.pop(topic_id, None)

    def subscribe_many(self, topic: str, subscribers: np.ndarray) -> None:
        """Subscribe many ids to broadcasts on ``topic`` (idempotent).

        :param topic: topic name (non-empty).
        :param subscribers: 1-D integer array of subscriber ids.
        """
        ids = _as_id_array("subscribers", subscribers, None)
        topic_id = self._topic_id(topic)
        self._subscribers[topic_id].update(ids.tolist())
        self._subscriber_arrays.pop(topic_id, None)

    def unsubscribe(self, topic: str, subscriber: int) -> None:
        """Remove one id from the subscribers of ``topic`` (no error if absent)."""
        subscriber = _as_id("subscriber", subscriber)
        topic_id = self._topic_id(topic)
        self._subscribers[topic_id].discard(subscriber)
        self._subscriber_arrays.pop(topic_id, None)

    def subscribers(self, topic: str) -> np.ndarray:
        """Current subscribers of ``topic`` as a sorted int64 array (read-only)."""
        return self._subscriber_array(self._topic_id(topic))

    def _subscriber_array(self, topic_id: int) -> np.ndarray:
        array = self._subscriber_arrays.get(topic_id)
        if array is None:
            array = np.array(sorted(self._subscribers[topic_id]), dtype=np.int64)
            array.flags.writeable = False
            self._subscriber_arrays[topic_id] = array
        return array

    # ------------------------------------------------------------------ publishing
    def publish(
        self,
        topic: str,
        payload: object,
        *,
        lane: Lane = Lane.MARKET,
        sender: int,
        recipient: int | None = None,
        now_s: float,
    ) -> bool:
        """Publish one message (or a broadcast) and report backpressure.

        The message is delivered no earlier than ``now_s + latency_s``. ``recipient=None``
        broadcasts to the topic's current subscribers (ascending ids): one message per
        subscriber, each with its own latency, lane and accounting; with no subscribers
        nothing is enqueued.

        :param topic: topic name (non-empty str).
        :param payload: any object, stored by reference.
        :param lane: the priority lane.
        :param sender: sender id.
        :param recipient: recipient id, or ``None`` to broadcast.
        :param now_s: publish time, s (finite, not before the last ``deliver``).
        :return: ``True`` when the lane's queue depth after this publish exceeds its
            high-water mark (also when a CONTROL/MARKET message is refused at the bound).
        """
        # fast path: a unicast continuing the lane's current run of (publish time, topic),
        # both validated when the run was opened, below the high-water mark. It accepts
        # only what the checked path accepts (a Lane, a float, int, np.float64 or np.int64
        # time equal to the run's, int ids; ids within +-(2**30 - 1), one-digit ints
        # whose comparisons CPython specializes: larger ids are checked against int64 by
        # the checked path)
        if lane.__class__ is Lane:
            queue = self._lane_queues[lane]
            payloads = queue.payloads
            if (
                now_s == queue.now_s
                and topic == queue.topic
                and recipient.__class__ is int
                and sender.__class__ is int
                and -0x3FFFFFFF <= sender <= 0x3FFFFFFF
                and -0x3FFFFFFF <= recipient <= 0x3FFFFFFF
                and (now_s.__class__ is float or now_s.__class__ in _FAST_TIME_CLASSES)
                and len(payloads) < queue.room
            ):
                queue.senders.append(sender)
                queue.recipients.append(recipient)
                payloads.append(payload)
                return False
        return self._publish_checked(topic, payload, lane, sender, recipient, now_s)

    def _publish_checked(
        self,
        topic: str,
        payload: object,
        lane: object,
        sender: object,
        recipient: object,
        now_s: object,
    ) -> bool:
        """Validated publish: registration, id coercion, broadcast, bounds, backpressure."""
        queue = self._queues[_as_lane(lane)]
        now_s = self._check_publish_time(now_s)
        sender = _as_id("sender", sender)
        if recipient is not None:
            recipient = _as_id("recipient", recipient)
        topic_id = self._topic_id(topic)  # registered only once the call is valid
        if recipient is None:
            store = np.empty(1, object)
            store[0] = payload
            recipients = self._subscriber_array(topic_id)  # read-only: shared, not copied
            flags = self._enqueue(
                queue,
                topic_id,
                now_s,
                _full(recipients.size, sender, np.int64),
                recipients,
                store,
                np.zeros(recipients.size, np.int64),
            )
            return bool(flags[-1]) if flags.size else queue.depth > self._hwm[queue.lane]
        depth = queue.depth + 1
        if _TAIL_DROP[queue.lane] and depth > self._limit[queue.lane]:
            queue.published += 1
            queue.dropped += 1
            return True
        if now_s != queue.now_s or topic != queue.topic:  # open a new run
            queue.run_starts.append(len(queue.payloads))
            queue.run_times_s.append(now_s)
            queue.run_topics.append(topic_id)
            queue.now_s, queue.topic = now_s, topic
            if now_s < queue.min_publish_s:
                queue.min_publish_s = now_s
        queue.senders.append(sender)
        queue.recipients.append(recipient)
        queue.payloads.append(payload)
        self._after_enqueue(queue)
        return depth > self._hwm[queue.lane]

    def publish_batch(
        self,
        topic: str,
        payloads: np.ndarray,
        *,
        lane: Lane = Lane.MARKET,
        senders: np.ndarray | int,
        recipients: np.ndarray | int | None = None,
        now_s: float,
    ) -> np.ndarray:
        """Publish one message per row of ``payloads`` (vectorized).

        :param topic: topic name (non-empty str).
        :param payloads: 1-D array, one row per message (any dtype, structured included);
            the rows are copied.
        :param lane: the priority lane of every message.
        :param senders: int array of shape (n,), or one int for all messages.
        :param recipients: int array of shape (n,), one int for all, or ``None``: every
            message goes to the operator (recipient ``-1``). Use :meth:`publish` with
            ``recipient=None`` to broadcast to subscribers.
        :param now_s: publish time, s (finite, not before the last ``deliver``).
        :return: bool array of shape (n,): backpressure flag per message (queue depth after
            that message exceeds the lane's high-water mark).
        """
        queue = self._queues[lane if lane.__class__ is Lane else _as_lane(lane)]
        # common inputs are recognized by their exact type; anything else is validated
        if now_s.__class__ is float and self._clock_s <= now_s < _INF:
            now_s += 0.0  # -0.0 -> 0.0, as _check_time
        else:
            now_s = self._check_publish_time(now_s)
        if not isinstance(payloads, np.ndarray) or payloads.ndim != 1:
            raise ValueError(
                "payloads must be a 1-D numpy array (one row per message), got "
                f"{type(payloads).__name__} with shape {np.shape(payloads)}"
            )
        n = payloads.shape[0]
        if senders.__class__ is np.ndarray and senders.dtype == _I64 and senders.shape == (n,):
            sender_ids = senders.copy()
        elif senders.__class__ is int and _I64_MIN <= senders <= _I64_MAX:   # one for all
            sender_ids = _full(n, senders, _I64)
        else:
            sender_ids = _as_id_array("senders", senders, n).copy()
        if recipients is None:
            recipient_ids = _full(n, -1, np.int64)
        elif (
            recipients.__class__ is np.ndarray
            and recipients.dtype == _I64
            and recipients.shape == (n,)
        ):
            recipient_ids = recipients.copy()
        else:
            recipient_ids = _as_id_array("recipients", recipients, n).copy()
        topic_id = self._topic_ids.get(topic) if topic.__class__ is str else None
        if topic_id is None:  # registered only once the call is valid
            topic_id = self._topic_id(topic)
        # the usual call, as _enqueue takes it: nothing staged, no message crosses the
        # high-water mark or the queue limit, the latencies in the pre-sampled block
        depth = queue.n_rows - queue.lazy_drop
        room_bound = self._room_bound[queue.lane]
        start = self._lat_pos
        end = start + n
        if n and depth + n <= room_bound and end <= self._lat_block.size and not queue.payloads:
            self._lat_pos = end
            latest_s = now_s + self._max_s
            queue.segments.append(
                _Seg(
                    n,
                    topic_id,
                    now_s,
                    now_s + self._lat_block[start:end],
                    sender_ids,
                    recipient_ids,
                    _copy_rows(payloads),
                    None,
                    None,
                    None,
                    latest_s,
                )
            )
            queue.published += n
            queue.n_rows += n
            queue.earliest_s = None
            if latest_s > queue.latest_s:
                queue.latest_s = latest_s
            if now_s < queue.min_publish_s:
                queue.min_publish_s = now_s
            queue.room = room_bound - (depth + n)
            return np.zeros(n, bool)
        return self._enqueue(queue, topic_id, now_s, sender_ids, recipient_ids, payloads, None)

    def _enqueue(
        self,
        queue: _LaneQueue,
        topic_id: int,
        now_s: float,
        senders: np.ndarray,
        recipients: np.ndarray,
        payloads: np.ndarray,
        rows: np.ndarray | None,
    ) -> np.ndarray:
        """Append a segment of ``senders.size`` messages (the id arrays are taken over, not
        copied); ``rows=None`` means row i of ``payloads``, which are then copied.

        :meth:`publish_batch` writes its usual case (nothing staged, no mark or limit
        crossed, latencies in the block) itself, with the same bookkeeping as below: a
        change here (a counter, a field of ``_Seg``) must be made there too
        (tests/test_bus_properties.py checks both paths against a reference model)."""
        if queue.payloads:
            self._flush_staging(queue)
        lane = queue.lane
        n = senders.size
        depth = queue.n_rows - queue.lazy_drop
        hwm = self._hwm[lane]
        if depth + n <= hwm:  # the usual case: no message crosses the mark
            flags = np.zeros(n, bool)
        else:
            flags = np.arange(depth + 1, depth + n + 1) > hwm
        keep = n
        if _TAIL_DROP[lane]:
            keep = self._limit[lane] - depth  # room below the hard bound
            if keep >= n:
                keep = n
            elif keep < 0:
                keep = 0
        queue.published += n
        queue.dropped += n - keep
        if keep:
            if keep < n:
                senders, recipients = senders[:keep].copy(), recipients[:keep].copy()
                payloads = payloads[:keep]
            if rows is None:
                payloads = _copy_rows(payloads)
            else:
                rows = rows[:keep]
            start = self._lat_pos
            if start + keep <= self._lat_block.size:  # the next latencies, as _take_latencies
                self._lat_pos = start + keep
                latencies_s = self._lat_block[start : start + keep]
            else:
                latencies_s = self._take_latencies(keep)
            latest_s = now_s + self._max_s
            queue.segments.append(
                _Seg(
                    keep,
                    topic_id,
                    now_s,
                    now_s + latencies_s,
                    senders,
                    recipients,
                    payloads,
                    rows,
                    None,
                    None,
                    latest_s,
                )
            )
            queue.n_rows += keep
            queue.earliest_s = None
            if latest_s > queue.latest_s:
                queue.latest_s = latest_s
            if now_s < queue.min_publish_s:
                queue.min_publish_s = now_s
            depth += keep
        if depth > self._limit[lane]:
            self._after_enqueue(queue)  # TELEMETRY past its bound: head drop
        else:
            queue.room = self._room_bound[lane] - depth
        return flags

    def _after_enqueue(self, queue: _LaneQueue) -> None:
        """Apply the telemetry head drop past ``queue_limit`` and refresh the staging room."""
        excess = queue.depth - self._limit[queue.lane]
        if excess > 0:  # only TELEMETRY gets here: CONTROL/MARKET refuse, EMERGENCY has no limit
            queue.lazy_drop += excess
            queue.dropped += excess
            if queue.lazy_drop >= max(self._limit[queue.lane], 1024):
                self._materialize(queue)  # keep memory bounded under a flood
        queue.room = self._room_bound[queue.lane] - (queue.n_rows - queue.lazy_drop)

    def _update_room(self, queue: _LaneQueue) -> None:
        queue.room = self._room_bound[queue.lane] - (queue.n_rows - queue.lazy_drop)

    def _add_store(self, queue: _LaneQueue, store: np.ndarray) -> int:
        store_id = self._next_store
        self._next_store += 1
        queue.stores[store_id] = store
        return store_id

    def _check_publish_time(self, now_s: object) -> float:
        return _check_time("now_s", now_s, self._clock_s, "the last deliver() time")

    # ------------------------------------------------------------------ latencies
    def _take_latencies(self, n: int) -> np.ndarray:
        """The next ``n`` latencies of the pre-sampled stream, s."""
        start = self._lat_pos
        if start + n <= self._lat_block.size:
            self._lat_pos = start + n
            return self._lat_block[start : start + n]
        pieces = [self._lat_block[start:]]
        needed = n - pieces[0].size
        block_size = self.config.latency_block_size
        while True:
            self._lat_block = sample_latencies_s(
                self.config, self._rng, block_size, self._latency_param
            )
            if needed <= block_size:
                self._lat_pos = needed
                pieces.append(self._lat_block[:needed])
                return np.concatenate(pieces)
            pieces.append(self._lat_block)
            needed -= block_size

    # ------------------------------------------------------------------ delivery
    def _flush_staging(self, queue: _LaneQueue) -> None:
        """Turn the staged single publishes of a lane into one segment (their ids were
        checked to fit in int64 when published)."""
        n = len(queue.payloads)
        if n == 0:
            return
        senders = np.fromiter(queue.senders, np.int64, n)
        recipients = np.fromiter(queue.recipients, np.int64, n)
        payloads = np.fromiter(queue.payloads, object, n)
        if len(queue.run_starts) == 1:  # one (publish time, topic) run: the usual step
            now_s = queue.run_times_s[0]
            segment = _Seg(
                n,
                queue.run_topics[0],
                now_s,
                now_s + self._take_latencies(n),
                senders,
                recipients,
                payloads,
                None,
                None,
                None,
                now_s + self._max_s,
            )
        else:
            run_rows = np.diff([*queue.run_starts, n])
            publish_s = np.repeat(np.array(queue.run_times_s, np.float64), run_rows)
            segment = _Seg(
                n,
                -1,
                math.nan,
                publish_s + self._take_latencies(n),
                senders,
                recipients,
                payloads,
                None,
                np.repeat(np.array(queue.run_topics, np.int64), run_rows),
                publish_s,
                max(queue.run_times_s) + self._max_s,
            )
        for staged in (queue.senders, queue.recipients, queue.payloads):
            staged.clear()
        for runs in (queue.run_starts, queue.run_times_s, queue.run_topics):
            runs.clear()
        queue.now_s, queue.topic = math.nan, None  # the next publish re-validates its time
        queue.published += n
        self._append_segment(queue, segment)

    def _append_segment(self, queue: _LaneQueue, segment: _Seg) -> None:
        queue.segments.append(segment)
        queue.n_rows += segment.n
        queue.earliest_s = None
        queue.latest_s = max(queue.latest_s, segment.latest_s)
        self._update_room(queue)

    def _materialize(self, queue: _LaneQueue) -> _Cols:
        """All queued rows of a lane as one column set, publish-ordered, head drop applied."""
        if queue.payloads:
            self._flush_staging(queue)
        if queue.segments:
            parts = [queue.cols] if queue.cols.sender.size else []
            for segment in queue.segments:  # store ids rise in publish order
                parts.append(segment.cols(self._add_store(queue, segment.payloads)))
            queue.cols = _concat(parts)
            queue.segments = []
        if queue.lazy_drop:
            queue.cols = _Cols(*(c[queue.lazy_drop :] for c in queue.cols))
            queue.n_rows -= queue.lazy_drop
            queue.lazy_drop = 0
            self._prune_stores(queue)
            self._update_room(queue)
        return queue.cols

    def _prune_stores(self, queue: _LaneQueue) -> None:
        """Forget payload stores no queued row refers to (store ids rise in publish order)."""
        live = _run_starts(queue.cols.store).tolist()
        queue.stores = {s: queue.stores[s] for s in live}

    def _earliest_s(self, queue: _LaneQueue) -> float:
        """Earliest delivery time queued in cols + segments (computed once per change)."""
        if queue.earliest_s is None:
            earliest = float(queue.cols.delivery_s.min()) if queue.cols.sender.size else _INF
            for segment in queue.segments:
                earliest = min(earliest, float(np.minimum.reduce(segment.delivery_s)))
            queue.earliest_s = earliest
        return queue.earliest_s

    def deliver(self, now_s: float) -> Delivery:
        """Deliver every due message (``delivery_time_s <= now_s``) within capacity.

        Order: (delivery time, lane), then publish order. Per lane at most the remaining
        capacity of this step is delivered, earliest first; EMERGENCY is always delivered
        in full. Due messages left over stay queued and count one deferral each. Before
        that, a lane drops its queued messages past ``max_deferral_s`` (due longer ago than
        that; counted ``dropped``, listed by :meth:`Delivery.expired`): obsolete messages
        never take capacity from fresh ones.

        :param now_s: current simulated time, s (finite, >= 0, not before the previous
            call).
        :return: the :class:`Delivery`.
        """
        if now_s.__class__ is float and self._clock_s <= now_s < _INF:
            now_s += 0.0  # -0.0 -> 0.0, as _check_time
        else:
            now_s = _check_time("now_s", now_s, self._clock_s, "the previous deliver() time")
        queues = self._lane_queues
        for queue in queues:
            if queue.payloads:
                self._flush_staging(queue)
        self._clock_s = now_s
        parts: list[tuple[int, _Cols | _Seg]] = []
        stores: dict[int, np.ndarray] = {}
        uniform = True
        remaining = self._remaining
        max_deferral_s = self._max_deferral_s
        expired: Delivery | None = None  # what this call drops as obsolete (rarely any)
        self._deliveries += 1  # a lane short at this call records this number
        for queue in queues:
            n_rows = queue.n_rows
            if n_rows == 0:
                continue
            lane = queue.lane
            # some queued message may be past its lane's max_deferral_s (never with an
            # unlimited lane, nor while the oldest publish is recent enough)
            aging = now_s - queue.min_publish_s > max_deferral_s[lane]
            if (now_s >= queue.latest_s and n_rows <= remaining[lane] and not queue.lazy_drop
                    and not aging):
                # everything queued is due (no latency exceeds latency_max_s) and fits:
                # hand the rows over as they are, without touching their columns
                taken: list[_Cols | _Seg] = queue.segments
                queue.segments = []
                if queue.cols.sender.size:  # the remainder of a partial delivery
                    taken.insert(0, queue.cols)
                    stores.update(queue.stores)
                    queue.cols, queue.stores = _EMPTY_COLS, {}
                pending = self._pending_latency[lane]
                for rows in taken:
                    parts.append((lane, rows))
                    publish_s = rows.publish_s
                    if publish_s is None:  # a uniform segment: one topic, one publish time
                        pending.append((rows.delivery_s, rows.publish))
                    else:
                        pending.append((rows.delivery_s, publish_s))
                        uniform = False
                queue.n_rows = 0
                queue.earliest_s, queue.latest_s = _INF, -_INF
                queue.min_publish_s = _INF
                queue.room = self._room_bound[lane]
                queue.delivered += n_rows
                remaining[lane] -= n_rows
                # _count_pending(n_rows), inline
                self._pending_rows += n_rows
                self._pending_parts += 1
                if self._pending_rows >= _FOLD_ROWS or self._pending_parts >= _FOLD_PARTS:
                    self._fold_latencies()
                continue
            if not aging and self._earliest_s(queue) > now_s:
                continue  # nothing can be due: skip without touching the columns
            cols = self._materialize(queue)
            if aging:
                if expired is None:
                    expired = Delivery(now_s, [], {}, self._topic_ids, self._topic_names,
                                       self._empty_batches)
                cols = self._drop_expired(queue, cols, now_s, max_deferral_s[lane], expired)
                if not cols.sender.size:
                    continue
            due = cols.delivery_s <= now_s
            n_due = int(np.count_nonzero(due))
            capacity = remaining[lane]
            if n_due > capacity:
                # a message waiting through a step counts once for it, however many
                # deliver calls the step makes: a call that defers spends the step's
                # capacity, so every due message it leaves is counted then, and a later
                # call of the step counts only the due messages not due at the last
                # counting call (those are its messages still queued: none is delivered
                # in between, telemetry may have dropped some)
                excess = n_due - int(capacity)
                mark_s = queue.deferred_mark_s
                if mark_s is not None:
                    excess -= int(np.count_nonzero(cols.delivery_s <= mark_s))
                queue.deferred += excess
                queue.deferred_mark_s = now_s
                n_due = int(capacity)
                queue.short_at = self._deliveries
                if n_due == 0:
                    continue
                due_index = np.flatnonzero(due)
                earliest = _order_by_time(cols.delivery_s[due_index])
                due[:] = False
                due[due_index[earliest[:n_due]]] = True
            if n_due == 0:
                continue
            if n_due == cols.sender.size:  # everything queued is delivered
                taken_cols, queue.cols = cols, _EMPTY_COLS
                stores.update(queue.stores)
                queue.stores = {}
                queue.earliest_s, queue.latest_s = _INF, -_INF
                queue.min_publish_s = _INF
            else:
                taken_cols = _take(cols, due)
                queue.cols = _take(cols, ~due)
                for store_id in _run_starts(taken_cols.store).tolist():
                    stores[store_id] = queue.stores[store_id]
                self._prune_stores(queue)
                queue.earliest_s = float(queue.cols.delivery_s.min())
                queue.latest_s = float(queue.cols.delivery_s.max())
                queue.min_publish_s = float(queue.cols.publish_s.min())
            queue.n_rows -= n_due
            queue.delivered += n_due
            remaining[lane] = capacity - n_due
            self._update_room(queue)
            self._pending_latency[lane].append((taken_cols.delivery_s, taken_cols.publish_s))
            self._count_pending(n_due)
            parts.append((lane, taken_cols))
            uniform = False
        if expired is not None and not expired._parts:
            expired = None
        return Delivery(
            now_s, parts, stores, self._topic_ids, self._topic_names, self._empty_batches,
            uniform, expired,
        )

    def _drop_expired(
        self,
        queue: _LaneQueue,
        cols: _Cols,
        now_s: float,
        max_deferral_s: float,
        expired: Delivery,
    ) -> _Cols:
        """Drop the lane's queued messages due more than ``max_deferral_s`` before
        ``now_s`` (vectorized over the materialized ``cols``); they are counted
        ``dropped``, mark the lane short and are added to ``expired`` (the call's
        :meth:`Delivery.expired`).

        :return: the lane's remaining columns (also ``queue.cols``).
        """
        old = (now_s - cols.delivery_s) > max_deferral_s
        n_old = int(np.count_nonzero(old))
        if n_old:
            gone = _take(cols, old)
            for store_id in _run_starts(gone.store).tolist():
                expired._stores[store_id] = queue.stores[store_id]
            expired._parts.append((queue.lane, gone))
            cols = queue.cols = _take(cols, ~old) if n_old < cols.sender.size else _EMPTY_COLS
            self._prune_stores(queue)
            queue.n_rows -= n_old
            queue.dropped += n_old
            queue.short_at = self._deliveries
            queue.earliest_s = None
            self._update_room(queue)
        queue.min_publish_s = float(cols.publish_s.min()) if cols.sender.size else _INF
        if not cols.sender.size:
            queue.earliest_s, queue.latest_s = _INF, -_INF
        return cols

    def _count_pending(self, n_rows: int) -> None:
        """Count the rows one ``deliver`` took from a lane (queued in ``_pending_latency``
        for the latency histogram) and fold when enough are pending (cheap per call)."""
        self._pending_rows += n_rows
        self._pending_parts += 1
        if self._pending_rows >= _FOLD_ROWS or self._pending_parts >= _FOLD_PARTS:
            self._fold_latencies()

    def _fold_latencies(self) -> None:
        """Add the pending delivered latencies to the per-lane histograms and sums."""
        n_bins = self.config.latency_hist_bins
        for lane, pending in enumerate(self._pending_latency):
            if not pending:
                continue
            # latency = delivery - publish, row by row, over all pending rows of the lane
            # (publish: one time per segment, or a column)
            delivery_s = np.concatenate([delivery for delivery, _ in pending])
            if all(publish.__class__ is float for _, publish in pending):
                publish_s = np.repeat(
                    np.array([publish for _, publish in pending]),
                    [delivery.size for delivery, _ in pending],
                )
            else:
                publish_s = np.concatenate(
                    [
                        publish
                        if publish.__class__ is np.ndarray
                        else _full(delivery.size, publish, np.float64)
                        for delivery, publish in pending
                    ]
                )
            latencies_s = np.subtract(delivery_s, publish_s, out=delivery_s)
            self._latency_sum_s[lane] += latencies_s.sum()
            # latencies are >= 0 by construction; the bound catches rounding at the max
            bins = np.multiply(latencies_s, self._bin_per_s, out=latencies_s).astype(np.intp)
            np.minimum(bins, n_bins - 1, out=bins)
            self._hist[lane] += np.bincount(bins, minlength=n_bins)
            pending.clear()
        self._pending_rows = self._pending_parts = 0

    # ------------------------------------------------------------------ statistics
    def queue_depth(self, lane: Lane) -> int:
        """Messages currently queued on ``lane`` (not yet delivered or dropped)."""
        return self._queues[lane if lane.__class__ is Lane else _as_lane(lane)].depth

    def dropped_count(self, lane: Lane) -> int:
        """Messages dropped on ``lane`` so far (refused past ``queue_limit``, or telemetry
        head drops). A publisher compares it before and after a :meth:`publish_batch` on
        a tail-drop lane: the batch's last ``after − before`` messages were refused."""
        return self._queues[lane if lane.__class__ is Lane else _as_lane(lane)].dropped

    def backpressure(self, lane: Lane) -> bool:
        """Whether ``lane``'s queue depth currently exceeds its high-water mark (never for
        EMERGENCY)."""
        lane = _as_lane(lane)
        return self._queues[lane].depth > self._hwm[lane]

    def congested(self, lane: Lane) -> bool:
        """Whether ``lane`` is congested: the last :meth:`deliver` could not hand out
        everything of it that was due (some deferred beyond capacity, or dropped past
        ``max_deferral_s``), or its queue is past the high-water mark. Never for
        EMERGENCY, which is always delivered in full."""
        if lane.__class__ is not Lane:
            lane = _as_lane(lane)
        queue = self._lane_queues[lane]
        return queue.short_at == self._deliveries or queue.depth > self._hwm[lane]

    def _latency_summary(self, hist: np.ndarray, latency_sum_s: float) -> dict[str, float | None]:
        """p50/p99/mean in ms from a latency histogram (``None`` when empty)."""
        total = int(hist.sum())
        if total == 0:
            return {"latency_p50_ms": None, "latency_p99_ms": None, "latency_mean_ms": None}
        cdf = np.cumsum(hist)
        width_ms = self.config.latency_bin_width_s * 1e3
        out: dict[str, float | None] = {}
        for key, q in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
            target = q * total
            k = int(np.searchsorted(cdf, target))  # first bin with cdf >= target
            below = float(cdf[k - 1]) if k else 0.0
            out[key] = (k + (target - below) / float(hist[k])) * width_ms
        out["latency_mean_ms"] = latency_sum_s / total * 1e3
        return out

    def stats(self) -> dict:
        """Counters and simulated-latency statistics per lane and in total.

        :return: ``{"lanes": {name: {"published", "delivered", "deferred", "dropped",
            "queue_depth", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms"}},
            "totals": {same keys, over all lanes}}``. Latency statistics cover delivered
            messages (simulated latency, not deferral waits), resolution
            ``config.latency_bin_width_s``; ``None`` before any delivery.
        """
        self._fold_latencies()
        lanes: dict[str, dict] = {}
        for lane, queue in self._queues.items():
            entry: dict = {
                "published": queue.published + len(queue.payloads),
                "delivered": queue.delivered,
                "deferred": queue.deferred,
                "dropped": queue.dropped,
                "queue_depth": queue.depth,
            }
            entry.update(self._latency_summary(self._hist[lane], float(self._latency_sum_s[lane])))
            lanes[lane.name] = entry
        totals: dict = {key: sum(entry[key] for entry in lanes.values()) for key in _COUNTER_KEYS}
        totals.update(
            self._latency_summary(self._hist.sum(axis=0), float(self._latency_sum_s.sum()))
        )
        return {"lanes": lanes, "totals": totals}


def _as_lane(lane: object) -> Lane:
    """``lane`` as a :class:`Lane`, or ``ValueError`` listing the allowed lanes."""
    if not isinstance(lane, bool) and isinstance(lane, int | np.integer):
        try:
            return Lane(int(lane))
        except ValueError:
            pass
    allowed = ", ".join(f"{m.name}={m.value}" for m in Lane)
    raise ValueError(f"lane must be one of {allowed}, got {lane!r}")


def _as_id(name: str, value: object) -> int:
    """An id as a Python int in int64 range, or ``ValueError``."""
    if not isinstance(value, bool):
        try:
            value = operator.index(value)
        except TypeError:
            pass
        else:
            if _I64_MIN <= value <= _I64_MAX:
                return value
    raise ValueError(f"{name} must be an int id within int64, got {_shown(value)}")


def _as_id_array(name: str, value: object, n: int | None) -> np.ndarray:
    """Ids as an int64 array of shape (n,) (a scalar is repeated), or ``ValueError``."""
    if n is not None and (isinstance(value, int | np.integer) and not isinstance(value, bool)):
        return _full(n, _as_id(name, value), np.int64)
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be a 1-D integer array, got dtype {array.dtype} shape {array.shape}"
        )
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has length {array.shape[0]}, expected {n} (one per payload)")
    if array.dtype == np.uint64 and array.size and array.max() > _I64_MAX:
        raise ValueError(f"{name} must fit in int64")
    return array.astype(np.int64, copy=False)


def _check_time(name: str, value: object, earliest_s: float, earliest_what: str) -> float:
    """A time as float: finite, >= 0 and >= ``earliest_s``, or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a finite time in s, got {value!r}")
    try:
        time_s = float(value) + 0.0  # -0.0 -> 0.0 (the sort keys rely on non-negative times)
    except OverflowError:  # an int beyond the float range
        time_s = math.inf
    if not math.isfinite(time_s) or time_s < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {_shown(value)}")
    value = time_s
    if value < earliest_s:
        raise ValueError(
            f"{name}={value!r} is before {earliest_what} ({earliest_s!r}): time cannot go backwards"
        )
    return value
