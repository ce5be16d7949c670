"""``python -m train`` when a run does not end as planned: an error during training
(a diverged network), Ctrl-C during behaviour cloning, an existing ``--out``, and what a
resumed run keeps from its checkpoint (seeds, environment and reward settings)."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import train.trainer as trainer
from tests.tensorboard_events import scalar_points, scalar_steps
from train.__main__ import main

PROG = "python -m train"
#: 5 agents, rollouts of 60 steps x 5 slots = 300 agent-steps; the reward scaled with the
#: fleet (0.01 x 5 / 100, docs/training.md), or PPO's gradient clip would starve the actor
#: and say so on stderr (the tests here read stderr line by line)
TINY = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60", "--batch-size", "300",
        "--n-epochs", "1", "--reward-scale", "0.0005", "--no-progress"]


def without_notes(err: str) -> list[str]:
    """The lines of ``err`` but the start-of-run notes (rollout size, no episode)."""
    return [line for line in err.strip().splitlines()
            if line and not line.startswith(f"{PROG}: note: ")]


def one_error_line(err: str) -> str:
    lines = without_notes(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: ") and "Traceback" not in err
    return lines[0]


def with_callbacks(monkeypatch, *callbacks: BaseCallback) -> None:
    """Make ``main`` train with extra SB3 callbacks."""
    real = trainer.train
    monkeypatch.setattr(trainer, "train",
                        lambda config, **kw: real(config, callbacks=callbacks, **kw))


def poison(model) -> None:
    """Write NaN into the policy's first weight, as a diverged update would."""
    with torch.no_grad():
        next(model.policy.parameters()).fill_(float("nan"))


