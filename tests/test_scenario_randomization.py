"""Per-episode scenario randomization (``Scenario.magnitude_jitter_frac``,
``timing_jitter_s``): off by default and then bit for bit as before; on, every reset
draws the episode's scenario from its own stream, within the stated bounds, and the
operator, the KPIs and the oracle use the drawn values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gridswarm_env.config import EnvConfig
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.grid import step_response
from gridswarm_env.scenarios import (
    EPISODE_DRAWN_FIELDS,
    RANDOMIZE_PRESET,
    get_scenario,
    load_scenario_file,
    scenario_names,
)
from policies import make_policy
from policies.rollout import run_episode
from tests.episodes import play
from tests.golden import run_case
from tests.test_golden import EXACT, RECORDED
from tests.value_errors import _raises

J_MAG = RANDOMIZE_PRESET["magnitude_jitter_frac"]
J_T = RANDOMIZE_PRESET["timing_jitter_s"]


def _randomized(name: str, **changes) -> object:
    return get_scenario(name, **RANDOMIZE_PRESET, **changes)


def _drawn(name: str, seeds, n_agents: int = 10, **changes) -> list:
    """The scenario each seed's reset draws (one environment, reset per seed)."""
    raw = GridSwarmEnv(_randomized(name, **changes), n_agents=n_agents, trust="hmac")
    out = []
    for s in seeds:
        raw.reset(seed=s)
        out.append(raw.scenario)
    return out


# ---------------------------------------------------------------- off: as before
def test_zero_jitter_draws_nothing_and_returns_the_scenario() -> None:
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    for name in scenario_names():
        base = get_scenario(name)
        assert base.magnitude_jitter_frac == 0.0 and base.timing_jitter_s == 0.0
        assert not base.randomized
        assert base.draw_episode(rng) is base
    assert rng.bit_generator.state == state


def test_explicit_zero_jitter_replays_the_golden_episode() -> None:
    want = RECORDED["cases"]["emergency-hmac-heuristic"]
    sc = get_scenario("emergency", magnitude_jitter_frac=0.0, timing_jitter_s=0.0)
    got = run_case({"scenario": sc, "n_agents": 100, "trust": "hmac"}, "heuristic", 2)
    if EXACT:
        assert got["step_hashes"] == want["step_hashes"]
        assert got["audit_head"] == want["audit_head"]
    np.testing.assert_allclose(got["summaries"], want["summaries"], rtol=1e-9, atol=1e-9)


def test_without_jitter_the_episode_plays_the_base_scenario() -> None:
    raw = GridSwarmEnv("emergency", n_agents=10, trust="hmac")
    raw.reset(seed=3)
    assert raw.scenario is raw.base_scenario
    entry = raw.audit_log.entries[-1]
    assert entry.kind == "episode_start" and "drawn" not in entry.fields


# ---------------------------------------------------------------- on: the draws
@pytest.mark.parametrize("name", scenario_names())
def test_draws_lie_within_the_bounds_and_vary_with_the_seed(name: str) -> None:
    base = get_scenario(name)
    drawn = _drawn(name, range(24))
    for sc in drawn:
        assert sc.name == base.name and not sc.randomized
        assert abs(sc.load_step_mw - base.load_step_mw) <= J_MAG * abs(base.load_step_mw)
        assert abs(sc.contingency_mw - base.contingency_mw) <= J_MAG * base.contingency_mw
        assert np.sign(sc.load_step_mw) == np.sign(base.load_step_mw)
        # what is not drawn stays as given
        for key in ("base_load_mw", "load_ramp_s", "gen_delay_s", "gen_ramp_s",
                    "reserve_target_mw", "detection_delay_s", "price_floor_per_mwh",
                    "price_cap_per_mwh", "episode_steps", "start_hour", "load_noise_std_mw"):
            assert getattr(sc, key) == getattr(base, key), key
    if base.load_step_mw:
        starts = np.array([sc.load_step_start_s for sc in drawn])
        assert np.all(np.abs(starts - base.load_step_start_s) <= J_T)
        steps = np.array([sc.load_step_mw for sc in drawn]) / base.load_step_mw
        assert len(set(starts)) == len(drawn) and len(set(steps)) == len(drawn)
        # the spread covers most of the range (24 uniform draws)
        assert starts.min() < base.load_step_start_s - J_T / 2
        assert starts.max() > base.load_step_start_s + J_T / 2
        assert steps.min() < 1 - J_MAG / 2 and steps.max() > 1 + J_MAG / 2
        # the stabilization time is measured from the drawn load step
        assert [sc.disturbance_time_s for sc in drawn] == starts.tolist()
    else:
        assert all(sc.load_step_start_s == base.load_step_start_s for sc in drawn)
    if base.has_event:
        events = np.array([sc.event_time_s for sc in drawn])
        trips = np.array([sc.contingency_mw for sc in drawn]) / base.contingency_mw
        assert np.all(np.abs(events - base.event_time_s) <= J_T)
        assert len(set(events)) == len(drawn) and len(set(trips)) == len(drawn)
        assert events.min() < base.event_time_s - J_T / 2
        assert trips.max() > 1 + J_MAG / 2
        assert [sc.disturbance_time_s for sc in drawn] == events.tolist()
    else:
        assert all(sc.event_time_s == math.inf for sc in drawn)


