"""Tests of gridswarm_env.dispatch: the physics sub-step in which a reserve contract activates.

Power is piecewise constant per 50 ms sub-step, but inside the activation sub-step the
DER follows two levels: ``clip(c)`` before the activation time and ``clip(c + R)`` after
(c: energy contract, R: reserve, clip: the physical bounds of the step). Closed forms
with ``a`` the share of the sub-step after activation, ``Δt`` the sub-step (h):

* the grid sees the mean of the two clipped levels, ``(1 − a)·clip(c) + a·clip(c + R)``
  (not the clip of the mean, which over-delivers when R reaches past the bound);
* the store changes by ``(1 − a)·g(net_before) + a·g(net_after)`` times ``Δt`` with
  ``g(x) = η_c·max(−x, 0) − max(x, 0)/η_d`` (not ``g`` of the mean, which books the
  charging part at the discharge efficiency when the net injection changes sign).
"""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env.config import FleetConfig
from gridswarm_env.dispatch import execute
from gridswarm_env.fleet import KIND_BATTERY, KIND_SOLAR, build_fleet
from gridswarm_env.kernel import Kernel, Limits


def test_reserve_activates_inside_its_sub_step_and_books_its_energy() -> None:
    """Dispatch review: reserve activated at t = 10.02 s acts for the last 60 % of the
    sub-step [10.00, 10.05) and fully from 10.05 s (sub-step resolution, DESIGN §3); the
    frequency sees it as that sub-step's mean and the store is charged for exactly the
    energy delivered (one-way efficiency, no sign change here)."""
    from gridswarm_env.dispatch import execute
    from gridswarm_env.fleet import build_fleet
    from gridswarm_env.kernel import Kernel, Limits

    fleet = build_fleet(9, FleetConfig(), 0.5, np.random.default_rng(0))
    kernel = Kernel(Limits(), [f"a{i}" for i in range(9)], fleet, 21, 1.0)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    reserve = np.zeros(9)
    reserve[bat] = 0.5 * fleet.rated_power_mw[bat]      # free headroom: no clamping
    activation = np.full(9, np.inf)
    activation[bat] = 10.02
    ex = execute(fleet, kernel, baseline_mw=np.zeros(9), contract_mw=np.zeros(9),
                 reserve_mw=reserve, activation_s=activation, t0_s=10.0, dt_s=1.0,
                 n_substeps=20, physics_dt_s=0.05)
    total = reserve.sum()
    np.testing.assert_allclose(ex.p_total_sub_mw[0], 0.6 * total, rtol=1e-12)
    np.testing.assert_allclose(ex.p_total_sub_mw[1:], total, rtol=1e-12)
    active_s = 1.0 - 0.02                                   # 0.98 s of the step
    np.testing.assert_allclose(ex.p_mean_mw[bat], reserve[bat] * active_s, rtol=1e-12)
    np.testing.assert_allclose(ex.reserve_share[bat], active_s, rtol=1e-12)
    eta_d = fleet.eta_discharge[bat]
    np.testing.assert_allclose(ex.energy_delta_mwh[bat],
                               -reserve[bat] * active_s / 3600.0 / eta_d, rtol=1e-12)
    assert not ex.clamped.any()


N = 9
T0_S, ACT_S = 10.0, 10.02          # activation 20 ms into the first 50 ms sub-step
SUB_S, A = 0.05, 0.6               # a = (10.05 − 10.02) / 0.05


def _setup():
    fleet = build_fleet(N, FleetConfig(), 0.5, np.random.default_rng(0))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh     # mid SoC: power-bound only
    kernel = Kernel(Limits(), [f"a{i}" for i in range(N)], fleet, 21, 1.0)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    return fleet, kernel, bat


def _run(fleet, kernel, contract, reserve, bat):
    activation = np.full(N, np.inf)
    activation[bat] = ACT_S
    return execute(fleet, kernel, baseline_mw=np.zeros(N), contract_mw=contract,
                   reserve_mw=reserve, activation_s=activation, t0_s=T0_S, dt_s=1.0,
                   n_substeps=20, physics_dt_s=SUB_S)


