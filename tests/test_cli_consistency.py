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


def test_train_resume_of_a_corrupt_model_names_the_flag_as_demo_and_evaluate_do(tmp_path,
                                                                                 capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"garbage\n")
    says = (f"model file {str(bad)!r} is corrupt or not a model: not a zip archive "
            "(expected a MaskablePPO .zip saved by `python -m train`)")
    assert _exit_line(demo.main, ["--policy", str(bad), "--no-live"], capsys,
                      "demo.py") == f"demo.py: error: --policy: {says}"
    status, err = _evaluate(["--policies", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == f"evaluate.py: error: --policies: {says}"
    assert _exit_line(_train, ["--resume", str(bad), "--logdir", str(tmp_path / "runs")],
                      capsys, "python -m train") == (
        f"python -m train: error: --resume: {says}")
    assert not (tmp_path / "runs").exists()
    assert evaluate.UsageError   # the module the helpers above drive
