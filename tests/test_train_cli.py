"""What a user of ``python -m train`` is told (a first-time-user review): the rollout a
run trains at least, whether any episode KPIs will be logged, the last update's
scalars, evaluations on stdout, flags rather than configuration fields in errors."""

from __future__ import annotations

import csv
import json

import pytest

from tests.command_lines import _one_line_error
from tests.tensorboard_events import scalar_steps
from train.__main__ import flag_message, main, threads_warning
from train.config import TrainConfig

PROG = "python -m train"
#: 5 agents, rollouts of 60 steps: 300 agent-steps (an emergency episode is 120 steps)
TINY = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60", "--batch-size", "300",
        "--n-epochs", "1", "--no-progress", "--checkpoint-every", "0"]


def notes(err: str) -> list[str]:
    return [line.removeprefix(f"{PROG}: note: ") for line in err.splitlines()
            if line.startswith(f"{PROG}: note: ")]


# --------------------------------------------------------------------------- timesteps and logs
def test_a_run_below_one_rollout_says_what_it_trains_and_logs_the_update(tmp_path, capsys):
    """Review: --timesteps 10 trained a whole rollout without a word, and its tensorboard
    file held only time/fps: the update's train/* were never written."""
    assert main([*TINY, "--timesteps", "10", "--logdir", str(tmp_path),
                 "--run-name", "r"]) == 0
    said = notes(capsys.readouterr().err)
    assert said[0] == ("PPO trains in whole rollouts of 300 agent-steps (--n-steps 60 x "
                       "--envs 1 x --agents 5): --timesteps 10 will train 300 agent-steps "
                       "(1 rollout)")
    assert said[1].startswith("an episode is 120 steps (600 agent-steps per env copy at 5 "
                              "agents); this run's 60 steps per copy finish no episode")
    assert "use --timesteps 600 or more" in said[1] and len(said) == 2
    record = json.loads((tmp_path / "r" / "model.json").read_text())
    assert record["num_timesteps"] == 300 and record["episodes_finished"] == 0
    steps = scalar_steps(tmp_path / "r")
    assert steps["train/loss"] == [300] and steps["time/fps"] == [300]
    with open(tmp_path / "r" / "progress.csv") as f:
        assert [row["train/loss"] != "" for row in csv.DictReader(f)] == [True]


@pytest.mark.parametrize(("threads", "load", "cpus", "policy", "warned"), [
    (1, 5.0, 2, "", False),          # one thread: nothing to wait for
    (2, 0.2, 2, "", False),          # both cores free
    (2, 0.6, 2, "", True),           # another process holds (most of) a core
    (2, 1.4, 4, "", False),          # two of four cores taken, two left for the threads
    (2, 2.6, 4, "", True),
    (2, 1.9, 2, "passive", False),   # threads sleep instead of spinning while they wait
    (2, 1.9, 2, "ACTIVE", True),
    (4, 0.0, 2, "PASSIVE", True),    # more threads than cores, whatever the load
])
def test_torch_threads_warn_when_the_cores_are_taken(threads, load, cpus, policy, warned):
    """2 torch threads with the second core busy trained 3-75x slower than 1 (spinning
    threads wait for a time slice): the command line says so before it trains."""
    said = threads_warning(threads, busy=load, cpus=cpus, wait_policy=policy)
    assert (said is not None) == warned
    if warned:
        assert said.startswith(f"--torch-threads {threads} ")
        assert "--torch-threads 1 trains as fast or faster" in said


def test_busy_cores_reads_the_cpu_time_spent_meanwhile(tmp_path, monkeypatch):
    """New-user review: the 1-minute load average counted the user's own training that
    had just ended, and warned on an idle machine. busy_cores reads /proc/stat before and
    after a short sleep: the busy share of the CPU time spent, times the cores."""
    import os

    from train.__main__ import busy_cores

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 ...\n")
    after = "cpu  200 0 200 750 150 0 0 0 0 0\n"   # 300 spent, 100 of them idle or iowait
    monkeypatch.setattr("time.sleep", lambda _s: stat.write_text(after))
    assert busy_cores(0.2, str(stat)) == pytest.approx(2 / 3 * (os.cpu_count() or 1))
    stat.write_text("not a stat file\n")
    assert busy_cores(0.2, str(stat)) is None
    assert busy_cores(0.2, str(tmp_path / "missing")) is None