class AtStep(BaseCallback):
    """Call :meth:`fire` once, at the first step at or past ``at`` agent-steps."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def fire(self) -> None:
        raise NotImplementedError

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            self.at = float("inf")
            self.fire()
        return True


class PoisonWeights(AtStep):
    """:func:`poison` the model at the first step at or past ``at`` agent-steps."""

    def fire(self) -> None:
        poison(self.model)


class PoisonAtTheEnd(BaseCallback):
    """:func:`poison` the model when learning ends (after the last update)."""

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        poison(self.model)


class Fail(AtStep):
    """Raise ``RuntimeError`` at the first step at or past ``at`` agent-steps."""

    def fire(self) -> None:
        raise RuntimeError("disk on fire")


# ------------------------------------------------------------------ errors in training
def test_a_diverged_network_is_a_training_failure_with_a_record(tmp_path, monkeypatch,
                                                                 capsys):
    """Review: NaN logits make torch raise ValueError, which main reported as a usage
    error (exit 2) and train() left no model and no record. (PPO learns with torch's
    distribution checks off, so the NaN logits now fail at sampling, a RuntimeError.)"""
    with_callbacks(monkeypatch, PoisonWeights(at=300))
    status = main([*TINY, "--timesteps", "900", "--checkpoint-every", "150",
                   "--logdir", str(tmp_path), "--run-name", "nan"])
    assert status == 1
    line = one_error_line(capsys.readouterr().err)
    run = tmp_path / "nan"
    checkpoint = run / "checkpoints" / "model_300_steps.zip"
    assert "training failed at 300 agent-steps (PPO): RuntimeError: " in line
    assert "nan" in line   # torch's sampling from NaN probabilities
    assert f"last checkpoint {checkpoint}" in line and checkpoint.is_file()
    assert "not finite" in line and not (run / "model.zip").exists()   # a NaN model is useless
    assert not (run / "model_failed.zip").exists()
    record = json.loads((run / "model_failed.json").read_text())   # never model.json
    assert not (run / "model.json").exists() and f"training record {run}/model_failed.json" in line
    error = record["error"]
    assert error["type"] == "RuntimeError" and error["num_timesteps"] == 300
    assert error["stage"] == "PPO" and error["last_checkpoint"] == str(checkpoint)
    assert error["model_saved"] is False and "not finite" in error["model_not_saved"]
    assert "Traceback" in error["traceback"]
    assert record["model"] is None and record["num_timesteps"] == 300
    assert record["model_sha256"] is None
    # the checkpoint before the divergence is a usable model
    from policies.learned import LearnedPolicy

    assert not trainer.nonfinite_weights(LearnedPolicy(checkpoint).model)


def test_an_error_with_finite_weights_keeps_the_model(tmp_path, monkeypatch, capsys):
    with_callbacks(monkeypatch, Fail(at=150))
    status = main([*TINY, "--timesteps", "900", "--checkpoint-every", "0",
                   "--logdir", str(tmp_path), "--run-name", "boom"])
    assert status == 1
    line = one_error_line(capsys.readouterr().err)
    model = tmp_path / "boom" / "model_failed.zip"   # never model.zip: it did not finish
    assert not (tmp_path / "boom" / "model.zip").exists()
    assert "training failed at 150 agent-steps (PPO): RuntimeError: disk on fire" in line
    assert f"the model was saved to {model}" in line and "no checkpoint was written" in line
    record = json.loads(model.with_suffix(".json").read_text())
    assert record["error"]["message"] == "disk on fire" and record["model"] == str(model)
    assert record["error"]["last_checkpoint"] is None
    from policies.learned import LearnedPolicy

    LearnedPolicy(model)   # loads


def test_a_run_that_ends_with_nonfinite_weights_is_a_failure(tmp_path, monkeypatch, capsys):
    with_callbacks(monkeypatch, PoisonAtTheEnd())   # after the last update
    status = main([*TINY, "--timesteps", "300", "--checkpoint-every", "0",
                   "--logdir", str(tmp_path), "--run-name", "late"])
    assert status == 1
    line = one_error_line(capsys.readouterr().err)
    assert "training failed at 300 agent-steps (PPO): NonFiniteWeights" in line
    assert not (tmp_path / "late" / "model.zip").exists()
    assert not (tmp_path / "late" / "model.json").exists()
    record = json.loads((tmp_path / "late" / "model_failed.json").read_text())
    assert record["error"]["type"] == "NonFiniteWeights"


# ------------------------------------------------------------------ Ctrl-C while cloning
BC = [*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--bc-teacher", "heuristic",
      "--bc-timesteps", "100", "--bc-epochs", "3"]


def test_ctrl_c_while_collecting_demonstrations(tmp_path, monkeypatch, capsys):
    """Review: cloning ran outside the interrupt handling (nothing saved, no record) and
    the message printed was an empty line."""
    import train.bc

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.bc, "collect_demonstrations", interrupted)
    assert main([*BC, "--logdir", str(tmp_path), "--run-name", "c"]) == 130
    err = without_notes(capsys.readouterr().err)[-1]
    model = tmp_path / "c" / "model_interrupted.zip"
    assert err == ("interrupted during behaviour cloning (collecting demonstrations) at 0 "
                   f"agent-steps; the unfinished model was saved to {model}; training record "
                   f"{model.with_suffix('.json')}")
    assert not (tmp_path / "c" / "model.zip").exists()
    record = json.loads(model.with_suffix(".json").read_text())
    assert record["interrupted"] is True
    assert record["interrupted_during"] == "behaviour cloning (collecting demonstrations)"
    assert record["behaviour_cloning"]["samples"] == 0 and record["num_timesteps"] == 0


def test_ctrl_c_while_fitting_saves_what_was_cloned(tmp_path, monkeypatch, capsys):
    import train.bc

    real = train.bc.behaviour_clone

    def two_epochs_then_ctrl_c(*args, on_epoch, **kwargs):
        def counting(done, stats):
            on_epoch(done, stats)
            if done == 2:
                raise KeyboardInterrupt
        return real(*args, on_epoch=counting, **kwargs)

    monkeypatch.setattr(train.bc, "behaviour_clone", two_epochs_then_ctrl_c)
    assert main([*BC, "--logdir", str(tmp_path), "--run-name", "f"]) == 130
    err = without_notes(capsys.readouterr().err)[-1]
    assert err.startswith("interrupted during behaviour cloning (fitting: 2 of 3 epochs done)")
    record = json.loads((tmp_path / "f" / "model_interrupted.json").read_text())
    bc = record["behaviour_cloning"]
    assert bc["samples"] > 0 and bc["epochs_done"] == 2 and bc["bc_nll"] > 0
    assert record["interrupted_during"] == "behaviour cloning (fitting: 2 of 3 epochs done)"
    assert record["timesteps_this_run"] == 0   # no PPO after Ctrl-C
    from policies.learned import LearnedPolicy

    LearnedPolicy(tmp_path / "f" / "model_interrupted.zip")   # the partly cloned model loads


def test_a_ctrl_c_before_training_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    """First-time-user review: a Ctrl-C before the run directory existed printed only
    "interrupted", leaving the user to wonder what was saved."""
    def ctrl_c(config, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", ctrl_c)
    assert main([*TINY, "--logdir", str(tmp_path)]) == 130
    assert without_notes(capsys.readouterr().err) == [
        "interrupted before training started: nothing was written"]
    # inside train(), while the environment is built
    monkeypatch.undo()

    def ctrl_c_building(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "make_venv", ctrl_c_building)
    assert main([*TINY, "--logdir", str(tmp_path)]) == 130
    assert without_notes(capsys.readouterr().err) == [
        "interrupted before training started: nothing was written"]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ an existing --out
def test_an_existing_out_is_refused_unless_overwrite(tmp_path, capsys):
    """Review: --out silently replaced an existing model and its record (even the
    shipped policies/pretrained/gridswarm_ppo.zip)."""
    out = tmp_path / "X.zip"
    out.write_bytes(b"the earlier model")
    args = [*TINY, "--timesteps", "300", "--checkpoint-every", "0",
            "--logdir", str(tmp_path / "runs"), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out model file '{out}' already exists: pass --overwrite" in line
    assert out.read_bytes() == b"the earlier model" and not out.with_suffix(".json").exists()
    assert not (tmp_path / "runs").exists()   # refused before any work
    # the record alone counts too
    record_only = tmp_path / "Y.json"
    record_only.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main([*args[:-1], str(tmp_path / "Y")])
    assert exc.value.code == 2
    assert f"training record '{record_only}' already exists" in capsys.readouterr().err
    assert record_only.read_text() == "{}"
    # --overwrite replaces both, and leaves no temporary file behind
    assert main([*args, "--overwrite", "--run-name", "ow"]) == 0
    from policies.learned import LearnedPolicy

    LearnedPolicy(out)
    assert json.loads(out.with_suffix(".json").read_text())["config"]["overwrite"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.json", "X.zip", "Y.json", "runs"]


def test_a_save_that_fails_midway_leaves_the_earlier_model_whole(tmp_path, monkeypatch,
                                                                   capsys):
    import errno

    from sb3_contrib import MaskablePPO

    out = tmp_path / "X.zip"
    out.write_bytes(b"the earlier model")
    real_save = MaskablePPO.save
    calls = []

    def disk_full_once(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            path.write(b"half a mod")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(MaskablePPO, "save", disk_full_once)
    status = main([*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--overwrite",
                   "--logdir", str(tmp_path / "runs"), "--out", str(out)])
    assert status == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line
    assert out.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.zip", "runs"]   # no .part left
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert rescued.is_file()
    rescued.unlink()
    rescued.with_suffix(".json").unlink(missing_ok=True)


# ------------------------------------------------------------------ resume
def tiny_config(tmp_path: Path, **kw):
    from train.config import TrainConfig

    base = dict(scenario="emergency", total_timesteps=300, n_agents=5, n_steps=60,
                batch_size=300, n_epochs=1, checkpoint_every=0, logdir=str(tmp_path / "runs"),
                progress_bar=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_does_not_replay_the_episode_seeds(tmp_path, monkeypatch):
    """Review: resume reseeded the loaded model with config.seed, so it restarted the
    first run's episode-seed stream."""
    from gridswarm_env.env import GridSwarmEnv
    from train.trainer import train

    seeds: list[int] = []
    real_reset = GridSwarmEnv.reset

    def recording_reset(self, seed=None, options=None):
        seeds.append(seed)
        return real_reset(self, seed=seed, options=options)

    monkeypatch.setattr(GridSwarmEnv, "reset", recording_reset)
    first = train(tiny_config(tmp_path, run_name="first", total_timesteps=900))
    first_seeds, seeds[:] = list(seeds), []
    assert len(first_seeds) == 2   # 180 steps of 120-step episodes
    resumed = [train(tiny_config(tmp_path, run_name=f"resumed{k}", resume=str(first),
                                 total_timesteps=900)) for k in (1, 2)]
    resumed_seeds = seeds[:2], seeds[2:]
    assert resumed_seeds[0] == resumed_seeds[1]   # reproducible...
    assert not set(resumed_seeds[0]) & set(first_seeds)   # ...and not a replay
    from train.trainer import resume_seed

    record = json.loads(resumed[0].with_suffix(".json").read_text())
    assert record["resume_seed"] == resume_seed(3, 900)
    # resuming the resumed model (at 1 800 agent-steps) starts yet another stream
    seeds[:] = []
    train(tiny_config(tmp_path, run_name="resumed3", resume=str(resumed[0]),
                      total_timesteps=900))
    assert not set(seeds[:2]) & set(resumed_seeds[0]) and seeds[:2] != first_seeds


