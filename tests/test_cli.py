"""What every command line (``demo.py``, ``evaluate.py``, ``python -m train``) does alike,
run as a user runs it: a bad or missing limits file, ``--crypto-threads``, a fleet too
small for every DER kind and a missing training extra each give one line naming the
flag or file (exit 2, nothing created), and the flag changes no result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import demo
import evaluate
from tests.command_lines import EVAL_SMALL, ROOT, _evaluate, _one_line_error
from train.__main__ import main

# --------------------------------------------------------------------------- limits files
PROG = "python -m train"
LIMITS = {
    "order": ("[battery]\nsoc_max = 0.5\n[agents.battery_003]\nsoc_min = 0.6\n",
              "limits.agents['battery_003'] (battery): DerLimits: soc_min (0.6) must be <= "
              "soc_max (0.5)"),
    # the fleet's EV departure SoC (0.8) above the ev kind's ceiling
    "departure": ("[ev]\nsoc_max = 0.7\n",
                  "limits['ev']: the EVs' departure SoC 0.8 (FleetConfig.ev_departure_soc) "
                  "is above their soc_max 0.7"),
    "unknown": ("[agents.nosuch_007]\nsoc_min = 0.3\n",
                "limits name agent(s) nosuch_007 that a fleet of 100 agents does not have"),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_limits_errors_found_after_merging_name_the_file(case, tmp_path, capsys):
    """Review: these errors did not say which file they were about."""
    text, says = LIMITS[case]
    path = tmp_path / "lim.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["--limits", str(path), "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{PROG}: error: limits file '{path}': {says}")
    assert len(err.splitlines()) == 1
    status = evaluate.main(["--limits", str(path), "--out", str(tmp_path / "o"),
                            "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"evaluate.py: error: limits file '{path}': {says}")
    assert len(err.splitlines()) == 1
    status = demo.main(["--limits", str(path), "--no-live"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"demo.py: error: limits file '{path}': {says}")


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


def test_a_too_long_output_name_is_a_one_line_error_of_every_command_line(tmp_path, capsys):
    """Fuzzing review (session 23): a 300-byte name given to --json, --audit, --out,
    --logdir or --run-name escaped as ``OSError: [Errno 36] File name too long`` (a
    traceback, exit 1) from demo.py, evaluate.py, python -m train and train.dagger; a
    --limits path that long was "not valid TOML: [Errno 36] …"."""
    import train.dagger

    long = str(tmp_path / ("a" * 300))
    says = "File name too long (at most"
    # (session 23: --policy / --policies too, a model path or a bare name that long)
    for args in (["--json", f"{long}.json"], ["--audit", f"{long}.jsonl"], ["--policy", long],
                 ["--policy", "a" * 300]):
        assert demo.main([*args, "--no-live", "--steps", "1"]) == 2
        err = _one_line_error(capsys.readouterr().err, "demo.py")
        assert err.startswith(f"demo.py: error: {args[0]} '{args[1]}': {says}")
    status, err = _evaluate([*EVAL_SMALL, "--out", long], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py").startswith(f"evaluate.py: error: --out '{long}': "
                                                          f"{says}")
    for policy in (long, "a" * 300):
        status, err = _evaluate([*EVAL_SMALL, "--policies", policy, "--out",
                                 str(tmp_path / "out")], capsys)
        assert status == 2 and _one_line_error(err, "evaluate.py").startswith(
            f"evaluate.py: error: --policies: model file '{policy}': {says}")
    runs = tmp_path / "runs"
    for args, flag in ((["--out", f"{long}.zip"], "--out"), (["--run-name", "a" * 300],
                                                              "run directory"),
                       (["--logdir", long], "--logdir"),
                       # (the session's diff review: --resume still escaped as a traceback)
                       (["--resume", f"{long}.zip", "--out", str(tmp_path / "m.zip")],
                        "--resume: model file")):   # as demo.py --policy says it
        with pytest.raises(SystemExit) as exc:
            main(["--logdir", str(runs), *args, "--no-progress"])
        assert exc.value.code == 2
        assert _one_line_error(capsys.readouterr().err, PROG).startswith(
            f"{PROG}: error: {flag} '")
    with pytest.raises(SystemExit) as exc:
        train.dagger.main(["--out", f"{long}.zip"])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert demo.main(["--limits", f"{long}.toml", "--no-live", "--steps", "1"]) == 2
    assert _one_line_error(capsys.readouterr().err, "demo.py") == (
        f"demo.py: error: limits file '{long}.toml' cannot be read: File name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


BAD_LIMITS = [
    '[battery]\nmax_discharge_mw = "2"\n',
    '[battery]\nsoc_max = "0.9"\n',
    "[agents]\nbattery_003 = 5\n",
]


@pytest.mark.parametrize("toml", BAD_LIMITS)
def test_demo_bad_limits_file_is_a_one_line_usage_error(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--no-live", "--steps", "3",
                           "--limits", str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.py: error: limits file"), proc.stderr
    assert proc.stdout == ""


def test_evaluate_bad_limits_file_is_a_one_line_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_LIMITS[0])
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--episodes", "1",
                           "--limits", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_discharge_mw" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- flags, warnings and missing extras
def test_crypto_threads_flag_is_checked_and_does_not_change_results(tmp_path, capsys):
    # --crypto-threads only sets how many threads sign and verify: the runs are the same
    runs = []
    from policies.cli_checks import max_crypto_threads

    cores = str(max_crypto_threads())
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
    assert "--crypto-threads 0: expected an integer from 1 to " in capsys.readouterr().err
    rc = demo.main(["--agents", "20", "--no-live", "--steps", "3", "--crypto-threads", "1"])
    assert rc == 0


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


@pytest.mark.parametrize("case", ["unknown_policy", "missing_model", "unknown_scenario"])
def test_an_unknown_policy_or_scenario_names_its_flag(case, tmp_path, capsys):
    """Contract check: README promises one line "naming the flag" for a bad argument,
    but ``--policy genius`` said only "unknown policy 'genius'; ..." (demo.py and
    evaluate.py alike), and ``--scenarios nowhere`` "unknown scenario 'nowhere'; ...",
    leaving the user to guess which flag it was about."""
    missing = str(tmp_path / "no_such_model.zip")
    value, says = {"unknown_policy": ("genius", "unknown policy 'genius'; known policies: "),
                   "missing_model": (missing, f"model file {missing!r} does not exist"),
                   "unknown_scenario": ("nowhere", "unknown scenario 'nowhere'; known "
                                                   "scenarios: ")}[case]
    out = tmp_path / "o"
    flag = "--scenarios" if case == "unknown_scenario" else "--policies"
    status, err = _evaluate([flag, value, "--out", str(out)], capsys)
    assert status == 2 and not out.exists()
    assert _one_line_error(err, "evaluate.py").startswith(f"evaluate.py: error: {flag}: {says}")
    if case == "unknown_scenario":   # demo.py's --scenario is an argparse choice (named)
        return
    assert demo.main(["--policy", value, "--steps", "1", "--no-live"]) == 2
    line = _one_line_error(capsys.readouterr().err, "demo.py")
    assert line.startswith(f"demo.py: error: --policy: {says}")


# --------------------------------------------------------------------------- governor deadband
def test_governor_deadband_flag_reaches_the_physics_and_the_records(tmp_path, capsys):
    """``--governor-deadband-hz`` (demo.py, evaluate.py) sets
    ``GridParams.governor_deadband_hz`` for the episode and its no-DER baseline: the
    frequency changes as the Python API's does, the records say so, and a value outside
    0..0.5 Hz is one line naming the flag and the range, with nothing created."""
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.env import GridSwarmEnv
    from gridswarm_env.grid import GridParams
    from policies import make_policy
    from policies.rollout import run_episode

    args = ["--agents", "10", "--scenario", "emergency", "--trust", "hmac", "--no-live",
            "--steps", "20"]
    for hz in (0.0, 0.036):
        out = tmp_path / f"demo_{hz}.json"
        assert demo.main([*args, "--governor-deadband-hz", str(hz), "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["run"]["governor_deadband_hz"] == hz
        env = GridSwarmEnv(scenario="emergency", n_agents=10, config=EnvConfig(
            trust="hmac", grid=GridParams(governor_deadband_hz=hz)))
        api = run_episode(env, make_policy("heuristic"), seed=0, max_steps=20).metrics
        assert doc["metrics"]["frequency_nadir_hz"] == api["frequency_nadir_hz"]
        nadir = doc["metrics"]["frequency_nadir_hz"]
    assert nadir < json.loads((tmp_path / "demo_0.0.json").read_text())[
        "metrics"]["frequency_nadir_hz"]   # the governors answer later: a deeper nadir
    capsys.readouterr()

    out = tmp_path / "eval"
    status, _ = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out),
                           "--governor-deadband-hz", "0.036"], capsys)
    assert status == 0
    result = json.loads((out / "results.json").read_text())
    assert result["summary"]["config"]["env_config"]["grid"]["governor_deadband_hz"] == 0.036
    assert ("- environment: custom EnvConfig, changed from the defaults (in parentheses): "
            "grid.governor_deadband_hz = 0.036 (0.0)") in (out / "results.md").read_text()
    shadow = GridSwarmEnv(scenario="emergency", n_agents=5, config=EnvConfig(
        trust="hmac", shadow=True, grid=GridParams(governor_deadband_hz=0.036)))
    baseline = run_episode(shadow, make_policy("heuristic"), seed=0).metrics
    assert result["summary"]["no_der_counterfactual"]["emergency"]["frequency_nadir_hz"] == (
        baseline["frequency_nadir_hz"])

    allowed = ("expected a deadband in Hz from 0 (none, the default) to 0.5 (real governors: "
               "at most 0.036)")
    for bad in ("0.6", "-0.01", "nan", "inf", "x"):
        with pytest.raises(SystemExit) as exc:
            demo.main([*args, "--governor-deadband-hz", bad])
        assert exc.value.code == 2
        assert (f"argument --governor-deadband-hz: {allowed}, got {bad!r}"
                in capsys.readouterr().err)
        status, err = _evaluate([*EVAL_SMALL, "--out", str(tmp_path / "no"),
                                 "--governor-deadband-hz", bad], capsys)
        assert status == 2 and (f"argument --governor-deadband-hz: {allowed}, got {bad!r}"
                                in _one_line_error(err, "evaluate.py"))
    assert not (tmp_path / "no").exists()
    with pytest.raises(ValueError, match=r"^--governor-deadband-hz 0\.6: expected a deadband"):
        demo.DemoOptions(governor_deadband_hz=0.6)


def _readme_synopsis(prog: str) -> set[str]:
    """The flags README's *Command lines* block lists for ``prog`` (its lines from
    ``python <prog>`` to the next command)."""
    import re

    text = (ROOT / "README.md").read_text()
    block = text.split("Command lines:\n\n```", 1)[1].split("```", 1)[0]
    lines, on = [], False
    for line in block.splitlines():
        if line.startswith(("python ", "tensorboard ")):
            on = line.startswith(prog + " ")
        if on:
            lines.append(line)
    return set(re.findall(r"--[a-z][a-z0-9-]*", "\n".join(lines)))


@pytest.mark.parametrize("prog, complete", [("python demo.py", True),
                                            ("python evaluate.py", True),
                                            ("python -m train", False)])
def test_readme_command_lines_match_the_parsers(prog, complete):
    """README's synopsis lists every flag of demo.py and evaluate.py, and no flag any
    command lacks (python -m train lists its main ones and points to --help)."""
    from train.__main__ import build_parser as train_parser

    parser = {"python demo.py": demo.build_parser, "python evaluate.py": evaluate.build_parser,
              "python -m train": train_parser}[prog]()
    flags = {option for action in parser._actions for option in action.option_strings
             if option.startswith("--")} - {"--help"}
    listed = _readme_synopsis(prog) - {"--help"}
    assert listed <= flags, sorted(listed - flags)
    if complete:
        assert flags <= listed, sorted(flags - listed)