def test_the_threads_warning_is_printed_before_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("train.__main__.threads_warning",
                        lambda n: f"--torch-threads {n} with a test's load")
    assert main([*TINY, "--timesteps", "10", "--logdir", str(tmp_path), "--run-name", "r",
                 "--torch-threads", "2"]) == 0
    err = capsys.readouterr().err
    assert f"{PROG}: warning: --torch-threads 2 with a test's load\n" in err
    assert err.index("warning: --torch-threads") < err.index("note: PPO trains")


def test_every_update_is_logged_at_its_rollout_step_once(tmp_path, capsys):
    """train/* of each update at the step of the rollout it learned from (SB3 wrote it
    one rollout late, and the last never), grid KPIs of the episodes, no step twice."""
    assert main([*TINY, "--timesteps", "1200", "--logdir", str(tmp_path),
                 "--run-name", "r"]) == 0
    assert notes(capsys.readouterr().err) == []   # whole rollouts, episodes finish
    steps = scalar_steps(tmp_path / "r")
    assert steps["train/loss"] == steps["time/fps"] == [300, 600, 900, 1200]
    assert steps["grid/system_cost"] == [600, 1200]   # an episode ends every 2 rollouts
    assert steps["grid/episode/system_cost"] == [1, 2]


def test_timestep_notes_of_the_defaults():
    config = TrainConfig()
    assert config.rollout_timesteps() == 6_400 and config.planned_timesteps() == 1_004_800
    assert config.timestep_notes() == [
        "PPO trains in whole rollouts of 6,400 agent-steps (--n-steps 64 x --envs 1 x "
        "--agents 100): --timesteps 1,000,000 will train 1,004,800 agent-steps (157 rollouts)"]
    short = TrainConfig(total_timesteps=4096).timestep_notes()
    assert "will train 6,400 agent-steps (1 rollout)" in short[0]
    assert short[1].startswith("an episode is 120-300 steps (12,000-30,000 agent-steps")
    assert "use --timesteps 32,000 or more" in short[1]
    assert TrainConfig(total_timesteps=0, bc_teacher="heuristic",
                       bc_timesteps=10).timestep_notes() == []
    # two rollouts of 60 steps end exactly at the end of an emergency episode (120 steps)
    assert TrainConfig(scenario="emergency", n_agents=5, n_steps=60,
                       total_timesteps=600).timestep_notes() == []


def test_with_a_copy_per_scenario_the_short_run_note_names_what_is_logged():
    """New-user review: with --envs 3 --scenario all the copies keep to their scenarios,
    so the note's "may finish no episode" and "no episode KPIs" were wrong: the copies on
    the 300-step scenarios finish nothing and emergency's KPIs are logged."""
    said = TrainConfig(scenario="all", n_envs=3, n_agents=10,
                       total_timesteps=6400).timestep_notes()
    assert said[-1] == (
        "price_spike and solar_surplus episodes are 300 steps, more than this run's 256 "
        "steps per env copy: the copies playing them finish no episode, so only emergency "
        "episode KPIs (grid/, market/, trust/, kernel/) are logged: use --timesteps 9,600 "
        "or more to see them all")


