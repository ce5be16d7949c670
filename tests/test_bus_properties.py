"""Property tests of the Agent Message Bus against a small reference model (DESIGN §4).

The reference model (:class:`RefBus`) is written for clarity, not speed: one Python list
per lane in publish order, every rule applied message by message. It needs each
message's simulated latency, which the bus draws from its own random stream; the test
takes it from the bus's own trace: a random sequence of calls is run on the bus, then
the bus is drained (every message that was not dropped is delivered), so the delivery
time of every message the bus kept is known. The reference then replays the same calls
with those delivery times and must agree with the bus on every return value (publish
flags, delivered messages and their order, per-topic views) and every counter after
every call. A message the reference keeps but the bus never delivered stays in the
reference's queue (its time is unknown) and fails the queue-depth comparison after the
drain (the bus lost it); a message delivered by one and not the other fails at once.
The one thing the trace cannot tell is the time of a message dropped (telemetry, oldest
first) before it was delivered; where that decides whether it was due, the reference
allows the ``deferred`` counter a range (with the constant distribution every time is
known and the check is exact). Latencies are checked to lie in ``[0, latency_max_s]``.

Semantics checked (DESIGN §4 and the module docstring of ``gridswarm_env/bus.py``):

* a publish's flag is ``True`` when its lane's queue depth after it exceeds the lane's
  high-water mark (also when the message is refused at the hard bound; never EMERGENCY);
* CONTROL/MARKET refuse a message past ``queue_limit`` (counted dropped), TELEMETRY
  drops its oldest queued message, EMERGENCY is never dropped nor limited;
* ``deliver(now_s)`` hands out, per lane, the due messages (``delivery_time_s <=
  now_s``) earliest first (ties: publish order) within the capacity left in the step
  (EMERGENCY: all); the delivery is ordered by (delivery time, lane, publish order);
* a message due but beyond capacity stays queued (deferred, never lost, order kept)
  and counts one ``deferred`` for every step in which it waited (was due and not taken
  at one or more deliver calls of the step);
* before that, a lane drops its queued messages due more than ``max_deferral_s`` ago
  (``None``: the bus's ``step_s``), counted dropped and listed by ``Delivery.expired``;
  ``congested(lane)`` says the last deliver left a due message or dropped an expired one
  (or the lane is past its high-water mark; never EMERGENCY);
* ``published = delivered + dropped + queue_depth`` on every lane after every call;
* latency p50/p99 cover every delivered message's simulated latency (within one
  histogram bin of the exact inverted-CDF quantile), the mean is exact.

Further properties: the same seed gives the same trace; an emptied bus holds no rows;
a refused call (bad lane, time, id, payload, topic) raises ``ValueError`` and leaves the
bus behaving exactly as if it had not been made.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gridswarm_env.bus import LATENCY_DISTRIBUTIONS, AgentMessageBus, BusConfig, Lane

#: the EMERGENCY entries of the per-lane tuples: fixed (the lane is unlimited by design)
E_CAP, E_HWM, E_LIMIT = 1_000_000, 100_000, 500_000
_LIMITED = tuple(Lane)[1:]
#: the agent step the buses here are built with (``step_s``): what a ``None`` entry of
#: ``max_deferral_s`` stands for
STEP_S = 0.03
#: ``max_deferral_s`` entries drawn for CONTROL, MARKET, TELEMETRY
_DEFERRALS = st.sampled_from([math.inf, math.inf, None, 0.01, 0.04, 0.5])

EXAMPLES = int(os.environ.get("BUS_PROPERTY_EXAMPLES", 60))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: topic -> broadcast subscribers ("quiet" has none: a broadcast there enqueues nothing)
SUBSCRIBERS = {"a": (0, 1, 2), "b": (3,), "quiet": ()}
TOPICS = tuple(SUBSCRIBERS)
COUNTERS = ("published", "delivered", "deferred", "dropped", "queue_depth")


# --------------------------------------------------------------------------- reference
@dataclass
class RefMessage:
    key: tuple[int, int]  # (payload id, recipient): unique per message
    lane: int
    topic: str
    sender: int
    recipient: int
    publish_s: float
    seq: int  # global publish order
    delivery_s: float


@dataclass
class RefLane:
    queue: list[RefMessage] = field(default_factory=list)  # publish order
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    remaining: float = 0.0  # capacity left in this step
    short: bool = False  # the last deliver left a due message or dropped an expired one
    # ... or may have: a message of unknown time (never delivered in the trace) that may
    # have been due while the capacity ran out
    maybe_short: bool = False
    # ``deferred``: each message due but not taken at some deliver call of a step counts
    # once for that step. A message the bus dropped before delivering it has no known
    # time (see the module docstring): whether it was due gives a range (low, high)
    deferred: list[int] = field(default_factory=lambda: [0, 0])
    counted: tuple[set, set] = field(default_factory=lambda: (set(), set()))  # this step


class RefBus:
    """The bus rules, one message at a time (see the module docstring)."""

    def __init__(self, config: BusConfig, delivery_s: dict[tuple[int, int], float]) -> None:
        self.config = config
        self.delivery_s = delivery_s
        self.lanes = [RefLane() for _ in Lane]
        self.max_deferral_s = [STEP_S if v is None else v for v in config.max_deferral_s]
        self.expired: list[RefMessage] = []  # dropped as obsolete by the last deliver
        self.seq = 0
        self.begin_step()

    def begin_step(self) -> None:
        for lane, state in zip(Lane, self.lanes, strict=True):
            cap = self.config.capacity_per_step[lane]
            state.remaining = math.inf if lane is Lane.EMERGENCY else cap
            state.counted = (set(), set())

    def publish_one(self, lane: int, topic: str, payload_id: int, sender: int, recipient: int,
                    now_s: float) -> bool:
        state = self.lanes[lane]
        depth_after = len(state.queue) + 1
        flag = lane != Lane.EMERGENCY and depth_after > self.config.high_water_mark[lane]
        state.published += 1
        limit = self.config.queue_limit[lane]
        if lane in (Lane.CONTROL, Lane.MARKET) and depth_after > limit:
            state.dropped += 1  # refused: the newest message
            return flag
        key = (payload_id, recipient)
        if self.config.latency_distribution == "constant":
            delivery = now_s + self.config.latency_mean_s
        else:  # NaN: the bus never delivered it (dropped later, or lost: see deliver)
            delivery = self.delivery_s.get(key, math.nan)
        state.queue.append(
            RefMessage(key, lane, topic, sender, recipient, now_s, self.seq, delivery)
        )
        self.seq += 1
        if lane == Lane.TELEMETRY and len(state.queue) > limit:
            del state.queue[0]  # oldest first
            state.dropped += 1
        return flag

    def deliver(self, now_s: float) -> list[RefMessage]:
        out = []
        self.expired = []
        max_s = self.config.latency_max_s
        for state, max_deferral_s in zip(self.lanes, self.max_deferral_s, strict=True):
            # obsolete first: due longer ago than max_deferral_s (NaN: never)
            gone = [m for m in state.queue if now_s - m.delivery_s > max_deferral_s]
            state.short = bool(gone)
            if gone:
                state.queue = [m for m in state.queue if not now_s - m.delivery_s > max_deferral_s]
                state.dropped += len(gone)
                self.expired.extend(gone)
            # a kept message the bus never delivered has no known time (NaN): it is not
            # taken here, so it stays queued and the queue depths disagree if it was lost
            due = sorted((m for m in state.queue if m.delivery_s <= now_s),
                         key=lambda m: (m.delivery_s, m.seq))
            unknown = [m for m in state.queue if math.isnan(m.delivery_s)]
            surely_due = [m.key for m in unknown if m.publish_s + max_s <= now_s]
            maybe_due = [m.key for m in unknown if m.publish_s <= now_s]
            n_take = int(min(len(due), state.remaining))
            if n_take < state.remaining:  # spare capacity: a due message would be taken
                assert not surely_due, "a due message was not delivered despite capacity"
                maybe_due = []
            taken, left = due[:n_take], [m.key for m in due[n_take:]]
            state.short = state.short or bool(left) or bool(surely_due)
            state.maybe_short = state.short or bool(maybe_due)
            for bound, waiting in enumerate((left + surely_due, left + maybe_due)):
                counted = state.counted[bound]
                fresh = set(waiting) - counted
                state.deferred[bound] += len(fresh)
                counted |= fresh
            state.remaining -= n_take
            state.delivered += n_take
            taken_keys = {m.key for m in taken}
            state.queue = [m for m in state.queue if m.key not in taken_keys]
            out.extend(taken)
        out.sort(key=lambda m: (m.delivery_s, m.lane, m.seq))
        self.expired.sort(key=lambda m: (m.delivery_s, m.lane, m.seq))
        return out

    def congested(self) -> list[tuple[bool, bool]]:
        """Per lane, as a (low, high) range: short at the last deliver, or past the
        high-water mark (not EMERGENCY); a message of unknown time leaves it open."""
        out = []
        for lane, s in zip(Lane, self.lanes, strict=True):
            past = lane != Lane.EMERGENCY and len(s.queue) > self.config.high_water_mark[lane]
            out.append((s.short or past, s.maybe_short or past))
        return out

    def counters(self) -> dict[str, dict]:
        """Counters per lane; ``deferred`` as a (low, high) range."""
        return {
            lane.name: {
                "published": s.published,
                "delivered": s.delivered,
                "deferred": tuple(s.deferred),
                "dropped": s.dropped,
                "queue_depth": len(s.queue),
            }
            for lane, s in zip(Lane, self.lanes, strict=True)
        }


# --------------------------------------------------------------------------- operations
# ("pub", lane, topic index, recipient (None: broadcast), sender, publish offset s)
# ("batch", lane, topic index, n, sender, publish offset s)
# ("deliver", time step s, begin a new step first)
_OFFSETS = st.sampled_from([0.0, 0.0, 0.0, 0.004, 0.02])
_LANES = st.integers(0, 3)
publish_op = st.tuples(
    st.just("pub"), _LANES, st.integers(0, len(TOPICS) - 1),
    st.one_of(st.none(), st.integers(-1, 4)), st.integers(-1, 4), _OFFSETS,
)
batch_op = st.tuples(
    st.just("batch"), _LANES, st.integers(0, len(TOPICS) - 1), st.integers(0, 7),
    st.integers(-1, 4), _OFFSETS,
)
deliver_op = st.tuples(
    st.just("deliver"), st.sampled_from([0.0, 0.003, 0.01, 0.015, 0.03, 0.06, 1.0]),
    st.booleans(),
)
reset_op = st.just(("reset",))
operations = st.lists(
    st.one_of(publish_op, publish_op, batch_op, deliver_op, deliver_op, reset_op), max_size=45
)


@st.composite
def configs(draw) -> BusConfig:
    distribution = draw(st.sampled_from(LATENCY_DISTRIBUTIONS))
    hwm = (E_HWM, *(draw(st.integers(1, 6)) for _ in _LIMITED))
    limit = (E_LIMIT, *(h + draw(st.integers(0, 4)) for h in hwm[1:]))
    mean_s, max_s = draw(st.sampled_from([(0.015, 0.05), (0.002, 0.004), (0.03, 0.2)]))
    return BusConfig(
        latency_mean_s=mean_s,
        latency_max_s=max_s,
        latency_hist_bins=draw(st.sampled_from([16, 100, 5_000])),
        latency_distribution=distribution,
        capacity_per_step=(E_CAP, *(draw(st.integers(1, 4)) for _ in _LIMITED)),
        max_deferral_s=(math.inf, *(draw(_DEFERRALS) for _ in _LIMITED)),
        high_water_mark=hwm,
        queue_limit=limit,
        latency_block_size=draw(st.sampled_from([3, 64, 65_536])),
    )


#: large batches: the vectorized paths (the bit-key sort from 512 rows, the telemetry
#: head drop compacted from 1 024 dropped rows, partial deliveries of long columns)
big_operations = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), _LANES, st.integers(0, len(TOPICS) - 1),
                  st.sampled_from([1, 300, 700, 1_300]), st.integers(-1, 4), _OFFSETS),
        publish_op,
        deliver_op,
    ),
    max_size=12,
)


@st.composite
def big_configs(draw) -> BusConfig:
    hwm = (E_HWM, *(draw(st.integers(200, 1_500)) for _ in _LIMITED))
    return BusConfig(
        latency_distribution=draw(st.sampled_from(LATENCY_DISTRIBUTIONS)),
        capacity_per_step=(E_CAP, *(draw(st.integers(100, 1_500)) for _ in _LIMITED)),
        max_deferral_s=(math.inf, *(draw(_DEFERRALS) for _ in _LIMITED)),
        high_water_mark=hwm,
        queue_limit=(E_LIMIT, *(h + draw(st.integers(0, 800)) for h in hwm[1:])),
        latency_block_size=draw(st.sampled_from([500, 65_536])),
    )


def new_bus(config: BusConfig, seed: int) -> AgentMessageBus:
    bus = AgentMessageBus(config, rng=seed, step_s=STEP_S)
    for topic, subscribers in SUBSCRIBERS.items():
        if subscribers:
            bus.subscribe_many(topic, np.array(subscribers))
    return bus


def message_rows(delivery) -> list[tuple]:
    """Every delivered message as (key, lane, topic, sender, recipient, publish, delivery)."""
    return [
        ((int(m.payload), m.recipient), int(m.lane), m.topic, m.sender, m.recipient,
         m.publish_time_s, m.delivery_time_s)
        for m in delivery
    ]


def topic_rows(delivery, topic: str, expired: bool = False) -> list[tuple]:
    """The same rows from the per-topic columnar view (a separate code path); with
    ``expired``, of the messages the call dropped as obsolete."""
    batch = delivery.expired(topic) if expired else delivery.topic(topic)
    return [
        ((int(p), int(r)), int(lane), topic, int(s), int(r), float(pt), float(dt))
        for p, s, r, lane, pt, dt in zip(
            batch.payloads.tolist(), batch.senders, batch.recipients, batch.lanes,
            batch.publish_times_s, batch.delivery_times_s, strict=True,
        )
    ]


def run_bus(
    bus: AgentMessageBus, ops: list[tuple], bad: dict | None = None, late_views: bool = False
) -> list[tuple]:
    """Apply ``ops``, then drain the bus; return the trace: one entry per call.

    :param bad: op index -> indices into :func:`bad_calls` to make after that op (each
        must raise ``ValueError``; they are not part of the trace).
    :param late_views: read every :class:`~gridswarm_env.bus.Delivery` (built lazily)
        only after the last call, instead of right after its ``deliver``.
    """
    trace: list = []
    clock_s, next_id = 0.0, 0
    last_pub: dict | None = None
    for index, op in enumerate(ops):
        if op[0] == "pub":
            _, lane, topic_index, recipient, sender, offset = op
            topic = TOPICS[topic_index]
            last_pub = {"topic": topic, "payload": next_id, "lane": Lane(lane), "sender": sender,
                        "recipient": recipient, "now_s": clock_s + offset}
            flag = bus.publish(**last_pub)
            trace.append(("pub", op, next_id, flag))
            next_id += 1
        elif op[0] == "batch":
            _, lane, topic_index, n, sender, offset = op
            ids = np.arange(next_id, next_id + n, dtype=np.int64)
            flags = bus.publish_batch(TOPICS[topic_index], ids, lane=Lane(lane),
                                      senders=sender, now_s=clock_s + offset)
            trace.append(("batch", op, next_id, flags.tolist()))
            next_id += n
        elif op[0] == "reset":  # a new episode: empty queues and counters, clock at 0
            bus.reset()
            clock_s = 0.0
            trace.append(("reset", op))
        else:
            _, dt, new_step = op
            if new_step:
                bus.begin_step()
            clock_s += dt
            trace.append(deliver_entry(bus, op, clock_s, late_views))
        trace.append(("stats", bus.stats()))
        check_storage_bounded(bus)
        if bad and index in bad:
            candidates = bad_calls(bus, clock_s, last_pub)
            for pick in bad[index]:
                name, call, match = candidates[pick % len(candidates)]
                with pytest.raises(ValueError, match=match):
                    call()
                    pytest.fail(f"accepted: {name}")
    for _ in range(1000):  # drain: every message kept is delivered
        if bus.stats()["totals"]["queue_depth"] == 0:
            break
        bus.begin_step()
        clock_s += 1.0
        trace.append(deliver_entry(bus, ("deliver", 1.0, True), clock_s, late_views))
        trace.append(("stats", bus.stats()))
    assert bus.stats()["totals"]["queue_depth"] == 0
    # bounded memory: an empty bus holds no rows, segments, staged messages or stores
    for queue in bus._queues.values():  # white-box
        assert queue.n_rows == 0 and not queue.segments and not queue.payloads
        assert queue.cols.sender.size == 0 and not queue.stores
    return [entry() if callable(entry) else entry for entry in trace]


def check_storage_bounded(bus: AgentMessageBus) -> None:
    """White-box: the rows a lane stores stay within its bounds whatever the calls
    (telemetry compacts its lazily dropped rows by ``max(queue_limit, 1024)``), and every
    payload store kept is addressed by a queued row."""
    for lane, queue in bus._queues.items():
        stored = queue.n_rows + len(queue.payloads)
        limit = bus.config.queue_limit[lane]
        if lane in (Lane.CONTROL, Lane.MARKET):
            assert stored <= limit
        elif lane is Lane.TELEMETRY:
            assert stored < limit + max(limit, 1024)
        assert len(queue.stores) <= queue.cols.sender.size


def deliver_entry(bus: AgentMessageBus, op: tuple, now_s: float, late: bool = False):
    """The trace entry of one ``deliver`` (a callable building it, when ``late``)."""
    delivery = bus.deliver(now_s)
    congested = [bus.congested(lane) for lane in Lane]

    def entry() -> tuple:
        per_topic = {topic: topic_rows(delivery, topic) for topic in TOPICS}
        expired = [row for topic in TOPICS for row in topic_rows(delivery, topic, True)]
        return ("deliver", op, now_s, message_rows(delivery), per_topic, len(delivery),
                expired, congested)

    return entry if late else entry()


def replay_reference(config: BusConfig, trace: list[tuple]) -> None:
    """Check every entry of the bus's trace against the reference model."""
    delivery_s = {
        row[0]: row[6] for entry in trace if entry[0] == "deliver"
        for row in (*entry[3], *entry[6])
    }
    ref = RefBus(config, delivery_s)
    latencies_ms: list[list[float]] = [[] for _ in Lane]
    for entry in trace:
        kind = entry[0]
        if kind == "pub":
            _, (_, lane, topic_index, recipient, sender, offset), pid, flag = entry
            topic = TOPICS[topic_index]
            now_s = entry_time(trace, entry) + offset
            targets = SUBSCRIBERS[topic] if recipient is None else (recipient,)
            flags = [ref.publish_one(lane, topic, pid, sender, r, now_s) for r in targets]
            if flags:
                assert flag is flags[-1], (entry, flags)
            else:  # empty broadcast: the current backpressure state
                assert flag is (len(ref.lanes[lane].queue) > config.high_water_mark[lane])
        elif kind == "batch":
            _, (_, lane, topic_index, n, sender, offset), first, flags = entry
            now_s = entry_time(trace, entry) + offset
            want = [ref.publish_one(lane, TOPICS[topic_index], first + k, sender, -1, now_s)
                    for k in range(n)]
            assert flags == want, (entry, want)
        elif kind == "reset":
            ref = RefBus(config, delivery_s)
            latencies_ms = [[] for _ in Lane]
        elif kind == "deliver":
            _, op, now_s, rows, per_topic, n_delivered, expired, congested = entry
            if op[2]:
                ref.begin_step()
            want = [
                (m.key, m.lane, m.topic, m.sender, m.recipient, m.publish_s, m.delivery_s)
                for m in ref.deliver(now_s)
            ]
            assert rows == want, (entry, want)
            assert n_delivered == len(want)
            for topic in TOPICS:
                assert per_topic[topic] == [row for row in want if row[2] == topic], topic
            gone = [(m.key, m.lane, m.topic, m.sender, m.recipient, m.publish_s, m.delivery_s)
                    for m in ref.expired]
            assert expired == [row for topic in TOPICS for row in gone if row[2] == topic]
            assert all(low <= got <= high for got, (low, high)
                       in zip(congested, ref.congested(), strict=True)), (entry, ref.congested())
            for row in rows:
                latency_s = row[6] - row[5]
                assert 0.0 <= latency_s <= config.latency_max_s * (1 + 1e-9), row
                if config.latency_distribution == "constant":
                    assert latency_s == pytest.approx(config.latency_mean_s, abs=1e-12)
                latencies_ms[row[1]].append(latency_s * 1e3)
        else:
            stats = entry[1]
            want = ref.counters()
            for lane in Lane:
                got = {key: stats["lanes"][lane.name][key] for key in COUNTERS}
                low, high = want[lane.name]["deferred"]
                assert low <= got["deferred"] <= high, (lane.name, got, want[lane.name])
                got["deferred"] = want[lane.name]["deferred"]
                assert got == want[lane.name], (lane.name, got, want[lane.name])
                assert got["published"] == got["delivered"] + got["dropped"] + got["queue_depth"]
                check_latency_stats(config, stats["lanes"][lane.name], latencies_ms[lane])
            assert stats["lanes"]["EMERGENCY"]["dropped"] == 0
            assert stats["lanes"]["EMERGENCY"]["deferred"] == 0
            for key in COUNTERS:
                assert stats["totals"][key] == sum(s[key] for s in stats["lanes"].values())
            check_latency_stats(config, stats["totals"], [x for lane in latencies_ms for x in lane])


