"""train.dagger: DAgger samples follow the student and carry the teacher's labels; the
distillation command writes a model the learned policy loads, with its record."""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

from policies import make_policy  # noqa: E402
from policies.base import nearest_allowed  # noqa: E402
from policies.learned import DEFAULT_MODEL, PPO_MODEL, LearnedPolicy  # noqa: E402
from tests.tensorboard_events import scalar_steps  # noqa: E402
from train.adapter import GridSwarmVecEnv  # noqa: E402
from train.bc import collect_demonstrations  # noqa: E402
from train.trainer import load_model  # noqa: E402

N_AGENTS = 5


@pytest.fixture(scope="module")
def base_model() -> Path:
    """The shipped PPO model: what ``--base`` distils by default."""
    if not PPO_MODEL.is_file():
        pytest.skip("the shipped PPO model is missing")
    return PPO_MODEL


def test_base_default_is_the_ppo_model_not_what_learned_loads():
    """``learned`` loads the fine-tuned model; the distillation's ``--base`` stays the
    PPO model, so the shipped distilled model's recorded command still makes it."""
    from train.dagger import build_parser

    args = build_parser().parse_args(["--out", "x"])
    assert Path(args.base) == PPO_MODEL and PPO_MODEL.name == "gridswarm_ppo.zip"
    assert DEFAULT_MODEL != PPO_MODEL
    record = json.loads(PPO_MODEL.with_name("gridswarm_dagger.json").read_text())
    assert record["base"] == "policies/pretrained/gridswarm_ppo.zip"
    assert "--base" not in record["command"]


def test_dagger_samples_follow_the_student_and_carry_the_teachers_labels(base_model):
    """With ``student``, the student's actions drive the episode (replaying them gives
    the same observations) and every row's action is what the heuristic would do there."""
    venv = GridSwarmVecEnv("emergency", n_agents=N_AGENTS, seed=3, randomize=True)
    student = load_model(base_model, venv)
    rows = collect_demonstrations(venv, "heuristic", 10, 0.99, student=student)
    steps = len(rows) // N_AGENTS
    assert steps == venv.active_envs[0].scenario.episode_steps   # one whole episode

    replay = GridSwarmVecEnv("emergency", n_agents=N_AGENTS, seed=3, randomize=True)
    load_model(base_model, replay)   # attaching a model seeds the adapter, as above
    obs = replay.reset()
    teacher = make_policy("heuristic")
    teacher.reset(replay.active_envs[0], seed=None)
    n_power = int(replay.action_space.nvec[0])
    differs = 0
    for k in range(steps):
        sl = slice(k * N_AGENTS, (k + 1) * N_AGENTS)
        masks = replay.action_masks()
        np.testing.assert_array_equal(rows.obs[sl], obs)
        label = np.asarray(teacher.act(obs, masks), dtype=np.int64)
        label[:, 0] = nearest_allowed(label[:, 0], masks[:, :n_power])
        np.testing.assert_array_equal(rows.actions[sl], label)
        acts, _ = student.policy.predict(obs, deterministic=True, action_masks=masks)
        differs += int((np.asarray(acts) != label).any())
        obs = replay.step(np.asarray(acts, dtype=np.int64))[0]
    # the student is not the teacher: the rows are not a teacher-driven episode
    assert differs > 0


