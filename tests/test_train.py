"""Training end to end (tiny runs), tensorboard tags, checkpoints, resume, determinism,
behaviour cloning, the learned policy's loading errors and the command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.logger import Logger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import gridswarm_env
from gridswarm_env.config import EnvConfig, MarketConfig
from policies import make_policy, register
from policies.base import nearest_allowed
from policies.cli_checks import OutputError
from policies.learned import DEFAULT_MODEL, LearnedPolicy
from policies.rollout import run_episode
from tests.command_lines import ROOT, TIMEOUT_S, UNWRITABLE, _one_line_error, _unwritable_here
from train.__main__ import main
from train.adapter import GridSwarmVecEnv
from train.bc import behaviour_clone, collect_demonstrations
from train.callbacks import EpisodeMetricsCallback
from train.config import TrainConfig
from train.trainer import load_model, make_model, make_venv, stats_window_size, train

REPO = Path(__file__).resolve().parents[1]
EMERGENCY_STEPS = gridswarm_env.get_scenario("emergency").episode_steps


def tiny(tmp_path: Path, **kw) -> TrainConfig:
    """~2 emergency episodes of 10 agents: 2 400 agent-steps."""
    base = dict(scenario="emergency", total_timesteps=2 * EMERGENCY_STEPS * 10, n_agents=10,
                n_steps=60, batch_size=300, n_epochs=2, checkpoint_every=1200,
                logdir=str(tmp_path / "runs"), run_name="tiny", progress_bar=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


class Recorder(EpisodeMetricsCallback):
    """Uses the public hook (replacing the default logging, which train() already runs):
    remembers every episode's scenario and cost."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float]] = []

    def on_episode_end(self, metrics):
        self.seen.append((metrics["scenario"], metrics["system_cost"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by several tests: (config, model path, recorder)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = tiny(tmp)
    rec = Recorder()
    path = train(cfg, callbacks=[rec])
    return cfg, path, rec


def weights(path: Path) -> dict[str, np.ndarray]:
    model = load_model(path)
    return {k: v.detach().numpy().copy() for k, v in model.policy.state_dict().items()}


def test_tiny_run_writes_model_record_checkpoints_and_tensorboard(trained):
    cfg, path, rec = trained
    run_dir = Path(cfg.logdir) / "tiny"
    assert path == run_dir / "model.zip" and path.is_file()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["num_timesteps"] >= cfg.total_timesteps
    assert record["agent_steps_per_s"] > 0
    assert record["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["config"]["seed"] == 3 and record["episodes_finished"] == 2
    assert record["recent_episodes"]["emergency"]["episodes"] == 2
    ckpts = sorted((run_dir / "checkpoints").glob("model_*_steps.zip"))
    assert [c.name for c in ckpts] == ["model_1200_steps.zip", "model_2400_steps.zip"]
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("grid/system_cost", "grid/frequency_nadir_hz", "grid/unserved_energy_mwh",
                "grid/mean_abs_deviation_hz", "grid/max_abs_deviation_hz",
                "grid/max_rocof_hz_per_s", "market/consensus_rate",
                "trust/contracts_rejected", "kernel/blocked_attempts",
                "grid/emergency/system_cost", "grid/episode/system_cost", "time/fps",
                "grid/emergency/frequency_nadir_hz", "grid/emergency/episode/frequency_nadir_hz",
                "grid/emergency/emergency_response_mw_100ms",
                "grid/emergency/never_stabilized_share",
                "grid/emergency/episode/no_response_share"):
        assert tag in tags, tag
    costs = [e.value for e in ea.Scalars("grid/episode/system_cost")]
    assert [e.step for e in ea.Scalars("grid/episode/system_cost")] == [1, 2]  # episode no.
    assert costs == pytest.approx([c for _, c in rec.seen], rel=1e-6)
    blocked = [e.value for e in ea.Scalars("kernel/episode/blocked_attempts")]
    assert blocked == [0.0, 0.0]       # masked predictions are never blocked by the kernel


def test_rocof_and_largest_deviation_are_logged_and_documented():
    """Review: the grid KPI tags lacked ``max_rocof_hz_per_s`` (DESIGN §8; the
    ``emergency`` scenario's protection KPI). ``grid/max_rocof_hz_per_s`` and
    ``grid/max_abs_deviation_hz`` carry the episode's values, and docs/training.md names
    every ``grid/`` tag of KPI_TAGS."""
    from gridswarm_env.metrics import KPI_KEYS
    from train.callbacks import KPI_TAGS, episode_scalars

    assert KPI_TAGS["grid/max_rocof_hz_per_s"] == "max_rocof_hz_per_s"
    assert KPI_TAGS["grid/max_abs_deviation_hz"] == "max_abs_deviation_hz"
    scalars = episode_scalars({"max_rocof_hz_per_s": 0.0515, "max_abs_deviation_hz": 0.0305})
    assert scalars == {"grid/max_rocof_hz_per_s": 0.0515, "grid/max_abs_deviation_hz": 0.0305}
    # the extras logged besides DESIGN's keys
    assert set(KPI_TAGS.values()) - {"mean_abs_deviation_hz", "contracts_late"} <= set(KPI_KEYS)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    doc = " ".join(doc.split())
    for tag in KPI_TAGS:
        if tag.startswith("grid/"):
            assert f"`{tag}`" in doc, tag
    # and the tags written outside KPI_TAGS: the episode count and the cloning's statistics
    # (train.bc.behaviour_clone's bc_* keys, written as bc/*)
    for tag in ("grid/episodes", "bc/nll", "bc/value_mse", "bc/accuracy_power",
                "bc/accuracy_price"):
        assert f"`{tag}`" in doc, tag


def test_nadir_and_emergency_kpis_are_logged_per_scenario():
    """Review: with --scenario all, grid/frequency_nadir_hz averaged the scenarios'
    nadirs and the emergency KPIs were never logged. Now grid/<scenario>/... holds the
    nadir of every scenario and, for an episode with an event, the emergency KPIs that
    are not None; the existing tags are unchanged."""
    from train.callbacks import KPI_TAGS, episode_scalars

    base = {key: 1.0 for key in KPI_TAGS.values()}
    spike = episode_scalars({**base, "scenario": "price_spike", "system_cost": 262.0,
                             "frequency_nadir_hz": 59.98, "stabilization_time_s": 0.0,
                             "emergency_response_latency_ms": None,
                             "emergency_response_mw_100ms": None})
    assert {t: v for t, v in spike.items() if t.startswith("grid/price_spike/")} == {
        "grid/price_spike/system_cost": 262.0, "grid/price_spike/frequency_nadir_hz": 59.98}
    emergency = episode_scalars({**base, "scenario": "emergency", "system_cost": 218.5,
                                 "frequency_nadir_hz": 59.97, "stabilization_time_s": None,
                                 "emergency_response_latency_ms": 20.4,
                                 "emergency_response_mw_100ms": 100.0})
    assert {t: v for t, v in emergency.items() if t.startswith("grid/emergency/")} == {
        "grid/emergency/system_cost": 218.5, "grid/emergency/frequency_nadir_hz": 59.97,
        "grid/emergency/emergency_response_latency_ms": 20.4,
        "grid/emergency/emergency_response_mw_100ms": 100.0,
        "grid/emergency/max_rocof_hz_per_s": 1.0,   # the trip's RoCoF, apart (review)
        "grid/emergency/never_stabilized_share": 1.0,
        "grid/emergency/no_response_share": 0.0}
    for scalars in (spike, emergency):   # the existing tags, as before
        assert {t for t in scalars if t.count("/") == 1} == set(KPI_TAGS)
    assert episode_scalars({**base, "scenario": "emergency", "system_cost": 1.0,
                            "frequency_nadir_hz": 59.9, "stabilization_time_s": 3.5,
                            "emergency_response_latency_ms": None,
                            "emergency_response_mw_100ms": 0.0})[
        "grid/emergency/stabilization_time_s"] == 3.5


def test_the_share_of_event_episodes_whose_kpi_was_none_is_logged_per_scenario():
    """Review: grid/<scenario>/stabilization_time_s and .../emergency_response_latency_ms
    skip the episodes where the KPI is None, so their curves showed only the good ones.
    .../never_stabilized_share and .../no_response_share (1 or 0 per episode) have as
    rollout mean the share of the scenario's event episodes that the curves leave out."""
    from types import SimpleNamespace

    from train.callbacks import EpisodeMetricsCallback

    cb = EpisodeMetricsCallback(per_episode=False)
    cb.model = SimpleNamespace(logger=Logger(folder=None, output_formats=[]))
    event = {"scenario": "emergency", "emergency_response_mw_100ms": 100.0}
    for stab, latency in ((None, 20.0), (4.0, None), (None, None), (2.0, 30.0)):
        cb.on_episode_end({**event, "stabilization_time_s": stab,
                           "emergency_response_latency_ms": latency})
    cb.on_episode_end({"scenario": "price_spike", "stabilization_time_s": None,
                       "emergency_response_latency_ms": None,
                       "emergency_response_mw_100ms": None})   # no event: no share
    logged = cb.logger.name_to_value
    assert logged["grid/emergency/never_stabilized_share"] == 0.5
    assert logged["grid/emergency/no_response_share"] == 0.5
    assert logged["grid/emergency/stabilization_time_s"] == 3.0   # the other two only
    assert not any(t.startswith("grid/price_spike/") and t.endswith("_share") for t in logged)


def test_nonfinite_episode_kpis_are_left_out_of_the_scalars_counted_and_warned_once():
    """tensorboard review: a NaN or infinite KPI went to tensorboard, and one broken
    episode made its rollout's mean NaN. As evaluate.py (nonfinite_keys), it is left out
    of the episode's scalars and of the mean (a share with its KPI), counted per KPI, and
    the first such episode is warned about, once."""
    import math
    from types import SimpleNamespace

    points: list[tuple[str, float, int]] = []
    cb = EpisodeMetricsCallback()
    cb.model = SimpleNamespace(logger=Logger(folder=None, output_formats=[]))
    cb._writer = SimpleNamespace(add_scalar=lambda tag, value, step: points.append(
        (tag, value, step)))
    event = {"scenario": "emergency", "emergency_response_mw_100ms": 100.0,
             "emergency_response_latency_ms": 20.0, "frequency_nadir_hz": 59.9}
    with pytest.warns(RuntimeWarning, match="non-finite system_cost, stabilization_time_s"
                      ) as said:
        cb.on_episode_end({**event, "system_cost": math.nan, "stabilization_time_s": math.inf})
        cb.on_episode_end({**event, "system_cost": 4.0, "stabilization_time_s": 2.0})
        cb.on_episode_end({**event, "system_cost": -math.inf, "stabilization_time_s": None})
    assert len(said) == 1
    logged = cb.logger.name_to_value
    assert logged["grid/system_cost"] == logged["grid/emergency/system_cost"] == 4.0
    assert logged["grid/emergency/stabilization_time_s"] == 2.0
    assert logged["grid/emergency/never_stabilized_share"] == 0.5   # episodes 2 and 3
    assert logged["grid/frequency_nadir_hz"] == pytest.approx(59.9)   # all three
    assert all(math.isfinite(value) for _, value, _ in points)
    assert [step for tag, _, step in points if tag == "grid/episode/system_cost"] == [2]
    assert cb.nonfinite == {"system_cost": 2, "stabilization_time_s": 1}
    assert cb.nonfinite_episodes == 2 and cb.n_episodes == 3


def test_a_run_with_a_nonfinite_kpi_records_it_and_keeps_its_scalars_finite(tmp_path,
                                                                          monkeypatch):
    """The same in a run: the episode whose system_cost is NaN is left out of
    grid/episode/system_cost and the record's means (strict JSON), and the record counts
    it (nonfinite_kpis)."""
    import math

    from gridswarm_env.env import GridSwarmEnv

    real = GridSwarmEnv.episode_metrics
    calls = []

    def first_broken(self):
        metrics = real(self)
        calls.append(metrics["system_cost"])
        return {**metrics, "system_cost": math.nan} if len(calls) == 1 else metrics

    monkeypatch.setattr(GridSwarmEnv, "episode_metrics", first_broken)
    with pytest.warns(RuntimeWarning, match="episode 1 .emergency. ended with non-finite "
                                            "system_cost"):
        path = train(tiny(tmp_path, checkpoint_every=0, run_name="nan"))
    assert len(calls) == 2
    record = json.loads(path.with_suffix(".json").read_text(),
                        parse_constant=lambda name: pytest.fail(f"{name} in the record"))
    assert record["nonfinite_kpis"] == {"episodes": 1, "kpis": {"system_cost": 1}}
    assert record["episodes_finished"] == 2
    assert record["recent_episodes"]["emergency"]["system_cost"] == pytest.approx(calls[1])
    ea = EventAccumulator(str(tmp_path / "runs" / "nan"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("grid/episode/system_cost")] == [2]
    assert [e.step for e in ea.Scalars("grid/episode/frequency_nadir_hz")] == [1, 2]
    assert all(math.isfinite(e.value) for e in ea.Scalars("grid/system_cost"))


def test_no_checkpoints_directory_until_a_checkpoint_is_written(tmp_path):
    """Review: every run left an empty checkpoints/ (SB3 creates it at the start), also
    one shorter than --checkpoint-every."""
    cfg = tiny(tmp_path, total_timesteps=600, checkpoint_every=1_200, run_name="short")
    train(cfg)
    run_dir = tmp_path / "runs" / "short"
    assert (run_dir / "model.zip").is_file()
    assert not (run_dir / "checkpoints").exists()


def test_copies_finishing_together_get_their_own_episode_points(tmp_path):
    """Two env copies end their episodes in the same timestep: each episode is its own
    tensorboard point (step = episode number); they used to share one step."""
    steps: list[int] = []

    class When(EpisodeMetricsCallback):
        def on_episode_end(self, metrics):
            steps.append(self.num_timesteps)

    cfg = tiny(tmp_path, n_envs=2, n_agents=5, total_timesteps=2 * EMERGENCY_STEPS * 5,
               batch_size=1200, checkpoint_every=0, run_name="two")
    path = train(cfg, callbacks=[When()])
    assert len(steps) == 2 and steps[0] == steps[1]       # the same timestep
    ea = EventAccumulator(str(tmp_path / "runs" / "two"))
    ea.Reload()
    points = ea.Scalars("grid/episode/system_cost")
    assert [e.step for e in points] == [1, 2]
    # the rollout's grid/ scalars are the mean over the episodes it finished
    costs = [e.value for e in points]
    assert costs[0] != costs[1]
    assert ea.Scalars("grid/system_cost")[-1].value == pytest.approx(np.mean(costs), rel=1e-6)
    assert ea.Scalars("grid/episodes")[-1].value == 2
    # a batch larger than one rollout (60 steps x 10 slots) is capped at it
    assert json.loads(path.with_suffix(".json").read_text())["config"]["batch_size"] == 600


def test_ep_rew_mean_averages_every_agent_of_the_last_episodes(tmp_path):
    """SB3 averages rollout/ep_rew_mean over its last 100 slot episodes: with 2 copies of
    51 agents ending together it left 2 of copy 0's agents out (at 1 000 agents, all but
    agents 900-999). The window is now whole copy episodes, at least one per slot."""
    from stable_baselines3.common.callbacks import BaseCallback

    returns: list[float] = []

    class Returns(BaseCallback):
        def _on_step(self) -> bool:
            returns.extend(i["episode"]["r"] for i in self.locals["infos"] if "episode" in i)
            return True

    cfg = tiny(tmp_path, n_envs=2, n_agents=51, n_steps=EMERGENCY_STEPS, n_epochs=1,
               total_timesteps=2 * 51 * EMERGENCY_STEPS, batch_size=2 * 51 * 40,
               checkpoint_every=0, run_name="window")
    train(cfg, callbacks=[Returns()])
    ea = EventAccumulator(str(tmp_path / "runs" / "window"))
    ea.Reload()
    assert len(returns) == 2 * 51
    logged = ea.Scalars("rollout/ep_rew_mean")[-1].value
    assert logged == pytest.approx(np.mean(returns), rel=1e-5)


def test_public_hook_sees_every_episode(trained):
    _, _, rec = trained
    assert [s for s, _ in rec.seen] == ["emergency", "emergency"]
    assert all(c >= 0.0 for _, c in rec.seen)


def test_resume_continues_from_a_checkpoint(trained, tmp_path):
    cfg, _, _ = trained
    ckpt = Path(cfg.logdir) / "tiny" / "checkpoints" / "model_1200_steps.zip"
    out = tmp_path / "resumed.zip"
    path = train(tiny(tmp_path, resume=str(ckpt), total_timesteps=600, out=str(out),
                      run_name="resumed", checkpoint_every=0))
    assert path == out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["resumed_from"] == str(ckpt)
    assert record["resumed_at_timesteps"] == 1200
    assert record["num_timesteps"] == 1200 + 600
    before, after = weights(ckpt), weights(out)
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)   # it trained


@pytest.mark.parametrize("stored", [True, False])
def test_a_resumed_run_numbers_its_episodes_on_from_the_checkpoints(trained, tmp_path,
                                                                    stored):
    """tensorboard review: a resumed run's per-episode scalars (…/episode/… and
    grid/episodes) started again at step 1, over the first run's curves. The checkpoint
    stores its episode count (EPISODES_ATTR) and the resumed run's steps go on from it;
    a checkpoint saved without the count (an older version) starts at 0 as before. The
    record's counts agree with tensorboard and with the count the new model stores."""
    from tests.tensorboard_events import scalar_steps
    from train.callbacks import EPISODES_ATTR

    cfg, _, _ = trained
    ckpt = Path(cfg.logdir) / "tiny" / "checkpoints" / "model_1200_steps.zip"
    assert getattr(load_model(ckpt), EPISODES_ATTR) == 1   # its run's first episode
    if not stored:
        older = load_model(ckpt)
        delattr(older, EPISODES_ATTR)
        ckpt = tmp_path / "older.zip"
        older.save(ckpt)
    out = train(tiny(tmp_path, resume=str(ckpt), total_timesteps=EMERGENCY_STEPS * 10,
                     run_name="on", checkpoint_every=0))
    before = 1 if stored else 0
    steps = scalar_steps(tmp_path / "runs" / "on")
    assert steps["grid/episode/system_cost"] == [before + 1]   # one episode in this run
    ea = EventAccumulator(str(tmp_path / "runs" / "on"))
    ea.Reload()
    assert ea.Scalars("grid/episodes")[-1].value == before + 1
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["resumed_at_episodes"] == (1 if stored else None)
    assert record["episodes_finished"] == 1
    assert getattr(load_model(out), EPISODES_ATTR) == before + 1


def test_resume_logs_only_its_own_episodes(trained, tmp_path):
    """RL review: a resumed run kept the checkpoint's episode buffer (SB3 saves it), so
    rollout/ep_rew_mean showed the old run's returns, even at another reward scale. A
    resume of 600 agent-steps (no 1 200-step episode ends) logs no episode mean."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, path, _ = trained
    assert load_model(path).ep_info_buffer   # the model holds its run's episodes
    train(tiny(tmp_path, resume=str(path), total_timesteps=600, reward_scale=0.1,
               run_name="rescaled", checkpoint_every=0))
    ea = EventAccumulator(str(tmp_path / "runs" / "rescaled"))
    ea.Reload()
    assert "train/loss" in ea.Tags()["scalars"]   # it logged its updates
    assert "rollout/ep_rew_mean" not in ea.Tags()["scalars"]


def test_resume_with_another_fleet_averages_whole_episodes_of_it(trained, tmp_path):
    """A checkpoint of 10 agents resumed with 30: rollout/ep_rew_mean's window becomes
    whole episodes of the 30-agent copy (stats_window_size), not the checkpoint's."""
    cfg, _, _ = trained
    ckpt = Path(cfg.logdir) / "tiny" / "checkpoints" / "model_1200_steps.zip"
    path = train(tiny(tmp_path, resume=str(ckpt), n_agents=30, total_timesteps=600,
                      run_name="fleet", checkpoint_every=0))
    assert load_model(path)._stats_window_size == stats_window_size(30, 1) == 120


def test_same_seed_same_weights_other_seed_differs(trained, tmp_path):
    cfg, path, _ = trained
    again = train(tiny(tmp_path, run_name="again"))
    w1, w2 = weights(path), weights(again)
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])
    other = train(tiny(tmp_path, run_name="other", seed=4, total_timesteps=600,
                       checkpoint_every=0))
    w3 = weights(other)
    assert any(not np.array_equal(w1[k], w3[k]) for k in w1)


def test_learning_without_distribution_validation_changes_no_weight(trained, tmp_path,
                                                                    monkeypatch):
    """train() learns with torch.distributions' argument checks off (they cost 7-15 %
    of PPO's time and compute nothing it uses): the same run with them on gives the same
    weights bit for bit, and the process's setting is restored afterwards."""
    import contextlib

    from torch.distributions import Distribution

    import train.trainer as trainer

    seen = []

    @contextlib.contextmanager
    def checked():   # the old behaviour: validation as the process has it (on)
        seen.append(Distribution._validate_args)
        yield

    _, plain, _ = trained
    before = Distribution._validate_args
    assert before   # torch's default; the trained fixture ran with the checks off
    monkeypatch.setattr(trainer, "unvalidated_distributions", checked)
    validated = train(tiny(tmp_path, run_name="validated"))
    assert seen == [True]
    for k, w in weights(plain).items():
        np.testing.assert_array_equal(w, weights(validated)[k])
    assert Distribution._validate_args is before


def test_evaluation_during_training_keeps_the_best_model_and_changes_nothing(trained, tmp_path):
    """--eval-every: system_cost of greedy held-out episodes at the start, about every N
    agent-steps (rollout starts) and at the end; the best model is saved, the curve is
    in the record and tensorboard; the training itself is the same as without it."""
    from train.callbacks import EVAL_SEED_BASE

    _, plain, _ = trained
    path = train(tiny(tmp_path, run_name="evaluated", eval_every=1200, eval_seeds=1))
    for k, w in weights(plain).items():
        np.testing.assert_array_equal(w, weights(path)[k])
    run_dir = tmp_path / "runs" / "evaluated"
    record = json.loads(path.with_suffix(".json").read_text())
    ev = record["evaluation_during_training"]
    assert ev["seeds"] == [EVAL_SEED_BASE] and ev["every"] == 1200
    assert [p["agent_steps"] for p in ev["curve"]] == [0, 1200, 2400]
    best = min(ev["curve"], key=lambda p: p["system_cost"])
    assert ev["best"] == best and ev["best_model"] == str(run_dir / "best_model.zip")
    # the saved best model scores what the curve says (same seed, greedy)
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac")
    again = run_episode(env, LearnedPolicy(run_dir / "best_model.zip"), seed=EVAL_SEED_BASE)
    assert again.metrics["system_cost"] == pytest.approx(best["system_cost"], rel=1e-12)
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    assert {"eval/system_cost", "eval/emergency/system_cost"} <= set(ea.Tags()["scalars"])
    # each point at its own step (they were written one rollout late)
    logged = [(e.step, e.value) for e in ea.Scalars("eval/system_cost")]
    assert logged == [(p["agent_steps"], pytest.approx(p["system_cost"], rel=1e-6))
                      for p in ev["curve"]]
    assert record["config"]["eval_every"] == 1200
    assert ev["eval_s"] > 0


def test_evaluation_can_stop_training_at_a_cost():
    from train.callbacks import SystemCostEvaluation

    venv = GridSwarmVecEnv("emergency", n_agents=10, trust="hmac", seed=0)
    model = make_model(TrainConfig(scenario="emergency", n_agents=10, n_steps=60,
                                   batch_size=300, progress_bar=False), venv)
    evaluation = SystemCostEvaluation(["emergency"], 10, every=600, n_seeds=1,
                                      stop_at_cost=float("inf"))
    model.set_logger(Logger(folder=None, output_formats=[]))   # no tempdir/SB3-<time> left
    model.learn(total_timesteps=6000, callback=evaluation)
    assert evaluation.stopped_at == evaluation.points[0]   # met before any PPO step
    assert len(evaluation.points) == 1 and model.num_timesteps <= 10
    venv.close()


def test_learned_policy_acts_in_one_masked_batch(trained):
    _, path, _ = trained
    policy = make_policy(str(path))
    assert isinstance(policy, LearnedPolicy)
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=10, trust="hmac")
    result = run_episode(env, policy, seed=0, max_steps=20)
    assert result.metrics["blocked_attempts"] == 0
    assert result.metrics["executed_violations"] == 0
    raw = env.unwrapped
    actions = policy.act(raw.observations_array(), raw.action_masks())
    assert actions.shape == (10, 2) and actions.dtype == np.int64
    mask = raw.action_masks()
    assert mask[np.arange(10), actions[:, 0]].all()
    assert mask[np.arange(10), 21 + actions[:, 1]].all()
    # deterministic: same inputs, same actions
    np.testing.assert_array_equal(actions, policy.act(raw.observations_array(), mask))


def test_learned_policy_from_a_model_in_memory_acts_as_from_its_file(trained):
    from sb3_contrib import MaskablePPO

    _, path, _ = trained
    env = gridswarm_env.parallel_env(scenario="solar_surplus", n_agents=10, trust="hmac")
    from_file = run_episode(env, LearnedPolicy(path), seed=3, max_steps=15)
    in_memory = LearnedPolicy.from_model(MaskablePPO.load(path, device="cpu"))
    assert in_memory.path is None
    from_memory = run_episode(env, in_memory, seed=3, max_steps=15)
    assert from_memory.metrics == from_file.metrics
    # greedy acting leaves the process's random generators alone (a model being trained
    # keeps its random stream when the benchmark evaluates it)
    import torch

    # the legacy global numpy generator is the one SB3's set_random_seed reseeds
    global_numpy_state = np.random.get_state  # noqa: NPY002
    torch_state, numpy_state = torch.get_rng_state(), global_numpy_state()
    run_episode(env, in_memory, seed=4, max_steps=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(global_numpy_state(), numpy_state,
                                                    strict=True))
    with pytest.raises(ValueError, match="has no predict"):
        LearnedPolicy.from_model(object())
    with pytest.raises(ValueError, match="torch_threads"):
        LearnedPolicy.from_model(in_memory.model, torch_threads=0)


def test_sampled_acting_keeps_its_own_random_stream(trained, tmp_path):
    """A sampling (deterministic=False) policy seeded by reset(env, seed) reseeded the
    process's random, numpy and torch generators and the model's environment (SB3's
    set_random_seed): evaluating a model in training that way reset its minibatch
    order, action sampling and next episode seeds. Its stream is now its own, and still
    reproducible for a seed."""
    import torch

    cfg, path, _ = trained
    venv = make_venv(cfg)
    model = load_model(path, venv)
    policy = LearnedPolicy.from_model(model, deterministic=False)
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=10, trust="hmac")
    global_numpy_state = np.random.get_state  # noqa: NPY002
    torch_state, numpy_state = torch.get_rng_state(), global_numpy_state()
    seeds = list(venv._seeds)
    first = run_episode(env, policy, seed=7, max_steps=40)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(global_numpy_state(), numpy_state,
                                                    strict=True))
    assert venv._seeds == seeds          # the training environment's next reset unchanged
    again = run_episode(env, policy, seed=7, max_steps=40)
    assert again.trace == first.trace    # reproducible for a seed
    # and sampled: the same seed played greedily differs once the spike's rounds begin at
    # t = 20 s (two seeds would differ anyway, by the load noise)
    greedy = run_episode(env, LearnedPolicy.from_model(model, deterministic=True), seed=7,
                         max_steps=40)
    assert greedy.trace != first.trace
    venv.close()


