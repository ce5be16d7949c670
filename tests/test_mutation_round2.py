"""Second mutation round (session 22): tests that kill mutations which survived the
existing suite in the AEC wrapper, the config validation, the training adapter and
config, the policies, the trust registry and the command lines.

Each test names in its docstring the user-visible behaviour it guards.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gridswarm_env
from gridswarm_env.config import EnvConfig, FleetConfig, rocof_window_substeps


# --------------------------------------------------------------------------- AEC wrapper
def test_aec_ctrl_c_during_the_parallel_step_stays_a_keyboard_interrupt() -> None:
    """Ctrl-C (KeyboardInterrupt) raised inside the parallel step run at the last agent's
    ``step()`` reaches the user as KeyboardInterrupt, not wrapped in a RuntimeError that an
    ``except Exception`` in a training loop would swallow; the round still starts over."""
    aec = gridswarm_env.env(scenario="emergency", n_agents=3, trust="hmac")
    aec.reset(seed=0)
    raw = aec.unwrapped

    def interrupted(actions):
        del raw.step
        raise KeyboardInterrupt
    raw.step = interrupted
    for _ in aec.possible_agents[:-1]:
        aec.step(np.array([10, 0]))
    with pytest.raises(KeyboardInterrupt):
        aec.step(np.array([10, 0]))
    assert aec.agent_selection == aec.possible_agents[0]
    assert raw.step_index == 0


# --------------------------------------------------------------------------- config
def test_fleet_shares_that_do_not_sum_to_one_are_refused() -> None:
    """A fleet whose kind shares sum to 1.05 (a typo in one share) is refused, not
    silently built with 5 % more agents of one kind than asked."""
    with pytest.raises(ValueError, match=r"share_solar \+ share_battery \+ share_ev = .*must "
                                         r"sum to 1"):
        FleetConfig(share_solar=0.35, share_battery=0.4, share_ev=0.3)
    with pytest.raises(ValueError, match="must sum to 1"):
        FleetConfig(share_solar=0.3, share_battery=0.4, share_ev=0.3 + 1e-6)


def test_a_market_deferral_limit_shorter_than_the_step_is_refused() -> None:
    """A CONTROL or MARKET ``max_deferral_s`` shorter than one agent step (but longer than
    gate closure) would drop messages that are on time: EnvConfig refuses it."""
    from gridswarm_env.bus import BusConfig

    inf = float("inf")
    with pytest.raises(ValueError, match=r"max_deferral_s\[CONTROL\] = 0.5 s is shorter than "
                                         r"one agent step"):
        EnvConfig(bus=BusConfig(max_deferral_s=(inf, 0.5, None, None)))
    with pytest.raises(ValueError, match=r"max_deferral_s\[MARKET\] = 0.9 s is shorter"):
        EnvConfig(bus=BusConfig(max_deferral_s=(inf, None, 0.9, None)))
    EnvConfig(bus=BusConfig(max_deferral_s=(inf, 1.0, 1.0, None)))   # one step: accepted


def test_a_rocof_window_longer_than_the_substep_limit_is_refused() -> None:
    """``rocof_window_s`` of more than MAX_SUBSTEPS (2 400) physics sub-steps is refused
    with a message, not accepted (the metrics keep the window's samples)."""
    with pytest.raises(ValueError, match=r"rocof_window_s = 120.05: 2,401 physics sub-steps "
                                         r"of 0.05 s; at most 2,400"):
        EnvConfig(rocof_window_s=120.05)
    assert EnvConfig(rocof_window_s=120.0).rocof_window_s == 120.0


def test_default_rocof_window_is_at_least_one_substep() -> None:
    """With physics sub-steps of 1 s or more the default 0.5 s RoCoF window rounds to 0
    sub-steps (round(0.5) is 0): it is one sub-step instead, as documented ("1 s for 1 s
    sub-steps"), so the RoCoF KPI never measures over an empty window."""
    assert rocof_window_substeps("EnvConfig", None, 1.0, "grid.physics_dt_s") == 1
    assert rocof_window_substeps("EnvConfig", None, 2.0, "grid.physics_dt_s") == 1
    assert rocof_window_substeps("EnvConfig", None, 0.05, "grid.physics_dt_s") == 10


def test_an_empty_scenario_list_is_refused() -> None:
    """Training on ``scenario=[]`` is refused with a message naming the allowed scenarios,
    not a ZeroDivisionError deep in the adapter's scenario cycle."""
    from train.adapter import GridSwarmVecEnv
    from train.config import resolve_scenarios

    with pytest.raises(ValueError, match=r"scenario: empty; allowed: all, "):
        resolve_scenarios(())
    with pytest.raises(ValueError, match=r"scenario: empty"):
        GridSwarmVecEnv(scenario=[], n_agents=1)


# --------------------------------------------------------------------------- policies
def test_random_policy_uses_the_environments_number_of_power_levels() -> None:
    """``random`` on a market with 11 power levels (not the default 21) bids only levels
    its masks allow, power and price alike, and spreads its prices over the price levels:
    the policy takes the split of the mask from the environment it is reset on."""
    from gridswarm_env.config import MarketConfig
    from policies.random import RandomPolicy

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac",
                                     config=EnvConfig(market=MarketConfig(n_power_levels=11)))
    env.reset(seed=0)
    raw = env.unwrapped
    policy = RandomPolicy(seed=0)
    policy.reset(raw, seed=0)
    prices = set()
    for _ in range(5):
        mask = raw.action_masks()
        actions = policy.act(raw.observations_array(), mask)
        assert mask[np.arange(20), actions[:, 0]].all()
        assert mask[np.arange(20), 11 + actions[:, 1]].all()
        prices |= set(actions[:, 1].tolist())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    assert len(prices) > 3