def test_a_run_that_fits_only_the_shorter_episodes_says_so(tmp_path, capsys):
    """Review: with --scenario all, 200 steps per copy cover an emergency episode (120
    steps) but not a price_spike or solar_surplus one (300): the run finished no episode
    (its first was 300 steps long) and no note said it might."""
    args = ["--scenario", "all", "--agents", "4", "--n-steps", "200", "--batch-size", "800",
            "--timesteps", "800", "--seed", "1", "--no-progress", "--checkpoint-every", "0",
            "--n-epochs", "1", "--logdir", str(tmp_path), "--run-name", "r"]
    assert main(args) == 0
    assert notes(capsys.readouterr().err) == [
        "price_spike and solar_surplus episodes are 300 steps, more than this run's 200 "
        "steps per env copy (only emergency episodes fit): a copy that draws one of them "
        "first may finish no episode, and then no episode KPIs (grid/, market/, trust/, "
        "kernel/) are logged: use --timesteps 1,600 or more to be sure to see them"]
    assert json.loads((tmp_path / "r" / "model.json").read_text())["episodes_finished"] == 0
    # enough for the longest episode: no note
    assert TrainConfig(scenario="all", n_agents=4, n_steps=200, batch_size=800,
                       total_timesteps=1600).timestep_notes() == []


@pytest.mark.parametrize("verbose", ["0", "1"])
def test_evaluations_are_printed_without_verbose(verbose, tmp_path, capsys):
    """Review: README said --eval-every results go to stdout; with --verbose 0 (the
    default) stdout showed only the final lines. With --verbose 1 each evaluation is
    said once too: SB3's stdout table leaves it out."""
    assert main([*TINY, "--timesteps", "600", "--logdir", str(tmp_path), "--run-name", "e",
                 "--eval-every", "300", "--eval-seeds", "1", "--verbose", verbose]) == 0
    text = capsys.readouterr().out
    assert "eval/" not in text   # no SB3 table row (it shows tags as "eval/" + names)
    out = text.splitlines()
    evals = [line for line in out if line.startswith("eval at ")]
    curve = json.loads((tmp_path / "e" / "model.json").read_text())[
        "evaluation_during_training"]["curve"]
    assert len(evals) == len(curve) == 3
    for line, point in zip(evals, curve, strict=True):
        assert line.startswith(f"eval at {point['agent_steps']:,} agent-steps: system_cost "
                               f"{point['system_cost']:,.2f} $ (emergency ")
    assert evals[0].endswith("- best so far")


# --------------------------------------------------------------------------- errors name flags
@pytest.mark.parametrize(("args", "says"), [
    # a choice of argparse's before --scenario took scenario files too
    (["--scenario", "abc"], "--scenario: unknown scenario 'abc'; known scenarios: "
                            "price_spike, solar_surplus, emergency, 'all' (every one), or a "
                            "scenario file FILE.toml"),
    (["--timesteps", "0"], "error: --timesteps 0: allowed only with --bc-teacher"),
    (["--lr", "-1"], "error: --lr -1.0: must lie in (0.0, 1.0]"),
    # the integer flags' wording, shared by every command: test_cli_consistency.py
    (["--eval-seeds", "0"], "error: --eval-seeds 0: expected an integer from 1 to 90,000"),
    # its seeds 10 000 + k must stay evaluation seeds, which training never plays
    (["--eval-seeds", "90001"], "error: --eval-seeds 90001: expected an integer from 1 to 90,000 (the seeds "
     "10,000 + k must stay among the evaluation seeds, 0..99,999, which training never "
     "plays)"),
    (["--bc-teacher", "heuristic", "--bc-epochs", "0"],
     "error: --bc-epochs 0: expected an integer >= 1"),
    (["--verbose", "5"], "error: --verbose 5: expected an integer from 0 to 1 (see"),
    (["--torch-threads", "0"], "error: --torch-threads 0: expected an integer from 1 to 256"),
    # review: --out X.json trained and wrote X.json.zip with its record X.json.json
    (["--out", "m.json"], "error: --out 'm.json': the model is a .zip and its training "
                          "record is written beside it as .json"),
    # torch.set_num_threads(10**6) crashes the process (a segmentation fault at exit)
    (["--torch-threads", "1000000"], "error: --torch-threads 1000000: expected an integer from 1 to 256 (torch accepts"),
    # review: argparse's int said only "invalid int value: '1.5'"
    (["--agents", "1.5"], "error: --agents '1.5': expected an integer from 1 to 1,000,000"),
    (["--timesteps", "1e5"], "error: --timesteps '1e5': expected an integer >= 0 (see"),
    # fuzzing: --n-steps 10**30 said only "Maximum allowed dimension exceeded"; --net-arch
    # 10**30 was a torch traceback (--envs 10**30, which hung: test_train.py)
    (["--n-steps", str(10**30), "--agents", "4"], "error: --n-steps 1000000000000000000000000"
     "000000: a rollout of --n-steps x --envs x --agents = "),
    (["--net-arch", "64," + str(10**30)], "error: --net-arch (64, 1000000000000000000000000"
     "000000): layer sizes are at most 4,096"),
    # fresh-user review (session 27): one rule for every comma list of the command lines
    (["--net-arch", "64,,64"], "error: --net-arch '64,,64': item 2 of 3 is empty (two commas "
     "in a row, or one at an end); expected layer sizes (e.g. 64,64), separated by single "
     "commas"),    # new-user review (session 27): the weight of --reward marginal's term was accepted
    # and recorded with the default --reward env, which it does not change
    (["--marginal-weight", "2", "--timesteps", "1", "--agents", "3", "--n-steps", "2",
      "--batch-size", "6", "--no-progress"], "error: --marginal-weight 2.0: weights the term of "
                                 "--reward marginal, and this run trains with --reward env: "
                                 "add --reward marginal or drop it"),
])
def test_cli_errors_name_the_flag(args, says, tmp_path, capsys):
    """Review: errors named TrainConfig.n_agents, TrainConfig.total_timesteps; --verbose 5
    was accepted."""
    with pytest.raises(SystemExit) as exc:
        main([*args, "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "TrainConfig" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--timesteps", "abc"], ["--agents", "1e308"],
                                  ["--seed"], ["--bogus"]])