def test_learned_policy_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        LearnedPolicy(tmp_path / "nope.zip")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a zip archive"):
        LearnedPolicy(junk)
    # new-user review: a model's record given for the model (--resume m1.json, --policy
    # m1.json) got no word about the .zip beside it
    record = tmp_path / "junk.json"
    record.write_text("{}")
    with pytest.raises(ValueError, match=r"'.*junk.zip' beside it is the model this record "
                                         "belongs to$"):
        LearnedPolicy(record)
    import zipfile

    fake = tmp_path / "fake.zip"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("data", "{not json")
    with pytest.raises(ValueError, match="corrupt or not a MaskablePPO model"):
        LearnedPolicy(fake)
    empty = tmp_path / "other.zip"   # fuzzing: a zip of something else said only
    with zipfile.ZipFile(empty, "w") as z:   # "(AssertionError: No data found ...)"
        z.writestr("a.txt", "hi")
    with pytest.raises(ValueError, match=r"No data found.*\); expected a MaskablePPO \.zip "
                                         r"saved by `python -m train`"):
        LearnedPolicy(empty)


def test_learned_policy_corrupt_weights_say_so_in_one_line(tmp_path):
    """A model zip whose weights member is damaged said torch's paragraph: several lines
    advising ``weights_only=False`` ("arbitrary code execution") and filing a torch issue
    (new-user review, session 27); now one line naming the member."""
    import zipfile

    from policies.learned import PPO_MODEL

    bad = tmp_path / "badpth.zip"
    with zipfile.ZipFile(PPO_MODEL) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"garbage" if name == "policy.pth" else src.read(name))
    with pytest.raises(ValueError) as info:
        LearnedPolicy(bad)
    message = str(info.value)
    assert "\n" not in message
    assert "weights_only" not in message and "file an issue" not in message
    assert "badpth.zip' is corrupt or not a MaskablePPO model" in message
    assert "policy.pth" in message and message.endswith("saved by `python -m train` "
                                                         "(or `python -m train.dagger`)")


