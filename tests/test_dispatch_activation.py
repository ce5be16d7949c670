"""dispatch.execute's activation sub-steps at scale and with several activations per
agent (see tests/test_dispatch.py for the two-level closed forms)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from gridswarm_env.config import FleetConfig
from gridswarm_env.dispatch import execute
from gridswarm_env.fleet import KIND_BATTERY, build_fleet
from gridswarm_env.kernel import Kernel, Limits

T0_S, SUB_S = 10.0, 0.05


def _fleet(n: int):
    fleet = build_fleet(n, FleetConfig(), 0.5, np.random.default_rng(0))
    fleet.energy_mwh[:] = 0.5 * fleet.energy_capacity_mwh     # mid SoC: power-bound only
    kernel = Kernel(Limits(), [f"a{i}" for i in range(n)], fleet, 21, 1.0)
    return fleet, kernel, np.flatnonzero(fleet.kind == KIND_BATTERY)


#: mid-points of a 0.5 ms integration of the 1 s step from T0_S
FINE_MID_S = T0_S + (np.arange(2000) + 0.5) * 0.0005


def _assert_fine_integration(ex, fleet, agents: np.ndarray, net: np.ndarray) -> None:
    """``ex``'s sub-step powers (fleet total: only ``agents`` act) and the ``agents``'
    store changes equal a 0.5 ms integration of their net power ``net`` (``(agents,
    2000)``, at :data:`FINE_MID_S`)."""
    np.testing.assert_allclose(ex.p_total_sub_mw,
                               net.reshape(agents.size, 20, 100).mean(axis=2).sum(axis=0),
                               rtol=1e-9, atol=1e-12)
    eta_c, eta_d = fleet.eta_charge[agents, None], fleet.eta_discharge[agents, None]
    stored = (eta_c * np.maximum(-net, 0.0) - np.maximum(net, 0.0) / eta_d) * 0.0005 / 3600
    np.testing.assert_allclose(ex.energy_delta_mwh[agents], stored.sum(axis=1), rtol=1e-9,
                               atol=1e-15)


def test_memory_of_a_fleet_wide_sign_change_is_linear_in_the_fleet():
    """Review: every charging battery whose reserve activates changes sign inside the
    activation sub-step; the correction built an (entries x agents) array per level, so
    4 000 agents (1 600 batteries) peaked at 159 MB and 10 000 would need ~1 GB for one
    step. Now an (activations per agent x agents) array: a few MB."""
    n = 4000
    fleet, kernel, bat = _fleet(n)
    rated = fleet.rated_power_mw[bat]
    contract, reserve = np.zeros(n), np.zeros(n)
    contract[bat] = -0.4 * rated        # charging ...
    reserve[bat] = 0.8 * rated          # ... until the reserve activates: −0.4 → +0.4
    activation = np.full(n, np.inf)
    activation[bat] = T0_S + 0.02
    kwargs = dict(baseline_mw=np.zeros(n), contract_mw=contract, reserve_mw=reserve,
                  activation_s=activation, t0_s=T0_S, dt_s=1.0, n_substeps=20,
                  physics_dt_s=SUB_S)
    tracemalloc.start()
    try:
        ex = execute(fleet, kernel, **kwargs)
        peak_b = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sub_array_b = n * 20 * 8            # one (agents x sub-steps) float64 array: 640 kB
    assert peak_b < 40 * sub_array_b, f"peak {peak_b / 1e6:.1f} MB"
    eta_c, eta_d = fleet.eta_charge[bat], fleet.eta_discharge[bat]
    before_h, after_h = 0.4 * SUB_S / 3600, (1.0 - 0.4 * SUB_S) / 3600
    np.testing.assert_allclose(ex.energy_delta_mwh[bat],
                               0.4 * rated * (eta_c * before_h - after_h / eta_d), rtol=1e-12)


def test_two_activations_of_one_agent_in_different_sub_steps_match_a_fine_integration():
    """A holder whose second contract reaches it later in the step (``late_reserve``)
    has two activation sub-steps, both booked at two levels: charging, then less, then
    discharging, and a reserve past the inverter's rating, equal a 0.5 ms integration
    of ``net(t) = clip(c + R1·1[t >= t1] + R2·1[t >= t2], −P, P)``."""
    n = 9
    fleet, kernel, bat = _fleet(n)
    rated = fleet.rated_power_mw
    t_mid = FINE_MID_S
    rng = np.random.default_rng(3)
    for _ in range(10):
        contract, first, late = np.zeros(n), np.zeros(n), np.zeros(n)
        contract[bat] = rng.uniform(-1.0, 0.0, bat.size) * rated[bat]
        first[bat] = rng.uniform(0.1, 0.8, bat.size) * rated[bat]
        late[bat] = rng.uniform(0.1, 1.2, bat.size) * rated[bat]
        t1 = np.full(n, np.inf)
        t1[bat] = T0_S + rng.integers(1, 400, bat.size) * 0.001
        t2 = t1 + rng.integers(60, 500, n) * 0.001     # a later sub-step
        ex = execute(fleet, kernel, baseline_mw=np.zeros(n), contract_mw=contract,
                     reserve_mw=first + late, activation_s=t1, t0_s=T0_S, dt_s=1.0,
                     n_substeps=20, physics_dt_s=SUB_S,
                     late_reserve=(bat, late[bat], t2[bat]))
        on1 = t_mid[None, :] >= t1[bat, None]
        on2 = t_mid[None, :] >= t2[bat, None]
        net = np.clip(contract[bat, None] + first[bat, None] * on1 + late[bat, None] * on2,
                      -rated[bat, None], rated[bat, None])
        _assert_fine_integration(ex, fleet, bat, net)


def test_contracts_joined_inside_the_step_match_a_fine_integration():
    """Energy contracts that reach their holders after their window began (``joined``)
    act from their delivery to the step's end, with the on-time contracts and a reserve
    activating in another sub-step: the sub-step powers, the store changes and the step's
    mean contracted power equal a 0.5 ms integration of ``net(t) = clip(c + C·1[t >= t_a]
    + R·1[t >= t_r], −P, P)``; nothing of ``C`` reaches the grid before ``t_a``."""
    n = 9
    fleet, kernel, bat = _fleet(n)
    rated = fleet.rated_power_mw
    rng = np.random.default_rng(5)
    for _ in range(10):
        contract, joined, reserve = np.zeros(n), np.zeros(n), np.zeros(n)
        contract[bat] = rng.uniform(-0.6, 0.6, bat.size) * rated[bat]
        joined[bat] = rng.uniform(-1.2, 1.2, bat.size) * rated[bat]
        reserve[bat] = rng.uniform(0.0, 0.8, bat.size) * rated[bat]
        t_a = np.full(n, np.inf)
        t_a[bat] = T0_S + rng.integers(1, 1000, bat.size) * 0.001
        t_r = np.full(n, np.inf)   # in a sub-step of its own, 100 ms after the contract
        t_r[bat] = t_a[bat] + 0.1 - 1.0 * (t_a[bat] > T0_S + 0.85)
        ex = execute(fleet, kernel, baseline_mw=np.zeros(n), contract_mw=contract,
                     reserve_mw=reserve, activation_s=t_r, t0_s=T0_S, dt_s=1.0,
                     n_substeps=20, physics_dt_s=SUB_S,
                     joined=(bat, joined[bat], t_a[bat]))
        on_a = FINE_MID_S[None, :] >= t_a[bat, None]
        on_r = FINE_MID_S[None, :] >= t_r[bat, None]
        net = np.clip(contract[bat, None] + joined[bat, None] * on_a
                      + reserve[bat, None] * on_r, -rated[bat, None], rated[bat, None])
        _assert_fine_integration(ex, fleet, bat, net)
        np.testing.assert_allclose(ex.contract_mean_mw[bat],
                                   contract[bat] + joined[bat] * (T0_S + 1.0 - t_a[bat]),
                                   rtol=1e-12, atol=1e-12)


def test_a_joined_contract_and_a_reserve_of_the_other_sign_in_one_sub_step_stay_consistent():
    """A contract joined and a reserve of the other sign activating inside the same
    sub-step, with a sign change of the net injection: no single switching time gives
    their unclipped mean, so the sub-step's power is the two levels' mean at the nearest
    one; the booked energy is that of those levels, and the run-time check
    (kernel.energy_mismatch) finds nothing amiss."""
    from gridswarm_env.kernel import energy_mismatch

    n = 9
    fleet, kernel, bat = _fleet(n)
    rated = fleet.rated_power_mw
    contract, joined, reserve = np.zeros(n), np.zeros(n), np.zeros(n)
    contract[bat] = -0.3 * rated[bat]   # charging; the contract arriving at 10.012 s
    joined[bat] = -0.5 * rated[bat]     # charges more, the reserve from 10.040 s
    reserve[bat] = 1.2 * rated[bat]     # discharges: -0.3 -> -0.8 -> +0.4 in [10.00, 10.05)
    t_r = np.full(n, np.inf)
    t_r[bat] = T0_S + 0.04
    ex = execute(fleet, kernel, baseline_mw=np.zeros(n), contract_mw=contract,
                 reserve_mw=reserve, activation_s=t_r, t0_s=T0_S, dt_s=1.0, n_substeps=20,
                 physics_dt_s=SUB_S, joined=(bat, joined[bat], np.full(bat.size, T0_S + 0.012)))
    assert ex.split_levels is not None
    before = fleet.energy_mwh.copy()
    flags = energy_mismatch(ex.baseline_mw, ex.p_mean_mw, before,
                            before + ex.energy_delta_mwh, fleet.eta_charge,
                            np.where(fleet.eta_discharge > 0, fleet.eta_discharge, 1.0),
                            1.0 / 3600, fleet.kind == KIND_BATTERY, p_sub_mw=ex.p_sub_mw,
                            split_levels=ex.split_levels, substep_h=SUB_S / 3600)
    assert not flags.any()
    # the sub-step holds the two levels' mean; from the next one on, all three act
    agents, subs, p0, p1, after = ex.split_levels
    np.testing.assert_allclose(ex.p_sub_mw[agents, subs], p0 + after * (p1 - p0))
    np.testing.assert_allclose(ex.p_sub_mw[bat, 1:],
                               np.repeat(0.4 * rated[bat, None], 19, axis=1), rtol=1e-12)
