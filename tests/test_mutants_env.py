"""Step pipeline behaviours the rest of the suite let change unnoticed (hand-made
mutation audit of :mod:`gridswarm_env.env`)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import gridswarm_env


def _env(n_agents: int = 6):
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=n_agents, trust="hmac")
    env.reset(seed=0)
    return env


def test_actions_naming_an_unknown_agent_instead_of_a_live_one_are_refused() -> None:
    """As many entries as live agents, but one name swapped for an unknown one: a
    ValueError naming both (the dict's size alone is not the check)."""
    env = _env()
    actions = {a: [10, 0] for a in env.agents}
    victim = env.agents[2]
    del actions[victim]
    actions["battery_999"] = [10, 0]
    with pytest.raises(ValueError, match=rf"missing \['{victim}'\].*unknown \['battery_999'\]"):
        env.step(actions)
    assert env.unwrapped.step_index == 0


def test_reward_formula_charges_undelivered_contract_energy_and_the_reserve_gap() -> None:
    """``GridSwarmEnv._settle`` by hand, one 1 s step (h = 1/3600), nothing else moving:

    * battery A: contract C = +1 MW at π = 50 $/MWh, planned 1 MW, executed 0.6 MW:
      s = 0.4, d = 0.6, g = 0 → scale·(π·d − c_bat·|p| − λ·(|C| − d))·h;
    * battery B: no contract, 2 MW of reserve fully active (a = 1), planned 2 MW,
      executed 0.5 MW: s = 1.5, d = 0, g = min(max(1.5 − 0, 0), 2·1) = 1.5 →
      scale·(− c_bat·|p| − λ·g)·h (the activated reserve it did not deliver).
    """
    from gridswarm_env.env import GridSwarmEnv
    from gridswarm_env.fleet import KIND_BATTERY

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    n = env.n_agents
    a, b = np.flatnonzero(env.fleet.kind == KIND_BATTERY)[:2]
    planned, p_exec, contract = np.zeros(n), np.zeros(n), np.zeros(n)
    planned[a], p_exec[a], contract[a] = 1.0, 0.6, 1.0
    planned[b], p_exec[b] = 2.0, 0.5
    env.reserve_mw = np.zeros(n)
    env.reserve_mw[b] = 2.0
    share = np.zeros(n)
    share[b] = 1.0
    ex = SimpleNamespace(planned_mean_mw=planned, p_mean_mw=p_exec, reserve_share=share,
                         energy_delta_mwh=np.zeros(n), p_mean_sum_mw=float(p_exec.sum()))
    env._dev_sum_hz = 0.0                             # at 60 Hz: no grid term
    rewards = env._settle(ex, contract, np.full(n, 50.0), p_exec, 0, np.full(20, 60.0))
    h, lam, wear, scale = 1.0 / 3600.0, 500.0, 40.0, 100.0
    want = np.zeros(n)
    want[a] = scale * (50.0 * 0.6 - wear * 0.6 - lam * 0.4) * h
    want[b] = scale * (-wear * 0.5 - lam * 1.5) * h
    np.testing.assert_allclose(rewards, want, rtol=1e-12, atol=1e-15)
    # the shared grid term, w·mean|f − 60|/band (0.5 Hz over 20 samples: 0.025 Hz), and
    # the stored energy battery A spent (1 kWh at v = 30 $/MWh) on top
    env._dev_sum_hz = 0.5
    ex.energy_delta_mwh[a] = -0.001
    rewards = env._settle(ex, contract, np.full(n, 50.0), p_exec, 0, np.full(20, 60.0))
    want -= scale * 0.002 * 0.025 / 0.05
    want[a] -= scale * 30.0 * 0.001
    np.testing.assert_allclose(rewards, want, rtol=1e-12, atol=1e-15)


def test_signal_age_feature_is_capped_at_ten_steps() -> None:
    """``signal_age`` = min(steps since the last signal, 10) / 10: a signal 50 steps old
    reads like one 10 steps old (1.0), not 5."""
    from gridswarm_env.env import OBS_FIELDS, GridSwarmEnv

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    col = OBS_FIELDS.index("signal_age")
    env.sig_age[:] = 3.0
    np.testing.assert_allclose(env.observations_array()[:, col], 0.3, rtol=1e-6)
    env.sig_age[:] = 50.0
    np.testing.assert_array_equal(env.observations_array()[:, col], 1.0)


def test_ev_shortfall_feature_is_zero_once_the_ev_has_left() -> None:
    """``ev_shortfall_soc`` = max(departure_soc − soc, 0) while plugged in, 0 after
    departure (nothing can be done about it any more)."""
    from gridswarm_env.env import OBS_FIELDS, GridSwarmEnv
    from gridswarm_env.fleet import KIND_EV

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    col = OBS_FIELDS.index("ev_shortfall_soc")
    ev = np.flatnonzero(env.fleet.kind == KIND_EV)
    want = np.maximum(env.fleet.departure_soc[ev] - env.fleet.soc[ev], 0.0)
    assert (want > 0).all()
    np.testing.assert_allclose(env.observations_array()[ev, col], want, rtol=1e-6)
    env.fleet.plugged[ev[0]] = False
    obs = env.observations_array()
    assert obs[ev[0], col] == 0.0
    np.testing.assert_allclose(obs[ev[1:], col], want[1:], rtol=1e-6)


def test_time_features_follow_the_24_hour_clock_and_departures_12_hours() -> None:
    """``tod_sin``/``tod_cos`` = sin/cos(2π·hour/24) of the scenario's clock;
    ``ev_departure_12h`` = min(max(t_departure − t, 0)/43 200 s, 1)."""
    from gridswarm_env.env import OBS_FIELDS, GridSwarmEnv
    from gridswarm_env.fleet import KIND_EV

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    obs = env.observations_array()
    hour = env.scenario.start_hour
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("tod_sin")],
                               math.sin(2 * math.pi * hour / 24.0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("tod_cos")],
                               math.cos(2 * math.pi * hour / 24.0), rtol=1e-6, atol=1e-7)
    ev = np.flatnonzero(env.fleet.kind == KIND_EV)
    col = OBS_FIELDS.index("ev_departure_12h")
    assert ev.size == 2 and env.t_s == 0.0
    for departure_s, want in (([1800.0, 1e6], [1800.0 / 43200.0, 1.0]),   # 30 min; 11 days
                              ([-100.0, 0.0], [0.0, 0.0])):               # already past
        env.fleet.departure_s[ev] = departure_s
        np.testing.assert_allclose(env.observations_array()[ev, col], want, rtol=1e-6)


def test_observations_are_clipped_to_the_box() -> None:
    """The observation space is ``Box(-5, 5)``: a feature beyond it (a request 10^9
    times the flexible capacity) is clipped to ±5, never outside the space."""
    from gridswarm_env.env import OBS_FIELDS, OBS_LIMIT, GridSwarmEnv

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    col = OBS_FIELDS.index("request_rel")
    env.sig_request[:] = [1e12, -1e12, 1e12, -1e12, 1e12, -1e12]
    obs = env.observations_array()
    np.testing.assert_array_equal(obs[:, col], [OBS_LIMIT, -OBS_LIMIT] * 3)
    assert env.observation_space(env.possible_agents[0]).contains(obs[0])
