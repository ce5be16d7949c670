"""Observation features against their definitions in :mod:`gridswarm_env.observations`
(a hand-made mutation audit of the environment's observations): each feature set by hand on a six-agent
``price_spike`` fleet, and the clip to the observation box.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_signal_age_feature_is_capped_at_ten_steps() -> None:
    """``signal_age`` = min(steps since the last signal, 10) / 10: a signal 50 steps old
    reads like one 10 steps old (1.0), not 5."""
    from gridswarm_env.env import OBS_FIELDS, GridSwarmEnv

    env = GridSwarmEnv("price_spike", n_agents=6, trust="hmac")
    env.reset(seed=0)
    col = OBS_FIELDS.index("signal_age")
    env.sig_age_steps[:] = 3.0
    np.testing.assert_allclose(env.observations_array()[:, col], 0.3, rtol=1e-6)
    env.sig_age_steps[:] = 50.0
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
    env.sig_request_mw[:] = [1e12, -1e12, 1e12, -1e12, 1e12, -1e12]
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
    env.reserve_book.refresh_standing()
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
    price = env.last_clearing_price_per_mwh
    assert not math.isnan(price) and sc.price_floor_per_mwh != 0
    np.testing.assert_allclose(
        obs[:, OBS_FIELDS.index("last_clearing_price_rel")],
        (price - sc.price_floor_per_mwh) / (sc.price_cap_per_mwh - sc.price_floor_per_mwh),
        rtol=1e-6)
    assert env.t_s == 24.0
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("progress")],
                               24.0 / (sc.episode_steps * 2.0), rtol=1e-6)
    env.sig_freq_hz[:] = 59.9
    env.sig_rocof_hz_per_s[:] = -0.3
    obs = env.observations_array()
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("freq_dev_rel")], -0.2, rtol=1e-5)
    np.testing.assert_allclose(obs[:, OBS_FIELDS.index("rocof_rel")], -0.3, rtol=1e-6)
    env.reset(seed=0)   # nothing cleared yet
    assert np.all(env.observations_array()[:, OBS_FIELDS.index("last_clearing_price_rel")] == 0.0)



@pytest.mark.parametrize("dt_s", [1.0, 2.0])
def test_observed_frequency_is_the_start_of_the_step_just_run(dt_s: float) -> None:
    """docs/model.md, fields 16-17 and 12: the frequency (and RoCoF) an agent observes at t is the
    operator's last sample when it announced the round, the frequency at t - dt_s (the
    frequency at t is only in ``last_info["freq_hz"]``); the reset observation holds the
    signal fields' initial values, and in ``emergency`` round 0 buys reserve while
    ``product_reserve`` still reads 0 (its signal arrives in the first step)."""
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import OBS_FIELDS, PRODUCT_RESERVE, GridSwarmEnv
    from policies import make_policy

    env = GridSwarmEnv("emergency", n_agents=20, trust="hmac", config=EnvConfig(dt_s=dt_s))
    env.reset(seed=0)
    o = env.observations_array()
    col = {f: OBS_FIELDS.index(f) for f in OBS_FIELDS}
    initial = {"request_rel": 0.0, "price_rel": 0.5, "product_reserve": 0.0, "emergency": 0.0,
               "freq_dev_rel": 0.0, "rocof_rel": 0.0, "signal_age": 1.0,
               "last_clearing_price_rel": 0.0}
    for name, value in initial.items():
        assert np.all(o[:, col[name]] == value), name
    assert env.round_index == 0 and env.round_product == PRODUCT_RESERVE
    policy = make_policy("heuristic", seed=0)
    policy.reset(env, seed=0)
    seen_trip_flag_with_old_frequency = False
    while env.agents:
        f_start = float(env.freq_trace_hz[-1])
        rocof_start = env.last_rocof_hz_per_s
        a = policy.act(o, env.action_masks())
        o, _, _, info = env.step_arrays(a[:, 0], a[:, 1])
        np.testing.assert_allclose(60.0 + 0.5 * o[:, col["freq_dev_rel"]].astype(float),
                                   f_start, atol=1e-5)
        np.testing.assert_allclose(o[:, col["rocof_rel"]], rocof_start, rtol=1e-6, atol=1e-7)
        if o[0, col["emergency"]] and not seen_trip_flag_with_old_frequency:
            # the first observation with the emergency flag still shows the pre-trip sample
            seen_trip_flag_with_old_frequency = True
            assert f_start != info["freq_hz"]
            assert env.t_s - dt_s <= env.scenario.event_time_s
    assert seen_trip_flag_with_old_frequency


def _observed_until(event_time_s: float, until_s: float, config=None
                    ) -> tuple[list, list, list]:
    """Heuristic emergency episode (seed 0, 30 agents) with the trip at ``event_time_s``:
    the observations, masks and announced (round, product, request) the agents had at
    every observation time ``t < until_s``."""
    from gridswarm_env.env import GridSwarmEnv
    from gridswarm_env.scenarios import get_scenario
    from policies import make_policy

    env = GridSwarmEnv(get_scenario("emergency", event_time_s=event_time_s), n_agents=30,
                       trust="hmac", config=config)
    env.reset(seed=0)
    policy = make_policy("heuristic", seed=0)
    policy.reset(env, seed=0)
    obs, masks, rounds = [], [], []
    o = env.observations_array()
    while env.t_s < until_s:
        obs.append(o)
        masks.append(env.action_masks())
        rounds.append((env.round_index, env.round_product, env.round_request_mw))
        a = policy.act(o, masks[-1])
        o = env.step_arrays(a[:, 0], a[:, 1])[0]
    return obs, masks, rounds


@pytest.mark.parametrize("battery_duration_h", [2.7, 0.03])
def test_nothing_observed_before_the_trip_is_detected_depends_on_when_it_will_happen(
        battery_duration_h: float) -> None:
    """Review: the operator stopped its reserve rounds on the scenario's hidden
    ``event_time_s`` (the round whose window starts at the event became an energy
    round), so ``product_reserve`` flipped to 0 one step before anyone could know of
    the trip (t = 9 s for a trip at 10 s, 29 s for one at 30 s); and the kernel sized
    reserve bids by the time left after the event (visible in the masks and feasible
    intervals when the batteries' energy binds: 0.03 h, 108 s at full power). Every
    observation, mask and round announced before the operator detects the trip (event
    + detection delay) must be the same as with the trip moved later, and the reserve
    rounds run until then."""
    from gridswarm_env.config import EnvConfig, FleetConfig
    from gridswarm_env.env import OBS_FIELDS
    from gridswarm_env.scenarios import get_scenario

    cfg = EnvConfig(fleet=FleetConfig(battery_duration_h=battery_duration_h))
    delay = get_scenario("emergency").detection_delay_s
    later = _observed_until(60.0, 60.0, cfg)
    col = OBS_FIELDS.index("product_reserve")
    for event_s in (10.0, 30.0):
        obs, masks, rounds = _observed_until(event_s, event_s + delay, cfg)
        assert len(obs) == int(event_s) + 1   # observations at t = 0, 1, ..., event_s
        for k, (o, m, r) in enumerate(zip(obs, masks, rounds, strict=True)):
            np.testing.assert_array_equal(o, later[0][k], err_msg=f"obs at t = {k} s")
            np.testing.assert_array_equal(m, later[1][k], err_msg=f"mask at t = {k} s")
            assert r == later[2][k], f"round announced by t = {k} s"
        # the operator buys reserve until it knows of the trip: every announced round,
        # also the one whose window contains the trip, is a reserve round
        assert [r[1] for r in rounds] == [1] * len(rounds)
        assert all(np.all(o[:, col] == 1.0) for o in obs[1:])


def _play_price_spike(n_agents: int, steps: int, **env_kwargs):
    """Heuristic price_spike steps (seed 0): yields (env, observations, info) per step."""
    from gridswarm_env.env import GridSwarmEnv
    from policies import make_policy

    env = GridSwarmEnv("price_spike", n_agents=n_agents, trust="hmac", **env_kwargs)
    env.reset(seed=0)
    policy = make_policy("heuristic", seed=0)
    policy.reset(env, seed=0)
    obs = env.observations_array()
    for _ in range(steps):
        act = policy.act(obs, env.action_masks())
        obs, _rewards, _trunc, info = env.step_arrays(act[:, 0], act[:, 1])
        yield env, obs, info


def test_accepted_share_counts_only_the_contracts_that_reached_the_agent() -> None:
    """Review: ``accepted_share`` was set from the operator's clearing, so with every
    contract dropped on the bus an agent read ``accepted_share = 1.0`` with
    ``scheduled_rel = 0.0`` (price_spike, heuristic, seed 0, step 19): it learned of an
    award that never reached it. Here the contracts of the even agents are dropped: they
    read 0 every step, while the odd ones read their contracts' power / their bid."""
    from gridswarm_env.env import OBS_FIELDS

    bids = np.zeros(20)   # the bids of the round being cleared

    def drop_even(env, signed, owners):
        bids[:] = env._bid_rows["power_mw"]
        kept = [(c, o) for c, o in zip(signed, owners, strict=True) if o % 2]
        return [c for c, _ in kept], [o for _, o in kept]

    share = OBS_FIELDS.index("accepted_share")
    accepted = odd_awarded = 0
    for env, obs, info in _play_price_spike(20, 60, adversary=drop_even):
        accepted += info["accepted_mw"] != 0.0
        np.testing.assert_array_equal(obs[0::2, share], 0.0)
        odd = obs[1::2, share]
        odd_awarded += int(np.count_nonzero(odd))
        want = np.divide(np.abs(env.scheduled_p_mw), np.abs(bids),
                         out=np.zeros(env.n_agents), where=bids != 0)[1::2]
        np.testing.assert_allclose(odd, want, rtol=1e-6)
    assert accepted > 10 and odd_awarded > 10


def test_last_clearing_price_is_the_one_announced_to_the_agent() -> None:
    """The clearing price an agent observes travels on the bus, in the round announcement
    the operator publishes at gate closure: an agent whose announcement is still on the
    bus at the observation (latency up to 0.9 s here) reads the price of the last
    announcement that reached it, not the operator's newest (it read the operator's
    variable directly)."""
    from gridswarm_env.bus import BusConfig
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import OBS_FIELDS

    cfg = EnvConfig(bus=BusConfig(latency_mean_s=0.3, latency_max_s=0.9))
    col = OBS_FIELDS.index("last_clearing_price_rel")
    announced = {0: math.nan}   # round -> the clearing price announced with it
    behind_a_change = 0
    for env, obs, _info in _play_price_spike(20, 80, config=cfg):
        sc = env.scenario
        announced[env.round_index] = env.last_clearing_price_per_mwh
        price = np.array([announced[int(r)] for r in env.sig_round])
        want = np.where(np.isnan(price), 0.0, (price - sc.price_floor_per_mwh)
                        / (sc.price_cap_per_mwh - sc.price_floor_per_mwh))
        np.testing.assert_array_equal(obs[:, col], want.astype(np.float32))
        behind_a_change += int(np.count_nonzero(
            (price != env.last_clearing_price_per_mwh) & ~np.isnan(env.last_clearing_price_per_mwh)))
    assert behind_a_change > 0   # some agent's announcement lagged a new price
