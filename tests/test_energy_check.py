"""The run-time energy-consistency check (:func:`gridswarm_env.kernel.energy_mismatch`):
every step, each battery's and EV's stored-energy change against what its executed power
implies, ``η_c·P_charge·h − P_discharge·h/η_d``, recomputed from the power (the sub-step
power the frequency integrated, the activation sub-steps' two levels) rather than read
from the dispatcher's booking. A mismatch is an executed violation.

Review: a planted bookkeeping bug (discharge booked without its 1/η_d) left
``executed_violations`` at 0 while the stores went below their floor; the bugs below are
planted by monkeypatching and must be counted.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from gridswarm_env import dispatch as dispatch_module
from gridswarm_env import fleet as fleet_module
from gridswarm_env import kernel as kernel_module
from gridswarm_env.bus import BusConfig
from gridswarm_env.config import EnvConfig, FleetConfig, MarketConfig
from gridswarm_env.dispatch import execute
from gridswarm_env.fleet import KIND_BATTERY, KIND_SOLAR, build_fleet, energy_change_mwh
from gridswarm_env.grid import GridParams
from gridswarm_env.kernel import ExecutionChecker, Kernel, Limits, energy_mismatch
from gridswarm_env.market import PRODUCT_RESERVE
from gridswarm_env.scenarios import get_scenario
from tests.episodes import play

REAL_ENERGY_CHANGE_OF = fleet_module.energy_change_of
ENV_MODULE = importlib.import_module("gridswarm_env.env")   # the package's env() hides it


def _without_eta_discharge(net, zero, eta_charge, eta_discharge_safe, duration_h, solar):
    """Discharge booked without its 1/η_d (the review's planted bug)."""
    return REAL_ENERGY_CHANGE_OF(net, zero, eta_charge, np.ones_like(eta_discharge_safe),
                                 duration_h, solar)


def _without_eta_charge(net, zero, eta_charge, eta_discharge_safe, duration_h, solar):
    """Charge booked without its η_c."""
    return REAL_ENERGY_CHANGE_OF(net, zero, np.ones_like(eta_charge), eta_discharge_safe,
                                 duration_h, solar)


def _violations(raw, policy: str = "heuristic", seed: int = 0) -> int:
    steps = [info["executed_violations"] for _r, info in play(raw, policy, seed=seed)]
    assert sum(steps) == raw.episode_metrics()["executed_violations"]
    return sum(steps)


RAMP = {kind: {"ramp_mw_per_s": 1.0} for kind in ("battery", "solar", "ev")}


@pytest.mark.parametrize(("bug", "scenario", "kwargs"), [
    (_without_eta_discharge, "price_spike", {}),                # batteries sell
    (_without_eta_discharge, "price_spike", {"limits": RAMP}),  # sub-step by sub-step
    (_without_eta_charge, "solar_surplus", {}),                 # batteries and EVs absorb
    (_without_eta_charge, "price_spike", {"shadow": True}),     # EVs' baseline charging
])
def test_a_planted_bookkeeping_bug_is_counted(make_env, monkeypatch, bug, scenario,
                                              kwargs) -> None:
    raw = make_env(scenario, 30, max_cycles=40, **kwargs)
    assert _violations(raw) == 0
    monkeypatch.setattr(fleet_module, "energy_change_of", bug)
    raw = make_env(scenario, 30, max_cycles=40, **kwargs)
    assert _violations(raw) > 0


def test_the_check_reads_the_executed_power_not_the_booking(make_env, monkeypatch) -> None:
    """The booking is the dispatcher's ``energy_delta_mwh``; scaling it by one part in a
    million (nothing else changes: power, frequency, prices) is counted."""
    real_execute = dispatch_module.execute

    def off_by_a_ppm(fleet, kernel, **kwargs):
        ex = real_execute(fleet, kernel, **kwargs)
        return ex._replace(energy_delta_mwh=ex.energy_delta_mwh * (1.0 + 1e-6))

    monkeypatch.setattr(ENV_MODULE, "execute", off_by_a_ppm)
    raw = make_env("price_spike", 30, max_cycles=10)
    assert _violations(raw) > 0


T0_S, SUB_S = 10.0, 0.05


def _activation_case(n: int = 40):
    """Batteries charging under an energy contract when their reserve activates inside a
    sub-step (their net changes sign there: booked at two levels), some with a reserve
    past their rating (the clip bites on the second level)."""
    fleet = build_fleet(n, FleetConfig(), 0.5, np.random.default_rng(0))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh
    kernel = Kernel(Limits(), [f"a{i}" for i in range(n)], fleet, 21, 1.0)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    rated = fleet.rated_power_mw[bat]
    contract, reserve = np.zeros(n), np.zeros(n)
    contract[bat] = -0.4 * rated
    reserve[bat] = np.where(np.arange(bat.size) % 2, 0.8, 1.7) * rated
    activation = np.full(n, np.inf)
    activation[bat] = T0_S + 0.013 + 0.05 * (np.arange(bat.size) % 7)
    kwargs = dict(baseline_mw=np.zeros(n), contract_mw=contract, reserve_mw=reserve,
                  activation_s=activation, t0_s=T0_S, dt_s=1.0, n_substeps=20,
                  physics_dt_s=SUB_S)
    checker = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh, kernel.arrays, 1.0,
                               eta_charge=fleet.eta_charge, eta_discharge=fleet.eta_discharge)
    return fleet, kernel, kwargs, checker


