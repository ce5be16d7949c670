"""Observation features against their definitions in :mod:`gridswarm_env.env` (a
hand-made mutation audit of env.py): each feature set by hand on a six-agent
``price_spike`` fleet, and the clip to the observation box.
"""

from __future__ import annotations

import math

import numpy as np


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


def _stepped(steps: int, **kwargs):
    """A six-agent ``solar_surplus`` environment after ``steps`` heuristic steps (its
    surplus, from t = 20 s, is cleared and executed by 22 s)."""
    from gridswarm_env.env import GridSwarmEnv
    from policies.heuristic import HeuristicPolicy

    env = GridSwarmEnv("solar_surplus", n_agents=6, trust="hmac", **kwargs)
    env.reset(seed=0)
    policy = HeuristicPolicy()
    policy.reset(env)
    obs = env.observations_array()
    for _ in range(steps):
        act = policy.act(obs, env.action_masks())
        obs, *_ = env.step_arrays(act[:, 0], act[:, 1])
    return env, obs


def test_power_features_are_per_unit_of_rated_power() -> None:
    """``baseline_rel`` = the planned baseline of the window agents bid for next,
    ``executed_rel`` = the balancing power executed in the step just taken and
    ``reserve_rel`` = the standing reserve, each / the agent's rated power."""
    from gridswarm_env.env import OBS_FIELDS

    env, obs = _stepped(22)
    rated = env.fleet.rated_power_mw
    assert np.abs(env.last_p_mw).max() > 0   # something was executed
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("executed_rel")], env.last_p_mw / rated,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("baseline_rel")],
                               env.kernel.planned_baseline_mw / rated, rtol=1e-6, atol=1e-7)
    env.reserve_held_mw[:] = 0.25 * rated       # held, not activated: standing all the same
    env._refresh_standing()
    np.testing.assert_allclose(env.observations_array()[:, OBS_FIELDS.index("reserve_rel")],
                               0.25, rtol=1e-6)


def test_market_and_grid_features_against_their_definitions() -> None:
    """``freq_dev_rel`` = (delivered frequency − 60 Hz) / 0.5 Hz, ``rocof_rel`` = delivered
    RoCoF in Hz/s, ``last_clearing_price_rel`` = (price − floor) / (cap − floor) of the
    last round that cleared (0 before any), ``progress`` = t / (episode_steps · dt_s)."""
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import OBS_FIELDS

    env, obs = _stepped(12, config=EnvConfig(dt_s=2.0))
    sc = env.scenario
    price = env.last_clearing_price
    assert not math.isnan(price) and sc.price_floor_per_mwh != 0
    np.testing.assert_allclose(
        obs[:, OBS_FIELDS.index("last_clearing_price_rel")],
        (price - sc.price_floor_per_mwh) / (sc.price_cap_per_mwh - sc.price_floor_per_mwh),
        rtol=1e-6)
    assert env.t_s == 24.0
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("progress")],
                               24.0 / (sc.episode_steps * 2.0), rtol=1e-6)
    env.sig_freq[:] = 59.9
    env.sig_rocof[:] = -0.3
    obs = env.observations_array()
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("freq_dev_rel")], -0.2, rtol=1e-5)
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("rocof_rel")], -0.3, rtol=1e-6)
    env.reset(seed=0)   # nothing cleared yet
    assert np.all(env.observations_array()[:, OBS_FIELDS.index("last_clearing_price_rel")] == 0.0)
