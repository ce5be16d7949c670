"""The command lines as a user meets them when something is off: resumed training
hyperparameters, output paths that are directories or unwritable (refused before the
work, rescued after it), limits naming agents the fleet does not have, re-runs into
the same directory, policy-name messages, inference threads, and the demo's audit
chain (``--audit``) with its verifier."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # demo.py and evaluate.py are top-level scripts
    sys.path.insert(0, str(ROOT))

import demo  # noqa: E402
import evaluate  # noqa: E402
import gridswarm_env  # noqa: E402
from gridswarm_env import audit as audit_cli  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.cli_checks import (  # noqa: E402
    OutputError,
    check_output_dir,
    check_output_file,
    write_or_rescue,
)

TIMEOUT_S = 180
#: a path root cannot create a file in (sysfs); skipped where it is writable
UNWRITABLE = Path("/sys/kernel/gridswarm_model.zip")
TINY = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60", "--batch-size", "300",
        "--no-progress", "--checkpoint-every", "0"]


def _unwritable_here() -> bool:
    try:
        check_output_file(UNWRITABLE, "probe")
    except ValueError:
        return True
    return False


def _one_line_error(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in stderr
    return lines[0]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


# ---------------------------------------------------------------------- shared helpers
def test_output_checks_name_the_problem_and_leave_nothing_behind(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a directory; expected a file path"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_file(tmp_path / "file" / "x.json", "--json")
    with pytest.raises(ValueError, match="does not exist"):
        check_output_file(tmp_path / "no" / "x.json", "--json")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "file" / "run", "--logdir")
    check_output_file(tmp_path / "new.json", "--json")
    check_output_file(tmp_path / "a" / "b" / "m.zip", "--out", create_dirs=True)
    check_output_dir(tmp_path / "c" / "d", "--out")
    check_output_file(tmp_path / "file", "--json")          # existing: content kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "x"
    if _unwritable_here():
        with pytest.raises(ValueError, match="cannot be written"):
            check_output_file(UNWRITABLE, "--out")


def test_write_or_rescue_keeps_the_output_elsewhere(tmp_path):
    target = tmp_path / "results.json"
    target.mkdir()
    written, problem = write_or_rescue(target, lambda p: p.write_text("{}"), "the results")
    assert written is not None and written != target and written.read_text() == "{}"
    assert written.suffix == ".json" and "results" in written.name
    assert str(target) in problem and str(written) in problem and "\n" not in problem
    written.unlink()


# ---------------------------------------------------------------------- policies
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
    previous = torch.get_num_threads()
    torch.set_num_threads(2)   # the process's setting (e.g. one thread per core)
    try:
        one = LearnedPolicy(learned_model)
        default = LearnedPolicy(learned_model, torch_threads=None)
        seen: dict[str, list[int]] = {"one": [], "default": []}

        def spy(policy, key):
            predict = policy.model.predict

            def wrapped(*args, **kwargs):
                seen[key].append(torch.get_num_threads())
                return predict(*args, **kwargs)

            policy.model.predict = wrapped

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


# ---------------------------------------------------------------------- train
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
        t0 = time.perf_counter()
        proc = _train(*TINY, "--timesteps", "600", "--logdir", str(tmp_path / "runs"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in _one_line_error(proc.stderr, "python -m train"), args
        assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "runs").exists()


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


# ---------------------------------------------------------------------- evaluate
def _evaluate(args: list[str], capsys) -> tuple[int, str]:
    status = evaluate.main([*args, "--no-progress"])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("soc_min, n_agents, expected", [
    # an agent the fleet does not have: the message lists the fleet's names
    (0.3, 3, "solar_000, battery_000, ev_000"),
    # soc_min 0.99 merged on the battery default soc_max 0.95 (was found only at reset)
    (0.99, 10, "soc_min (0.99) must be <= soc_max (0.95)"),
], ids=["missing-agent", "conflicts-with-kind"])
def test_evaluate_bad_limits_fail_before_any_output(tmp_path, capsys, soc_min, n_agents,
                                                    expected):
    limits = tmp_path / "limits.toml"
    limits.write_text(f"[agents.battery_003]\nsoc_min = {soc_min}\n")
    out = tmp_path / "out"
    status, err = _evaluate(["--agents", str(n_agents), "--limits", str(limits),
                             "--episodes", "1", "--policies", "heuristic", "--out", str(out)],
                            capsys)
    assert status == 2
    line = _one_line_error(err, "evaluate.py")
    assert "battery_003" in line and expected in line
    assert not out.exists()


def test_evaluate_unwritable_outputs_fail_before_any_output(tmp_path, capsys):
    for blocker, words in (("results.json", "is a directory"),
                           ("tensorboard", "is a file, not a directory")):
        out = tmp_path / blocker.replace(".", "_")
        out.mkdir()
        if blocker == "tensorboard":
            (out / blocker).write_text("")
        else:
            (out / blocker).mkdir()
        status, err = _evaluate(["--agents", "3", "--episodes", "1", "--policies", "random",
                                 "--scenarios", "emergency", "--out", str(out)], capsys)
        assert status == 2 and words in _one_line_error(err, "evaluate.py")
        assert [p.name for p in out.iterdir()] == [blocker]


EVAL_SMALL = ["--agents", "5", "--episodes", "1", "--policies", "random", "--trust", "hmac"]


def test_evaluate_refuses_an_empty_out_instead_of_writing_to_the_cwd(tmp_path, capsys,
                                                                    monkeypatch):
    """Review: --out '' (an unset "$VAR") wrote results.json, results.md and the plots
    into the current directory, and a later run would clean up freq_*.png there."""
    monkeypatch.chdir(tmp_path)
    status, err = _evaluate(["--agents", "3", "--episodes", "1", "--policies", "random",
                             "--scenarios", "emergency", "--out", ""], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == ("evaluate.py: error: --out: empty path; "
                                                   "expected a directory")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["empty", "directory"])
def test_limits_path_that_is_no_file_is_refused_in_words(kind, tmp_path, capsys):
    """Review: --limits '' and --limits DIR said "limits file '.' is not valid TOML:
    [Errno 21] Is a directory" (the empty path read as the current directory)."""
    path = "" if kind == "empty" else str(tmp_path)
    expected = ("limits file '': empty path; expected a TOML file (leave out --limits for "
                "the default limits)" if kind == "empty"
                else f"limits file {str(tmp_path)!r} is a directory; expected a TOML file")
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_SMALL, "--limits", path, "--out", str(out)], capsys)
    assert status == 2 and _one_line_error(err, "evaluate.py") == f"evaluate.py: error: {expected}"
    assert not out.exists()
    assert demo.main(["--limits", path, "--steps", "1", "--no-live"]) == 2
    assert _one_line_error(capsys.readouterr().err, "demo.py") == f"demo.py: error: {expected}"