def test_each_drawn_value_uses_its_own_uniform_draw() -> None:
    """Guards the closed form of ``Scenario.draw_episode``: ``u = uniform(−1, 1, 4)``;
    the load step is scaled by ``1 + j_m·u_0``, the trip by ``1 + j_m·u_1``, the load
    step's start moved by ``j_t·u_2`` and the trip's time by ``j_t·u_3``: with both a
    load step and a trip the two times move independently (sharing ``u_2`` would move
    them together)."""
    sc = get_scenario("price_spike", contingency_mw=50.0, event_time_s=100.0,
                      magnitude_jitter_frac=0.2, timing_jitter_s=5.0)
    assert sc.has_event and sc.load_step_mw != 0.0
    for seed in range(5):
        u = np.random.default_rng(seed).uniform(-1.0, 1.0, 4)
        drawn = sc.draw_episode(np.random.default_rng(seed))
        assert drawn.load_step_mw == pytest.approx(sc.load_step_mw * (1 + 0.2 * u[0]))
        assert drawn.contingency_mw == pytest.approx(sc.contingency_mw * (1 + 0.2 * u[1]))
        assert drawn.load_step_start_s == pytest.approx(sc.load_step_start_s + 5.0 * u[2])
        assert drawn.event_time_s == pytest.approx(sc.event_time_s + 5.0 * u[3])
        assert not drawn.randomized


def test_the_same_seed_draws_the_same_scenario_and_reset_without_seed_continues() -> None:
    a = _drawn("emergency", [5, 5, 6])
    assert a[0] == a[1] != a[2]
    raw = GridSwarmEnv(_randomized("emergency"), n_agents=10, trust="hmac")
    raw.reset(seed=5)
    first = raw.scenario
    raw.reset()
    second = raw.scenario
    assert first == a[0] and second != first
    again = GridSwarmEnv(_randomized("emergency"), n_agents=10, trust="hmac", seed=5)
    again.reset()
    assert again.scenario == first
    again.reset()
    assert again.scenario == second


def test_the_same_seed_replays_a_randomized_episode_bit_for_bit() -> None:
    kwargs = {"scenario": _randomized("emergency"), "n_agents": 40, "trust": "hmac"}
    one, two = run_case(kwargs, "heuristic", 3), run_case(kwargs, "heuristic", 3)
    assert one["step_hashes"] == two["step_hashes"]
    assert one["audit_head"] == two["audit_head"]
    assert one["metrics"] == two["metrics"]
    plain = run_case({**kwargs, "scenario": "emergency"}, "heuristic", 3)
    assert plain["step_hashes"] != one["step_hashes"]


