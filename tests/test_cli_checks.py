"""Tests of policies/cli_checks.py: the output-path checks and the safe write shared by
the command lines (refused before the work, rescued after it)."""

from __future__ import annotations

import pytest

from policies.cli_checks import check_output_dir, check_output_file, write_or_rescue
from tests.command_lines import UNWRITABLE, _unwritable_here


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