# --------------------------------------------------------------------------- training adapter
def test_seeding_the_adapter_twice_replays_the_same_scenarios_and_observations() -> None:
    """``venv.seed(s); venv.reset()`` twice gives the same first episode both times (its
    scenario of the seeded cycle and its observations), whatever was played in between:
    a seeded evaluation or a re-run must not depend on the adapter's history."""
    from train.adapter import GridSwarmVecEnv

    venv = GridSwarmVecEnv("all", n_agents=3, n_envs=1, seed=0)
    try:
        firsts = []
        for _ in range(2):
            venv.seed(5)
            obs = venv.reset()
            firsts.append((venv.active_envs[0].scenario.name, obs.copy()))
        assert firsts[0][0] == firsts[1][0]
        np.testing.assert_array_equal(firsts[0][1], firsts[1][1])
    finally:
        venv.close()


def test_adapter_refuses_a_zero_reward_clip() -> None:
    """``reward_clip=0`` would clip every reward to 0 (nothing to learn, silently): the
    adapter refuses it as TrainConfig does; None is the way to turn clipping off."""
    from train.adapter import GridSwarmVecEnv

    with pytest.raises(ValueError, match=r"reward_clip = 0.0: must be > 0"):
        GridSwarmVecEnv("emergency", n_agents=1, reward_clip=0.0)


# --------------------------------------------------------------------------- training config
def test_train_config_refuses_a_seed_above_32_bits() -> None:
    """``--seed`` above MAX_SEED (numpy's global seed is 32-bit, and behaviour cloning
    seeds with seed + 1) is refused when the config is made, not a crash in numpy after
    the run directory was created."""
    from train.config import MAX_SEED, TrainConfig

    with pytest.raises(ValueError, match=r"seed \(--seed\) = 4294967295: must be an integer "
                                         r"in 0\.\.4294967294"):
        TrainConfig(seed=MAX_SEED + 1)
    assert TrainConfig(seed=MAX_SEED).seed == MAX_SEED


def test_train_config_refuses_behaviour_cloning_on_resume(tmp_path) -> None:
    """A library user who builds ``TrainConfig(resume=..., bc_teacher=...)`` is told that
    cloning pre-trains a new model and cannot continue a checkpoint (the command line
    says so too), instead of a run that would silently ignore one of the two."""
    from train.config import TrainConfig

    model = tmp_path / "m.zip"
    model.write_bytes(b"not read here")
    with pytest.raises(ValueError, match=r"bc_teacher = 'heuristic': behaviour cloning "
                                         r"pre-trains a new model; it cannot be combined with "
                                         r"resume"):
        TrainConfig(resume=str(model), bc_teacher="heuristic", bc_timesteps=10)


def test_env_settings_store_the_limits_file_as_an_absolute_path(tmp_path, monkeypatch) -> None:
    """A model trained with ``--limits limits.toml`` (a relative path) records the file's
    absolute path, so ``--resume`` from another directory finds the same file."""
    from train.config import TrainConfig

    (tmp_path / "limits.toml").write_bytes(b"[agents.battery_001]\nmax_discharge_mw = 0.0\n")
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(n_agents=5, limits="limits.toml")
    assert config.limits == "limits.toml"
    assert config.env_settings()["limits"] == str(tmp_path.resolve() / "limits.toml")


