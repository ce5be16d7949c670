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
    eta_c, eta_d = fleet.eta_charge, fleet.eta_discharge
    t_mid = T0_S + (np.arange(2000) + 0.5) * 0.0005
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
        np.testing.assert_allclose(ex.p_total_sub_mw,
                                   net.reshape(bat.size, 20, 100).mean(axis=2).sum(axis=0),
                                   rtol=1e-9, atol=1e-12)
        stored = (eta_c[bat, None] * np.maximum(-net, 0.0)
                  - np.maximum(net, 0.0) / eta_d[bat, None]) * 0.0005 / 3600
        np.testing.assert_allclose(ex.energy_delta_mwh[bat], stored.sum(axis=1), rtol=1e-9,
                                   atol=1e-15)
