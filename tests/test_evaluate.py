"""evaluate.py as a user runs it: outputs, strict JSON, tensorboard tags, bad arguments."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import demo
import evaluate
from policies.learned import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("price_spike", "solar_surplus", "emergency")
POLICIES = ("heuristic", "random", "oracle")


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _strict_json(text: str):
    def reject(token):
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    proc = _run_cli("--policies", ",".join(POLICIES), "--agents", "10", "--episodes", "1",
                    "--seed", "3", "--out", str(out), "--trust", "hmac", "--no-progress",
                    cwd=tmp_path_factory.getbasetemp())
    return proc, out


def test_cli_end_to_end_writes_every_output(cli_run):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("results.json", "results.md", "cost_vs_oracle.png",
                 *(f"freq_{sc}.png" for sc in SCENARIOS)):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_json_is_strict_and_complete(cli_run):
    _, out = cli_run
    data = _strict_json((out / "results.json").read_text())
    runs = data["runs"]
    assert len(runs) == len(POLICIES) * len(SCENARIOS)
    assert {(r["policy"], r["scenario"]) for r in runs} == {
        (p, s) for p in POLICIES for s in SCENARIOS}
    from gridswarm_env.metrics import KPI_KEYS

    for r in runs:
        assert r["seed"] == 3 and r["n_agents"] == 10
        assert set(KPI_KEYS) <= set(r["metrics"])
    summary = data["summary"]["scenarios"]
    for sc in SCENARIOS:
        assert summary[sc]["oracle"]["system_cost_vs_oracle"] == pytest.approx(1.0)
        for pol in POLICIES:
            cost = summary[sc][pol]["kpis"]["system_cost"]
            assert cost["n"] == 1 and cost["std"] is None   # undefined for one value
            expected = [r["metrics"]["system_cost"] for r in runs
                        if r["policy"] == pol and r["scenario"] == sc][0]
            assert cost["mean"] == pytest.approx(expected)
    no_der = data["summary"]["no_der_counterfactual"]
    assert set(no_der) == set(SCENARIOS)
    assert no_der["emergency"]["frequency_nadir_hz"] < 59.5   # unassisted trip: ~59.35 Hz
    emergency = summary["emergency"]["heuristic"]["kpis"]["frequency_nadir_hz"]["mean"]
    assert emergency > no_der["emergency"]["frequency_nadir_hz"]
    # price_spike never has an event: its latency KPI is null, not NaN
    spike = [r for r in runs if r["scenario"] == "price_spike"][0]
    assert spike["metrics"]["emergency_response_latency_ms"] is None


def test_results_markdown_has_a_table_per_scenario(cli_run):
    _, out = cli_run
    text = (out / "results.md").read_text()
    for sc in SCENARIOS:
        assert f"## {sc}" in text
    assert "cost / oracle" in text
    # one episode per policy: a mean without a (meaningless) "± 0.000" spread
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "policy" not in ln]
    assert rows and not any("±" in ln for ln in rows)
    for pol in POLICIES:
        assert f"| {pol} |" in text



def test_every_policys_wall_time_is_in_results_json_and_md(cli_run):
    """Each policy's wall time per scenario is saved (summary.scenarios.<sc>.<policy>.
    wall_time_s) and printed under its table ("Wall time: heuristic 1.2 s, ...")."""
    _, out = cli_run
    summary = _strict_json((out / "results.json").read_text())["summary"]["scenarios"]
    walls = {sc: [summary[sc][pol]["wall_time_s"] for pol in POLICIES] for sc in SCENARIOS}
    assert all(isinstance(w, float) and w >= 0.0 for ws in walls.values() for w in ws), walls
    lines = [ln for ln in (out / "results.md").read_text().splitlines()
             if ln.startswith("Wall time: ")]
    assert len(lines) == len(SCENARIOS)
    for sc, line in zip(SCENARIOS, lines, strict=True):
        assert line == "Wall time: " + ", ".join(
            f"{pol} {w:.1f} s" for pol, w in zip(POLICIES, walls[sc], strict=True)) + "."

def test_tensorboard_scalars_are_namespaced(cli_run):
    _, out = cli_run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for sc in SCENARIOS:
        for pol in POLICIES:
            assert f"eval/{sc}/{pol}/system_cost" in tags
            assert f"eval/{sc}/{pol}/frequency_nadir_hz" in tags
    assert "eval/price_spike/heuristic/emergency_response_latency_ms" not in tags   # None


def test_tensorboard_scalars_are_the_results_json_metrics(cli_run):
    """docs/evaluation.md: every number of an episode's ``metrics`` in results.json, the
    same value, at step e = seed - --seed (``--seed 3``: seed 3 at step 0)."""
    import math

    from tests.tensorboard_events import scalar_points

    _, out = cli_run
    points = scalar_points(out / "tensorboard")
    expected = {}
    for run in _strict_json((out / "results.json").read_text())["runs"]:
        for key, value in run["metrics"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                tag = f"eval/{run['scenario']}/{run['policy']}/{key}"
                expected[tag] = [(run["seed"] - 3, value)]
    assert set(points) == set(expected)
    for tag, [(step, value)] in expected.items():
        [(got_step, got)] = points[tag]
        assert got_step == step == 0
        assert math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-9), tag   # float32


@pytest.mark.parametrize("args, words", [
    (["--policies", "bogus"], "unknown policy 'bogus'"),
    (["--scenarios", "nowhere"], "unknown scenario 'nowhere'"),
    # the integer flags' wording, shared by every command: test_cli_consistency.py;
    # argparse's own int said only "invalid int value: 'abc'", not what is allowed
    (["--episodes", "abc"], "--episodes 'abc': expected an integer >= 1"),
    (["--seed", "1e3"], "--seed '1e3': expected an integer >= 0"),
    (["--crypto-threads", "x"], "--crypto-threads 'x': expected an integer from 1 to"),
    (["--trust", "rsa"], "invalid choice"),
    (["--limits", "/nonexistent/limits.toml"], "does not exist"),
    (["--policies", "runs/missing_model.zip"], "does not exist"),
])
def test_bad_arguments_exit_nonzero_with_one_line(args, words, capsys, tmp_path):
    status = evaluate.main([*args, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status != 0
    assert words in err
    assert len(err.splitlines()) == 1 and err.startswith("evaluate.py: error:")
    assert not (tmp_path / "o" / "results.json").exists()


def test_bad_arguments_from_the_shell_have_no_traceback(tmp_path):
    for args in (["--policies", "heuristic,nope"], ["--agents", "0"]):
        proc = _run_cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().startswith("evaluate.py: error:")


def test_learned_without_a_model_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(evaluate, "pretrained_model", lambda: None)
    names, notes = evaluate.resolve_policies(None)
    assert names == list(evaluate.DEFAULT_POLICIES)
    assert notes and "learned" in notes[0]
    assert "gridswarm_ppo_dagger.zip" in notes[0]   # the file missing, not just its folder
    with pytest.raises(evaluate.UsageError, match="no policy left"):
        evaluate.resolve_policies("learned")


def test_a_model_named_without_zip_is_a_policy_as_make_policy_takes_it(tmp_path, monkeypatch):
    """Review: ``--policies m3`` with ``m3.zip`` beside it (``python -m train --out m3``
    writes it) was refused as an unknown policy, while demo.py and make_policy load it."""
    shutil.copyfile(DEFAULT_MODEL, tmp_path / "m3.zip")
    monkeypatch.chdir(tmp_path)
    names, _notes = evaluate.resolve_policies("heuristic,m3")
    assert names == ["heuristic", "m3"]
    with pytest.raises(evaluate.UsageError, match="unknown policy 'm4'"):
        evaluate.resolve_policies("m4")


def test_json_safe_converts_non_finite_and_numpy():
    data = {"a": float("nan"), "b": np.float64(np.inf), "c": np.int64(3), "d": [np.float32(0.5)],
            "e": {"f": np.bool_(True), "g": None}, "h": np.array([1.0, np.nan])}
    safe = evaluate.json_safe(data)
    assert safe == {"a": None, "b": None, "c": 3, "d": [0.5], "e": {"f": True, "g": None},
                    "h": [1.0, None]}
    json.dumps(safe, allow_nan=False)


def test_summary_statistics_and_oracle_ratio():
    runs = [{"policy": p, "scenario": "s", "seed": i, "n_agents": 1,
             "metrics": {"system_cost": c, "stabilization_time_s": st, "scenario": "s"}}
            for p, i, c, st in (("oracle", 0, 10.0, 1.0), ("oracle", 1, 30.0, None),
                                ("heuristic", 0, 30.0, 2.0), ("heuristic", 1, 50.0, 4.0))]
    summary = evaluate.summarize(runs, ["oracle", "heuristic"], ["s"])["s"]
    cost = summary["heuristic"]["kpis"]["system_cost"]
    assert cost["mean"] == 40.0 and cost["std"] == pytest.approx(math.sqrt(200.0))
    assert summary["heuristic"]["system_cost_vs_oracle"] == pytest.approx(2.0)
    assert summary["oracle"]["kpis"]["stabilization_time_s"] == {
        "mean": 1.0, "std": None, "ci95": None, "n": 1, "n_null": 1, "n_nonfinite": 0,
        "integer": False}
    assert "scenario" not in summary["oracle"]["kpis"]


def test_a_model_for_other_action_levels_is_refused_before_any_episode(tmp_path, capsys):
    """User-path review: a model trained for another action space passed the up-front
    check and failed with a traceback after the other policies' episodes had run."""
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    from gridswarm_env.env import OBS_DIM

    class Tiny(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        action_space = gym.spaces.MultiDiscrete([5, 3])

    path = tmp_path / "levels53.zip"
    MaskablePPO("MlpPolicy", Tiny(), n_steps=8, batch_size=8).save(path)
    status = evaluate.main(["--policies", f"heuristic,{path}", "--scenarios", "emergency",
                            "--episodes", "1", "--agents", "5", "--out", str(tmp_path / "o"),
                            "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("evaluate.py: error:")
    assert "MultiDiscrete([5, 3])" in err and "MultiDiscrete([21, 11])" in err
    assert not (tmp_path / "o").exists()


def test_a_model_with_non_finite_weights_is_refused_before_any_episode(tmp_path, capsys):
    """RL review: a diverged run's NaN weights loaded fine, then evaluate.py (and demo.py)
    died with a torch traceback at the first action, after the heuristic's episodes."""
    import torch

    from policies.learned import DEFAULT_MODEL, LearnedPolicy, load_maskable_ppo

    model = load_maskable_ppo(DEFAULT_MODEL)
    name, tensor = next((k, v) for k, v in model.policy.state_dict().items()
                        if k.endswith("weight"))
    with torch.no_grad():
        tensor.view(-1)[3] = math.nan
    path = tmp_path / "diverged.zip"
    model.save(path)
    with pytest.raises(ValueError, match=rf"1 non-finite value\(s\) in {name}"):
        LearnedPolicy(path)
    with pytest.raises(ValueError, match="non-finite"):
        LearnedPolicy.from_model(model)
    status = evaluate.main(["--policies", f"heuristic,{path}", "--scenarios", "price_spike",
                            "--episodes", "1", "--agents", "5", "--out", str(tmp_path / "o"),
                            "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "diverged.zip" in err and "non-finite" in err
    assert not (tmp_path / "o").exists()


def test_a_model_path_is_one_tensorboard_tag_level(tmp_path):
    """RL review: a policy given as a path made tags like
    eval/solar_surplus//tmp/runs/best_model.zip/system_cost (its slashes new levels)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from policies.learned import DEFAULT_MODEL

    assert evaluate.main(["--policies", str(DEFAULT_MODEL), "--scenarios", "price_spike",
                          "--episodes", "1", "--agents", "5", "--out", str(tmp_path / "o"),
                          "--no-progress"]) == 0
    acc = EventAccumulator(str(tmp_path / "o" / "tensorboard"))
    acc.Reload()
    name = evaluate.tag_names([str(DEFAULT_MODEL)])[str(DEFAULT_MODEL)]
    assert "/" not in name and name.endswith(DEFAULT_MODEL.name)
    tags = set(acc.Tags()["scalars"])
    assert f"eval/price_spike/{name}/system_cost" in tags
    assert all(t.count("/") == 3 for t in tags if t.startswith("eval/price_spike/"))


def test_model_paths_that_sanitize_alike_keep_apart_tags():
    tags = evaluate.tag_names(["heuristic", "runs/a_b.zip", "runs_a/b.zip", "runs_a_b.zip"])
    assert tags == {"heuristic": "heuristic", "runs/a_b.zip": "runs_a_b.zip",
                    "runs_a/b.zip": "runs_a_b.zip_2", "runs_a_b.zip": "runs_a_b.zip_3"}


def test_crypto_threads_follow_demo_rule_and_say_what_is_allowed(tmp_path, capsys):
    """Review: ``--crypto-threads 300`` was refused as "expected an integer >= 1" (which
    300 is; the real limit was ``EnvConfig``'s 256), while demo.py allows 1 to the usable
    cores. Both now share :func:`policies.cli_checks.check_crypto_threads`."""
    from policies.cli_checks import max_crypto_threads

    cores = max_crypto_threads()
    allowed = f"expected an integer from 1 to {cores} (the cores this process may use)"
    for bad in (0, cores + 1, 300):
        out = tmp_path / f"out{bad}"
        assert evaluate.main(["--crypto-threads", str(bad), "--policies", "random",
                              "--scenarios", "emergency", "--episodes", "1",
                              "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--crypto-threads {bad}: {allowed}" in err and ">= 1" not in err
        assert not out.exists()
        with pytest.raises(ValueError, match=rf"^--crypto-threads {bad}: {re.escape(allowed)}"):
            demo.DemoOptions(crypto_threads=bad)


def test_crypto_threads_take_numpy_integers_as_the_other_counts_do():
    """Fuzzing review (session 23): ``evaluate.evaluate(crypto_threads=np.int64(1))`` was
    refused as "expected an integer from 1 to 2", which it is (``EnvConfig`` and
    evaluate()'s episodes, seed and n_agents take numpy integers); bools stay refused."""
    import numpy as np

    from policies.cli_checks import check_crypto_threads

    for value in (np.int64(1), np.uint8(1), np.int8(1)):
        got = check_crypto_threads(value)
        assert got == 1 and type(got) is int
    for bad in (np.True_, True, np.float64(1.0), 1.0, np.int64(0)):
        with pytest.raises(ValueError, match=r"expected an integer from 1 to \d+ \(the cores"):
            check_crypto_threads(bad)
    threads = demo.DemoOptions(crypto_threads=np.int64(1)).crypto_threads
    assert threads == 1 and type(threads) is int     # --json records it


def test_stale_outputs_removed_are_the_documented_ones(tmp_path):
    """README / --out help: freq_<scenario>.png of registered scenarios not run,
    earlier event files and, when no oracle ran, an earlier cost_vs_oracle.png; nothing
    else (review: a user's freq_mine.png was removed by a re-run)."""
    names = ("freq_emergency.png", "freq_price_spike.png", "freq_mine.png",
             "freq_solar_surplus.png.bak", "cost_vs_oracle.png", "notes.txt", "results.md")
    for name in names:
        (tmp_path / name).write_text("x")
    event = tmp_path / "old.tfevents"
    event.write_text("x")
    removed = evaluate.remove_stale_outputs(tmp_path, ["emergency"], {event}, cost_plot=True)
    assert sorted(p.name for p in removed) == ["freq_price_spike.png", "old.tfevents"]
    removed = evaluate.remove_stale_outputs(tmp_path, ["emergency"], set(), cost_plot=False)
    assert [p.name for p in removed] == ["cost_vs_oracle.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "freq_emergency.png", "freq_mine.png", "freq_solar_surplus.png.bak", "notes.txt",
        "results.md"]


def _model_with_levels(path: Path, nvec: list[int], env_settings: dict | None = None) -> Path:
    """An untrained MaskablePPO model acting in ``MultiDiscrete(nvec)``, saved at ``path``
    with the environment settings a training run stores (``gridswarm_env_settings``)."""
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    from gridswarm_env.env import OBS_DIM

    class Spaces(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        action_space = gym.spaces.MultiDiscrete(nvec)

    model = MaskablePPO("MlpPolicy", Spaces(), n_steps=8, batch_size=8, device="cpu",
                        policy_kwargs={"net_arch": [8]})
    if env_settings is not None:
        model.gridswarm_env_settings = env_settings
    model.save(path)
    return path


def test_a_model_for_other_levels_is_refused_naming_the_flag_and_the_fix(tmp_path, capsys):
    """Fresh-user review: a model trained with ``--config`` of 11 power levels, given to
    demo.py without it, was refused as "model 'm11.zip' was trained for
    MultiDiscrete([11, 11]) actions; this environment expects MultiDiscrete([21, 11])":
    no flag (demo.py), nothing said of what to do. Now both command lines name the flag,
    the model, both action spaces, the levels to play it with and the training run's
    --config file (stored in the model by python -m train)."""
    levels = tmp_path / "l11.toml"
    levels.write_text("[market]\nn_power_levels = 11\n")
    model = _model_with_levels(tmp_path / "m11.zip", [11, 11],
                               {"scenario": "all", "env_config_file": str(levels)})
    tail = (f"model {str(model)!r} was trained for MultiDiscrete([11, 11]) actions; this "
            "environment expects MultiDiscrete([21, 11]) (n_power_levels, n_price_levels): "
            "play it with the settings it was trained with, n_power_levels = 11 and "
            "n_price_levels = 11 ([market] of a --config FILE; its training run used "
            f"--config {str(levels)!r})")
    assert demo.main(["--agents", "5", "--no-live", "--steps", "1", "--policy",
                      str(model)]) == 2
    assert capsys.readouterr().err == f"demo.py: error: --policy: {tail}\n"
    out = tmp_path / "o"
    assert evaluate.main(["--policies", f"heuristic,{model}", "--scenarios", "emergency",
                          "--episodes", "1", "--agents", "5", "--out", str(out),
                          "--no-progress"]) == 2
    assert capsys.readouterr().err == f"evaluate.py: error: --policies: {tail}\n"
    assert not out.exists()
    # the fix works: the same --config plays it
    assert demo.main(["--agents", "5", "--no-live", "--steps", "1", "--policy", str(model),
                      "--config", str(levels)]) == 0, capsys.readouterr().err


def test_a_model_for_other_levels_points_to_its_record_or_to_the_defaults(tmp_path):
    """Without the file in the model, its training record (``m.json`` beside it, as
    python -m train writes it) is named when it holds the settings; a model of the default
    levels in an environment of other levels is told to leave them out of --config."""
    from gridswarm_env.config import EnvConfig, MarketConfig
    from policies.learned import LearnedPolicy

    model = _model_with_levels(tmp_path / "m.zip", [11, 5])
    record = model.with_suffix(".json")
    record.write_text(json.dumps({"env_config_toml": "[market]\nn_power_levels = 11\n"
                                                     "n_price_levels = 5\n"}))
    with pytest.raises(ValueError) as refused:
        LearnedPolicy(model).check_action_levels([21, 11])
    assert str(refused.value).endswith(
        "n_power_levels = 11 and n_price_levels = 5 ([market] of a --config FILE; its "
        f"training record {str(record)!r} holds the settings it ran with as "
        "env_config_toml: save that text as FILE)")
    record.unlink()
    with pytest.raises(ValueError) as refused:
        LearnedPolicy(model).check_action_levels([21, 11])
    assert str(refused.value).endswith("n_power_levels = 11 and n_price_levels = 5 ([market] "
                                       "of a --config FILE)")
    default = _model_with_levels(tmp_path / "d.zip", [21, 11])
    eleven = EnvConfig(market=MarketConfig(n_power_levels=11)).market
    with pytest.raises(ValueError) as refused:
        LearnedPolicy(default).check_action_levels([eleven.n_power_levels,
                                                    eleven.n_price_levels])
    assert str(refused.value).endswith("n_power_levels = 21 and n_price_levels = 11 (the "
                                       "defaults: a --config FILE without them in [market])")
