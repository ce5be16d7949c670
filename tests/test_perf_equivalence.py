"""The performance fast paths compute exactly what the plain formulas compute (issue 9).

Each test pits a fast path against the straightforward computation it replaced and
compares bits (``tobytes``), so a signed zero or a NaN that moved would fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env.bus import AgentMessageBus, Lane
from gridswarm_env.config import FleetConfig, MarketConfig
from gridswarm_env.fleet import (
    KIND_SOLAR,
    build_fleet,
    energy_change_mwh,
    fast_clip,
    fast_count_nonzero,
    fleet_constants,
    kind_selector,
    scalar_array,
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


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1000])
def test_fast_count_nonzero_is_np_count_nonzero(n: int) -> None:
    rng = np.random.default_rng(n)
    floats = SPECIAL[rng.integers(0, SPECIAL.size, n)]   # -0.0 counts as zero, NaN not
    for a in (floats, floats > 0.0, rng.integers(-2, 3, n), floats.reshape(1, n)):
        got, want = fast_count_nonzero(a), np.count_nonzero(a)
        assert got == want and type(got) is type(want)



@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 1e-9, 3600.0, 8.0 * 2.0**-1022, np.nan])
def test_scalar_array_operands_give_the_python_floats_bits(value: float) -> None:
    """A 0-d float64 operand computes what the Python float computes, on float64 arrays."""
    x = SPECIAL[np.random.default_rng(0).integers(0, SPECIAL.size, 100)]
    c = scalar_array(value)
    assert c.shape == () and c.dtype == np.float64 and not c.flags.writeable
    for ufunc in (np.add, np.subtract, np.multiply, np.divide, np.maximum, np.minimum,
                  np.greater, np.less_equal):
        with np.errstate(all="ignore"):
            assert _same_bits(ufunc(x, c), ufunc(x, value))
    y, z = x.copy(), x.copy()
    y[x > 0.0] = c
    z[x > 0.0] = value
    assert _same_bits(y, z)
    with pytest.raises(ValueError, match="read-only"):
        c[...] = 2.0

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
        assert checker.count(**args) == slow.count
        no_ramp = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh,
                                   Kernel(Limits(), [f"a{i}" for i in range(30)], fleet, 21,
                                          1.0).arrays, 1.0)
        assert no_ramp.count(**args) == no_ramp.check(**args).count


def test_record_frequency_keeps_the_step_extremes_and_the_largest_jump() -> None:
    """The step's min/max (read by the info dict) and max|Δf| (with the previous step's
    last sample) as direct NumPy reductions give them, for 1, 2 and 20 sub-steps (a
    RoCoF window of one sub-step: the KPI's definition before rocof_window_s)."""
    from gridswarm_env.config import CostConfig
    from gridswarm_env.metrics import MetricsAccumulator

    acc = MetricsAccumulator(CostConfig(), dt_s=1.0, physics_dt_s=0.05,
                             disturbance_time_s=0.0, event_time_s=None, rocof_window_s=0.05)
    rng = np.random.default_rng(6)
    last, t0 = acc.last_freq_hz, 0.0
    for n in (1, 2, 20, 20):
        f = 60.0 + rng.normal(0.0, 0.05, n)
        acc.max_rocof_hz_per_s = 0.0
        acc.record_frequency(t0 + 0.05 * np.arange(1, n + 1), f)
        assert acc.step_min_hz == f.min() and acc.step_max_hz == f.max()
        jumps = np.abs(np.diff(np.concatenate([[last], f])))
        assert acc.max_rocof_hz_per_s == jumps.max() / 0.05
        last, t0 = f[-1], t0 + 0.05 * n


def test_record_frequency_band_counts_equal_direct_ones_at_the_band_edges() -> None:
    """Seconds outside the band and the last unsettled sample (skipped when the step's
    extremes are inside the band) equal the direct per-sample tests, for samples at the
    doubles nearest 60 ± BAND_HZ, one ulp inside and one ulp outside them, and for a NaN
    sample (outside the band and unsettled)."""
    from gridswarm_env.config import CostConfig
    from gridswarm_env.metrics import BAND_HZ, SETTLE_HZ, MetricsAccumulator

    acc = MetricsAccumulator(CostConfig(), dt_s=1.0, physics_dt_s=0.05,
                             disturbance_time_s=0.5, event_time_s=None, rocof_window_s=0.05)
    rng = np.random.default_rng(8)
    edges = [60.0 + s * BAND_HZ for s in (-1.0, 1.0)]
    edges += [np.nextafter(e, d) for e in edges for d in (0.0, 100.0)]
    outside, unsettled, t0 = 0.0, None, 0.0
    for step in range(40):
        f = 60.0 + rng.normal(0.0, 0.01, 20)
        if step % 3:
            f[rng.integers(20)] = edges[step % len(edges)]
        if step == 39:
            f[5] = np.nan
        t = t0 + 0.05 * np.arange(1, 21)
        acc.record_frequency(t, f)
        dev = np.abs(f - 60.0)
        outside += float(np.count_nonzero(~(dev <= BAND_HZ))) * 0.05
        late = np.flatnonzero(~(dev < SETTLE_HZ) & (t > 0.5))
        if late.size:
            unsettled = float(t[late[-1]])
        assert acc.seconds_outside_band == outside and acc.last_unsettled_s == unsettled
        t0 = float(t[-1])
    assert unsettled is not None and outside > 0.0


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


# ---------------------------------------------------------------- kernel, dispatch, fleet
# The plain formulas the fast paths replaced (verbatim arithmetic), as references.

def _ref_net_bounds(k, fleet, e_lo, e_hi, avail, dur_h, window_end_s, plugged, departure_rule):
    a = k.arrays
    cap = fleet.energy_capacity_mwh
    is_ev, is_sol = fleet.kind == 2, fleet.kind == 0
    eta_d = np.where(fleet.eta_discharge > 0, fleet.eta_discharge, 1.0)
    charge_h = fleet.eta_charge * dur_h
    room_down = np.maximum(e_lo - a.soc_min * cap, 0.0)
    room_up = np.maximum(a.soc_max * cap - e_hi, 0.0)
    hi = np.minimum(a.max_discharge_mw, room_down * eta_d / dur_h)
    lo = -np.minimum(a.max_charge_mw, room_up / charge_h)
    if departure_rule:
        after_h = np.maximum(fleet.departure_s - window_end_s, 0.0) / 3600.0
        e_req = a.departure_soc * cap - a.max_charge_mw * fleet.eta_charge * after_h
        need = np.maximum(e_req - e_lo, 0.0) / charge_h
        np.copyto(hi, np.minimum(np.maximum(-need, lo), 0.0), where=is_ev)
    else:
        hi[is_ev] = 0.0
    ev_off = is_ev & ~plugged
    lo[ev_off] = 0.0
    hi[ev_off] = 0.0
    lo[is_sol] = 0.0
    hi[is_sol] = np.minimum(avail[is_sol], a.max_discharge_mw[is_sol])
    return lo, np.maximum(hi, lo)


def _ref_energy(fleet, net, h):
    eta_d = np.where(fleet.eta_discharge > 0, fleet.eta_discharge, 1.0)
    d = (np.maximum(-net, 0.0) * fleet.eta_charge - np.maximum(net, 0.0) / eta_d) * h
    d[..., fleet.kind == 0] = 0.0
    return d


def _ref_bid_interval(k, fleet, now_s, committed, reserve, reserve_round, reserve_dur_s):
    h = k.dt_s / 3600.0
    is_ev, is_sol = fleet.kind == 2, fleet.kind == 0
    net = np.empty((2, fleet.n_agents))
    net[0] = -0.0
    np.copyto(net[0], -fleet.ev_baseline_rate_mw, where=fleet.plugged & is_ev)
    net[0][is_sol] = fleet.solar_available_mw[is_sol]
    net[1] = net[0] + committed
    net[1] += reserve
    e = _ref_energy(fleet, net, h) + fleet.energy_mwh
    e_lo, e_hi = np.minimum(e[0], e[1]), np.maximum(e[0], e[1])
    t1 = now_s + k.dt_s
    plugged_next = fleet.plugged & (fleet.departure_s > t1)
    base_next = np.zeros(fleet.n_agents)
    np.copyto(base_next, -fleet.ev_baseline_rate_mw, where=plugged_next & is_ev)
    base_next[is_sol] = fleet.solar_forecast_mw[is_sol]
    lo_net, hi_net = _ref_net_bounds(k, fleet, e_lo, e_hi, fleet.solar_forecast_mw, h,
                                     t1 + k.dt_s, plugged_next, True)
    base_eff = np.clip(base_next, lo_net, hi_net)
    if reserve_round:
        dur_h = max(reserve_dur_s, k.dt_s) / 3600.0
        _, hi_res = _ref_net_bounds(k, fleet, e_lo, e_hi, fleet.solar_forecast_mw, dur_h,
                                    t1 + reserve_dur_s, plugged_next, True)
        hi = np.maximum(np.minimum(hi_res, hi_net) - base_eff - reserve, 0.0)
        leaves = is_ev & (fleet.departure_s < t1 + reserve_dur_s)
        hi = np.where(is_sol | leaves, 0.0, hi)
        # a ramp bounds the reserve at what it reaches within the full activation time
        full_s = MarketConfig().reserve_full_activation_s
        hi = np.minimum(hi, np.maximum(k.arrays.ramp_mw_per_s * full_s - reserve, 0.0))
        return np.zeros_like(hi), hi, base_eff
    lo = np.minimum(lo_net - base_eff - reserve, 0.0)
    hi = np.maximum(hi_net - base_eff - reserve, 0.0)
    gone = is_ev & ~plugged_next
    lo[gone] = 0.0
    hi[gone] = 0.0
    ramp = k.arrays.ramp_mw_per_s * k.dt_s
    lo = np.maximum(lo, np.minimum(committed, 0.0) - ramp)
    hi = np.minimum(hi, np.maximum(committed, 0.0) + ramp)
    return lo, hi, base_eff


def _ref_execute_ramped(fleet, ramp_mw_per_s, base, p_lo, p_hi, contract, reserve,
                        activation, t0, dt, p_prev, n_sub=20):
    """dispatch._execute_ramped's equations, one agent-array per sub-step."""
    pdt = dt / n_sub
    r = ramp_mw_per_s * pdt
    qs, x, q, p, e = p_prev, p_prev, [], [], None
    for s in range(n_sub):
        a = np.clip((t0 + pdt * s + pdt - activation) / pdt, 0.0, 1.0)
        planned = contract + reserve * a
        qs = np.clip(planned, np.minimum(qs, 0.0) - r, np.maximum(qs, 0.0) + r)
        x = np.clip(np.clip(qs, p_lo, p_hi), np.minimum(x, 0.0) - r, np.maximum(x, 0.0) + r)
        q.append(qs)
        p.append(x)
        d = _ref_energy(fleet, base + x, pdt / 3600.0)
        e = d if e is None else e + d
    q, p = np.stack(q, axis=1), np.stack(p, axis=1)
    net = base[:, None] + p
    return (p.mean(axis=1), q.mean(axis=1), net.min(axis=1), e,
            (np.abs(p - q) > 1e-9).any(axis=1), base)


def _ref_execute(k, fleet, baseline, contract, reserve, activation, t0, dt, p_prev):
    h = dt / 3600.0
    lo_net, hi_net = _ref_net_bounds(k, fleet, fleet.energy_mwh, fleet.energy_mwh,
                                     fleet.solar_available_mw, h, np.inf, fleet.plugged, False)
    base = baseline.copy()
    base[fleet.kind == 0] = fleet.solar_available_mw[fleet.kind == 0]
    base = np.clip(base, lo_net, hi_net)
    p_lo, p_hi = lo_net - base, hi_net - base
    if np.isfinite(k.arrays.ramp_mw_per_s).any():   # the power ramps sub-step by sub-step
        return _ref_execute_ramped(fleet, k.arrays.ramp_mw_per_s, base, p_lo, p_hi, contract,
                                   reserve, activation, t0, dt, p_prev)
    ramp = k.arrays.ramp_mw_per_s * dt
    p_lo = np.maximum(p_lo, np.minimum(p_prev, 0.0) - ramp)
    p_hi = np.minimum(p_hi, np.maximum(p_prev, 0.0) + ramp)
    share = np.where(activation <= t0, 1.0, 0.0)
    planned = reserve * share + contract
    p = np.clip(planned, p_lo, p_hi)
    net = base + p
    return p, planned, net, _ref_energy(fleet, net, h), np.abs(p - planned) > 1e-9, base


def _random_state(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    fleet = build_fleet(n, FleetConfig(), 0.6, rng)
    fleet.energy_mwh = fleet.energy_capacity_mwh * rng.uniform(-0.05, 1.05, n)
    fleet.plugged = rng.random(n) < 0.8
    fleet.plugged[fleet.kind != 2] = True
    fleet.departure_s = np.where(fleet.kind == 2, rng.uniform(0.0, 30.0, n), np.inf)
    fleet.solar_available_mw = np.where(fleet.kind == 0, rng.uniform(0, 1, n)
                                        * fleet.solar_rated_mw, 0.0)
    fleet.solar_forecast_mw = np.where(fleet.kind == 0, rng.uniform(0, 1, n)
                                       * fleet.solar_rated_mw, 0.0)
    zeros_or = SPECIAL[:2]          # ±0.0 where a value is zero: signed zeros must survive
    committed = np.where(rng.random(n) < 0.3, zeros_or[rng.integers(0, 2, n)],
                         rng.normal(0.0, 0.02, n))
    reserve = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.02, n))
    return rng, fleet, committed, reserve


