"""The benchmark scripts as a user meets them: ``--json`` paths refused before running,
figures kept when a write fails, bad flags in one line, plain printed lines, help for
every flag, and the dict-API row paired with the array path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["benchmarks.__main__", "benchmarks.bench_learning",
                                    "benchmarks.bench_env"])
def test_benchmarks_refuse_an_unwritable_json_path_before_running(module, tmp_path, capsys,
                                                                  monkeypatch):
    """User-path review: ``python -m benchmarks --json DIR`` ran the whole benchmark, then
    crashed on the write and lost the figures."""
    import importlib

    bench = importlib.import_module(module)
    ran = []
    monkeypatch.setattr(bench, "run", lambda *a, **k: ran.append(a) or {})
    # new-user review (session 27): --json out/ wrote a file named out
    for bad, says in ((tmp_path, "is a directory"),
                      (tmp_path / "missing" / "x.json", "does not exist"),
                      (f"{tmp_path / 'out'}/", "ends with '/', which names a directory")):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(["--json", str(bad)])
        assert exit_info.value.code == 2 and says in capsys.readouterr().err
    assert ran == []


@pytest.mark.parametrize("module", ["benchmarks.__main__", "benchmarks.bench_learning",
                                    "benchmarks.bench_env"])
def test_benchmarks_never_replace_an_existing_json_file_without_overwrite(module, tmp_path,
                                                                          capsys, monkeypatch):
    """New-user review: ``--json FILE`` replaced any existing file (bench_env wrote it with
    no check at all), where demo.py --json now refuses one without --overwrite. Refused
    before anything runs; --overwrite replaces; an empty file is fine."""
    import importlib

    bench = importlib.import_module(module)
    ran = []
    figures = {"env": [], "emergency": {"n_agents": 1, "emergency_response_latency_ms": 20.0,
                                        "within_budget": True}, "load_average": 0.0}
    monkeypatch.setattr(bench, "run", lambda *a, **k: ran.append(a) or figures)
    for name in ("print_table", "print_rows", "describe"):
        if hasattr(bench, name):
            monkeypatch.setattr(bench, name, lambda *a, **k: "")
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--json", str(mine)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "already exists (9 bytes): pass --overwrite" in err
    assert mine.read_text() == "my notes\n" and ran == []
    bench.main(["--json", str(mine), "--overwrite"])
    assert json.loads(mine.read_text())["load_average"] == 0.0
    empty = tmp_path / "empty.json"
    empty.touch()
    bench.main(["--json", str(empty)])
    assert json.loads(empty.read_text())["load_average"] == 0.0
    figures["load_average"] = 0.5   # a re-run replaces its own figures file, no flag
    bench.main(["--json", str(empty)])
    assert json.loads(empty.read_text())["load_average"] == 0.5


@pytest.mark.parametrize("stop, status, says", [
    ("sigterm", 143, "interrupted (SIGTERM)"), ("ctrl-c", 130, "interrupted (Ctrl-C)"),
    ("failed", 1, "error: training failed (PPO diverged)")])
def test_bench_learning_stopped_says_so_in_one_line(stop, status, says, monkeypatch, capsys):
    """Fuzzing review (session 23): ``timeout`` (SIGTERM) or Ctrl-C during
    ``python -m benchmarks.bench_learning`` ended in a traceback whose last line said
    "the unfinished model was saved to /tmp/gridswarm_bench_learning_…/…zip", a
    directory run() had just removed; a failed training was a traceback too."""
    from benchmarks import bench_learning
    from train.errors import Terminated, TrainingError

    error = {"sigterm": Terminated("interrupted by SIGTERM during PPO; the unfinished model "
                                   "was saved to /tmp/gone/model_interrupted.zip"),
             "ctrl-c": KeyboardInterrupt(),
             "failed": TrainingError("PPO diverged", num_timesteps=0, stage="PPO")}[stop]

    def stopped(*args, **kwargs):
        raise error

    monkeypatch.setattr(bench_learning, "run", stopped)
    with pytest.raises(SystemExit) as exit_info:
        bench_learning.main(["--quick"])
    assert exit_info.value.code == status
    err = capsys.readouterr().err.strip()
    assert err == (f"python -m benchmarks.bench_learning: {says}: no figures written; the "
                   "run's model, record and logs were in a temporary directory, removed")
    # the session's diff review: python -m benchmarks' learning section still ended in
    # the traceback (its other sections left out here)
    import benchmarks.__main__ as all_benchmarks

    others = [s for s in all_benchmarks.SECTIONS if s != "learning"]
    with pytest.raises(SystemExit) as exit_info:
        all_benchmarks.main(["--skip", *others])
    assert exit_info.value.code == status
    assert capsys.readouterr().err.strip() == (
        f"python -m benchmarks: {says}: no figures written; the run's model, record and "
        "logs were in a temporary directory, removed")


def test_bench_learning_removes_its_directory_on_sigterm_outside_training(monkeypatch,
                                                                          tmp_path):
    """Fuzzing review (session 23): SIGTERM (``timeout``) while bench_learning scored the
    heuristic, before train() installs its handler, ended the process at once and left
    its /tmp/gridswarm_bench_learning_* directory behind. The whole run now turns
    SIGTERM into train.errors.Terminated, and the directory is removed."""
    import os
    import signal

    from benchmarks import bench_learning
    from train.errors import Terminated

    class DefaultHandler(Exception):
        """What the test's own handler raises: the run left SIGTERM to it."""

    def test_handler(signum, frame):
        raise DefaultHandler

    seen = []

    def heuristic_scoring(scenarios, scenario, seeds, heldout, workdir, *rest):
        seen.append(Path(workdir))
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(bench_learning, "_run", heuristic_scoring)
    previous = signal.signal(signal.SIGTERM, test_handler)
    try:
        with pytest.raises(Terminated):
            bench_learning.run("solar_surplus", quick=True)
        assert signal.getsignal(signal.SIGTERM) is test_handler   # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(seen) == 1 and seen[0].parent == tmp_path and not seen[0].exists()