def test_sign_change_inside_the_activation_sub_step_books_each_side_at_its_efficiency():
    fleet, kernel, bat = _setup()
    rated = fleet.rated_power_mw[bat]
    contract, reserve = np.zeros(N), np.zeros(N)
    contract[bat] = -0.4 * rated        # charging under an energy contract ...
    reserve[bat] = 0.8 * rated          # ... when its reserve activates: net −0.4 → +0.4
    ex = _run(fleet, kernel, contract, reserve, bat)
    assert not ex.clamped.any()
    eta_c, eta_d = fleet.eta_charge[bat], fleet.eta_discharge[bat]
    before_h, after_h = (1 - A) * SUB_S / 3600, (1.0 - (1 - A) * SUB_S) / 3600
    want = 0.4 * rated * (eta_c * before_h - after_h / eta_d)
    np.testing.assert_allclose(ex.energy_delta_mwh[bat], want, rtol=1e-12)
    # the grid sees the sub-step's mean, the stores were charged for the same energy
    np.testing.assert_allclose(ex.p_total_sub_mw[0], (0.4 * A - 0.4 * (1 - A)) * rated.sum(),
                               rtol=1e-12)
    np.testing.assert_allclose(ex.p_mean_mw[bat], 0.4 * rated * (1 - 2 * (1 - A) * SUB_S),
                               rtol=1e-12)


def test_reserve_beyond_the_bound_delivers_the_clipped_level_only_after_activation():
    fleet, kernel, bat = _setup()
    rated = fleet.rated_power_mw[bat]   # discharge cap: rated power
    contract, reserve = np.zeros(N), np.zeros(N)
    reserve[bat] = 1.5 * rated          # more than the inverter can give
    ex = _run(fleet, kernel, contract, reserve, bat)
    np.testing.assert_allclose(ex.p_total_sub_mw[0], A * rated.sum(), rtol=1e-12)
    np.testing.assert_allclose(ex.p_total_sub_mw[1:], rated.sum(), rtol=1e-12)
    delivered_s = A * SUB_S + 0.95                          # full rating from 10.02 s
    np.testing.assert_allclose(ex.p_mean_mw[bat], rated * delivered_s, rtol=1e-12)
    np.testing.assert_allclose(ex.energy_delta_mwh[bat],
                               -rated * delivered_s / 3600 / fleet.eta_discharge[bat],
                               rtol=1e-12)
    assert ex.clamped[bat].all()
    # the contracted (planned) power is unchanged: 1.5·rated from the activation
    np.testing.assert_allclose(ex.planned_mean_mw[bat], 1.5 * rated * (1.0 - 0.02),
                               rtol=1e-12)


def test_random_activations_match_a_fine_time_integration():
    """Batteries at mid SoC (bounds ±rated power), random contracts and reserves, each
    activating at a whole millisecond: the sub-step powers and the store changes equal a
    0.5 ms integration of ``net(t) = clip(c + R·1[t >= activation], −P, P)``."""
    fleet, kernel, bat = _setup()
    rng = np.random.default_rng(7)
    rated = fleet.rated_power_mw
    eta_c, eta_d = fleet.eta_charge, fleet.eta_discharge
    fine_s = 0.0005
    t_mid = T0_S + (np.arange(2000) + 0.5) * fine_s
    for _ in range(20):
        contract, reserve = np.zeros(N), np.zeros(N)
        contract[bat] = rng.uniform(-1.0, 1.0, bat.size) * rated[bat]
        reserve[bat] = rng.uniform(0.0, 1.5, bat.size) * rated[bat]
        activation = np.full(N, np.inf)
        activation[bat] = T0_S + rng.integers(1, 1000, bat.size) * 0.001
        ex = execute(fleet, kernel, baseline_mw=np.zeros(N), contract_mw=contract,
                     reserve_mw=reserve, activation_s=activation, t0_s=T0_S, dt_s=1.0,
                     n_substeps=20, physics_dt_s=SUB_S)
        on = t_mid[None, :] >= activation[bat, None]
        net = np.clip(contract[bat, None] + reserve[bat, None] * on,
                      -rated[bat, None], rated[bat, None])
        sub_mean = net.reshape(bat.size, 20, 100).mean(axis=2)
        np.testing.assert_allclose(ex.p_total_sub_mw, sub_mean.sum(axis=0), rtol=1e-9,
                                   atol=1e-12)
        stored = (eta_c[bat, None] * np.maximum(-net, 0.0)
                  - np.maximum(net, 0.0) / eta_d[bat, None]) * fine_s / 3600
        np.testing.assert_allclose(ex.energy_delta_mwh[bat], stored.sum(axis=1), rtol=1e-9,
                                   atol=1e-15)