def test_evaluate_rerun_replaces_its_own_outputs_only(tmp_path, capsys):
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency,price_spike",
                             "--out", str(out)], capsys)
    assert status == 0, err
    (out / "notes.txt").write_text("mine")
    first_events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(first_events) == 1
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 0, err
    # no oracle ran: no cost_vs_oracle.png (a cost relative to the oracle's)
    assert sorted(p.name for p in out.glob("*.png")) == ["freq_emergency.png"]
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events != first_events
    assert (out / "notes.txt").read_text() == "mine"
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["config"]["scenarios"] == ["emergency"]


def test_evaluate_interrupted_rerun_leaves_the_directory_as_it_was(tmp_path, capsys,
                                                                   monkeypatch):
    import policies.rollout

    out = tmp_path / "out"
    assert _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                     capsys)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    real = policies.rollout.run_episode
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", interrupt_second)
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 130 and "interrupted" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_evaluate_ctrl_c_keeps_the_finished_episodes_and_creates_nothing(tmp_path, capsys,
                                                                        monkeypatch):
    """Review: Ctrl-C after some episodes printed 'interrupted' and threw their results
    away (and left an empty DIR/tensorboard/ behind). Now they go to a file in the
    temporary directory, named in the one-line message; --out is not created."""
    import policies.rollout

    real = policies.rollout.run_episode
    calls = []

    def interrupt_third(*args, **kwargs):   # no-DER baseline, episode seed 0, Ctrl-C
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", interrupt_third)
    out = tmp_path / "new" / "out"
    status, err = _evaluate(["--agents", "5", "--episodes", "2", "--policies", "random",
                             "--trust", "hmac", "--scenarios", "emergency,price_spike",
                             "--out", str(out)], capsys)
    assert status == 130
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    line = err.strip()
    assert line.startswith("evaluate.py: interrupted after 1 of 4 episodes; its results "
                           "are saved in '")
    assert line.endswith(f"--out {str(out)!r} was left as it was")
    saved = Path(line.split("saved in '")[1].split("'")[0])
    data = json.loads(saved.read_text())
    saved.unlink()
    assert [(r["policy"], r["scenario"], r["seed"]) for r in data["runs"]] == [
        ("random", "emergency", 0)]
    assert data["summary"]["interrupted"] is True
    assert data["summary"]["scenarios"]["emergency"]["random"]["episodes"] == 1
    assert "emergency" in data["summary"]["no_der_counterfactual"]
    assert not (tmp_path / "new").exists()


