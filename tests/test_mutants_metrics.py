"""KPI definitions (DESIGN §8, the :mod:`gridswarm_env.metrics` docstring) pinned with
hand-computed values on a bare :class:`MetricsAccumulator` (hand-made mutation audit:
each test fails if one term, comparison or sign of a definition changes).

Frequency traces use 50 ms sub-steps; energy uses ``dt_s = 3600`` (``h = 1``), so MW
and MWh read alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env.config import CostConfig
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR
from gridswarm_env.metrics import MetricsAccumulator

PDT = 0.05


def _acc(*, disturbance_s: float = 0.0, event_s: float | None = None, dt_s: float = 1.0,
         costs: CostConfig | None = None) -> MetricsAccumulator:
    return MetricsAccumulator(costs or CostConfig(), dt_s=dt_s, physics_dt_s=PDT,
                              disturbance_time_s=disturbance_s, event_time_s=event_s)


def _step(acc: MetricsAccumulator, start: int, freq_hz: list[float]) -> None:
    """Samples ending at sub-steps start+1 … start+len (times in s)."""
    t = PDT * np.arange(start + 1, start + len(freq_hz) + 1)
    acc.record_frequency(t, np.array(freq_hz))


def _kpis(acc: MetricsAccumulator) -> dict:
    return acc.result(contracts={}, bus_totals={})


# --------------------------------------------------------------------------- frequency
def test_nadir_zenith_and_largest_deviation_are_the_trace_extremes() -> None:
    """nadir = min f, zenith = max f, max_abs_deviation = max(60 − nadir, zenith − 60),
    here set by the zenith (60.3 Hz: 0.3 Hz > 60 − 59.8 = 0.2 Hz)."""
    acc = _acc()
    _step(acc, 0, [60.0, 60.3, 59.9, 60.0])
    _step(acc, 4, [59.8, 60.1, 60.0, 60.0])
    m = _kpis(acc)
    assert m["frequency_nadir_hz"] == 59.8
    assert m["frequency_zenith_hz"] == 60.3
    assert m["max_abs_deviation_hz"] == pytest.approx(0.3, abs=1e-12)


def test_one_sample_outside_the_band_counts_even_when_the_other_extreme_is_inside() -> None:
    """seconds_outside_band = (samples with |f − 60| > 0.05) × physics_dt_s: a step whose
    lowest sample is at 60.0 and highest at 60.08 has one sample outside (0.05 s)."""
    acc = _acc(disturbance_s=0.0)
    _step(acc, 0, [60.0, 60.08, 60.01, 60.0])
    assert acc.seconds_outside_band == pytest.approx(PDT)
    # and the low side alone
    _step(acc, 4, [59.93, 60.0, 59.99, 60.0])
    assert acc.seconds_outside_band == pytest.approx(2 * PDT)


def test_stabilization_time_ends_at_the_first_sample_back_in_the_band_for_good() -> None:
    """Disturbance at t = 0; samples at 0.05 … 0.50 s outside the band, from 0.55 s inside
    for good: stabilized 0.55 s after the disturbance (the sub-step after the last one
    outside), not 0.50 s."""
    acc = _acc(disturbance_s=0.0)
    _step(acc, 0, [59.9] * 10)
    _step(acc, 10, [59.99] * 10)
    assert acc.stabilization_time_s() == pytest.approx(0.55, abs=1e-12)


def test_the_sample_at_the_disturbance_instant_is_not_after_the_disturbance() -> None:
    """The clock starts at the disturbance: a sample at t <= t_disturbance (the sub-step
    ending at it) is before it. Outside the band there and inside afterwards: 0.0 (it
    never left the band after the disturbance)."""
    acc = _acc(disturbance_s=4 * PDT)
    _step(acc, 0, [60.0, 60.0, 60.0, 59.9, 60.0, 60.0, 60.0, 60.0])   # t = 0.05 … 0.40
    assert acc.seconds_outside_band == pytest.approx(PDT)              # it was outside
    assert acc.stabilization_time_s() == 0.0


def test_no_stabilization_time_for_an_episode_that_ends_at_the_disturbance() -> None:
    """Nothing after the disturbance was observed: None (not 0.0, "never left the
    band"), as for an episode that ends before it."""
    acc = _acc(disturbance_s=4 * PDT)
    _step(acc, 0, [60.0] * 4)                     # t = 0.05 … 0.20 = t_disturbance
    assert acc.stabilization_time_s() is None
    _step(acc, 4, [60.0])                         # one sample after it, inside the band
    assert acc.stabilization_time_s() == 0.0


# --------------------------------------------------------------------------- energy and money
KINDS = np.array([KIND_SOLAR, KIND_BATTERY, KIND_BATTERY, KIND_EV, KIND_EV])


def test_system_cost_is_the_sum_of_its_six_terms() -> None:
    """One hour (h = 1): solar curtailed by 1 MW (its +0.5 MW elsewhere is not
    curtailment), batteries at +2 and −1 MW (throughput 3 MWh) whose stores lost
    2.5 − 0.9 = 1.6 MWh, EVs deferring 0.5 MW (the −0.3 MW of extra charging is no
    deferral), 0.2 MWh unmet at departure, a 4 MW shortage covered by
    −1 + 2 − 1 + 0.5 − 0.3 = 0.2 MW: 3.8 MWh unserved::

        40·3 + 27.5·1 + 60·0.5 + 30·1.6 + 300·0.2 + 9000·3.8
    """
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.array([-1.0, 2.0, -1.0, 0.5, -0.3]), 4.0, 0.0, 0.0, 0.2,
                        energy_delta_mwh=np.array([0.0, -2.5, 0.9, 0.3, 0.2]))
    m = _kpis(acc)
    assert m["battery_throughput_mwh"] == pytest.approx(3.0)
    assert m["battery_energy_drawn_mwh"] == pytest.approx(1.6)
    assert m["curtailed_energy_mwh"] == pytest.approx(1.0)
    assert m["ev_deferred_energy_mwh"] == pytest.approx(0.5)
    assert m["ev_unmet_energy_mwh"] == pytest.approx(0.2)
    assert m["unserved_energy_mwh"] == pytest.approx(3.8)
    want = 40 * 3 + 27.5 * 1 + 60 * 0.5 + 30 * 1.6 + 300 * 0.2 + 9000 * 3.8
    assert m["system_cost"] == pytest.approx(want, rel=1e-12)
    # a solar plant producing more than planned is not curtailment
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.array([0.5, 0.0, 0.0, 0.0, 0.0]), 0.5, 0.0, 0.0, 0.0)
    assert _kpis(acc)["curtailed_energy_mwh"] == 0.0


