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