# --- boundaries a mutation audit found unpinned
def _dispatch_setup():
    fleet = build_fleet(9, FleetConfig(), 0.5, np.random.default_rng(0))
    kernel = Kernel(Limits(), [f"a{i}" for i in range(9)], fleet, 21, 1.0)
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    return fleet, kernel, bat


def _execute(fleet, kernel, reserve_mw, activation_s, contract_mw=None):
    n = fleet.n_agents
    return execute(fleet, kernel, baseline_mw=np.zeros(n),
                   contract_mw=np.zeros(n) if contract_mw is None else contract_mw,
                   reserve_mw=reserve_mw, activation_s=activation_s, t0_s=10.0, dt_s=1.0,
                   n_substeps=20, physics_dt_s=0.05)


def test_reserve_activated_exactly_at_the_step_start_acts_for_the_whole_step() -> None:
    """``a_j(s) = 1`` for every sub-step when the activation time equals the step start
    ``t0`` (the window is ``[t0, t1)``): a battery's 0.5·rated reserve is executed in full
    and its store pays ``R·h/η_d`` (it was dropped for the whole step)."""
    fleet, kernel, bat = _dispatch_setup()
    reserve = np.zeros(9)
    reserve[bat] = 0.5 * fleet.rated_power_mw[bat]
    activation = np.full(9, np.inf)
    activation[bat] = 10.0
    ex = _execute(fleet, kernel, reserve, activation)
    np.testing.assert_array_equal(ex.p_mean_mw[bat], reserve[bat])
    np.testing.assert_array_equal(ex.reserve_share[bat], 1.0)
    np.testing.assert_allclose(ex.p_total_sub_mw, reserve.sum(), rtol=1e-12)
    np.testing.assert_allclose(ex.energy_delta_mwh[bat],
                               -reserve[bat] / 3600.0 / fleet.eta_discharge[bat], rtol=1e-12)
    assert not ex.clamped.any()


@pytest.mark.parametrize("activation_s", [10.0, 10.02], ids=["whole_step", "inside_a_substep"])
def test_a_clamp_of_a_tenth_of_a_kilowatt_is_reported(activation_s: float) -> None:
    """``clamped`` flags every agent whose planned power the physical guard changed (by
    more than 1e-9 MW, rounding): a reserve 0.1 kW above a battery's rating is executed at
    the rating and flagged (a 1e-3 MW tolerance let it pass unreported), on both the
    whole-step and the sub-step paths."""
    fleet, kernel, bat = _dispatch_setup()
    rated = fleet.rated_power_mw[bat]
    reserve = np.zeros(9)
    reserve[bat[0]] = rated[0] + 1e-4
    reserve[bat[1]] = 0.5 * rated[1]
    activation = np.full(9, np.inf)
    activation[bat[:2]] = activation_s
    ex = _execute(fleet, kernel, reserve, activation)
    lo, hi = kernel.execution_bounds(fleet, 1.0 / 3600.0)
    assert hi[bat[0]] == pytest.approx(rated[0], rel=1e-12)    # energy is ample for 1 s
    assert ex.net_max_mw[bat[0]] == pytest.approx(rated[0], rel=1e-12)
    assert ex.clamped[bat[0]] and not ex.clamped[bat[1]]
    assert ex.clamped.sum() == 1


