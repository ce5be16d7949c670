"""Tests of input validation: configs, scenario files and kernel limits.

Every bad value must be refused where it is given, with a ``ValueError`` that names the
field (and the file or section) and what is allowed, never a ``TypeError`` or
``OverflowError`` later at reset or step time. Accepted values are stored normalized:
integer fields as Python ``int`` (numpy integers accepted; floats, even ``21.0``, and
bools refused), real-number fields as Python ``float`` (numpy scalars accepted; strings,
``None`` and bools refused).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