def test_random_policy_reset_with_a_seed_replays_its_bids() -> None:
    """``RandomPolicy.reset(env, seed)`` reseeds the bids: the same seed gives the same
    bids, whether the policy was built with a seed or not and whatever it played before
    (evaluate.py reuses one policy object across its seeds)."""
    from policies.random import RandomPolicy

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    obs, mask = raw.observations_array(), raw.action_masks()

    def bids(policy):
        policy.reset(raw, seed=7)
        return np.concatenate([policy.act(obs, mask) for _ in range(3)])

    reused = RandomPolicy()
    first = bids(reused)
    reused.act(obs, mask)                     # plays on, then is reset again
    np.testing.assert_array_equal(bids(reused), first)
    np.testing.assert_array_equal(bids(RandomPolicy()), first)
    np.testing.assert_array_equal(bids(RandomPolicy(seed=123)), first)


def test_random_bids_stay_inside_the_masks() -> None:
    """``random`` is the floor of every comparison as *feasible* random play: each bid it
    makes is a level its mask allows (a row that allows one level always gets it), so its
    KPIs are not those of bids the kernel must clip."""
    from policies.base import sample_masked
    from policies.random import RandomPolicy

    rng = np.random.default_rng(0)
    mask = np.zeros((50, 21), dtype=bool)
    mask[np.arange(50), np.arange(50) % 21] = True
    for _ in range(5):
        np.testing.assert_array_equal(sample_masked(mask, rng), np.arange(50) % 21)

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=20, trust="hmac")
    env.reset(seed=1)
    raw = env.unwrapped
    policy = RandomPolicy(seed=0)
    policy.reset(raw, seed=0)
    for _ in range(20):
        mask = raw.action_masks()
        actions = policy.act(raw.observations_array(), mask)
        assert mask[np.arange(20), actions[:, 0]].all()
        assert mask[np.arange(20), 21 + actions[:, 1]].all()
        raw.step_arrays(actions[:, 0], actions[:, 1])


def test_learned_policy_refuses_an_environment_with_other_action_levels() -> None:
    """The shipped model acts in 21 power x 11 price levels: reset on an environment
    with 11 power levels is refused with both action spaces named, instead of bidding
    levels that mean other MW (or lie outside the action space)."""
    from gridswarm_env.config import MarketConfig
    from policies.learned import LearnedPolicy

    policy = LearnedPolicy()
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac",
                                     config=EnvConfig(market=MarketConfig(n_power_levels=11)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"was trained for MultiDiscrete\(\[21, 11\]\) actions; "
                                         r"this environment expects MultiDiscrete\(\[11, 11\]\)"):
        policy.reset(env.unwrapped)
    same = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac")
    same.reset(seed=0)
    policy.reset(same)   # the levels it was trained for


def test_a_sampling_learned_policy_refuses_a_transposed_mask() -> None:
    """A sampling (``deterministic=False``) learned policy refuses a mask of the right
    size but the wrong shape (transposed): ``model.predict`` would reshape it silently
    and sample each agent's bid under another agent's (scrambled) mask."""
    from gridswarm_env.env import OBS_DIM
    from policies.learned import LearnedPolicy

    policy = LearnedPolicy(deterministic=False)
    obs = np.zeros((4, OBS_DIM), np.float32)
    mask = np.ones((4, 32), bool)
    assert policy.act(obs, mask).shape == (4, 2)
    with pytest.raises(ValueError, match=r"mask has shape \(32, 4\): expected \(4, 32\)"):
        policy.act(obs, np.ascontiguousarray(mask.T))


def test_a_model_path_without_zip_loads_its_zip_sibling(tmp_path) -> None:
    """``python -m train --out m2`` writes ``m2.zip``: ``LearnedPolicy("m2")`` (what
    ``demo.py --policy m2`` and evaluate's ``--policies m2`` load) loads ``m2.zip``, and a
    name with neither file is refused naming both."""
    import shutil

    from policies.learned import DEFAULT_MODEL, LearnedPolicy, check_model_file

    shutil.copyfile(DEFAULT_MODEL, tmp_path / "m2.zip")
    assert check_model_file(tmp_path / "m2") == tmp_path / "m2.zip"
    policy = LearnedPolicy(tmp_path / "m2")
    assert policy.path == tmp_path / "m2.zip"
    with pytest.raises(ValueError, match=r"m3' does not exist \(nor '.*m3.zip'\)"):
        check_model_file(tmp_path / "m3")