def _guard_setup(limits: dict):
    """The nine-agent fleet at mid SoC with PV at its full rating, under ``limits``."""
    fleet = build_fleet(N, FleetConfig(), 0.5, np.random.default_rng(0))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh
    solar = np.flatnonzero(fleet.kind == KIND_SOLAR)
    fleet.solar_available_mw[solar] = fleet.solar_rated_mw[solar]
    kernel = Kernel(Limits.from_dict(limits), [f"a{i}" for i in range(N)], fleet, 21, 1.0)
    return fleet, kernel, solar


def _execute_at_rest(fleet, kernel, contract, baseline=None, p_prev=None):
    return execute(fleet, kernel, baseline_mw=np.zeros(N) if baseline is None else baseline,
                   contract_mw=contract, reserve_mw=np.zeros(N),
                   activation_s=np.full(N, np.inf), t0_s=T0_S, dt_s=1.0, n_substeps=20,
                   physics_dt_s=SUB_S, p_prev_mw=p_prev)


def test_solar_follows_its_actual_pv_made_feasible_at_zero_balancing_power() -> None:
    """``b_j`` is the actual available PV for solar (not the baseline passed in, e.g. a
    forecast), clipped to the physical bounds: PV at its full rating under a lower export
    cap follows the cap at p = 0, so nothing counts as curtailment or as a
    clamp (mutation audit: without the clip p was −(available − cap) and clamped; with
    the passed baseline the followed schedule was the forecast). Only the reference
    formulas of test_perf_equivalence caught either."""
    cap = 10.0                  # MW, below every PV rating of this fleet (25-54 MW)
    fleet, kernel, solar = _guard_setup({"solar": {"max_discharge_mw": cap}})
    assert (fleet.solar_available_mw[solar] > cap).all()
    forecast = np.zeros(N)
    forecast[solar] = 0.1 * cap
    ex = _execute_at_rest(fleet, kernel, np.zeros(N), baseline=forecast)
    np.testing.assert_array_equal(ex.baseline_mw[solar], cap)
    np.testing.assert_array_equal(ex.p_mean_mw, 0.0)
    assert not ex.clamped.any()
    np.testing.assert_array_equal(ex.net_max_mw[solar], cap)


def test_the_dispatcher_holds_the_ramp_limit_but_always_lets_a_der_stop() -> None:
    """Under a ramp limit the power ramps sub-step by sub-step inside
    ``[min(x(s−1), 0) − r, max(x(s−1), 0) + r]`` (r = ramp·physics_dt): a battery at rest
    asked for 3 × one step's ramp rises r per sub-step, reaching one step's ramp at the
    step's end, mean ramp·dt·(n + 1)/(2n); the lag is not a clamp and not a shortfall
    (planned_mean_mw is what it could follow). One at 3 × one step's ramp asked to stop
    executes 0 at once (not clamped). (Before: the step-level clip gave one step's ramp
    from the first sub-step, and counted it as clamped.)"""
    fleet, kernel, _ = _guard_setup({"battery": {"ramp_mw_per_s": 0.05}})
    bat = np.flatnonzero(fleet.kind == KIND_BATTERY)
    step = 0.05 * 1.0
    n_sub = 20
    assert 3 * step < fleet.rated_power_mw[bat].min()          # the rating does not bind
    contract = np.zeros(N)
    contract[bat] = 3 * step
    ex = _execute_at_rest(fleet, kernel, contract, p_prev=np.zeros(N))
    np.testing.assert_allclose(ex.p_path_mw[bat, -1], step, rtol=1e-12)
    np.testing.assert_allclose(ex.p_path_mw[bat, 0], step / n_sub, rtol=1e-12)
    np.testing.assert_allclose(ex.p_mean_mw[bat], step * (n_sub + 1) / (2 * n_sub),
                               rtol=1e-12)
    np.testing.assert_allclose(ex.planned_mean_mw[bat], ex.p_mean_mw[bat], rtol=1e-12)
    assert not ex.clamped.any()
    # the contract is paid for what could be followed: 3·step less the lag
    np.testing.assert_allclose(ex.contract_followable_mw[bat], ex.p_mean_mw[bat], rtol=1e-12)
    ex = _execute_at_rest(fleet, kernel, np.zeros(N), p_prev=contract)
    np.testing.assert_array_equal(ex.p_mean_mw[bat], 0.0)
    assert not ex.clamped.any()


