"""evaluate.py's statistics on the edge cases of a stopped or broken run: policies that
ran different seeds, a KPI that is NaN in every episode of one policy."""

from __future__ import annotations

import json
import math
import tempfile

import numpy as np
import pytest

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


def test_paired_relative_difference_uses_the_baselines_mean_over_the_paired_seeds():
    """``relative`` divides the mean paired difference by the baseline's mean over the
    same seeds: a seed only the baseline ran (a stopped run) must not shift it."""
    runs = [_run("heuristic", s, system_cost=c) for s, c in enumerate((10.0, 20.0, 30.0))]
    runs += [_run("learned", s, system_cost=c) for s, c in enumerate((9.0, 18.0))]
    paired = evaluate.paired_difference(runs, "emergency", "learned", "heuristic")
    assert paired["mean_diff"] == pytest.approx(-1.5)
    assert paired["relative"] == pytest.approx(-1.5 / 15.0)   # not / 20 (all three seeds)
    assert paired["n_pairs"] == 2 and paired["unpaired_seeds"] == [2]


def test_cost_vs_oracle_is_none_when_the_oracle_costs_nothing():
    """A zero oracle cost (a scenario the oracle balances for free) has no ratio: None
    (results.md '–'), not a ZeroDivisionError that loses the whole summary."""
    runs = [_run("oracle", s, system_cost=0.0) for s in range(2)]
    runs += [_run("heuristic", s, system_cost=c) for s, c in enumerate((3.0, 5.0))]
    summary = evaluate.summarize(runs, ["oracle", "heuristic"], ["emergency"])["emergency"]
    assert summary["heuristic"]["system_cost_vs_oracle"] is None
    assert summary["oracle"]["system_cost_vs_oracle"] is None
    assert summary["heuristic"]["kpis"]["system_cost"]["mean"] == 4.0


def test_cost_vs_oracle_is_none_when_the_policy_misses_an_episodes_cost():
    """A policy whose cost is null on a seed the oracle ran has its mean over fewer
    seeds than the oracle's: no ratio (the docstring's 'either misses an episode's
    cost')."""
    runs = [_run("oracle", s, system_cost=10.0) for s in range(2)]
    runs += [_run("heuristic", 0, system_cost=20.0), _run("heuristic", 1, system_cost=None)]
    summary = evaluate.summarize(runs, ["oracle", "heuristic"], ["emergency"])["emergency"]
    assert summary["heuristic"]["kpis"]["system_cost"]["n_null"] == 1
    assert summary["heuristic"]["system_cost_vs_oracle"] is None
    assert summary["oracle"]["system_cost_vs_oracle"] == 1.0


def test_an_infinite_kpi_is_flagged_and_left_out_of_the_mean_like_nan():
    """An infinite KPI is as broken as a NaN one: listed by nonfinite_keys, left out of
    the mean (not a mean of inf) and out of the paired differences."""
    assert evaluate.nonfinite_keys({"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1.0,
                                    "e": None, "f": True, "g": np.float64(np.inf)}) == [
        "a", "b", "c", "g"]
    runs = [_run("heuristic", 0, system_cost=10.0), _run("heuristic", 1, system_cost=math.inf),
            _run("learned", 0, system_cost=8.0), _run("learned", 1, system_cost=9.0)]
    nonfinite = [{"policy": "heuristic", "scenario": "emergency", "seed": 1,
                  "metrics": ["system_cost"]}]
    summary = evaluate.summarize(runs, ["heuristic", "learned"], ["emergency"], nonfinite)
    cost = summary["emergency"]["heuristic"]["kpis"]["system_cost"]
    assert (cost["mean"], cost["n"], cost["n_null"], cost["n_nonfinite"]) == (10.0, 1, 1, 1)
    paired = summary["emergency"]["learned"]["system_cost_vs_heuristic"]
    assert (paired["mean_diff"], paired["n_pairs"], paired["unpaired_seeds"]) == (-2.0, 1, [1])


