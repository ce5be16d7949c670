"""``--randomize`` of ``evaluate.py``, ``python -m train`` and ``demo.py``: every scenario
drawn per episode with :data:`~gridswarm_env.scenarios.RANDOMIZE_PRESET`, recorded where
the numbers are (results header and JSON, training record, demo summary), and refused in
one line when contradictory or given a value."""

from __future__ import annotations

import argparse
import json

import pytest

import demo
import evaluate
from gridswarm_env.scenarios import RANDOMIZE_PRESET
from tests.command_lines import _evaluate, _one_line_error
from train.__main__ import build_parser, config_from_args, env_settings, main
from train.config import TrainConfig

TINY_TRAIN = ["--scenario", "emergency", "--agents", "5", "--n-steps", "60",
              "--batch-size", "300", "--n-epochs", "1", "--no-progress",
              "--checkpoint-every", "0"]


def _eval_run(tmp_path, capsys, name: str, *extra: str) -> tuple[dict, str]:
    out = tmp_path / name
    status, err = _evaluate(["--agents", "10", "--episodes", "3", "--policies",
                             "heuristic,random", "--scenarios", "price_spike,emergency",
                             "--trust", "hmac", "--out", str(out), *extra], capsys)
    assert status == 0, err
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def _costs(data: dict, policy: str, scenario: str) -> list[float]:
    return [r["metrics"]["system_cost"] for r in data["runs"]
            if r["policy"] == policy and r["scenario"] == scenario]


# --------------------------------------------------------------------------- evaluate.py
def test_evaluate_randomize_spreads_price_spike_and_says_so(tmp_path, capsys):
    """Without --randomize every seed of price_spike prices the same requirement (the
    heuristic's cost is one number on every seed, to 1e-11); with it the seeds are different
    episodes, the draws are recorded and the same for every policy at a seed."""
    fixed, fixed_md = _eval_run(tmp_path, capsys, "fixed")
    costs = _costs(fixed, "heuristic", "price_spike")
    assert max(costs) - min(costs) < 1e-9   # equal but for rounding (262.227008 $)
    assert fixed["summary"]["config"]["scenario_randomization"] is None
    assert all("scenario_drawn" not in r for r in fixed["runs"])
    assert fixed_md.startswith("# gridswarm evaluation\n")
    assert "- scenario randomization: off" in fixed_md and "Episodes drawn" not in fixed_md

    rand, rand_md = _eval_run(tmp_path, capsys, "rand", "--randomize")
    assert rand["summary"]["config"]["scenario_randomization"] == RANDOMIZE_PRESET
    costs = _costs(rand, "heuristic", "price_spike")
    assert len(set(costs)) == 3 and max(costs) - min(costs) > 1.0
    for sc in ("price_spike", "emergency"):
        draws = {}
        for r in rand["runs"]:
            if r["scenario"] == sc:
                assert draws.setdefault(r["seed"], r["scenario_drawn"]) == r["scenario_drawn"]
        assert len({json.dumps(d, sort_keys=True) for d in draws.values()}) == 3
        # the no-DER baseline (shadow) plays the first seed's draw too
        assert rand["summary"]["no_der_counterfactual"][sc]["scenario_drawn"] == draws[0]
    steps = [r["scenario_drawn"]["load_step_mw"] for r in rand["runs"]
             if r["scenario"] == "price_spike"]
    assert all(99.0 <= x <= 121.0 for x in steps)
    assert rand_md.startswith("# gridswarm evaluation — randomized scenarios (--randomize)\n")
    assert "- scenario randomization: ON (--randomize): per episode" in rand_md
    assert "do not mix the two tables" in rand_md
    assert "Episodes drawn (--randomize): seed 0: load step +" in rand_md
    assert "seed 2: trip " in rand_md


@pytest.mark.parametrize("value", ["yes", "0"])
def test_evaluate_randomize_takes_no_value(value, tmp_path, capsys):
    status, err = _evaluate([f"--randomize={value}", "--out", str(tmp_path / "o")], capsys)
    assert status == 2
    line = _one_line_error(err, "evaluate.py")
    assert f"argument --randomize: ignored explicit argument '{value}'" in line
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_a_randomize_that_is_not_a_bool(tmp_path):
    with pytest.raises(evaluate.UsageError, match="randomize = 'yes': expected True or False"):
        evaluate.evaluate("random", "emergency", 1, 0, 3, tmp_path / "o", trust="hmac",
                          randomize="yes", progress=False)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- python -m train