@pytest.mark.parametrize("ramp_mw_per_s", [None, 1e6, 1.0, 0.1])
def test_a_der_held_at_its_physical_bound_under_a_ramp_keeps_its_whole_shortfall(
        ramp_mw_per_s) -> None:
    """A battery already delivering its +2 MW contract (``p_prev`` = 2 MW) whose store can
    sustain only 0.5 MW over the step falls 1.5 MW short with or without a ramp limit: the
    plan ``q`` ramps on its own, so the clip's shortfall ``q − x`` is the whole 1.5 MW and
    nothing of it is excused as ramp lag. (Before: the ramp started each sub-step from the
    clipped power, so ``q`` sat one sub-step's ramp above the bound and the rest counted as
    lag: 0.123 MW short at 1 MW/s, 0.080 MW at 0.1 MW/s.)"""
    limits = {} if ramp_mw_per_s is None else {"battery": {"ramp_mw_per_s": ramp_mw_per_s}}
    fleet, kernel, _ = _guard_setup(limits)
    j = int(np.flatnonzero(fleet.kind == KIND_BATTERY)[0])
    floor = kernel.arrays.soc_min[j] * fleet.energy_capacity_mwh[j]
    fleet.energy_mwh[j] = floor + 0.5 / 3600.0 / fleet.eta_discharge[j]   # 0.5 MW for 1 s
    contract = np.zeros(N)
    contract[j] = 2.0
    ex = _execute_at_rest(fleet, kernel, contract, p_prev=contract.copy())
    np.testing.assert_allclose(ex.p_mean_mw[j], 0.5, rtol=1e-9)
    np.testing.assert_allclose(ex.planned_mean_mw[j], 2.0, rtol=1e-12)
    assert ex.clamped[j]
    followable = contract if ex.contract_followable_mw is None else ex.contract_followable_mw
    np.testing.assert_allclose(followable[j], 2.0, rtol=1e-12)