@pytest.mark.parametrize("name", ["price_spike", "emergency"])
def test_the_other_random_streams_are_unchanged(name: str) -> None:
    """Fleet, load noise, bus, nonces and contract keys do not see the scenario draw,
    over a seeded reset and the reset after it; nor does the first observation."""
    seeded = EnvConfig(contract_keys="seeded")   # keys from the seed stream (not the default)
    plain = GridSwarmEnv(name, n_agents=30, trust="hmac", config=seeded)
    rand = GridSwarmEnv(_randomized(name), n_agents=30, trust="hmac", config=seeded)
    for seed in (4, None):
        obs_p, _ = plain.reset(seed=seed)
        obs_r, _ = rand.reset(seed=seed)
        assert rand.scenario != plain.scenario
        for key in ("energy_mwh", "rated_power_mw", "energy_capacity_mwh", "departure_s",
                    "solar_bias", "solar_available_mw"):
            np.testing.assert_array_equal(getattr(rand.fleet, key), getattr(plain.fleet, key))
        # the load noise ε = shortage − requirement (equal but for the subtraction's
        # rounding against another requirement)
        np.testing.assert_allclose(rand.shortage_sub_mw - rand.requirement_sub_mw,
                                   plain.shortage_sub_mw - plain.requirement_sub_mw,
                                   rtol=0.0, atol=1e-12)
        assert rand.rng.bit_generator.state == plain.rng.bit_generator.state
        assert rand.bus._rng.bit_generator.state == plain.bus._rng.bit_generator.state
        assert rand._np_random.bit_generator.state == plain._np_random.bit_generator.state
        agent = plain.possible_agents[0]
        assert rand.registry.sign(agent, b"m") == plain.registry.sign(agent, b"m")
        assert rand.ledger._rng.bit_generator.state == plain.ledger._rng.bit_generator.state
        # the disturbances come after t = 0 (15-25 s, 5-15 s): the first observation
        # cannot tell a drawn episode from the base one
        for a in obs_p:
            np.testing.assert_array_equal(obs_r[a], obs_p[a])


def test_the_audit_trail_records_the_draw() -> None:
    raw = GridSwarmEnv(_randomized("emergency"), n_agents=10, trust="hmac")
    raw.reset(seed=1)
    entry = raw.audit_log.entries[-1]
    assert entry.kind == "episode_start"
    assert entry.fields["drawn"] == {k: getattr(raw.scenario, k) if math.isfinite(
        getattr(raw.scenario, k)) else str(getattr(raw.scenario, k))
        for k in EPISODE_DRAWN_FIELDS}


# ---------------------------------------------------------------- the drawn values are used
def test_the_unassisted_trip_scales_with_the_drawn_contingency_at_the_drawn_time() -> None:
    """Shadow mode, no load noise: the frequency is the grid's response to the drawn
    trip alone, ``step_response(−contingency/base)`` from the drawn ``event_time_s``."""
    params = EnvConfig().grid
    seen = set()
    for seed in range(3):
        raw = GridSwarmEnv(_randomized("emergency", load_noise_std_mw=0.0), n_agents=10,
                           trust="hmac", shadow=True)
        freq, t_end = [], []
        for _rewards, _info in play(raw, "heuristic", seed):
            freq.append(raw.freq_trace_hz.copy())
            t_end.append(raw.t_s - params.physics_dt_s * np.arange(raw.n_substeps)[::-1])
        freq, t_end = np.concatenate(freq), np.concatenate(t_end)
        sc, m = raw.scenario, raw.episode_metrics()
        seen.add(round(sc.contingency_mw, 6))
        t, f = step_response(params, -sc.contingency_mw / params.system_base_mw, 20.0)
        k = int(np.argmin(f))
        # nadir: the closed-form response of the drawn loss (the trip falls inside a
        # 50 ms sub-step, counted for the part after it: 1e-4 Hz)
        assert m["frequency_nadir_hz"] == pytest.approx(f[k], abs=1e-4)
        assert m["frequency_nadir_hz"] - 60.0 == pytest.approx(
            (f[k] - 60.0), rel=2e-4)
        # ... reached about 2.37 s after the *drawn* trip
        t_nadir = float(t_end[int(np.argmin(freq))])
        assert t_nadir - sc.event_time_s == pytest.approx(t[k], abs=params.physics_dt_s)
        # the would-be reserve activation: the detection delay plus the bus's latency
        # after the drawn trip (from the base 10 s it would be seconds off)
        latency = m["shadow_response_latency_ms"]
        assert 1000 * sc.detection_delay_s <= latency <= 100.0
    assert len(seen) == 3


def test_emergency_latency_is_measured_from_the_drawn_trip() -> None:
    raw = GridSwarmEnv(_randomized("emergency"), n_agents=30, trust="hmac")
    for seed in range(3):
        for _ in play(raw, "heuristic", seed):
            pass
        sc, m = raw.scenario, raw.episode_metrics()
        assert abs(sc.event_time_s - 10.0) > 0.1
        assert raw.metrics.event_time_s == sc.event_time_s
        assert 1000 * sc.detection_delay_s <= m["emergency_response_latency_ms"] <= 100.0
        assert m["emergency_response_mw_100ms"] > 0.0


