"""Tests of the Agent Message Bus (gridswarm_env/bus.py, DESIGN §4)."""

from __future__ import annotations

import gc
import math
import os
import tracemalloc
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridswarm_env.bus import (
    LATENCY_DISTRIBUTIONS,
    AgentMessageBus,
    BusConfig,
    Delivery,
    Lane,
    _order_by_time,
    latency_parameter,
    sample_latencies_s,
)

#: the EMERGENCY entries of the per-lane tuples: fixed (the lane is unlimited by design)
E_CAP, E_HWM, E_LIMIT = 1_000_000, 100_000, 500_000


def make_bus(seed: int = 0, **overrides) -> AgentMessageBus:
    return AgentMessageBus(BusConfig(**overrides), rng=seed)


def assert_accounting(bus: AgentMessageBus) -> None:
    """published = delivered + dropped + queue_depth on every lane, and totals add up."""
    stats = bus.stats()
    for name, lane in stats["lanes"].items():
        assert lane["published"] == lane["delivered"] + lane["dropped"] + lane["queue_depth"], name
        assert lane["queue_depth"] == bus.queue_depth(Lane[name])
    for key in ("published", "delivered", "deferred", "dropped", "queue_depth"):
        assert stats["totals"][key] == sum(lane[key] for lane in stats["lanes"].values())


def assert_ordered(delivery: Delivery, now_s: float) -> None:
    """Delivered messages are due and sorted by (delivery time, lane)."""
    messages = list(delivery)
    keys = [(m.delivery_time_s, int(m.lane)) for m in messages]
    assert keys == sorted(keys)
    assert all(m.delivery_time_s <= now_s for m in messages)
    assert all(m.delivery_time_s >= m.publish_time_s for m in messages)


# --------------------------------------------------------------------------- ordering
def test_equal_delivery_times_are_ordered_by_lane_then_publish_order():
    bus = make_bus(latency_distribution="constant")
    for lane in (Lane.TELEMETRY, Lane.MARKET, Lane.CONTROL, Lane.EMERGENCY):
        for k in range(2):
            bus.publish("t", (lane.name, k), lane=lane, sender=k, recipient=-1, now_s=0.0)
    delivery = bus.deliver(1.0)
    got = [m.payload for m in delivery]
    want = [(lane.name, k) for lane in Lane for k in range(2)]
    assert got == want
    assert [m.lane for m in delivery] == [lane for lane in Lane for _ in range(2)]
    assert {m.delivery_time_s for m in delivery} == {0.015}


def test_random_latencies_deliver_sorted_by_time_then_lane():
    bus = make_bus(seed=3)
    rng = np.random.default_rng(0)
    for k in range(400):
        lane = Lane(int(rng.integers(4)))
        bus.publish("t", k, lane=lane, sender=k, recipient=-1, now_s=0.0)
    bus.publish_batch("t", np.arange(100.0), lane=Lane.CONTROL, senders=np.arange(100), now_s=0.0)
    delivery = bus.deliver(1.0)
    assert len(delivery) == 500
    assert_ordered(delivery, 1.0)
    batch = delivery.topic("t")
    assert np.all(np.diff(batch.delivery_times_s) >= 0)


def test_never_visible_before_delivery_time_and_never_late():
    bus = make_bus(seed=5)
    rng = np.random.default_rng(1)
    published: dict[int, float] = {}
    now_s, seen, key = 0.0, 0, 0
    for _ in range(200):
        for _ in range(int(rng.integers(0, 6))):
            lane = Lane(int(rng.integers(4)))
            bus.publish("t", key, lane=lane, sender=0, recipient=1, now_s=now_s)
            published[key] = now_s
            key += 1
        previous_s, now_s = now_s, now_s + 0.004
        delivery = bus.deliver(now_s)
        assert_ordered(delivery, now_s)
        for m in delivery:
            # due after the previous deliver (else it would have been delivered then)
            assert m.delivery_time_s > previous_s
            assert m.publish_time_s == published[m.payload]
            seen += 1
    delivery = bus.deliver(now_s + 1.0)
    assert seen + len(delivery) == key
    assert_accounting(bus)