def _energy_flags(fleet, kernel, kwargs, checker) -> np.ndarray:
    ex = execute(fleet, kernel, **kwargs)
    before = fleet.energy_mwh
    after = before + ex.energy_delta_mwh
    return checker.energy_flags(ex.baseline_mw, ex.p_mean_mw, ex.p_sub_mw, ex.split_levels,
                                SUB_S, before, after)


@pytest.mark.parametrize("block_elements", [45, 1 << 15])
def test_activation_sub_steps_are_checked_at_their_two_levels(monkeypatch,
                                                               block_elements: int) -> None:
    """Booking an activation sub-step at its mean power instead of its two levels (the
    correction of ``_split_activation_substeps`` dropped) is counted; booked right it is
    not. The levels must also average to the power the frequency integrated. The
    ``(n, n_substeps)`` sums run in blocks of rows (``kernel._NET_BLOCK_ELEMENTS``): with
    two rows a block, each block's activation sub-steps are left out of its sums and added
    at their two levels, as in one block."""
    monkeypatch.setattr(kernel_module, "_NET_BLOCK_ELEMENTS", block_elements)
    fleet, kernel, kwargs, checker = _activation_case()
    ex = execute(fleet, kernel, **kwargs)
    assert ex.split_levels is not None and ex.p_sub_mw is not None
    flags = _energy_flags(fleet, kernel, kwargs, checker)
    assert not flags.any()
    real_split = dispatch_module._split_activation_substeps

    def level_ignored(*args, **kw):
        got = real_split(*args, **kw)
        return None if got is None else (got[0], np.zeros_like(got[1]), got[2])

    monkeypatch.setattr(dispatch_module, "_split_activation_substeps", level_ignored)
    flags = _energy_flags(fleet, kernel, kwargs, checker)
    bat = fleet.kind == KIND_BATTERY
    assert flags[bat].all() and not flags[~bat].any()
    monkeypatch.undo()
    # levels that do not average to the sub-step's power are flagged
    agents, subs, p0, p1, after = ex.split_levels
    shifted = (agents, subs, p0 * 1.001, p1 * 1.001, after)
    after_e = fleet.energy_mwh + ex.energy_delta_mwh
    flags = checker.energy_flags(ex.baseline_mw, ex.p_mean_mw, ex.p_sub_mw, shifted, SUB_S,
                                 fleet.energy_mwh, after_e)
    assert flags[np.unique(agents)].all()