def entry_time(trace: list[tuple], entry: tuple) -> float:
    """The clock (last deliver time) when ``entry`` was made."""
    clock_s = 0.0
    for other in trace:
        if other is entry:
            return clock_s
        if other[0] == "deliver":
            clock_s = other[2]
        elif other[0] == "reset":
            clock_s = 0.0
    raise AssertionError("entry not in trace")


def check_latency_stats(config: BusConfig, stats: dict, latencies_ms: list[float]) -> None:
    """p50/p99 within one histogram bin of the inverted-CDF quantile; the mean exact."""
    if not latencies_ms:
        assert stats["latency_p50_ms"] is None and stats["latency_p99_ms"] is None
        assert stats["latency_mean_ms"] is None
        return
    width_ms = config.latency_bin_width_s * 1e3
    values = np.array(latencies_ms)
    for key, q in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert abs(stats[key] - exact) <= width_ms * (1 + 1e-9), (key, stats[key], exact)
    assert stats["latency_mean_ms"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- properties
@PROPERTY_SETTINGS
@given(config=configs(), ops=operations, seed=st.integers(0, 2**16))
# found in CI: a MARKET message the bus dropped unseen (never delivered: its time unknown
# to the model) was due while the capacity ran out, so the lane was congested; the
# model's congested() is a (low, high) range for such messages
@example(config=BusConfig(latency_mean_s=0.015, latency_max_s=0.05,
                          latency_distribution="exponential", latency_sigma=0.5,
                          capacity_per_step=(1000000, 1, 1, 1),
                          high_water_mark=(100000, 1, 1, 1), queue_limit=(500000, 1, 2, 1),
                          max_deferral_s=(math.inf,) * 4, latency_block_size=3,
                          latency_hist_bins=16),
         ops=[("pub", 0, 0, None, 0, 0.0), ("pub", 0, 0, None, 0, 0.0),
              ("pub", 2, 0, None, 0, 0.0), ("deliver", 0.015, False), ("reset",)],
         seed=0)
def test_bus_matches_the_reference_model(config, ops, seed):
    trace = run_bus(new_bus(config, seed), ops)
    replay_reference(config, trace)


@settings(PROPERTY_SETTINGS, max_examples=max(EXAMPLES // 6, 5))
@given(config=big_configs(), ops=big_operations, seed=st.integers(0, 2**16))
def test_bus_matches_the_reference_model_with_large_batches(config, ops, seed):
    trace = run_bus(new_bus(config, seed), ops)
    replay_reference(config, trace)


@PROPERTY_SETTINGS
@given(config=configs(), ops=operations, seed=st.integers(0, 2**16))
def test_same_seed_same_trace(config, ops, seed):
    """Same seed, same calls: the same trace, also when each delivery is read only after
    every later call (the lazy views keep what was delivered)."""
    first = run_bus(new_bus(config, seed), ops)
    second = run_bus(new_bus(config, seed), ops, late_views=True)
    assert repr(first) == repr(second)  # repr: exact float digits


# --------------------------------------------------------------------------- bad input
_LANE_ERROR = "lane must be one of EMERGENCY=0, CONTROL=1, MARKET=2, TELEMETRY=3"
_TIME_ERROR = "now_s must be (a )?finite"


def bad_calls(bus: AgentMessageBus, clock_s: float, last_pub: dict | None) -> list[tuple]:
    """Refused calls ``(name, call, error pattern)``; those derived from the last good
    single publish differ from it in one argument only (the fast path of a publish run)."""
    calls: list[tuple] = []
    if last_pub is not None:
        good = dict(last_pub, recipient=-1 if last_pub["recipient"] is None else
                    last_pub["recipient"], now_s=max(last_pub["now_s"], clock_s))
        variants = [
            ("float lane", {"lane": float(good["lane"])}, _LANE_ERROR),
            ("numpy float lane", {"lane": np.float64(good["lane"])}, _LANE_ERROR),
            ("sender beyond int64", {"sender": 2**63}, "sender must be an int id within int64"),
            ("recipient below int64", {"recipient": -(2**63) - 1},
             "recipient must be an int id within int64"),
            ("sender beyond int64 (broadcast)", {"sender": 2**64, "recipient": None},
             "sender must be an int id within int64"),
            ("float sender", {"sender": float(good["sender"])}, "sender must be an int id"),
            ("bool recipient", {"recipient": True}, "recipient must be an int id"),
            # equal to the run's time but not a number type _check_time takes
            ("0-d array time", {"now_s": np.array(good["now_s"])}, _TIME_ERROR),
            ("Fraction time", {"now_s": Fraction(good["now_s"])}, _TIME_ERROR),
        ]
        if good["lane"] in (Lane.EMERGENCY, Lane.CONTROL):
            variants.append(("bool lane", {"lane": bool(good["lane"])}, _LANE_ERROR))
        if good["now_s"] in (0.0, 1.0):
            variants.append(("bool time", {"now_s": bool(good["now_s"])}, "now_s must be"))
        for name, change, match in variants:
            calls.append((name, lambda change=change: bus.publish(**(good | change)), match))

    def publish(**change):
        call = {"topic": "a", "payload": -1, "lane": Lane.MARKET, "sender": 0,
                "recipient": -1, "now_s": clock_s} | change
        return lambda: bus.publish(**call)

    def batch(**change):
        call = {"topic": "a", "payloads": np.arange(3), "lane": Lane.MARKET,
                "senders": np.arange(3), "now_s": clock_s} | change
        return lambda: bus.publish_batch(**call)

    calls += [
        ("unknown lane", publish(lane=7), _LANE_ERROR),
        ("negative lane", publish(lane=-1), _LANE_ERROR),
        ("lane name", publish(lane="MARKET"), _LANE_ERROR),
        ("NaN time", publish(now_s=math.nan), _TIME_ERROR),
        ("infinite time", publish(now_s=math.inf), _TIME_ERROR),
        ("negative time", publish(now_s=-1.0), _TIME_ERROR),
        ("huge int time", publish(now_s=10**400), _TIME_ERROR),
        ("string time", publish(now_s="0"), _TIME_ERROR),
        ("time before the last deliver", publish(now_s=clock_s - 0.5),
         "time cannot go backwards|finite and >= 0"),
        ("empty topic", publish(topic=""), "topic must be a non-empty str"),
        ("new topic, bad sender", publish(topic="new", sender=1.5), "sender must be an int"),
        ("new topic, bad recipient", publish(topic="new", recipient="x"), "recipient must be"),
        ("2-D payloads", batch(payloads=np.zeros((3, 1))), "payloads must be a 1-D numpy array"),
        ("list payloads", batch(payloads=[1, 2, 3]), "payloads must be a 1-D numpy array"),
        ("new topic, 2-D payloads", batch(topic="new", payloads=np.zeros((3, 1))),
         "payloads must be a 1-D"),
        ("float senders", batch(senders=np.array([0.0, 1.0, 2.0])), "senders must be a 1-D int"),
        ("short senders", batch(senders=np.arange(2)), "senders has length 2, expected 3"),
        ("long recipients", batch(recipients=np.arange(4)), "recipients has length 4"),
        ("uint64 senders beyond int64", batch(senders=np.full(3, 2**63, np.uint64)),
         "senders must fit in int64"),
        ("batch unknown lane", batch(lane=4), _LANE_ERROR),
        ("batch float lane", batch(lane=2.0), _LANE_ERROR),
        ("batch NaN time", batch(now_s=math.nan), _TIME_ERROR),
        ("batch huge int time", batch(now_s=10**400), _TIME_ERROR),
        ("deliver NaN", lambda: bus.deliver(math.nan), _TIME_ERROR),
        ("deliver negative", lambda: bus.deliver(-1.0), _TIME_ERROR),
        ("deliver huge int", lambda: bus.deliver(10**400), _TIME_ERROR),
        ("deliver string", lambda: bus.deliver("1"), _TIME_ERROR),
        ("deliver bool", lambda: bus.deliver(True), _TIME_ERROR),
        ("subscribe bad id, new topic", lambda: bus.subscribe("new", 2**64), "subscriber must be"),
        ("subscribe_many 2-D", lambda: bus.subscribe_many("new", np.zeros((2, 2), np.int64)),
         "subscribers must be a 1-D integer array"),
        ("queue_depth float lane", lambda: bus.queue_depth(2.0), _LANE_ERROR),
        ("backpressure bool lane", lambda: bus.backpressure(True), _LANE_ERROR),
    ]
    if clock_s > 0.0:
        calls.append(("deliver before the last deliver", lambda: bus.deliver(clock_s / 2),
                      "time cannot go backwards"))
    return calls


@PROPERTY_SETTINGS
@given(
    config=configs(),
    ops=operations,
    bad=st.dictionaries(st.integers(0, 44), st.lists(st.integers(0, 60), min_size=1,
                                                    max_size=3), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_refused_calls_raise_and_change_nothing(config, ops, bad, seed):
    """Every bad call raises ``ValueError`` naming what was wrong, and the bus then
    behaves exactly as a bus that never saw it (same trace, same topic registry)."""
    with_bad = new_bus(config, seed)
    clean = new_bus(config, seed)
    assert run_bus(with_bad, ops, bad) == run_bus(clean, ops)
    assert with_bad._topic_names == clean._topic_names  # white-box: no topic registered


@pytest.mark.parametrize("pick", range(45))
def test_each_refused_call_after_a_publish_run(pick):
    """Every candidate of :func:`bad_calls`, once, right after a single publish that
    opened a run at t = 0 (the fast path) and once after a deliver."""
    config = BusConfig(capacity_per_step=(E_CAP, 2, 2, 2), high_water_mark=(E_HWM, 3, 3, 3),
                       queue_limit=(E_LIMIT, 4, 4, 4))
    for lane in (Lane.CONTROL, Lane.MARKET):
        ops = [("pub", int(lane), 0, 1, 0, 0.0), ("pub", int(lane), 0, 2, 0, 0.0),
               ("deliver", 0.03, True), ("pub", int(lane), 1, 3, 4, 0.0)]
        bad = {1: [pick], 3: [pick]}
        with_bad, clean = new_bus(config, 3), new_bus(config, 3)
        assert run_bus(with_bad, ops, bad) == run_bus(clean, ops)
        assert with_bad._topic_names == clean._topic_names  # white-box: no topic registered


@pytest.mark.parametrize("name", ["latency_mean_s", "latency_max_s", "latency_sigma"])
@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_config_refuses_ints_beyond_the_float_range(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
        BusConfig(**{name: value})


# --------------------------------------------------------------------------- deferral count
def test_a_message_deferred_then_dropped_in_the_same_step_still_counts():
    """Telemetry dropped between two deliver calls of a step: the messages the first call
    deferred waited in the step, and the later call's new waiting messages count too."""
    bus = AgentMessageBus(
        BusConfig(latency_distribution="constant", capacity_per_step=(E_CAP, 1, 1, 1),
                  high_water_mark=(E_HWM, 3, 3, 3), queue_limit=(E_LIMIT, 3, 3, 3)),
        rng=0,
    )
    bus.publish_batch("tel", np.arange(3), lane=Lane.TELEMETRY, senders=0, now_s=0.0)
    assert bus.deliver(0.1).topic("tel").payloads.tolist() == [0]  # 1 and 2 wait
    bus.publish_batch("tel", np.arange(3, 6), lane=Lane.TELEMETRY, senders=0, now_s=0.1)
    assert bus.dropped_count(Lane.TELEMETRY) == 2  # 1 and 2, oldest first
    assert len(bus.deliver(0.2)) == 0  # capacity spent: 3, 4 and 5 wait
    assert bus.stats()["lanes"]["TELEMETRY"]["deferred"] == 5
    bus.begin_step()
    assert bus.deliver(0.3).topic("tel").payloads.tolist() == [3]  # 4 and 5 wait again
    assert bus.stats()["lanes"]["TELEMETRY"]["deferred"] == 7


def test_huge_ints_are_shown_shortened_in_errors():
    bus = AgentMessageBus(rng=0)
    with pytest.raises(ValueError, match=r"got 10000000000000000000\.\.\. \(401 characters\)$"):
        bus.deliver(10**400)
    with pytest.raises(ValueError, match=r"sender must be an int id within int64, got 1606938"):
        bus.publish("t", 0, sender=2**200, recipient=1, now_s=0.0)
    assert bus.stats()["totals"]["published"] == 0