def test_bench_learning_refuses_cloning_flags_without_bc(monkeypatch, capsys):
    """Fuzzing review (session 23): ``bench_learning --bc-timesteps 5`` without ``--bc``
    ran PPO from a random network, the flag ignored without a word (``python -m train``
    refuses --bc-* without --bc-teacher)."""
    from benchmarks import bench_learning

    asked = []
    monkeypatch.setattr(bench_learning, "run", lambda *a, **k: asked.append(a) or {})
    monkeypatch.setattr(bench_learning, "describe", lambda r: "")
    for flag in ("--bc-timesteps", "--bc-epochs"):
        with pytest.raises(SystemExit) as exit_info:
            bench_learning.main([flag, "5"])
        assert exit_info.value.code == 2
        assert (f"{flag} 5: this sets the behaviour cloning, which needs --bc; add it or "
                "drop it") in capsys.readouterr().err
    assert asked == []
    bench_learning.main(["--bc", "--bc-epochs", "5"])
    bench_learning.main([])
    assert [a[5:8] for a in asked] == [(True, bench_learning.BC_TIMESTEPS, 5),
                                       (False, 200_000, 10)]


def test_repeated_skip_and_agents_flags_add_up(monkeypatch, capsys):
    """Fuzzing review (session 23): ``python -m benchmarks --skip learning --skip memory``
    ran the learning benchmark (the last --skip replaced the earlier ones), a bare
    ``--skip`` skipped nothing without a word, and ``bench_env --agents 100 --agents
    1000`` timed only 1,000 agents."""
    import benchmarks.__main__ as bench
    from benchmarks import bench_env

    asked = []
    monkeypatch.setattr(bench, "run", lambda *a, **k: asked.append(a) or {})
    monkeypatch.setattr(bench, "print_table", lambda *a, **k: None)
    bench.main(["--skip", "learning", "--skip", "memory", "bus"])
    assert set(asked[-1][1]) == {"learning", "memory", "bus"}
    bench.main([])
    assert asked[-1][1] == ()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--skip"])
    assert exit_info.value.code == 2 and "--skip: expected at least one argument" in \
        capsys.readouterr().err
    figures = {"env": [], "emergency": {"n_agents": 1, "emergency_response_latency_ms": 20.0,
                                        "within_budget": True}, "load_average": 0.0}
    timed = []
    monkeypatch.setattr(bench_env, "run", lambda quick, agents, **k: timed.append(agents)
                        or figures)
    monkeypatch.setattr(bench_env, "print_rows", lambda *a, **k: None)
    bench_env.main(["--agents", "100", "--agents", "1000", "10", "--agents", "100"])
    bench_env.main([])
    assert timed == [(100, 1000, 10), tuple(bench_env.AGENT_COUNTS)]


