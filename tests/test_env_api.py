"""PettingZoo API of gridswarm: the official harnesses, spaces, masks, state and bad input.

The harnesses run at the sizes users run (100 agents) with ``trust="hmac"`` for speed;
the trust mode does not change the API.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test

import gridswarm_env
from gridswarm_env.config import (
    EnvConfig,
)
from tests.episodes import play

N_POWER, N_PRICE = 21, 11


def _parallel(**kwargs):
    kwargs.setdefault("trust", "hmac")
    return gridswarm_env.parallel_env(**kwargs)


# --------------------------------------------------------------------------- harnesses
def test_parallel_api_test_100_agents() -> None:
    env = _parallel(scenario="price_spike", n_agents=100)
    parallel_api_test(env, num_cycles=500)
    # the harness ran the whole episode (300 steps < 500 cycles) and the env truncated
    assert env.agents == []
    assert env.step_index == env.scenario.episode_steps


def test_parallel_seed_test() -> None:
    parallel_seed_test(lambda: _parallel(scenario="emergency", n_agents=100), num_cycles=500)


def test_max_cycles_sets_the_episode_length() -> None:
    """RL review: PettingZoo's ``max_cycles`` convention raised TypeError (and
    pettingzoo.test.max_cycles_test failed); it now sets ``episode_steps``."""
    from pettingzoo.test import max_cycles_test

    max_cycles_test(gridswarm_env)
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=5, trust="hmac",
                                     max_cycles=20)
    env.reset(seed=0)
    steps = 0
    while env.agents:
        env.step({a: env.action_space(a).sample() for a in env.agents})
        steps += 1
    assert steps == 20 == env.unwrapped.scenario.episode_steps
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"max_cycles = {bad!r}: expected an integer"):
            gridswarm_env.parallel_env(max_cycles=bad)
    with pytest.raises(ValueError, match=r"event at 10.0 s comes after the episode.s end \(7 "
                                         r"steps.*\(max_cycles = 7 sets episode_steps\)$"):
        gridswarm_env.env(scenario="emergency", n_agents=5, trust="hmac", max_cycles=7)
    # diff review: a numpy count was refused; an unknown scenario was blamed on max_cycles
    assert gridswarm_env.parallel_env(n_agents=5, trust="hmac", max_cycles=np.int64(9)
                                      ).unwrapped.scenario.episode_steps == 9
    with pytest.raises(ValueError, match="^unknown scenario 'nope'"):
        gridswarm_env.parallel_env("nope", max_cycles=5)


def test_aec_api_test() -> None:
    with warnings.catch_warnings():
        # the harness suggests Box/Discrete action spaces; MultiDiscrete is our design
        warnings.filterwarnings("ignore", message="Action space for each agent")
        api_test(gridswarm_env.env(scenario="emergency", n_agents=10, trust="hmac"),
                 num_cycles=200)


def test_render_test_ansi_and_human(capsys: pytest.CaptureFixture[str]) -> None:
    def env_fn(render_mode: str | None = None):
        return gridswarm_env.env(scenario="emergency", n_agents=10, trust="hmac",
                                 render_mode=render_mode)

    render_test(env_fn)
    printed = capsys.readouterr().out
    assert "Hz" in printed and "t=" in printed     # "human" printed frames


def test_render_frames_show_state() -> None:
    env = _parallel(scenario="emergency", n_agents=10, render_mode="ansi")
    env.reset(seed=0)
    first = env.render()
    assert isinstance(first, str) and "f= 60.0000Hz" in first
    env.step({a: [N_POWER // 2, 0] for a in env.agents})
    second = env.render()
    assert second != first and "t=    1.0s" in second
    # review: the frame showed only the request ("req="), which reads as over-delivery
    # once the reserve covers a trip; it shows the requirement beside it, as demo.py does
    while env.unwrapped.t_s < 13.0:
        env.step({a: [N_POWER // 2, 0] for a in env.agents})
    info = env.unwrapped.last_info
    frame = env.render()
    assert " req=" not in frame
    assert f"need={info['requirement_mw']:+7.2f}MW request={info['request_mw']:+7.2f}MW" in frame
    shadow = _parallel(scenario="emergency", n_agents=10, render_mode="ansi", shadow=True)
    shadow.reset(seed=0)
    assert "[SHADOW]" in shadow.render()


def test_render_without_mode_warns_and_returns_none() -> None:
    env = _parallel(scenario="emergency", n_agents=10)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


# --------------------------------------------------------------------------- metadata and spaces
def test_metadata() -> None:
    env = _parallel(n_agents=10)
    assert env.metadata["name"] == "gridswarm_v0"
    assert set(env.metadata["render_modes"]) == {"ansi", "human"}
    assert env.metadata["is_parallelizable"] is True


def test_spaces_cached_and_shaped() -> None:
    env = _parallel(n_agents=10)
    a, b = env.possible_agents[0], env.possible_agents[-1]
    assert env.observation_space(a) is env.observation_space(a)
    assert env.action_space(a) is env.action_space(a)
    assert env.observation_space(b) is env.observation_space(b)
    assert env.action_space(b) is env.action_space(b)
    obs_space, act_space = env.observation_space(a), env.action_space(a)
    assert isinstance(obs_space, spaces.Box) and obs_space.dtype == np.float32
    assert obs_space.shape == (gridswarm_env.OBS_DIM,) == (len(gridswarm_env.OBS_FIELDS),)
    assert isinstance(act_space, spaces.MultiDiscrete)
    np.testing.assert_array_equal(act_space.nvec, [N_POWER, N_PRICE])
    # the same space for every agent (one action space serves all kinds)
    assert env.action_space(b) == act_space and env.observation_space(b) == obs_space
    # the PettingZoo dicts some wrappers read hold the same objects
    assert list(env.action_spaces) == list(env.observation_spaces) == env.possible_agents
    assert all(s is act_space for s in env.action_spaces.values())
    assert all(s is obs_space for s in env.observation_spaces.values())


def test_spaces_not_shared_between_instances() -> None:
    e1, e2 = _parallel(n_agents=10), _parallel(n_agents=10)
    a = e1.possible_agents[0]
    e1.action_space(a).seed(1)
    e2.action_space(a).seed(1)
    first = e1.action_space(a).sample()
    assert np.array_equal(e2.action_space(a).sample(), first)


def test_agents_named_by_kind_in_order() -> None:
    env = _parallel(n_agents=10)
    assert env.possible_agents == [
        "solar_000", "solar_001", "solar_002",
        "battery_000", "battery_001", "battery_002", "battery_003",
        "ev_000", "ev_001", "ev_002"]
    assert env.agents == []
    env.reset(seed=0)
    assert env.agents == env.possible_agents and env.agents is not env.possible_agents
    assert env.num_agents == 10 and env.max_num_agents == 10


def test_reset_observations_and_infos() -> None:
    env = _parallel(scenario="price_spike", n_agents=100)
    obs, infos = env.reset(seed=0)
    assert set(obs) == set(infos) == set(env.possible_agents)
    raw_masks = env.unwrapped.action_masks()
    assert raw_masks.shape == (100, N_POWER + N_PRICE) and raw_masks.dtype == bool
    for i, a in enumerate(env.agents):
        assert obs[a].dtype == np.float32 and env.observation_space(a).contains(obs[a])
        mask = infos[a]["action_mask"]
        assert mask.dtype == np.int8 and mask.shape == (N_POWER + N_PRICE,)
        np.testing.assert_array_equal(mask, raw_masks[i])
        assert mask[:N_POWER].any() and mask[N_POWER:].all()
        lo, hi = infos[a]["feasible_mw"]
        assert lo <= 0.0 <= hi
    np.testing.assert_array_equal(np.stack([obs[a] for a in env.agents]),
                                  env.unwrapped.observations_array())


def test_step_returns_dicts_for_every_agent_and_truncates() -> None:
    env = _parallel(scenario="emergency", n_agents=10)
    obs, _ = env.reset(seed=0)
    steps = 0
    while env.agents:
        actions = {a: np.array([N_POWER // 2, 3]) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        steps += 1
        for d in (obs, rewards, terms, truncs, infos):
            assert set(d) == set(env.possible_agents)
        assert not any(terms.values())
        assert all(isinstance(r, float) and np.isfinite(r) for r in rewards.values())
        assert all(infos[a]["action_mask"].dtype == np.int8 for a in infos)
        assert all(v == (steps == env.scenario.episode_steps) for v in truncs.values())
    assert steps == env.scenario.episode_steps == 120
    with pytest.raises(RuntimeError, match="reset"):
        env.step({a: [N_POWER // 2, 0] for a in env.possible_agents})


def test_step_before_reset_raises() -> None:
    env = _parallel(n_agents=10)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({a: [N_POWER // 2, 0] for a in env.possible_agents})
    with pytest.raises(RuntimeError, match="reset"):
        env.step_arrays(np.full(10, N_POWER // 2), np.zeros(10, dtype=np.int64))


def test_state_shape_and_content() -> None:
    env = _parallel(scenario="emergency", n_agents=10)
    env.reset(seed=0)
    n = env.num_agents
    raw = env.unwrapped
    s = env.state()
    assert s.shape == env.state_space.shape == (8 + 3 * n,)
    assert np.all(np.isfinite(s))
    np.testing.assert_array_equal(s[8:8 + n], raw.fleet.soc)
    # the grid starts in the steady state of the initial load noise, a few mHz off 60 Hz
    assert s[0] == 0.0 and s[1] == raw.grid.freq_hz and abs(s[1] - 60.0) < 0.02
    env.step({a: [N_POWER // 2, 0] for a in env.agents})
    s1 = env.state()
    assert s1.shape == (8 + 3 * n,) and s1[0] == 1.0 and s1[7] == 1.0
    assert s1[1] == raw.freq_trace_hz[-1]


def test_dict_and_array_paths_agree() -> None:
    a_env = _parallel(scenario="emergency", n_agents=30).unwrapped
    b_env = _parallel(scenario="emergency", n_agents=30).unwrapped
    a_env.reset(seed=5)
    b_env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(25):
        p = rng.integers(0, N_POWER, 30)
        q = rng.integers(0, N_PRICE, 30)
        obs_a, rew_a, _, _, _ = a_env.step(
            {a: [int(p[i]), int(q[i])] for i, a in enumerate(a_env.agents)})
        obs_b, rew_b, _, _ = b_env.step_arrays(p, q)
        np.testing.assert_array_equal(np.stack([obs_a[a] for a in a_env.possible_agents]), obs_b)
        np.testing.assert_array_equal([rew_a[a] for a in a_env.possible_agents], rew_b)


def test_aec_wrapper_steps_agent_by_agent() -> None:
    aec = gridswarm_env.env(scenario="emergency", n_agents=10, trust="hmac")
    aec.reset(seed=0)
    assert aec.unwrapped.metadata["name"] == "gridswarm_v0"
    seen = []
    for agent in aec.agent_iter(max_iter=30):
        _obs, _rew, term, trunc, info = aec.last()
        assert info["action_mask"].shape == (N_POWER + N_PRICE,)
        seen.append(agent)
        aec.step(None if term or trunc else np.array([N_POWER // 2, 0]))
    assert seen[:10] == aec.possible_agents
    assert aec.unwrapped.step_index == 3


def _aec_action(k: int, i: int) -> np.ndarray:
    """A valid action of agent ``i`` at step ``k`` (varied, so a lost one would show)."""
    return np.array([(3 * k + 5 * i) % N_POWER, (k + i) % N_PRICE])


_NO_BAD = object()


def _aec_episode(bad=_NO_BAD, at: tuple[int, int] = (0, 1), before=None):
    """Play a whole AEC episode with :func:`_aec_action`; at step ``at[0]`` agent ``at[1]``
    first submits ``bad`` (which must raise a ValueError, leaving the turn where it was).
    ``before(aec)`` runs after reset. Returns every ``last()`` and the error message."""
    aec = gridswarm_env.env(scenario="emergency", n_agents=5, trust="hmac")
    aec.reset(seed=0)
    if before is not None:
        before(aec)
    seen, message = [], None
    for agent in aec.agent_iter():
        obs, rew, term, trunc, _ = aec.last()
        seen.append((agent, obs.copy(), rew, term, trunc))
        if term or trunc:
            aec.step(None)
            continue
        k, i = aec.unwrapped.step_index, aec.possible_agents.index(agent)
        if bad is not _NO_BAD and (k, i) == at:
            with pytest.raises(ValueError) as err:
                aec.step(bad)
            message = str(err.value)
            assert aec.agent_selection == agent and aec.unwrapped.step_index == k
        aec.step(_aec_action(k, i))
    assert aec.unwrapped.step_index == aec.unwrapped.scenario.episode_steps
    return seen, message


def _assert_same_episode(got, want) -> None:
    assert [row[0] for row in got] == [row[0] for row in want]
    np.testing.assert_array_equal(np.stack([row[1] for row in got]),
                                  np.stack([row[1] for row in want]))
    assert [row[2:] for row in got] == [row[2:] for row in want]


@pytest.mark.parametrize("bad", [np.array([np.nan, 1.0]), np.array([N_POWER, 0]), [-1, 0],
                                 np.array([2.5, 0]), np.array([10, 0, 0]), ["10", "0"], None])
@pytest.mark.parametrize("at", [(0, 1), (7, 4)], ids=["step0-agent1", "step7-last-agent"])
def test_aec_refuses_a_bad_action_at_its_own_step_and_takes_a_valid_one(bad, at) -> None:
    """Reviewer finding: the AEC API (PettingZoo's ``parallel_to_aec``) stored a bad action,
    raised only at the round's last agent, and every later step() raised the same error
    (t_s stuck at 0) until reset(). Now the agent's own step() raises, with the parallel
    step's message, nothing is stored, and a valid action re-submitted by the same agent
    gives the episode of only valid actions, bit for bit."""
    clean, _ = _aec_episode()
    got, message = _aec_episode(bad, at)
    _assert_same_episode(got, clean)
    k, i = at
    agent = gridswarm_env.env(scenario="emergency", n_agents=5,
                              trust="hmac").possible_agents[i]
    assert message.startswith(f"action of {agent} = ")
    assert f"expected 2 integers [power level 0..{N_POWER - 1}, price level 0..{N_PRICE - 1}]" \
        in message
    # the same message as the parallel step's for that action (one check)
    par = _parallel(scenario="emergency", n_agents=5)
    par.reset(seed=0)
    actions = {a: _aec_action(0, j) for j, a in enumerate(par.agents)}
    actions[agent] = bad
    with pytest.raises(ValueError) as err:
        par.step(actions)
    assert str(err.value) == message


def test_aec_a_done_agents_action_is_refused_and_none_still_steps() -> None:
    """Diff review: a done agent's step() with an action hit PettingZoo's bare assert
    after it had dropped the agent's entry, and every later step raised KeyError. It is
    refused first; None then steps as PettingZoo expects. A wrapped parallel env works."""
    from pettingzoo.utils.wrappers import BaseParallelWrapper

    from gridswarm_env.aec import aec_env

    aec = gridswarm_env.env(scenario="price_spike", n_agents=3, trust="hmac", max_cycles=2)
    aec.reset(seed=0)
    for agent in aec.agent_iter():
        if aec.terminations[agent] or aec.truncations[agent]:
            with pytest.raises(ValueError, match=f"^{agent} is done .*takes None, got"):
                aec.step(np.array([1, 1]))
            aec.step(None)
        else:
            aec.step(np.array([N_POWER // 2, 0]))
    assert aec.agents == []
    wrapped = aec_env(BaseParallelWrapper(gridswarm_env.parallel_env(
        scenario="price_spike", n_agents=3, trust="hmac")))
    wrapped.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        wrapped.step(np.array([N_POWER, 0]))
    wrapped.step(np.array([N_POWER // 2, 0]))


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["oserror", "ctrl_c"])
def test_aec_failed_parallel_step_drops_the_rounds_actions(error: BaseException) -> None:
    """If the parallel step itself fails at the last agent's step, the stored actions are
    discarded (they were handed over again at every later step) and the round starts over
    at its first agent; the error says so and what to do. Ctrl-C (KeyboardInterrupt)
    reaches the user as itself, not wrapped in a RuntimeError that an ``except Exception``
    in a training loop would swallow; its round starts over too."""
    def fail_once(aec) -> None:
        raw = aec.unwrapped

        def failing_step(actions):
            del raw.step                     # the next round steps for real
            raise error
        raw.step = failing_step
        for _ in aec.possible_agents[:-1]:
            aec.step(np.array([0, N_PRICE - 1]))    # not the actions played afterwards
        if isinstance(error, Exception):
            with pytest.raises(RuntimeError, match=r"ev_000's step\(\)\) failed: OSError: disk "
                               r"full; this round's actions were discarded and agent_selection "
                               r"is back at solar_000: call reset\(\)") as err:
                aec.step(np.array([0, N_PRICE - 1]))
            assert err.value.__cause__ is error
        else:
            with pytest.raises(KeyboardInterrupt) as err:
                aec.step(np.array([0, N_PRICE - 1]))
            assert err.value is error
        assert aec.agent_selection == "solar_000" and raw.step_index == 0

    _assert_same_episode(_aec_episode(before=fail_once)[0], _aec_episode()[0])


def test_parallel_env_respects_config_fields() -> None:
    env = gridswarm_env.parallel_env(config=EnvConfig(n_agents=10, trust="hmac", shadow=True))
    assert len(env.possible_agents) == 10
    assert env.unwrapped.config.trust == "hmac" and env.unwrapped.config.shadow is True


# --------------------------------------------------------------------------- bad actions
BAD_ACTIONS = [
    pytest.param([N_POWER, 0], id="power-level-21"),
    pytest.param([-1, 0], id="negative"),
    pytest.param([0, N_PRICE], id="price-level-11"),
    pytest.param([float("nan"), 0], id="nan"),
    pytest.param([float("inf"), 0], id="inf"),
    pytest.param([3.5, 0], id="float-3.5"),
    pytest.param([1, 2, 3], id="three-values"),
    pytest.param(7, id="scalar"),
    pytest.param("up", id="string"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("bad", BAD_ACTIONS)
def test_bad_action_names_agent(bad) -> None:
    env = _parallel(scenario="emergency", n_agents=10)
    env.reset(seed=0)
    victim = env.possible_agents[4]
    actions = {a: [N_POWER // 2, 0] for a in env.agents}
    actions[victim] = bad
    with pytest.raises(ValueError, match=victim):
        env.step(actions)


def test_missing_and_unknown_agents_named() -> None:
    env = _parallel(scenario="emergency", n_agents=10)
    env.reset(seed=0)
    actions = {a: [N_POWER // 2, 0] for a in env.agents}
    missing = dict(actions)
    del missing["ev_001"]
    with pytest.raises(ValueError, match="ev_001"):
        env.step(missing)
    with pytest.raises(ValueError, match="battery_999"):
        env.step({**actions, "battery_999": [N_POWER // 2, 0]})
    with pytest.raises(ValueError, match="dict"):
        env.step([[N_POWER // 2, 0]] * 10)


def test_bad_array_actions() -> None:
    raw = _parallel(scenario="emergency", n_agents=10).unwrapped
    raw.reset(seed=0)
    zero = np.zeros(10, dtype=np.int64)
    ok = np.full(10, N_POWER // 2)
    with pytest.raises(ValueError, match=r"shape \(10,\), one level per agent; got \(9,\) "
                       r"and \(9,\)"):   # the review: the shape received was not said
        raw.step_arrays(ok[:9], zero[:9])
    with pytest.raises(ValueError, match="integer arrays .* got dtypes float64 and int64"):
        raw.step_arrays(ok.astype(float), zero)
    bad = ok.copy()
    bad[7] = N_POWER
    with pytest.raises(ValueError, match=raw.possible_agents[7]):
        raw.step_arrays(bad, zero)
    with pytest.raises(ValueError, match=raw.possible_agents[2]):
        raw.step_arrays(ok, np.where(np.arange(10) == 2, -1, 0))


def test_rejected_step_leaves_state_untouched() -> None:
    """A refused step changes nothing: the next valid steps match a run without it."""
    rng = np.random.default_rng(3)
    plan = [(rng.integers(0, N_POWER, 30), rng.integers(0, N_PRICE, 30)) for _ in range(12)]
    runs = []
    for with_bad_calls in (False, True):
        env = _parallel(scenario="emergency", n_agents=30)
        env.reset(seed=11)
        trace = []
        for k, (p, q) in enumerate(plan):
            actions = {a: [int(p[i]), int(q[i])] for i, a in enumerate(env.agents)}
            if with_bad_calls and k in (0, 5, 10):   # reserve rounds, the trip, energy rounds
                broken = dict(actions)
                broken[env.agents[k]] = [N_POWER, 0]
                with pytest.raises(ValueError):
                    env.step(broken)
                with pytest.raises(ValueError):
                    env.unwrapped.step_arrays(p.astype(float), q)
            obs, rew, _, _, infos = env.step(actions)
            trace.append((np.stack(list(obs.values())), np.array(list(rew.values())),
                          np.stack([i["action_mask"] for i in infos.values()])))
        runs.append((trace, env.unwrapped.episode_metrics(), env.unwrapped.audit_log.head_hash))
    (t0, m0, h0), (t1, m1, h1) = runs
    for a, b in zip(t0, t1, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert m0["blocked_attempts"] == m1["blocked_attempts"]
    assert m0["bus_published"] == m1["bus_published"]
    assert m0["contracts_signed"] == m1["contracts_signed"]
    assert h0 == h1


def test_package_env_stays_the_aec_factory() -> None:
    """Importing the submodule ``gridswarm_env.env`` must not shadow the ``env()`` factory."""
    import importlib

    importlib.import_module("gridswarm_env.env")
    gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac")
    assert callable(gridswarm_env.env) and gridswarm_env.env.__module__ == "gridswarm_env"
    assert gridswarm_env.raw_env is gridswarm_env.GridSwarmEnv
    aec = gridswarm_env.env(scenario="emergency", n_agents=3, trust="hmac")
    assert aec.possible_agents == ["solar_000", "battery_000", "ev_000"]


# --------------------------------------------------------------------------- reviewer findings
@pytest.mark.parametrize("call", ["action_masks", "observations_array", "state",
                                  "episode_metrics", "render"])
def test_views_before_reset_say_call_reset(call):
    env = gridswarm_env.parallel_env(n_agents=4, render_mode="ansi")
    with pytest.raises(RuntimeError, match=r"before reset\(\); call reset\(\) first"):
        getattr(env.unwrapped, call)()


@pytest.mark.parametrize("seed", [-1, 1.5, "abc", True])
def test_bad_reset_seed_is_named(seed):
    env = gridswarm_env.parallel_env(n_agents=4)
    with pytest.raises(ValueError, match=r"seed=.* must be a non-negative int or None"):
        env.reset(seed=seed)


@pytest.mark.parametrize("options", ["abc", 3, ["seed", 1]])
def test_reset_options_that_are_not_a_dict_are_refused(options):
    """Fuzzing: ``reset(options="abc")`` was silently ignored; options that are not a
    dict are refused and the last episode is kept (a dict is accepted and read for
    nothing: PettingZoo's API test passes one)."""
    env = gridswarm_env.parallel_env(n_agents=4)
    env.reset(seed=1)
    before = env.unwrapped.observations_array()
    with pytest.raises(ValueError, match=r"expected a dict or None; this environment reads "
                                         r"no reset options"):
        env.reset(seed=2, options=options)
    np.testing.assert_array_equal(env.unwrapped.observations_array(), before)
    env.reset(seed=2, options={"unused": 1})


def test_reset_options_with_a_seed_warn_that_it_is_not_the_seed():
    """Fuzzing (session 23): ``reset(options={"seed": 3})`` ignored the dict without a
    word (the episode was not seeded with 3). Options stay accepted and unread (PettingZoo's
    API test passes ``{"options": 1}``: no warning for it); a ``seed`` among them warns."""
    env = gridswarm_env.parallel_env(n_agents=4, trust="hmac")
    with pytest.warns(UserWarning, match=r"^reset\(options=\{'seed': 3, \.\.\.\}\): reset "
                                         r"options are read for nothing and do not seed this "
                                         r"reset \(it uses the constructor's seed or the stream "
                                         r"of the last seeded reset\); pass reset\(seed=3\) to "
                                         r"seed it$"):
        env.reset(options={"seed": 3})
    # (the session's diff review: it said "seeded with seed=None" of an episode the
    # constructor's seed=0 seeded)
    seeded = gridswarm_env.parallel_env(n_agents=4, trust="hmac", seed=0)
    with pytest.warns(UserWarning, match="the constructor's seed"):
        obs, _ = seeded.reset(options={"seed": 3})
    fresh, _ = gridswarm_env.parallel_env(n_agents=4, trust="hmac").reset(seed=0)
    assert all(np.array_equal(obs[a], fresh[a]) for a in obs)
    with pytest.warns(UserWarning, match="its seed= argument"):
        env.reset(seed=1, options={"seed": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(seed=0, options={"options": 1})


def test_numpy_integer_seed_is_a_seed():
    a, b = (gridswarm_env.parallel_env(n_agents=4) for _ in range(2))
    obs_a, _ = a.reset(seed=np.int64(7))
    obs_b, _ = b.reset(seed=7)
    assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)


@pytest.mark.parametrize("field", ["battery_power_mw", "ev_power_mw", "solar_capacity_mw"])
def test_zero_power_kind_gives_observations_inside_the_space(field):
    from gridswarm_env.config import FleetConfig

    cfg = EnvConfig(trust="hmac", fleet=FleetConfig(**{field: 0.0}))
    env = gridswarm_env.parallel_env(n_agents=12, config=cfg)
    obs, _ = env.reset(seed=0)
    space = env.observation_space(env.possible_agents[0])
    for _ in range(3):
        assert all(space.contains(o) for o in obs.values())
        obs, *_ = env.step({a: np.array([10, 5]) for a in env.agents})


def test_shadow_infos_carry_each_agents_would_be_dispatch():
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=20, trust="hmac",
                                     shadow=True)
    _obs, infos = env.reset(seed=0)
    assert all(i["would_dispatch_mw"] == 0.0 for i in infos.values())
    raw = env.unwrapped
    from policies import make_policy

    policy = make_policy("heuristic")
    policy.reset(raw, seed=0)
    total = 0.0
    while env.agents:
        act = policy.act(raw.observations_array(), raw.action_masks())
        _o, _r, _te, _tr, infos = env.step({a: act[i] for i, a in enumerate(env.agents)})
        per_agent = sum(i["would_dispatch_mw"] for i in infos.values())
        assert per_agent == pytest.approx(raw.last_info["would_dispatch_mw"], abs=1e-9)
        total += abs(per_agent)
    assert total > 0
    m = raw.episode_metrics()
    # nothing was dispatched: no response (the activated reserve moved nothing) and no
    # response latency, but the would-be one is reported
    assert m["emergency_response_mw_100ms"] == 0.0
    assert m["emergency_response_latency_ms"] is None
    assert 0 < m["shadow_response_latency_ms"] < 100


@pytest.mark.parametrize(("scenario", "policy"), [("price_spike", "heuristic"),
                                                ("solar_surplus", "random")])
def test_shadow_rewards_charge_nothing_that_was_not_dispatched(scenario, policy):
    """Reviewer: shadow mode charged degradation on would-be dispatch but paid nothing.
    Random bids in a surplus also leave would-be deliveries short of their contracts:
    shadow mode charges no undelivered penalty for them either."""
    env = gridswarm_env.parallel_env(scenario=scenario, n_agents=30, trust="hmac",
                                     shadow=True)
    raw = env.unwrapped
    would = 0.0
    for rewards, info in play(raw, policy):
        would += abs(info["would_dispatch_mw"])
        # only the shared grid term remains: the same (non-positive) reward for everyone
        assert np.all(rewards == rewards[0]) and rewards[0] <= 0.0
    assert would > 0
    m = raw.episode_metrics()
    assert m["balancing_payments"] == 0.0 and m["battery_throughput_mwh"] == 0.0


def test_audit_entries_kpi_is_per_episode():
    """Reviewer: it counted every episode the env had run (11, 25, 40 ...)."""
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    raw = env.unwrapped
    counts = []
    for seed in (0, 5, 0):
        env.reset(seed=seed)
        while env.agents:
            raw.step_arrays(np.full(10, 10), np.zeros(10, dtype=int))
        counts.append(raw.episode_metrics()["audit_entries"])
    assert counts[0] == counts[2] > 0
    fresh = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    fresh.reset(seed=0)
    while fresh.agents:
        fresh.unwrapped.step_arrays(np.full(10, 10), np.zeros(10, dtype=int))
    assert fresh.unwrapped.episode_metrics()["audit_entries"] == counts[0]


def test_an_interrupted_step_asks_for_reset_and_reset_recovers() -> None:
    """Fuzzing review: a step stopped half-way (an exception escaping it, e.g. Ctrl-C)
    left the environment stuck with "time cannot go backwards" from the bus."""
    import gc

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=10, trust="hmac")
    raw = env.unwrapped
    raw.reset(seed=0)
    settle = raw._settle

    def interrupted(*args, **kwargs):   # Ctrl-C after the bus and the market moved on
        if raw.step_index == 5:
            raise KeyboardInterrupt
        return settle(*args, **kwargs)

    raw._settle = interrupted
    zero = np.full(raw.n_agents, raw.config.market.n_power_levels // 2)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(10):
            raw.step_arrays(zero, zero * 0)
    assert gc.isenabled()
    for call in (lambda: raw.step_arrays(zero, zero * 0),
                 lambda: env.step({a: [10, 0] for a in env.agents})):
        with pytest.raises(RuntimeError, match=r"stopped half-way \(KeyboardInterrupt\).*reset"):
            call()
    assert raw.episode_metrics()["steps"] == 5      # the KPIs so far can still be read
    raw._settle = settle
    raw.reset(seed=0)
    raw.step_arrays(zero, zero * 0)
    assert raw.step_index == 1


@pytest.mark.parametrize("bad", [["10", "0"], np.array([10, 0], dtype=object)])
def test_dict_actions_must_be_numbers(bad) -> None:
    """Fuzzing review: strings and object arrays were converted silently (step_arrays
    refuses them)."""
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=3, trust="hmac")
    env.reset(seed=0)
    actions = {a: [10, 0] for a in env.agents}
    actions[env.agents[1]] = bad
    with pytest.raises(ValueError, match=rf"action of {env.agents[1]} = .*expected 2 integers"):
        env.step(actions)
    env.step({a: [10, 0] for a in env.agents})     # nothing was stepped before
    assert env.unwrapped.step_index == 1


@pytest.mark.parametrize("bad", [[True, 0], (np.True_, 0), [10, False], np.array([True, False]),
                                 np.ma.masked_array([10, 0], mask=[True, False])],
                         ids=["bool-list", "numpy-bool-tuple", "bool-price", "bool-array",
                              "masked-entry"])
@pytest.mark.parametrize("api", ["dict", "aec"])
def test_bool_and_masked_actions_are_refused_among_valid_ones(bad, api) -> None:
    """Fuzzing review (session 23): an action holding a bool, or a bool array among int
    ones, was turned into levels (``[True, 0]`` bid power level 1) because numpy
    converts the whole batch to int, while a batch of only bool arrays was refused; a
    masked entry bid the hidden value under the mask. Both are refused, naming the
    agent, and the next valid step plays as if nothing had been sent."""
    def make():
        if api == "aec":
            aec = gridswarm_env.env(scenario="emergency", n_agents=5, trust="hmac")
            aec.reset(seed=0)
            return aec
        par = _parallel(scenario="emergency", n_agents=5)
        par.reset(seed=0)
        return par

    env, clean = make(), make()
    agent = env.unwrapped.possible_agents[1]
    with pytest.raises(ValueError) as err:
        if api == "aec":
            env.step(np.array([10, 0]))           # agent 0: valid, stored
            env.step(bad)                         # agent 1: refused, nothing stored
        else:
            actions = {a: np.array([10, 0]) for a in env.agents}
            actions[agent] = bad
            env.step(actions)
    message = str(err.value)
    assert message.startswith(f"action of {agent} = ")
    assert ("a bool is not a level" in message or "masked (missing) entry" in message)
    assert message.endswith(f"expected 2 integers [power level 0..{N_POWER - 1}, "
                            f"price level 0..{N_PRICE - 1}]")
    for e in (env, clean):
        if api == "aec":
            for _ in range(5 if e is clean else 4):
                e.step(np.array([10, 0]))
        else:
            e.step({a: np.array([10, 0]) for a in e.agents})
    np.testing.assert_array_equal(env.unwrapped.observations_array(),
                                  clean.unwrapped.observations_array())
    assert env.unwrapped.last_info == clean.unwrapped.last_info


# --------------------------------------------------------------------------- construction warnings
def test_fewer_agents_than_kinds_warns_which_capacity_is_left_out() -> None:
    """Energy review: at n_agents = 1 or 2 whole kinds (115 MW of PV, 50 MW of EVs) had no
    agent and vanished silently, so the scenario no longer behaved as at larger fleets."""
    import warnings

    from gridswarm_env.env import GridSwarmEnv

    with pytest.warns(UserWarning, match=r"n_agents=1 .*solar \(115\.2 MW\), ev \(50 MW\)"):
        GridSwarmEnv("price_spike", n_agents=1, trust="hmac")
    with pytest.warns(UserWarning, match=r"n_agents=2 .*: ev \(50 MW\): no agent"):
        GridSwarmEnv("price_spike", n_agents=2, trust="hmac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GridSwarmEnv("price_spike", n_agents=3, trust="hmac")


@pytest.mark.parametrize("build", ["parallel_env", "env", "GridSwarmEnv"])
def test_fewer_agents_warning_points_at_the_callers_line(build) -> None:
    """First-use review: the warning's stacklevel named the package's own
    ``return GridSwarmEnv(...)`` line in ``parallel_env``, printed under the message."""
    import gridswarm_env

    make = getattr(gridswarm_env, build) if build != "GridSwarmEnv" else gridswarm_env.raw_env
    with pytest.warns(UserWarning, match="fewer than the fleet's DER kinds") as record:
        make("price_spike", n_agents=2, trust="hmac")
    [warning] = [w for w in record if "DER kinds" in str(w.message)]
    assert warning.filename == __file__


# --------------------------------------------------------------------------- actions naming agents
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


def test_editing_returned_masks_leaves_the_environments_masks_alone() -> None:
    """``action_masks()`` returns a new array each call: a policy that edits it in place
    (e.g. to forbid levels of its own) does not change what the environment reports."""
    env = _parallel(scenario="price_spike", n_agents=10).unwrapped
    env.reset(seed=0)
    want = env.action_masks().copy()
    assert want.any()
    env.action_masks()[:] = False
    np.testing.assert_array_equal(env.action_masks(), want)


@pytest.mark.parametrize("path", [True, 1.5, b"x", ["a"]])
def test_audit_path_that_is_not_a_path_is_refused(path, tmp_path, monkeypatch):
    # str(True) was a file name: the env wrote its audit trail to './True'
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"EnvConfig.audit_path = .*expected a file path"):
        gridswarm_env.parallel_env(n_agents=4, trust="hmac", audit_path=path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("adversary", ["abc", 1.5, 0])
def test_adversary_that_is_not_callable_is_refused(adversary):
    # it was accepted and failed mid-episode ("'str' object is not callable")
    with pytest.raises(ValueError, match=r"GridSwarmEnv adversary = .*expected a callable"):
        gridswarm_env.parallel_env(n_agents=4, trust="hmac", adversary=adversary)


def test_a_never_reset_env_pickles_and_copies_as_a_rebuilt_env(tmp_path) -> None:
    """RL review: pickling (cloudpickle, as SuperSuit's vector builders do) and
    ``copy.deepcopy`` raised, since the env holds its private keys. Before its first
    reset a copy is the same environment rebuilt from its arguments, with its own keys
    (never the original's) and the same trajectory bit for bit; a reset env, or one
    writing an audit file, is refused with a message naming the way out (a factory)."""
    import copy
    import pickle

    from gridswarm_env.scenarios import get_scenario
    from tests.episodes import play

    scenario = get_scenario("emergency", episode_steps=30)
    original = gridswarm_env.parallel_env(scenario=scenario, n_agents=12, trust="hmac",
                                          limits={"battery": {"soc_min": 0.3}})
    copies = [pickle.loads(pickle.dumps(original)), copy.deepcopy(original)]
    for clone in copies:
        assert clone is not original and clone.registry is not original.registry
        assert clone.config == original.config and clone.base_scenario == scenario
        assert clone.limits == original.limits
    runs = [list(play(env, seed=5)) for env in (original, *copies)]
    for run in runs[1:]:
        assert len(run) == len(runs[0]) == 30
        for (r0, i0), (r1, i1) in zip(runs[0], run, strict=True):
            np.testing.assert_array_equal(r0, r1)
            assert i0 == i1
    with pytest.raises(TypeError, match=r"has been reset.*factory"):
        pickle.dumps(original)
    with pytest.raises(TypeError, match="has been reset"):
        copy.deepcopy(copies[0])
    streamed = gridswarm_env.parallel_env(n_agents=5, trust="hmac",
                                          audit_path=str(tmp_path / "audit.jsonl"))
    with pytest.raises(TypeError, match="writes the audit file"):
        pickle.dumps(streamed)
    streamed.close()