@pytest.mark.parametrize("n", [0, 5, 511, 512, 5_000, 70_000])
@pytest.mark.parametrize(("base_s", "span_s", "packed"), [(1_000.0, 0.05, True), (0.0, 1e6, False)])
def test_order_by_time_equals_a_stable_argsort_with_many_ties(n, base_s, span_s, packed):
    rng = np.random.default_rng(n)
    times_s = base_s + np.round(rng.uniform(0.0, span_s, n), 4)  # long runs of equal times
    times_s[: n // 10] = base_s
    times_s[n // 10 : n // 5] = np.nextafter(base_s + span_s / 2, math.inf)  # one ulp apart
    times_s[n // 5 : n // 4] = base_s + span_s / 2
    rng.shuffle(times_s)
    if n >= 512:  # which path runs: packed int64 keys, or the argsort fallback
        bits = times_s.view(np.int64)
        fits = int(bits.max() - bits.min()) < 1 << (62 - (n - 1).bit_length())
        assert fits == packed
    assert np.array_equal(_order_by_time(times_s), np.argsort(times_s, kind="stable"))


# --------------------------------------------------------------------------- broadcast
def test_broadcast_expands_per_subscriber_with_own_latency():
    bus = make_bus(seed=2)
    bus.subscribe_many("grid/price", np.arange(50))
    bus.subscribe("grid/price", -1)
    bus.subscribe("grid/price", -1)  # idempotent
    bus.unsubscribe("grid/price", 49)
    assert bus.publish("grid/price", {"price_per_mwh": 80.0}, sender=-1, now_s=0.0) is False
    batch = bus.deliver(1.0).topic("grid/price")
    assert sorted(batch.recipients.tolist()) == list(range(-1, 49))
    assert len(np.unique(batch.delivery_times_s)) > 40  # independent latencies
    assert all(p == {"price_per_mwh": 80.0} for p in batch.payloads)
    stats = bus.stats()["lanes"]["MARKET"]
    assert stats["published"] == stats["delivered"] == 50
    # no subscribers: nothing is enqueued
    assert bus.publish("nobody", 1, sender=-1, now_s=1.0) is False
    assert bus.stats()["totals"]["published"] == 50


def test_batch_payload_dtype_is_kept_and_mixed_topics_become_object():
    bus = make_bus()
    rows = np.zeros(4, dtype=[("power_mw", "f8"), ("price_per_mwh", "f8")])
    rows["power_mw"] = [1.0, 2.0, 3.0, 4.0]
    bus.publish_batch("grid/bids", rows, senders=np.arange(4), now_s=0.0)
    rows["power_mw"] = -9.0  # rows are copied at publish
    bus.publish_batch("grid/forecast", np.arange(3.0), lane=Lane.TELEMETRY, senders=7, now_s=0.0)
    delivery = bus.deliver(1.0)
    bids = delivery.topic("grid/bids")
    assert bids.payloads.dtype == rows.dtype
    assert sorted(bids.payloads["power_mw"].tolist()) == [1.0, 2.0, 3.0, 4.0]
    assert np.all(bids.recipients == -1)  # recipients=None means the operator
    assert sorted(bids.senders.tolist()) == [0, 1, 2, 3]
    forecast = delivery.topic("grid/forecast")
    assert forecast.payloads.dtype == np.float64
    assert np.all(forecast.senders == 7) and np.all(forecast.lanes == Lane.TELEMETRY)
    assert len(delivery.topic("absent")) == 0
    assert delivery.topics == ["grid/bids", "grid/forecast"]

    bus.publish_batch("mix", np.arange(2.0), senders=np.arange(2), now_s=1.0)
    bus.publish("mix", "hello", sender=5, recipient=-1, now_s=1.0)
    mixed = bus.deliver(2.0).topic("mix")
    assert mixed.payloads.dtype == object
    assert sorted(map(str, mixed.payloads)) == ["0.0", "1.0", "hello"]


def test_numpy_ids_and_times_are_accepted_and_messages_carry_all_fields():
    bus = make_bus(latency_distribution="constant")
    bus.subscribe_many("p", [3, 1, 2])
    assert bus.subscribers("p").tolist() == [1, 2, 3]
    assert not bus.subscribers("p").flags.writeable
    bus.publish(
        "u",
        "x",
        lane=Lane.CONTROL,
        sender=np.int32(4),
        recipient=np.int64(-1),
        now_s=np.float64(0.5),
    )
    bus.publish("u", "y", lane=1, sender=5, recipient=-1, now_s=0.5)
    delivery = bus.deliver(1.0)
    assert len(delivery) == 2
    first, second = list(delivery)
    assert first == ("u", "x", Lane.CONTROL, 4, -1, 0.5, 0.515)
    assert second.payload == "y" and type(second.sender) is int
    assert "messages=2" in repr(delivery)



def test_segment_topic_batch_fills_lanes_and_times_lazily_and_stays_a_frozen_dataclass():
    import copy
    import dataclasses
    import pickle

    bus = make_bus(seed=4)
    rows = np.zeros(30, dtype=[("round", "i4"), ("power_mw", "f8")])
    rows["power_mw"] = np.arange(30.0)
    bus.publish_batch("bids", rows, lane=Lane.CONTROL, senders=np.arange(30), now_s=2.0)
    delivery = bus.deliver(3.0)
    batch = delivery.topic("bids")
    assert delivery.topic("bids") is batch  # cached per delivery
    want = [m for m in delivery if m.topic == "bids"]  # the global order, filtered
    assert [int(m.sender) for m in want] == batch.senders.tolist()
    assert batch.lanes.dtype == np.int8 and batch.lanes.tolist() == [Lane.CONTROL] * 30
    assert batch.publish_times_s.tolist() == [2.0] * 30
    assert batch.delivery_times_s.tolist() == [m.delivery_time_s for m in want]
    assert np.all(np.diff(batch.delivery_times_s) >= 0)
    assert [f.name for f in dataclasses.fields(batch)] == [
        "topic", "payloads", "senders", "recipients", "lanes", "publish_times_s",
        "delivery_times_s",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.senders = np.arange(3)  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'absent'"):
        batch.absent  # noqa: B018
    # a batch whose lazy columns were never read: copies, pickles, repr, asdict see them
    bus.publish_batch("t", np.arange(5.0), senders=np.arange(5), now_s=3.0)
    untouched = bus.deliver(4.0).topic("t")
    for clone in (copy.copy(untouched), pickle.loads(pickle.dumps(untouched))):
        np.testing.assert_array_equal(clone.delivery_times_s, untouched.delivery_times_s)
        np.testing.assert_array_equal(clone.lanes, [Lane.MARKET] * 5)
    assert "delivery_times_s=array(" in repr(untouched)
    assert dataclasses.asdict(untouched)["publish_times_s"].tolist() == [3.0] * 5


def test_publish_batch_copies_rows_and_ids_and_delivers_writeable_columns():
    bus = make_bus(seed=5)
    rows = np.zeros(6, dtype=[("round", "i4"), ("price", "f8"), ("flag", "i1")])
    rows["price"] = np.arange(6.0)
    senders = np.arange(6)
    recipients = np.full(6, 9)
    bus.publish_batch("p", rows, senders=senders, recipients=recipients, now_s=0.0)
    rows["price"] = -1.0  # the caller reuses its buffers
    senders[:] = -5
    recipients[:] = -5
    batch = bus.deliver(1.0).topic("p")
    assert batch.payloads.dtype == rows.dtype
    assert sorted(batch.payloads["price"].tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert sorted(batch.senders.tolist()) == list(range(6))
    assert batch.recipients.tolist() == [9] * 6
    for column in (batch.payloads, batch.senders, batch.recipients):
        assert column.flags.writeable  # fresh arrays: the caller may modify them
    batch.payloads["price"] = 0.0
    assert bus.stats()["totals"]["delivered"] == 6

    # a record-array subclass and object fields go through NumPy's own copy
    rec = np.rec.array([(1, "a"), (2, "b")], dtype=[("k", "i8"), ("name", "O")])
    bus.publish_batch("r", rec, senders=np.arange(2), now_s=1.0)
    got = bus.deliver(2.0).topic("r").payloads
    assert isinstance(got, np.recarray) and sorted(got.name.tolist()) == ["a", "b"]


def test_partial_delivery_remainder_and_new_batch_are_delivered_in_global_order():
    bus = make_bus(seed=11, capacity_per_step=(E_CAP, 10_000, 10_000, 10_000))
    bus.publish_batch("t", np.arange(40.0), senders=np.arange(40), now_s=0.0)
    first = bus.deliver(0.012)  # some latencies are due, the others stay queued
    n_first = len(first.topic("t"))
    assert 0 < n_first < 40
    assert np.all(first.topic("t").delivery_times_s <= 0.012)
    bus.publish_batch("t", np.arange(100.0, 110.0), senders=np.arange(10), now_s=0.012)
    bus.publish("u", "single", sender=1, recipient=2, now_s=0.012)
    second = bus.deliver(1.0)  # the remainder and the new rows: everything is due
    batch = second.topic("t")
    want = [m for m in second if m.topic == "t"]
    assert len(batch) == len(want) == 50 - n_first
    assert batch.payloads.tolist() == [m.payload for m in want]
    assert batch.delivery_times_s.tolist() == [m.delivery_time_s for m in want]
    assert batch.publish_times_s.tolist() == [m.publish_time_s for m in want]
    assert second.topic("u").payloads.tolist() == ["single"]
    assert sorted(first.topic("t").payloads.tolist() + batch.payloads.tolist()) == sorted(
        list(range(40)) + list(range(100, 110))
    )
    assert bus.queue_depth(Lane.MARKET) == 0
    assert_accounting(bus)


# --------------------------------------------------------------------------- load
def test_emergency_never_lost_deferred_or_late_under_flood():
    capacity = 10
    bus = make_bus(
        seed=4,
        capacity_per_step=(E_CAP, capacity, capacity, capacity),
        high_water_mark=(E_HWM, 10_000, 10_000, 500),
        queue_limit=(E_LIMIT, 50_000, 50_000, 1_000),
    )
    now_s, emergencies = 0.0, 0
    for _step in range(20):
        bus.begin_step()
        flood = np.arange(100 * capacity)
        for lane in (Lane.CONTROL, Lane.MARKET, Lane.TELEMETRY):
            bus.publish_batch("flood", flood, lane=lane, senders=flood, now_s=now_s)
        for k in range(30):  # emergency messages amid the flood of the other lanes
            bus.publish(
                "grid/emergency", k, lane=Lane.EMERGENCY, sender=-1, recipient=k, now_s=now_s
            )
            bus.publish("flood", k, lane=Lane.MARKET, sender=k, recipient=-1, now_s=now_s)
        emergencies += 30
        for sub in range(1, 21):  # physics sub-steps of 5 ms
            sub_now_s = now_s + 0.005 * sub
            delivery = bus.deliver(sub_now_s)
            assert_ordered(delivery, sub_now_s)
            # nothing due is left behind on the emergency lane
            due_left = bus.deliver(sub_now_s).topic("grid/emergency")
            assert len(due_left) == 0
        now_s += 0.1
        assert bus.queue_depth(Lane.EMERGENCY) == 0
    emergency = bus.stats()["lanes"]["EMERGENCY"]
    assert emergency["published"] == emergency["delivered"] == emergencies
    assert emergency["dropped"] == emergency["deferred"] == 0
    lanes = bus.stats()["lanes"]
    assert lanes["MARKET"]["deferred"] > 0 and lanes["TELEMETRY"]["dropped"] > 0
    assert_accounting(bus)


def test_a_message_due_exactly_now_is_delivered_by_this_call():
    """``deliver(now_s)`` delivers every message with ``delivery_time_s <= now_s``: one
    due exactly at ``now_s`` (a constant latency below the bound, so the queue is not
    handed over whole) arrives in that call, not one call late."""
    bus = make_bus(latency_distribution="constant", latency_mean_s=0.01, latency_max_s=0.05)
    bus.publish("t", "x", sender=0, recipient=1, now_s=0.0)
    assert len(bus.deliver(0.005)) == 0
    delivery = bus.deliver(0.01)
    assert [m.payload for m in delivery] == ["x"]
    assert delivery.topic("t").delivery_times_s.tolist() == [0.01]
    assert bus.queue_depth(Lane.MARKET) == 0


def test_emergency_latency_is_within_bound_and_delivered_at_first_due_call():
    bus = make_bus(seed=8, capacity_per_step=(E_CAP, 1, 1, 1))
    for k in range(200):
        bus.publish("grid/emergency", k, lane=Lane.EMERGENCY, sender=-1, recipient=k, now_s=0.0)
    times = []
    for sub in range(1, 12):
        delivery = bus.deliver(0.005 * sub)
        batch = delivery.topic("grid/emergency")
        assert np.all(batch.delivery_times_s > 0.005 * (sub - 1))
        times.extend(batch.delivery_times_s.tolist())
    assert len(times) == 200 and max(times) <= bus.config.latency_max_s


def test_backpressure_flag_past_high_water_mark():
    bus = make_bus(high_water_mark=(E_HWM, 3, 3, 3), queue_limit=(E_LIMIT, 10, 10, 10))
    flags = [bus.publish("t", k, sender=0, recipient=1, now_s=0.0) for k in range(5)]
    assert flags == [False, False, False, True, True]
    assert bus.backpressure(Lane.MARKET) and not bus.backpressure(Lane.CONTROL)
    batch_flags = bus.publish_batch(
        "t", np.arange(4), lane=Lane.CONTROL, senders=np.arange(4), now_s=0.0
    )
    assert batch_flags.tolist() == [False, False, False, True]
    bus.subscribe_many("b", np.arange(2))
    assert bus.publish("b", 0, lane=Lane.TELEMETRY, sender=-1, now_s=0.0) is False
    assert bus.publish("b", 0, lane=Lane.TELEMETRY, sender=-1, now_s=0.0) is True
    bus.deliver(1.0)
    assert bus.publish("t", 9, sender=0, recipient=1, now_s=1.0) is False
    assert not any(bus.backpressure(lane) for lane in Lane)


def test_backpressure_is_off_at_the_high_water_mark_and_on_past_it():
    """``backpressure(lane)`` means depth > high-water mark, as the publish flag: at
    exactly the mark the lane reports none (the mark-th message was not flagged)."""
    bus = make_bus(high_water_mark=(E_HWM, 3, 3, 3), queue_limit=(E_LIMIT, 10, 10, 10))
    flags = [bus.publish("t", k, sender=0, recipient=1, now_s=0.0) for k in range(3)]
    assert flags == [False, False, False] and bus.queue_depth(Lane.MARKET) == 3
    assert not bus.backpressure(Lane.MARKET)
    assert bus.publish("t", 3, sender=0, recipient=1, now_s=0.0)
    assert bus.backpressure(Lane.MARKET)


def test_backpressure_counts_messages_queued_across_deliver_calls():
    bus = make_bus(latency_distribution="constant", high_water_mark=(E_HWM, 5, 5, 5))
    flags = [bus.publish("t", k, sender=0, recipient=1, now_s=0.0) for k in range(3)]
    assert len(bus.deliver(0.001)) == 0  # not due yet: the 3 messages stay queued
    flags += [bus.publish("t", k, sender=0, recipient=1, now_s=0.001) for k in range(3)]
    assert flags == [False] * 5 + [True]
    assert bus.queue_depth(Lane.MARKET) == 6


def test_telemetry_is_dropped_oldest_first():
    bus = make_bus(high_water_mark=(E_HWM, 3, 3, 3), queue_limit=(E_LIMIT, 5, 5, 3))
    for k in range(6):
        bus.publish("tel", k, lane=Lane.TELEMETRY, sender=k, recipient=-1, now_s=0.0)
    bus.publish_batch(
        "tel", np.array([6, 7]), lane=Lane.TELEMETRY, senders=np.array([6, 7]), now_s=0.0
    )
    bus.publish("tel", 8, lane=Lane.TELEMETRY, sender=8, recipient=-1, now_s=0.0)
    assert bus.queue_depth(Lane.TELEMETRY) == 3
    assert_accounting(bus)
    batch = bus.deliver(1.0).topic("tel")
    assert sorted(int(p) for p in batch.payloads) == [6, 7, 8]
    assert sorted(batch.senders.tolist()) == [6, 7, 8]
    telemetry = bus.stats()["lanes"]["TELEMETRY"]
    assert (telemetry["published"], telemetry["dropped"], telemetry["delivered"]) == (9, 6, 3)


def test_telemetry_flood_keeps_memory_bounded_and_newest_messages():
    bus = make_bus(high_water_mark=(E_HWM, 100, 100, 100), queue_limit=(E_LIMIT, 100, 100, 100))
    for k in range(5_000):
        bus.publish("tel", k, lane=Lane.TELEMETRY, sender=0, recipient=1, now_s=0.0)
    queue = bus._queues[Lane.TELEMETRY]  # white-box: storage is compacted under a flood
    assert len(queue.payloads) + queue.n_rows <= 100 + 1024 + 1
    payloads = bus.deliver(1.0).topic("tel").payloads
    assert sorted(payloads.tolist()) == list(range(4_900, 5_000))


def test_market_is_deferred_to_later_steps_not_dropped():
    bus = make_bus(seed=6, capacity_per_step=(E_CAP, 3, 3, 3))
    for k in range(10):
        bus.publish("grid/bids", k, sender=k, recipient=-1, now_s=0.0)
    delivered: list[int] = []
    deferred = []
    for step in range(1, 6):
        bus.begin_step()
        delivery = bus.deliver(float(step))
        got = delivery.topic("grid/bids")
        assert len(got) == min(3, 10 - len(delivered))
        delivered.extend(int(p) for p in got.payloads)
        deferred.append(bus.stats()["lanes"]["MARKET"]["deferred"])
        assert_accounting(bus)
    assert sorted(delivered) == list(range(10))
    assert deferred == [7, 11, 12, 12, 12]
    market = bus.stats()["lanes"]["MARKET"]
    assert market["dropped"] == 0 and market["delivered"] == 10


def test_a_deferred_message_counts_once_per_step_however_many_deliveries():
    """The environment delivers twice a step (gate closure, step end): a bid waiting
    through a step is one deferral, not one per deliver call."""
    bus = make_bus(seed=6, capacity_per_step=(E_CAP, 3, 3, 3))
    for k in range(10):
        bus.publish("grid/bids", k, sender=k, recipient=-1, now_s=0.0)
    deferred = []
    for step in range(1, 6):
        bus.begin_step()
        taken = len(bus.deliver(step - 0.5))
        if step == 2:   # due at the second call only: deferred in this step, counted once
            bus.publish("grid/bids", 10, sender=10, recipient=-1, now_s=1.6)
        taken += len(bus.deliver(float(step)))
        assert taken == max(0, min(3, 11 - 3 * (step - 1)))
        deferred.append(bus.stats()["lanes"]["MARKET"]["deferred"])
        assert_accounting(bus)
    assert deferred == [7, 12, 14, 14, 14]


def test_capacity_takes_earliest_due_first_and_is_per_step():
    bus = make_bus(seed=9, capacity_per_step=(E_CAP, 1, 4, 1))
    bus.publish_batch("t", np.arange(20), senders=np.arange(20), now_s=0.0)
    first = bus.deliver(1.0).topic("t")
    rest = bus.deliver(2.0).topic("t")  # same step: capacity is spent
    assert len(first) == 4 and len(rest) == 0
    bus.begin_step()
    second = bus.deliver(2.0).topic("t")
    assert len(second) == 4
    assert first.delivery_times_s.max() <= second.delivery_times_s.min()


def test_a_queue_delivered_whole_spends_the_steps_capacity():
    """A lane whose whole queue is due and fits is handed over in one piece; that
    still spends the step's capacity, so a second deliver call of the step (the
    environment makes two) delivers only what is left of it and defers the rest."""
    bus = make_bus(seed=9, capacity_per_step=(E_CAP, 1, 4, 1))
    bus.publish_batch("t", np.arange(3), senders=np.arange(3), now_s=0.0)
    assert len(bus.deliver(1.0)) == 3
    bus.publish_batch("t", np.arange(3), senders=np.arange(3), now_s=1.0)
    assert len(bus.deliver(2.0)) == 1   # 4 per step, 3 already taken
    market = bus.stats()["lanes"]["MARKET"]
    assert (market["delivered"], market["deferred"], market["queue_depth"]) == (4, 2, 2)
    bus.begin_step()
    assert len(bus.deliver(2.0)) == 2


def test_publishes_at_two_times_in_one_step_are_not_delivered_early():
    """Single publishes on one lane at different times of a step (two staging runs):
    a deliver before the later one is due leaves it queued."""
    bus = make_bus(latency_distribution="constant", latency_mean_s=0.01, latency_max_s=0.05)
    bus.publish("t", "early", sender=0, recipient=1, now_s=0.0)
    bus.publish("t", "late", sender=0, recipient=1, now_s=0.045)
    assert [m.payload for m in bus.deliver(0.05)] == ["early"]   # late is due at 0.055
    assert bus.queue_depth(Lane.MARKET) == 1
    assert [m.payload for m in bus.deliver(0.055)] == ["late"]


def test_market_past_queue_limit_is_refused_newest_first():
    bus = make_bus(high_water_mark=(E_HWM, 3, 3, 3), queue_limit=(E_LIMIT, 5, 5, 5))
    flags = [bus.publish("t", k, sender=k, recipient=-1, now_s=0.0) for k in range(7)]
    assert flags == [False] * 3 + [True] * 4
    batch_flags = bus.publish_batch(
        "t", np.arange(3), lane=Lane.MARKET, senders=np.arange(3), now_s=0.0
    )
    assert batch_flags.all()
    market = bus.stats()["lanes"]["MARKET"]
    assert (market["published"], market["dropped"], market["queue_depth"]) == (10, 5, 5)
    assert sorted(bus.deliver(1.0).topic("t").payloads.tolist()) == [0, 1, 2, 3, 4]
    assert_accounting(bus)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 3), st.booleans(), st.integers(-1, 5)),
        st.tuples(st.just("batch"), st.integers(0, 3), st.integers(0, 12), st.booleans()),
        st.tuples(st.just("deliver"), st.floats(0.0, 0.05), st.booleans(), st.just(0)),
    ),
    max_size=60,
)


@settings(
    max_examples=int(os.environ.get("BUS_HYPOTHESIS_EXAMPLES", 80)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sequence=ops, seed=st.integers(0, 2**16))
def test_accounting_invariant_holds_for_random_sequences(sequence, seed):
    bus = make_bus(
        seed=seed,
        capacity_per_step=(E_CAP, 2, 3, 2),
        high_water_mark=(E_HWM, 4, 5, 3),
        queue_limit=(E_LIMIT, 6, 8, 5),
    )
    bus.subscribe_many("b", np.arange(3))
    now_s, published = 0.0, 0
    for op, a, b, c in sequence:
        if op == "publish":
            recipient = None if b else c
            bus.publish("b", published, lane=Lane(a), sender=0, recipient=recipient, now_s=now_s)
            published += 1
        elif op == "batch":
            bus.publish_batch(
                "b", np.arange(b), lane=Lane(a), senders=np.zeros(b, np.int64), now_s=now_s
            )
        else:
            if b:
                bus.begin_step()
            now_s += a
            assert_ordered(bus.deliver(now_s), now_s)
        assert_accounting(bus)
        emergency = bus.stats()["lanes"]["EMERGENCY"]
        assert emergency["dropped"] == emergency["deferred"] == 0
    bus.begin_step()
    bus.deliver(now_s + 1.0)
    assert bus.stats()["lanes"]["EMERGENCY"]["queue_depth"] == 0
    assert_accounting(bus)


# --------------------------------------------------------------------------- determinism
def _run_scenario(seed: int) -> list[tuple]:
    bus = make_bus(seed=seed, capacity_per_step=(E_CAP, 5, 20, 5))
    bus.subscribe_many("grid/price", np.arange(-1, 30))
    out = []
    for step in range(10):
        now_s = float(step)
        bus.begin_step()
        bus.publish("grid/price", step, sender=-1, now_s=now_s)
        bus.publish_batch("grid/bids", np.arange(30.0), senders=np.arange(30), now_s=now_s)
        for k in range(10):
            bus.publish("tel", k, lane=Lane.TELEMETRY, sender=k, recipient=-1, now_s=now_s)
        out.extend(tuple(m) for m in bus.deliver(now_s + 0.02))
    return out


def test_same_seed_gives_identical_deliveries_and_different_seeds_differ():
    first, second, other = _run_scenario(11), _run_scenario(11), _run_scenario(12)
    assert first == second
    assert first != other
    assert len(first) == len(other)


def test_reset_empties_queues_keeps_subscriptions_and_reseeds():
    bus = make_bus(seed=1)
    bus.subscribe_many("p", np.arange(3))
    bus.publish("p", 0, sender=-1, now_s=0.0)
    bus.deliver(0.5)
    bus.publish("p", 1, sender=-1, now_s=0.5)
    bus.reset(rng=1)
    assert bus.stats()["totals"]["published"] == 0 and bus.queue_depth(Lane.MARKET) == 0
    bus.publish("p", 0, sender=-1, now_s=0.0)  # the clock restarted at 0
    again = [tuple(m) for m in bus.deliver(0.5)]
    fresh = make_bus(seed=1)
    fresh.subscribe_many("p", np.arange(3))
    fresh.publish("p", 0, sender=-1, now_s=0.0)
    assert again == [tuple(m) for m in fresh.deliver(0.5)]


# --------------------------------------------------------------------------- latency
@pytest.mark.parametrize("distribution", LATENCY_DISTRIBUTIONS)
def test_latency_mean_matches_config_and_never_exceeds_max(distribution):
    config = BusConfig(latency_distribution=distribution, latency_mean_s=0.015, latency_max_s=0.05)
    samples = sample_latencies_s(config, np.random.default_rng(0), 400_000)
    assert samples.max() <= config.latency_max_s and samples.min() >= 0.0
    assert samples.mean() == pytest.approx(0.015, rel=0.005)
    if distribution != "constant":
        assert samples.std() > 0.002


def test_latency_parameter_solves_the_clipped_mean_equation():
    config = BusConfig(latency_mean_s=0.02, latency_max_s=0.03)
    scale_s = latency_parameter(config)
    assert scale_s > 0.02  # clipping at 30 ms lowers the mean: the scale must exceed it
    assert scale_s * -math.expm1(-0.03 / scale_s) == pytest.approx(0.02, rel=1e-9)


@pytest.mark.parametrize("distribution, max_s", [("exponential", 0.0301),
                                                 ("exponential", 0.03001),
                                                 ("lognormal", 0.0301)])
def test_a_bound_just_above_the_mean_is_solved_not_refused(distribution, max_s):
    """A clipping bound a hair above the mean needs a parameter far above the unclipped
    one (an exponential scale of ~150x the mean at 0.0301 s): the bracket keeps growing
    until it reaches it instead of refusing a shape float64 can solve."""
    config = BusConfig(latency_distribution=distribution, latency_mean_s=0.03,
                       latency_max_s=max_s)
    parameter = latency_parameter(config)
    samples = sample_latencies_s(config, np.random.default_rng(0), 200_000, parameter)
    assert samples.max() <= max_s
    assert samples.mean() == pytest.approx(0.03, rel=1e-3)
    if distribution == "exponential":
        assert parameter * -math.expm1(-max_s / parameter) == pytest.approx(0.03, rel=1e-9)


def test_bus_latency_statistics_match_delivered_latencies():
    bus = make_bus(seed=7)
    latencies = []
    for step in range(40):
        now_s = float(step)
        bus.publish_batch("t", np.arange(500), senders=np.arange(500), now_s=now_s)
        for k in range(50):
            bus.publish("t", k, sender=k, recipient=-1, now_s=now_s)
        latencies.append(bus.deliver(now_s + 0.5).topic("t").latencies_s)
    lat_ms = np.concatenate(latencies) * 1e3
    market = bus.stats()["lanes"]["MARKET"]
    width_ms = bus.config.latency_bin_width_s * 1e3
    assert market["delivered"] == lat_ms.size == 22_000
    assert market["latency_p50_ms"] == pytest.approx(np.quantile(lat_ms, 0.5), abs=2 * width_ms)
    assert market["latency_p99_ms"] == pytest.approx(np.quantile(lat_ms, 0.99), abs=2 * width_ms)
    assert market["latency_mean_ms"] == pytest.approx(lat_ms.mean(), rel=1e-9)
    assert market["latency_mean_ms"] == pytest.approx(15.0, rel=0.03)
    assert lat_ms.max() <= 50.0 + 1e-9  # (t + latency) - t rounds at the ulp of t
    assert bus.stats()["lanes"]["CONTROL"]["latency_p50_ms"] is None


def test_latency_statistics_and_queues_use_bounded_memory():
    bus = make_bus(seed=3, latency_block_size=4096)
    bus.subscribe_many("p", np.arange(100))
    payload = np.arange(100.0)

    def run(steps: int, start: int) -> None:
        for step in range(start, start + steps):
            now_s = float(step)
            bus.begin_step()
            bus.publish("p", step, sender=-1, now_s=now_s)
            bus.publish_batch("b", payload, senders=np.arange(100), now_s=now_s)
            for k in range(20):
                bus.publish("tel", k, lane=Lane.TELEMETRY, sender=k, recipient=-1, now_s=now_s)
            bus.deliver(now_s + 0.5).topic("b")

    run(100, 0)  # warm up (latency blocks, caches)
    gc.collect()
    tracemalloc.start()
    try:
        run(300, 100)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        run(300, 400)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bus.stats()["totals"]["delivered"] == 700 * 220
    assert after - before < 64 * 1024  # 66 000 more messages, no growth
    assert all(not queue.stores for queue in bus._queues.values())


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lane": 7}, "lane must be one of"),
        ({"lane": "MARKET"}, "lane must be one of"),
        ({"lane": -1}, "lane must be one of"),
        ({"now_s": -1.0}, "finite and >= 0"),
        ({"now_s": float("nan")}, "finite and >= 0"),
        ({"now_s": float("inf")}, "finite and >= 0"),
        ({"now_s": "0"}, "finite time"),
        ({"sender": 1.5}, "sender must be an int"),
        ({"sender": True}, "sender must be an int"),
        ({"recipient": "x"}, "recipient must be an int"),
        ({"recipient": 2**64}, "recipient must be an int"),
    ],
)
def test_publish_rejects_bad_input(kwargs, match):
    bus = make_bus()
    call = {"lane": Lane.MARKET, "sender": 0, "recipient": 1, "now_s": 0.0} | kwargs
    with pytest.raises(ValueError, match=match):
        bus.publish("t", 0, **call)
    assert bus.stats()["totals"]["published"] == 0