def test_learned_policy_incompatible_models(trained, tmp_path):
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    class Other(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.MultiDiscrete([4, 2])

        def reset(self, seed=None, options=None):
            return np.zeros(3, np.float32), {}

        def step(self, action):
            return np.zeros(3, np.float32), 0.0, True, False, {}

        def action_masks(self):
            return np.ones(6, bool)

    wrong = tmp_path / "other.zip"
    MaskablePPO("MlpPolicy", Other(), n_steps=8, batch_size=8).save(wrong)
    with pytest.raises(ValueError, match=r"observation space.*expected Box of shape \(28,\)"):
        LearnedPolicy(wrong)
    # a gridswarm model used in an env with other action levels
    _, path, _ = trained
    policy = LearnedPolicy(path)
    cfg = EnvConfig(n_agents=10, trust="hmac", market=MarketConfig(n_price_levels=5))
    env = gridswarm_env.parallel_env(scenario="emergency", config=cfg)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[21, 11\]\).*MultiDiscrete\(\[21, 5\]\)"):
        policy.reset(env.unwrapped)


def test_learned_policy_refuses_a_model_trained_on_other_observations(trained, tmp_path):
    _, path, _ = trained
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["obs_fields"] == list(gridswarm_env.OBS_FIELDS)
    copy = tmp_path / "old.zip"
    copy.write_bytes(path.read_bytes())
    record["obs_fields"][0] = "renamed_field"
    copy.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="other observation fields.*0: 'renamed_field'"):
        LearnedPolicy(copy)
    copy.with_suffix(".json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        LearnedPolicy(copy)


def test_learned_policy_refuses_a_record_written_for_another_model(trained, tmp_path):
    """A record left beside a model it does not describe (its model_sha256 is another
    file's) would vouch for the wrong observation layout: refused, naming both hashes;
    the same record beside the model it names loads."""
    _, path, _ = trained
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    other = tmp_path / "other.zip"
    other.write_bytes(path.read_bytes() + b"\0")   # still a readable zip, other bytes
    other.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"describes another model \(model_sha256 "
                       + record["model_sha256"][:12]):
        LearnedPolicy(other)
    same = tmp_path / "same.zip"
    same.write_bytes(path.read_bytes())
    same.with_suffix(".json").write_text(json.dumps(record))
    assert LearnedPolicy(same).sha256 == record["model_sha256"]