@pytest.mark.parametrize("module", ["benchmarks.__main__", "benchmarks.bench_env"])
def test_benchmarks_refuse_overwrite_without_json(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--overwrite"])
    assert exit_info.value.code == 2
    assert "--overwrite: only with --json FILE" in capsys.readouterr().err


def test_a_file_that_appears_during_a_benchmark_run_is_kept(tmp_path, capsys, monkeypatch):
    from benchmarks import write_json

    target = tmp_path / "figures.json"
    target.write_text("written by someone else meanwhile\n")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    write_json(target, {"env": [1, 2]})
    said = capsys.readouterr().out
    assert target.read_text() == "written by someone else meanwhile\n"
    assert "appeared there during the run and is kept" in said and "saved it to" in said
    write_json(target, {"env": [3]}, overwrite=True)
    assert json.loads(target.read_text()) == {"gridswarm_benchmarks": 1, "env": [3]}


def test_benchmark_figures_survive_a_failed_write(tmp_path, capsys, monkeypatch):
    from benchmarks import write_json

    target = tmp_path / "gone" / "figures.json"   # its directory vanished during the run
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    write_json(target, {"env": [1, 2]})
    said = capsys.readouterr().out
    assert "could not write the figures" in said and "saved it to" in said
    saved = Path(said.split("saved it to ")[1].split("'")[1])
    assert json.loads(saved.read_text()) == {"gridswarm_benchmarks": 1, "env": [1, 2]}


@pytest.mark.parametrize(("args", "says"), [
    (["--scenario", "nope"], "known scenarios are price_spike"),
    (["--agents", "0"], "--agents 0: expected an integer >= 1"),
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--sort", "bogus"], "allowed pstats sort keys are"),
])
def test_profile_step_refuses_bad_flags_in_one_line(args, says, capsys):
    """User-path review: these gave tracebacks (a ZeroDivisionError for --steps 0)."""
    from benchmarks import profile_step

    with pytest.raises(SystemExit) as exit_info:
        profile_step.main(args)
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_benchmark_lines_are_formatted_and_plain(capsys):
    """Review: "response 20.00056818788387 ms" and "largest rise ... 0.66x (none)"."""
    from benchmarks.__main__ import print_table, rise_text

    print_table({"env": [], "emergency": {"n_agents": 10_000, "within_budget": True,
                                          "emergency_response_latency_ms": 20.00056818788387},
                 "summary": {"hmac_us_per_agent_step": {100: 27.05, 1000: 11.42},
                             "cost_per_agent_step_not_higher_at_scale": True,
                             "cost_per_agent_step_max_growth": 0.66},
                 "machine": {"cpus": 2, "load_average": 0.5, "wall_s": 1.0}})
    out = capsys.readouterr().out
    assert "emergency at 10,000 agents: response 20.0 ms simulated (within" in out
    assert ("cost per agent-step never rose from one fleet size to the next (it fell or "
            "stayed: the largest ratio was 0.66x)") in out
    assert "(none)" not in out
    assert rise_text(1.42) == ("cost per agent-step rose from one fleet size to the next: "
                               "by up to 1.42x")


def test_bench_learning_flags_have_help(capsys):
    from benchmarks.bench_learning import main as bench_learning

    with pytest.raises(SystemExit):
        bench_learning(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--bc-timesteps BC_TIMESTEPS agent-steps of heuristic demonstrations" in text
    assert "--bc-epochs BC_EPOCHS passes over the demonstrations" in text
    assert ("--heldout-seeds HELDOUT_SEEDS held-out episodes per scenario for the final "
            "model, seeds 0..K-1 (default 3)") in text


def test_the_dict_api_row_is_paired_with_the_array_path(monkeypatch):
    """Review: the dict-API row ran after the array rows, so the VM's drift made it read
    faster than the array path (67 800 vs 51 600 agent-steps/s in one full run; paired,
    the array path was 1.2x faster). Its repeats now alternate with the default's and the
    row carries the median ratio of the pairs."""
    from benchmarks import bench_env

    calls, step_s = [], iter([1.0, 3.0, 2.0, 2.0, 4.0, 4.4])   # default, dict, default, ...

    def fake_measure_env(n_agents, trust, *, steps, repeats, **changes):
        calls.append(changes.get("api", "arrays"))
        return {"n_agents": n_agents, "trust": trust, "api": changes.get("api", "arrays"),
                "env_s_per_step": next(step_s), "env_cpu_s_per_step": 1.0,
                "gc_s_per_step": 0.0}

    monkeypatch.setattr(bench_env, "measure_env", fake_measure_env)
    row = bench_env.variant_row(100, "arrays_speedup", steps=3, repeats=3, api="dict")
    assert calls == ["arrays", "dict"] * 3
    assert row["api"] == "dict" and "variant" not in row
    assert row["arrays_speedup"] == pytest.approx(1.1)   # median of 3.0, 1.0, 1.1
    assert row["env_s_per_step"] == pytest.approx(3.0)    # median of the dict runs


def test_the_100_agent_rate_is_also_reported_per_scenario(monkeypatch, capsys):
    """The 100-agent hmac rate depends on the contracts signed per step (~12 µs each):
    one scenario's figure alone hid that emergency steps, which sign almost none, run
    ~2x as fast as price_spike's. bench_env.run adds paired rows for the other
    scenarios; the summary and the printed target line carry every scenario's rate and
    contracts per step, while the verdict stays price_spike's."""
    from benchmarks import __main__ as bench_main
    from benchmarks import bench_env

    contracts = {"price_spike": 22.0, "solar_surplus": 32.0, "emergency": 0.4}

    def fake_measure_env(n_agents, trust, *, steps, repeats, scenario="price_spike",
                         **changes):
        step_s = (300e-6 + 12e-6 * contracts[scenario]) * (1.0 if trust == "hmac" else 5.0)
        return {"n_agents": n_agents, "trust": trust, "api": changes.get("api", "arrays"),
                "scenario": scenario, "env_s_per_step": step_s, "env_cpu_s_per_step": step_s,
                "gc_s_per_step": 0.0, "contracts_per_step": contracts[scenario],
                "crypto_threads": 2, "crypto_s_per_step": 0.0, "non_crypto_s_per_step": step_s,
                "sign_s_per_signature": 0.0, "verify_s_per_contract": 0.0}

    monkeypatch.setattr(bench_env, "measure_env", fake_measure_env)
    monkeypatch.setattr(bench_env, "settle_process", lambda: None)
    monkeypatch.setattr(bench_env, "emergency_latency", lambda n: {
        "n_agents": n, "emergency_response_latency_ms": 20.0, "within_budget": True})
    result = bench_env.run(quick=True, agents=(100,), with_memory=False)
    scenario_rows = [r for r in result["env"] if r.get("variant", "").startswith("scenario")]
    assert [r["scenario"] for r in scenario_rows] == ["solar_surplus", "emergency"]
    assert all(r["trust"] == "hmac" and r["n_agents"] == 100 for r in scenario_rows)
    emergency = scenario_rows[1]
    assert emergency["step_over_price_spike"] == pytest.approx(304.8 / 564.0)
    s = bench_main.summary(result)
    assert s["hmac_100_agent_steps_per_s"] == pytest.approx(100 / 564e-6)   # price_spike's
    assert not s["hmac_100_target_300k_met"]
    by = s["hmac_100_by_scenario"]
    assert list(by) == ["price_spike", "solar_surplus", "emergency"]
    assert by["emergency"]["agent_steps_per_s"] == pytest.approx(100 / 304.8e-6)
    assert by["solar_surplus"]["contracts_per_step"] == 32.0
    capsys.readouterr()
    bench_main.print_targets(s)
    out = capsys.readouterr().out
    assert ("by scenario (the target's figure is price_spike's): price_spike 177,305 (22.0 "
            "contracts/step); solar_surplus 146,199 (32.0 contracts/step); emergency 328,084 "
            "(0.4 contracts/step)") in out


def test_bench_learning_measures_the_final_model_on_held_out_seeds(tmp_path, monkeypatch,
                                                                   capsys):
    """Review: the cost reported when PPO first beat the heuristic was measured on the
    seeds that decided the stop (optimistic). The final model is now also measured on
    held-out seeds (0..K-1: not the stopping seeds 10 000 + k, and evaluation seeds that
    training never plays), beside its cost on the stopping seeds, in the JSON and the
    printed table. A tiny run (3 agents, 2 rollouts); the model train saved is kept to
    measure it again here."""
    import shutil

    import train.trainer
    from benchmarks import bench_learning
    from gridswarm_env.env import GridSwarmEnv
    from policies import make_policy
    from policies.rollout import EVAL_SEEDS
    from train.callbacks import mean_system_costs

    kept = tmp_path / "final.zip"
    original_train = train.trainer.train

    def train_and_keep(config, **kwargs):
        path = original_train(config, **kwargs)
        shutil.copyfile(path, kept)
        shutil.copyfile(path.with_suffix(".json"), kept.with_suffix(".json"))
        return path

    monkeypatch.setattr(train.trainer, "train", train_and_keep)
    r = bench_learning.run("emergency", timesteps=300, eval_every=150, eval_seeds=1,
                           margin=0.5, n_agents=3, heldout_seeds=2)
    assert r["eval_seeds"] == [10_000] and r["heldout_seeds"] == [0, 1]
    assert set(r["heldout_seeds"]) <= set(EVAL_SEEDS) and 10_000 in EVAL_SEEDS
    env = {"emergency": GridSwarmEnv(scenario="emergency", n_agents=3, trust="hmac")}
    final = make_policy(str(kept))
    # the final model is the curve's last point, and its held-out cost is its own
    assert r["final_agent_steps"] == r["curve"][-1]["agent_steps"]
    assert r["final_stopping_system_cost"] == r["curve"][-1]["system_cost"] == (
        mean_system_costs(env, final, [10_000])["emergency"])
    assert r["heldout_system_cost"] == mean_system_costs(env, final, [0, 1])["emergency"]
    assert r["heldout_heuristic_system_cost"] == (
        mean_system_costs(env, make_policy("heuristic"), [0, 1])["emergency"])
    assert r["heldout_relative_to_heuristic"] == (r["heldout_system_cost"]
                                                  / r["heldout_heuristic_system_cost"])
    assert r["heldout_eval_s"] >= 0
    # the keys from before are kept
    for key in ("beaten", "agent_steps_to_beat", "train_s_to_beat", "relative_cost_at_beat",
                "best", "curve", "heuristic_system_cost", "eval_s", "train_s"):
        assert key in r
    said = bench_learning.describe(r)
    assert "on held-out seeds 0..1: " in said and "x on the stopping seeds)" in said
    monkeypatch.setattr(bench_learning, "run", lambda *a, **k: {**r, "asked": k})
    printed = bench_learning.main(["--heldout-seeds", "2"])
    assert printed["asked"]["heldout_seeds"] == 2
    out = capsys.readouterr().out
    assert "stopping seed 10000:" in out and "held-out seeds 0..1:" in out
    assert f"system_cost {r['heldout_system_cost']:9.3f} $" in out


def test_bench_learning_randomize_trains_and_judges_on_drawn_episodes(monkeypatch):
    """``--randomize`` reaches the training (its command says so) and every evaluation:
    the heuristic's reference and the held-out cost are those of the randomized
    scenario's episodes at those seeds, not the fixed scenario's."""
    import train.trainer
    from benchmarks import bench_learning
    from gridswarm_env.env import GridSwarmEnv
    from gridswarm_env.scenarios import randomized
    from policies import make_policy
    from train.callbacks import mean_system_costs

    trained_with = []
    original_train = train.trainer.train

    def train_and_note(config, **kwargs):
        trained_with.append(config.randomize)
        return original_train(config, **kwargs)

    monkeypatch.setattr(train.trainer, "train", train_and_note)
    r = bench_learning.run("emergency", timesteps=300, eval_every=150, eval_seeds=1,
                           margin=0.5, n_agents=3, heldout_seeds=1, randomize=True)
    assert r["randomize"] is True and trained_with == [True]
    heuristic = make_policy("heuristic")
    drawn = {"emergency": GridSwarmEnv(scenario=randomized("emergency"), n_agents=3,
                                       trust="hmac")}
    fixed = {"emergency": GridSwarmEnv(scenario="emergency", n_agents=3, trust="hmac")}
    expected = mean_system_costs(drawn, heuristic, [10_000])["emergency"]
    assert r["heuristic_system_cost"] == expected
    assert expected != mean_system_costs(fixed, heuristic, [10_000])["emergency"]
    assert r["heldout_heuristic_system_cost"] == (
        mean_system_costs(drawn, heuristic, [0])["emergency"])
    assert "randomized scenarios (--randomize)" in bench_learning.describe(r)
    with pytest.raises(ValueError, match="randomize = 1: expected True or False"):
        bench_learning.run("emergency", timesteps=300, randomize=1)
    monkeypatch.setattr(bench_learning, "run", lambda *a, **k: {**r, "asked": k})
    assert bench_learning.main(["--randomize"])["asked"]["randomize"] is True


def test_bench_learning_refuses_held_out_seeds_that_reach_the_stopping_seeds():
    from benchmarks import bench_learning

    with pytest.raises(ValueError, match=r"^heldout_seeds = 10001: at most 10,000 \(the "
                                         r"held-out seeds 0 \+ k must stay below"):
        bench_learning.run(heldout_seeds=10_001)
    with pytest.raises(ValueError, match=r"^eval_seeds = 90001: at most 90,000"):
        bench_learning.run(eval_seeds=90_001)


@pytest.mark.parametrize("name", ["__main__", "bench_bus", "bench_env", "bench_learning",
                                  "bench_policy", "bench_train", "bench_trust", "cold_cache",
                                  "profile_step"])
def test_benchmark_usage_names_the_command_as_the_readme_writes_it(name, capsys):
    """Review: `python -m benchmarks.bench_bus --help` said `usage: bench_bus.py`."""
    import importlib

    bench = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    command = "python -m benchmarks" + ("" if name == "__main__" else f".{name}")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {command} ")


@pytest.mark.parametrize("name", ["__main__", "bench_bus", "bench_env", "bench_learning",
                                  "bench_policy", "bench_train", "bench_trust", "cold_cache",
                                  "profile_step"])
def test_benchmark_usage_errors_are_one_line(name, capsys):
    """Review: a bad flag printed argparse's usage block (up to 9 lines) before the error,
    where the project's other commands print one line (policies.cli_checks.OneLineParser)."""
    import importlib

    bench = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--bogus"])
    command = "python -m benchmarks" + ("" if name == "__main__" else f".{name}")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"{command}: error: unrecognized arguments: --bogus "
                                       f"(see {command} --help)\n")


def test_contract_split_fits_the_step_time_per_contract():
    """profile_step's split of the step time: the line through the points and the
    median of the steps that signed no contract."""
    from benchmarks.profile_step import contract_split

    contracts = [0, 0, 0, 10, 20, 30]
    durations = [300e-6, 320e-6, 310e-6, 460e-6, 610e-6, 760e-6]
    split = contract_split(contracts, durations)
    assert split["steps_without_contract"] == 3
    assert split["median_s_without_contract"] == pytest.approx(310e-6)
    assert split["fit_s_per_contract"] == pytest.approx(15e-6, rel=0.05)
    assert split["fit_intercept_s"] == pytest.approx(310e-6, rel=0.05)
    assert split["mean_contracts"] == 10.0
    flat = contract_split([5, 5], [1e-3, 2e-3])
    assert flat["fit_s_per_contract"] is None and flat["median_s_without_contract"] is None


@pytest.mark.parametrize(("module", "args", "says"), [
    # fuzzing: bench_env --agents 0 was an EnvConfig traceback; bench_trust --agents 0
    # and bench_train --rollouts 0 printed figures of nothing; bench_trust --agents 10**30
    # hung allocating
    ("benchmarks.bench_env", ["--agents", "100", "0"],
     "--agents 0: expected an integer from 1 to 1,000,000"),
    ("benchmarks.bench_trust", ["--agents", "-1"],
     "--agents -1: expected an integer from 1 to 1,000,000"),
    ("benchmarks.bench_trust", ["--agents", str(10**30)], "--agents 1000000000000000000000000"
     "000000: expected an integer from 1 to 1,000,000"),
    ("benchmarks.bench_policy", ["--agents", "0"],
     "--agents 0: expected an integer from 1 to 1,000,000"),
    ("benchmarks.bench_train", ["--rollouts", "0"],
     "--rollouts 0: expected an integer >= 1"),
])
def test_benchmark_counts_are_checked_before_running(module, args, says, capsys,
                                                     monkeypatch):
    import importlib

    bench = importlib.import_module(module)
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--eval-seeds", "--heldout-seeds"])
def test_bench_learning_quick_refuses_bad_seed_counts_instead_of_replacing_them(flag,
                                                                              capsys):
    """Fuzzing: with --quick, ``--eval-seeds 0`` and ``--heldout-seeds -1`` were replaced
    by 1 before the check and the benchmark ran."""
    from benchmarks.bench_learning import main as bench_learning

    with pytest.raises(SystemExit) as exit_info:
        bench_learning(["--quick", flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag[2:].replace('-', '_')} = 0: expected an integer >= 1" in (
        capsys.readouterr().err)


def test_profile_breakdown_splits_the_steps_without_contract_into_phases():
    """profile_step: the steps that signed no contract get their own phase times, the
    rest of the step (dispatch, fleet updates, deliveries, the info) a line of its own."""
    from benchmarks.profile_step import PHASES, breakdown

    b = breakdown(10, steps=150)
    idle = b["phases_without_contract"]
    assert b["by_contracts"]["steps_without_contract"] > 0
    assert "_clear" in idle and "_physics" in idle and idle["(rest of the step)"] > 0.0
    named = {k for k in idle if not k.startswith(" ")} - {"(rest of the step)"}
    assert named <= set(PHASES)


def test_bench_train_leaves_no_logger_folder_behind(tmp_path, monkeypatch):
    """Review: each ``bench_train.run`` (one per ``python -m benchmarks``) left an empty
    ``tempdir/SB3-<date-time>`` folder: SB3's default logger makes one per learn()."""
    import tempfile

    from benchmarks import bench_train

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = bench_train.run(rollouts=1, n_agents=10)
    assert r["timesteps"] > 0
    assert list(tmp_path.glob("SB3-*")) == []   # (torch may keep its own cache folder there)


def test_bench_policy_times_every_policy_and_checks_the_learned_paths_agree(monkeypatch):
    """``python -m benchmarks.bench_policy``: one row per policy; the learned model's
    direct greedy path and ``model.predict`` are both timed and must act alike (a path
    that disagrees stops the run)."""
    from benchmarks import bench_policy
    from policies import learned

    r = bench_policy.run(quick=True, n_agents=20)
    assert [row["policy"] for row in r["rows"]] == ["heuristic", "random", "learned"]
    assert all(row["act_ms"] > 0 for row in r["rows"]) and r["learned_predict_ms"] > 0
    assert r["same_actions"] and r["calls"] == 60
    assert "direct greedy path is" in bench_policy.describe(r)
    real = learned.greedy_actions
    monkeypatch.setattr(learned, "greedy_actions", lambda p, o, m: real(p, o, m)[::-1].copy())
    with pytest.raises(RuntimeError, match="no longer matches sb3-contrib"):
        bench_policy.run(quick=True, n_agents=20)


def test_bench_policy_without_the_train_extra_times_the_others(monkeypatch):
    """torch and sb3-contrib are the ``train`` extra's: without them the benchmark (and
    the ``policy`` section of ``python -m benchmarks``) times the other policies and says
    why ``learned`` is missing, as the training benchmark does."""
    import sys

    from benchmarks import bench_policy

    monkeypatch.setitem(sys.modules, "sb3_contrib", None)   # import raises ImportError
    r = bench_policy.run(quick=True, n_agents=10)
    assert [row["policy"] for row in r["rows"]] == ["heuristic", "random"]
    assert "pip install -e '.[train]'" in r["learned_skipped"]
    assert "learned: skipped (the train extra is not installed" in bench_policy.describe(r)