def test_unserved_energy_counts_only_the_uncovered_part_in_the_requirement_direction() -> None:
    """``Σ max(sign(R)·(R − D), 0)·h``: over-delivery is not unserved, and a surplus
    (R < 0) is unserved when the DERs absorb too little."""
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.array([0.0, 3.0, 0.0, 0.0, 0.0]), 2.0, 0.0, 0.0, 0.0)
    assert acc.unserved_mwh == 0.0                       # 3 MW delivered for 2 MW asked
    acc.record_dispatch(KINDS, np.array([0.0, -0.5, 0.0, 0.0, 0.0]), -2.0, 0.0, 0.0, 0.0)
    assert acc.unserved_mwh == pytest.approx(1.5)        # surplus: 0.5 of 2 MW absorbed
    acc.record_dispatch(KINDS, np.array([0.0, -3.0, 0.0, 0.0, 0.0]), -2.0, 0.0, 0.0, 0.0)
    assert acc.unserved_mwh == pytest.approx(1.5)        # over-absorbed: nothing more


def test_der_revenue_is_payments_less_penalties() -> None:
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.zeros(5), 0.0, 120.0, 45.0, 0.0)
    acc.record_dispatch(KINDS, np.zeros(5), 0.0, 30.0, 5.0, 0.0)
    m = _kpis(acc)
    assert m["balancing_payments"] == 150.0
    assert m["der_revenue"] == 100.0