@pytest.mark.parametrize("ramp", [None, 0.001])
@pytest.mark.parametrize("seed", range(6))
def test_bid_interval_and_execute_equal_plain_formulas(seed: int, ramp: float | None) -> None:
    rng, fleet, committed, reserve = _random_state(seed)
    lim = Limits.from_dict({"battery": {"ramp_mw_per_s": ramp}} if ramp else {})
    kernel = Kernel(lim, [f"a{i}" for i in range(fleet.n_agents)], fleet, 21, 1.0)
    for now_s in (0.0, 7.0, 20.0):
        for reserve_round in (False, True):
            lo, hi = kernel.bid_interval(fleet, now_s=now_s, committed_p_mw=committed,
                                         reserve_mw=reserve, reserve_round=reserve_round,
                                         reserve_duration_s=5.0)
            rlo, rhi, rbase = _ref_bid_interval(kernel, fleet, now_s, committed, reserve,
                                                reserve_round, 5.0)
            assert _same_bits(lo, rlo) and _same_bits(hi, rhi)
            assert _same_bits(kernel.planned_baseline_mw, rbase)
            mask = kernel.power_mask(lo, hi)
            lv, tol = kernel.level_power_mw, 1e-9 * (1.0 + np.abs(kernel.level_power_mw))
            plain = (lv >= lo[:, None] - tol) & (lv <= hi[:, None] + tol)
            rows = plain.any(axis=1)
            assert _same_bits(mask[rows], plain[rows]) and mask.all(axis=1).shape == rows.shape
            assert mask.flags.c_contiguous and mask.any(axis=1).all()
    for b_lo, b_hi in ((fleet.energy_mwh, fleet.energy_mwh),):
        got = kernel.net_bounds(fleet, b_lo, b_hi, fleet.solar_available_mw, 0.25, 12.0,
                                fleet.plugged, True)
        want = _ref_net_bounds(kernel, fleet, b_lo, b_hi, fleet.solar_available_mw, 0.25,
                               12.0, fleet.plugged, True)
        assert all(_same_bits(g, w) for g, w in zip(got, want, strict=True))
    from gridswarm_env.dispatch import execute

    baseline = np.where(rng.random(fleet.n_agents) < 0.5, -0.0, rng.normal(0, 0.01,
                                                                         fleet.n_agents))
    p_prev = rng.normal(0.0, 0.002, fleet.n_agents)
    for activation in (np.full(fleet.n_agents, np.inf),
                       np.where(rng.random(fleet.n_agents) < 0.5, 3.0, np.inf)):
        ex = execute(fleet, kernel, baseline_mw=baseline, contract_mw=committed,
                     reserve_mw=reserve, activation_s=activation, t0_s=4.0, dt_s=1.0,
                     n_substeps=20, physics_dt_s=0.05, p_prev_mw=p_prev)
        p, planned, net, delta, clamped, base = _ref_execute(
            kernel, fleet, baseline, committed, reserve, activation, 4.0, 1.0, p_prev)
        for got, want in ((ex.p_mean_mw, p), (ex.planned_mean_mw, planned),
                          (ex.net_min_mw, net), (ex.energy_delta_mwh, delta),
                          (ex.clamped, clamped), (ex.baseline_mw, base)):
            assert _same_bits(got, want)
        if ramp is not None:   # the path ramps: at most ramp·physics_dt per sub-step
            prev = np.concatenate((p_prev[:, None], ex.p_path_mw[:, :-1]), axis=1)
            step = kernel.arrays.ramp_mw_per_s[:, None] * 0.05 + 1e-12
            assert np.all(ex.p_path_mw <= np.maximum(prev, 0.0) + step)
            assert np.all(ex.p_path_mw >= np.minimum(prev, 0.0) - step)
            assert np.any(ex.p_path_mw[:, -1] != ex.p_path_mw[:, 0])   # it does ramp