@pytest.mark.parametrize("n_substeps", [1, 20, 600])
def test_no_false_positive_from_rounding_over_many_magnitudes(n_substeps: int) -> None:
    """Power booked sub-step by sub-step by the fleet's own bookkeeping, over stores from
    1 kWh to 1 GWh and powers from 1 W to 1 GW, charging and discharging within the step,
    is never flagged; a booking off by one part in 10⁹ always is."""
    rng = np.random.default_rng(1)
    n = 600
    fleet = build_fleet(n, FleetConfig(), 0.5, rng)
    store = fleet.kind != KIND_SOLAR
    fleet.energy_capacity_mwh[:] = 10.0 ** rng.uniform(-3, 3, n)
    fleet.energy_mwh[:] = fleet.energy_capacity_mwh * rng.uniform(0.05, 0.95, n)
    scale = 10.0 ** rng.uniform(-6, 3, n)
    base = np.where(rng.random(n) < 0.5, 0.0, scale * rng.uniform(-1, 1, n))
    sub_h = 0.05 / 3600.0
    if n_substeps == 1:
        p, p_sub = scale * rng.uniform(-1, 1, n), None
        delta = energy_change_mwh(fleet, base + p, sub_h)
    else:
        p_sub = scale[:, None] * rng.uniform(-1, 1, (n, n_substeps))
        p = p_sub.mean(axis=1)
        delta = energy_change_mwh(fleet, base + p_sub[:, 0], sub_h)
        for s in range(1, n_substeps):
            delta = delta + energy_change_mwh(fleet, base + p_sub[:, s], sub_h)
    before = fleet.energy_mwh.copy()
    after = before + delta
    args = (fleet.eta_charge, np.where(fleet.eta_discharge > 0, fleet.eta_discharge, 1.0),
            sub_h, store)
    ok = energy_mismatch(base, p, before, after, *args, p_sub_mw=p_sub, substep_h=sub_h)
    assert not ok.any()
    moved = store & (delta != 0)
    off = energy_mismatch(base, p, before, before + delta * (1 + 1e-9), *args,
                          p_sub_mw=p_sub, substep_h=sub_h)
    # one part in 1e9 of the step's change: above the tolerance unless the change is
    # below ~1e-6 of the stored energy (the rounding of E itself)
    visible = np.abs(delta) * 1e-9 > 1e-14 * np.abs(before)
    assert off[moved & visible].all()
    assert not off[~store].any()


def test_a_nan_store_is_flagged_and_solar_never() -> None:
    kinds = np.array([KIND_SOLAR, KIND_BATTERY, KIND_BATTERY])
    store = kinds != KIND_SOLAR
    before = np.array([0.0, 1.0, 1.0])
    after = np.array([5.0, np.nan, 1.0])
    flags = energy_mismatch(np.array([3.0, 0.0, 0.0]), np.zeros(3), before, after,
                            np.full(3, 0.95), np.full(3, 0.95), 1 / 3600, store)
    assert flags.tolist() == [False, True, False]