# --------------------------------------------------------------------------- evaluate
def test_ci95_of_a_single_value_is_none() -> None:
    """``evaluate.ci95_halfwidth`` of one value is None (no spread is known), as documented,
    not NaN from a Student t with 0 degrees of freedom (NaN is written as null in
    results.json but breaks arithmetic in a caller)."""
    import evaluate

    assert evaluate.ci95_halfwidth(1.0, 1) is None
    assert evaluate.ci95_halfwidth(None, 5) is None
    assert evaluate.ci95_halfwidth(1.0, 2) == pytest.approx(12.706204736 / math.sqrt(2))


# --------------------------------------------------------------------------- oracle
def test_oracle_replan_failures_belong_to_their_own_episode(monkeypatch) -> None:
    """evaluate.py reuses one oracle across seeds and reports each episode's failed
    re-plans: a failure in one episode must not be reported again for the next, whose
    re-plans all succeeded."""
    import policies.oracle as oracle
    from policies.rollout import run_episode

    original = oracle.solve_balancing

    def fail_replans(problem, first_step=0):
        if first_step > 0:
            raise RuntimeError("oracle LP not solved (HiGHS status 4): numerical trouble")
        return original(problem, first_step=first_step)

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=5, trust="hmac")
    policy = oracle.OraclePolicy()
    monkeypatch.setattr(oracle, "solve_balancing", fail_replans)
    run_episode(env, policy, seed=0)
    assert policy.replan_failures
    monkeypatch.setattr(oracle, "solve_balancing", original)
    run_episode(env, policy, seed=1)
    assert len(policy.plans) > 1          # it did re-plan, successfully
    assert policy.replan_failures == []


def test_oracle_replans_when_a_battery_drifts_from_its_plan() -> None:
    """The oracle re-plans from the measured state when a storage agent's energy drifts
    from its plan by more than ``replan_drift`` (1 %) of its capacity: a 5 % drift makes
    it re-plan at its next bid (else it would keep bidding energy the battery lacks)."""
    from gridswarm_env.fleet import KIND_BATTERY
    from policies.oracle import OraclePolicy

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=5, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    policy = OraclePolicy()
    policy.reset(raw)
    for _ in range(3):
        actions = policy.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    plans = len(policy.plans)
    policy.act(raw.observations_array(), raw.action_masks())
    assert len(policy.plans) == plans     # on plan: no re-plan
    i = int(np.flatnonzero(raw.fleet.kind == KIND_BATTERY)[0])
    cap = raw.fleet.energy_capacity_mwh[i]
    raw.fleet.energy_mwh[i] += -0.05 * cap if raw.fleet.energy_mwh[i] > cap / 2 else 0.05 * cap
    policy.act(raw.observations_array(), raw.action_masks())
    assert len(policy.plans) == plans + 1


def test_oracle_unplanned_agents_bid_their_room_as_backup() -> None:
    """With ``backup_bids`` (the default) every agent the plan does not use but that can
    move in the round's direction offers its whole room (the extreme allowed level) behind
    the planned bids, so a request the plan did not foresee is still covered."""
    from policies.oracle import OraclePolicy

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac")
    env.reset(seed=0)
    raw = env.unwrapped
    policy = OraclePolicy()
    policy.reset(raw)
    mid = (raw.config.market.n_power_levels - 1) // 2
    backups = 0
    for _ in range(40):
        mask = raw.action_masks()
        actions = policy.act(raw.observations_array(), mask)
        request = raw.round_request_mw
        col = raw.step_index + 1 - policy.plan.first_step
        if abs(request) > raw.config.market.deadband_mw and col < policy.plan.p_mw.shape[1]:
            d = 1 if request > 0 else -1
            power = mask[:, :2 * mid + 1]
            room = power & ((np.arange(2 * mid + 1)[None, :] - mid) * d > 0)
            unplanned = (policy.plan.energy_part_mw[:, col] * d <= 1e-6) & room.any(axis=1)
            levels = actions[unplanned, 0]
            want = (np.argmax(room, axis=1) if d < 0
                    else 2 * mid - np.argmax(room[:, ::-1], axis=1))[unplanned]
            np.testing.assert_array_equal(levels, want)
            backups += int(unplanned.sum())
        raw.step_arrays(actions[:, 0], actions[:, 1])
    assert backups > 0