def test_resume_keeps_the_environment_and_reward_of_the_checkpoint(tmp_path, capsys):
    """Review: --resume silently reset scenario, agents, limits and the reward settings
    to the defaults instead of those the checkpoint was trained with."""
    limits = tmp_path / "limits.toml"
    limits.write_text("[agents.battery_001]\nmax_discharge_mw = 0.0\n")
    base = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60", "--batch-size",
            "300", "--n-epochs", "1", "--no-progress", "--timesteps", "300",
            "--logdir", str(tmp_path)]
    assert main([*base, "--run-name", "base", "--checkpoint-every", "300", "--eval-every",
                 "300", "--eval-seeds", "1", "--reward", "marginal", "--marginal-weight",
                 "0.5", "--reward-scale", "0.02", "--reward-clip", "5", "--limits",
                 str(limits), "--randomize", "--governor-deadband-hz", "0.036"]) == 0
    want = {"scenario": "emergency", "scenario_sha256": None, "randomize": True,
            "n_agents": 5, "n_envs": 1,
            "limits": str(limits.resolve()),
            "limits_sha256": hashlib.sha256(limits.read_bytes()).hexdigest(),
            "env_config_file": None, "env_config_sha256": None,
            "governor_deadband_hz": 0.036, "reward": "marginal", "marginal_weight": 0.5, "reward_scale": 0.02,
            "reward_clip": 5.0}
    run = tmp_path / "base"
    capsys.readouterr()
    assert main(["--resume", str(run / "model.zip"), "--timesteps", "300", "--no-progress",
                 "--checkpoint-every", "0", "--logdir", str(tmp_path),
                 "--run-name", "kept"]) == 0
    # no warning that the reward changed (this marginal reward at 5 agents starves the
    # actor, which a warning of its own says)
    assert "the reward differs" not in capsys.readouterr().err
    record = json.loads((tmp_path / "kept" / "model.json").read_text())
    assert {name: record["config"][name] for name in want} == want
    assert record["checkpoint_env_settings"] == want and record["changed_on_resume"] == {}
    from train.trainer import ENV_SETTINGS_ATTR, load_model

    for saved in (run / "model.zip", run / "checkpoints" / "model_300_steps.zip",
                  run / "best_model.zip"):   # every model the run writes stores them
        assert getattr(load_model(saved), ENV_SETTINGS_ATTR) == want, saved
    # a reward flag that changes the reward is applied, with a warning and in the record;
    # another scenario (a curriculum) without one
    assert main(["--resume", str(run / "model.zip"), "--timesteps", "300", "--no-progress",
                 "--checkpoint-every", "0", "--logdir", str(tmp_path), "--run-name", "new",
                 "--reward-scale", "0.05", "--marginal-weight", "0.5",
                 "--scenario", "price_spike", "--no-randomize"]) == 0
    # (this marginal reward at 5 agents starves the actor: that warning is left out)
    err = [line for line in without_notes(capsys.readouterr().err)
           if "PPO's gradient clip" not in line]
    assert len(err) == 1 and err[0].startswith(f"{PROG}: warning: the reward differs")
    assert "--reward-scale 0.05 (the checkpoint's: 0.02)" in err[0]
    assert "marginal" not in err[0]   # given, but unchanged
    record = json.loads((tmp_path / "new" / "model.json").read_text())
    assert record["config"]["reward_scale"] == 0.05 and record["config"]["reward"] == "marginal"
    assert record["changed_on_resume"] == {
        "scenario": {"checkpoint": "emergency", "now": "price_spike"},
        "randomize": {"checkpoint": True, "now": False},
        "reward_scale": {"checkpoint": 0.02, "now": 0.05}}
    assert record["scenario_randomization"] is None
    # the checkpoint's limits file gone: said before any work
    limits.unlink()
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run / "model.zip"), "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "was trained with --limits" in line and "--limits ''" in line