def test_random_activations_with_late_reserve_are_never_flagged() -> None:
    """Charging or discharging contracts, reserves past the rating, first activations and
    later ones (``late_reserve``) inside random sub-steps, sub-steps split at two levels or
    not: booked by the dispatcher, never flagged."""
    n = 30
    fleet = build_fleet(n, FleetConfig(), 0.5, np.random.default_rng(5))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh
    kernel = Kernel(Limits(), [f"a{i}" for i in range(n)], fleet, 21, 1.0)
    checker = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh, kernel.arrays, 1.0,
                               eta_charge=fleet.eta_charge, eta_discharge=fleet.eta_discharge)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    rated = fleet.rated_power_mw
    rng = np.random.default_rng(3)
    split = 0
    for _ in range(20):
        # rows: contract, first reserve, late reserve (MW per MW rated)
        mw = np.zeros((3, n))
        mw[:, bat] = rng.uniform([[-1.0], [0.0], [0.0]], [[0.6], [0.8], [1.2]],
                                 (3, bat.size)) * rated[bat]
        contract, first, late = mw
        t1 = np.where(fleet.kind == KIND_BATTERY, T0_S + rng.uniform(-0.2, 0.9, n), np.inf)
        t2 = np.minimum(t1 + rng.uniform(0.0, 0.5, n), T0_S + 0.99)
        kwargs = dict(baseline_mw=np.zeros(n), contract_mw=contract, reserve_mw=first + late,
                      activation_s=t1, t0_s=T0_S, dt_s=1.0, n_substeps=20,
                      physics_dt_s=SUB_S, late_reserve=(bat, late[bat], t2[bat]))
        split += execute(fleet, kernel, **kwargs).split_levels is not None
        assert not _energy_flags(fleet, kernel, kwargs, checker).any()
    assert split > 10


def test_subnormal_energies_are_not_flagged() -> None:
    """Below float64's smallest normal number (2⁻¹⁰²² ≈ 2.2e-308) a rounding is off by up
    to 2⁻¹⁰⁷⁵ absolute, not ε/2 relative: a correct booking there must not be flagged.
    Review: a battery of ``FleetConfig(battery_power_mw=1e-310)`` discharging at 4e-312 MW
    was counted, its booking one unit (5e-324 MWh) off the recomputation; the levels of an
    activation sub-step at subnormal powers, a quarter of the time. ``FleetConfig`` now
    refuses such fleets (at least 1 W); the check's floor stays, tested here on a fleet
    built past that validation."""
    h = 1.0 / 3600.0
    net = np.array([float.fromhex("-0x0.0018bff805221p-1022")])   # charging, MW
    eta = np.array([float.fromhex("0x1.096d2a37f473fp-2")])
    before = np.array([float.fromhex("0x0.000025311f15cp-1022")])
    store = np.array([True])
    after = before + fleet_module.energy_change_of(net, 0.0, eta, eta, h, ~store)
    assert not energy_mismatch(np.zeros(1), net, before, after, eta, eta, h, store).any()
    # the same through the dispatcher and the env's checker, single level and per sub-step
    rng = np.random.default_rng(0)
    m = 4000
    net = rng.uniform(-1e-311, 1e-311, m)
    eta = rng.uniform(0.01, 1.0, m)
    before = rng.uniform(0.0, 1e-313, m)
    store = np.ones(m, dtype=bool)
    after = before + fleet_module.energy_change_of(net, 0.0, eta, eta, h, ~store)
    assert not energy_mismatch(np.zeros(m), net, before, after, eta, eta, h, store).any()
    subs = 20
    p_sub = rng.uniform(-1e-311, 1e-311, (m, subs))
    delta = fleet_module.energy_change_of(p_sub[:, 0], 0.0, eta, eta, h / subs, ~store)
    for s in range(1, subs):
        delta = delta + fleet_module.energy_change_of(p_sub[:, s], 0.0, eta, eta, h / subs,
                                                      ~store)
    assert not energy_mismatch(np.zeros(m), p_sub.mean(axis=1), before, before + delta, eta,
                               eta, h, store, p_sub_mw=p_sub, substep_h=h / subs).any()
    # activation sub-steps at two subnormal levels (the dispatcher's mean and booking)
    subnormal = FleetConfig(battery_eta_charge=0.3, battery_eta_discharge=0.3)
    for name in ("battery_power_mw", "ev_power_mw"):   # past FleetConfig's 1 W floor
        object.__setattr__(subnormal, name, 1e-310)
    fleet = build_fleet(40, subnormal, 0.5, np.random.default_rng(0))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh
    kernel = Kernel(Limits(), [f"a{i}" for i in range(40)], fleet, 21, 1.0)
    checker = ExecutionChecker(fleet.kind, fleet.energy_capacity_mwh, kernel.arrays, 1.0,
                               eta_charge=fleet.eta_charge, eta_discharge=fleet.eta_discharge)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    rated = fleet.rated_power_mw
    split = 0
    for _ in range(20):
        contract, reserve = np.zeros(40), np.zeros(40)
        contract[bat] = rng.uniform(-1.0, 0.6, bat.size) * rated[bat]
        reserve[bat] = rng.uniform(0.0, 2.0, bat.size) * rated[bat]
        activation = np.where(fleet.kind == KIND_BATTERY, T0_S + rng.uniform(0.0, 1.0, 40),
                              np.inf)
        kwargs = dict(baseline_mw=np.zeros(40), contract_mw=contract, reserve_mw=reserve,
                      activation_s=activation, t0_s=T0_S, dt_s=1.0, n_substeps=20,
                      physics_dt_s=SUB_S)
        split += execute(fleet, kernel, **kwargs).split_levels is not None
        assert not _energy_flags(fleet, kernel, kwargs, checker).any()
    assert split > 10


