"""Tests of gridswarm_env.metrics: the KPI definitions (DESIGN §8, the module docstring)
pinned with hand-computed values on a bare :class:`MetricsAccumulator` (a hand-made
mutation audit: each test fails if one term, comparison or sign of a definition
changes), and ``max_rocof_hz_per_s``, a RoCoF measured over ``EnvConfig.rocof_window_s``
(default 0.5 s), computed per step from a kept tail of samples, independent of
``physics_dt_s``.

The definition tests use 50 ms sub-steps for frequency traces and ``dt_s = 3600``
(``h = 1``) for energy, so MW and MWh read alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gridswarm_env.config import ROCOF_WINDOW_S, CostConfig, EnvConfig, MarketConfig
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR
from gridswarm_env.grid import GridModel, GridParams, rocof_hz_per_s
from gridswarm_env.metrics import MetricsAccumulator, is_finite_or_none, json_safe
from gridswarm_env.scenarios import get_scenario
from policies import make_policy
from policies.rollout import run_episode

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


def _end_step(acc: MetricsAccumulator, t0_s: float, t1_s: float, *, last: bool = False,
              hi_mw: float = math.inf) -> None:
    """What the environment does about the 100 ms window in its step ``[t0_s, t1_s)``:
    ask :meth:`~MetricsAccumulator.close_window_if_ends_in` and, where it says so, judge the
    window's reserve with no energy contract and bounds ``[-hi_mw, hi_mw]``; then the
    step's end is the time simulated."""
    if acc.close_window_if_ends_in(t0_s, t1_s, last=last):
        n = 1 + max(0, *acc.window_reserve_mw)
        acc.record_window_end(np.zeros(n), np.full(n, -hi_mw), np.full(n, hi_mw))
    acc.elapsed_s = t1_s


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


KINDS = np.array([KIND_SOLAR, KIND_BATTERY, KIND_BATTERY, KIND_EV, KIND_EV])


def test_record_dispatch_takes_the_callers_kind_sums_as_its_own() -> None:
    """``kind_sums_mw`` (the environment's settlement passes the sums it has at hand) is
    what record_dispatch would compute from the power: the same KPIs, bit for bit."""
    p = np.array([-1.0, 2.0, -1.0, 0.5, -0.3])
    delta = np.array([0.0, -2.5, 0.9, 0.3, 0.2])
    plain, given = _acc(dt_s=3600.0), _acc(dt_s=3600.0)
    plain.record_dispatch(KINDS, p, 4.0, 1.0, 0.5, 0.2, energy_delta_mwh=delta)
    bat, sol, ev = (KINDS == k for k in (KIND_BATTERY, KIND_SOLAR, KIND_EV))
    sums = (float(np.abs(p[bat]).sum()), float(np.maximum(-p[sol], 0.0).sum()),
            float(np.maximum(p[ev], 0.0).sum()))
    given.record_dispatch(KINDS, p, 4.0, 1.0, 0.5, 0.2, energy_delta_mwh=delta,
                          kind_sums_mw=sums)
    assert json.dumps(_kpis(given)) == json.dumps(_kpis(plain))
    assert _kpis(given)["battery_throughput_mwh"] == 3.0
    # the sums given are the ones used (not recomputed from the power)
    other = _acc(dt_s=3600.0)
    other.record_dispatch(KINDS, p, 4.0, 1.0, 0.5, 0.2, energy_delta_mwh=delta,
                          kind_sums_mw=(7.0, sums[1], sums[2]))
    assert _kpis(other)["battery_throughput_mwh"] == 7.0


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


def test_requirement_and_delivered_energy_count_in_the_requirement_direction() -> None:
    """``requirement = Σ |R|·h`` and ``delivered = Σ sign(R)·D·h``: a 2 MW surplus met by
    1.5 MW absorbed adds 2 and 1.5 MWh (not −2 and −1.5); their ratio is the share covered
    (mutation audit: a signed requirement survived every test but the golden ones)."""
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.array([0.0, 1.0, 0.0, 0.0, 0.0]), 1.0, 0.0, 0.0, 0.0)
    acc.record_dispatch(KINDS, np.array([0.0, -1.5, 0.0, 0.0, 0.0]), -2.0, 0.0, 0.0, 0.0)
    m = _kpis(acc)
    assert m["requirement_energy_mwh"] == pytest.approx(3.0)
    assert m["delivered_energy_mwh"] == pytest.approx(2.5)