@pytest.mark.parametrize("ramp_mw_per_s", [None, 1.0, 0.1])
def test_a_der_held_at_its_bound_for_several_steps_keeps_its_whole_shortfall_in_each(
        ramp_mw_per_s) -> None:
    """The same battery held at its bound for three steps, each step starting where the
    last ended (``p_start_mw``: its executed power, ``q_start_mw``: its plan's): 1.5 MW
    short of the 2 MW contract in every step, as without a ramp. (Before: the plan
    restarted each step from the clipped power, so from the second step most of the
    shortfall passed as ramp lag: 0.525 MW short at 1 MW/s, 0.053 MW at 0.1 MW/s.) When
    the bound then relaxes the power ramps back towards the plan at the DER's rate."""
    limits = {} if ramp_mw_per_s is None else {"battery": {"ramp_mw_per_s": ramp_mw_per_s}}
    fleet, kernel, _ = _guard_setup(limits)
    j = int(np.flatnonzero(fleet.kind == KIND_BATTERY)[0])
    floor = kernel.arrays.soc_min[j] * fleet.energy_capacity_mwh[j]
    contract = np.zeros(N)
    contract[j] = 2.0
    x_end = q_end = contract.copy()
    for _ in range(3):
        fleet.energy_mwh[j] = floor + 0.5 / 3600.0 / fleet.eta_discharge[j]   # 0.5 MW for 1 s
        ex = execute(fleet, kernel, baseline_mw=np.zeros(N), contract_mw=contract,
                     reserve_mw=np.zeros(N), activation_s=np.full(N, np.inf), t0_s=T0_S,
                     dt_s=1.0, n_substeps=20, physics_dt_s=SUB_S, p_prev_mw=x_end,
                     p_start_mw=x_end, q_start_mw=q_end)
        np.testing.assert_allclose(ex.planned_mean_mw[j] - ex.p_mean_mw[j], 1.5, rtol=1e-9)
        if ex.p_path_mw is not None:
            x_end, q_end = ex.p_path_mw[:, -1].copy(), ex.plan_end_mw
    if ramp_mw_per_s is not None:   # the store refilled: back up at the ramp, from 0.5 MW
        fleet.energy_mwh[j] = 0.5 * fleet.energy_capacity_mwh[j]
        ex = execute(fleet, kernel, baseline_mw=np.zeros(N), contract_mw=contract,
                     reserve_mw=np.zeros(N), activation_s=np.full(N, np.inf), t0_s=T0_S,
                     dt_s=1.0, n_substeps=20, physics_dt_s=SUB_S, p_prev_mw=x_end,
                     p_start_mw=x_end, q_start_mw=q_end)
        step = ramp_mw_per_s * SUB_S
        np.testing.assert_allclose(ex.p_path_mw[j, 0], min(0.5 + step, 2.0), rtol=1e-9)
        assert np.all(np.diff(ex.p_path_mw[j]) <= step + 1e-12)


@pytest.mark.parametrize("ramp_mw_per_s", [1.0, 0.1])
def test_the_climb_back_after_a_bound_relaxes_is_ramp_lag_not_a_shortfall(
        ramp_mw_per_s) -> None:
    """A battery held at its floor (0.5 MW of a 2 MW contract) whose store is then
    refilled climbs back to 2 MW at its ramp: that climb is ramp lag, as the ramp from
    rest is (not penalised, not a clamp, off the contract's pay), where the step held at
    the bound is a shortfall. (Session review: with the plan carried over, the climb was
    settled as 0.975 MW (1 MW/s) / 1.448 MW (0.1 MW/s) undelivered and flagged clamped.)"""
    fleet, kernel, _ = _guard_setup({"battery": {"ramp_mw_per_s": ramp_mw_per_s}})
    j = int(np.flatnonzero(fleet.kind == KIND_BATTERY)[0])
    floor = kernel.arrays.soc_min[j] * fleet.energy_capacity_mwh[j]
    contract = np.zeros(N)
    contract[j] = 2.0

    def step(x_end, q_end):
        return execute(fleet, kernel, baseline_mw=np.zeros(N), contract_mw=contract,
                       reserve_mw=np.zeros(N), activation_s=np.full(N, np.inf), t0_s=T0_S,
                       dt_s=1.0, n_substeps=20, physics_dt_s=SUB_S, p_prev_mw=x_end,
                       p_start_mw=x_end, q_start_mw=q_end)

    fleet.energy_mwh[j] = floor + 0.5 / 3600.0 / fleet.eta_discharge[j]   # 0.5 MW for 1 s
    held = step(contract.copy(), contract.copy())
    assert held.clamped[j]
    np.testing.assert_allclose(held.planned_mean_mw[j] - held.p_mean_mw[j], 1.5, rtol=1e-9)
    fleet.energy_mwh[j] = 0.5 * fleet.energy_capacity_mwh[j]
    climb = step(held.p_path_mw[:, -1].copy(), held.plan_end_mw)
    assert not climb.clamped[j]
    assert climb.p_mean_mw[j] < 2.0 - 1e-6                            # still climbing
    np.testing.assert_allclose(climb.planned_mean_mw[j], climb.p_mean_mw[j], rtol=1e-12)
    np.testing.assert_allclose(climb.contract_followable_mw[j], climb.p_mean_mw[j],
                               rtol=1e-12)