def _one_split_substep(p_sub: float, p0: float, p1: float, after: float,
                       off_by: float = 0.0, before_mwh: float = 0.5) -> bool:
    """energy_mismatch of one battery whose single sub-step is booked at two levels
    (``p0`` for ``1 - after`` of it, then ``p1``), its stored energy changed by exactly
    what the levels imply plus ``off_by`` MWh."""
    h = SUB_S / 3600.0
    eta = np.array([0.95])
    stored = [lvl * (h / eta[0] if lvl > 0 else eta[0] * h) for lvl in (p0, p1)]
    before = np.array([before_mwh])
    after_e = before - ((1.0 - after) * stored[0] + after * stored[1]) + off_by
    split = (np.array([0]), np.array([0]), np.array([p0]), np.array([p1]), np.array([after]))
    return bool(energy_mismatch(np.zeros(1), np.array([p_sub]), before, after_e, eta, eta,
                                h, np.array([True]), p_sub_mw=np.array([[p_sub]]),
                                split_levels=split, substep_h=h)[0])


def test_split_levels_must_average_to_the_substeps_power_within_rounding() -> None:
    """Levels whose energy is booked right but whose mean is not the power the frequency
    integrated (here off by one part in 10⁹) are flagged; the levels' own mean is not."""
    mean = 0.7 * 0.5 + 0.3 * -0.5
    assert not _one_split_substep(mean, 0.5, -0.5, 0.3)
    assert _one_split_substep(mean * (1.0 + 1e-9), 0.5, -0.5, 0.3)


def test_levels_that_cancel_keep_their_own_rounding_tolerance() -> None:
    """Two levels of opposite sign whose energies nearly cancel: an error the size of
    the levels' rounding (a few ε of a level's energy) is not flagged; the tolerance
    counts both levels' magnitudes, not only their small net. A real error is."""
    t0 = 1.0 * (SUB_S / 3600.0) / 0.95
    eps = float(np.finfo(float).eps)
    assert not _one_split_substep(0.0, 1.0, -1.0, 0.5, off_by=4 * eps * t0, before_mwh=1e-7)
    assert _one_split_substep(0.0, 1.0, -1.0, 0.5, off_by=1e-6 * t0, before_mwh=1e-7)