def test_mean_abs_deviation_is_the_time_average_of_the_deviation() -> None:
    """``mean_abs_deviation_hz = ∫|f − 60| dt / elapsed``: two steps of four 50 ms
    sub-steps at 0.1 and 0.3 Hz from nominal average 0.2 Hz, in either direction
    (mutation audit: integrating with dt_s instead of physics_dt_s survived every test
    but the golden ones)."""
    acc = _acc()
    _step(acc, 0, [60.1, 59.9, 60.1, 59.9])
    _step(acc, 4, [59.7, 60.3, 59.7, 60.3])
    assert _kpis(acc)["mean_abs_deviation_hz"] == pytest.approx(0.2, abs=1e-12)


def test_der_revenue_is_payments_less_penalties() -> None:
    acc = _acc(dt_s=3600.0)
    acc.record_dispatch(KINDS, np.zeros(5), 0.0, 120.0, 45.0, 0.0)
    acc.record_dispatch(KINDS, np.zeros(5), 0.0, 30.0, 5.0, 0.0)
    m = _kpis(acc)
    assert m["balancing_payments"] == 150.0
    assert m["der_revenue"] == 100.0


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
    _end_step(acc, 0.0, 1.0)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 3.0


def test_the_100_ms_window_ends_at_event_plus_100_ms_in_floats_too() -> None:
    """Review: the window compared ``at - event <= 0.1``; with the event at 1.0 s an
    activation at 1.1 s differs by 0.10000000000000009 and fell outside."""
    acc = _acc(event_s=1.0)
    acc.record_activation(1.1, 2.0)
    acc.record_activation(1.1000001, 5.0)
    _end_step(acc, 1.0, 2.0)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 2.0


def test_ramped_reserve_counts_its_power_at_the_window_end_in_closed_form() -> None:
    """A holder under a ramp ``r`` reaches ``min(R, r·(t_e − t_a))`` at the window's end
    ``t_e`` = event + 100 ms; a second contract of the same holder activated later adds
    only what the shared ramp allows, ``min(T, min_c[T(t_c⁻) + r·(t_e − t_c)])``; holders
    without a ramp count in full. (Before: the power of the 50 ms physics sub-step holding
    the window's end, up to 2x the physically possible figure.)"""
    acc = _acc(event_s=10.0)
    acc.record_activation(10.02, 2.0, owner=3, ramp_mw_per_s=1.0)      # 0.08 MW at 10.1
    acc.record_activation(10.05, 0.01, owner=4, ramp_mw_per_s=1.0)     # its 0.01 MW in full
    acc.record_activation(10.0, 0.03, owner=5, ramp_mw_per_s=1.0)      # 0.03 then 0.06 more
    acc.record_activation(10.04, 5.0, owner=5, ramp_mw_per_s=1.0)      # min(5.03, 0.1, 0.09)
    acc.record_activation(10.07, 2.5, owner=6)                         # no ramp: in full
    acc.record_activation(10.2, 9.0, owner=7, ramp_mw_per_s=1.0)       # too late
    _end_step(acc, 10.0, 11.0)
    want = 0.08 + 0.01 + min(5.03, 0.1, 0.03 + 0.06) + 2.5
    assert _kpis(acc)["emergency_response_mw_100ms"] == pytest.approx(want, rel=1e-12)