def test_distillation_command_writes_a_loadable_model_and_its_record(base_model, tmp_path,
                                                                     capsys):
    from train.dagger import main

    out = tmp_path / "d"
    argv = ["--out", str(out), "--agents", str(N_AGENTS), "--samples", "100",
            "--emergency-samples", "50", "--epochs", "2", "--iterations", "1",
            "--iteration-samples", "50", "--iteration-epochs", "1",
            "--logdir", str(tmp_path / "runs")]
    assert main(argv) == 0
    model = tmp_path / "d.zip"
    record = json.loads(model.with_suffix(".json").read_text())
    # tensorboard: every epoch's losses (2 cloning + 1 DAgger), each phase's accuracy at
    # the epochs so far, the round's disagreement
    points = scalar_steps(Path(record["run_dir"]))
    assert Path(record["run_dir"]).parent == tmp_path / "runs"
    assert points["distil/likelihood_loss"] == [1, 2, 3]
    assert points["distil/value_mse"] == [1, 2, 3]
    assert points["distil/accuracy_power"] == [2, 3]
    assert points["distil/dagger_disagreement"] == [1]
    assert record["command"] == "python -m train.dagger " + shlex.join(argv)
    assert [p["phase"] for p in record["phases"]] == ["cloning", "dagger 1"]
    assert record["teachers"]["emergency"] == "heuristic"
    assert record["teachers"]["solar_surplus"] == "policies/pretrained/gridswarm_ppo.zip"
    assert 0.0 <= record["phases"][1]["disagreement_before"] <= 1.0
    LearnedPolicy(model)   # checks the record's SHA-256 and observation fields
    # what it was taught on, for python -m train --resume (which keeps --randomize)
    from train.trainer import checkpoint_settings
    settings = checkpoint_settings(model)[1]
    assert settings["randomize"] is True and settings["scenario"] == "all"
    assert settings["n_agents"] == N_AGENTS
    assert "model saved to" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:   # an existing --out needs --overwrite
        main(argv)
    assert refused.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    model.unlink()   # a record left beside a missing model is not replaced silently either
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert "d.json" in capsys.readouterr().err