def test_argparse_errors_are_one_line(args, tmp_path, capsys):
    """Fuzzing: argparse's own errors (a number flag's type, a choice, a missing value)
    printed the 20-line usage block before the error, unlike demo.py and evaluate.py."""
    with pytest.raises(SystemExit) as exc:
        main([*args, "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    line = _one_line_error(capsys.readouterr().err, "python -m train")
    assert line.endswith("(see python -m train --help)")


def test_resume_naming_a_directory_says_so(tmp_path, capsys):
    """Fuzzing: ``--resume DIR`` said "no such model file (nor 'DIR.zip')"."""
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(tmp_path), "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: --resume: model file {str(tmp_path)!r} is a directory, not a model file "
        "(expected a MaskablePPO .zip saved by `python -m train` (or `python -m "
        "train.dagger`))\n")


def test_flag_message_leaves_plain_words_alone():
    assert flag_message("TrainConfig.seed (--seed) = -1: must be an integer (seed + 1)") == (
        "--seed -1: must be an integer (seed + 1)")
    assert flag_message("TrainConfig.bc_teacher = 'oracle': cannot be combined with resume "
                        "(--resume)") == ("--bc-teacher 'oracle': cannot be combined with "
                                          "resume (--resume)")
    assert flag_message("TrainConfig.gae_lambda = 2: must lie in [0, 1]") == (
        "TrainConfig.gae_lambda = 2: must lie in [0, 1]")   # no flag sets it


def test_flag_message_leaves_quoted_paths_alone(tmp_path, capsys):
    """Review: `--resume /nope/n_envs.zip` said `--resume '/nope/--envs.zip': no such
    model file`: field names were replaced inside the user's path."""
    with pytest.raises(SystemExit) as exc:
        main(["--resume", "/nope/n_envs.zip", "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --resume: model file '/nope/n_envs.zip' does not exist (expected a "
        "MaskablePPO .zip saved by `python -m train` (or `python -m train.dagger`))\n")
    assert flag_message("TrainConfig.out = 'runs/n_steps/' is a directory; the "
                        "checkpoint's n_steps and \"it's/batch_size\" stay") == (
        "--out 'runs/n_steps/' is a directory; the checkpoint's --n-steps and "
        "\"it's/batch_size\" stay")


def test_zero_turns_clipping_and_the_kl_stop_off():
    """--reward-clip 0 and --target-kl 0 mean "off" (None), as their help says."""
    from train.__main__ import build_parser, config_from_args

    argv = [*TINY, "--reward-clip", "0", "--target-kl", "0"]
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert config.reward_clip is None and config.target_kl is None


def test_resume_keeps_the_checkpoints_settings_that_have_no_flag():
    """--resume: gae_lambda, vf_coef and max_grad_norm (no flags) are the checkpoint's;
    a flag given wins over the checkpoint's value."""
    from dataclasses import asdict

    from train.__main__ import build_parser, ppo_settings

    checkpoint = asdict(TrainConfig(gae_lambda=0.8, vf_coef=0.25, max_grad_norm=2.0,
                                    learning_rate=0.1, n_epochs=3))
    settings = ppo_settings(build_parser().parse_args(["--lr", "0.5"]), checkpoint)
    assert (settings["gae_lambda"], settings["vf_coef"], settings["max_grad_norm"]) == (
        0.8, 0.25, 2.0)
    assert settings["learning_rate"] == 0.5 and settings["n_epochs"] == 3


def test_resume_continues_a_model_train_dagger_saved(tmp_path, capsys):
    """PPO fine-tuning of the distilled model (gridswarm_ppo_dagger.zip's recipe):
    ``--resume`` takes a zip ``python -m train.dagger`` wrote, which stores no environment
    settings, so the flags given (``--randomize``) and the defaults make the run; without
    ``--randomize`` or ``--no-randomize`` it is refused."""
    from policies.learned import DEFAULT_MODEL, LearnedPolicy

    distilled = DEFAULT_MODEL.with_name("gridswarm_dagger.zip")
    if not distilled.is_file():
        pytest.skip("the shipped distilled model is missing")
    out = tmp_path / "tuned.zip"
    assert main([*TINY, "--resume", str(distilled), "--randomize", "--timesteps", "300",
                 "--lr", "3e-5", "--target-kl", "0.01", "--logdir", str(tmp_path),
                 "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["resumed_from"] == str(distilled)
    assert record["checkpoint_env_settings"] is None and record["changed_on_resume"] == {}
    assert record["config"]["randomize"] is True
    assert record["config"]["learning_rate"] == 3e-5
    assert record["timesteps_this_run"] == 300
    LearnedPolicy(out)   # a model python -m train saved, with its record
    capsys.readouterr()
    # without --randomize or --no-randomize the choice is unknown: refused, nothing made
    # (the shipped PPO model, saved before models stored their settings, as well)
    for model in (distilled, DEFAULT_MODEL.with_name("gridswarm_ppo.zip")):
        with pytest.raises(SystemExit) as refused:
            main([*TINY, "--resume", str(model), "--timesteps", "300",
                  "--logdir", str(tmp_path / "again"), "--out", str(tmp_path / "again.zip")])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "stores no environment settings" in err and "--no-randomize" in err
        assert model.name in err
        assert not (tmp_path / "again.zip").exists() and not (tmp_path / "again").exists()


def test_marginal_weight_on_resume_is_judged_by_the_checkpoints_reward(tmp_path, capsys):
    """New-user review (session 27): --marginal-weight with a reward of "env" is refused;
    resuming, the reward is the checkpoint's unless --reward is given."""
    assert main([*TINY, "--timesteps", "10", "--logdir", str(tmp_path), "--run-name", "r"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(tmp_path / "r" / "model.zip"), "--marginal-weight", "2",
              "--timesteps", "1", "--logdir", str(tmp_path), "--run-name", "r2"])
    assert exc.value.code == 2
    line = _one_line_error(capsys.readouterr().err, PROG)
    assert line.endswith("--marginal-weight 2.0: weights the term of --reward marginal, and "
                         "this run trains with --reward env (the checkpoint's): add --reward "
                         "marginal or drop it")
    assert not (tmp_path / "r2").exists()
