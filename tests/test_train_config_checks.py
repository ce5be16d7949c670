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