def test_distillation_reports_each_epoch_and_a_ctrl_c_writes_nothing(base_model, tmp_path,
                                                                    capsys, monkeypatch):
    import train.bc
    from train.dagger import main

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(kwargs)
        kwargs["on_epoch"](1, {"bc_nll": 0.5, "bc_value_mse": 0.1})
        raise KeyboardInterrupt

    monkeypatch.setattr(train.bc, "behaviour_clone", interrupted)
    out = tmp_path / "sub" / "m.zip"
    code = main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "50",
                 "--emergency-samples", "0", "--epochs", "3", "--logdir", ""])
    said = capsys.readouterr()
    assert code == 130 and len(calls) == 1
    assert "cloning: epoch 1/3, likelihood loss 0.5000" in said.out
    assert "interrupted: nothing was written" in said.err
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_stopped_distillation_leaves_no_tensorboard_run(base_model, tmp_path, capsys,
                                                          monkeypatch, stop):
    """Ctrl-C ("interrupted: nothing was written") or an error before the model is saved
    removes the run's event file and the directories it made: it left an empty
    ``dagger_s0_<time>`` run (the writer had not flushed the epochs) beside a message
    saying nothing was written. Another run in ``--logdir`` stays."""
    import train.bc
    from train.dagger import main

    def stopped(*args, **kwargs):
        kwargs["on_epoch"](1, {"bc_nll": 0.5, "bc_value_mse": 0.1})
        raise stop

    monkeypatch.setattr(train.bc, "behaviour_clone", stopped)
    argv = ["--out", str(tmp_path / "m.zip"), "--agents", str(N_AGENTS), "--samples", "50",
            "--emergency-samples", "0", "--epochs", "3"]
    fresh = tmp_path / "new" / "runs"   # a --logdir the run would create
    if stop is KeyboardInterrupt:
        assert main(argv + ["--logdir", str(fresh)]) == 130
        assert "interrupted: nothing was written" in capsys.readouterr().err
    else:
        with pytest.raises(RuntimeError):
            main(argv + ["--logdir", str(fresh)])
    assert not (tmp_path / "new").exists()
    logdir = tmp_path / "runs"
    other = logdir / "earlier_run"
    other.mkdir(parents=True)
    (other / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    with contextlib.suppress(RuntimeError):
        main(argv + ["--logdir", str(logdir)])
    assert [p.name for p in logdir.iterdir()] == ["earlier_run"]
    assert (other / "events.out.tfevents.1.host.1.0").read_bytes() == b"x"


def test_sigterm_stops_a_distillation_as_ctrl_c_does(base_model, tmp_path, capsys,
                                                     monkeypatch):
    """tensorboard review: SIGTERM (kill, timeout) ended the distillation at once, with
    nothing said and its tensorboard run left behind. It is now handled as Ctrl-C
    (python -m train's handler, train.errors.Terminated): one line, nothing written, the
    run removed, status 143 (128 + SIGTERM); the previous handler is restored."""
    import os
    import signal

    import train.bc
    from train.dagger import main

    class DefaultHandler(Exception):
        """What the test's own handler raises: the distillation left SIGTERM to it."""

    def test_handler(signum, frame):
        raise DefaultHandler

    def killed(*args, **kwargs):
        kwargs["on_epoch"](1, {"bc_nll": 0.5, "bc_value_mse": 0.1})
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(train.bc, "behaviour_clone", killed)
    out = tmp_path / "m.zip"
    previous = signal.signal(signal.SIGTERM, test_handler)
    try:
        code = main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "50",
                     "--emergency-samples", "0", "--epochs", "3",
                     "--logdir", str(tmp_path / "runs")])
        assert signal.getsignal(signal.SIGTERM) is test_handler   # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    assert capsys.readouterr().err.strip() == (
        "python -m train.dagger: interrupted by SIGTERM: nothing was written (the model "
        "and its record are written at the end)")
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_an_interrupt_while_the_record_is_written_says_the_model_was(base_model, tmp_path,
                                                                     capsys, monkeypatch):
    """A Ctrl-C after the model was saved, while its record was being written, still said
    "nothing was written" beside the new model (which --overwrite had put over an earlier
    one, whose record stays). It now names what was written."""
    import train.dagger
    from policies.learned import load_maskable_ppo

    out = tmp_path / "m.zip"
    real = train.dagger.file_sha256

    def interrupted(path):
        if Path(path) == out:   # the saved model's hash, for its record
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(train.dagger, "file_sha256", interrupted)
    out.write_bytes(b"earlier model")
    out.with_suffix(".json").write_text("{}")
    code = train.dagger.main(["--out", str(out), "--overwrite", "--agents", str(N_AGENTS),
                              "--samples", "50", "--emergency-samples", "0", "--epochs", "1",
                              "--iterations", "0", "--logdir", str(tmp_path / "runs")])
    assert code == 130
    run_dir = next((tmp_path / "runs").iterdir())
    assert capsys.readouterr().err.strip() == (
        f"python -m train.dagger: interrupted: the model was saved to {out}, but not its "
        f"record {out.with_suffix('.json')} (the file there is an earlier model's); "
        f"tensorboard run {run_dir}")
    load_maskable_ppo(out)   # the new model
    assert out.with_suffix(".json").read_text() == "{}"
    assert list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.parametrize(("argv", "says"), [
    # TrainConfig's rule and words (python -m train --lr 2); nan read "must lie in (0, 1]";
    # a bad value, not a bad flag: no "(see python -m train.dagger --help)", as python -m
    # train, demo.py and evaluate.py (it was added to every value error)
    (["--out", "x", "--lr", "2"], "error: --lr 2.0: must lie in (0.0, 1.0]\n"),
    (["--out", "x", "--lr", "nan"], "error: --lr nan: expected a finite number\n"),
    (["--out", "x", "--lr", "0"], "error: --lr 0.0: must lie in (0.0, 1.0]\n"),
    (["--out", "x", "--base", "/no/such/model.zip"], "--base:"),
    (["--out", "x", "--epochs", "0"], "error: --epochs 0: expected an integer from 1 to 100,000,000"),
    (["--out", " "], "--out is empty"),
    # diff review: X.json wrote X.json.zip and its record X.json.json, after ~15 minutes
    (["--out", "x.json"], "--out 'x.json': the model is a .zip and its training record"),
    (["--out", "x", "--logdir", "afile"], "--logdir"),   # a file, not a directory
    (["--out", "x", "--base", "afile"], "--base:"),
    ([], "the following arguments are required: --out"),
])
def test_distillation_command_refuses_bad_flags_in_one_line(argv, says, capsys, tmp_path,
                                                           monkeypatch):
    from train.dagger import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setattr("train.dagger.distil", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "x.zip").exists()


