"""evaluate.py as the source of published numbers: which model produced them, what the
statistics are, broken episodes kept visible, finished work kept when a run fails."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

import evaluate
import policies.rollout
from policies.cli_checks import Note
from policies.learned import DEFAULT_MODEL


def _small(policies: str, out: Path, scenarios: str = "emergency", episodes: int = 1,
           agents: int = 5, counterfactual: bool = False) -> dict:
    return evaluate.evaluate(policies, scenarios, episodes, 0, agents, out, trust="hmac",
                             progress=False, counterfactual=counterfactual)


def _main_one_episode(policies: str, out: Path) -> int:
    return evaluate.main(["--policies", policies, "--scenarios", "emergency", "--episodes",
                          "1", "--agents", "3", "--trust", "hmac", "--out", str(out),
                          "--no-progress"])


def test_a_model_is_loaded_once_and_named_by_the_hash_of_what_was_loaded(tmp_path,
                                                                        monkeypatch):
    """RL review: each scenario re-loaded the model file, so a file rewritten during the
    run (a training run's best_model.zip) made scenarios use different models, and
    results.json / results.md named the policy only as 'learned' or a path: no way to
    tell which weights produced the numbers. Here the file is corrupted after the first
    episode: the old code failed mid-run (finished episodes lost); now every episode is
    played by the model loaded at the start, whose SHA-256 the outputs record."""
    model = tmp_path.resolve() / "m.zip"   # as given = the file loaded
    shutil.copyfile(DEFAULT_MODEL, model)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    original = policies.rollout.run_episode
    calls = []

    def corrupt_after_first(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            model.write_bytes(b"not a model any more")
        return result

    monkeypatch.setattr(policies.rollout, "run_episode", corrupt_after_first)
    out = tmp_path / "o"
    with pytest.warns(Note, match="this run: 5 agents"):   # the 100-agent model at 5
        result = _small(f"heuristic,{model}", out, scenarios="emergency,price_spike")
    assert len(result["runs"]) == 4
    details = result["summary"]["config"]["policy_details"]
    assert details[str(model)]["model_sha256"] == sha
    assert details[str(model)]["model_file"] == str(model.resolve())
    assert details[str(model)]["model_bytes"] == DEFAULT_MODEL.stat().st_size
    assert details["heuristic"]["class"] == "policies.heuristic.HeuristicPolicy"
    assert "model_sha256" not in details["heuristic"]
    assert result["summary"]["config"]["seeds"] == [0]
    assert result["summary"]["config"]["provenance"]["gridswarm_version"]
    md = (out / "results.md").read_text()
    # the path once (review: "- model /tmp/x/model.zip: /tmp/x/model.zip (sha256 …"), and
    # how it acted (RL review: results.md said nothing when a model acted greedily, while
    # its training rollouts had sampled)
    assert (f"- model {model}: sha256 {sha}, {DEFAULT_MODEL.stat().st_size:,} bytes, "
            "greedy actions\n") in md
    assert f"{model}: {model}" not in md
    assert "- statistics: mean ± sample standard deviation (ddof 1)" in md
    assert "- code: gridswarm " in md


def test_the_limits_hash_is_of_the_bytes_that_were_parsed(tmp_path, monkeypatch):
    """Review: evaluate.py parsed the --limits file, then opened it again to hash it
    (file_sha256), so a file replaced between the two reads was named by the hash of
    bytes that were never used. Here the file is replaced right after it is first
    opened: the old code recorded the replacement's hash; now the file is read once and
    the recorded hash is that of the bytes parsed."""
    limits = tmp_path / "limits.toml"
    parsed = b"[battery]\nsoc_min = 0.2\n"
    limits.write_bytes(parsed)
    later = tmp_path / "later.toml"
    later.write_bytes(b"[battery]\nsoc_min = 0.3\n")
    real_open = Path.open
    opened = []

    def open_then_replace(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self == limits and not opened:   # the open handle keeps the first bytes
            opened.append(self)
            later.replace(limits)
        return handle

    monkeypatch.setattr(Path, "open", open_then_replace)
    out = tmp_path / "o"
    result = evaluate.evaluate("heuristic", "emergency", 1, 0, 5, out, trust="hmac",
                               limits=str(limits), progress=False, counterfactual=False)
    assert opened, "the limits file was not opened through Path.open"
    sha = hashlib.sha256(parsed).hexdigest()
    assert result["summary"]["config"]["provenance"]["limits_sha256"] == sha
    assert f"{limits} (sha256 {sha})" in (out / "results.md").read_text()


def test_the_command_line_reads_the_limits_file_once(tmp_path, monkeypatch):
    """Review: evaluate.py's main read --limits to check the arguments, then evaluate()
    read the file again to run, so a file replaced in between was run on, and named by
    the hash of, bytes that were never checked. Here the file is replaced right after
    its first read: the old code read it twice and recorded the replacement's hash; now
    main hands what it read to the run."""
    import gridswarm_env.kernel

    limits = tmp_path / "limits.toml"
    checked = b"[battery]\nsoc_min = 0.2\n"
    limits.write_bytes(checked)
    real = gridswarm_env.kernel.read_toml_bytes
    reads = []

    def read_then_replace(path, what):
        result = real(path, what)
        reads.append(str(path))
        limits.write_bytes(b"[battery]\nsoc_min = 0.3\n")
        return result

    monkeypatch.setattr(gridswarm_env.kernel, "read_toml_bytes", read_then_replace)
    out = tmp_path / "o"
    assert evaluate.main(["--policies", "heuristic", "--scenarios", "emergency", "--episodes",
                          "1", "--agents", "5", "--trust", "hmac", "--out", str(out),
                          "--no-progress", "--limits", str(limits)]) == 0
    assert reads == [str(limits)]
    config = json.loads((out / "results.json").read_text())["summary"]["config"]
    sha = hashlib.sha256(checked).hexdigest()
    assert config["limits"] == str(limits)
    assert config["provenance"]["limits_sha256"] == sha
    assert f"{limits} (sha256 {sha})" in (out / "results.md").read_text()
    assert config["limits_source"] == "file"
    assert config["limits_values"]["battery"]["soc_min"] == 0.2   # the bytes parsed, not 0.3


def test_in_memory_limits_are_recorded_by_value_not_as_a_file_name(tmp_path):
    """Undone last pass: ``evaluate(limits={...})`` recorded ``str(dict)`` under
    ``limits``, where a file's path goes, and results.md printed it as if it named a
    file. Now ``limits`` is None for in-memory limits (as ``limits_path`` says),
    ``limits_source`` says where they came from, and ``limits_values`` holds the limits
    used (JSON, round-trips through ``Limits.from_dict``) for every source."""
    from gridswarm_env.kernel import Limits

    given = {"battery": {"soc_min": 0.25}, "agents": {"ev_000": {"soc_min": 0.4}}}
    records = {}
    for name, limits in (("memory", given), ("limits-object", Limits.from_dict(given)),
                         ("defaults", None)):
        out = tmp_path / name
        evaluate.evaluate(["heuristic"], ["solar_surplus"], 1, 0, 5, out, trust="hmac",
                          limits=limits, progress=False)
        records[name] = json.loads((out / "results.json").read_text())["summary"]["config"]
        records[name]["md"] = (out / "results.md").read_text()
    for name in ("memory", "limits-object"):
        config = records[name]
        assert config["limits"] is None and config["limits_source"] == "in-memory"
        assert Limits.from_dict(config["limits_values"]) == Limits.from_dict(given)
        assert "in-memory limits given to evaluate()" in config["md"]
        assert "{'battery'" not in config["md"]
    assert records["defaults"]["limits_source"] == "defaults"
    assert Limits.from_dict(records["defaults"]["limits_values"]) == Limits()


def test_a_failure_mid_run_keeps_the_finished_episodes(tmp_path, capsys, monkeypatch):
    """RL review: an error during an episode (an oracle LP that HiGHS does not solve, a
    policy bug) ended evaluate.py with a traceback and threw away every finished
    episode; Ctrl-C saved them, an error did not."""
    original = policies.rollout.run_episode
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("oracle LP not solved (HiGHS status 2):\nThe problem is infeasible")
        return original(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", fail_second)
    out = tmp_path / "o"
    status = _main_one_episode("heuristic,random", out)
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("evaluate.py: error: failed during heuristic / emergency / seed 0 "
                          "(RuntimeError: oracle LP not solved (HiGHS status 2): The problem "
                          "is infeasible) after 0 of 2 episodes")
    Path(err.split("traceback is saved in '")[1].split("'")[0]).unlink()
    calls.clear()

    def fail_third(*args, **kwargs):   # baseline, heuristic ok, random fails
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("policy bug")
        return original(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", fail_third)
    status = _main_one_episode("heuristic,random", out)
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1
    assert "failed during random / emergency / seed 0 (ValueError: policy bug) after 1 of 2 " \
           "episodes; its results and the traceback are saved in '" in err
    assert err.endswith(f"--out {str(out)!r} was left as it was")
    saved = Path(err.split("are saved in '")[1].split("'")[0])
    assert saved.name.startswith("results-failed-")
    data = json.loads(saved.read_text())
    saved.unlink()
    assert [(r["policy"], r["seed"]) for r in data["runs"]] == [("heuristic", 0)]
    failure = data["summary"]["failure"]
    assert failure["during"] == "random / emergency / seed 0"
    assert failure["type"] == "ValueError" and "policy bug" in failure["traceback"]
    assert not out.exists()


def test_a_failure_in_the_first_episode_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """Review: an error before any episode finished printed one line (type and message)
    and saved nothing, so the traceback was gone (before this session's failure handling
    Python printed it). It now goes to results-failed-….json like a later failure's."""
    def policy_bug(*args, **kwargs):
        raise KeyError("deep_inside_the_policy")

    monkeypatch.setattr(policies.rollout, "run_episode", policy_bug)
    out = tmp_path / "o"
    status = _main_one_episode("heuristic", out)
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1
    assert "after 0 of 1 episodes; the traceback is saved in '" in err
    saved = Path(err.split("the traceback is saved in '")[1].split("'")[0])
    data = json.loads(saved.read_text())
    saved.unlink()
    assert saved.name.startswith("results-failed-")
    assert data["runs"] == [] and data["summary"]["episodes_finished"] == 0
    failure = data["summary"]["failure"]
    assert failure["type"] == "KeyError"
    assert "policy_bug" in failure["traceback"] and "deep_inside_the_policy" in failure["traceback"]
    assert not out.exists()


def test_non_finite_kpis_are_flagged_not_silently_averaged_away(tmp_path, monkeypatch):
    """RL review: a NaN KPI (a NaN frequency sample makes nadir and RoCoF NaN for good)
    became null in results.json, like a KPI that is None by design (no event, never
    settled), and the table's mean silently used the other seeds with only '(1 null)'."""
    original = policies.rollout.run_episode
    calls = []

    def nan_cost_on_seed_1(env, policy, seed=None, **kwargs):
        result = original(env, policy, seed=seed, **kwargs)
        calls.append(1)
        if policy.name == "heuristic" and seed == 1:
            result.metrics["system_cost"] = math.nan
        return result

    monkeypatch.setattr(policies.rollout, "run_episode", nan_cost_on_seed_1)
    out = tmp_path / "o"
    result = _small("heuristic,random", out, episodes=2, agents=3)
    summary = result["summary"]
    assert summary["nonfinite"] == [{"policy": "heuristic", "scenario": "emergency", "seed": 1,
                                     "metrics": ["system_cost"]}]
    cost = summary["scenarios"]["emergency"]["heuristic"]["kpis"]["system_cost"]
    assert (cost["n"], cost["n_null"], cost["n_nonfinite"]) == (1, 1, 1)
    assert summary["scenarios"]["emergency"]["random"]["kpis"]["system_cost"][
        "n_nonfinite"] == 0
    paired = summary["scenarios"]["emergency"]["random"]["system_cost_vs_heuristic"]
    assert paired["n_pairs"] == 1 and paired["unpaired_seeds"] == [1]
    md = (out / "results.md").read_text()
    assert "(1 NaN/inf)" in md
    assert ("- note: warning: heuristic / emergency / seed 1: non-finite system_cost (null in "
            "results.json, left out of the means") in md


def test_a_non_finite_no_der_baseline_is_reported_not_a_crash(tmp_path, monkeypatch):
    """Review (session 26): a NaN in the no-DER baseline's KPIs (null in results.json, as
    a broken episode's) made results.md's counterfactual line raise TypeError
    (None - 59.3) after every episode had run: results.json replaced, results.md not
    written (or an earlier run's left beside the new results.json), a traceback. Now the
    line shows NaN/inf and a note names the baseline, as a broken episode is named."""
    original = policies.rollout.run_episode

    def nan_baseline(env, policy, seed=None, **kwargs):
        result = original(env, policy, seed=seed, **kwargs)
        if env.unwrapped.config.shadow:
            result.metrics["frequency_nadir_hz"] = math.nan
        return result

    monkeypatch.setattr(policies.rollout, "run_episode", nan_baseline)
    out = tmp_path / "o"
    result = _small("heuristic", out, counterfactual=True)
    assert result["summary"]["no_der_counterfactual"]["emergency"]["frequency_nadir_hz"] is None
    md = (out / "results.md").read_text()
    assert ("No-DER counterfactual (shadow mode, seed 0): nadir NaN/inf Hz (– from the "
            "59.3 Hz first UFLS stage), zenith ") in md
    assert ("- note: warning: no-DER baseline (shadow) / emergency / seed 0: non-finite "
            "frequency_nadir_hz (null in results.json)") in md
    assert result["summary"]["scenarios"]["emergency"]["heuristic"]["kpis"][
        "frequency_nadir_hz"]["n_nonfinite"] == 0   # the policy's episode is not broken


def test_summary_has_confidence_intervals_and_a_paired_difference():
    """RL review: results.md gave mean ± std without saying so, and nothing compared two
    policies on the seeds they share; a paper needs the interval of the difference."""
    costs = {"heuristic": (10.0, 12.0, 14.0), "learned": (9.0, 11.0, 14.0)}
    runs = [{"policy": p, "scenario": "s", "seed": i, "n_agents": 1,
             "metrics": {"system_cost": c, "stabilization_time_s": None if i else 1.0}}
            for p, cs in costs.items() for i, c in enumerate(cs)]
    summary = evaluate.summarize(runs, ["heuristic", "learned"], ["s"])["s"]
    t975_2 = 4.302652729911275   # Student t, 2 degrees of freedom
    cost = summary["heuristic"]["kpis"]["system_cost"]
    assert cost["ci95"] == pytest.approx(t975_2 * 2.0 / math.sqrt(3.0))
    assert summary["heuristic"]["kpis"]["stabilization_time_s"]["ci95"] is None   # n = 1
    paired = summary["learned"]["system_cost_vs_heuristic"]
    assert paired["mean_diff"] == pytest.approx(-2.0 / 3.0)
    assert paired["std_diff"] == pytest.approx(math.sqrt(1.0 / 3.0))
    assert paired["ci95"] == pytest.approx(t975_2 * math.sqrt(1.0 / 3.0) / math.sqrt(3.0))
    assert paired["relative"] == pytest.approx((-2.0 / 3.0) / 12.0)
    assert paired["n_pairs"] == 3 and paired["unpaired_seeds"] == []
    assert summary["heuristic"]["system_cost_vs_heuristic"] is None


def test_oracle_replan_failures_are_reported(tmp_path, monkeypatch):
    """RL review: when an oracle re-plan failed, the oracle silently kept bidding its
    stale plan; its numbers were published as the perfect-foresight optimum."""
    import policies.oracle as oracle

    original = oracle.solve_balancing
    calls = []

    def fail_replans(problem, first_step=0):
        calls.append(first_step)
        if first_step > 0:
            raise RuntimeError("oracle LP not solved (HiGHS status 4): numerical trouble")
        return original(problem, first_step=first_step)

    monkeypatch.setattr(oracle, "solve_balancing", fail_replans)
    out = tmp_path / "o"
    result = _small("oracle", out, agents=5)
    assert any(c > 0 for c in calls)   # the emergency broadcast makes it re-plan
    warnings = result["summary"]["policy_warnings"]
    assert warnings and warnings[0].startswith("oracle / emergency / seed 0: oracle re-plan "
                                               "failed, kept bidding its previous plan (step ")
    assert warnings[0] in result["summary"]["notes"]
    assert "oracle re-plan failed" in (out / "results.md").read_text()


def test_cost_plot_has_error_bars_of_the_spread_over_seeds(tmp_path, monkeypatch):
    """RL review: cost_vs_oracle.png showed bare means; a reader could not tell a 0.1 %
    gap within the seeds' spread (emergency) from a real one (solar_surplus)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    costs = {"oracle": (10.0, 10.0, 10.0), "heuristic": (12.0, 14.0, 16.0)}
    runs = [{"policy": p, "scenario": "s", "seed": i, "n_agents": 1,
             "metrics": {"system_cost": c}} for p, cs in costs.items() for i, c in enumerate(cs)]
    summary = evaluate.summarize(runs, list(costs), ["s"])
    seen = {}
    original = Axes.bar

    def bar(self, x, height, *args, **kwargs):
        seen[kwargs.get("label")] = (list(height), kwargs.get("yerr"))
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", bar)
    evaluate.plot_costs(tmp_path / "c.png", summary, list(costs))
    assert seen["heuristic"][0] == [pytest.approx(1.4)]
    assert seen["heuristic"][1] == [pytest.approx(0.2)]   # std 2 $ / oracle's 10 $
    assert seen["oracle"][1] == [pytest.approx(0.0)]
