"""demo.py ``--json`` never destroys a file by surprise (new-user review: ``--json
README.md --steps 2`` replaced README.md, and ``--limits x.toml --json x.toml`` replaced
the limits file it had just read).

An existing non-empty file is refused before the episode (exit 2, one line) unless
``--overwrite``; an existing empty file is fine; the ``--limits`` file (and a
``--policy`` model file) is refused even with ``--overwrite``; a file that appears
during the run is kept and the JSON rescued to the temporary directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # demo.py is a top-level script
    sys.path.insert(0, str(ROOT))

import demo  # noqa: E402
from policies.cli_checks import check_output_file  # noqa: E402
from tests.command_lines import _one_line_error  # noqa: E402

SMALL = ["--agents", "5", "--policy", "random", "--steps", "2", "--no-live"]
README_TEXT = "# gridswarm\n\nThe user's own notes, which a demo run must not replace.\n"
LIMITS_TEXT = "[agents.battery_003]\nsoc_min = 0.3\n"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = demo.main([*SMALL, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_an_existing_file_is_refused_before_the_episode(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    rc, out, err = _run(capsys, "--json", str(readme))
    line = _one_line_error(err, "demo.py")
    assert rc == demo.EXIT_USAGE and out == ""   # nothing ran
    size = f"{len(README_TEXT.encode()):,} bytes"
    assert line == (f"demo.py: error: --json {str(readme)!r} already exists ({size}): pass "
                    "--overwrite to replace it, or choose a new path")
    assert readme.read_text() == README_TEXT


def test_overwrite_replaces_an_existing_file(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text('{"earlier": "run"}\n')
    rc, out, _ = _run(capsys, "--json", str(old), "--overwrite")
    assert rc == demo.EXIT_OK and f"wrote {old}" in out
    doc = json.loads(old.read_text())
    assert doc["run"]["steps_run"] == 2 and doc["run"]["overwrite"] is True


def test_an_existing_empty_file_is_written(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.touch()
    rc, _, _ = _run(capsys, "--json", str(empty))
    assert rc == demo.EXIT_OK
    assert json.loads(empty.read_text())["run"]["steps_run"] == 2


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_the_limits_file_is_never_the_json(tmp_path, capsys, overwrite):
    limits = tmp_path / "x.toml"
    limits.write_text(LIMITS_TEXT)
    link = tmp_path / "link.toml"
    link.symlink_to(limits)
    for given in (limits, link):   # the same file under another name, too
        rc, out, err = _run(capsys, "--limits", str(given), "--json", str(limits), *overwrite)
        line = _one_line_error(err, "demo.py")
        assert rc == demo.EXIT_USAGE and out == ""
        assert f"--json {str(limits)!r} is the --limits file, an input of the run" in line
        assert "choose another path" in line and "--overwrite" not in line
    assert limits.read_text() == LIMITS_TEXT


def test_a_policy_model_file_is_never_the_json(tmp_path):
    model = tmp_path / "m.zip"
    model.write_bytes(b"a model")   # only the paths are compared before loading
    for policy in (str(model), str(tmp_path / "m")):   # "m" loads m.zip
        with pytest.raises(ValueError, match=r"^--json .*m\.zip' is the --policy model file"):
            demo.DemoOptions(policy=policy, json_path=str(model), overwrite=True, live=False)
    assert model.read_bytes() == b"a model"


def test_the_shipped_model_and_a_model_record_are_never_the_json(tmp_path):
    """Code review: ``--policy learned`` loads the shipped model, which ``--json`` with
    ``--overwrite`` replaced (the next learned run failed on a corrupt model), and a
    model's training record ``<model>.json`` — the natural name for this flag's file —
    was not protected either."""
    from policies.learned import DEFAULT_MODEL

    for target, says in ((DEFAULT_MODEL, "model file"),
                         (DEFAULT_MODEL.with_suffix(".json"), "model's training record")):
        with pytest.raises(ValueError, match=f"is the --policy {says}, an input of the run"):
            demo.DemoOptions(policy="learned", json_path=str(target), overwrite=True,
                             live=False)
    model = tmp_path / "m.zip"
    model.write_bytes(b"a model")
    record = tmp_path / "m.json"
    record.write_text("{}")
    with pytest.raises(ValueError, match="is the --policy model's training record"):
        demo.DemoOptions(policy=str(tmp_path / "m"), json_path=str(record), overwrite=True,
                         live=False)
    assert record.read_text() == "{}"


def test_a_file_appearing_during_the_run_is_kept_and_the_json_rescued(tmp_path, capsys,
                                                                      monkeypatch):
    target = tmp_path / "run.json"
    real = demo.run_demo

    def run_then_someone_writes(session, **kwargs):
        result = real(session, **kwargs)
        target.write_text(README_TEXT)
        return result

    monkeypatch.setattr(demo, "run_demo", run_then_someone_writes)
    rc, out, err = _run(capsys, "--json", str(target))
    line = _one_line_error(err, "demo.py")
    assert rc == demo.EXIT_OUTPUT_FAILED
    assert "appeared there during the run and is kept" in line
    assert target.read_text() == README_TEXT
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert json.loads(rescued.read_text())["run"]["steps_run"] == 2
    assert f"wrote {rescued}" in out
    rescued.unlink()


@pytest.mark.parametrize("existing", ["", README_TEXT])
def test_ctrl_c_still_writes_the_json_to_an_allowed_file(tmp_path, capsys, monkeypatch,
                                                         existing):
    """An interrupted run writes its JSON to an empty file, or over one with --overwrite."""
    target = tmp_path / "int.json"
    target.write_text(existing)
    real, calls = demo.measure_step, []

    def interrupt_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "measure_step", interrupt_at_the_third_step)
    flags = ["--overwrite"] if existing else []
    rc = demo.main(["--agents", "5", "--policy", "random", "--no-live", "--json", str(target),
                    *flags])
    assert rc == demo.EXIT_INTERRUPTED, capsys.readouterr().err
    doc = json.loads(target.read_text())
    assert doc["run"]["interrupted"] is True and doc["run"]["steps_run"] == 2


def test_check_output_file_refuses_only_non_empty_files_without_overwrite(tmp_path):
    full, empty = tmp_path / "full.json", tmp_path / "empty.json"
    full.write_text("{}")
    empty.touch()
    check_output_file(full, "--json")   # default: an existing file may be replaced
    check_output_file(empty, "--json", overwrite=False)
    check_output_file(tmp_path / "new.json", "--json", overwrite=False)
    with pytest.raises(ValueError, match=r"^--json '.*full\.json' already exists \(2 bytes\): "
                                         r"pass --overwrite"):
        check_output_file(full, "--json", overwrite=False)
    assert full.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == [
        "empty.json", "full.json"]


def test_overwrite_and_json_help_say_the_rule():
    text = demo.build_parser().format_help()
    assert "an existing file is replaced" not in text
    assert "--overwrite" in text and "refused unless --overwrite" in " ".join(text.split())
    with pytest.raises(ValueError, match=r"^--overwrite 'yes'"):
        demo.DemoOptions(overwrite="yes")


def test_overwrite_without_json_is_refused(capsys):
    """Code review: ``--overwrite`` alone was silently accepted (it affects only --json)."""
    rc, out, err = _run(capsys, "--overwrite")
    assert rc == demo.EXIT_USAGE and out == ""
    assert "--overwrite: only with --json FILE" in _one_line_error(err, "demo.py")


def test_a_re_run_replaces_its_own_earlier_json_without_overwrite(tmp_path, capsys):
    """DESIGN §9's ``demo.py --json FILE`` writes the file: a second run into the same
    path (a script re-run) replaces the earlier demo output, as evaluate.py replaces its
    own files; any other file — other JSON included — still needs --overwrite."""
    target = tmp_path / "run.json"
    assert _run(capsys, "--json", str(target))[0] == demo.EXIT_OK
    first = json.loads(target.read_text())
    rc, _, err = _run(capsys, "--json", str(target), "--seed", "1")
    assert rc == demo.EXIT_OK, err
    second = json.loads(target.read_text())
    assert first["run"]["seed"] == 0 and second["run"]["seed"] == 1
    other = tmp_path / "other.json"
    other.write_text('{"run": 1, "steps": []}')   # JSON, but not a demo output
    rc, out, err = _run(capsys, "--json", str(other))
    assert rc == demo.EXIT_USAGE and "pass --overwrite" in _one_line_error(err, "demo.py")
    assert other.read_text() == '{"run": 1, "steps": []}'


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_the_scenario_file_is_never_the_json(tmp_path, capsys, overwrite):
    scenario = tmp_path / "trip.toml"
    scenario.write_text('base = "emergency"\ncontingency_mw = 90.0\n')
    rc, out, err = _run(capsys, "--scenario", str(scenario), "--json", str(scenario),
                        *overwrite)
    line = _one_line_error(err, "demo.py")
    assert rc == demo.EXIT_USAGE and out == ""
    assert f"--json {str(scenario)!r} is the --scenario scenario file, an input" in line
    assert scenario.read_text() == 'base = "emergency"\ncontingency_mw = 90.0\n'