def test_paired_relative_is_none_when_the_baseline_gains_on_average():
    """system_cost can be negative (batteries ending fuller than they started: stored
    energy gained). A ratio to a negative mean flips its sign (2 $ cheaper would read
    as +10 %), so ``relative`` is None there; the difference itself stays."""
    runs = [_run("heuristic", s, system_cost=c) for s, c in enumerate((-10.0, -30.0))]
    runs += [_run("learned", s, system_cost=c) for s, c in enumerate((-12.0, -32.0))]
    paired = evaluate.paired_difference(runs, "emergency", "learned", "heuristic")
    assert paired["mean_diff"] == pytest.approx(-2.0) and paired["relative"] is None


def test_results_md_prints_the_paired_difference_with_its_95_percent_interval(tmp_path):
    """The line under each table: mean difference, [mean − ci95, mean + ci95], relative
    and number of pairs (the same costs as test_summary_has_confidence_intervals_...:
    −2/3 ± 4.3027·√(1/3)/√3 = −0.667 ± 1.434, relative −(2/3)/12)."""
    costs = {"heuristic": (10.0, 12.0, 14.0), "learned": (9.0, 11.0, 14.0)}
    runs = [_run(p, s, system_cost=c) for p, cs in costs.items() for s, c in enumerate(cs)]
    summary = evaluate.summarize(runs, ["heuristic", "learned"], ["emergency"])
    md = tmp_path / "results.md"
    evaluate.write_markdown(md, summary, {}, [], {})
    assert ("system_cost minus the heuristic's, paired by seed (mean [95 % CI] (relative), "
            "episodes): learned -0.667 $ [-2.101, +0.768] (-5.56 %), n 3.") in md.read_text()



def test_results_md_cells_are_mean_sample_std_and_the_cost_ratio(tmp_path):
    """A skewed sample (1, 2, 9): the cell is its mean ± sample std (4 ± √19), not the
    median or the population std, and cost / oracle the ratio of the means to 4
    decimals (4 / (7/3) = 1.7143)."""
    runs = [_run("oracle", s, system_cost=c) for s, c in enumerate((1.0, 2.0, 4.0))]
    runs += [_run("heuristic", s, system_cost=c) for s, c in enumerate((1.0, 2.0, 9.0))]
    summary = evaluate.summarize(runs, ["oracle", "heuristic"], ["emergency"])
    cost = summary["emergency"]["heuristic"]["kpis"]["system_cost"]
    assert (cost["mean"], cost["n"]) == (4.0, 3) and cost["std"] == pytest.approx(math.sqrt(19))
    md = tmp_path / "results.md"
    evaluate.write_markdown(md, summary, {}, [], {})
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")
            for line in md.read_text().splitlines() if line.startswith("| ")}
    column = ["policy", "episodes", *evaluate.TABLE_KPIS, "cost / oracle"].index
    assert rows["heuristic"][column("system_cost")] == "4.000 ± 4.359"
    assert rows["heuristic"][column("cost / oracle")] == "1.7143"
    assert rows["oracle"][column("system_cost")] == "2.333 ± 1.528"
    assert rows["oracle"][column("cost / oracle")] == "1.0000"


