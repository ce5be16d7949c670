"""The three command lines (demo.py, evaluate.py, python -m train) word the same mistake
the same way (session 30's walk through README's *Use* as a new user).

Before: only evaluate.py hinted at a close option (``--policy``: ``did you mean
--policies?``), while ``demo.py --policies heuristic`` and ``python -m train --scenarios
emergency`` (the other commands' flag names) got a bare "unrecognized arguments"; an
unknown scenario was worded three ways; and ``python -m train --resume`` of a corrupt
file was the only refusal of a model file that did not name its flag.
"""

from __future__ import annotations

import pytest

import demo
import evaluate
from tests.command_lines import _evaluate, _one_line_error


def _exit_line(main, argv, capsys, prog) -> str:
    """The one stderr line of a command line that exits 2 (argparse's ``exit`` or a
    returned status)."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    return _one_line_error(capsys.readouterr().err, prog)


def _train(argv):
    from train.__main__ import main

    return main(argv)


def _dagger(argv):
    from train.dagger import main

    return main(argv)


@pytest.mark.parametrize("command, argv, hint", [
    ("demo.py", ["--policies", "heuristic"], "--policy"),        # evaluate.py's flag
    ("demo.py", ["--scenarios", "emergency"], "--scenario"),
    ("demo.py", ["--seeds", "3"], "--seed"),
    ("python -m train", ["--scenarios", "emergency"], "--scenario"),
    ("python -m train", ["--timestep", "64", "--scenaro", "emergency"], "--scenario"),
    ("python -m train.dagger", ["--out", "m", "--iteratons", "2"], "--iterations"),
])
def test_every_command_line_hints_an_unknown_option_close_to_its_own(command, argv, hint,
                                                                     capsys):
    main = {"demo.py": demo.main, "python -m train": _train,
            "python -m train.dagger": _dagger}[command]
    line = _exit_line(main, argv, capsys, command)
    unknown = " ".join(a for a in argv if a not in ("--out", "m", "--timestep", "64"))
    assert line == (f"{command}: error: unrecognized arguments: {unknown}; did you mean "
                    f"{hint}? (see {command} --help)")


def test_an_unknown_option_far_from_every_flag_gets_no_hint(capsys):
    line = _exit_line(demo.main, ["--zzzzzz"], capsys, "demo.py")
    assert line == "demo.py: error: unrecognized arguments: --zzzzzz (see demo.py --help)"
    # demo.py's and evaluate.py's flag is spelt like --torch-threads, but is not it
    line = _exit_line(_train, ["--crypto-threads", "1"], capsys, "python -m train")
    assert line == ("python -m train: error: unrecognized arguments: --crypto-threads 1 "
                    "(see python -m train --help)")


KNOWN = "known scenarios: price_spike, solar_surplus, emergency"


def test_an_unknown_scenario_is_worded_alike_by_the_three_commands(tmp_path, capsys):
    status, err = _evaluate(["--scenarios", "nope", "--out", str(tmp_path / "o")], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == (
        f"evaluate.py: error: --scenarios: unknown scenario 'nope'; {KNOWN}, 'all' (every "
        "one), or a scenario file FILE.toml")
    assert _exit_line(demo.main, ["--scenario", "nope", "--no-live"], capsys,
                      "demo.py") == (f"demo.py: error: --scenario: unknown scenario 'nope'; "
                                     f"{KNOWN}, or a scenario file FILE.toml")
    assert _exit_line(_train, ["--scenario", "nope"], capsys, "python -m train") == (
        f"python -m train: error: --scenario: unknown scenario 'nope'; {KNOWN}, 'all' "
        "(every one), or a scenario file FILE.toml")
    assert not (tmp_path / "o").exists()


MODEL_EXPECTED = ("(expected a MaskablePPO .zip saved by `python -m train` (or `python -m "
                  "train.dagger`))")


@pytest.mark.parametrize("problem", ["corrupt", "missing"])
def test_a_bad_model_file_is_worded_alike_by_the_four_commands(problem, tmp_path, capsys):
    """``python -m train --resume`` of a corrupt file was the only refusal of a model file
    that did not name its flag; of a missing one it said ``--resume '…/m': no such model
    file (nor '…/m.zip')``, where demo.py and evaluate.py said ``--policy: model file '…/m'
    does not exist (nor '…/m.zip') (expected …)``; a corrupt one ended ``(expected … saved
    by `python -m train`)``, without train.dagger."""
    model = tmp_path / "m"
    if problem == "corrupt":
        model.write_bytes(b"garbage\n")
        says = (f"model file {str(model)!r} is corrupt or not a model: not a zip archive "
                f"{MODEL_EXPECTED}")
    else:
        says = (f"model file {str(model)!r} does not exist (nor {str(model) + '.zip'!r}) "
                f"{MODEL_EXPECTED}")
    assert _exit_line(demo.main, ["--policy", str(model), "--no-live"], capsys,
                      "demo.py") == f"demo.py: error: --policy: {says}"
    status, err = _evaluate(["--policies", str(model), "--out", str(tmp_path / "o")], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == f"evaluate.py: error: --policies: {says}"
    assert _exit_line(_train, ["--resume", str(model), "--logdir", str(tmp_path / "runs")],
                      capsys, "python -m train") == f"python -m train: error: --resume: {says}"
    # python -m train.dagger added "(see python -m train.dagger --help)" to it
    assert _exit_line(_dagger, ["--base", str(model), "--out", str(tmp_path / "d.zip")],
                      capsys, "python -m train.dagger") == (
        f"python -m train.dagger: error: --base: {says}")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m"] if problem == "corrupt" else [])


AGENTS_WHY = "(~10 kB of state each; 10 000 is the benchmarked scale)"


def _command_main(command, tmp_path):
    """(main, the arguments every call gets: outputs under ``tmp_path``, never the cwd)."""
    return {"demo.py": (demo.main, ["--no-live"]),
            "evaluate.py": (evaluate.main, ["--no-progress", "--out", str(tmp_path / "o")]),
            "python -m train": (_train, ["--logdir", str(tmp_path / "runs")]),
            "python -m train.dagger": (_dagger, ["--out", str(tmp_path / "m")])}[command]


@pytest.mark.parametrize("command, argv, says", [
    # the same flag, the same words, in every command (and the upper bound with it)
    *[(c, ["--agents", "0"], f"--agents 0: expected an integer from 1 to 1,000,000 {AGENTS_WHY}")
      for c in ("demo.py", "evaluate.py", "python -m train")],
    *[(c, ["--agents", "x"], f"--agents 'x': expected an integer from 1 to 1,000,000 {AGENTS_WHY}")
      for c in ("demo.py", "evaluate.py", "python -m train")],
    *[(c, ["--agents", "2000000"],
       f"--agents 2000000: expected an integer from 1 to 1,000,000 {AGENTS_WHY}")
      for c in ("demo.py", "evaluate.py", "python -m train")],
    *[(c, ["--seed", "-1"], "--seed -1: expected an integer >= 0")
      for c in ("demo.py", "evaluate.py")],
    ("python -m train", ["--seed", "-1"],
     "--seed -1: expected an integer from 0 to 4,294,967,294 (numpy's seeds are 32-bit and "
     "behaviour cloning seeds PPO's episode stream with seed + 1)"),
    # evaluate.py worded one flag two ways: text ("argument --episodes: must be ...,
    # got 'nan'") and a number out of range ("--episodes 0: must be an integer >= 1")
    ("evaluate.py", ["--episodes", "nan"], "--episodes 'nan': expected an integer >= 1"),
    ("evaluate.py", ["--episodes", "0"], "--episodes 0: expected an integer >= 1"),
    ("demo.py", ["--steps", "1.5"], "--steps '1.5': expected an integer >= 1"),
    ("python -m train", ["--envs", "0"], "--envs 0: expected an integer >= 1"),
    ("python -m train", ["--timesteps", "-1"], "--timesteps -1: expected an integer >= 0"),
    ("python -m train", ["--n-steps", "1"], "--n-steps 1: expected an integer >= 2"),
    ("python -m train", ["--torch-threads", "999"],
     "--torch-threads 999: expected an integer from 1 to 256 (torch accepts 10**6 threads, "
     "then crashes the process)"),
    ("python -m train", ["--eval-seeds", "99999"],
     "--eval-seeds 99999: expected an integer from 1 to 90,000 (the seeds 10,000 + k must "
     "stay among the evaluation seeds, 0..99,999, which training never plays)"),
    ("python -m train", ["--verbose", "2"], "--verbose 2: expected an integer from 0 to 1"),
    ("python -m train.dagger", ["--agents", "0"], "--agents 0: expected an integer from 1 to 10,000"),
    ("python -m train.dagger", ["--iterations", "x"],
     "--iterations 'x': expected an integer from 0 to 100"),
])
def test_an_integer_flag_out_of_range_is_worded_alike_by_every_command(command, argv, says,
                                                                       tmp_path, capsys):
    """Before: demo.py said ``argument --agents: expected an integer from 1 to 1,000,000,
    got 0``, evaluate.py and python -m train ``--agents 0: must be an integer >= 1`` (no
    upper bound), ``--agents 2000000: at most 1,000,000 agents (...)`` and, for text,
    ``argument --agents: must be an integer, got 'x'``."""
    main, base = _command_main(command, tmp_path)
    assert _exit_line(main, [*base, *argv], capsys, command) == (
        f"{command}: error: {says} (see {command} --help)")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["demo.py", "evaluate.py"])
def test_crypto_threads_out_of_range_is_worded_alike(command, tmp_path, capsys):
    from policies.cli_checks import max_crypto_threads

    main, base = _command_main(command, tmp_path)
    top = max_crypto_threads()
    assert _exit_line(main, [*base, "--crypto-threads", str(top + 1)], capsys, command) == (
        f"{command}: error: --crypto-threads {top + 1}: expected an integer from 1 to {top} "
        f"(the cores this process may use) (see {command} --help)")


def test_train_names_its_input_files_at_the_start_as_demo_does(tmp_path, capsys,
                                                               monkeypatch):
    """Before: ``python -m train`` named none of the files it ran with (only its record
    held them); it now prints them once, before training, in demo.py's words
    (``policies.cli_checks.input_files``: path as given, first 12 hex digits of the
    SHA-256)."""
    import hashlib

    import train.trainer

    files = {"trip.toml": b'base = "emergency"\nname = "trip_90"\ncontingency_mw = 90.0\n',
             "weak.toml": b"[grid]\ninertia_h_s = 3.0\n",
             "lim.toml": b"[battery]\nmax_discharge_mw = 5.0\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    seen = []

    def train_run(config, notes=None):   # what the user saw before training began
        seen.append(capsys.readouterr().out)
        return tmp_path / "m.zip"

    monkeypatch.setattr(train.trainer, "train", train_run)
    short = {name: hashlib.sha256(data).hexdigest()[:12] for name, data in files.items()}
    argv = ["--scenario", str(tmp_path / "trip.toml"), "--config", str(tmp_path / "weak.toml"),
            "--limits", str(tmp_path / "lim.toml"), "--eval-every", "0",
            "--logdir", str(tmp_path / "runs")]
    assert _train(argv) == 0
    assert seen == [f"training with scenario file {tmp_path / 'trip.toml'} (sha256 "
                    f"{short['trip.toml']}), config file {tmp_path / 'weak.toml'} (sha256 "
                    f"{short['weak.toml']}), limits file {tmp_path / 'lim.toml'} (sha256 "
                    f"{short['lim.toml']})\n"]
    # none given: no such line
    seen.clear()
    capsys.readouterr()
    assert _train(["--scenario", "emergency", "--eval-every", "0", "--logdir",
                   str(tmp_path / "runs")]) == 0
    assert seen == [""]
    assert not (tmp_path / "runs").exists()