@pytest.mark.parametrize("seed", range(4))
def test_execution_checker_equals_plain_formulas_with_special_values(seed: int) -> None:
    n = 40
    fleet = build_fleet(n, FleetConfig(), 0.5, np.random.default_rng(seed))
    kernel = Kernel(Limits.from_dict({"battery": {"ramp_mw_per_s": 0.001}}),
                    [f"a{i}" for i in range(n)], fleet, 21, 1.0)
    checker = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh, kernel.arrays, 1.0)
    rng = np.random.default_rng(seed)
    a, tol, tol_e = kernel.arrays, 1e-7, 1e-9
    cap = fleet.energy_capacity_mwh
    is_sol, is_ev = fleet.kind == 0, fleet.kind == 2
    for _ in range(30):
        pick = lambda scale: np.where(rng.random(n) < 0.2, SPECIAL[rng.integers(0, 10, n)],  # noqa: E731
                                      rng.normal(0, scale, n))
        net_min = pick(0.02)
        net_max = net_min if rng.random() < 0.5 else pick(0.02)
        args = dict(net_min_mw=net_min, net_max_mw=net_max, p_now_mw=pick(0.01),
                    p_prev_mw=pick(0.01), energy_before_mwh=fleet.energy_mwh + pick(1e-3),
                    energy_after_mwh=fleet.energy_mwh + pick(1e-3),
                    solar_available_mw=pick(0.05), plugged=rng.random(n) < 0.7)
        got = checker.check(**args)
        power = ((args["net_max_mw"] > a.max_discharge_mw + tol)
                 | (net_min < -a.max_charge_mw - tol)
                 | (is_sol & ((net_min < -tol) | (net_max > args["solar_available_mw"] + tol)))
                 | (is_ev & (net_max > tol)))
        e0, e1 = args["energy_before_mwh"], args["energy_after_mwh"]
        soc = ~is_sol & (((e1 < a.soc_min * cap - tol_e) & (e1 < e0 - tol_e))
                         | ((e1 > a.soc_max * cap + tol_e) & (e1 > e0 + tol_e)))
        moved = (np.abs(net_min) > tol) | (np.abs(net_max) > tol)
        unplugged = is_ev & ~args["plugged"] & moved
        for field, want in (("power", power), ("soc", soc), ("unplugged", unplugged)):
            np.testing.assert_array_equal(getattr(got, field), want, err_msg=field)