def test_models_without_a_record_carry_their_observation_fields(trained, tmp_path):
    """RL review: best_model.zip and checkpoints have no JSON record, so the layout check
    never applied to them; every saved model now stores its observation fields."""
    from sb3_contrib import MaskablePPO

    from policies.learned import OBS_FIELDS_ATTR

    cfg, path, _ = trained
    checkpoints = sorted((Path(cfg.logdir) / "tiny" / "checkpoints").glob("*.zip"))
    assert checkpoints
    for saved in (path, *checkpoints):
        model = MaskablePPO.load(saved, device="cpu")
        assert getattr(model, OBS_FIELDS_ATTR) == list(gridswarm_env.OBS_FIELDS)
    setattr(model, OBS_FIELDS_ATTR, ["renamed_field", *gridswarm_env.OBS_FIELDS[1:]])
    old = tmp_path / "best_model.zip"     # as --eval-every saves it: no record beside it
    model.save(old)
    with pytest.raises(ValueError, match="other observation fields.*it stores: 0: 'renamed"):
        LearnedPolicy(old)


def test_default_model_path_is_the_shipped_one():
    """``learned`` (``LearnedPolicy()``) loads the fine-tuned model, which answers
    randomized trips (it loaded ``gridswarm_ppo.zip`` before), by its recorded hash."""
    assert DEFAULT_MODEL.parent.name == "pretrained"
    assert DEFAULT_MODEL.name == "gridswarm_ppo_dagger.zip"
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model in this checkout")
    policy = LearnedPolicy()
    assert policy.path == DEFAULT_MODEL
    assert policy.model.observation_space.shape == (gridswarm_env.OBS_DIM,)
    record = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert policy.sha256 == record["model_sha256"]
    assert record["command"].startswith("python -m train --resume "
                                        "policies/pretrained/gridswarm_dagger.zip")


class MaxUp:
    """A scripted teacher for the cloning test: the highest allowed power level, price 0."""

    name = "max_up"

    def reset(self, env, seed=None):
        self.n_power = env.config.market.n_power_levels

    def act(self, obs, mask):
        power = nearest_allowed(np.full(len(obs), self.n_power - 1), mask[:, :self.n_power])
        return np.stack([power, np.zeros_like(power)], axis=1)


def test_behaviour_cloning_imitates_the_teacher():
    register("test_max_up", MaxUp)
    venv = GridSwarmVecEnv("emergency", n_agents=10, seed=0)
    cfg = TrainConfig(n_agents=10, scenario="emergency", seed=0)
    model = make_model(cfg, venv)
    demos = collect_demonstrations(venv, "test_max_up", 1000, gamma=0.99)
    assert len(demos) == EMERGENCY_STEPS * 10          # stops at the episode boundary
    assert demos.obs.shape == (len(demos), gridswarm_env.OBS_DIM)
    assert demos.masks[np.arange(len(demos)), demos.actions[:, 0]].all()
    before = behaviour_clone(model, demos, epochs=1, learning_rate=1e-6)
    after = behaviour_clone(model, demos, epochs=30, batch_size=256, learning_rate=3e-3)
    assert after["bc_nll"] < before["bc_nll"]
    assert after["bc_accuracy_price"] > 0.95
    assert after["bc_accuracy_power"] > 0.9
    assert after["bc_accuracy_power"] > before["bc_accuracy_power"]


def test_teacher_per_scenario():
    register("test_max_up", MaxUp)
    venv = GridSwarmVecEnv("emergency", n_agents=5, seed=0)
    demos = collect_demonstrations(venv, {"emergency": "test_max_up"}, 10, gamma=0.9)
    assert len(demos) == EMERGENCY_STEPS * 5
    n_power = 21
    want = nearest_allowed(np.full(len(demos), n_power - 1), demos.masks[:, :n_power])
    np.testing.assert_array_equal(demos.actions[:, 0], want)
    with pytest.raises(ValueError, match="no teacher for scenario"):
        collect_demonstrations(venv, {"price_spike": "heuristic"}, 10, gamma=0.9)


def test_behaviour_cloning_only_run_from_the_heuristic(tmp_path):
    path = train(tiny(tmp_path, n_agents=5, total_timesteps=0, bc_teacher="heuristic",
                      bc_timesteps=100, bc_epochs=2, run_name="bc", checkpoint_every=0,
                      eval_every=1000, eval_seeds=1))
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["num_timesteps"] == 0 and record["agent_steps_per_s"] is None
    # no PPO step: the cloned model is still judged once
    assert [p["agent_steps"] for p in record["evaluation_during_training"]["curve"]] == [0]
    assert (tmp_path / "runs" / "bc" / "best_model.zip").is_file()
    bc = record["behaviour_cloning"]
    assert bc["teacher"] == "heuristic" and bc["samples"] == EMERGENCY_STEPS * 5
    assert bc["epochs_done"] == bc["epochs"] == 2
    assert 0.0 <= bc["bc_accuracy_power"] <= 1.0
    assert LearnedPolicy(path).model.observation_space.shape == (gridswarm_env.OBS_DIM,)


def test_run_names_carry_scenario_seed_and_time():
    import re

    name = TrainConfig(scenario="emergency", seed=7).default_run_name()
    assert re.fullmatch(r"emergency_s7_\d{8}-\d{6}", name)


