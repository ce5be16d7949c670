"""Scenario behaviours the rest of the suite let change unnoticed (hand-made mutation audit).

Each test pins an equation of the :mod:`gridswarm_env.scenarios` module docstring with
hand-computed numbers, for overrides of the shipped scenarios (whose defaults, e.g.
``gen_follow = 1``, hide some terms) and for the load-noise statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridswarm_env.scenarios import get_scenario


def test_scheduled_generation_follows_only_gen_follow_of_the_load_step() -> None:
    """``gen_sched = base + gen_follow·load_step·ramp(...)``: with ``gen_follow = 0.25``
    the 110 MW rise of ``price_spike`` leaves a 82.5 MW shortage once generation has
    ramped (t ≥ 260 s), and half-way up its ramp (t = 170 s) 110 − 0.25·55 MW."""
    scenario = get_scenario("price_spike", gen_follow=0.25)
    np.testing.assert_allclose(scenario.forecast_shortage_mw([50.0, 170.0, 260.0, 400.0]),
                               [55.0, 110.0 - 0.25 * 55.0, 82.5, 82.5], rtol=1e-12)


def test_net_load_ramps_to_exactly_the_load_step_and_stays() -> None:
    """``net_load = base_load + load_step·clip((t − start)/ramp, 0, 1)`` (noise-free): 850
    MW before 20 s, 905 MW half-way, 960 MW from 80 s on, never beyond."""
    scenario = get_scenario("price_spike")
    np.testing.assert_allclose(scenario.net_load_mw([0.0, 20.0, 50.0, 80.0, 140.0, 1e4]),
                               [850.0, 850.0, 905.0, 960.0, 960.0, 960.0], rtol=1e-12)
    surplus = get_scenario("solar_surplus")
    assert surplus.net_load_mw(500.0) == pytest.approx(850.0 - 70.0, rel=1e-12)


def test_load_noise_is_a_stationary_ar1_process() -> None:
    """ε is AR(1) with stationary std ``load_noise_std_mw`` and ``a = exp(−dt/τ)``: its
    first sample is drawn from the stationary law (std 1.5 MW, not the innovation std
    1.5·sqrt(1 − a²)), the series keeps that std and its lag-1 correlation is ``a``."""
    scenario = get_scenario("price_spike")       # std 1.5 MW, tau 20 s
    std, a = scenario.load_noise_std_mw, math.exp(-1.0 / scenario.load_noise_tau_s)
    assert std == 1.5
    rng = np.random.default_rng(2024)
    first = np.array([scenario.load_noise_mw(3, 1.0, rng)[0] for _ in range(4000)])
    assert first.std() == pytest.approx(std, rel=0.05)
    series = scenario.load_noise_mw(200_000, 1.0, np.random.default_rng(7))
    assert series.std() == pytest.approx(std, rel=0.05)
    assert np.corrcoef(series[:-1], series[1:])[0, 1] == pytest.approx(a, abs=0.01)


def test_the_derived_disturbance_time_is_the_first_disturbance() -> None:
    """``disturbance_time_s`` derived (None) is the *first* disturbance: a 50 MW load step
    at 20 s before a trip at 30 s gives 20 s; the trip alone gives 30 s; a step alone its
    start; neither 0 s."""
    both = get_scenario("emergency", load_step_mw=50.0, load_step_start_s=20.0,
                        event_time_s=30.0)
    assert both.disturbance_time_s == 20.0
    assert get_scenario("emergency", load_step_start_s=20.0, event_time_s=30.0
                        ).disturbance_time_s == 30.0     # no load step (0 MW)
    assert get_scenario("price_spike", load_step_start_s=35.0).disturbance_time_s == 35.0
    assert get_scenario("price_spike", load_step_mw=0.0).disturbance_time_s == 0.0


def test_a_zero_mw_contingency_is_no_event() -> None:
    """``has_event`` needs ``contingency_mw > 0`` *and* a finite ``event_time_s``: the
    emergency timeline with a 0 MW trip has no event, loses no generation and measures
    stabilization from t = 0 (not from the non-event at 10 s)."""
    quiet = get_scenario("emergency", contingency_mw=0.0)
    assert math.isfinite(quiet.event_time_s) and not quiet.has_event
    assert quiet.disturbance_time_s == 0.0
    np.testing.assert_array_equal(quiet.lost_generation_mw([5.0, 10.0, 50.0]), 0.0)


def test_irradiance_holds_its_end_value_beyond_the_episode() -> None:
    """Irradiance is linear over the episode and clipped to its end points: price_spike
    fades 0.15 → 0.08 over 300 s and stays 0.08 after (never extrapolated below)."""
    scenario = get_scenario("price_spike")
    np.testing.assert_allclose(scenario.irradiance(np.array([-10.0, 300.0, 600.0]), 300.0),
                               [0.15, 0.08, 0.08], rtol=1e-12)


@pytest.mark.parametrize("overrides, field", [
    ({"contingency_mw": 850.0}, "contingency_mw"),            # = base_load_mw
    ({"load_step_mw": -850.0}, "load_step_mw"),               # net load down to 0 MW
    ({"load_step_mw": -900.0}, "load_step_mw"),
    ({"price_floor_per_mwh": 500.0}, "price_cap_per_mwh"),    # cap = floor: no band
])
def test_boundary_values_are_refused_with_the_field_named(overrides: dict, field: str) -> None:
    """The limits are strict: a trip of the whole base load, a load fall of its whole size
    (or more) and a price band of width 0 are refused, naming the field."""
    with pytest.raises(ValueError, match=field):
        get_scenario("price_spike", **overrides)
