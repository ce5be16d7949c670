"""Fleet, grid and dispatch behaviours the rest of the suite let change unnoticed
(hand-made mutation audit).

Each test pins a rule of the module docstrings with hand-computed numbers: EV
departures, the solar AR(1) model and its PV-rating clip (:mod:`gridswarm_env.fleet`),
the event-study horizon of :func:`~gridswarm_env.grid.step_response` (the swing
equation's closed forms, initial RoCoF and steady state, are pinned in
``test_grid.py``, which killed every mutant of them) and the executor's activation
share and clamp reporting (:mod:`gridswarm_env.dispatch`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridswarm_env.config import FleetConfig
from gridswarm_env.dispatch import execute
from gridswarm_env.fleet import (
    KIND_BATTERY,
    KIND_EV,
    KIND_SOLAR,
    build_fleet,
    depart_evs,
    update_solar,
)
from gridswarm_env.grid import GridParams, step_response
from gridswarm_env.kernel import Kernel, Limits


# --------------------------------------------------------------------------- fleet
def test_an_ev_leaving_fuller_than_its_departure_soc_has_no_unmet_energy() -> None:
    """Unmet energy is ``max(departure_soc·E_cap − E, 0)``: an EV leaving at 95 % with an
    80 % target is short of nothing (not −15 % of its pack, which would cancel another
    EV's shortfall in the episode's unmet-energy total)."""
    cfg = FleetConfig()
    fleet = build_fleet(10, cfg, 0.5, np.random.default_rng(1))
    ev = np.flatnonzero(fleet.kind == KIND_EV)
    fleet.departure_s[ev] = [100.0, 100.0, 900.0]
    cap = fleet.energy_capacity_mwh[ev]
    fleet.energy_mwh[ev[0]] = 0.95 * cap[0]
    fleet.energy_mwh[ev[1]] = 0.70 * cap[1]
    unmet = depart_evs(fleet, 100.0)
    assert unmet[ev[0]] == 0.0
    assert unmet[ev[1]] == pytest.approx((cfg.ev_departure_soc - 0.70) * cap[1], rel=1e-12)
    assert unmet.sum() == pytest.approx((cfg.ev_departure_soc - 0.70) * cap[1], rel=1e-12)
    assert np.all(unmet >= 0.0)


def test_solar_variability_is_an_ar1_state_carried_from_step_to_step() -> None:
    """``x' = a·x + w`` with ``a = exp(−dt/60 s)``; ``available = rated·irradiance·(1 + x')``
    and ``forecast = rated·irradiance_next·(1 + x')·(1 + bias)``. With the shocks switched
    off (std 0) a state of 0.1 decays to ``a·0.1`` then ``a²·0.1`` over two 1 s steps."""
    cfg = FleetConfig(solar_variability_std=0.0)
    fleet = build_fleet(10, cfg, 0.5, np.random.default_rng(3))
    sol = fleet.kind == KIND_SOLAR
    rated = fleet.solar_rated_mw[sol]
    fleet.solar_noise[sol] = 0.1
    fleet.solar_bias[sol] = np.linspace(-0.1, 0.1, sol.sum())
    a = math.exp(-1.0 / 60.0)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        update_solar(fleet, 0.5, 0.4, cfg, 1.0, rng)
        x = 0.1 * a**k
        np.testing.assert_allclose(fleet.solar_noise[sol], x, rtol=1e-12)
        np.testing.assert_allclose(fleet.solar_available_mw[sol], rated * 0.5 * (1 + x),
                                   rtol=1e-12)
        np.testing.assert_allclose(fleet.solar_forecast_mw[sol],
                                   rated * 0.4 * (1 + x) * (1 + fleet.solar_bias[sol]),
                                   rtol=1e-12)
    assert np.all(fleet.solar_noise[~sol] == 0.0)


def test_solar_availability_and_forecasts_never_exceed_the_pv_rating() -> None:
    """``available`` and ``forecast`` are clipped to ``[0, rated]``, at reset and every
    step: full sun (irradiance 1) with a +10 % variability state and +30 % forecast biases
    gives exactly the rating, not 1.1 or 1.43 times it."""
    cfg = FleetConfig(solar_variability_std=0.0, solar_forecast_error_std=0.5)
    fleet = build_fleet(20, cfg, 1.0, np.random.default_rng(4))
    sol = fleet.kind == KIND_SOLAR
    rated = fleet.solar_rated_mw[sol]
    assert np.any(fleet.solar_bias[sol] > 0.0)       # some forecasts start above the sun
    assert np.all((fleet.solar_forecast_mw >= 0.0)
                  & (fleet.solar_forecast_mw <= fleet.solar_rated_mw))
    np.testing.assert_array_equal(
        fleet.solar_forecast_mw[sol], np.clip(rated * (1 + fleet.solar_bias[sol]), 0.0, rated))
    fleet.solar_noise[sol] = 0.1 / math.exp(-1.0 / 60.0)     # x' = 0.1 after one step
    fleet.solar_bias[sol] = 0.3
    update_solar(fleet, 1.0, 1.0, cfg, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(fleet.solar_available_mw[sol], rated)
    np.testing.assert_array_equal(fleet.solar_forecast_mw[sol], rated)


# --------------------------------------------------------------------------- grid
@pytest.mark.parametrize("duration_s, n_substeps", [(0.3, 6), (0.7, 14), (2.1, 42), (1.0, 20)])
def test_step_response_covers_a_horizon_that_is_a_whole_number_of_substeps(
        duration_s: float, n_substeps: int) -> None:
    """``duration_s`` rounded down to whole 50 ms sub-steps: 0.3 s is 6 sub-steps although
    ``0.3 / 0.05`` is 5.999999999999999 in floating point (a plain floor gave 5, and the
    trace stopped one sub-step short of the requested horizon)."""
    params = GridParams()
    assert params.physics_dt_s == 0.05
    t, f = step_response(params, -0.1, duration_s)
    assert t.shape == f.shape == (n_substeps + 1,)
    assert t[-1] == pytest.approx(duration_s, rel=1e-12)
    # the first sub-step's slope is the closed-form initial RoCoF to first order
    assert (f[1] - f[0]) / params.physics_dt_s == pytest.approx(
        params.initial_rocof_hz_per_s(-0.1), rel=0.05)


# --------------------------------------------------------------------------- dispatch
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