def test_the_checkers_report_carries_the_energy_kind_and_counts_alike() -> None:
    """``ExecutionChecker.check`` given the step's baseline reports the energy kind
    (``ViolationReport.energy``), and its count is :meth:`count`'s."""
    fleet, kernel, kwargs, checker = _activation_case()
    ex = execute(fleet, kernel, **kwargs)
    before = fleet.energy_mwh.copy()
    zeros = np.zeros_like(before)
    step = dict(net_min_mw=ex.net_min_mw, net_max_mw=ex.net_max_mw, p_now_mw=ex.p_mean_mw,
                p_prev_mw=zeros, energy_before_mwh=before,
                solar_available_mw=fleet.solar_available_mw, plugged=fleet.plugged,
                baseline_mw=ex.baseline_mw, p_sub_mw=ex.p_sub_mw,
                split_levels=ex.split_levels, physics_dt_s=SUB_S)
    booked = checker.check(energy_after_mwh=before + ex.energy_delta_mwh, **step)
    assert booked.energy is not None and not booked.energy.any()
    off = checker.check(energy_after_mwh=before + ex.energy_delta_mwh * (1.0 + 1e-6), **step)
    bat = fleet.kind == KIND_BATTERY
    assert off.energy[bat].all() and not off.energy[~bat].any()
    assert off.count == checker.count(energy_after_mwh=before + ex.energy_delta_mwh
                                      * (1.0 + 1e-6), **step) >= int(bat.sum())


def _record_execution(mp: pytest.MonkeyPatch) -> tuple[list, list]:
    """Record, through ``mp``, every step's :class:`~gridswarm_env.dispatch.Execution` (the
    environment's dispatch call) and the arguments of its post-step check, changing
    nothing; returns the two lists, filled as steps run."""
    executed, checked = [], []
    real_execute, real_count = ENV_MODULE.execute, kernel_module.ExecutionChecker.count

    def recording_execute(*args, **kwargs):
        executed.append(real_execute(*args, **kwargs))
        return executed[-1]

    def recording_count(self, **kwargs):
        checked.append(kwargs)
        return real_count(self, **kwargs)

    mp.setattr(ENV_MODULE, "execute", recording_execute)
    mp.setattr(kernel_module.ExecutionChecker, "count", recording_count)
    return executed, checked


def test_the_env_checks_the_power_it_executed_sub_step_by_sub_step(make_env,
                                                                   monkeypatch) -> None:
    """The environment's post-step check gets each step's executed sub-step power and
    activation levels (what :func:`energy_mismatch` recomputes the energy from when the
    power varied inside the step), not the step mean alone: with the mean, a step whose
    net changes sign inside it (a charging battery whose reserve activates) is flagged.
    (Such a step is rare in a short episode; _activation_case builds one, and
    _late_broadcast_episode an episode with one.)"""
    executed, checked = _record_execution(monkeypatch)
    raw = make_env("emergency", 30, max_cycles=20, limits=RAMP)
    assert _violations(raw) == 0
    assert len(executed) == len(checked) > 0
    for ex, kwargs in zip(executed, checked, strict=True):
        assert kwargs["p_sub_mw"] is ex.p_sub_mw and kwargs["split_levels"] is ex.split_levels
        assert kwargs["baseline_mw"] is ex.baseline_mw
    assert any(ex.p_sub_mw is not None for ex in executed)   # the ramp: every step