def test_update_solar_equals_plain_formulas() -> None:
    from gridswarm_env.fleet import update_solar

    cfg = FleetConfig()
    fleet = build_fleet(50, cfg, 0.4, np.random.default_rng(8))
    ref = fleet.copy()
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for k in range(5):
        irr_now, irr_next = 0.3 + 0.1 * k, 0.35 + 0.1 * k
        update_solar(fleet, irr_now, irr_next, cfg, 1.0, rng_a,
                     fleet_constants(fleet) if k % 2 else None)
        a = np.exp(-1.0 / 60.0)
        shocks = rng_b.normal(0.0, cfg.solar_variability_std * np.sqrt(1 - a * a), 50)
        ref.solar_noise = np.where(ref.kind == KIND_SOLAR, a * ref.solar_noise + shocks, 0.0)
        opn = 1 + ref.solar_noise
        ref.solar_available_mw = np.clip(ref.solar_rated_mw * irr_now * opn, 0.0,
                                         ref.solar_rated_mw)
        ref.solar_forecast_mw = np.clip(ref.solar_rated_mw * irr_next * opn
                                        * (1 + ref.solar_bias), 0.0, ref.solar_rated_mw)
        for f in ("solar_noise", "solar_available_mw", "solar_forecast_mw"):
            assert _same_bits(getattr(fleet, f), getattr(ref, f)), f