@pytest.mark.parametrize("topic", ["", None, 3, ("a",)])
def test_empty_or_non_string_topic_is_rejected(topic):
    bus = make_bus()
    with pytest.raises(ValueError, match="topic must be a non-empty str"):
        bus.publish(topic, 0, sender=0, recipient=1, now_s=0.0)
    with pytest.raises(ValueError, match="topic must be a non-empty str"):
        bus.subscribe(topic, 0)
    with pytest.raises(ValueError, match="topic must be a non-empty str"):
        bus.deliver(0.0).topic(topic)


def test_publish_batch_rejects_bad_arrays():
    bus = make_bus()
    with pytest.raises(ValueError, match="has length 2, expected 3"):
        bus.publish_batch("t", np.arange(3), senders=np.arange(2), now_s=0.0)
    with pytest.raises(ValueError, match="recipients has length 4"):
        bus.publish_batch("t", np.arange(3), senders=0, recipients=np.arange(4), now_s=0.0)
    with pytest.raises(ValueError, match="payloads must be a 1-D numpy array"):
        bus.publish_batch("t", np.zeros((2, 2)), senders=np.arange(2), now_s=0.0)
    with pytest.raises(ValueError, match="payloads must be a 1-D numpy array"):
        bus.publish_batch("t", [1, 2], senders=np.arange(2), now_s=0.0)
    with pytest.raises(ValueError, match="senders must be a 1-D integer array"):
        bus.publish_batch("t", np.arange(2), senders=np.array([0.5, 1.5]), now_s=0.0)
    with pytest.raises(ValueError, match="lane must be one of"):
        bus.publish_batch("t", np.arange(2), lane=4, senders=np.arange(2), now_s=0.0)
    with pytest.raises(ValueError, match="subscribers must be a 1-D integer array"):
        bus.subscribe_many("t", np.array([[1, 2]]))
    assert bus.publish_batch("t", np.arange(0), senders=np.arange(0), now_s=0.0).shape == (0,)
    assert bus.stats()["totals"]["published"] == 0