def test_seed_reaches_the_three_scenario_samples(base_model, tmp_path, monkeypatch):
    """Review: attaching the base model re-seeded the adapter with the model's own saved
    seed, so ``--seed`` did not change the cloning samples over the three scenarios. Their
    first observations are now those of an adapter seeded with ``--seed`` alone."""
    import torch

    import train.bc
    from train.config import TrainConfig
    from train.dagger import distil
    from train.trainer import make_venv

    real = train.bc.collect_demonstrations
    first: list[np.ndarray] = []
    threads_seen: set[int] = set()

    def recording(venv, teacher, n, gamma, **kwargs):
        threads_seen.add(torch.get_num_threads())
        demos = real(venv, teacher, n, gamma, **kwargs)
        if isinstance(teacher, dict):   # the three-scenario samples
            first.append(demos.obs[:N_AGENTS].copy())
        return demos

    monkeypatch.setattr(train.bc, "collect_demonstrations", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for seed in (0, 1):
            distil(base_model, tmp_path / f"m{seed}.zip", n_agents=N_AGENTS, seed=seed,
                   samples=10, emergency_samples=0, epochs=1, iterations=0,
                   log=lambda _: None)
        # distil runs on one torch thread and leaves the process's setting as it was
        assert threads_seen == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert not np.array_equal(first[0], first[1])
    fresh = make_venv(TrainConfig(scenario="all", randomize=True, n_agents=N_AGENTS, seed=1))
    np.testing.assert_array_equal(first[1], fresh.reset())


def test_the_shipped_fine_tuned_model_is_ppo_from_the_distilled_one(base_model):
    """gridswarm_ppo_dagger.zip: python -m train --resume of the distilled model on
    randomized episodes; it loads with its record (hash and observation fields)."""
    tuned = base_model.with_name("gridswarm_ppo_dagger.zip")
    if not tuned.is_file():
        pytest.skip("the fine-tuned model is missing")
    LearnedPolicy(tuned)
    record = json.loads(tuned.with_suffix(".json").read_text())
    assert record["resumed_from"] == "policies/pretrained/gridswarm_dagger.zip"
    assert record["config"]["randomize"] is True and record["config"]["reward"] == "env"
    assert record["command"].startswith("python -m train --resume "
                                        "policies/pretrained/gridswarm_dagger.zip")


def test_config_file_and_deadband_reach_every_environment_and_the_record(base_model, tmp_path,
                                                                         monkeypatch):
    """``--config FILE`` and ``--governor-deadband-hz`` (python -m train's flags): every
    environment the distillation plays (the three-scenario cloning, the extra
    emergencies, the DAgger round) runs the file's settings with the flag's deadband
    over the file's; the record and the model store the file's path and SHA-256, the
    deadband and the settings as a config file, as python -m train's do."""
    import hashlib
    import tomllib

    import train.bc
    from gridswarm_env.config_file import env_config_from_dict
    from train.dagger import main
    from train.trainer import checkpoint_settings

    config = tmp_path / "env.toml"
    config.write_text("[grid]\ninertia_h_s = 3.0\ngovernor_deadband_hz = 0.02\n")
    real = train.bc.collect_demonstrations
    played = []

    def recording(venv, teacher, n, gamma, **kwargs):
        demos = real(venv, teacher, n, gamma, **kwargs)
        played.append((venv.scenarios, [env.config.grid for env in venv.active_envs]))
        return demos

    monkeypatch.setattr(train.bc, "collect_demonstrations", recording)
    out = tmp_path / "d.zip"
    assert main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "10",
                 "--emergency-samples", "10", "--epochs", "1", "--iterations", "1",
                 "--iteration-samples", "10", "--iteration-epochs", "1", "--logdir", "",
                 "--config", str(config), "--governor-deadband-hz", "0.03"]) == 0
    assert [scenarios for scenarios, _ in played] == [
        ("price_spike", "solar_surplus", "emergency"), ("emergency",), ("emergency",)]
    grids = [grid for _, grids in played for grid in grids]
    assert [(g.inertia_h_s, g.governor_deadband_hz) for g in grids] == [(3.0, 0.03)] * 3
    record = json.loads(out.with_suffix(".json").read_text())
    sha = hashlib.sha256(config.read_bytes()).hexdigest()
    assert record["config"]["env_config_file"] == str(config)
    assert record["config"]["env_config_sha256"] == sha
    assert record["config"]["governor_deadband_hz"] == 0.03
    ran = env_config_from_dict(tomllib.loads(record["env_config_toml"]))
    assert (ran.grid.inertia_h_s, ran.grid.governor_deadband_hz) == (3.0, 0.03)
    settings = checkpoint_settings(out)[1]   # what python -m train --resume reads
    assert settings["env_config_file"] == str(config.resolve())
    assert settings["env_config_sha256"] == sha and settings["governor_deadband_hz"] == 0.03
    LearnedPolicy(out)   # a distilled model with a config loads as a trained one does


