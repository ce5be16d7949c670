"""A scenario file (``FILE.toml``: ``base = "emergency"`` plus fields) across the command
lines: ``python -m train --scenario`` takes one as ``evaluate.py --scenarios`` and
``demo.py --scenario`` do (read once, the same messages for a bad file), and every record
names the file by its path and the SHA-256 of the bytes played (the training record and
model also hold the scenario itself); ``--resume`` refuses a checkpoint's scenario file
whose bytes have changed; the trained-settings note compares scenarios by content."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import demo
from gridswarm_env.config import EnvConfig
from gridswarm_env.scenarios import (
    get_scenario,
    load_scenario_file,
    scenario_from_record,
    scenario_record,
)
from policies.learned import PPO_MODEL, trained_settings_note
from tests.command_lines import EVAL_SMALL, _evaluate
from tests.test_train_failures import PROG, TINY, one_error_line
from train.__main__ import main
from train.config import TrainConfig
from train.trainer import ENV_SETTINGS_ATTR, load_model

TRIP_90 = b'base = "emergency"\nname = "trip_90"\ncontingency_mw = 90.0\n'
TRIP_80 = b'base = "emergency"\nname = "trip_90"\ncontingency_mw = 80.0\n'
#: a file that sets nothing but its base
SAME = b'base = "emergency"\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(tmp_path: Path, data: bytes = TRIP_90, name: str = "trip.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ python -m train
def test_train_config_takes_a_scenario_file(tmp_path):
    """``--scenario`` took registered names only (argparse's choices): a scenario file
    that evaluate.py and demo.py play could not be trained on."""
    path = _file(tmp_path)
    config = TrainConfig(scenario=str(path), logdir=str(tmp_path))
    assert config.scenarios() == {"trip_90": load_scenario_file(path)}
    assert config.scenario_sha256 == sha(TRIP_90)
    settings = config.env_settings()
    assert settings["scenario"] == str(path.resolve())
    assert settings["scenario_sha256"] == sha(TRIP_90)
    assert config.default_run_name(0).startswith("trip_90_s0_")   # not the path's "/"
    # registered names keep no hash
    assert TrainConfig(scenario="all").scenario_sha256 is None
    assert list(TrainConfig(scenario="all").scenarios()) == ["price_spike", "solar_surplus",
                                                             "emergency"]


@pytest.mark.parametrize("text, says", [
    (None, "scenario file '{path}' does not exist"),
    (b'base = "nope"\n', "scenario file '{path}': needs base = one of price_spike, "
                         "solar_surplus, emergency (got base = 'nope')"),
    (b'base = "emergency"\ncontingency = 1.0\n', "scenario file '{path}': unknown field "
                                                 "'contingency'"),
])
def test_a_bad_scenario_file_is_refused_as_evaluate_and_demo_do(tmp_path, capsys, text, says):
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_bytes(text)
    expected = says.format(path=path)
    with pytest.raises(SystemExit) as exc:
        main(["--scenario", str(path), "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: --scenario: {expected}"), line
    assert not (tmp_path / "runs").exists()
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", str(path), "--out",
                             str(tmp_path / "out")], capsys)
    assert status == 2 and f"evaluate.py: error: --scenarios: {expected}" in err
    assert demo.main(["--scenario", str(path), "--no-live", "--steps", "1"]) == 2
    assert f"demo.py: error: --scenario: {expected}" in capsys.readouterr().err


def test_train_refuses_a_scenario_file_the_randomization_cannot_play(tmp_path, capsys):
    """A load step at 2 s, which ``--randomize``'s ±5 s would move before t = 0: refused
    before any work, naming both flags (evaluate.py refuses it the same way)."""
    path = _file(tmp_path, b'base = "price_spike"\nname = "early"\nload_step_start_s = 2.0\n')
    with pytest.raises(SystemExit) as exc:
        main(["--scenario", str(path), "--randomize", "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"{PROG}: error: --scenario {str(path)!r} with --randomize: Scenario('early')."
        "timing_jitter_s = 5.0: would move the load step at load_step_start_s = 2.0 s "
        "before t = 0; allowed: 0 <= timing_jitter_s <= 2.0")
    assert not (tmp_path / "runs").exists()


def test_demo_and_evaluate_name_both_flags_for_a_file_randomize_cannot_play(tmp_path, capsys):
    """demo.py refused it only when building the environment, without naming a flag
    (``demo.py: error: Scenario('early').timing_jitter_s = ...``), and evaluate.py named
    ``--randomize`` as ``randomize``: now both name both flags as ``python -m train``
    does (demo.py when its options are checked)."""
    path = _file(tmp_path, b'base = "price_spike"\nname = "early"\nload_step_start_s = 2.0\n')
    expected = (f"--scenario {str(path)!r} with --randomize: Scenario('early')."
                "timing_jitter_s = 5.0: would move the load step at load_step_start_s = "
                "2.0 s before t = 0; allowed: 0 <= timing_jitter_s <= 2.0")
    with pytest.raises(ValueError) as exc:
        demo.DemoOptions(scenario=str(path), randomize=True, live=False)
    assert str(exc.value) == expected
    assert demo.main(["--scenario", str(path), "--randomize", "--no-live", "--steps", "1",
                      "--agents", "5"]) == 2
    assert capsys.readouterr().err == f"demo.py: error: {expected}\n"
    # evaluate.py named the flag --randomize as "randomize": "--scenarios with randomize:"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", str(path), "--randomize", "--out",
                             str(tmp_path / "out")], capsys)
    assert status == 2
    assert err == (f"evaluate.py: error: --scenarios with --randomize: "
                   f"{expected.partition(': ')[2]}\n")


def test_train_on_a_scenario_file_records_it_and_resume_checks_it(tmp_path, capsys):
    path = _file(tmp_path)
    base = [*TINY, "--scenario", str(path), "--timesteps", "600", "--logdir", str(tmp_path)]
    assert main([*base, "--run-name", "first"]) == 0
    record = json.loads((tmp_path / "first" / "model.json").read_text())
    played = load_scenario_file(path)
    assert record["scenario_file"] == {"path": str(path.resolve()), "sha256": sha(TRIP_90),
                                       "text": TRIP_90.decode(),
                                       "scenario": scenario_record(played)}
    # the scenario without the file: its fields, or its text saved as a file again
    assert scenario_from_record(record["scenario_file"]["scenario"]) == played
    assert set(record["recent_episodes"]) == {"trip_90"}   # what the episodes played
    model = tmp_path / "first" / "model.zip"
    stored = getattr(load_model(model), ENV_SETTINGS_ATTR)
    assert (stored["scenario"], stored["scenario_sha256"]) == (str(path.resolve()),
                                                               sha(TRIP_90))
    # resumed without --scenario: the checkpoint's file, checked by its hash
    resume = ["--agents", "5", "--no-progress", "--checkpoint-every", "0", "--timesteps",
              "300", "--logdir", str(tmp_path), "--resume", str(model)]
    path.write_bytes(TRIP_80)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*resume, "--run-name", "changed"])
    assert exc.value.code == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"{PROG}: error: --resume {str(model)!r} was trained with --scenario "
        f"{str(path.resolve())!r} of sha256 {sha(TRIP_90)}, but that file has changed since "
        f"(sha256 now {sha(TRIP_80)}): pass --scenario FILE to train on the file as it is "
        "now, or restore it")
    assert not (tmp_path / "changed").exists()
    path.write_bytes(TRIP_90)
    assert main([*resume, "--run-name", "restored"]) == 0
    record = json.loads((tmp_path / "restored" / "model.json").read_text())
    assert record["changed_on_resume"] == {}
    assert record["scenario_file"]["sha256"] == sha(TRIP_90)
    # a registered name instead: applied, and named as a change
    assert main([*resume, "--scenario", "emergency", "--run-name", "named"]) == 0
    record = json.loads((tmp_path / "named" / "model.json").read_text())
    assert record["changed_on_resume"] == {
        "scenario": {"checkpoint": str(path.resolve()), "now": "emergency"},
        "scenario_sha256": {"checkpoint": sha(TRIP_90), "now": None}}
    assert "scenario_file" not in record
    # the file gone: refused, saying what to pass
    path.unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*resume, "--run-name", "gone"])
    assert one_error_line(capsys.readouterr().err) == (
        f"{PROG}: error: --resume {str(model)!r} was trained with --scenario "
        f"{str(path.resolve())!r}, which is no longer a file: pass --scenario FILE, a "
        "scenario name or 'all'")


# ------------------------------------------------------------------ evaluate.py, demo.py
def test_evaluate_records_the_scenario_files_path_and_hash(tmp_path, capsys):
    """results.json and results.md said a scenario was custom, never which file it came
    from: a reader could not tell which file produced the numbers."""
    path = _file(tmp_path)
    same = _file(tmp_path, SAME, "same.toml")   # the registered fields
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", f"{path},{same}", "--out",
                             str(out)], capsys)
    assert status == 0, err
    config = json.loads((out / "results.json").read_text())["summary"]["config"]
    assert config["scenario_files"] == {
        "trip_90": {"path": str(path), "sha256": sha(TRIP_90)},
        "emergency": {"path": str(same), "sha256": sha(SAME)}}
    md = (out / "results.md").read_text()
    assert (f"from scenario file {path} (sha256 {sha(TRIP_90)})" in md
            and "scenario trip_90: custom, not a registered scenario" in md)
    assert (f"scenario emergency: as registered; from scenario file {same} (sha256 "
            f"{sha(SAME)})") in md
    # registered names: no files
    status, _ = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out",
                           str(tmp_path / "named")], capsys)
    assert status == 0
    named = json.loads((tmp_path / "named" / "results.json").read_text())
    assert named["summary"]["config"]["scenario_files"] == {}


def test_demo_json_records_the_scenario_files_hash(tmp_path, capsys):
    path = _file(tmp_path)
    out = tmp_path / "d.json"
    assert demo.main(["--scenario", str(path), "--no-live", "--steps", "1", "--agents", "5",
                      "--trust", "hmac", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["run"]
    assert (run["scenario_file"], run["scenario_file_sha256"]) == (str(path), sha(TRIP_90))


# ------------------------------------------------------------------ the trained-settings note
def _note(tmp_path, record, scenarios, randomize=False, env_config=None):
    path = tmp_path / "m.zip"
    path.with_suffix(".json").write_text(json.dumps(record))
    policy = SimpleNamespace(path=path, model=object())
    note = trained_settings_note(policy, 5, scenarios, randomize,
                                 EnvConfig() if env_config is None else env_config)
    prefix = f"model {str(path)!r} was trained with "
    return None if note is None else note.removeprefix(prefix)


def test_note_compares_a_played_scenario_files_fields(tmp_path):
    """A scenario file named as a registered scenario (no ``name``) played under that
    name: the note compared names only and said nothing."""
    record = {"config": {"scenario": "all", "randomize": False}}
    bigger = get_scenario("emergency", contingency_mw=120.0)
    assert _note(tmp_path, record, [bigger]) == (
        "scenarios all, not randomized; this run: scenario emergency (contingency_mw) other "
        "than the one trained on")
    assert _note(tmp_path, record, [get_scenario("emergency")]) is None


def test_note_of_a_model_trained_on_a_scenario_file(tmp_path):
    """A model trained on a file: its record's scenario is compared (by name and fields),
    not the path as a scenario name ('scenarios /x/trip.toml', every run 'not trained
    on')."""
    trip = get_scenario("emergency", name="trip_90", contingency_mw=90.0)
    record = {"config": {"scenario": "/x/trip.toml", "randomize": False},
              "scenario_file": {"path": "/x/trip.toml", "sha256": "0" * 64,
                                "scenario": scenario_record(trip)}}
    assert _note(tmp_path, record, [trip]) is None
    assert _note(tmp_path, record, ["emergency"]) == (
        "scenario file '/x/trip.toml' (trip_90), not randomized; this run: scenarios "
        "emergency (not trained on)")
    other = get_scenario(trip, contingency_mw=80.0)
    assert _note(tmp_path, record, [other]) == (
        "scenario file '/x/trip.toml' (trip_90), not randomized; this run: scenario "
        "trip_90 (contingency_mw) other than the one trained on")
    # the model without the scenario in its record: said, not guessed
    del record["scenario_file"]
    assert _note(tmp_path, record, [trip]) == (
        "scenario file '/x/trip.toml', not randomized; this run: scenarios not compared "
        "(the scenario file's scenario is not in its record)")


def test_note_says_what_a_record_does_not_hold(tmp_path):
    """A record without ``randomize`` or ``env_config_toml`` (the shipped models'): a
    randomized run, or a run on other env settings, got no note at all."""
    record = {"config": {"n_agents": 5, "scenario": "all"}}
    assert _note(tmp_path, record, ["emergency"], randomize=True) == (
        "5 agents, scenarios all; this run: randomized (its record does not say whether "
        "it was trained randomized)")
    low_inertia = replace(EnvConfig(), grid=replace(EnvConfig().grid, inertia_h_s=2.0))
    assert _note(tmp_path, record, ["emergency"], env_config=low_inertia) == (
        "5 agents, scenarios all; this run: env settings other than the defaults "
        "(grid.inertia_h_s), not compared: its record has no env settings (env_config_toml)")
    # the defaults, or nothing recorded at all: nothing said
    assert _note(tmp_path, record, ["emergency"]) is None
    assert _note(tmp_path, {}, ["emergency"], randomize=True, env_config=low_inertia) is None


def test_the_shipped_ppo_model_is_noted_as_not_randomized(tmp_path):
    """gridswarm_ppo.zip was trained before randomization existed, and its record said
    nothing of it: evaluate.py --randomize played it without a note."""
    model = tmp_path / "ppo.zip"
    shutil.copyfile(PPO_MODEL, model)
    shutil.copyfile(PPO_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    from policies.learned import LearnedPolicy

    note = trained_settings_note(LearnedPolicy(model), 100, ["emergency"], True, EnvConfig())
    assert note == (f"model {str(model)!r} was trained with 100 agents, scenarios all, "
                    "not randomized; this run: randomized")
