"""evaluate.py's statistics on the edge cases of a stopped or broken run: policies that
ran different seeds, a KPI that is NaN in every episode of one policy."""

from __future__ import annotations

import evaluate


def _run(policy: str, seed: int, **metrics: float | None) -> dict:
    return {"policy": policy, "scenario": "emergency", "seed": seed, "n_agents": 3,
            "metrics": metrics}


def test_cost_vs_oracle_is_none_when_the_policies_ran_different_seeds():
    """Review: a stopped run's rescue file (results-interrupted/-failed) summarizes
    whatever finished, so the heuristic may have seeds 0-2 and the oracle only seed 0;
    the ratio of their means (20 / 10 = 2.0) compared different seeds although both
    cost the same on the one they share. The docstring already said means over
    different seeds do not compare."""
    runs = [_run("heuristic", s, system_cost=c) for s, c in enumerate((10.0, 20.0, 30.0))]
    runs.append(_run("oracle", 0, system_cost=10.0))
    summary = evaluate.summarize(runs, ["heuristic", "oracle"], ["emergency"])["emergency"]
    assert summary["heuristic"]["system_cost_vs_oracle"] is None
    assert summary["oracle"]["system_cost_vs_oracle"] == 1.0     # itself, same seeds
    runs.append(_run("oracle", 1, system_cost=20.0))
    runs.append(_run("oracle", 2, system_cost=15.0))
    summary = evaluate.summarize(runs, ["heuristic", "oracle"], ["emergency"])["emergency"]
    assert summary["heuristic"]["system_cost_vs_oracle"] == 20.0 / 15.0


def test_a_kpi_nan_in_every_episode_shows_as_nan_not_as_undefined(tmp_path):
    """Review: with one seed (or NaN on every seed) a NaN KPI had no mean, so it was left
    out of the summary and its cell read '–', exactly like a KPI that is None by design,
    while the note above the table said it was 'counted as NaN/inf in the tables'."""
    runs = [_run("heuristic", 0, system_cost=10.0, frequency_nadir_hz=59.9,
                 emergency_response_latency_ms=None),
            _run("learned", 0, system_cost=9.0, frequency_nadir_hz=None,
                 emergency_response_latency_ms=None)]
    nonfinite = [{"policy": "learned", "scenario": "emergency", "seed": 0,
                  "metrics": ["frequency_nadir_hz"]}]
    summary = evaluate.summarize(runs, ["heuristic", "learned"], ["emergency"], nonfinite)
    learned = summary["emergency"]["learned"]
    assert "frequency_nadir_hz" not in learned["kpis"]
    assert learned["nonfinite_only"] == {"frequency_nadir_hz": {"n_null": 1, "n_nonfinite": 1}}
    assert summary["emergency"]["heuristic"]["nonfinite_only"] == {}   # None by design
    md = tmp_path / "results.md"
    evaluate.write_markdown(md, summary, {}, evaluate.nonfinite_notes(nonfinite), {})
    header, rows = md.read_text().split("| policy |")
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
             for line in rows.splitlines() if line.startswith("| ")}
    column = ["policy", "episodes", *evaluate.TABLE_KPIS].index
    assert cells["learned"][column("frequency_nadir_hz")] == "– (1 NaN/inf)"
    assert cells["learned"][column("emergency_response_latency_ms")] == "–"
    assert cells["heuristic"][column("frequency_nadir_hz")] == "59.900"
    assert "counted as 'NaN/inf' in the tables" in header