def test_one_sender_for_all_is_that_id_per_message_and_is_checked_as_one():
    """``publish_batch(senders=int)`` (the operator's broadcasts; an int fast path since
    s28): every message carries that sender, as ``np.full(n, id)`` gives; a bool or an
    id beyond int64 is refused as the full check refuses it."""
    bus = make_bus(latency_distribution="constant")
    bus.publish_batch("t", np.arange(3), senders=-1, recipients=np.arange(3), now_s=0.0)
    bus.publish_batch("t", np.arange(3), senders=np.full(3, -1), recipients=np.arange(3),
                      now_s=0.0)
    assert bus.deliver(1.0).topic("t").senders.tolist() == [-1] * 6
    with pytest.raises(ValueError, match="senders must be a 1-D integer array"):
        bus.publish_batch("t", np.arange(3), senders=True, now_s=1.0)
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError, match="senders must be an int id within int64"):
            bus.publish_batch("t", np.arange(3), senders=bad, now_s=1.0)
    assert_accounting(bus)


def test_time_cannot_go_backwards():
    bus = make_bus()
    bus.deliver(1.0)
    with pytest.raises(ValueError, match="time cannot go backwards"):
        bus.deliver(0.5)
    with pytest.raises(ValueError, match="time cannot go backwards"):
        bus.publish("t", 0, sender=0, recipient=1, now_s=0.5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        bus.deliver(float("nan"))
    bus.deliver(1.0)  # equal time is fine


def test_oversized_fast_path_ids_are_refused_at_publish():
    bus = make_bus()
    bus.publish("e", "first", lane=Lane.EMERGENCY, sender=0, recipient=1, now_s=0.0)
    bus.publish("t", "ok", sender=0, recipient=1, now_s=0.0)
    with pytest.raises(ValueError, match="sender must be an int id within int64"):
        bus.publish("t", "bad", sender=2**70, recipient=1, now_s=0.0)
    assert_accounting(bus)
    assert sorted(m.payload for m in bus.deliver(1.0)) == ["first", "ok"]
    assert bus.stats()["totals"]["dropped"] == 0


def test_a_time_of_another_type_is_refused_also_inside_a_publish_run():
    """Review: the single-publish fast path took any ``now_s`` equal to its run's time
    and not a bool (a 0-d array, a Fraction, a Decimal), which the first publish of a
    run, validated in full, refuses: the same call was accepted or refused depending on
    whether a run was open."""
    bus = make_bus()
    bus.publish("t", "first", sender=0, recipient=1, now_s=0.25)
    for other in (np.array(0.25), Fraction(1, 4), Decimal("0.25")):
        with pytest.raises(ValueError, match="now_s must be a finite time in s"):
            bus.publish("t", "bad", sender=0, recipient=1, now_s=other)
    for same in (0.25, np.float64(0.25)):   # numbers of the accepted types still go
        bus.publish("t", "ok", sender=0, recipient=1, now_s=same)
    assert_accounting(bus)
    assert sorted(m.payload for m in bus.deliver(1.0)) == ["first", "ok", "ok"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latency_mean_s": 0.0}, "latency_mean_s must be a finite number > 0"),
        ({"latency_mean_s": float("nan")}, "latency_mean_s must be a finite number > 0"),
        ({"latency_max_s": -1.0}, "latency_max_s must be a finite number > 0"),
        ({"latency_max_s": 0.01}, "latency_max_s must be > latency_mean_s"),
        ({"latency_max_s": 0.015}, "latency_max_s must be > latency_mean_s"),
        (
            {"latency_distribution": "pareto"},
            r"latency_distribution must be one of \('exponential'",
        ),
        ({"latency_sigma": 0}, "latency_sigma must be a finite number > 0"),
        ({"capacity_per_step": (1, 2, 3)}, "capacity_per_step must be a tuple of 4"),
        ({"capacity_per_step": (1, 0, 3, 4)}, r"capacity_per_step\[CONTROL\] must be an int >= 1"),
        ({"high_water_mark": (1, 2, 3.5, 4)}, r"high_water_mark\[MARKET\] must be an int >= 1"),
        ({"queue_limit": (1, 2, 3, True)}, r"queue_limit\[TELEMETRY\] must be an int >= 1"),
        (
            {"high_water_mark": (E_HWM, 10, 10, 10), "queue_limit": (E_LIMIT, 10, 9, 10)},
            r"high_water_mark\[MARKET\]=10 must be <= queue_limit",
        ),
        ({"latency_block_size": 0}, r"latency_block_size must be an int in \[1, 16_777_216\]"),
        ({"latency_hist_bins": 4}, r"latency_hist_bins must be an int in \[16, 1_000_000\]"),
        # sizes of arrays the bus allocates: refused in words, not a MemoryError later
        ({"latency_block_size": 2**24 + 1}, r"latency_block_size .* got 16777217"),
        ({"latency_hist_bins": 10**12}, r"latency_hist_bins .* got 1000000000000"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BusConfig(**kwargs)


def test_constant_latency_may_equal_max_and_bad_rng_or_config_is_rejected():
    config = BusConfig(latency_distribution="constant", latency_mean_s=0.05, latency_max_s=0.05)
    assert sample_latencies_s(config, np.random.default_rng(0), 3).tolist() == [0.05] * 3
    with pytest.raises(ValueError, match="rng must be"):
        AgentMessageBus(rng="seed")
    with pytest.raises(ValueError, match="config must be a BusConfig"):
        AgentMessageBus(config={"latency_mean_s": 0.01})


def test_small_latency_blocks_span_refills_deterministically():
    small = make_bus(seed=5, latency_block_size=7)
    large = make_bus(seed=5, latency_block_size=7)
    small.publish_batch("t", np.arange(30), senders=np.arange(30), now_s=0.0)
    for k in range(30):
        large.publish("t", k, sender=k, recipient=-1, now_s=0.0)
    a = small.deliver(1.0).topic("t")
    b = large.deliver(1.0).topic("t")
    assert np.array_equal(a.delivery_times_s, b.delivery_times_s)
    assert len(np.unique(a.delivery_times_s)) > 20


@pytest.mark.parametrize("kwargs", [
    {"latency_distribution": "lognormal", "latency_sigma": 30.0},     # OverflowError
    {"latency_distribution": "lognormal", "latency_sigma": 1e10},     # never returned
])
def test_a_latency_shape_float64_cannot_solve_is_refused_by_busconfig(kwargs):
    """BusConfig accepted these and the bus failed when built (an OverflowError
    traceback from demo.py/evaluate.py --config, or a hang): refused in one line."""
    with pytest.raises(ValueError, match=r"^latency_distribution='lognormal' with "
                                         r"latency_sigma=.*float64 cannot solve.*expected a "
                                         r"smaller latency_sigma"):
        BusConfig(**kwargs)


def test_a_lognormal_latency_clipping_cannot_lower_is_its_unclipped_parameter():
    """Clipping at 50 ms never lowers a 1 us mean in float64: the unclipped solution
    (brentq refused it: "f(a) and f(b) must have different signs")."""
    config = BusConfig(latency_distribution="lognormal", latency_mean_s=1e-6)
    assert latency_parameter(config) == math.log(1e-6) - 0.5 * 0.5**2
