"""``python -m train`` settings that a run (or a resumed one) must keep or refuse: a
rollout that leaves a one-sample minibatch, ``--envs`` and the requested
``--batch-size`` across ``--resume``, and the ``--eval-every`` environments' audit."""

from __future__ import annotations

import json

import pytest

from tests.test_train_failures import PROG, one_error_line
from train.__main__ import main
from train.config import TrainConfig

#: a tiny emergency run's flags (5 agents unless given again)
TINY = ["--scenario", "emergency", "--n-epochs", "1", "--no-progress",
        "--checkpoint-every", "0"]


@pytest.mark.parametrize("agents, n_steps, batch, fits", [
    (25, 41, 1024, "1023 or 1025"),   # 1 025 agent-steps
    (17, 241, 4096, "4095 or 4097"),   # the default batch size
    (1, 3, 2, "3"),
])
def test_a_rollout_that_leaves_one_sample_is_refused(agents, n_steps, batch, fits):
    """Review: MaskablePPO normalizes a minibatch's advantages by their standard
    deviation, NaN for one sample: a rollout that left one sample after its full
    minibatches made every weight NaN at the first update, and the run failed with
    torch's "probability tensor contains ... nan". Now refused, naming what works."""
    with pytest.raises(ValueError, match="leaves a last minibatch of one sample") as exc:
        TrainConfig(scenario="emergency", n_agents=agents, n_steps=n_steps,
                    batch_size=batch)
    assert f"Use batch_size {fits}," in str(exc.value)
    for size in fits.split(" or "):   # the sizes it names do not leave one
        TrainConfig(scenario="emergency", n_agents=agents, n_steps=n_steps,
                    batch_size=int(size))
    # cloning only: no PPO update, nothing to refuse
    TrainConfig(scenario="emergency", n_agents=agents, n_steps=n_steps, batch_size=batch,
                total_timesteps=0, bc_teacher="heuristic", bc_timesteps=10)
    from train.config import lone_sample_problem

    assert lone_sample_problem(n_steps, 1, agents, n_steps * agents) is None   # one batch


def test_the_one_sample_check_names_the_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--agents", "25", "--n-steps", "41", "--batch-size", "1024",
              "--timesteps", "3000", "--logdir", str(tmp_path), "--run-name", "nan"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: --batch-size 1024: a rollout of --n-steps 41 "
                           "x --envs 1 x --agents 25 = 1,025 agent-steps")
    assert "Use --batch-size 1023 or 1025, or another --n-steps, --envs or --agents" in line
    assert not (tmp_path / "nan").exists()


def test_resume_checks_its_own_rollout_and_keeps_envs_and_the_batch_asked_for(tmp_path,
                                                                                 capsys):
    """Review: --resume went back to --envs 1 silently (n_envs was not stored), kept the
    batch size capped at the first run's rollout (4 096 asked for, 400 used, 400 after a
    resume with twice the agents), and its rollout (another --agents or --n-steps) was
    not checked against a one-sample minibatch."""
    from train.trainer import checkpoint_hyperparameters

    assert main([*TINY, "--agents", "5", "--envs", "2", "--n-steps", "40", "--batch-size",
                 "4096", "--timesteps", "400", "--logdir", str(tmp_path),
                 "--run-name", "base"]) == 0
    base = tmp_path / "base" / "model.zip"
    record = json.loads(base.with_suffix(".json").read_text())
    assert (record["config"]["batch_size"], record["config"]["batch_size_requested"]) == (
        400, 4096)
    assert checkpoint_hyperparameters(base)["batch_size"] == 4096
    # twice the agents: the copies kept, the batch capped at the new rollout of 800
    assert main(["--resume", str(base), "--agents", "10", "--timesteps", "800",
                 "--no-progress", "--checkpoint-every", "0", "--logdir", str(tmp_path),
                 "--run-name", "more"]) == 0
    record = json.loads((tmp_path / "more" / "model.json").read_text())
    assert record["config"]["n_envs"] == 2 and record["config"]["batch_size"] == 800
    assert record["checkpoint_env_settings"]["n_envs"] == 2
    assert record["changed_on_resume"] == {"n_agents": {"checkpoint": 5, "now": 10}}
    # --envs given: applied and shown
    assert main(["--resume", str(base), "--envs", "1", "--timesteps", "200",
                 "--no-progress", "--checkpoint-every", "0", "--logdir", str(tmp_path),
                 "--run-name", "one"]) == 0
    record = json.loads((tmp_path / "one" / "model.json").read_text())
    assert record["config"]["n_envs"] == 1 and record["config"]["batch_size"] == 200
    assert record["changed_on_resume"] == {"n_envs": {"checkpoint": 2, "now": 1}}
    capsys.readouterr()
    # the checkpoint's batch (4 096) against the resumed rollout: 4 097 leaves one sample
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(base), "--agents", "17", "--n-steps", "241", "--envs", "1",
              "--logdir", str(tmp_path), "--run-name", "nan"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--batch-size 4096: a rollout of --n-steps 241 x --envs 1 x --agents 17" in line
    assert not (tmp_path / "nan").exists()


