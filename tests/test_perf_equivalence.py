"""The performance fast paths compute exactly what the plain formulas compute (issue 9).

Each test pits a fast path against the straightforward computation it replaced and
compares bits (``tobytes``), so a signed zero or a NaN that moved would fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env.bus import AgentMessageBus, Lane
from gridswarm_env.config import FleetConfig
from gridswarm_env.fleet import (
    KIND_SOLAR,
    build_fleet,
    energy_change_mwh,
    fast_clip,
    fleet_constants,
    kind_selector,
)
from gridswarm_env.kernel import ExecutionChecker, Kernel, Limits, check_executed
from gridswarm_env.market import clear_market
from gridswarm_env.trust import Contract, ContractLedger, IdentityRegistry

SPECIAL = np.array([-0.0, 0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 0.5, -0.5, 3.0])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_fast_clip_is_np_clip_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    x, lo, hi = (SPECIAL[rng.integers(0, SPECIAL.size, n)] for _ in range(3))
    assert _same_bits(fast_clip(x, lo, hi), np.clip(x, lo, hi))
    for a, b in ((0.0, 1.0), (-0.0, 0.0), (-1.0, 1.0)):
        assert _same_bits(fast_clip(x, a, b), np.clip(x, a, b))


def test_kind_selector_slices_contiguous_kinds_and_masks_others() -> None:
    kind = np.array([0, 0, 1, 1, 1, 2], dtype=np.int8)
    assert kind_selector(kind, 1) == slice(2, 5) and kind_selector(kind, 2) == slice(5, 6)
    mixed = np.array([0, 1, 0], dtype=np.int8)
    np.testing.assert_array_equal(kind_selector(mixed, 0), [True, False, True])
    assert kind_selector(kind, 3) == slice(0, 0)


def test_energy_change_rows_equal_single_calls_and_formula() -> None:
    fleet = build_fleet(60, FleetConfig(), 0.7, np.random.default_rng(1))
    net = np.random.default_rng(2).normal(0.0, 0.01, (2, 60))
    net[0, :5] = -0.0
    both = energy_change_mwh(fleet, net, 0.25, fleet_constants(fleet))
    for row in range(2):
        one = energy_change_mwh(fleet, net[row], 0.25)
        eta_d = np.where(fleet.eta_discharge > 0, fleet.eta_discharge, 1.0)
        plain = (np.maximum(-net[row], 0.0) * fleet.eta_charge
                 - np.maximum(net[row], 0.0) / eta_d) * 0.25
        plain = np.where(fleet.kind == KIND_SOLAR, 0.0, plain)
        assert _same_bits(both[row], one) and _same_bits(one, plain)


def test_execution_checker_equals_check_executed() -> None:
    fleet = build_fleet(30, FleetConfig(), 0.5, np.random.default_rng(3))
    kernel = Kernel(Limits.from_dict({"battery": {"ramp_mw_per_s": 0.001}}),
                    [f"a{i}" for i in range(30)], fleet, 21, 1.0)
    rng = np.random.default_rng(4)
    checker = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh, kernel.arrays, 1.0)
    for _ in range(20):
        args = dict(net_min_mw=rng.normal(0, 0.02, 30), net_max_mw=rng.normal(0, 0.02, 30),
                    p_now_mw=rng.normal(0, 0.01, 30), p_prev_mw=rng.normal(0, 0.01, 30),
                    energy_before_mwh=fleet.energy_mwh,
                    energy_after_mwh=fleet.energy_mwh + rng.normal(0, 1e-3, 30),
                    solar_available_mw=fleet.solar_available_mw,
                    plugged=rng.random(30) < 0.8)
        fast = checker.check(**args)
        slow = check_executed(kinds=fleet.kind, capacity_mwh=fleet.energy_capacity_mwh,
                              arrays=kernel.arrays, dt_s=1.0, **args)
        for field in ("power", "soc", "unplugged", "ramp"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))


def test_clear_market_unchecked_equals_checked() -> None:
    rng = np.random.default_rng(5)
    for request in (12.0, -7.5, 0.0, 1e-9):
        power = rng.normal(0.0, 1.0, 50)
        price = rng.uniform(-50.0, 600.0, 50)
        price[3] = np.nan
        eligible = rng.random(50) < 0.9
        kw = dict(consensus_share=0.95, price_cap_per_mwh=500.0, price_floor_per_mwh=-40.0,
                  deadband_mw=0.05)
        a = clear_market(request, power, price, eligible, **kw)
        b = clear_market(request, power, price, eligible, check=False, **kw)
        assert _same_bits(a.accepted_mw, b.accepted_mw)
        for f in ("clearing_price_per_mwh", "offered_mw", "accepted_total_mw", "consensus",
                  "n_accepted", "request_mw"):
            assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


def test_issued_contracts_equal_validated_contracts() -> None:
    names = [f"battery_{i:03d}" for i in range(8)]
    ledger = ContractLedger(IdentityRegistry(names, mode="hmac", seed=0), rng=0)
    signed = ledger.issue(3, np.arange(8), np.linspace(0.1, 0.8, 8), 42.0, 4.0, 5.0)
    for s in signed:
        c = s.contract
        rebuilt = Contract(c.contract_id, c.round_index, c.agent_id, c.operator_id, c.power_mw,
                           c.price_per_mwh, c.window_start_s, c.window_end_s, c.nonce, c.product)
        assert rebuilt == c and rebuilt.canonical_bytes() == c.canonical_bytes()
        assert Contract.from_canonical_bytes(c.canonical_bytes()) == c
    valid, _ = ledger.verify_batch(signed, 4.0, names)
    assert valid.all() and ledger.replay_memory_size == 8
    ledger.verify_batch([], 5.0)                    # the window closes: memory forgotten
    assert ledger.replay_memory_size == 0 and ledger._expiry_heap == []


def test_topic_equals_filtering_the_global_delivery_order() -> None:
    bus = AgentMessageBus(rng=7)
    bus.subscribe_many("price", np.arange(40))
    rows = np.arange(40, dtype=np.float64)
    for k in range(3):
        bus.begin_step()
        bus.publish_batch("bids", rows, lane=Lane.MARKET, senders=np.arange(40), now_s=float(k))
        bus.publish_batch("forecast", rows[:9], lane=Lane.TELEMETRY, senders=np.arange(9),
                          now_s=float(k))
        bus.publish_batch("price", rows, lane=Lane.CONTROL, senders=-1,
                          recipients=np.arange(40), now_s=float(k))
        d = bus.deliver(k + 0.03)
        messages = list(d)    # the global (delivery time, lane, publish order) order
        for name in ("bids", "forecast", "price", "absent"):
            batch = d.topic(name)
            mine = [m for m in messages if m.topic == name]
            assert len(batch) == len(mine)
            np.testing.assert_array_equal(batch.senders, [m.sender for m in mine])
            np.testing.assert_array_equal(batch.delivery_times_s,
                                          [m.delivery_time_s for m in mine])
            np.testing.assert_array_equal(batch.lanes, [int(m.lane) for m in mine])
            np.testing.assert_array_equal(batch.payloads, [m.payload for m in mine])


def test_audit_append_writes_canonical_json_for_nested_unsorted_dicts(tmp_path) -> None:
    from gridswarm_env.trust import AuditLog, _canonical_json, verify_audit_file

    log = AuditLog(tmp_path / "audit.jsonl")
    entry = log.append("x", zeta=1, alpha={"b": 2, "a": [1, {"d": 4, "c": 3}]},
                       mid=[{"z": 1, "y": 2}])
    log.close()
    line = (tmp_path / "audit.jsonl").read_text().splitlines()[0]
    body = _canonical_json(entry.index, entry.kind, entry.fields, entry.prev_hash)
    assert line == body[:-1] + ',"hash":"' + entry.hash + '"}'
    assert verify_audit_file(tmp_path / "audit.jsonl").ok and log.verify().ok