def test_config_file_deadband_holds_without_the_flag():
    """Without ``--governor-deadband-hz`` the file's deadband is the environments'."""
    from train.dagger import build_parser, taught_config

    path = Path(__file__).resolve().parents[1] / "configs" / "nerc_deadband.toml"
    args = build_parser().parse_args(["--out", "x", "--config", str(path)])
    taught = taught_config(args.agents, args.trust, args.seed, args.config,
                           args.governor_deadband_hz)
    assert taught.env_config().grid.governor_deadband_hz == 0.036


@pytest.mark.parametrize(("text", "says"), [
    ("n_agents = 5\n", "training takes it from --agents; remove it from the file"),
    ('trust = "ed25519"\n', "training takes it from --trust; remove it from the file"),
    ("shadow = true\n", "training dispatches the contracts (no shadow mode)"),
    ("[grid]\ninertia_h_s = -1.0\n", "inertia_h_s"),
    ("[grid\n", "config file"),   # not TOML
    # the base model's network acts in 21 x 11 levels (python -m train would train a new one)
    ("[market]\nn_power_levels = 11\n", "--base: model "),
])
def test_a_bad_config_file_is_refused_in_one_line_before_anything_is_written(
        base_model, text, says, tmp_path, capsys):
    """Refused as python -m train refuses it (the same message), exit 2, before any output
    (the model, its record, the tensorboard run)."""
    import train.__main__
    from train.dagger import main

    config = tmp_path / "bad.toml"
    config.write_text(text)
    out, logdir = tmp_path / "m.zip", tmp_path / "runs"
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--config", str(config), "--logdir", str(logdir)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not out.exists() and not out.with_suffix(".json").exists() and not logdir.exists()
    if "--base" not in says:   # python -m train's words for the same file
        with pytest.raises(SystemExit):
            train.__main__.main(["--out", str(out), "--config", str(config),
                                 "--logdir", str(logdir)])
        trained = capsys.readouterr().err.split("error: ", 1)[1].strip()
        assert trained in err


def test_base_and_resume_of_other_levels_give_the_shared_message(base_model, tmp_path,
                                                                 capsys):
    """Review s27: ``--base`` said "--config X: its environments act in
    MultiDiscrete([11, 11]) ..., the --base model in ...; give a --config of its levels"
    and ``python -m train --resume`` SB3's "model file ... does not fit this environment:
    Action spaces do not match: MultiDiscrete([21 11]) != MultiDiscrete([11 11])" (no
    flag, no fix). Both now print the line ``demo.py --policy`` (and evaluate.py) prints,
    after their own flag: the model, both action spaces and the levels to play it with
    (the settings' --config). Nothing is written."""
    import demo
    import train.__main__
    from train.dagger import main

    config = tmp_path / "l11.toml"
    config.write_text("[market]\nn_power_levels = 11\n")
    assert demo.main(["--agents", "3", "--no-live", "--steps", "1", "--policy",
                      str(base_model), "--config", str(config)]) == 2
    shown = capsys.readouterr().err
    assert shown.startswith("demo.py: error: --policy: ")
    line = shown.removeprefix("demo.py: error: --policy: ").rstrip("\n")
    assert line.startswith(f"model {str(base_model)!r} was trained for "
                           "MultiDiscrete([21, 11]) actions; this environment expects "
                           "MultiDiscrete([11, 11]) (n_power_levels, n_price_levels): ")
    assert "--config" in line
    out, logdir = tmp_path / "m.zip", tmp_path / "runs"
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--config", str(config), "--logdir", str(logdir)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err == f"python -m train.dagger: error: --base: {line}\n"   # no --help hint
    with pytest.raises(SystemExit) as refused:
        train.__main__.main(["--resume", str(base_model), "--config", str(config),
                             "--no-randomize", "--agents", "3", "--timesteps", "16",
                             "--out", str(out), "--logdir", str(logdir), "--no-progress"])
    assert refused.value.code == 2
    assert capsys.readouterr().err == f"python -m train: error: --resume: {line}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l11.toml"]