def test_resume_checks_the_checkpoints_batch_not_the_default(tmp_path, capsys):
    """The flags are checked once before the checkpoint is read: with the default batch
    (4 096) a rollout of 4 097 leaves one sample, with the checkpoint's (100) it does
    not, and the resume runs."""
    assert main([*TINY, "--agents", "5", "--n-steps", "40", "--batch-size", "100",
                 "--timesteps", "200", "--logdir", str(tmp_path), "--run-name", "base"]) == 0
    assert main(["--resume", str(tmp_path / "base" / "model.zip"), "--agents", "17",
                 "--n-steps", "241", "--timesteps", "1", "--no-progress",
                 "--checkpoint-every", "0", "--logdir", str(tmp_path),
                 "--run-name", "r"]) == 0
    record = json.loads((tmp_path / "r" / "model.json").read_text())
    assert (record["config"]["n_steps"], record["config"]["batch_size"]) == (241, 100)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:   # 101 x 1 x 1 leaves one sample of 100
        main(["--resume", str(tmp_path / "base" / "model.zip"), "--agents", "1",
              "--n-steps", "101", "--logdir", str(tmp_path), "--run-name", "nan"])
    assert exc.value.code == 2
    assert "--batch-size 100: a rollout of --n-steps 101" in one_error_line(
        capsys.readouterr().err)


def test_evaluation_environments_keep_no_audit_entries():
    """Review: the --eval-every environments kept every audit entry for the run (~1 MB
    per price_spike episode at 100 agents) that nobody reads; the costs are the same
    as a default environment's (evaluate.py's)."""
    import gridswarm_env
    from policies import make_policy
    from train.callbacks import SystemCostEvaluation, mean_system_costs

    evaluation = SystemCostEvaluation(["emergency"], 5, every=100, n_seeds=1)
    heuristic = make_policy("heuristic")
    costs = mean_system_costs(evaluation.envs, heuristic, evaluation.seeds)
    env = evaluation.envs["emergency"]
    assert len(env.audit_log) > 0 and env.audit_log.entries == ()
    plain = {"emergency": gridswarm_env.GridSwarmEnv(scenario="emergency", n_agents=5,
                                                     trust="hmac")}
    assert costs == mean_system_costs(plain, heuristic, evaluation.seeds)
    assert len(plain["emergency"].audit_log.entries) > 0