def test_evaluate_output_failing_at_the_end_is_rescued(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _evaluate([*EVAL_SMALL, "--scenarios", "emergency,price_spike", "--out", str(out)],
                     capsys)[0] == 0
    real = evaluate.summarize

    def summarize_then_block(*args, **kwargs):   # results.md becomes a directory
        result = real(*args, **kwargs)
        (out / "results.md").unlink()
        (out / "results.md").mkdir()
        return result

    monkeypatch.setattr(evaluate, "summarize", summarize_then_block)
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 1
    line = _one_line_error(err, "evaluate.py")
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert "## emergency" in rescued.read_text()
    rescued.unlink()
    data = json.loads((out / "results.json").read_text())   # the rest was written
    assert data["summary"]["config"]["scenarios"] == ["emergency"]
    assert (out / "freq_price_spike.png").exists()   # earlier outputs left in place


def test_evaluate_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("episodes per policy and scenario (default: 5)", "(default: 0)",
                  "number of DER agents, 1 to 1,000,000 (default: 100)", "(default: eval_out)",
                  "(default: ed25519", "heuristic,random,oracle,learned"):
        assert words in text, words


# ---------------------------------------------------------------------- demo
def _demo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "demo.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)


def test_demo_refuses_bad_output_paths_before_the_episode(tmp_path, capsys):
    limits = tmp_path / "limits.toml"
    limits.write_text("[agents.battery_003]\nsoc_min = 0.3\n")
    audit = tmp_path / "a.jsonl"
    cases = [(["--json", str(tmp_path)], "is a directory"),
             (["--audit", str(tmp_path)], "is a directory"),
             (["--json", str(audit), "--audit", str(audit)], "same file"),
             (["--agents", "3", "--limits", str(limits), "--audit", str(audit)],
              "battery_003")]
    if _unwritable_here():
        cases.append((["--json", str(UNWRITABLE)], "cannot be written"))
    for args, words in cases:
        rc = demo.main(["--agents", "5", "--policy", "random", "--no-live", *args])
        captured = capsys.readouterr()
        assert rc == demo.EXIT_USAGE, (args, captured.err)
        assert words in _one_line_error(captured.err, "demo.py"), args
        assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limits.toml"]
    # user-path review: an existing audit trail was replaced by the next run
    audit.write_text('{"earlier": "trail"}\n')
    rc = demo.main(["--agents", "5", "--policy", "random", "--no-live", "--audit", str(audit)])
    err = _one_line_error(capsys.readouterr().err, "demo.py")
    assert rc == demo.EXIT_USAGE and "already exists" in err and "never overwritten" in err
    assert audit.read_text() == '{"earlier": "trail"}\n'


def _verify(path: Path, key: str | None, capsys) -> tuple[int, str]:
    args = ["verify", str(path)] + (["--public-key", key] if key else [])
    status = audit_cli.main(args)
    return status, capsys.readouterr().out


def test_demo_audit_chain_verifies_with_the_printed_key_and_a_cut_tail_does_not(tmp_path,
                                                                                capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    proc = _demo("--agents", "10", "--scenario", "emergency", "--policy", "random",
                 "--steps", "15", "--no-live", "--audit", str(audit), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    key = doc["audit"]["operator_public_key"]
    assert doc["audit"]["path"] == str(audit) and len(key) == 64
    hint = [ln for ln in proc.stdout.splitlines() if ln.startswith("audit chain:")]
    assert hint == [f"audit chain: {audit} (verify: python -m gridswarm_env.audit verify "
                    f"{audit} --public-key {key})"]
    status, verdict = _verify(audit, key, capsys)
    assert status == 0 and verdict.startswith("OK"), verdict
    # one episode, one episode_start (the demo's validation reset is the episode's reset)
    kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert kinds.count("episode_start") == 1 and kinds[-1] == "head_signed"
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(audit.read_text().splitlines(keepends=True)[:-2]))
    status, verdict = _verify(cut, key, capsys)
    assert status == 1 and "truncated" in verdict, verdict


def test_demo_audit_in_hmac_mode_says_the_head_is_unsigned(tmp_path, capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    proc = _demo("--agents", "10", "--scenario", "emergency", "--policy", "random",
                 "--steps", "10", "--no-live", "--trust", "hmac", "--audit", str(audit),
                 "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["audit"] == {"path": str(audit),
                                                    "operator_public_key": None}
    assert "the head is unsigned" in proc.stdout
    assert _verify(audit, None, capsys)[0] == 0


def test_demo_ctrl_c_still_signs_the_audit_head(tmp_path, capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    p = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--agents", "100",
                          "--policy", "random", "--no-live", "--audit", str(audit),
                          "--json", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert first.startswith("t="), first + p.stderr.read()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=TIMEOUT_S)
    assert p.returncode == demo.EXIT_INTERRUPTED, stderr
    doc = json.loads(out.read_text())
    assert doc["run"]["interrupted"] is True
    status, verdict = _verify(audit, doc["audit"]["operator_public_key"], capsys)
    assert status == 0, verdict
    assert "audit chain:" in stdout


def test_demo_json_failing_at_the_end_is_rescued(tmp_path, capsys, monkeypatch):
    target = tmp_path / "run.json"
    real = demo.run_demo

    def run_then_block(session, **kwargs):   # the path becomes a directory meanwhile
        result = real(session, **kwargs)
        target.mkdir()
        return result

    monkeypatch.setattr(demo, "run_demo", run_then_block)
    rc = demo.main(["--agents", "5", "--policy", "random", "--steps", "3", "--no-live",
                    "--json", str(target)])
    captured = capsys.readouterr()
    assert rc == demo.EXIT_OUTPUT_FAILED
    line = _one_line_error(captured.err, "demo.py")
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert json.loads(rescued.read_text())["run"]["steps_run"] == 3
    assert f"wrote {rescued}" in captured.out
    rescued.unlink()


def test_demo_setup_failure_gives_an_existing_audit_file_its_content_back(tmp_path,
                                                                          monkeypatch):
    """Code review: the environment truncates --audit FILE when built; a policy failing
    its reset afterwards (exit 2) left an existing file changed. (A non-empty one is now
    refused up front, see test_demo_refuses_bad_output_paths_before_the_episode; an
    existing empty file, e.g. made by ``touch``, stays as it was.)"""
    audit = tmp_path / "audit.jsonl"
    audit.write_text("")

    class FailsOnReset:
        name = "fails"

        def reset(self, env, seed=None):
            raise ValueError("model does not match the environment's spaces")

    monkeypatch.setattr(demo, "build_policy", lambda _name: FailsOnReset())
    opts = demo.DemoOptions(n_agents=5, scenario="emergency", policy="random", live=False,
                            audit_path=str(audit))
    with pytest.raises(demo.DemoError, match="does not match"):
        demo.open_session(opts)
    assert audit.read_text() == ""


def test_crypto_threads_flag_is_checked_and_does_not_change_results(tmp_path, capsys):
    # --crypto-threads only sets how many threads sign and verify: the runs are the same
    runs = []
    cores = str(demo.max_crypto_threads())
    for flag in ([], ["--crypto-threads", "1"], ["--crypto-threads", cores]):
        out = tmp_path / f"out{len(runs)}"
        status, err = _evaluate(["--scenarios", "emergency", "--episodes", "1", "--policies",
                                 "heuristic", "--agents", "40", "--out", str(out), *flag],
                                capsys)
        assert status == 0, err
        runs.append(json.loads((out / "results.json").read_text())["runs"])
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0]["metrics"]["contracts_verified"] > 0
    bad = tmp_path / "bad"
    status, err = _evaluate(["--crypto-threads", "0", "--out", str(bad)], capsys)
    assert status == 2 and "--crypto-threads 0" in err and "from 1 to " in err
    assert not bad.exists()
    with pytest.raises(SystemExit) as exited:   # argparse: usage + message, status 2
        demo.main(["--agents", "5", "--no-live", "--crypto-threads", "0"])
    assert exited.value.code == demo.EXIT_USAGE
    assert "--crypto-threads: expected an integer from 1 to " in capsys.readouterr().err
    rc = demo.main(["--agents", "20", "--no-live", "--steps", "3", "--crypto-threads", "1"])
    assert rc == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--crypto-threads", "100"], "argument --crypto-threads: expected an integer from 1 to "),
    (["--agents", "2000000"], "argument --agents: expected an integer from 1 to 1,000,000, "
                              "got 2000000"),
])
def test_demo_refuses_out_of_range_counts_naming_the_flag(argv, message, capsys):
    """First-use review: --crypto-threads 100 was accepted silently (the environment never
    runs more threads than the usable cores) and --agents 2000000 was refused as
    ``DemoOptions.n_agents = 2000000``."""
    with pytest.raises(SystemExit) as exited:
        demo.main(["--no-live", "--steps", "1", *argv])
    assert exited.value.code == demo.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_demo_path_errors_name_the_flag(tmp_path, capsys):
    """First-use review: ``DemoOptions.audit_path = '...'`` named an internal field."""
    rc = demo.main(["--no-live", "--steps", "1", "--audit", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_USAGE and f"--audit {str(tmp_path)!r} is a directory" in err
    assert "DemoOptions" not in err
    same = str(tmp_path / "same.json")
    rc = demo.main(["--no-live", "--steps", "1", "--audit", same, "--json", same])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_USAGE and "the same file as --json" in err
    assert "DemoOptions" not in err


@pytest.mark.parametrize("module", ["benchmarks.__main__", "benchmarks.bench_learning"])
def test_benchmarks_refuse_an_unwritable_json_path_before_running(module, tmp_path, capsys,
                                                                  monkeypatch):
    """User-path review: ``python -m benchmarks --json DIR`` ran the whole benchmark, then
    crashed on the write and lost the figures."""
    import importlib

    bench = importlib.import_module(module)
    ran = []
    monkeypatch.setattr(bench, "run", lambda *a, **k: ran.append(a) or {})
    for bad, says in ((tmp_path, "is a directory"),
                      (tmp_path / "missing" / "x.json", "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(["--json", str(bad)])
        assert exit_info.value.code == 2 and says in capsys.readouterr().err
    assert ran == []


def test_benchmark_figures_survive_a_failed_write(tmp_path, capsys, monkeypatch):
    from benchmarks import write_json

    target = tmp_path / "gone" / "figures.json"   # its directory vanished during the run
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    write_json(target, {"env": [1, 2]})
    said = capsys.readouterr().out
    assert "could not write the figures" in said and "saved it to" in said
    saved = Path(said.split("saved it to ")[1].split("'")[1])
    assert json.loads(saved.read_text()) == {"env": [1, 2]}


@pytest.mark.parametrize(("args", "says"), [
    (["--scenario", "nope"], "known scenarios are price_spike"),
    (["--agents", "0"], "--agents 0: expected an integer >= 1"),
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--sort", "bogus"], "allowed pstats sort keys are"),
])
def test_profile_step_refuses_bad_flags_in_one_line(args, says, capsys):
    """User-path review: these gave tracebacks (a ZeroDivisionError for --steps 0)."""
    from benchmarks import profile_step

    with pytest.raises(SystemExit) as exit_info:
        profile_step.main(args)
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_warnings_are_one_line_each_and_shown_once(tmp_path, capsys):
    """Review: a fleet too small for every DER kind printed Python's warning format
    (``/path/demo.py:373: UserWarning: ...`` and the source line of the call), and
    evaluate.py printed it again for the baseline's and each policy's environment."""
    small = "is fewer than the fleet's DER kinds"
    assert demo.main(["--agents", "1", "--steps", "1", "--no-live"]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" not in err and "parallel_env(" not in err
    assert [line for line in err.splitlines() if small in line] == [
        "demo.py: warning: n_agents=1 is fewer than the fleet's DER kinds: solar (115.2 MW), "
        "ev (50 MW): no agent, left out of the fleet, so the scenario does not behave as at "
        "larger fleets; use n_agents >= 3"]
    status, err = _evaluate(["--agents", "2", "--episodes", "1", "--policies", "heuristic,random",
                             "--scenarios", "emergency", "--out", str(tmp_path / "o")], capsys)
    assert status == 0 and "UserWarning" not in err
    lines = [line for line in err.splitlines() if small in line]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: warning: n_agents=2 is fewer")


def test_demo_ctrl_c_while_starting_is_one_line(capsys, monkeypatch):
    """Review: Ctrl-C in the first seconds (under load, while ``build_parser`` imported
    the environment) printed a 20-line traceback ending in KeyboardInterrupt."""
    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "build_parser", interrupted_import)
    try:
        status = demo.main(["--no-live"])
    except KeyboardInterrupt:   # would also stop the test session
        pytest.fail("KeyboardInterrupt escaped demo.main: the user saw a traceback")
    assert status == demo.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err == "demo.py: interrupted before the episode started\n"


def test_learned_without_the_training_extra_is_one_line_with_the_install(tmp_path, capsys,
                                                                         monkeypatch):
    """Review: without stable-baselines3/sb3-contrib (``pip install -e .`` only),
    ``python evaluate.py`` (whose defaults include learned) ended in a ModuleNotFoundError
    traceback, and demo.py said only "import of sb3_contrib halted"."""
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)   # as if not installed
    expected = ("policy 'learned' needs the package 'sb3_contrib', which is not installed: "
                "install the training extra (pip install -e \".[train]\", see README "
                "\"Set-up\" for torch's CPU build)")
    out = tmp_path / "out"
    status, err = _evaluate(["--agents", "3", "--episodes", "1", "--out", str(out)], capsys)
    assert status == 2 and _one_line_error(err, "evaluate.py") == f"evaluate.py: error: {expected}"
    assert not out.exists()
    assert demo.main(["--policy", "learned", "--steps", "1", "--no-live"]) == 2
    assert _one_line_error(capsys.readouterr().err, "demo.py") == f"demo.py: error: {expected}"