def test_an_interrupted_runs_file_counts_its_nonfinite_kpis(tmp_path, monkeypatch):
    """The rescue file of a stopped run (results-interrupted/-failed.json) summarizes
    what finished like results.json: a NaN cost is null, left out of the mean and
    counted in ``n_nonfinite``, with its warning note."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runs = [_run("heuristic", 0, system_cost=10.0), _run("heuristic", 1, system_cost=math.nan)]
    nonfinite = [{"policy": "heuristic", "scenario": "emergency", "seed": 1,
                  "metrics": ["system_cost"]}]
    path, problem = evaluate.save_interrupted(runs, ["heuristic"], ["emergency"], {}, {},
                                              nonfinite=nonfinite)
    assert problem is None and path.parent == tmp_path
    summary = json.loads(path.read_text())["summary"]
    cost = summary["scenarios"]["emergency"]["heuristic"]["kpis"]["system_cost"]
    assert (cost["mean"], cost["n"], cost["n_null"], cost["n_nonfinite"]) == (10.0, 1, 1, 1)
    assert summary["nonfinite"] == nonfinite and summary["episodes_finished"] == 2
    assert summary["notes"][1].startswith(
        "warning: heuristic / emergency / seed 1: non-finite system_cost")


def test_results_md_shows_counts_whole_and_large_costs_to_one_decimal(tmp_path):
    """A count KPI (ints in every episode) prints whole numbers without decimals and a
    mean between them to 0.1; a cost of 1000 $ or more to one decimal."""
    runs = [_run("heuristic", s, system_cost=c, blocked_attempts=b, executed_violations=0)
            for s, c, b in ((0, 1000.0, 2), (1, 3000.0, 3))]
    summary = evaluate.summarize(runs, ["heuristic"], ["emergency"])
    md = tmp_path / "results.md"
    evaluate.write_markdown(md, summary, {}, [], {})
    row = next(line.rstrip(" |").split(" | ") for line in md.read_text().splitlines()
               if line.startswith("| heuristic"))
    column = ["policy", "episodes", *evaluate.TABLE_KPIS].index
    assert row[column("blocked_attempts")] == "2.5 ± 0.7"
    assert row[column("executed_violations")] == "0 ± 0"
    assert row[column("system_cost")] == "2000.0 ± 1414.2"


def test_results_md_reports_the_nadir_against_the_first_ufls_stage(tmp_path):
    """Code review: DESIGN §3's thresholds to report against include ERCOT's first UFLS
    stage (59.3 Hz, metrics.UFLS_FIRST_STAGE_HZ), which nothing reported. Under each
    table: each policy's lowest nadir minus 59.3 Hz and the episodes below it (NaN
    nadirs left out); the no-DER line gives its nadir's margin too. The KPI dict is
    unchanged (the margin is derived from frequency_nadir_hz)."""
    from gridswarm_env.metrics import KPI_KEYS, UFLS_FIRST_STAGE_HZ

    assert UFLS_FIRST_STAGE_HZ == 59.3 and not any("ufls" in k for k in KPI_KEYS)
    nadirs = {"heuristic": (59.9, 59.72, 59.8), "random": (59.4, 59.25, math.nan)}
    runs = [_run(p, s, frequency_nadir_hz=v) for p, vs in nadirs.items()
            for s, v in enumerate(vs)]
    summary = evaluate.summarize(runs, ["heuristic", "random"], ["emergency"])
    cf = {"emergency": {"seed": 0, "frequency_nadir_hz": 59.35, "frequency_zenith_hz": 60.0,
                        "seconds_outside_band": 50.0}}
    md = tmp_path / "results.md"
    evaluate.write_markdown(md, summary, {}, [], cf, runs=runs)
    text = md.read_text()
    assert ("Nadir against ERCOT's first under-frequency load-shedding stage (59.3 Hz), "
            "lowest nadir over the episodes minus 59.3 Hz (negative: load shed): heuristic "
            "+0.420 Hz; random -0.050 Hz (below it in 1 of 2 episodes).") in text
    assert "nadir 59.350 Hz (+0.050 Hz from the 59.3 Hz first UFLS stage)" in text
    evaluate.write_markdown(md, summary, {}, [], {})         # no episodes given: no line
    assert "UFLS" not in md.read_text() and "load-shedding" not in md.read_text()


def test_ci95_of_a_single_value_is_none():
    """``evaluate.ci95_halfwidth`` of one value is None (no spread is known), as documented,
    not NaN from a Student t with 0 degrees of freedom (NaN is written as null in
    results.json but breaks arithmetic in a caller)."""
    assert evaluate.ci95_halfwidth(1.0, 1) is None
    assert evaluate.ci95_halfwidth(None, 5) is None
    assert evaluate.ci95_halfwidth(1.0, 2) == pytest.approx(12.706204736 / math.sqrt(2))