def test_response_power_counts_what_the_holders_bounds_let_them_deliver() -> None:
    """Physics review: the KPI summed the contracts activated in the window, so reserve a
    holder could not deliver (an EV already full, a battery at its floor) read as answered
    (``emergency`` with EVs at 99.95-99.999 %: 100 MW read, 94.9 MW answered). At the
    window's end a holder executes ``clip(c + R)`` where it would execute ``clip(c)``: the
    difference counts, with or without a ramp limit; an uncut holder counts in full."""
    acc = _acc(event_s=10.0)
    acc.record_activation(10.03, 4.0, owner=0)                         # cut to 1.5 MW
    acc.record_activation(10.04, 3.0, owner=1)                         # in full
    acc.record_activation(10.05, 2.0, owner=2)                         # c = 1 of hi 2: 1 MW
    acc.record_activation(10.02, 2.0, owner=3, ramp_mw_per_s=1.0)      # 0.08, cap 0.05
    acc.record_activation(10.04, 2.0, owner=4, ramp_mw_per_s=1.0)      # 0.06 < cap 1
    contract = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    lo, hi = np.full(5, -5.0), np.array([1.5, 5.0, 2.0, 0.05, 1.0])
    close = acc.close_window_if_ends_in
    assert not close(9.0, 10.0) and not close(10.1000001, 11.0)
    assert not acc.response_window_closed                   # neither step holds t_e
    assert close(10.0, 11.0) and acc.response_window_closed
    assert close(9.0, 10.05, last=True)
    acc.record_window_end(contract, lo, hi)
    assert not close(10.0, 11.0) and acc.response_window_closed       # judged once
    acc.elapsed_s = 11.0
    want = 1.5 + 3.0 + 1.0 + 0.05 + 0.06
    assert _kpis(acc)["emergency_response_mw_100ms"] == pytest.approx(want, rel=1e-12)


def test_response_power_is_none_until_the_event_has_happened() -> None:
    """None when no event happened in the episode, also for one that ends exactly at
    the event time (nothing after it was simulated); 0.0 once it has, with nothing
    activated in the window."""
    acc = _acc(event_s=2.0)
    _end_step(acc, 1.0, 2.0)
    assert _kpis(acc)["emergency_response_mw_100ms"] is None
    _end_step(acc, 2.0, 3.0)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 0.0
    acc = _acc(event_s=2.0)   # an episode whose last step ends at the event
    _end_step(acc, 1.0, 2.0, last=True)
    assert _kpis(acc)["emergency_response_mw_100ms"] is None


def test_response_power_is_not_measured_before_the_step_holding_the_window_end() -> None:
    """Review: read after a step that ends inside the 100 ms window (a trip at 10.95 s,
    the window's end 11.05 s in the next step; the live demo reads the KPIs every step)
    the KPI gave the contracts activated so far at full power, 5 MW here, where the
    holder delivers 1.5 MW at the window's end and a second holder activating at 11.02 s
    adds 2 MW. Until the step holding the window's end has run it is None (not yet
    measured); then the delivered power; an episode ending inside the window is judged
    at its end."""
    acc = _acc(event_s=10.95)
    acc.record_activation(10.97, 5.0, owner=0)
    _end_step(acc, 10.0, 11.0, hi_mw=1.5)
    assert acc.elapsed_s > acc.event_time_s
    assert _kpis(acc)["emergency_response_mw_100ms"] is None
    acc.record_activation(11.02, 2.0, owner=1)
    _end_step(acc, 11.0, 12.0, hi_mw=1.5)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 1.5 + 1.5
    _end_step(acc, 12.0, 13.0, hi_mw=1.5)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 1.5 + 1.5
    acc = _acc(event_s=10.95)   # the episode's last step ends inside the window
    acc.record_activation(10.97, 5.0, owner=0)
    _end_step(acc, 10.0, 11.0, last=True, hi_mw=1.5)
    assert _kpis(acc)["emergency_response_mw_100ms"] == 1.5