def _reset(env):
    from policies import make_policy

    policy = make_policy("random")
    env.reset(seed=5)
    policy.reset(env, seed=5)
    return policy


def _episode_steps(env, steps: int, policy=None) -> list[bytes]:
    policy = policy or _reset(env)
    obs, out = env.observations_array(), []
    for _ in range(steps):
        if not env.agents:
            break
        a = policy.act(obs, env.action_masks())
        obs, rewards, _, _ = env.step_arrays(a[:, 0], a[:, 1])
        out.append(obs.tobytes() + rewards.tobytes() + env.freq_trace_hz.tobytes())
    return out


def test_steps_pause_the_garbage_collector_and_resume_it() -> None:
    """EnvConfig.pause_gc: the collector is off inside a step, on again after it (also after
    an error), left off when the caller had disabled it, never touched with pause_gc=False;
    the trajectory is the same bit for bit."""
    import gc

    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import GridSwarmEnv

    def observed(pause: bool) -> list[bool]:
        env = GridSwarmEnv(scenario="emergency", config=EnvConfig(n_agents=20, trust="hmac",
                                                                   pause_gc=pause))
        seen: list[bool] = []
        physics = env._physics

        def spy(*args, **kwargs):
            seen.append(gc.isenabled())
            return physics(*args, **kwargs)

        env._physics = spy
        env.reset(seed=0)
        n = env.n_agents
        env.step_arrays(np.zeros(n, np.int64), np.zeros(n, np.int64))
        env.step({a: np.array([10, 0]) for a in env.agents})          # the dict API too
        assert gc.isenabled()
        with pytest.raises(ValueError, match="outside the action space"):
            env.step_arrays(np.full(n, 99, np.int64), np.zeros(n, np.int64))
        physics_error = RuntimeError("physics failed")

        def failing(*args, **kwargs):
            raise physics_error

        env._physics = failing
        with pytest.raises(RuntimeError, match="physics failed"):
            env.step_arrays(np.zeros(n, np.int64), np.zeros(n, np.int64))
        assert gc.isenabled()
        return seen

    assert gc.isenabled()
    assert observed(True) == [False, False]
    assert observed(False) == [True, True]
    gc.disable()
    try:
        env = GridSwarmEnv(scenario="price_spike", config=EnvConfig(n_agents=10, trust="hmac"))
        env.reset(seed=0)
        env.step_arrays(np.zeros(10, np.int64), np.zeros(10, np.int64))
        assert not gc.isenabled()   # the caller's choice is kept
    finally:
        gc.enable()
    from gridswarm_env.config import EnvConfig as Cfg

    def trajectory(pause: bool) -> list[bytes]:
        return _episode_steps(GridSwarmEnv(scenario="emergency", config=Cfg(
            n_agents=30, trust="hmac", pause_gc=pause)), 80)

    assert trajectory(True) == trajectory(False)
    with pytest.raises(ValueError, match="pause_gc = 1: expected True or False"):
        Cfg(pause_gc=1)


@pytest.mark.parametrize("trust", ["hmac", "ed25519"])
@pytest.mark.parametrize("scenario", ["price_spike", "solar_surplus", "emergency"])
def test_episodes_make_no_reference_cycles(scenario: str, trust: str) -> None:
    """What makes pausing the collector during steps safe: a whole episode's steps leave
    nothing for it to find (every object is freed by reference counting). (A reset does
    make a few cycles: SciPy's root finder for the bus latency's parameters.)"""
    import gc

    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import GridSwarmEnv

    env = GridSwarmEnv(scenario=scenario, config=EnvConfig(n_agents=40, trust=trust))
    _episode_steps(env, 5)   # warm-up: caches, pools, lazily built objects
    policy = _reset(env)
    gc.collect()
    gc.disable()
    try:
        steps = _episode_steps(env, 10_000, policy)
        found = gc.collect()
    finally:
        gc.enable()
    assert len(steps) == env.scenario.episode_steps
    assert found == 0