def test_a_run_started_in_the_same_second_never_shares_the_run_directory(tmp_path,
                                                                        monkeypatch):
    """Two runs started within the same second (``for lr in ...; do python -m train --lr
    $lr & done``) both picked ``<scenario>_s<seed>_<time>``, free when each looked, and
    both wrote into it: two event files in one tensorboard run (mixed curves, two points
    per step), one ``progress.csv``, and the later model and record replaced the other's
    while both said "model saved to" the same path. The directory is now claimed when it
    is made; a run that finds it taken takes ``-2``."""
    from train import trainer

    names: list[str] = []
    free = trainer.free_run_name
    monkeypatch.setattr(trainer, "free_run_name",
                        lambda logdir, base: names.append(free(logdir, base)) or names[-1])
    make_venv = trainer.make_venv

    def other_run_claims_it(*args, **kwargs):   # while this run is set up
        taken = tmp_path / "runs" / names[0]
        taken.mkdir(parents=True)
        (taken / "events.out.tfevents.1.other.1.0").write_bytes(b"other")
        return make_venv(*args, **kwargs)

    monkeypatch.setattr(trainer, "make_venv", other_run_claims_it)
    path = trainer.train(tiny(tmp_path, run_name=None, total_timesteps=600,
                              checkpoint_every=0))
    other = tmp_path / "runs" / names[0]
    assert [p.name for p in other.iterdir()] == ["events.out.tfevents.1.other.1.0"]
    assert path == tmp_path / "runs" / f"{names[0]}-2" / "model.zip"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["run_name"] == f"{names[0]}-2" and record["run_dir"] == str(path.parent)
    assert len(list(path.parent.glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"total_timesteps": 0}, "total_timesteps"),
    ({"total_timesteps": -1}, "total_timesteps"),
    ({"reward": "system"}, "reward"),
    ({"reward_clip": 0.0}, "reward_clip"),
    ({"scenario": "nope"}, "scenario"),
    ({"trust": "rsa"}, "trust"),
    ({"gamma": 1.5}, "gamma"),
    ({"net_arch": ()}, "net_arch"),
    ({"bc_teacher": "random", "bc_timesteps": 10}, "bc_teacher"),
    ({"bc_teacher": "heuristic", "bc_timesteps": 0}, "bc_timesteps"),
    ({"resume": "/no/such/model.zip"}, "resume"),
    ({"eval_every": -1}, "eval_every"),
    ({"eval_seeds": 0}, "eval_seeds"),
    ({"n_steps": 1}, "n_steps"),
    ({"batch_size": 1}, "batch_size"),
    # fuzzing: --lr 1e308 (and --clip-range) failed only after training had started
    ({"learning_rate": 1e308}, r"learning_rate = 1e\+308: must lie in \(0.0, 1.0\]"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"clip_range": 2.0}, r"clip_range = 2.0: must lie in \(0.0, 1.0\]"),
    ({"bc_learning_rate": 5.0}, "bc_learning_rate"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "says"), [
    # fuzzing: --envs 10**30 hung building environment copies, a wide layer or a long
    # rollout failed in torch or numpy (or exhausted memory) after the run had started
    ({"n_envs": 10**30, "n_agents": 4}, r"TrainConfig\.n_envs = 1000000000000000000000000000000: .* agents in one "
     r"process; at most 1,000,000"),
    ({"n_envs": 10_001, "n_agents": 100}, r"x n_agents 100 = 1,000,100 agents"),
    ({"n_steps": 100_001, "n_agents": 100}, r"TrainConfig\.n_steps = 100001: a rollout of "
     r"n_steps x n_envs x n_agents = 10,000,100 agent-steps; at most 10,000,000"),
    ({"net_arch": (64, 4097)}, r"TrainConfig\.net_arch = \(64, 4097\): layer sizes are at "
     r"most 4,096"),
])
def test_config_refuses_sizes_beyond_one_process(kwargs, says):
    with pytest.raises(ValueError, match=says):
        TrainConfig(**kwargs)
    TrainConfig(**{**kwargs, **{k: v for k, v in (("n_envs", 1), ("n_steps", 64),
                                                  ("net_arch", (64, 4096)))
                                if k in kwargs}})   # the bounds themselves are fine


def test_cli_bad_values_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--timesteps", "-5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--timesteps -5" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["--net-arch", "64,x"])
    assert exc.value.code == 2 and "--net-arch" in capsys.readouterr().err


def test_out_naming_a_directory_is_refused(tmp_path, capsys):
    """User-path review: ``--out DIR/`` printed ``DIR/.zip`` and wrote ``DIR/.zip.zip``;
    ``--out EXISTING_DIR`` wrote ``EXISTING_DIR.zip`` beside it."""
    for out in (f"{tmp_path}/newdir/", str(tmp_path)):
        with pytest.raises(ValueError, match="is a directory; expected a model file path"):
            TrainConfig(out=out)
        with pytest.raises(SystemExit) as exc:
            main(["--out", out, "--logdir", str(tmp_path / "runs"), "--agents", "3"])
        assert exc.value.code == 2 and "is a directory" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and sorted(tmp_path.iterdir()) == []


def test_resume_a_model_built_outside_train(tmp_path, capsys):
    """User-path review: a MaskablePPO built with SB3's default network (no net_arch in
    policy_kwargs) was refused as "net_arch = ()", hiding e.g. an action-space mismatch."""
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    from gridswarm_env.env import OBS_DIM, OBS_LIMIT

    class Plain(gym.Env):
        observation_space = gym.spaces.Box(-OBS_LIMIT, OBS_LIMIT, (OBS_DIM,), np.float32)

        def __init__(self, nvec):
            self.action_space = gym.spaces.MultiDiscrete(nvec)

    for nvec in ([21, 11], [5, 3]):
        MaskablePPO("MlpPolicy", Plain(nvec), n_steps=8, batch_size=8).save(
            tmp_path / f"plain{nvec[0]}.zip")
    args = ["--scenario", "emergency", "--agents", "3", "--timesteps", "32", "--n-steps", "16",
            "--no-randomize", "--batch-size", "16", "--no-progress", "--logdir", str(tmp_path / "runs")]
    assert main([*args, "--resume", str(tmp_path / "plain21.zip")]) == 0
    assert "model saved to" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([*args, "--resume", str(tmp_path / "plain5.zip")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "net_arch" not in err
    assert err.startswith("python -m train: error: --resume: model ")
    assert "trained for MultiDiscrete([5, 3]) actions" in err


def test_a_run_name_in_use_is_refused_and_default_names_never_collide(tmp_path, capsys,
                                                                      monkeypatch):
    """User-path review: reusing --run-name silently overwrote the earlier run's model
    and record and put two tensorboard event files in one run."""
    args = ["--scenario", "emergency", "--agents", "3", "--timesteps", "16", "--n-steps", "16",
            "--batch-size", "16", "--no-progress", "--logdir", str(tmp_path)]
    assert main([*args, "--run-name", "r1"]) == 0
    model = tmp_path / "r1" / "model.zip"
    before = model.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--run-name", "r1", "--seed", "5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "already holds a run (" in err and "model.zip" in err
    assert model.read_bytes() == before
    # a default (timestamped) name already taken, as by a run started the same second
    monkeypatch.setattr(TrainConfig, "default_run_name", lambda self, now=None: "stamp")
    (tmp_path / "stamp").mkdir()
    (tmp_path / "stamp" / "model.zip").write_bytes(b"earlier")
    assert main(args) == 0
    assert (tmp_path / "stamp" / "model.zip").read_bytes() == b"earlier"
    assert (tmp_path / "stamp-2" / "model.zip").is_file()


def test_a_run_name_made_by_another_run_since_the_check_is_refused(tmp_path, capsys,
                                                                  monkeypatch):
    """Tidying (session 26): an explicit --run-name's directory was made with
    ``exist_ok`` after the check, so two runs started at once with the same --run-name
    shared it (mixed event files and progress.csv, one model.zip replacing the other);
    default names were claimed atomically. It is now made without ``exist_ok`` too."""
    from train import trainer

    args = ["--scenario", "emergency", "--agents", "3", "--timesteps", "16", "--n-steps", "16",
            "--batch-size", "16", "--no-progress", "--logdir", str(tmp_path),
            "--run-name", "r1"]
    real = trainer.make_venv

    def racing(*a, **k):   # the other run makes the directory after this one checked it
        (tmp_path / "r1").mkdir(exist_ok=True)
        return real(*a, **k)

    monkeypatch.setattr(trainer, "make_venv", racing)
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "was created after this run checked it" in err
    assert "--run-name" in err and "\n" not in err.strip()
    assert list((tmp_path / "r1").iterdir()) == []   # the other run's, left to it
    # an existing (empty) directory is refused up front, before any work
    monkeypatch.setattr(trainer, "make_venv", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "run directory" in err and "already exists (empty)" in err


def test_limits_reach_the_training_and_evaluation_environments(tmp_path, capsys):
    """DESIGN §6 gives --limits FILE to the command lines; train had none."""
    limits = tmp_path / "limits.toml"
    limits.write_text("[agents.battery_001]\nmax_discharge_mw = 0.0\n")
    config = TrainConfig(scenario="emergency", n_agents=5, limits=str(limits),
                         eval_every=16)
    venv = make_venv(config)
    venv.reset()
    raw = venv.active_envs[0]
    assert raw.limits.per_agent == {"battery_001": {"max_discharge_mw": 0.0}}
    names = raw.possible_agents
    assert raw._hi[names.index("battery_001")] <= 0.0 < raw._hi[names.index("battery_000")]
    from train.callbacks import SystemCostEvaluation

    judge = SystemCostEvaluation(["emergency"], 5, 16, limits=str(limits))
    assert judge.envs["emergency"].limits == raw.limits
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.battery_077]\nsoc_min = 0.3\n")
    args = ["--scenario", "emergency", "--agents", "5", "--timesteps", "16", "--n-steps", "16",
            "--batch-size", "16", "--no-progress", "--logdir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--limits", str(bad)])
    assert exc.value.code == 2 and "battery_077" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main([*args, "--limits", str(limits), "--eval-every", "16", "--run-name", "lim"]) == 0
    record = json.loads((tmp_path / "runs" / "lim" / "model.json").read_text())
    assert record["config"]["limits"] == str(limits)


def test_governor_deadband_reaches_the_training_and_evaluation_environments(tmp_path):
    """demo.py and evaluate.py had --governor-deadband-hz; a policy could not be trained
    under the deadband it would be evaluated with. A checkpoint saved before the flag
    existed (no such setting stored) was trained without one and resumes so."""
    config = TrainConfig(scenario="all", n_agents=5, n_envs=2, governor_deadband_hz=0.036)
    venv = make_venv(config)
    venv.reset()
    assert {raw.config.grid.governor_deadband_hz for raw in venv.active_envs} == {0.036}
    from train.callbacks import SystemCostEvaluation

    judge = SystemCostEvaluation(venv.scenarios, 5, 16, env_config=config.env_config())
    assert {env.config.grid.governor_deadband_hz for env in judge.envs.values()} == {0.036}
    assert not judge.envs["emergency"].config.audit_keep_entries
    assert make_venv(TrainConfig(n_agents=5)).active_envs[0].config.grid \
        .governor_deadband_hz == 0.0
    from train.__main__ import build_parser, env_settings

    args = build_parser().parse_args(["--resume", "old.zip"])
    old = {name: value for name, value in config.env_settings().items()
           if name != "governor_deadband_hz"}
    resumed = env_settings(args, old)
    assert resumed["governor_deadband_hz"] is None   # none given: the config file's, none
    assert TrainConfig(**resumed).env_config().grid.governor_deadband_hz == 0.0
    args = build_parser().parse_args(["--governor-deadband-hz", "0.017"])
    assert env_settings(args, config.env_settings())["governor_deadband_hz"] == 0.017


def test_cli_corrupt_resume_file(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_text("garbage")
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(bad), "--logdir", str(tmp_path), "--agents", "3"])
    assert exc.value.code == 2
    assert "not a zip archive" in capsys.readouterr().err