# --------------------------------------------------------------------------- emergency and rounds
def test_latency_is_measured_to_the_earliest_response() -> None:
    """Responses may be noted out of order (reserve activation, energy delivery): the
    latency is to the first, 0.1 s after the event at 12 s -> 100 ms."""
    acc = _acc(event_s=12.0)
    acc.record_response(12.3)
    acc.record_response(12.1)
    acc.record_response(12.2)
    acc.elapsed_s = 13.0
    assert _kpis(acc)["emergency_response_latency_ms"] == pytest.approx(100.0, abs=1e-9)


def test_reserve_activated_at_exactly_100_ms_counts_as_in_time() -> None:
    """DESIGN §7: the response must start *within* 100 ms: an activation 0.1 s after the
    event (exact in binary here) counts; one later does not."""
    acc = _acc(event_s=0.0)
    acc.record_activation(0.1, 2.0)
    acc.record_activation(0.15, 5.0)
    acc.record_activation(0.05, 1.0)
    acc.elapsed_s = 1.0
    assert _kpis(acc)["emergency_response_mw_100ms"] == 3.0


def test_the_100_ms_window_ends_at_event_plus_100_ms_in_floats_too() -> None:
    """Review: the window compared ``at - event <= 0.1``; with the event at 1.0 s an
    activation at 1.1 s differs by 0.10000000000000009 and fell outside."""
    acc = _acc(event_s=1.0)
    acc.record_activation(1.1, 2.0)
    acc.record_activation(1.1000001, 5.0)
    acc.elapsed_s = 2.0
    assert _kpis(acc)["emergency_response_mw_100ms"] == 2.0


def test_response_power_is_none_until_the_event_has_happened() -> None:
    """None when no event happened in the episode, also for one that ends exactly at
    the event time (nothing after it was simulated); 0.0 once it has."""
    acc = _acc(event_s=2.0)
    acc.elapsed_s = 2.0
    assert _kpis(acc)["emergency_response_mw_100ms"] is None
    acc.elapsed_s = 2.05
    assert _kpis(acc)["emergency_response_mw_100ms"] == 0.0


def test_consensus_rate_counts_held_rounds_only_and_negotiations_all_rounds() -> None:
    acc = _acc()
    assert _kpis(acc)["consensus_rate"] is None          # no round held: undefined
    acc.record_round(False, True, 2)                      # inside the deadband / round 0
    assert _kpis(acc)["consensus_rate"] is None
    acc.record_round(True, True, 3)
    acc.record_round(True, False, 1)
    acc.record_round(False, False, 0)
    m = _kpis(acc)
    assert m["consensus_rate"] == 0.5
    assert m["negotiations"] == 6


def test_a_zero_requirement_takes_the_shortage_sign_as_in_the_oracle() -> None:
    """sign(0) = +1 (the oracle's σ_k, which must minimize this same system_cost): with
    no requirement, 1 MW absorbed for an hour is 1 MWh unserved (a shortage the DERs
    made) and 1 MW injected is 1 MWh delivered, nothing unserved."""
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.array([0.0, -1.0, 0.0, 0.0, 0.0]), 0.0, 0.0, 0.0, 0.0)
    assert (acc.unserved_mwh, acc.delivered_mwh, acc.requirement_mwh) == (1.0, -1.0, 0.0)
    acc.record_dispatch(KINDS, np.array([0.0, 1.0, 0.0, 0.0, 0.0]), 0.0, 0.0, 0.0, 0.0)
    assert (acc.unserved_mwh, acc.delivered_mwh, acc.requirement_mwh) == (1.0, 0.0, 0.0)