def test_stabilization_time_is_measured_from_the_drawn_load_step() -> None:
    """Shadow mode, no noise, timing jitter only: the frequency is the base episode's,
    shifted by the drawn start, so the time from the drawn load step back into the band
    is the base episode's to within one physics sub-step (from the base 20 s it would
    be off by the shift, up to 5 s)."""
    def stabilization(scenario, seed):
        raw = GridSwarmEnv(scenario, n_agents=10, trust="hmac", shadow=True)
        for _ in play(raw, "heuristic", seed):
            pass
        return raw.scenario.load_step_start_s, raw.episode_metrics()["stabilization_time_s"]

    quiet = get_scenario("price_spike", load_noise_std_mw=0.0)
    start0, want = stabilization(quiet, 0)
    assert start0 == 20.0 and want is not None
    shifted = get_scenario(quiet, timing_jitter_s=J_T)
    for seed in (0, 3):
        start, got = stabilization(shifted, seed)
        assert abs(start - 20.0) > 1.0
        assert got == pytest.approx(want, abs=EnvConfig().grid.physics_dt_s)


def test_the_oracle_plans_on_the_drawn_scenario() -> None:
    """Its perfect-foresight plan predicts the measured cost; planned on the base
    scenario's 110 MW step it would be ~8 % off for the drawn one."""
    raw = GridSwarmEnv(_randomized("price_spike"), n_agents=30, trust="hmac")
    oracle = make_policy("oracle")
    result = run_episode(raw, oracle, 1)
    assert abs(raw.scenario.load_step_mw - 110.0) > 5.0
    assert len(oracle.plans) == 1
    assert oracle.planned_cost == pytest.approx(result.metrics["system_cost"], rel=1e-6)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("changes, parts", [
    ({"magnitude_jitter_frac": -0.1}, ("magnitude_jitter_frac = -0.1", "[0.0, 1.0)")),
    ({"magnitude_jitter_frac": 1.0}, ("magnitude_jitter_frac = 1.0", "[0.0, 1.0)")),
    ({"magnitude_jitter_frac": math.nan}, ("magnitude_jitter_frac", "finite")),
    ({"magnitude_jitter_frac": "0.1"}, ("magnitude_jitter_frac",)),
    ({"timing_jitter_s": -1.0}, ("timing_jitter_s = -1.0", ">= 0")),
    ({"timing_jitter_s": math.inf}, ("timing_jitter_s", "finite")),
    ({"timing_jitter_s": 21.0}, ("timing_jitter_s = 21.0", "load_step_start_s = 20.0",
                                 "allowed: 0 <= timing_jitter_s <= 20.0")),
    ({"load_step_mw": 800.0, "magnitude_jitter_frac": 0.1},
     ("magnitude_jitter_frac = 0.1", "load_step_mw", "base_load_mw (850.0)",
      "allowed: 0 <= magnitude_jitter_frac < 0.0625")),
])
def test_bad_jitter_is_refused_naming_the_field_and_the_range(changes, parts) -> None:
    _raises(lambda: get_scenario("price_spike", **changes), *parts)


def test_jitter_that_could_break_the_emergency_is_refused() -> None:
    _raises(lambda: get_scenario("emergency", timing_jitter_s=10.5),
            "timing_jitter_s = 10.5", "event_time_s = 10.0", "<= 10.0")
    _raises(lambda: get_scenario("emergency", contingency_mw=800.0, magnitude_jitter_frac=0.1),
            "contingency_mw", "base_load_mw")
    # the environment's rule, a reserve round before the earliest trip it can draw
    sc = get_scenario("emergency", timing_jitter_s=9.0)
    _raises(lambda: GridSwarmEnv(sc, n_agents=10, trust="hmac"), "dt_s = 1.0",
            "1.0 s", "timing_jitter_s 9.0", "smaller timing_jitter_s")
    GridSwarmEnv(get_scenario("emergency", timing_jitter_s=7.9), n_agents=10, trust="hmac")


def test_scenario_files_accept_the_jitter(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('base = "emergency"\nmagnitude_jitter_frac = 0.2\ntiming_jitter_s = 3.0\n')
    sc = load_scenario_file(path)
    assert (sc.magnitude_jitter_frac, sc.timing_jitter_s) == (0.2, 3.0) and sc.randomized
    path.write_text('base = "emergency"\ntiming_jitter_s = 12\n')
    _raises(lambda: load_scenario_file(path), str(path), "timing_jitter_s = 12",
            "<= 10.0")


def test_the_preset_keeps_every_shipped_scenario_valid() -> None:
    for name in scenario_names():
        GridSwarmEnv(_randomized(name), n_agents=10, trust="hmac")
    assert json.dumps(RANDOMIZE_PRESET)   # recorded as is in results and training records