def test_cli_as_a_user_runs_it(tmp_path, capsys):
    bad = subprocess.run([sys.executable, "-m", "train", "--scenario", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert ("--scenario: unknown scenario 'nope'; known scenarios:" in bad.stderr
            and "Traceback" not in bad.stderr)
    status = main(["--scenario", "emergency", "--agents", "5", "--timesteps", "600",
                   "--n-steps", "60", "--batch-size", "300", "--logdir", str(tmp_path),
                   "--run-name", "cli", "--no-progress", "--checkpoint-every", "0",
                   "--eval-every", "300", "--eval-seeds", "1"])
    assert status == 0
    out = capsys.readouterr().out
    assert "model saved to" in out
    assert f"best model by system cost relative to the heuristic: {tmp_path / 'cli' / 'best_model.zip'} (" in out
    record = json.loads((tmp_path / "cli" / "model.json").read_text())
    best = record["evaluation_during_training"]["best"]
    # the same figure, in the same format, as the evaluation lines (thousands separators)
    assert (f"({best['system_cost']:,.2f} $, {100 * best['relative_cost']:+,.1f} % vs the "
            f"heuristic, at {best['agent_steps']:,} agent-steps)") in out
    reference = record["evaluation_during_training"]["reference"]
    assert reference["policy"] == "heuristic" and set(reference["per_scenario"]) == {"emergency"}
    assert record["evaluation_during_training"]["ranked_by"] == "relative_cost"
    assert record["command"].startswith("python -m train --scenario emergency")
    assert record["config"]["n_agents"] == 5


def test_resume_accepts_a_path_without_zip(trained, tmp_path, capsys):
    """Review: --resume PATH without .zip was refused ("no such model file") although
    --out writes PATH.zip and demo/evaluate load PATH.zip for PATH."""
    _, path, _ = trained
    stem = str(path)[:-len(".zip")]
    config = tiny(tmp_path, resume=stem, total_timesteps=600, checkpoint_every=0)
    assert config.resume == str(path)   # stored as the file it names
    args = ["--scenario", "emergency", "--agents", "10", "--timesteps", "600",
            "--no-progress", "--checkpoint-every", "0", "--logdir", str(tmp_path / "runs"),
            "--run-name", "r"]
    assert main([*args, "--resume", stem]) == 0
    record = json.loads((tmp_path / "runs" / "r" / "model.json").read_text())
    assert record["resumed_from"] == str(path)
    with pytest.raises(ValueError, match=r"^TrainConfig\.resume: model file '/no/such/m' "
                                         r"does not exist \(nor '/no/such/m\.zip'\)"):
        TrainConfig(resume="/no/such/m")


# --------------------------------------------------------------------------- learned policy: names, paths and inference threads
def test_model_path_without_zip_names_its_zip_sibling(tmp_path, monkeypatch):
    """First-use review: ``--policy runs/m2`` was refused as "does not exist" although
    ``python -m train --out m2`` writes m2.zip and SB3's own load appends ``.zip``."""
    from policies.learned import check_model_file

    model = tmp_path / "m2.zip"
    model.write_bytes(b"not a zip")   # reaches the loader: the sibling was found
    assert check_model_file(tmp_path / "m2") == model
    assert check_model_file(model) == model
    for name in (str(tmp_path / "m2"), "m2"):   # a path, and a bare name in the cwd
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ValueError, match=r"m2\.zip' is corrupt or not a model"):
            make_policy(name)
    names, _ = evaluate.resolve_policies(str(tmp_path / "m2"))   # evaluate.py uses it too
    assert names == [str(tmp_path / "m2")]
    (tmp_path / "m2").write_bytes(b"also not a zip")   # an existing file is taken as given
    assert check_model_file(tmp_path / "m2") == tmp_path / "m2"


def test_policy_name_messages(tmp_path):
    with pytest.raises(ValueError, match="empty name is not allowed.*heuristic.*random"):
        make_policy("")
    with pytest.raises(ValueError, match="is a directory, not a model file"):
        make_policy(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        make_policy(str(tmp_path / "missing.zip"))
    names, _ = evaluate.resolve_policies("heuristic")
    assert names == ["heuristic"]
    with pytest.raises(ValueError, match=r"'.*missing' does not exist \(nor '.*missing\.zip'\)"):
        make_policy(str(tmp_path / "missing"))
    with pytest.raises(evaluate.UsageError, match="is a directory"):
        evaluate.resolve_policies(str(tmp_path))


@pytest.fixture(scope="module")
def learned_model(tmp_path_factory) -> Path:
    """The shipped model, or a tiny trained one when it is missing."""
    from policies.learned import DEFAULT_MODEL

    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from train.config import TrainConfig
    from train.trainer import train

    tmp = tmp_path_factory.mktemp("model")
    return train(TrainConfig(scenario="emergency", total_timesteps=600, n_agents=5,
                             n_steps=60, batch_size=300, checkpoint_every=0,
                             logdir=str(tmp), run_name="m", progress_bar=False))


def test_learned_policy_infers_on_one_thread_and_restores_the_setting(learned_model):
    import torch

    from policies.learned import LearnedPolicy

    with pytest.raises(ValueError, match="torch_threads = 0"):
        LearnedPolicy(learned_model, torch_threads=0)
    with pytest.raises(ValueError, match="expected an integer from 1 to 256"):
        LearnedPolicy(learned_model, torch_threads=10**6)   # torch would crash the process
    # fuzzing (session 23): np.int64(1) was refused, unlike TrainConfig.torch_threads;
    # kept as a Python int; bools stay refused
    threads = LearnedPolicy(learned_model, torch_threads=np.int64(1)).torch_threads
    assert threads == 1 and type(threads) is int
    with pytest.raises(ValueError, match="torch_threads = np.True_: expected an integer"):
        LearnedPolicy(learned_model, torch_threads=np.True_)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)   # the process's setting (e.g. one thread per core)
    try:
        one = LearnedPolicy(learned_model)
        default = LearnedPolicy(learned_model, torch_threads=None)
        seen: dict[str, list[int]] = {"one": [], "default": []}

        def spy(policy, key):   # the threads the network's forward pass runs on
            head = policy.model.policy.action_net
            forward = head.forward

            def wrapped(*args, **kwargs):
                seen[key].append(torch.get_num_threads())
                return forward(*args, **kwargs)

            head.forward = wrapped

        spy(one, "one")
        spy(default, "default")
        env = gridswarm_env.parallel_env(scenario="emergency", n_agents=30,
                                         trust="hmac").unwrapped
        env.reset(seed=7)
        one.reset(env)
        default.reset(env)
        steps = 0
        while env.agents and steps < 40:   # the same actions on 1 thread as on 2
            obs, mask = env.observations_array(), env.action_masks()
            a1, a2 = one.act(obs, mask), default.act(obs, mask)
            np.testing.assert_array_equal(a1, a2)
            env.step_arrays(a1[:, 0], a1[:, 1])
            steps += 1
        assert seen == {"one": [1] * steps, "default": [2] * steps}
        assert torch.get_num_threads() == 2   # restored after every call
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- command line: resume flags and outputs
#: the reward scaled with the fleet (0.01 x 5 / 100, docs/training.md): at 0.01 PPO's
#: gradient clip starves the actor of 5 agents and says so on stderr
TINY = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60", "--batch-size", "300",
        "--reward-scale", "0.0005", "--no-progress", "--checkpoint-every", "0"]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """A tiny model trained with lr 3e-4, n_steps 60, batch 300 (5 agents)."""
    tmp = tmp_path_factory.mktemp("train_cli")
    proc = _train(*TINY, "--timesteps", "600", "--logdir", str(tmp), "--run-name", "base")
    assert proc.returncode == 0, proc.stderr
    return tmp / "base" / "model.zip"