def test_env_reports_the_response_power_once_the_window_has_ended() -> None:
    """The same in the environment: ``emergency`` with the trip at 10.95 s (20 agents,
    heuristic, seed 0). After the step ending at 11 s, inside the window, the KPI read
    97.57 MW (the reserve whose broadcast had arrived by then, at contract power); now
    None, and 100 MW from the step holding the window's end on, as at the episode's end."""
    from tests.episodes import play

    raw = GridSwarmEnv(scenario=get_scenario("emergency", event_time_s=10.95),
                       config=EnvConfig(n_agents=20, trust="hmac"))
    seen = {}
    for _ in play(raw, until_s=13.0):
        seen[raw.t_s] = raw.episode_metrics()["emergency_response_mw_100ms"]
    assert seen[10.0] is None and seen[11.0] is None
    assert seen[12.0] == seen[13.0] and seen[12.0] == pytest.approx(100.0)


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


# --------------------------------------------------------------------------- RoCoF over a window
def _accumulator(physics_dt_s: float, window_s: float, f0_hz: float = 60.0
                 ) -> MetricsAccumulator:
    return MetricsAccumulator(CostConfig(), dt_s=1.0, physics_dt_s=physics_dt_s,
                              disturbance_time_s=0.0, event_time_s=None,
                              rocof_window_s=window_s, last_freq_hz=f0_hz)


def _feed(acc: MetricsAccumulator, trace_hz: np.ndarray, sizes: list[int]) -> None:
    """Record ``trace_hz`` (samples after t = 0) in steps of ``sizes`` sub-steps."""
    start = 0
    for n in sizes:
        part = trace_hz[start:start + n]
        acc.record_frequency(acc.physics_dt_s * np.arange(start + 1, start + part.size + 1),
                             part)
        start += n
    assert start == trace_hz.size


@pytest.mark.parametrize("window_s", [0.05, 0.5, 2.0])
def test_pure_swing_ramp_gives_the_closed_form_for_any_window(window_s: float) -> None:
    """Swing equation alone (D = 0, governor gain 1e-12): a constant ΔP = −0.1 p.u. from
    rest gives f(t) = f0·(1 + ΔP·t/(2H)), a ramp, so the windowed RoCoF is ΔP·f0/(2H) =
    0.75 Hz/s for any window (the windows reaching back before t = 0, where f = f0,
    read less, and the later ones the full slope)."""
    params = GridParams(damping_d_pu=0.0, mech_gain_km=1e-12, droop_r_pu=1.0,
                        reheat_fraction_fh=0.0)
    model = GridModel(params, 1.0)
    model.reset()
    acc = _accumulator(params.physics_dt_s, window_s, model.freq_hz)
    for _ in range(6):
        freq = model.advance(-0.1)
        acc.record_frequency(np.zeros(freq.size), freq)
    expected = abs(params.initial_rocof_hz_per_s(-0.1))
    assert expected == pytest.approx(0.75)
    assert acc.max_rocof_hz_per_s == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("window_s", [0.05, 0.5, 2.0])
def test_per_step_maximum_equals_the_whole_trace_computation(window_s: float) -> None:
    """However the trace is cut into steps (1 sample, fewer than the window, many), the
    streamed KPI has the bits of ``max|grid.rocof_hz_per_s|`` over the whole trace, with
    the initial frequency standing for the samples before t = 0."""
    dt = 0.05
    rng = np.random.default_rng(11)
    trace = 60.0 + np.cumsum(rng.normal(0.0, 0.002, 400))
    trace[150:] -= 0.03 * np.arange(250) * dt   # a trip: a steeper fall from 7.5 s
    w = round(window_s / dt)
    whole = np.concatenate([np.full(w, 60.0), trace])
    want = float(np.abs(rocof_hz_per_s(whole, dt, window_s)).max())
    for sizes in ([20] * 20, [1] * 400, [1, 3, 7, 2, 40, 9, 1, 137, 200],
                  [399, 1], [400]):
        acc = _accumulator(dt, window_s)
        _feed(acc, trace, sizes)
        assert acc.max_rocof_hz_per_s == want, sizes


