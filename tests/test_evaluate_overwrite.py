"""``evaluate.py --out DIR`` replaces only its own ``results.json`` / ``results.md``
(review: a ``results.json`` of the user's in DIR was replaced without a word, while
``demo.py --json`` refuses a file that is not its own), and results.md's table shows
DESIGN §8's frequency extremes ``max_abs_deviation_hz`` and ``max_rocof_hz_per_s``
(review: the RoCoF, the emergency scenario's protection metric, was only in
results.json and tensorboard).

A foreign file (not empty) is refused before any episode (exit 2, one line naming it and
``--overwrite``, nothing written); ``--overwrite`` replaces it; an empty file and
evaluate's own earlier outputs are replaced without it; a foreign file appearing during
the run is kept and the output rescued to the temporary directory (exit 1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import evaluate
from tests.command_lines import EVAL_SMALL, _evaluate, _one_line_error

RUN = [*EVAL_SMALL, "--scenarios", "emergency"]
FOREIGN = {
    "results.json": ['{"mine": 1}\n', "not JSON at all\n", "[1, 2]\n",
                     '{"runs": [], "summary": {"mine": 1}}\n'],
    "results.md": ["my notes\n", "# gridswarm evaluation notes\nkeep them\n",
                   "\n# gridswarm evaluation\n"],
}
CASES = [(name, text) for name, texts in FOREIGN.items() for text in texts]


def _listing(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir()}


@pytest.mark.parametrize("name, text", CASES)
def test_a_foreign_output_file_is_refused_before_any_episode(tmp_path, capsys, monkeypatch,
                                                             name, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(text)
    (out / "notes.txt").write_text("mine")

    def no_episode(*args, **kwargs):
        raise AssertionError("an episode ran")

    monkeypatch.setattr("policies.rollout.run_episode", no_episode)
    status, err = _evaluate([*RUN, "--out", str(out)], capsys)
    line = _one_line_error(err, "evaluate.py")
    assert status == 2
    size = f"{len(text.encode()):,} bytes"
    assert line == (f"evaluate.py: error: --out: output file {str(out / name)!r} already "
                    f"exists ({size}) and was not written by evaluate.py: pass --overwrite "
                    "to replace it, or choose another --out directory")
    assert _listing(out) == {name: text, "notes.txt": "mine"}   # nothing written


def test_overwrite_replaces_foreign_output_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}\n')
    (out / "results.md").write_text("my notes\n")
    status, _ = _evaluate([*RUN, "--out", str(out), "--overwrite"], capsys)
    assert status == 0
    assert evaluate.is_results_json(out / "results.json")
    assert json.loads((out / "results.json").read_text())["runs"][0]["scenario"] == "emergency"
    assert (out / "results.md").read_text().startswith("# gridswarm evaluation\n")


def test_empty_files_and_own_earlier_outputs_are_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").touch()   # nothing to lose, as demo.py --json
    (out / "results.md").touch()
    assert _evaluate([*RUN, "--out", str(out)], capsys)[0] == 0
    for randomize in (["--randomize"], []):   # the randomized title is evaluate's too
        (out / "results.md").write_text((out / "results.md").read_text() + "\nmy addition\n")
        status, err = _evaluate([*RUN, "--out", str(out), *randomize], capsys)
        assert status == 0, err
        assert "my addition" not in (out / "results.md").read_text()
    assert evaluate.is_results_json(out / "results.json")
    assert evaluate.is_results_md(out / "results.md")


def test_a_saved_stopped_run_counts_as_evaluates_results_json(tmp_path):
    """The file an interrupted run saves has results.json's layout: copied into DIR it
    is evaluate's own (a re-run replaces it)."""
    path, problem = evaluate.save_interrupted(
        [], ["random"], ["emergency"], {"policies": ["random"], "scenarios": ["emergency"]},
        {}, failure={"during": "x", "error": "y", "traceback": ""})
    assert problem is None
    try:
        assert evaluate.is_results_json(path)
    finally:
        path.unlink()
    assert not evaluate.is_results_json(tmp_path / "missing.json")
    assert not evaluate.is_results_md(tmp_path)   # a directory