def test_resume_applies_given_ppo_flags_and_records_what_the_model_uses(base_checkpoint,
                                                                         tmp_path):
    from policies.learned import load_maskable_ppo
    from train.trainer import checkpoint_hyperparameters

    out = tmp_path / "out" / "mymodel"      # no .zip: normalized, reported as written
    proc = _train("--resume", str(base_checkpoint), "--scenario", "emergency", "--agents", "5",
                  "--timesteps", "150", "--lr", "0.5", "--n-steps", "30", "--no-progress",
                  "--checkpoint-every", "0", "--logdir", str(tmp_path), "--run-name", "r1",
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    model_file = tmp_path / "out" / "mymodel.zip"
    assert f"model saved to {model_file} " in proc.stdout
    assert sorted(p.name for p in model_file.parent.iterdir()) == ["mymodel.json",
                                                                   "mymodel.zip"]
    record = json.loads((tmp_path / "out" / "mymodel.json").read_text())
    assert record["model"] == str(model_file)
    cfg = record["config"]
    # n_steps 30 x 5 slots caps the checkpoint's batch of 300 at one rollout
    assert (cfg["learning_rate"], cfg["n_steps"], cfg["batch_size"]) == (0.5, 30, 150)
    assert cfg["net_arch"] == [64, 64] and cfg["out"] == str(model_file)
    model = load_maskable_ppo(model_file)
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.5   # really trained with it
    assert model.rollout_buffer.buffer_size == 30
    # the printed path loads as a policy (the demo's --policy PATH)
    assert make_policy(str(model_file)).name == "learned"
    # flags not given keep the checkpoint's values
    again = _train("--resume", str(model_file), "--scenario", "emergency", "--agents", "5",
                   "--timesteps", "150", "--no-progress", "--checkpoint-every", "0",
                   "--logdir", str(tmp_path), "--run-name", "r2")
    assert again.returncode == 0, again.stderr
    cfg2 = json.loads((tmp_path / "r2" / "model.json").read_text())["config"]
    assert (cfg2["learning_rate"], cfg2["n_steps"], cfg2["batch_size"]) == (0.5, 30, 150)
    assert checkpoint_hyperparameters(tmp_path / "r2" / "model.zip")["n_steps"] == 30


def test_resume_refuses_another_network_before_training(base_checkpoint, tmp_path):
    proc = _train("--resume", str(base_checkpoint), "--scenario", "emergency", "--agents", "5",
                  "--net-arch", "8", "--logdir", str(tmp_path), "--run-name", "r")
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr, "python -m train")
    assert "--net-arch" in line and "64,64" in line
    assert not (tmp_path / "r").exists()
    proc = _train("--resume", str(base_checkpoint), "--bc-teacher", "heuristic",
                  "--logdir", str(tmp_path))
    assert proc.returncode == 2 and "resume" in _one_line_error(proc.stderr, "python -m train")