def _config(argv: list[str], saved: dict | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return config_from_args(args, argv, saved_env=saved)


def test_train_randomize_flag_and_resume_rule():
    assert _config(TINY_TRAIN).randomize is False
    assert _config([*TINY_TRAIN, "--randomize"]).randomize is True
    assert _config([*TINY_TRAIN, "--no-randomize"]).randomize is False
    # --resume: not given keeps the checkpoint's, given wins
    saved = {"randomize": True}
    args = build_parser().parse_args(TINY_TRAIN)
    assert env_settings(args, saved)["randomize"] is True
    args = build_parser().parse_args([*TINY_TRAIN, "--no-randomize"])
    assert env_settings(args, saved)["randomize"] is False
    args = build_parser().parse_args([*TINY_TRAIN, "--randomize"])
    assert env_settings(args, {"randomize": False})["randomize"] is True
    # a checkpoint saved before the flag existed: the fixed scenarios
    assert env_settings(build_parser().parse_args(TINY_TRAIN), {})["randomize"] is False
    assert "randomize" in TrainConfig().env_settings()


def test_train_contradictory_randomize_flags_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY_TRAIN, "--randomize", "--no-randomize", "--logdir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m train: error: --randomize and --no-randomize: give one")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"TrainConfig.randomize = 1: expected True or False"):
        TrainConfig(randomize=1)


def test_train_randomize_plays_and_evaluates_randomized_and_records_it(tmp_path, capsys):
    from train.adapter import GridSwarmVecEnv
    from train.callbacks import SystemCostEvaluation
    from train.trainer import make_venv

    venv = make_venv(_config([*TINY_TRAIN, "--randomize"]))
    assert all(raw.base_scenario.randomized for raw in venv.active_envs)
    venv.close()
    plain = make_venv(_config(TINY_TRAIN))
    assert not any(raw.base_scenario.randomized for raw in plain.active_envs)
    plain.close()
    with pytest.raises(ValueError, match="GridSwarmVecEnv.randomize = 'on'"):
        GridSwarmVecEnv("emergency", n_agents=3, randomize="on")
    evaluation = SystemCostEvaluation(["emergency"], 3, every=100, n_seeds=1, randomize=True)
    assert evaluation.envs["emergency"].base_scenario.randomized

    assert main([*TINY_TRAIN, "--randomize", "--timesteps", "300", "--logdir", str(tmp_path),
                 "--run-name", "r"]) == 0
    record = json.loads((tmp_path / "r" / "model.json").read_text())
    assert record["config"]["randomize"] is True
    assert record["scenario_randomization"]["magnitude_jitter_frac"] == 0.1
    assert record["scenario_randomization"]["timing_jitter_s"] == 5.0
    assert "± 10 %" in record["scenario_randomization"]["text"]
    capsys.readouterr()


# --------------------------------------------------------------------------- demo.py
def test_demo_randomize_plays_the_draw_and_names_it(capsys):
    opts = demo.DemoOptions(n_agents=10, scenario="emergency", policy="heuristic", seed=2,
                            max_steps=12, live=False, trust="hmac", randomize=True)
    session = demo.open_session(opts)
    raw = session.raw
    assert raw.base_scenario.randomized and raw.scenario.event_time_s != 10.0
    result = demo.run_demo(session, write=lambda _line: None)
    assert result.run["randomize"] is True
    assert result.run["scenario_drawn"] == raw.scenario.drawn_values()
    label = demo.scenario_label(raw)
    assert label.startswith("emergency randomized (trip ") and " MW at " in label
    from rich.console import Console

    demo.print_summary(result, Console(force_terminal=False, width=200))
    assert "KPI summary: emergency randomized (trip " in capsys.readouterr().out
    session.env.close()
    plain = demo.options_from_args(demo.build_parser().parse_args([]), is_terminal=False)
    assert plain.randomize is False
    with pytest.raises(ValueError, match="--randomize 'yes': expected True or False"):
        demo.DemoOptions(randomize="yes")


def test_demo_randomize_takes_no_value(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.build_parser().parse_args(["--randomize=1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "argument --randomize: ignored explicit argument '1'" in err


def test_the_namespace_without_no_randomize_is_accepted():
    """config_from_args is called with a rebuilt Namespace on --resume (without
    --limits); it must not need --no-randomize to be there."""
    args = build_parser().parse_args(TINY_TRAIN)
    ns = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "no_randomize"})
    assert config_from_args(ns, TINY_TRAIN).randomize is False