def _late_broadcast_episode(seed: int) -> tuple[int, list, list]:
    """An emergency episode at 50 ms steps (five 10 ms sub-steps, gate closure at 25 ms)
    on a bus whose latencies (exponential, mean 20 ms, clipped at 1 s) mostly make the
    gate and the step's end, but now and then leave the emergency broadcast on its way
    past two steps, into the window of the first energy rounds after the trip. The trip
    (30 MW) is smaller than the reserve bought (100 MW), so those rounds are surpluses:
    the batteries bid 0.4 of their rating to charge and the most reserve their masks
    allow, so a battery the broadcast reaches late is charging under an energy contract
    when its reserve activates, inside a sub-step (net injection of opposite signs on
    either side: the sub-step booked at two levels). Returns the executed violations,
    every step's :class:`~gridswarm_env.dispatch.Execution` and the checker's arguments."""
    config = EnvConfig(
        n_agents=40, dt_s=0.05, trust="hmac", grid=GridParams(physics_dt_s=0.01),
        market=MarketConfig(gate_s=0.025), bus=BusConfig(latency_mean_s=0.02,
                                                         latency_max_s=1.0),
        fleet=FleetConfig(share_battery=0.8, share_solar=0.1, share_ev=0.1))
    scenario = get_scenario("emergency", contingency_mw=30.0, reserve_target_mw=100.0,
                            event_time_s=1.0, episode_steps=40, load_noise_std_mw=0.0)
    raw = ENV_MODULE.GridSwarmEnv(scenario, config=config)
    with pytest.MonkeyPatch.context() as mp:
        executed, checked = _record_execution(mp)
        raw.reset(seed=seed)
        n_power = config.market.n_power_levels
        levels = np.arange(n_power)
        # the batteries charge at 0.4 of their rating (power levels linspace(-1, 1) x
        # rated), the others bid nothing
        charge = int(np.abs(np.linspace(-1.0, 1.0, n_power) + 0.4).argmin())
        wanted = np.where(raw.fleet.kind == KIND_BATTERY, charge, n_power // 2)
        violations = 0
        while raw.agents:
            mask = raw.action_masks()[:, :n_power]
            if raw.round_product == PRODUCT_RESERVE:   # the most reserve, cheapest
                power = np.where(mask, levels, -1).max(axis=1)
                price = np.zeros(raw.n_agents, dtype=np.int64)
            else:   # the allowed level nearest the wanted one, at the price that clears
                power = np.where(mask, np.abs(levels - wanted[:, None]), n_power).argmin(axis=1)
                price = np.full(raw.n_agents, config.market.n_price_levels - 1
                                if raw.round_request_mw < 0 else 0)
            violations += raw.step_arrays(power, price)[3]["executed_violations"]
    assert violations == raw.episode_metrics()["executed_violations"]
    return violations, executed, checked


def _opposite_sign_splits(ex) -> int:
    """Entries of ``ex.split_levels`` whose net injection changes sign in the sub-step."""
    if ex.split_levels is None:
        return 0
    agents, _subs, p0, p1, _after = ex.split_levels
    base = ex.baseline_mw[agents]
    return int(np.count_nonzero((base + p0) * (base + p1) < 0.0))


# each reaches a step with net injections of opposite signs in an activation sub-step
SPLIT_SEEDS = (0, 2, 4, 6)


def test_the_env_checks_activation_sub_steps_at_their_two_levels() -> None:
    """An environment episode reaching steps whose activation sub-steps are booked at two
    levels of opposite sign (a charging battery whose reserve activates; see
    :func:`_late_broadcast_episode`): the env hands the checker those levels
    (``Execution.split_levels``) and nothing is flagged. Review: no episode of the tests
    reached such a step, so passing ``split_levels=None`` to the checker in env.py went
    unnoticed; with it the two-level booking mismatches the single-level recomputation
    and the step is counted (planted below)."""
    flipped = 0
    for seed in SPLIT_SEEDS:
        violations, executed, checked = _late_broadcast_episode(seed)
        assert violations == 0
        assert len(executed) == len(checked) > 0
        for ex, kwargs in zip(executed, checked, strict=True):
            assert kwargs["split_levels"] is ex.split_levels
            assert kwargs["p_sub_mw"] is ex.p_sub_mw
        flipped += sum(map(_opposite_sign_splits, executed))
    assert flipped > 0, "no step booked an activation sub-step at two levels"


def test_dropping_the_split_levels_in_an_episode_is_counted(monkeypatch) -> None:
    """The planted bug of the test above, by the checker's side: the steps with split
    levels of opposite sign are flagged, one battery each."""
    real_count = kernel_module.ExecutionChecker.count

    def levels_dropped(self, **kwargs):
        return real_count(self, **{**kwargs, "split_levels": None})

    monkeypatch.setattr(kernel_module.ExecutionChecker, "count", levels_dropped)
    flipped = counted = 0
    for seed in SPLIT_SEEDS:
        violations, executed, _checked = _late_broadcast_episode(seed)
        flipped += sum(map(_opposite_sign_splits, executed))
        counted += violations
    assert counted == flipped > 0