def test_a_small_fleet_is_warned_about_once_in_one_line(tmp_path, capsys):
    """Review: at 1-2 agents python -m train printed the fleet-kinds warning in Python's
    format (file, line, UserWarning and the source line), once for the training and once
    for the evaluation environments; evaluate.py prints one ``warning:`` line."""
    assert main([*TINY, "--agents", "2", "--n-steps", "60", "--batch-size", "120",
                 "--timesteps", "120", "--eval-every", "120", "--eval-seeds", "1",
                 "--logdir", str(tmp_path), "--run-name", "two"]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" not in err
    assert [line for line in err.splitlines() if "DER kinds" in line] == [
        f"{PROG}: warning: n_agents=2 is fewer than the fleet's DER kinds: ev (50 MW): no "
        "agent, left out of the fleet, so the scenario does not behave as at larger "
        "fleets; use n_agents >= 3"]


def test_a_cloning_only_run_writes_no_empty_csv_row(tmp_path):
    """Review: a cloning-only run (--timesteps 0) with --eval-every ended progress.csv
    with a row of empty fields (a logger dump with nothing recorded)."""
    import csv

    assert main([*TINY, "--agents", "5", "--timesteps", "0", "--bc-teacher", "heuristic",
                 "--bc-timesteps", "600", "--bc-epochs", "1", "--eval-every", "100",
                 "--eval-seeds", "1", "--logdir", str(tmp_path), "--run-name", "bc"]) == 0
    with open(tmp_path / "bc" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(any(row.values()) for row in rows)
    assert rows[0]["bc/nll"] and rows[1]["eval/system_cost"]


@pytest.mark.parametrize("kwargs, says", [
    ({"scenario": None}, r"scenario = None: expected a scenario name or 'all' \(allowed: "
     r"all, price_spike"),
    ({"scenario": ("emergency",)}, r"scenario = \('emergency',\): expected a scenario name"),
    ({"net_arch": 64}, r"net_arch = 64: expected a non-empty tuple of positive layer sizes"),
    ({"net_arch": "64"}, r"net_arch = '64': expected a non-empty tuple"),
    ({"net_arch": (64, None)}, r"net_arch = \(64, None\): expected a non-empty tuple"),
    ({"run_name": 5}, r"run_name = 5: expected a plain directory name"),
    ({"run_name": b"run"}, r"run_name = b'run': expected a plain directory name"),
])
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(kwargs, says):
    """Review: scenario=None, net_arch=64 and run_name=5 raised TypeError ("... is not
    iterable") instead of a ValueError naming the field: the value was iterated before
    its type was checked."""
    with pytest.raises(ValueError, match=r"^TrainConfig\." + says):
        TrainConfig(**kwargs)


def test_net_arch_is_stored_as_an_immutable_tuple_of_ints():
    """Review: net_arch=[64, 64] was stored as the list given: hash(config) failed and
    config.net_arch.append(0) changed the checked config afterwards."""
    import numpy as np

    given = [64, np.int64(32)]
    config = TrainConfig(net_arch=given)
    assert config.net_arch == (64, 32) and type(config.net_arch) is tuple
    assert all(type(h) is int for h in config.net_arch)
    given.append(0)   # the caller's list is not the config's
    assert config.net_arch == (64, 32)
    assert hash(config) == hash(TrainConfig(net_arch=(64, 32)))
    assert config == TrainConfig(net_arch=(64, 32))
    for bad in ([64, True], [64, 0], [64.0], []):
        with pytest.raises(ValueError, match=r"^TrainConfig\.net_arch = "):
            TrainConfig(net_arch=bad)


def test_numpy_numbers_are_stored_as_python_numbers():
    """Review: numpy scalars were accepted but kept, so the training record
    (json.dumps(..., default=str)) wrote np.int64(1000) as the string '1000'."""
    from dataclasses import asdict, fields

    import numpy as np

    ints = {"total_timesteps": 1000, "n_agents": 5, "n_envs": 2, "seed": 7,
            "checkpoint_every": 0, "eval_every": 100, "eval_seeds": 2, "n_steps": 64,
            "batch_size": 128, "n_epochs": 2, "bc_timesteps": 0, "bc_epochs": 3,
            "torch_threads": 1, "verbose": 0}
    floats = {"marginal_weight": 0.5, "reward_scale": 0.02, "reward_clip": 5.0,
              "learning_rate": 3e-4, "gamma": 0.9, "gae_lambda": 0.8, "clip_range": 0.1,
              "ent_coef": 0.01, "vf_coef": 0.4, "max_grad_norm": 0.7, "target_kl": 0.05,
              "bc_learning_rate": 1e-3, "governor_deadband_hz": 0.036}
    numbers = {f.name for f in fields(TrainConfig)
               if f.type in ("int", "float", "float | None")}
    assert numbers == set(ints) | set(floats)   # a new numeric field is tested here too
    config = TrainConfig(**{k: np.int64(v) for k, v in ints.items()},
                         **{k: np.float64(v) for k, v in floats.items()},
                         trust=np.str_("hmac"))
    for name, value in {**ints, **floats}.items():
        stored = getattr(config, name)
        assert stored == value and type(stored) is type(value), (name, stored)
    assert type(config.trust) is str
    record = json.loads(json.dumps(asdict(config), default=str))
    assert record["total_timesteps"] == 1000 and record["learning_rate"] == 3e-4
    assert config == TrainConfig(**ints, **floats)


@pytest.mark.parametrize("kwargs, says", [
    ({"logdir": None}, r"logdir = None: expected a directory path"),
    ({"logdir": 5}, r"logdir = 5: expected a directory path"),
    ({"logdir": ""}, r"logdir = '': expected a directory path \('\.' for the current "
     r"directory\)"),
    ({"progress_bar": "no"}, r"progress_bar = 'no': expected True or False"),
    ({"progress_bar": 0}, r"progress_bar = 0: expected True or False"),
    ({"command": 5}, r"command = 5: expected the command line as a str, or None"),
    ({"command": ["python", "-m", "train"]}, r"command = \['python', .*: expected"),
    ({"bc_timesteps": "x"}, r"bc_timesteps = 'x': expected an integer >= 0"),
    ({"bc_timesteps": -1}, r"bc_timesteps = -1: must be an integer >= 0"),
    ({"run_name": ".."}, r"run_name = '\.\.': expected a plain directory name"),
    ({"run_name": "."}, r"run_name = '\.': expected a plain directory name"),
])
def test_unchecked_fields_are_checked(kwargs, says):
    """Review: logdir, progress_bar and command were never checked (logdir=None failed
    in Path() once the run started; command=5 went into the record), bc_timesteps only
    with a teacher, and run_name '..' put the run beside logdir instead of in it."""
    with pytest.raises(ValueError, match=r"^TrainConfig\." + says):
        TrainConfig(**kwargs)


def test_paths_are_stored_as_strings(tmp_path):
    """A Path is accepted for logdir, out, resume and limits (as resume already was) and
    stored as str, so the config is hashable and its record plain JSON."""
    from pathlib import Path

    limits = tmp_path / "limits.toml"
    limits.write_text("")
    model = tmp_path / "m.zip"
    model.write_bytes(b"")
    config = TrainConfig(logdir=tmp_path / "runs", out=tmp_path / "out",
                         resume=Path(str(model)[:-len(".zip")]), limits=limits,
                         command="python -m train")
    assert (config.logdir, config.out, config.resume, config.limits) == (
        str(tmp_path / "runs"), str(tmp_path / "out.zip"), str(model), str(limits))
    assert TrainConfig(resume=model).resume == str(model)
    hash(config)
    assert TrainConfig(logdir=".", progress_bar=False, command=None).logdir == "."