def test_environment_kpi_equals_the_trace_computation() -> None:
    """The KPI of an emergency episode is the windowed RoCoF of its sub-step trace."""
    env = GridSwarmEnv("emergency", n_agents=20, trust="hmac")
    res = run_episode(env, make_policy("heuristic"), seed=0, keep_substeps=True,
                      max_steps=15)
    pdt = env.config.grid.physics_dt_s
    w = round(ROCOF_WINDOW_S / pdt)
    whole = np.concatenate([np.full(w, 60.0), res.freq_substeps_hz])
    want = float(np.abs(rocof_hz_per_s(whole, pdt, ROCOF_WINDOW_S)).max())
    assert res.metrics["max_rocof_hz_per_s"] == want


def _emergency_kpis(physics_dt_s: float) -> tuple[float, float]:
    """(windowed KPI, one-sub-step max|Δf|/Δt) of the emergency scenario's first 15 s."""
    cfg = EnvConfig(n_agents=20, trust="hmac", grid=GridParams(physics_dt_s=physics_dt_s))
    res = run_episode(GridSwarmEnv("emergency", config=cfg), make_policy("heuristic"),
                      seed=0, keep_substeps=True, max_steps=15)
    trace = np.concatenate([[60.0], res.freq_substeps_hz])
    return (res.metrics["max_rocof_hz_per_s"],
            float(np.abs(rocof_hz_per_s(trace, physics_dt_s)).max()))


def test_kpi_does_not_depend_on_the_physics_sub_step() -> None:
    """Emergency trip, heuristic fleet (reserve answers ~22 ms after the trip): with 50 ms
    and 10 ms sub-steps the 0.5 s RoCoF agrees within 0.005 Hz/s (measured 0.0455 vs
    0.0430; the load noise is drawn per sub-step, so its realisation differs), while the
    old definition, one sub-step's change, read 0.46 vs 0.74 Hz/s: at 10 ms a sample
    falls before the answer arrives and sees the unassisted 0.75 Hz/s, at 50 ms the
    answer is averaged in."""
    new_50, old_50 = _emergency_kpis(0.05)
    new_10, old_10 = _emergency_kpis(0.01)
    assert new_50 == pytest.approx(new_10, abs=0.005)
    assert old_10 > 0.7 and old_50 < 0.5


@pytest.mark.parametrize("where", [0, 5, 19])
def test_a_nan_sample_makes_the_kpi_nan_for_good(where: int) -> None:
    """A NaN sample gives NaN, not a skipped sample; later finite steps keep it NaN (the
    one-sub-step code lost it at the next step: Python's max(x, nan) returns x). The
    nadir and zenith too (min(60.0, nan) is 60.0: they reported a NaN step as 60 Hz)."""
    acc = _accumulator(0.05, 0.5)
    rng = np.random.default_rng(1)
    _feed(acc, 60.0 + rng.normal(0.0, 0.01, 40), [20, 20])
    bad = 60.0 + rng.normal(0.0, 0.01, 20)
    bad[where] = math.nan
    acc.record_frequency(np.arange(41, 61) * 0.05, bad)
    assert math.isnan(acc.max_rocof_hz_per_s)
    assert math.isnan(acc.nadir_hz) and math.isnan(acc.zenith_hz)
    # the NaN sample is time outside the band, and an episode ending on it is not settled
    assert acc.seconds_outside_band == pytest.approx(0.05)
    assert acc.last_unsettled_s == pytest.approx((41 + where) * 0.05)
    if where == 19:
        assert acc.stabilization_time_s() is None
    _feed(acc, 60.0 + rng.normal(0.0, 0.5, 60), [20, 20, 20])   # larger, finite changes
    assert math.isnan(acc.max_rocof_hz_per_s)
    assert math.isnan(acc.nadir_hz) and math.isnan(acc.zenith_hz)


@pytest.mark.parametrize("pdt, window", [(0.05, 0.1), (0.05, 0.5), (0.01, 0.5),
                                         (0.05, 0.05), (0.025, 0.075), (0.1, 0.3)])
def test_whole_multiples_are_accepted(pdt: float, window: float) -> None:
    cfg = EnvConfig(grid=GridParams(physics_dt_s=pdt), rocof_window_s=window)
    assert cfg.rocof_window_s == window
    MetricsAccumulator(CostConfig(), dt_s=1.0, physics_dt_s=pdt, disturbance_time_s=0.0,
                       event_time_s=None, rocof_window_s=window)


