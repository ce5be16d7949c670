"""A learned model played under settings other than its training run's (fleet size,
scenarios, ``--randomize``, the environment settings of a ``--config`` file) gets one
note per run naming what differs: ``evaluate.py`` on stderr and in results.md,
``demo.py`` on stderr; nothing when everything matches."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

import demo
from gridswarm_env.config import EnvConfig
from policies.learned import PPO_MODEL, trained_settings_note
from tests.command_lines import _evaluate


def _model(tmp_path, **config) -> str:
    """A copy of the shipped PPO model (which stores no settings of its own) with a
    training record saying it was trained with ``config``."""
    model = tmp_path / "m.zip"
    shutil.copyfile(PPO_MODEL, model)
    model.with_suffix(".json").write_text(json.dumps({"config": config}))
    return str(model)


def _run(tmp_path, capsys, model: str, agents: int) -> tuple[str, str]:
    out = tmp_path / f"out{agents}"
    status, err = _evaluate(["--agents", str(agents), "--episodes", "1", "--trust", "hmac",
                             "--policies", model, "--scenarios", "emergency",
                             "--out", str(out)], capsys)
    assert status == 0, err
    return err, (out / "results.md").read_text()


def test_evaluate_notes_a_fleet_size_other_than_the_models(tmp_path, capsys):
    model = _model(tmp_path, n_agents=7, scenario="emergency", randomize=False)
    err, md = _run(tmp_path, capsys, model, agents=5)
    note = (f"model {model!r} was trained with 7 agents, scenarios emergency, "
            "not randomized; this run: 5 agents")
    assert err.splitlines().count(f"evaluate.py: note: {note}") == 1   # as demo.py's
    assert md.splitlines().count(f"- note: {note}") == 1


def test_evaluate_matching_settings_give_no_note(tmp_path, capsys):
    model = _model(tmp_path, n_agents=5, scenario="emergency", randomize=False)
    err, md = _run(tmp_path, capsys, model, agents=5)
    assert "trained with" not in err and "trained with" not in md


def test_demo_notes_a_fleet_size_other_than_the_models(tmp_path, capsys):
    model = _model(tmp_path, n_agents=7, scenario="emergency", randomize=False)
    args = ["--policy", model, "--scenario", "emergency", "--no-live", "--steps", "2",
            "--trust", "hmac"]
    assert demo.main([*args, "--agents", "5"]) == 0
    err = capsys.readouterr().err
    assert (f"demo.py: note: model {model!r} was trained with 7 agents, scenarios "
            "emergency, not randomized; this run: 5 agents") in err.splitlines()
    assert demo.main([*args, "--agents", "7"]) == 0
    assert "trained with" not in capsys.readouterr().err


def test_library_callers_get_the_note_as_a_warning_not_a_command_lines_line(tmp_path,
                                                                            capsys):
    """``evaluate.evaluate()`` and ``demo.open_session()`` called from Python raise the
    note as a :class:`policies.cli_checks.Note` warning (the command lines show it as
    ``evaluate.py: note: ...`` / ``demo.py: note: ...``, above). Before: both printed
    ``evaluate.py: note: ...`` / ``demo.py: note: ...`` on stderr, though no command
    line ran, and a caller could neither catch nor filter it."""
    import evaluate
    from policies.cli_checks import Note

    model = _model(tmp_path, n_agents=7, scenario="emergency", randomize=False)
    note = (f"model {model!r} was trained with 7 agents, scenarios emergency, "
            "not randomized; this run: 5 agents")
    with pytest.warns(Note) as caught:
        result = evaluate.evaluate(policies=model, scenarios="emergency", episodes=1,
                                   n_agents=5, trust="hmac", progress=False,
                                   out_dir=tmp_path / "out")
    assert [str(w.message) for w in caught if w.category is Note] == [note]
    assert note in result["summary"]["notes"]   # kept in the results as before
    with pytest.warns(Note) as caught:
        session = demo.open_session(demo.DemoOptions(policy=model, scenario="emergency",
                                                     n_agents=5, trust="hmac",
                                                     live=False, max_steps=1))
    session.env.close()
    assert [str(w.message) for w in caught if w.category is Note] == [note]
    err = capsys.readouterr().err
    assert "evaluate.py:" not in err and "demo.py:" not in err, err


@pytest.mark.parametrize("record, run, expected", [
    # scenarios it was not trained on, and randomized play of a model trained without it
    ({"config": {"scenario": "emergency", "randomize": False}},
     dict(scenarios=["price_spike", "emergency"], randomize=True),
     "scenarios emergency, not randomized; this run: scenarios price_spike (not trained "
     "on), randomized"),
    # fixed scenarios are the centre of the randomized ones a model was trained on
    ({"config": {"scenario": "all", "randomize": True}},
     dict(scenarios=["emergency"], randomize=False), None),
    # the environment settings of its record's --config file
    ({"config": {}, "env_config_toml": "[grid]\ngovernor_deadband_hz = 0.05\n"},
     dict(scenarios=["emergency"], randomize=False),
     "the env settings in its record's env_config_toml; this run: other env settings "
     "(grid.governor_deadband_hz)"),
    # a setting written at its default value is no difference
    ({"config": {}, "env_config_toml": "[grid]\ninertia_h_s = 4.0\n"},
     dict(scenarios=["emergency"], randomize=False), None),
    # the fleet size and trust of a config file are not env settings of the model's
    ({"config": {}, "env_config_toml": 'n_agents = 9\ntrust = "hmac"\n'},
     dict(scenarios=["emergency"], randomize=False), None),
    # nothing recorded: nothing compared
    ({}, dict(scenarios=["emergency"], randomize=True), None),
], ids=["scenarios-randomize", "trained-randomized", "config", "config-default", "config-fleet",
         "no-record"])
def test_trained_settings_note(tmp_path, record, run, expected):
    path = tmp_path / "m.zip"
    path.with_suffix(".json").write_text(json.dumps(record))
    policy = SimpleNamespace(path=path, model=object())
    note = trained_settings_note(policy, 5, run["scenarios"], run["randomize"], EnvConfig())
    assert note == (None if expected is None
                    else f"model {str(path)!r} was trained with {expected}")