def test_a_config_the_randomized_emergency_refuses_is_refused_before_the_work(
        base_model, tmp_path, capsys):
    """Review: a file valid as a config but refused by an environment it plays (``dt_s =
    3``: the randomized emergency's earliest trip, 5 s, leaves no reserve round) passed
    the checks and ended the distillation with a traceback from inside the work (at
    once, or mid-collection when the scenario cycle reached the emergency later). It is
    refused in one line, exit 2, before anything is written."""
    from train.dagger import main

    config = tmp_path / "dt3.toml"
    config.write_text("dt_s = 3.0\n")
    out, logdir = tmp_path / "m.zip", tmp_path / "runs"
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--config", str(config), "--logdir", str(logdir),
              "--agents", str(N_AGENTS), "--seed", "1"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "EnvConfig.dt_s = 3.0 leaves scenario 'emergency' no reserve round" in err
    assert err.count("\n") == 1
    assert not out.exists() and not logdir.exists()


def test_a_model_written_at_out_during_the_distillation_is_kept(base_model, tmp_path, capsys,
                                                                monkeypatch):
    """Two distillations given the same --out both passed the up-front check, and the
    later one to finish replaced the other's model and record. A model another run wrote
    at --out since the check now stays: this one and its record take the next free name
    (m-2.zip, m-2.json), said in one line, status 1."""
    import train.bc
    from policies.learned import load_maskable_ppo
    from train.dagger import main

    out = tmp_path / "m.zip"
    real = train.bc.behaviour_clone

    def another_run_finishes(*args, **kwargs):
        out.write_bytes(b"the other run's model")
        out.with_suffix(".json").write_text("{}")
        return real(*args, **kwargs)

    monkeypatch.setattr(train.bc, "behaviour_clone", another_run_finishes)
    code = main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "50",
                 "--emergency-samples", "0", "--epochs", "1", "--iterations", "0",
                 "--logdir", ""])
    kept = tmp_path / "m-2.zip"
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"python -m train.dagger: error: could not write the model to "
                          f"{str(out)!r} (a file appeared there during the run")
    assert f"saved it to {str(kept)!r} instead" in err and "--overwrite" in err
    assert out.read_bytes() == b"the other run's model"
    assert out.with_suffix(".json").read_text() == "{}"
    load_maskable_ppo(kept)
    record = json.loads(kept.with_suffix(".json").read_text())
    assert Path(record["model"]).name == "m-2.zip"
    LearnedPolicy(kept)   # its record's SHA-256 is the model's


@pytest.mark.parametrize("stop", [None, RuntimeError, KeyboardInterrupt])
def test_distil_closes_every_environment_it_builds(base_model, tmp_path, monkeypatch, stop):
    """distil built three environments (the teachers' three scenarios, the extra
    emergencies, the DAgger rounds') and closed none of them, on any path; each is now
    closed once, whether it ends normally, with an error or with Ctrl-C (here in the
    DAgger round's fit, once all three exist)."""
    import train.bc
    import train.trainer
    from train.dagger import distil

    built = []
    real_make, real_clone = train.trainer.make_venv, train.bc.behaviour_clone

    def tracked(*args, **kwargs):
        venv = real_make(*args, **kwargs)
        venv.closes = 0
        close = venv.close

        def counted():
            venv.closes += 1
            close()
        venv.close = counted
        built.append(venv)
        return venv

    fits = []

    def clone(*args, **kwargs):
        fits.append(kwargs["seed"])
        if stop is not None and len(fits) == 2:   # the DAgger round's fit
            raise stop
        return real_clone(*args, **kwargs)

    monkeypatch.setattr(train.trainer, "make_venv", tracked)
    monkeypatch.setattr(train.bc, "behaviour_clone", clone)
    with pytest.raises(stop) if stop is not None else contextlib.nullcontext():
        distil(base_model, tmp_path / "m.zip", n_agents=N_AGENTS, samples=50,
               emergency_samples=20, epochs=1, iterations=1, iteration_samples=20,
               iteration_epochs=1, log=lambda text: None)
    assert len(built) == 3
    assert [venv.closes for venv in built] == [1, 1, 1]
    assert (tmp_path / "m.zip").exists() == (stop is None)