def test_a_foreign_file_appearing_during_the_run_is_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = evaluate.summarize

    def summarize_then_someone_writes(*args, **kwargs):
        result = real(*args, **kwargs)
        (out / "results.md").write_text("my notes\n")
        return result

    monkeypatch.setattr(evaluate, "summarize", summarize_then_someone_writes)
    status, err = _evaluate([*RUN, "--out", str(out)], capsys)
    assert status == 1
    line = _one_line_error(err, "evaluate.py")
    assert "appeared there during the run and is kept" in line
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert "## emergency" in rescued.read_text()
    rescued.unlink()
    assert (out / "results.md").read_text() == "my notes\n"
    # this run's event file stays with it, in the temporary directory the line names
    staging = Path(line.split("this run's tensorboard scalars are in '")[1].split("'")[0])
    assert len(list(staging.glob("events.out.tfevents.*"))) == 1
    shutil.rmtree(staging)


def test_library_call_names_the_keyword_and_checks_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}\n')
    kwargs = {"policies": "random", "scenarios": "emergency", "episodes": 1, "n_agents": 5,
              "trust": "hmac", "out_dir": out, "progress": False}
    with pytest.raises(evaluate.UsageError, match=r"pass overwrite \(--overwrite\) to replace "
                       r"it, or choose another out_dir \(--out\) directory$"):
        evaluate.evaluate(**kwargs)
    with pytest.raises(evaluate.UsageError,
                       match=r"^overwrite \(--overwrite\) = 1: expected True or False$"):
        evaluate.evaluate(**kwargs, overwrite=1)
    assert (out / "results.json").read_text() == '{"mine": 1}\n'
    evaluate.evaluate(**kwargs, overwrite=True)
    assert evaluate.is_results_json(out / "results.json")


def test_results_md_shows_max_abs_deviation_and_rocof(tmp_path, capsys):
    out = tmp_path / "out"
    assert _evaluate([*RUN, "--out", str(out)], capsys)[0] == 0
    md = (out / "results.md").read_text().splitlines()
    header = next(line for line in md if line.startswith("| policy |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    # KPI columns carry their unit (README's tables did, results.md's were bare keys)
    # and map back to results.json's keys
    assert cols[:2] == ["policy", "episodes"] and cols[-1] == "cost / oracle"
    assert [evaluate.column_kpi(c) for c in cols] == [None, None, *evaluate.TABLE_KPIS, None]
    assert {"`system_cost` ($)", "`unserved_energy_mwh` (MWh)", "`frequency_nadir_hz` (Hz)",
            "`max_rocof_hz_per_s` (Hz/s)", "`seconds_outside_band` (s)",
            "`emergency_response_latency_ms` (ms)", "`emergency_response_mw_100ms` (MW)",
            "`consensus_rate`", "`blocked_attempts`"} <= set(cols)
    for kpi in ("max_abs_deviation_hz", "max_rocof_hz_per_s"):
        assert kpi in evaluate.TABLE_KPIS
    row = next(line for line in md if line.startswith("| random |"))
    table = dict(zip((evaluate.column_kpi(c) or c for c in cols),
                     (c.strip() for c in row.strip("|").split("|")), strict=True))
    kpis = json.loads((out / "results.json").read_text())["summary"]["scenarios"][
        "emergency"]["random"]["kpis"]
    for kpi in ("max_abs_deviation_hz", "max_rocof_hz_per_s"):
        # one episode: the mean alone, to 3 significant digits (0.0303) or 3 decimals
        assert float(table[kpi]) == pytest.approx(kpis[kpi]["mean"], rel=5e-3)
        assert table[kpi] == evaluate._fmt(kpis[kpi]) and kpis[kpi]["mean"] > 0
    no_der = json.loads((out / "results.json").read_text())["summary"][
        "no_der_counterfactual"]["emergency"]["max_rocof_hz_per_s"]
    line = next(line for line in md if line.startswith("No-DER counterfactual"))
    assert f", max RoCoF {no_der:.3f} Hz/s, " in line and no_der > kpis[
        "max_rocof_hz_per_s"]["mean"]   # the DERs' reserve slows the fall