@pytest.mark.parametrize("pdt, window", [(0.05, 0.5), (0.01, 0.5), (0.2, 0.4), (0.3, 0.6),
                                         (1.0, 1.0)])
def test_default_window_is_half_a_second_in_whole_sub_steps(pdt: float, window: float) -> None:
    """Unset, the window is 0.5 s rounded to whole sub-steps (at least one), so a
    config whose sub-step does not divide 0.5 s (0.2 s, 1 s) still builds."""
    cfg = EnvConfig(grid=GridParams(physics_dt_s=pdt), dt_s=round(10 * pdt, 9),
                    market=MarketConfig(gate_s=pdt / 2))
    assert cfg.rocof_window_s is None
    acc = MetricsAccumulator(CostConfig(), dt_s=cfg.dt_s, physics_dt_s=pdt,
                             disturbance_time_s=0.0, event_time_s=None,
                             rocof_window_s=cfg.rocof_window_s)
    trace = 60.0 + np.cumsum(np.random.default_rng(3).normal(0.0, 0.01, 30))
    _feed(acc, trace, [10, 10, 10])
    w = round(window / pdt)
    want = np.abs(rocof_hz_per_s(np.r_[np.full(w, 60.0), trace], pdt, window)).max()
    assert acc.max_rocof_hz_per_s == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("window, match", [
    (0.12, r"rocof_window_s = 0\.12: must be a whole multiple of grid\.physics_dt_s = "
           r"0\.05 \(1 or more times; not rounded\)"),
    (0.025, r"rocof_window_s = 0\.025: must be a whole multiple"),
    (0.0, r"rocof_window_s = 0\.0: must be > 0"),
    (-0.5, r"rocof_window_s = -0\.5: must be > 0"),
    (math.nan, r"rocof_window_s = nan: expected a finite number"),
    (math.inf, r"rocof_window_s = inf: expected a finite number"),
    ("0.5", r"rocof_window_s = '0\.5': expected a finite number \(an int or float, numpy's too\), got str"),
    (True, r"rocof_window_s = True: expected a finite number \(an int or float, numpy's too\), got bool"),
    (200.0, r"rocof_window_s = 200\.0: 4,000 physics sub-steps of 0\.05 s; at most 2,400"),
])
def test_bad_windows_are_refused(window, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnvConfig(rocof_window_s=window)


def test_accumulator_refuses_a_window_between_sub_steps() -> None:
    with pytest.raises(ValueError, match=r"MetricsAccumulator\.rocof_window_s = 0\.07: must "
                                         r"be a whole multiple of physics_dt_s = 0\.05"):
        _accumulator(0.05, 0.07)


def test_the_window_reaches_the_environment() -> None:
    """``EnvConfig.rocof_window_s`` is the window the environment's KPI uses."""
    sc = get_scenario("emergency", episode_steps=12)
    kpis = {}
    for window in (0.05, 0.5):
        env = GridSwarmEnv(sc, config=EnvConfig(n_agents=10, trust="hmac",
                                                rocof_window_s=window))
        kpis[window] = run_episode(env, make_policy("heuristic"), seed=0).metrics[
            "max_rocof_hz_per_s"]
    assert kpis[0.05] > 5 * kpis[0.5] > 0.0


@pytest.mark.parametrize("window, match", [
    (math.inf, r"MetricsAccumulator\.rocof_window_s = inf: expected a finite number"),
    (math.nan, r"MetricsAccumulator\.rocof_window_s = nan: expected a finite number"),
])
def test_accumulator_refuses_a_non_finite_window_with_a_value_error(window, match) -> None:
    """Review: ``round(inf)`` raised OverflowError and ``round(nan)`` a ValueError that
    named no setting, though the accumulator promises a ValueError for a bad window."""
    with pytest.raises(ValueError, match=match):
        _accumulator(0.05, window)


def test_a_new_episode_does_not_window_back_into_the_previous_one() -> None:
    """Each reset starts the RoCoF window afresh from the initial frequency: an episode
    stopped just after the trip (its last samples ~0.01 Hz below 60) is followed by one
    whose first steps read what a fresh environment reads (windowing back into the
    previous episode's tail would read ~0.023 Hz/s instead of ~0.006)."""
    def env() -> GridSwarmEnv:
        return GridSwarmEnv("emergency", config=EnvConfig(n_agents=10, trust="hmac"))

    used = env()
    run_episode(used, make_policy("heuristic"), seed=0, max_steps=11)   # trip at 10 s
    assert abs(used.grid.freq_hz - 60.0) > 0.005
    again = run_episode(used, make_policy("heuristic"), seed=1, max_steps=3)
    fresh = run_episode(env(), make_policy("heuristic"), seed=1, max_steps=3)
    assert again.metrics["max_rocof_hz_per_s"] == fresh.metrics["max_rocof_hz_per_s"]


def test_observed_rocof_with_one_sub_step_per_step_uses_the_previous_step() -> None:
    """Review: with ``dt_s == physics_dt_s`` (one sub-step per step) the operator's RoCoF
    signal was always 0 (it took the difference of the step's last two samples). It is
    the change from the previous step's last sample, the initial frequency (the steady
    state of the initial load noise) before the first."""
    cfg = EnvConfig(n_agents=20, trust="hmac", dt_s=1.0, grid=GridParams(physics_dt_s=1.0))
    seen: list[tuple[float, float]] = []   # (last_rocof_hz_per_s, last sample) after each step
    env = GridSwarmEnv("emergency", config=cfg)
    env.reset(seed=0)
    previous = float(env.freq_trace_hz[-1])
    assert previous == env.grid.freq_hz != 60.0
    run_episode(env, make_policy("heuristic"), seed=0, max_steps=15, reset_env=False,
                on_step=lambda env, _: seen.append(
                    (env.last_rocof_hz_per_s, float(env.freq_trace_hz[-1]))))
    for rocof, now in seen:
        assert rocof == (now - previous) / 1.0
        previous = now
    assert max(abs(r) for r, _ in seen) > 0.01   # the trip at 10 s moves it


# --------------------------------------------------------------------------- mutation audit (session 12)
def test_energy_kpis_scale_with_the_step_length_in_hours() -> None:
    """Every energy term is power × h with h = dt_s/3600: the dispatch of the six-term
    test over half an hour (h = 0.5) gives half its throughput, curtailment, deferral,
    unserved, required and delivered energy, while the stored-energy change and the
    unmet departure energy, given in MWh, are taken as they are."""
    full, half = _acc(dt_s=3600.0), _acc(dt_s=1800.0)
    for acc in (full, half):
        acc.record_dispatch(KINDS, np.array([-1.0, 2.0, -1.0, 0.5, -0.3]), 4.0, 0.0, 0.0, 0.2,
                            energy_delta_mwh=np.array([0.0, -2.5, 0.9, 0.3, 0.2]))
    f, h = _kpis(full), _kpis(half)
    for key in ("battery_throughput_mwh", "curtailed_energy_mwh", "ev_deferred_energy_mwh",
                "unserved_energy_mwh", "requirement_energy_mwh", "delivered_energy_mwh"):
        assert f[key] > 0.0 and h[key] == pytest.approx(0.5 * f[key], rel=1e-12), key
    for key in ("battery_energy_drawn_mwh", "ev_unmet_energy_mwh"):
        assert h[key] == f[key] > 0.0, key


def test_rocof_before_the_first_sample_uses_the_initial_frequency() -> None:
    """f_k = f_0 for k < 0, f_0 the initial frequency (``last_freq_hz``), not 60 Hz: an
    episode that starts at 59.9 Hz and stays there has no RoCoF (it read 0.1 Hz over the
    0.5 s window, 0.2 Hz/s); one stepping to 59.8 Hz reads 0.1/0.5 = 0.2 Hz/s."""
    acc = _accumulator(0.05, 0.5, f0_hz=59.9)
    _feed(acc, np.full(20, 59.9), [20])
    assert acc.max_rocof_hz_per_s == 0.0
    acc = _accumulator(0.05, 0.5, f0_hz=59.9)
    _feed(acc, np.full(20, 59.8), [20])
    assert acc.max_rocof_hz_per_s == pytest.approx(0.2, rel=1e-9)


def test_contract_and_bus_counters_are_read_under_their_own_names() -> None:
    """``result`` copies the ledger's and the bus's counters key by key (distinct values
    here, so a counter read under another name shows), 0 for a missing one."""
    contracts = {"signed": 7, "verified": 4, "rejected": 2, "lost": 1,
                 "rejected_by_reason": {"expired": 2}}
    bus = {"published": 11, "delivered": 9, "deferred": 3, "dropped": 5}
    m = _acc().result(contracts=contracts, bus_totals=bus)
    assert [m[f"contracts_{k}"] for k in ("signed", "verified", "rejected", "lost")] == [7, 4,
                                                                                      2, 1]
    assert [m[f"bus_{k}"] for k in ("published", "delivered", "deferred", "dropped")] == [
        11, 9, 3, 5]
    assert m["contracts_rejected_by_reason"] == {"expired": 2}
    assert _kpis(_acc())["contracts_lost"] == 0 and _kpis(_acc())["bus_dropped"] == 0
    # contracts_late: the rejections with reason late, a part of contracts_rejected
    assert m["contracts_late"] == 0 and _kpis(_acc())["contracts_late"] == 0
    late = _acc().result(contracts={"rejected": 5,
                                    "rejected_by_reason": {"late": 3, "expired": 2}},
                         bus_totals=bus)
    assert late["contracts_late"] == 3 and late["contracts_rejected"] == 5


def test_json_safe_gives_strict_json_types() -> None:
    """NaN/±inf → None, NumPy scalars and arrays → Python numbers and lists, tuples →
    lists, keys → str, anything else → str; ``is_finite_or_none`` accepts None and finite
    numbers only."""
    value = {"a": (1, np.int64(2), np.float32(0.5)), 3: np.array([math.nan, 1.5]),
             "b": np.bool_(True), "c": [math.inf, -math.inf, None, "x"], "d": Path("p")}
    got = json_safe(value)
    assert got == {"a": [1, 2, 0.5], "3": [None, 1.5], "b": True,
                   "c": [None, None, None, "x"], "d": "p"}
    assert [type(v) for v in got["a"]] == [int, int, float] and type(got["b"]) is bool
    assert json.loads(json.dumps(got, allow_nan=False)) == got
    assert is_finite_or_none(None) and is_finite_or_none(2) and is_finite_or_none(0.5)
    assert not any(is_finite_or_none(x) for x in (math.nan, math.inf, -math.inf, "1"))


def test_every_number_in_the_kpi_dict_has_its_unit_in_kpi_units() -> None:
    """KPI_UNITS (results.md's column headers, demo.py's summary) names the unit of every
    number the environment's KPI dict holds, and of nothing else: a KPI added without a
    unit, or a unit left for a KPI removed, fails here."""
    from gridswarm_env.metrics import KPI_KEYS, KPI_UNITS
    from tests.episodes import play

    raw = GridSwarmEnv(scenario=get_scenario("emergency"), config=EnvConfig(n_agents=5))
    for _ in play(raw, until_s=2.0):
        pass
    metrics = raw.episode_metrics()
    numbers = {k for k, v in metrics.items() if not isinstance(v, bool | str | dict)}
    assert numbers == set(KPI_UNITS) and set(KPI_KEYS) <= numbers
    assert KPI_UNITS["system_cost"] == "$" and KPI_UNITS["emergency_response_mw_100ms"] == "MW"
    assert not set(KPI_UNITS.values()) - {"", "$", "MWh", "MW", "Hz", "Hz/s", "s", "ms"}