def test_the_config_file_is_read_once_the_bytes_checked_are_those_used(base_model, tmp_path,
                                                                       monkeypatch):
    """main read --config for its checks and distil read it again for the run: a file
    rewritten in between was run and hashed as the new bytes, which no check had seen.
    main now hands its TrainConfig on (one read); distil refuses one that is not
    taught_config's of its own arguments."""
    import hashlib

    import gridswarm_env.config_file
    from train.dagger import distil, main, taught_config

    config = tmp_path / "env.toml"
    checked = "[grid]\ninertia_h_s = 3.0\n"
    config.write_text(checked)
    real = gridswarm_env.config_file.load_env_config
    reads = []

    def read_then_rewritten(path, **kwargs):
        reads.append(path)
        loaded = real(path, **kwargs)
        config.write_text("[grid]\ninertia_h_s = 5.0\n")   # edited after the read
        return loaded

    monkeypatch.setattr(gridswarm_env.config_file, "load_env_config", read_then_rewritten)
    out = tmp_path / "d.zip"
    assert main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "10",
                 "--emergency-samples", "0", "--epochs", "1", "--iterations", "0",
                 "--logdir", "", "--config", str(config)]) == 0
    assert reads == [str(config)]
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["env_config_sha256"] == hashlib.sha256(checked.encode()).hexdigest()
    assert "inertia_h_s = 3.0" in record["env_config_toml"]
    with pytest.raises(ValueError, match="taught= is not taught_config"):
        distil(base_model, tmp_path / "e.zip", n_agents=N_AGENTS + 1,
               taught=taught_config(N_AGENTS))


def test_a_model_the_distillation_cannot_write_at_out_is_kept_elsewhere(
        base_model, tmp_path, capsys, monkeypatch):
    """A directory put at --out during the run made the final save raise: a traceback,
    the tensorboard run removed and the model lost. It is now saved to the temporary
    directory with its record (python -m train's rescue), said in one line, status 1."""
    import tempfile

    import train.bc
    from train.dagger import main

    out = tmp_path / "m.zip"
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    real = train.bc.behaviour_clone

    def path_taken_by_a_directory(*args, **kwargs):
        out.mkdir(exist_ok=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(train.bc, "behaviour_clone", path_taken_by_a_directory)
    code = main(["--out", str(out), "--agents", str(N_AGENTS), "--samples", "50",
                 "--emergency-samples", "0", "--epochs", "1", "--iterations", "0",
                 "--logdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    (kept,) = spare.glob("m-*.zip")
    assert code == 1 and err == (f"python -m train.dagger: error: could not write the model "
                                 f"to {str(out)!r} (Is a directory); saved it to "
                                 f"{str(kept)!r} instead")
    LearnedPolicy(kept)   # its record beside it, with its SHA-256
    assert json.loads(kept.with_suffix(".json").read_text())["model"] == str(kept)
    assert out.is_dir() and not any(out.iterdir())
    assert len(list((tmp_path / "runs").iterdir())) == 1   # the tensorboard run stays


@pytest.mark.parametrize("existing", [False, True])
def test_out_naming_a_directory_is_refused_as_python_m_train_refuses_it(
        base_model, existing, tmp_path, capsys):
    """New-user review (session 27): ``--out DIR/`` passed the checks and, after the
    distillation (~15 minutes with the defaults), wrote the model as the hidden file
    ``DIR/.zip``; an existing directory ``DIR`` wrote ``DIR.zip`` beside it, where
    ``python -m train --out`` refuses both up front."""
    from train.dagger import main

    target = tmp_path / "models"
    if existing:
        target.mkdir()
    out = f"{target}/" if not existing else str(target)
    with pytest.raises(SystemExit) as refused:
        main(["--out", out, "--logdir", "", "--agents", str(N_AGENTS), "--samples", "10",
              "--emergency-samples", "0", "--iterations", "0", "--epochs", "1"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--out {out!r} is a directory; expected a model file path (e.g. DIR/model.zip)" in err
    assert [p.name for p in tmp_path.iterdir()] == (["models"] if existing else [])