# ------------------------------------------------------------------ minor
@pytest.mark.parametrize("seed", ["4294967295", "4294967296", "-1"])
def test_a_seed_out_of_range_names_the_flag(seed, tmp_path, capsys):
    """Review: --seed 4294967296 failed in numpy with a message not naming --seed (and
    4294967295 would overflow as seed + 1 after behaviour cloning)."""
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--timesteps", "300", "--seed", seed, "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"error: --seed {seed}: expected an integer from 0 to 4,294,967,294 (numpy" in line
    assert list(tmp_path.iterdir()) == []


def test_the_largest_seed_trains(tmp_path):
    from train.trainer import train

    path = train(tiny_config(tmp_path, seed=2**32 - 2, run_name="big"))
    assert json.loads(path.with_suffix(".json").read_text())["config"]["seed"] == 2**32 - 2


@pytest.mark.parametrize("flags", [["--bc-timesteps", "1000"], ["--bc-epochs", "3"],
                                   ["--bc-lr", "0.01", "--bc-timesteps", "5"]])
def test_cloning_flags_without_a_teacher_are_refused(flags, tmp_path, capsys):
    """Review: --bc-timesteps without --bc-teacher was silently ignored."""
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--timesteps", "300", *flags, "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{flags[0]} {flags[1]}" in line and "needs --bc-teacher {heuristic,oracle}" in line
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_steps_increase_with_evaluation(tmp_path):
    """Review: the evaluation's logger.dump wrote SB3's pending train/* scalars at the
    step the previous rollout's dump had already written them at (an evaluation every
    other rollout: train/loss at steps 600, 600, 1200, 1200)."""
    from train.trainer import train

    path = train(tiny_config(tmp_path, run_name="tb", total_timesteps=1200, eval_every=600,
                             eval_seeds=1))
    curve = json.loads(path.with_suffix(".json").read_text())["evaluation_during_training"]
    steps = scalar_steps(tmp_path / "runs" / "tb")   # every event as written, in order
    assert "train/loss" in steps and "eval/system_cost" in steps
    for tag, written in steps.items():
        assert written == sorted(set(written)), (tag, written)   # strictly increasing
    assert steps["eval/system_cost"] == [p["agent_steps"] for p in curve["curve"]] == [
        0, 600, 1200]
    # csv gets every evaluation at its own step, the last one included (diff review:
    # they came with the next rollout's dump, one rollout late, and the last never)
    import csv

    with open(tmp_path / "runs" / "tb" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    evaluated = [(int(row["time/total_timesteps"]), float(row["eval/system_cost"]))
                 for row in rows if row.get("eval/system_cost")]
    assert evaluated == [(p["agent_steps"], pytest.approx(p["system_cost"]))
                         for p in curve["curve"]]


class StopAtFirstStep(BaseCallback):
    """Ends training at its first step: ``"error"`` raises, ``"ctrl-c"`` interrupts."""

    def __init__(self, stop: str) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        if self.stop == "error":
            raise RuntimeError("disk on fire")
        raise KeyboardInterrupt


@pytest.mark.parametrize("stop", ["error", "ctrl-c"])
def test_an_unfinished_run_never_replaces_the_model_it_would_overwrite(stop, tmp_path,
                                                                         monkeypatch, capsys):
    """Diff review: with --overwrite, a run that failed or was interrupted renamed its
    partly trained model (and record) over the finished one at --out."""
    out = tmp_path / "X.zip"
    args = [*TINY, "--timesteps", "300", "--checkpoint-every", "0",
            "--logdir", str(tmp_path / "runs"), "--out", str(out)]
    assert main([*args, "--run-name", "good"]) == 0
    good, good_record = out.read_bytes(), out.with_suffix(".json").read_text()

    with_callbacks(monkeypatch, StopAtFirstStep(stop))
    status = main([*args, "--overwrite", "--run-name", "again"])
    err = capsys.readouterr().err
    assert status == (1 if stop == "error" else 130)
    assert out.read_bytes() == good and out.with_suffix(".json").read_text() == good_record
    kept = tmp_path / "runs" / "again" / f"X_{'failed' if stop == 'error' else 'interrupted'}.zip"
    assert str(kept) in err
    record = json.loads(kept.with_suffix(".json").read_text())
    assert record["model"] == str(kept)
    from policies.learned import LearnedPolicy

    LearnedPolicy(kept)   # the unfinished model is kept, and loads


@pytest.mark.parametrize("stop", ["error", "ctrl-c"])
def test_an_unfinished_run_never_writes_to_a_free_out(stop, tmp_path, monkeypatch, capsys):
    """First-time-user review: Ctrl-C (or an error) saved the partial model at --out when
    that path was free, where it passed for a finished model (only its .json said
    otherwise): an unfinished run now always goes to the run directory and says so."""
    out = tmp_path / "X.zip"

    with_callbacks(monkeypatch, StopAtFirstStep(stop))
    status = main([*TINY, "--timesteps", "300", "--checkpoint-every", "0",
                   "--logdir", str(tmp_path / "runs"), "--run-name", "r", "--out", str(out)])
    assert status == (1 if stop == "error" else 130)
    err = without_notes(capsys.readouterr().err)[-1]
    assert not out.exists() and not out.with_suffix(".json").exists()
    kept = tmp_path / "runs" / "r" / f"X_{'failed' if stop == 'error' else 'interrupted'}.zip"
    assert str(kept) in err and f"--out {out} was not written" in err
    assert f"training record {kept.with_suffix('.json')}" in err
    record = json.loads(kept.with_suffix(".json").read_text())
    assert record["model"] == str(kept)


# ------------------------------------------------------------------ a second Ctrl-C
@pytest.mark.parametrize("when", ["model", "record"])
def test_a_ctrl_c_while_saving_says_what_was_written(when, tmp_path, monkeypatch, capsys):
    """Review: a Ctrl-C while the model (or its record) was written after training reached
    main bare, which printed "interrupted before training started: nothing was written"
    although the run directory, its logs and (for the record) the model existed."""
    real_save, real_write = trainer._save_model, trainer._write_text

    def ctrl_c_model(model, path, *replace):
        raise KeyboardInterrupt

    def ctrl_c_record(path, text):
        raise KeyboardInterrupt

    if when == "model":
        monkeypatch.setattr(trainer, "_save_model", ctrl_c_model)
    else:
        monkeypatch.setattr(trainer, "_write_text", ctrl_c_record)
    out = tmp_path / "X.zip"
    assert main([*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--out", str(out),
                 "--logdir", str(tmp_path / "runs"), "--run-name", "r"]) == 130
    line = without_notes(capsys.readouterr().err)[-1]
    assert "nothing was written" not in line and "before training started" not in line
    run = tmp_path / "runs" / "r"
    assert line.startswith("interrupted while the model and its record were written "
                           "(training had ended during PPO at 300 agent-steps)")
    assert "the training record was not written" in line and f"logs in {run}" in line
    if when == "model":
        assert "the model was not saved" in line and f"--out {out} was not written" in line
        assert not out.exists()
    else:
        assert f"the model was saved to {out}" in line and out.is_file()
        assert "--out" not in line
    assert not out.with_suffix(".json").exists()
    assert real_save and real_write


def test_a_bare_ctrl_c_after_the_run_directory_exists_is_never_nothing(tmp_path,
                                                                       monkeypatch, capsys):
    """main's own message for a Ctrl-C train() did not word names what appeared under
    --logdir rather than claiming nothing was written."""
    def ctrl_c_after_writing(config, **kw):
        (Path(config.logdir) / "half").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", ctrl_c_after_writing)
    assert main([*TINY, "--logdir", str(tmp_path)]) == 130
    line = without_notes(capsys.readouterr().err)[-1]
    assert line == f"interrupted: no finished model was saved; written under --logdir: " \
                   f"{tmp_path / 'half'}"


# ------------------------------------------------------------------ the last scalars


@pytest.mark.parametrize("stop", ["error", "ctrl-c"])
def test_an_unfinished_run_writes_its_last_scalars(stop, tmp_path, monkeypatch, capsys):
    """Review: on Ctrl-C or an error SB3 skips the callbacks' end of training, so the
    scalars recorded since the last update (here the episode that finished in the
    interrupted rollout) never reached tensorboard: they are written at the step reached."""
    class Stop(AtStep):
        def fire(self) -> None:
            if stop == "error":
                raise RuntimeError("disk on fire")
            raise KeyboardInterrupt

    # rollouts of 250 agent-steps; the first 120-step episode ends at 600, mid-rollout
    with_callbacks(monkeypatch, Stop(at=650))
    status = main([*TINY, "--n-steps", "50", "--batch-size", "250", "--timesteps", "1500",
                   "--checkpoint-every", "0", "--logdir", str(tmp_path), "--run-name", "r"])
    assert status == (1 if stop == "error" else 130)
    steps = scalar_steps(tmp_path / "r")
    assert steps["grid/system_cost"] == [650] and steps["time/fps"] == [250, 500, 650]
    assert steps["train/loss"] == [250, 500]
    record = json.loads(next((tmp_path / "r").glob("model_*.json")).read_text())
    assert "logs_flush_error" not in record


def test_a_failing_logger_does_not_mask_the_error(tmp_path, monkeypatch, capsys):
    """The final dump after an error must not replace the run's own error."""
    import train.callbacks

    class Stop(AtStep):
        def fire(self) -> None:
            def broken(*a, **k):
                raise OSError("tensorboard disk full")

            monkeypatch.setattr(train.callbacks.DumpAfterUpdate, "dump", broken)
            raise RuntimeError("disk on fire")

    with_callbacks(monkeypatch, Stop(at=450))
    assert main([*TINY, "--timesteps", "900", "--checkpoint-every", "0",
                 "--logdir", str(tmp_path), "--run-name", "r"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "RuntimeError: disk on fire" in line and "tensorboard" not in line
    record = json.loads((tmp_path / "r" / "model_failed.json").read_text())
    assert record["error"]["message"] == "disk on fire"
    assert record["logs_flush_error"] == ("the last scalars were not written: OSError: "
                                          "tensorboard disk full")


def test_what_a_user_callback_records_at_a_rollout_start_is_not_a_rollout_late(
        tmp_path, monkeypatch):
    """Review: DumpAfterUpdate came first in the CallbackList, so a value another callback
    recorded at a rollout start was written with the next rollout's dump (and the one
    recorded at the end of training never)."""
    class Mark(BaseCallback):
        def _on_rollout_start(self) -> None:
            self.logger.record("custom/start", self.num_timesteps)

        def _on_training_end(self) -> None:
            self.logger.record("custom/end", self.num_timesteps)

        def _on_step(self) -> bool:
            return True

    with_callbacks(monkeypatch, Mark())
    assert main([*TINY, "--timesteps", "900", "--checkpoint-every", "0",
                 "--logdir", str(tmp_path), "--run-name", "r"]) == 0
    points = {tag: pts for tag, pts in scalar_points(tmp_path / "r").items()
              if tag.startswith("custom/")}
    # each value written at the step it was recorded at (the record at the first rollout
    # start, 0, is overwritten by the next before any dump)
    assert points == {"custom/start": [(300, 300.0), (600, 600.0)],
                      "custom/end": [(900, 900.0)]}


@pytest.mark.parametrize("target", ["model_300_steps", "best_model"])
def test_an_interrupt_while_a_model_is_written_leaves_no_half_written_file(
        target, tmp_path, monkeypatch, capsys):
    """Checkpoints and the best model (--eval-every) were written into the file itself:
    a Ctrl-C during the write left a truncated model_300_steps.zip, which the message
    then named as the last checkpoint (and --resume refused as corrupt), or a truncated
    best_model.zip. They are now written to a temporary file renamed once complete."""
    from sb3_contrib import MaskablePPO

    from policies.learned import load_maskable_ppo

    real_save = MaskablePPO.save
    fired = []

    def save(self, path, *args, **kwargs):
        name = Path(getattr(path, "name", str(path))).name
        if target in name and not fired:   # half the file, then Ctrl-C
            fired.append(name)
            if isinstance(path, str | Path):
                with open(path, "wb") as f:
                    f.write(b"PK\x03\x04" + bytes(64))
            else:
                path.write(b"PK\x03\x04" + bytes(64))
            raise KeyboardInterrupt
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(MaskablePPO, "save", save)
    run_dir = tmp_path / "runs" / "r"
    handler = signal.getsignal(signal.SIGTERM)
    code = main([*TINY, "--timesteps", "600", "--checkpoint-every", "300", "--eval-every",
                 "300", "--eval-seeds", "1", "--logdir", str(tmp_path / "runs"),
                 "--run-name", "r"])
    assert code == 130 and fired
    assert signal.getsignal(signal.SIGTERM) is handler   # train's SIGTERM handler is gone
    assert "interrupted during PPO" in capsys.readouterr().err
    for path in run_dir.rglob("*.zip"):   # whatever is there loads
        load_maskable_ppo(path)
    assert trainer.last_checkpoint(run_dir) is None   # the one interrupted is not there
    record = json.loads((run_dir / "model_interrupted.json").read_text())
    best = record["evaluation_during_training"]["best_model"]
    assert best is None or Path(best).is_file()       # the record names no missing file
    assert not list(run_dir.rglob("*.part"))   # no temporary file left behind


#: ``python -m train`` with a callback that sends the process SIGTERM at 300 agent-steps
SIGTERM_AT_300 = """
import os, signal, sys
from stable_baselines3.common.callbacks import BaseCallback
import train.trainer as trainer
from train.__main__ import main

class Kill(BaseCallback):
    def _on_step(self):
        if self.num_timesteps >= 300 and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return True

real = trainer.train
trainer.train = lambda config, **kw: real(config, callbacks=[Kill()], **kw)
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_saves_the_unfinished_model_as_ctrl_c_does(tmp_path):
    """SIGTERM (kill, timeout, a scheduler's stop) ended the process at once: no model
    since the last checkpoint, no record. It is now handled as Ctrl-C, with status 143."""
    import os
    import subprocess
    import sys

    from policies.learned import load_maskable_ppo

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = tmp_path / "m.zip"
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_300, *TINY, "--timesteps", "1200",
         "--checkpoint-every", "0", "--logdir", str(tmp_path / "runs"), "--run-name", "r",
         "--out", str(out)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
    run_dir = tmp_path / "runs" / "r"
    saved = run_dir / "m_interrupted.zip"
    assert (f"interrupted by SIGTERM during PPO at 300 agent-steps; the unfinished model "
            f"was saved to {saved}") in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    load_maskable_ppo(saved)
    record = json.loads(saved.with_suffix(".json").read_text())
    assert record["interrupted_by"] == "SIGTERM" and record["interrupted_during"] == "PPO"
    assert record["num_timesteps"] == 300


def test_the_last_checkpoint_is_the_one_with_the_most_steps(tmp_path):
    """A failed or interrupted run names its newest checkpoint: the most agent-steps,
    not the last name in alphabetical order (model_600 after model_1200)."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in ("model_600_steps.zip", "model_1200_steps.zip", "model_x_steps.zip"):
        (ckpts / name).write_bytes(b"")
    assert trainer.last_checkpoint(tmp_path) == ckpts / "model_1200_steps.zip"
    assert trainer.last_checkpoint(tmp_path / "elsewhere") is None
