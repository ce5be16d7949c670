"""Helpers of the command-line tests: the repository root, a subprocess timeout, a path
no file can be written to, the one-line error check and ``evaluate.py`` run in-process."""

from __future__ import annotations

from pathlib import Path

import evaluate
from policies.cli_checks import check_output_file

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180
#: a path root cannot create a file in (sysfs); skipped where it is writable
UNWRITABLE = Path("/sys/kernel/gridswarm_model.zip")


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


def _evaluate(args: list[str], capsys) -> tuple[int, str]:
    status = evaluate.main([*args, "--no-progress"])
    return status, capsys.readouterr().err


EVAL_SMALL = ["--agents", "5", "--episodes", "1", "--policies", "random", "--trust", "hmac"]


def counted_scenario_file(tmp: Path, monkeypatch) -> tuple[Path, list]:
    """``tmp/trip_90.toml`` (the emergency with a 90 MW trip, named ``trip_90``) and the
    list of paths ``read_scenario_file`` reads from then on (a command line reads its
    scenario file once)."""
    from gridswarm_env import scenarios

    read = scenarios.read_scenario_file
    reads: list = []
    monkeypatch.setattr(scenarios, "read_scenario_file",
                        lambda path: reads.append(path) or read(path))
    trip = tmp / "trip_90.toml"
    trip.write_text('base = "emergency"\nname = "trip_90"\ncontingency_mw = 90.0\n')
    return trip, reads