def test_train_refuses_unwritable_outputs_before_training(tmp_path):
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken.zip").mkdir()
    cases = [(["--logdir", str(tmp_path / "afile")], "is a file, not a directory"),
             (["--out", str(tmp_path / "taken")], "taken.zip' is a directory"),
             (["--reward-clip", "-1"], "0 = no clipping")]
    if _unwritable_here():
        cases.append((["--out", str(UNWRITABLE)], "cannot be written"))
    for args, words in cases:
        proc = _train(*TINY, "--timesteps", "600", "--logdir", str(tmp_path / "runs"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in _one_line_error(proc.stderr, "python -m train"), args
    assert not (tmp_path / "runs").exists()   # refused before any training or logging


def test_a_model_that_cannot_be_saved_at_the_end_is_kept_elsewhere(tmp_path, monkeypatch,
                                                                    capsys):
    from stable_baselines3.common.callbacks import BaseCallback

    import train.__main__ as train_cli
    from policies.learned import load_maskable_ppo
    from train.config import TrainConfig
    from train.trainer import train

    out = tmp_path / "m.zip"

    class TakeThePath(BaseCallback):   # the path becomes a directory while training
        def _on_step(self) -> bool:
            out.mkdir(exist_ok=True)
            return True

    cfg = TrainConfig(scenario="emergency", total_timesteps=300, n_agents=5, n_steps=60,
                      batch_size=300, checkpoint_every=0, logdir=str(tmp_path), run_name="x",
                      out=str(out), progress_bar=False)
    with pytest.raises(OutputError) as exc:
        train(cfg, callbacks=[TakeThePath()])
    kept = exc.value.path
    assert kept is not None and kept.is_file() and kept.parent != tmp_path
    assert str(out) in str(exc.value) and str(kept) in str(exc.value)
    load_maskable_ppo(kept)
    record = json.loads(kept.with_suffix(".json").read_text())
    assert record["model"] == str(kept)
    kept.unlink()
    kept.with_suffix(".json").unlink()

    def fail(config, **kw):
        raise OutputError("could not write the model to 'x' (Is a directory); saved it to "
                          "'/tmp/y.zip' instead", Path("/tmp/y.zip"))

    monkeypatch.setattr("train.trainer.train", fail)
    assert train_cli.main([*TINY, "--logdir", str(tmp_path)]) == 1
    assert "/tmp/y.zip" in _one_line_error(capsys.readouterr().err, "python -m train")


def test_stats_window_holds_whole_copy_episodes_of_every_slot():
    """stats_window_size: SB3's 100 slot episodes rounded up to whole copy episodes, and
    at least one episode of every copy."""
    assert stats_window_size(10, 1) == 100
    assert stats_window_size(30, 1) == 120     # 4 whole episodes of 30 agents
    assert stats_window_size(51, 3) == 153     # one episode of each of the 3 copies
    assert stats_window_size(1000, 2) == 2000


def test_recent_episodes_are_summarised_per_scenario():
    """The record's recent_episodes: per scenario, its own episode count and KPI means
    (KPIs that are None are left out of the mean)."""
    from train.trainer import _summarize

    episodes = [{"scenario": "emergency", "system_cost": 2.0, "unserved_energy_mwh": 1.0},
                {"scenario": "price_spike", "system_cost": 10.0},
                {"scenario": "emergency", "system_cost": 4.0, "unserved_energy_mwh": None}]
    assert _summarize(episodes) == {
        "emergency": {"episodes": 2, "system_cost": 3.0, "unserved_energy_mwh": 1.0},
        "price_spike": {"episodes": 1, "system_cost": 10.0}}


def test_evaluation_keeps_the_model_of_the_first_lowest_cost(tmp_path, monkeypatch):
    """SystemCostEvaluation with stand-in costs and clock: the best model file is the
    model as it was at the first evaluation of the lowest cost (a tie keeps the earlier),
    each new best and only it is marked "best so far", ``train_s`` leaves the
    evaluations' own time out, and the stop cost is met at equality."""
    import types

    import torch as th

    import train.callbacks as cb

    now = [0.0]
    costs = iter([3.0, 2.0, 2.0, 4.0])

    def ten_second_costs(envs, policy, seeds):
        now[0] += 10.0
        return {name: next(costs) for name in envs}

    monkeypatch.setattr(cb, "mean_system_costs", ten_second_costs)
    monkeypatch.setattr(cb, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    lines: list[str] = []
    evaluation = cb.SystemCostEvaluation(["emergency"], 5, every=100, n_seeds=1,
                                         best_path=tmp_path / "best.zip", stop_at_cost=2.0,
                                         echo=lines.append, reference={"emergency": 2.5})
    venv = GridSwarmVecEnv("emergency", n_agents=5, seed=0)
    model = make_model(TrainConfig(scenario="emergency", n_agents=5, n_steps=60,
                                   batch_size=300, progress_bar=False), venv)
    model.set_logger(Logger(folder=None, output_formats=[]))
    evaluation.init_callback(model)
    bias = model.policy.action_net.bias
    for k in range(4):
        now[0] += 5.0                    # 5 s of training before each evaluation
        model.num_timesteps = 100 * k
        with th.no_grad():
            bias[0] = float(k)           # marks the model as it was at evaluation k
        evaluation.evaluate()
    venv.close()
    points = evaluation.points
    assert [p["system_cost"] for p in points] == [3.0, 2.0, 2.0, 4.0]
    assert evaluation.best is points[1] and evaluation.stopped_at is points[1]
    assert float(load_model(tmp_path / "best.zip").policy.action_net.bias[0].detach()) == 1.0
    assert [p["train_s"] for p in points] == [5.0, 10.0, 15.0, 20.0]
    assert [line.endswith(" - best so far") for line in lines] == [True, True, False, False]


def test_relative_cost_weighs_every_scenario_alike():
    """Mean relative difference to the reference, each scenario's divided by its reference
    cost (at least 1 $), so a cheap scenario's regression counts as much as an expensive
    one's; scenarios must match."""
    from train.callbacks import relative_cost

    assert relative_cost({"a": 90.0, "b": 19.0}, {"a": 100.0, "b": 10.0}) == pytest.approx(0.4)
    assert relative_cost({"a": 101.0, "b": 8.0}, {"a": 100.0, "b": 10.0}) == pytest.approx(
        -0.095)
    # a reference cost near 0 (or negative) divides by the 1 $ floor, not by ~0
    assert relative_cost({"a": 0.5}, {"a": 0.01}) == pytest.approx(0.49)
    assert relative_cost({"a": -3.0}, {"a": -2.0}) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match=r"costs for \['a'\] but a reference for \['b'\]"):
        relative_cost({"a": 1.0}, {"b": 1.0})


def test_best_model_is_the_lowest_cost_relative_to_the_heuristic(monkeypatch):
    """With several scenarios the best point is the one of the lowest mean relative cost,
    not of the lowest summed cost, which the most expensive scenario dominates: point 1
    has the lowest sum (109 $) by doubling solar_surplus's cost; point 2 has the same
    sum with every scenario near or below the reference."""
    import train.callbacks as cb

    costs = iter([{"price_spike": 100.0, "solar_surplus": 10.0},
                  {"price_spike": 90.0, "solar_surplus": 19.0},
                  {"price_spike": 101.0, "solar_surplus": 8.0}])
    monkeypatch.setattr(cb, "mean_system_costs", lambda envs, policy, seeds: next(costs))
    evaluation = cb.SystemCostEvaluation(
        ["price_spike", "solar_surplus"], 5, every=100, n_seeds=1,
        reference={"price_spike": 100.0, "solar_surplus": 10.0})
    venv = GridSwarmVecEnv("solar_surplus", n_agents=5, seed=0)
    model = make_model(TrainConfig(scenario="solar_surplus", n_agents=5, n_steps=60,
                                   batch_size=300, progress_bar=False), venv)

    model.set_logger(Logger(folder=None, output_formats=[]))
    evaluation.init_callback(model)
    for _ in range(3):
        evaluation.evaluate()
    venv.close()
    points = evaluation.points
    assert [p["system_cost"] for p in points] == [110.0, 109.0, 109.0]
    assert [p["relative_cost"] for p in points] == pytest.approx([0.0, 0.4, -0.095])
    assert evaluation.best is points[2]
    assert evaluation.line(points[2]).endswith("mean of 1 seed; -9.5 % vs the heuristic)")


def test_the_default_reference_is_the_heuristic_on_the_same_seeds():
    """Without a reference the first evaluation measures the heuristic on the evaluation's
    own seeds and environments; a reference for other scenarios is refused."""
    from train.callbacks import SystemCostEvaluation, mean_system_costs

    evaluation = SystemCostEvaluation(["emergency"], 5, every=100, n_seeds=1)
    venv = GridSwarmVecEnv("emergency", n_agents=5, seed=0)
    model = make_model(TrainConfig(scenario="emergency", n_agents=5, n_steps=60,
                                   batch_size=300, progress_bar=False), venv)

    model.set_logger(Logger(folder=None, output_formats=[]))
    evaluation.init_callback(model)
    point = evaluation.evaluate()
    venv.close()
    envs = {"emergency": gridswarm_env.GridSwarmEnv(scenario="emergency", n_agents=5,
                                                   trust="hmac")}
    expected = mean_system_costs(envs, make_policy("heuristic"), evaluation.seeds)
    assert evaluation.reference == expected
    ref = expected["emergency"]
    assert point["relative_cost"] == pytest.approx(
        (point["system_cost"] - ref) / max(abs(ref), 1.0), rel=1e-12)
    with pytest.raises(ValueError, match="reference covers"):
        SystemCostEvaluation(["emergency"], 5, every=100, reference={"price_spike": 1.0})


def test_discounted_returns_of_one_episode():
    """G_t = r_t + gamma G_{t+1}, per agent, truncated at the episode's end."""
    from train.bc import _with_returns

    o, m, a = np.zeros((2, 1)), np.ones((2, 1), bool), np.zeros((2, 2))
    steps = [(o, m, a, np.array([1.0, 0.0])), (o, m, a, np.array([2.0, 1.0])),
             (o, m, a, np.array([4.0, 0.0]))]
    returns = [g for *_, g in _with_returns(steps, 0.5)]
    np.testing.assert_allclose(returns, [[3.0, 0.5], [4.0, 1.0], [4.0, 0.0]])



@pytest.mark.parametrize("kwargs, says", [
    ({"n_seeds": 90_001}, "SystemCostEvaluation.n_seeds = 90001: at most 90,000"),
    ({"n_seeds": 0}, "SystemCostEvaluation.n_seeds = 0: must be an integer >= 1"),
    ({"n_seeds": 2.0}, "SystemCostEvaluation.n_seeds = 2.0: expected an integer >= 1"),
    ({"every": 0}, "SystemCostEvaluation.every = 0: must be an integer >= 1"),
])
def test_system_cost_evaluation_called_directly_checks_its_counts(kwargs, says):
    """Review: only TrainConfig and the benchmark bounded the evaluation seeds; called
    directly, 90 001 seeds reached 100 000 (a seed training may play) unchecked."""
    from train.callbacks import SystemCostEvaluation

    args = {"every": 600, "n_seeds": 1, **kwargs}
    with pytest.raises(ValueError) as info:
        SystemCostEvaluation(["emergency"], 5, **args)
    assert says in str(info.value)


def test_progress_bar_total_is_the_agent_steps_that_run(tmp_path, monkeypatch):
    """Review: --timesteps 20000 ended at '25,600/20,000' (SB3's bar counts to the
    budget, PPO runs whole rollouts) though the note said 25,600 would run. The bar's
    total is now the rounded-up figure, and it ends full."""
    import stable_baselines3.common.callbacks as sb3_callbacks

    bars = []

    class FakeBar:
        def __init__(self, total):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def refresh(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(sb3_callbacks, "tqdm", FakeBar)
    cfg = tiny(tmp_path, total_timesteps=700, checkpoint_every=0, run_name="bar",
               progress_bar=True)   # rollouts of 60 steps x 10 agents = 600: runs 1 200
    assert cfg.planned_timesteps() == 1_200
    path = train(cfg)
    assert json.loads(path.with_suffix(".json").read_text())["num_timesteps"] == 1_200
    assert [(b.total, b.n) for b in bars] == [(1_200, 1_200)]


def test_torch_threads_apply_to_the_run_and_are_restored_after(tmp_path):
    """``--torch-threads N`` (``TrainConfig.torch_threads``): the run learns on N threads,
    the process's setting is restored afterwards, the record says N, and the same seed and
    N give the same weights."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    class Threads(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[int] = set()

        def _on_step(self) -> bool:
            self.seen.add(torch.get_num_threads())
            return True

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spy = Threads()
        a = train(tiny(tmp_path, run_name="a", torch_threads=2, checkpoint_every=0),
                  callbacks=[spy])
        assert spy.seen == {2} and torch.get_num_threads() == 1
        b = train(tiny(tmp_path, run_name="b", torch_threads=2, checkpoint_every=0))
        for k, w in weights(a).items():
            np.testing.assert_array_equal(w, weights(b)[k])
        assert json.loads(a.with_suffix(".json").read_text())["config"]["torch_threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_a_dangling_symlink_in_logdir_is_skipped_not_retried_forever(tmp_path):
    """Review: ``free_run_name`` tested ``Path.exists()``, False for a dangling symlink,
    while ``mkdir`` raises FileExistsError on it, so ``claim_run_dir`` retried the same
    name forever (a hang at 100 % CPU; the old ``mkdir(exist_ok=True)`` raised)."""
    from train.trainer import claim_run_dir, free_run_name

    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    assert free_run_name(tmp_path, "run") == "run-2"
    assert claim_run_dir(tmp_path, "run") == tmp_path / "run-2"
    assert (tmp_path / "run-2").is_dir()


def test_a_model_written_at_out_during_the_run_is_kept_and_this_one_saved_beside_it(
        tmp_path, monkeypatch, capsys):
    """Two runs given the same --out both passed the up-front check and the later one to
    finish replaced the other's model and record. The final save now claims --out
    atomically (os.link): a model another run wrote there since the check stays, and
    this run's model and record take the next free name, said in one line (exit 1);
    --overwrite still replaces it."""
    import train.trainer
    from policies.learned import load_maskable_ppo

    out = tmp_path / "m.zip"
    other = b"the other run's model"
    real = train.trainer._configure_logger

    def another_run_finishes(*args, **kwargs):   # after this run's check, before its save
        out.write_bytes(other)
        out.with_suffix(".json").write_text('{"other": 1}')
        return real(*args, **kwargs)

    monkeypatch.setattr(train.trainer, "_configure_logger", another_run_finishes)
    argv = [*TINY, "--timesteps", "600", "--out", str(out), "--logdir", str(tmp_path / "runs")]
    assert main(argv) == 1
    kept = tmp_path / "m-2.zip"
    said = _one_line_error(capsys.readouterr().err, "python -m train")
    assert f"could not write the model to {str(out)!r}" in said and "is kept" in said
    assert f"saved it to {str(kept)!r} instead" in said and "--overwrite" in said
    assert out.read_bytes() == other
    assert out.with_suffix(".json").read_text() == '{"other": 1}'
    load_maskable_ppo(kept)
    record = json.loads(kept.with_suffix(".json").read_text())
    assert record["model"] == str(kept)
    assert record["model_sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()

    out.with_suffix(".json").unlink()   # --overwrite replaces the model that appeared
    assert main([*argv, "--overwrite", "--run-name", "again"]) == 0
    load_maskable_ppo(out)
    assert json.loads(out.with_suffix(".json").read_text())["model"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-2.json", "m-2.zip", "m.json", "m.zip", "runs"]


def test_claim_atomically_never_replaces_a_file_that_holds_data(tmp_path, monkeypatch):
    """claim_atomically: a new file goes at the path; an empty file or a dangling link
    there (which the up-front check allows) is replaced; a file that is not empty, there
    or at its record's name, makes it take the next free name; a directory is an error;
    no temporary file is left. Without hard links (os.link refused) an exclusive create
    claims the name."""
    import os

    from train.trainer import claim_atomically

    def write(f):
        f.write(b"new")

    path = tmp_path / "m.zip"
    assert claim_atomically(path, write) == path and path.read_bytes() == b"new"
    assert claim_atomically(path, write) == tmp_path / "m-2.zip"
    assert path.read_bytes() == b"new"
    (tmp_path / "m-3.json").write_text("{}")   # a record whose model is gone: kept too
    assert claim_atomically(path, write) == tmp_path / "m-4.zip"
    empty = tmp_path / "e.zip"
    empty.touch()
    assert claim_atomically(empty, write) == empty and empty.read_bytes() == b"new"
    dangling = tmp_path / "d.zip"
    dangling.symlink_to(tmp_path / "nowhere")
    assert claim_atomically(dangling, write) == dangling
    assert not dangling.is_symlink() and dangling.read_bytes() == b"new"
    (tmp_path / "dir.zip").mkdir()
    with pytest.raises(IsADirectoryError):
        claim_atomically(tmp_path / "dir.zip", write)

    def no_hard_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    fat = tmp_path / "f.zip"
    assert claim_atomically(fat, write) == fat and fat.read_bytes() == b"new"
    assert claim_atomically(fat, write) == tmp_path / "f-2.zip"
    assert not list(tmp_path.glob(".*.part"))
