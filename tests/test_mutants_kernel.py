"""Kernel behaviours the rest of the suite let change unnoticed (hand-made mutation audit).

Each test pins one rule of the :mod:`gridswarm_env.kernel` docstring with hand-computed
numbers on a three-agent fleet (one solar plant, one battery, one EV) and a one-hour
step (``h = 1``), so every bound is a closed form of the values written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR, FleetState
from gridswarm_env.kernel import (
    DerLimits,
    Kernel,
    LimitArrays,
    Limits,
    check_executed,
    ramp_interval,
)

NAMES = ["solar_000", "battery_000", "ev_000"]
DT_S = 3600.0          # h = 1: a bound in MW equals the energy room in MWh (× η)
ETA = 0.9


def _fleet(*, battery_mwh: float = 5.0, solar_available_mw: float = 1.0,
           ev_departure_s: float = math.inf) -> FleetState:
    """Solar 4 MW, battery 5 MW / 10 MWh (η 0.9 each way), EV 2 MW / 20 MWh at 50 %."""
    return FleetState(
        kind=np.array([KIND_SOLAR, KIND_BATTERY, KIND_EV], dtype=np.int8),
        rated_power_mw=np.array([4.0, 5.0, 2.0]),
        energy_capacity_mwh=np.array([0.0, 10.0, 20.0]),
        energy_mwh=np.array([0.0, battery_mwh, 10.0]),
        eta_charge=np.array([1.0, ETA, ETA]),
        eta_discharge=np.array([1.0, ETA, 1.0]),
        ev_baseline_rate_mw=np.array([0.0, 0.0, 1.0]),
        departure_s=np.array([math.inf, math.inf, ev_departure_s]),
        departure_soc=np.array([0.0, 0.0, 0.0]),
        plugged=np.array([True, True, True]),
        solar_rated_mw=np.array([4.0, 0.0, 0.0]),
        solar_bias=np.zeros(3),
        solar_noise=np.zeros(3),
        solar_available_mw=np.array([solar_available_mw, 0.0, 0.0]),
        solar_forecast_mw=np.array([solar_available_mw, 0.0, 0.0]),
    )


def _limits(**battery: float) -> Limits:
    return Limits(per_kind={"solar": DerLimits(max_discharge_mw=2.0),
                            "battery": DerLimits(soc_min=0.1, soc_max=0.9, **battery),
                            "ev": DerLimits(soc_min=0.0, soc_max=1.0, departure_soc=0.0)})


# --------------------------------------------------------------------------- feasible sets
def test_solar_export_is_capped_by_its_max_discharge_limit() -> None:
    """``solar: net ∈ [0, min(P, forecast)]``: 3 MW available under a 2 MW export cap
    gives [0, 2] (the cap was ignored: [0, 3], and the dispatcher executed 3 MW)."""
    fleet = _fleet(solar_available_mw=3.0)
    kernel = Kernel(_limits(), NAMES, fleet, 21, DT_S)
    lo, hi = kernel.execution_bounds(fleet, 1.0)
    assert (lo[0], hi[0]) == (0.0, 2.0)
    # below the cap the available output binds
    fleet = _fleet(solar_available_mw=1.5)
    lo, hi = kernel.execution_bounds(fleet, 1.0)
    assert (lo[0], hi[0]) == (0.0, 1.5)


def test_next_round_bounds_assume_the_worst_outcome_of_the_current_contract() -> None:
    """The next step's discharge bound comes from the *lower* of the two energies the
    current step may end with (its contract executed or not). A battery at 1.5 MWh
    (floor 0.1 × 10 = 1 MWh) with a 0.4 MW charge contract: if the contract fails the
    room down is 0.5 MWh, so p <= 0.5·η_d/h = 0.45 MW, not the (1.5 + 0.36 − 1)·0.9 =
    0.774 MW that holds only if the charge happens."""
    fleet = _fleet(battery_mwh=1.5)
    kernel = Kernel(_limits(), NAMES, fleet, 21, DT_S)
    committed = np.array([0.0, -0.4, 0.0])
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=committed,
                                 reserve_mw=np.zeros(3), reserve_round=False,
                                 reserve_duration_s=DT_S)
    assert hi[1] == pytest.approx(0.5 * ETA, rel=1e-12)
    # symmetric: a discharge contract that may fail leaves the room up of the fuller case
    fleet = _fleet(battery_mwh=8.5)        # ceiling 9 MWh: 0.5 MWh of room up
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=-committed,
                                 reserve_mw=np.zeros(3), reserve_round=False,
                                 reserve_duration_s=DT_S)
    assert lo[1] == pytest.approx(-0.5 / ETA, rel=1e-12)


# --------------------------------------------------------------------------- ramp limits
def test_ramp_interval_always_allows_returning_to_the_baseline() -> None:
    """``[min(p_prev, 0) − r, max(p_prev, 0) + r]`` (IEEE 1547 ramps limit moves *away*
    from the baseline): from 3 MW with r = 1 MW the DER may stop (down to −1 MW), not
    only come down to 2 MW; from −3 MW it may go up to +1 MW."""
    lo, hi = ramp_interval(np.array([3.0, -3.0, 0.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(lo, [-1.0, -4.0, -1.0])
    np.testing.assert_array_equal(hi, [4.0, 1.0, 1.0])


def test_a_ramp_limited_battery_may_stop_in_one_step() -> None:
    """Stopping is always feasible: a battery committed to 3 MW under a 1 MW/step ramp
    limit may bid any level down to −1 MW for the next step (0 MW included)."""
    fleet = _fleet(battery_mwh=5.0)
    kernel = Kernel(_limits(ramp_mw_per_s=1.0 / DT_S), NAMES, fleet, 21, DT_S)
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=np.array([0.0, 3.0, 0.0]),
                                 reserve_mw=np.zeros(3), reserve_round=False,
                                 reserve_duration_s=DT_S)
    assert lo[1] == pytest.approx(-1.0, rel=1e-12)
    mask = kernel.power_mask(lo, hi)
    assert mask[1, 10]          # level 10 of 21 is 0 MW


# --------------------------------------------------------------------------- independent checker
def _arrays(n: int, **over: np.ndarray) -> LimitArrays:
    base = dict(max_discharge_mw=np.full(n, 5.0), max_charge_mw=np.full(n, 5.0),
                soc_min=np.full(n, 0.1), soc_max=np.full(n, 0.9),
                ramp_mw_per_s=np.full(n, math.inf), departure_soc=np.zeros(n))
    base.update(over)
    return LimitArrays(**base)


def test_checker_flags_a_battery_pushed_above_its_soc_ceiling() -> None:
    """``E' > s_max·E_cap + tol and E' > E + tol`` is a violation: 8.9 → 9.2 MWh under a
    9 MWh ceiling is flagged; 9.5 → 9.3 (above the ceiling, but moving back) is not."""
    kinds = np.array([KIND_BATTERY, KIND_BATTERY])
    net = np.array([-0.3, 0.2])
    report = check_executed(
        kinds=kinds, net_min_mw=net, net_max_mw=net, p_now_mw=net, p_prev_mw=np.zeros(2),
        energy_before_mwh=np.array([8.9, 9.5]), energy_after_mwh=np.array([9.2, 9.3]),
        capacity_mwh=np.array([10.0, 10.0]), solar_available_mw=np.zeros(2),
        plugged=np.ones(2, dtype=bool), arrays=_arrays(2), dt_s=1.0)
    np.testing.assert_array_equal(report.soc, [True, False])
    assert report.count == 1


def test_checker_flags_solar_above_its_available_output_under_a_loose_cap() -> None:
    """Solar: ``net_max > available + tol`` is a violation even when the export cap
    (5 MW) is far above: 1.5 MW executed with 1.0 MW available is flagged, 1.0 MW is not."""
    kinds = np.array([KIND_SOLAR, KIND_SOLAR])
    net = np.array([1.5, 1.0])
    report = check_executed(
        kinds=kinds, net_min_mw=net, net_max_mw=net, p_now_mw=np.zeros(2),
        p_prev_mw=np.zeros(2), energy_before_mwh=np.zeros(2), energy_after_mwh=np.zeros(2),
        capacity_mwh=np.zeros(2), solar_available_mw=np.array([1.0, 1.0]),
        plugged=np.ones(2, dtype=bool), arrays=_arrays(2), dt_s=1.0)
    np.testing.assert_array_equal(report.power, [True, False])


def test_a_declared_cap_above_the_rating_does_not_raise_the_rating() -> None:
    """``max_discharge_mw`` / ``max_charge_mw`` lower the rated power, never raise it: a
    100 MW cap on a 5 MW battery leaves it at 5 MW both ways (it allowed 100 MW)."""
    fleet = _fleet(battery_mwh=5.0)
    kernel = Kernel(_limits(max_discharge_mw=100.0, max_charge_mw=100.0), NAMES, fleet, 21,
                    1.0)
    assert kernel.arrays.max_discharge_mw[1] == 5.0
    assert kernel.arrays.max_charge_mw[1] == 5.0
    lo, hi = kernel.execution_bounds(fleet, 1.0 / 3600.0)   # one second: energy is ample
    assert (lo[1], hi[1]) == (-5.0, 5.0)


def test_an_unplugged_ev_can_execute_nothing() -> None:
    """"Unplugged moves nothing": the physical bounds of an EV that has left are [0, 0]
    (it kept its charge interval, −min(C, room) = −2 MW)."""
    fleet = _fleet()
    fleet.plugged[2] = False
    kernel = Kernel(_limits(), NAMES, fleet, 21, 1.0)
    lo, hi = kernel.execution_bounds(fleet, 1.0 / 3600.0)
    assert (lo[2], hi[2]) == (0.0, 0.0)
    assert lo[1] < 0.0 < hi[1]                    # the battery beside it still moves
