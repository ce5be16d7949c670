"""``--config FILE``: an EnvConfig from TOML (gridswarm_env.config_file) and the
command lines that take it (demo.py, evaluate.py)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

import demo
import evaluate
from gridswarm_env.bus import BusConfig
from gridswarm_env.config import EnvConfig, MarketConfig
from gridswarm_env.config_file import env_config_from_dict, load_env_config
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.grid import GridParams
from policies import make_policy
from policies.rollout import run_episode

FILE = """\
dt_s = 0.5
trust = "hmac"
n_agents = 12
[grid]
inertia_h_s = 3.0
governor_deadband_hz = 0.036
[market]
consensus_share = 0.9
[bus]
latency_mean_s = 0.03
max_deferral_s = [inf, "step", 2.0, inf]
capacity_per_step = [1000000, 1000000, 1000000, 500000]
[fleet]
share_solar = 0.2
share_battery = 0.5
[costs]
voll_per_mwh = 5000.0
[reward]
grid_weight = 0.001
"""


def _python_config() -> EnvConfig:
    from gridswarm_env.config import CostConfig, FleetConfig, RewardConfig

    return EnvConfig(
        dt_s=0.5, trust="hmac", n_agents=12,
        grid=GridParams(inertia_h_s=3.0, governor_deadband_hz=0.036),
        market=MarketConfig(consensus_share=0.9),
        bus=BusConfig(latency_mean_s=0.03, max_deferral_s=(math.inf, None, 2.0, math.inf),
                      capacity_per_step=(1_000_000, 1_000_000, 1_000_000, 500_000)),
        fleet=FleetConfig(share_solar=0.2, share_battery=0.5),
        costs=CostConfig(voll_per_mwh=5000.0), reward=RewardConfig(grid_weight=0.001))


def _write(tmp_path: Path, text: str, name: str = "env.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_builds_the_config_python_builds_and_plays_its_physics(tmp_path):
    path = _write(tmp_path, FILE)
    config, sha = load_env_config(path)
    assert config == _python_config()
    import hashlib

    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_env_config(_write(tmp_path, "", "empty.toml"))[0] == EnvConfig()
    # the settings reach the episode: the lower inertia deepens the unassisted trip
    shadow = {}
    for name, grid in (("file", config.grid), ("default", GridParams())):
        env = GridSwarmEnv(scenario="emergency", n_agents=5,
                           config=EnvConfig(trust="hmac", shadow=True, grid=grid))
        shadow[name] = run_episode(env, make_policy("heuristic"), seed=0).metrics
    assert shadow["file"]["frequency_nadir_hz"] < shadow["default"]["frequency_nadir_hz"]
    assert shadow["file"]["max_rocof_hz_per_s"] > shadow["default"]["max_rocof_hz_per_s"]


@pytest.mark.parametrize("text, says", [
    ('audit_path = "a.jsonl"\n', "key 'audit_path' = 'a.jsonl': an output, not a setting: "
                                "use demo.py --audit"),
    ("inertia_h_s = 3.0\n", "unknown key 'inertia_h_s'; allowed: the EnvConfig fields "
                            "n_agents, dt_s"),
    ("[grid]\ninertia = 3.0\n", "[grid]: unknown field 'inertia'; GridParams's fields: "
                                "system_base_mw"),
    ("[grids]\ninertia_h_s = 3.0\n", "unknown key 'grids'"),
    ("grid = 3.0\n", "grid = 3.0: expected a table [grid] of GridParams fields"),
    ("[grid]\ninertia_h_s = -3.0\n", "[grid] inertia_h_s=-3.0 is not allowed: must be a "
                                     "finite number > 0"),
    ("[grid]\ngovernor_valve_time_constant_tg_s = -0.2\n",
     "[grid] governor_valve_time_constant_tg_s=-0.2 is not allowed: must be a finite number "
     ">= 0 s (0 = no lag"),
    ("[grid]\nturbine_hp_time_constant_tch_s = \"0.3\"\n",
     "[grid] turbine_hp_time_constant_tch_s='0.3' is not allowed"),
    ("[grid.x]\ny = 1\n", "[grid]: unknown field 'x'"),
    ("[grid]\ninertia_h_s = {x = 1}\n", "[grid] inertia_h_s: a table; expected a value"),
    ("[market]\nn_power_levels = 20\n", "[market] MarketConfig.n_power_levels = 20: must be "
                                        "odd"),
    ("n_agents = 2.5\n", "EnvConfig.n_agents = 2.5: expected an integer >= 1"),
    ("n_agents = [3]\n", "n_agents = [3]: expected a value, not a list"),
    ("dt_s = \"1\"\n", "EnvConfig.dt_s = '1': expected a finite number"),
    ("dt_s = 1e-400\n", "EnvConfig.dt_s = 1e-400 (below the float range, read as 0.0)"),
    ("[bus]\nmax_deferral_s = [inf, \"never\", \"step\", inf]\n",
     "[bus] max_deferral_s[CONTROL] must be None or a number of s > 0, got 'never' (in a "
     'config file "step" stands for None)'),
    ("[bus]\ncapacity_per_step = [1, 2]\n", "[bus] capacity_per_step must be a tuple of 4"),
    ("[fleet]\nshare_ev = 0.9\n", "[fleet] FleetConfig: share_solar + share_battery + "
                                  "share_ev = 1.6: must sum to 1"),
    ("trust = \"rsa\"\n", "EnvConfig.trust = 'rsa': allowed values are ed25519, hmac"),
    ("dt_s = \n", "config file"),   # bad TOML
])
def test_a_bad_file_is_refused_naming_the_file_and_the_field(tmp_path, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as exc:
        load_env_config(path)
    message = str(exc.value)
    assert message.startswith(f"config file {str(path)!r}") and says in message, message
    assert "\n" not in message


def test_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"config file '.*nope\.toml' does not exist"):
        load_env_config(tmp_path / "nope.toml")


def test_step_stands_for_none_in_max_deferral_only():
    config = env_config_from_dict({"bus": {"max_deferral_s": [math.inf, "step", "step",
                                                              math.inf]}})
    assert config.bus == BusConfig()
    with pytest.raises(ValueError, match="latency_distribution"):
        env_config_from_dict({"bus": {"latency_distribution": "step"}})


# ------------------------------------------------------------------ evaluate.py
EVAL = ["--policies", "heuristic", "--scenarios", "emergency", "--episodes", "1",
        "--no-progress"]


def test_evaluate_plays_the_files_settings_and_the_flags_given_win(tmp_path, capsys):
    path = _write(tmp_path, FILE.replace("dt_s = 0.5\n", ""))
    assert evaluate.main([*EVAL, "--config", str(path), "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "results.json").read_text())
    recorded = result["summary"]["config"]["env_config"]
    assert recorded["n_agents"] == 12 and recorded["trust"] == "hmac"
    assert recorded["grid"]["inertia_h_s"] == 3.0 and recorded["market"]["consensus_share"] == 0.9
    want = run_episode(GridSwarmEnv(scenario="emergency", config=replace(_python_config(),
                                                                          dt_s=1.0)),
                       make_policy("heuristic"), seed=0)
    assert result["runs"][0]["metrics"]["system_cost"] == want.metrics["system_cost"]
    assert result["runs"][0]["metrics"]["frequency_nadir_hz"] == (
        want.metrics["frequency_nadir_hz"])
    md = (tmp_path / "a" / "results.md").read_text()
    assert "grid.inertia_h_s = 3.0 (4.0)" in md and "- agents: 12" in md
    # flags given override the file
    assert evaluate.main([*EVAL, "--config", str(path), "--out", str(tmp_path / "b"),
                          "--agents", "5", "--trust", "ed25519",
                          "--governor-deadband-hz", "0", "--contract-keys", "seeded"]) == 0
    recorded = json.loads((tmp_path / "b" / "results.json").read_text())["summary"]["config"]
    assert recorded["env_config"]["n_agents"] == 5 and recorded["env_config"]["trust"] == (
        "ed25519")
    assert recorded["env_config"]["grid"]["governor_deadband_hz"] == 0.0
    assert recorded["env_config"]["grid"]["inertia_h_s"] == 3.0   # the rest: the file's
    assert recorded["contract_keys"] == "seeded"
    capsys.readouterr()


@pytest.mark.parametrize("text, says", [
    ("shadow = true\n", "key 'shadow' = True: evaluate.py plays every policy live"),
    ("[grid]\ninertia_h_s = 0\n", "[grid] inertia_h_s=0 is not allowed"),
])
def test_evaluate_refuses_a_bad_file_in_one_line_before_any_output(tmp_path, capsys, text,
                                                                   says):
    path = _write(tmp_path, text)
    out = tmp_path / "out"
    assert evaluate.main([*EVAL, "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate.py: error: ") and says in err and "\n" not in err
    assert not out.exists()


# ------------------------------------------------------------------ demo.py
def test_demo_plays_the_files_settings_records_them_and_the_flags_given_win(tmp_path,
                                                                            capsys):
    path = _write(tmp_path, FILE)
    out = tmp_path / "d.json"
    args = ["--no-live", "--steps", "3", "--scenario", "emergency", "--config", str(path)]
    assert demo.main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert ("12 agents, policy heuristic, seed 0, trust hmac, governor deadband ±0.036 Hz, "
            f"config file {path} (sha256 {sha}), settings (defaults in parentheses): "
            "dt_s = 0.5 (1.0)") in text
    assert "grid.inertia_h_s = 3.0 (4.0)" in text
    run = json.loads(out.read_text())["run"]
    assert run["n_agents"] == 12 and run["env_config"]["dt_s"] == 0.5
    assert run["env_config"]["grid"]["inertia_h_s"] == 3.0
    env = GridSwarmEnv(scenario="emergency", config=_python_config())
    want = run_episode(env, make_policy("heuristic"), seed=0, max_steps=3).metrics
    assert json.loads(out.read_text())["metrics"]["frequency_nadir_hz"] == (
        want["frequency_nadir_hz"])
    # flags given override the file's values
    options = demo.options_from_args(demo.build_parser().parse_args(
        [*args, "--agents", "7", "--trust", "ed25519", "--shadow",
         "--governor-deadband-hz", "0.01"]), is_terminal=False)
    config = demo.episode_config(options)
    assert (config.n_agents, config.trust, config.shadow) == (7, "ed25519", True)
    assert config.grid.governor_deadband_hz == 0.01 and config.grid.inertia_h_s == 3.0
    assert config.dt_s == 0.5


def test_demo_episode_config_is_the_flags_over_the_file_as_the_other_command_lines(
        tmp_path):
    """Tidying (session 26): demo.episode_config restated env_config_file_from_args' way of
    putting the options over the file; both now go through cli_checks.env_config_with,
    so the episode plays exactly the config the flags and the file make."""
    from policies.cli_checks import env_config_file_from_args, env_config_source

    path = _write(tmp_path, FILE)
    for extra in ([], ["--agents", "7", "--trust", "ed25519", "--shadow",
                       "--governor-deadband-hz", "0.01", "--crypto-threads", "1",
                       "--contract-keys", "seeded"]):
        for config in ([], ["--config", str(path)]):
            args = demo.build_parser().parse_args([*config, *extra])
            options = demo.options_from_args(args, is_terminal=False)
            assert demo.episode_config(options) == env_config_source(
                env_config_file_from_args(args))[0]


def test_demo_refuses_a_bad_file_and_an_audit_path_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, 'audit_path = "a.jsonl"\n')
    assert demo.main(["--no-live", "--steps", "1", "--config", str(path)]) == demo.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == (f"demo.py: error: config file {str(path)!r}: key 'audit_path' = 'a.jsonl': "
                   "an output, not a setting: use demo.py --audit FILE (or "
                   "EnvConfig(audit_path=...) in Python)")
    with pytest.raises(ValueError, match=r"^env_config\.audit_path = '.*a\.jsonl': give the "
                                         r"audit file as --audit FILE"):
        demo.DemoOptions(env_config=EnvConfig(audit_path=str(tmp_path / "a.jsonl")))
    with pytest.raises(ValueError, match=r"^env_config \{'dt_s': 0\.5\}: expected a "
                                         r"gridswarm_env\.config\.EnvConfig"):
        demo.DemoOptions(env_config={"dt_s": 0.5})
    assert not (tmp_path / "a.jsonl").exists()


def test_the_documented_example_loads(tmp_path):
    """docs/configuration.md's example is a file users copy: it must load."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    block = text.split("## Config files", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config, _ = load_env_config(_write(tmp_path, block))
    assert config.n_agents == 200 and config.grid.inertia_h_s == 3.0
    assert config.bus.max_deferral_s == BusConfig().max_deferral_s
    assert config.costs.voll_per_mwh == 5000.0


# ------------------------------------------------------------------ python -m train
def test_train_plays_the_files_settings_stores_and_resumes_them(tmp_path, capsys):
    """``python -m train --config FILE``: the training copies and the --eval-every
    evaluations get the file's EnvConfig (n_agents and trust from the flags); every saved
    model stores the file and its hash, --resume reuses it and refuses it changed, as the
    limits file."""
    import hashlib

    from tests.test_train_failures import PROG, TINY, one_error_line
    from train.__main__ import main
    from train.config import TrainConfig
    from train.trainer import ENV_SETTINGS_ATTR, load_model, make_venv

    text = "[grid]\ninertia_h_s = 3.0\ngovernor_deadband_hz = 0.036\n[market]\ngate_s = 0.3\n"
    path = _write(tmp_path, text)
    config = TrainConfig(scenario="emergency", n_agents=5, env_config_file=str(path))
    venv = make_venv(config)
    venv.reset()
    raw = venv.active_envs[0]
    assert raw.config.grid.inertia_h_s == 3.0 and raw.config.market.gate_s == 0.3
    assert raw.config.grid.governor_deadband_hz == 0.036 and raw.n_agents == 5
    assert not raw.config.audit_keep_entries and raw.config.trust == "hmac"
    # the flag overrides the file's deadband, and only that
    flagged = TrainConfig(n_agents=5, env_config_file=str(path), governor_deadband_hz=0.0)
    assert flagged.env_config().grid == GridParams(inertia_h_s=3.0)
    base = [*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--logdir", str(tmp_path)]
    assert main([*base, "--config", str(path), "--run-name", "cfg", "--eval-every", "300",
                 "--eval-seeds", "1"]) == 0
    model = tmp_path / "cfg" / "model.zip"
    stored = getattr(load_model(model), ENV_SETTINGS_ATTR)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert stored["env_config_file"] == str(path.resolve())
    assert stored["env_config_sha256"] == digest and stored["governor_deadband_hz"] is None
    record = json.loads((tmp_path / "cfg" / "model.json").read_text())
    assert record["config"]["env_config_sha256"] == digest
    import tomllib

    from gridswarm_env.config_file import env_config_from_dict

    assert env_config_from_dict(tomllib.loads(record["env_config_toml"])) == (
        config.env_config())
    # resumed without --config: the checkpoint's file, unchanged
    assert main([*base, "--resume", str(model), "--run-name", "again"]) == 0
    record = json.loads((tmp_path / "again" / "model.json").read_text())
    assert record["config"]["env_config_file"] == str(path.resolve())
    assert record["changed_on_resume"] == {}
    # ... refused once it changed (exit 2, nothing written)
    path.write_text(text.replace("3.0", "2.5"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--resume", str(model), "--run-name", "changed"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: --resume {str(model)!r} was trained with --config "
                           f"{str(path.resolve())!r} of sha256 {digest}, but that file has "
                           "changed since")
    assert not (tmp_path / "changed").exists()


@pytest.mark.parametrize("text, says", [
    ("n_agents = 7\n", "key 'n_agents' = 7: training takes it from --agents; remove it"),
    ('trust = "hmac"\n', "key 'trust' = 'hmac': training takes it from --trust"),
    ("shadow = false\n", "key 'shadow' = False: training dispatches the contracts"),
    ("[grid]\ninertia_h_s = 0\n", "[grid] inertia_h_s=0 is not allowed"),
    # the file's own key, not the flag of the same setting
    ("[grid]\ngovernor_deadband_hz = 0.9\n", "[grid] governor_deadband_hz=0.9 is not allowed"),
])
def test_train_refuses_a_bad_config_file_naming_the_flag(tmp_path, capsys, text, says):
    from tests.test_train_failures import PROG, TINY, one_error_line
    from train.__main__ import main

    path = _write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--config", str(path), "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: ") and says in line, line
    assert not (tmp_path / "runs").exists()


def test_a_files_crypto_threads_beyond_the_cores_act_as_the_cores(tmp_path):
    """EnvConfig takes up to 256 (a larger value acts as the usable cores); the command
    lines' --crypto-threads takes 1 to the cores, and said "--crypto-threads 256" of a
    value the user never typed."""
    from policies.cli_checks import max_crypto_threads

    path = _write(tmp_path, "crypto_threads = 256\n")
    options = demo.options_from_args(demo.build_parser().parse_args(
        ["--config", str(path)]), is_terminal=False)
    assert options.crypto_threads == max_crypto_threads()
    args = evaluate.build_parser().parse_args(["--config", str(path)])
    assert evaluate.config_file_of_args(args).config.crypto_threads == max_crypto_threads()


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs")
                                        .glob("*.toml")), ids=lambda p: p.name)
def test_the_shipped_example_configs_load_and_change_what_they_say(path):
    config, _ = load_env_config(path)
    assert config != EnvConfig()
    assert config.n_agents == EnvConfig().n_agents and config.trust == EnvConfig().trust


def test_the_governor_lags_example_turns_on_kundurs_lags():
    config, _ = load_env_config(Path(__file__).resolve().parents[1] / "configs"
                                / "governor_lags.toml")
    assert config == EnvConfig(grid=GridParams(governor_valve_time_constant_tg_s=0.2,
                                               turbine_hp_time_constant_tch_s=0.3))
    assert config.grid.n_states == 5


def test_the_recorded_toml_rebuilds_the_config_exactly(tmp_path, capsys):
    """results.json's env_config turns inf into null (strict JSON); env_config_toml is
    the same settings as a config file, exact."""
    import tomllib

    from gridswarm_env.config_file import env_config_toml

    for config in (_python_config(), EnvConfig(dt_s=0.1 + 0.2, rocof_window_s=1.0),
                   EnvConfig(grid=GridParams(physics_dt_s=0.01, agc_gain_per_s=1e-5))):
        text = env_config_toml(config)
        assert env_config_from_dict(tomllib.loads(text)) == config, text
        assert load_env_config(_write(tmp_path, text))[0] == config
    assert env_config_toml(EnvConfig()) == ""
    path = _write(tmp_path, FILE.replace("dt_s = 0.5\n", ""), "run.toml")
    assert evaluate.main([*EVAL, "--config", str(path), "--out", str(tmp_path / "a")]) == 0
    recorded = json.loads((tmp_path / "a" / "results.json").read_text())["summary"]["config"]
    assert recorded["env_config"]["bus"]["max_deferral_s"] == [None, "step", 2.0, None]
    again = env_config_from_dict(tomllib.loads(recorded["env_config_toml"]))
    assert again == replace(_python_config(), dt_s=1.0)
    out = tmp_path / "d.json"
    assert demo.main(["--no-live", "--steps", "2", "--config", str(path), "--json",
                      str(out)]) == 0
    run = json.loads(out.read_text())["run"]
    assert env_config_from_dict(tomllib.loads(run["env_config_toml"])) == replace(
        _python_config(), dt_s=1.0, trust="hmac")
    capsys.readouterr()


def test_demo_refuses_a_latency_shape_the_bus_cannot_solve_in_one_line(tmp_path, capsys):
    """A [bus] lognormal latency_sigma of 30 passed the file's checks and ended in an
    OverflowError traceback (exit 1) when the bus was built, leaving the --audit file."""
    path = _write(tmp_path, '[bus]\nlatency_distribution = "lognormal"\n'
                            'latency_sigma = 30.0\n')
    audit, out = tmp_path / "a.jsonl", tmp_path / "d.json"
    assert demo.main(["--no-live", "--steps", "1", "--config", str(path), "--audit",
                      str(audit), "--json", str(out)]) == demo.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"demo.py: error: config file {str(path)!r}: [bus] "
                          "latency_distribution='lognormal' with latency_sigma=30.0"), err
    assert "\n" not in err and not audit.exists() and not out.exists()


def test_resuming_an_older_checkpoint_with_a_config_file_records_the_change(tmp_path,
                                                                            capsys):
    """A checkpoint saved before env_config_file and governor_deadband_hz were stored was
    trained on the defaults: resumed with --config (or --governor-deadband-hz), the
    record said ``changed_on_resume == {}``, as if the environment were the same."""
    from tests.test_train_failures import TINY
    from train.__main__ import main
    from train.trainer import ENV_SETTINGS_ATTR, load_model

    base = [*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--logdir", str(tmp_path)]
    assert main([*base, "--run-name", "first"]) == 0
    model = load_model(tmp_path / "first" / "model.zip")
    stored = getattr(model, ENV_SETTINGS_ATTR)
    for name in ("env_config_file", "env_config_sha256", "governor_deadband_hz"):
        del stored[name]
    old = tmp_path / "old.zip"
    model.save(old)
    path = _write(tmp_path, "[grid]\ninertia_h_s = 3.0\n")
    assert main([*base, "--resume", str(old), "--run-name", "cfg", "--config", str(path),
                 "--governor-deadband-hz", "0.036"]) == 0
    changed = json.loads((tmp_path / "cfg" / "model.json").read_text())["changed_on_resume"]
    assert changed["env_config_file"] == {"checkpoint": None, "now": str(path.resolve())}
    assert changed["governor_deadband_hz"] == {"checkpoint": None, "now": 0.036}
    assert set(changed) == {"env_config_file", "env_config_sha256", "governor_deadband_hz"}
    assert main([*base, "--resume", str(old), "--run-name", "same"]) == 0   # nothing new
    assert json.loads((tmp_path / "same" / "model.json").read_text())[
        "changed_on_resume"] == {}
    capsys.readouterr()


def test_records_write_one_step_as_step_and_demo_records_what_ran(tmp_path, capsys):
    """results.json's summary.config.env_config wrote ``max_deferral_s`` (inf, None, 2.0,
    inf) as [null, null, 2.0, null]: an unlimited lane and a one-step one alike. And
    demo's run.env_config was ``DemoOptions.env_config`` as given, though the options'
    own n_agents, trust and deadband replace its values (12 agents, hmac and 0.036 Hz
    recorded; 100, ed25519 and 0 ran)."""
    import io

    from rich.console import Console

    from gridswarm_env.config_file import env_config_record

    assert env_config_record(EnvConfig())["bus"]["max_deferral_s"] == [None, "step", "step",
                                                                       None]
    path = _write(tmp_path, "[bus]\nmax_deferral_s = [inf, \"step\", 2.0, inf]\n")
    assert evaluate.main([*EVAL, "--agents", "5", "--config", str(path), "--out",
                          str(tmp_path / "a")]) == 0
    recorded = json.loads((tmp_path / "a" / "results.json").read_text())["summary"][
        "config"]["env_config"]
    assert recorded["bus"]["max_deferral_s"] == [None, "step", 2.0, None]
    config = replace(_python_config(), n_agents=12, trust="hmac")
    options = demo.DemoOptions(env_config=config, live=False, max_steps=1,
                               scenario="emergency")
    session = demo.open_session(options)
    try:
        run = demo.run_demo(session, console=Console(file=io.StringIO()),
                            write=lambda line: None).run
    finally:
        session.env.close()
    ran = session.raw.config
    assert (ran.n_agents, ran.trust, ran.grid.governor_deadband_hz) == (100, "ed25519", 0.0)
    record = json.loads(json.dumps(demo.strict_json(run)))["env_config"]
    assert (record["n_agents"], record["trust"], record["grid"]["governor_deadband_hz"]) == (
        100, "ed25519", 0.0)
    assert record["bus"]["max_deferral_s"] == [None, "step", 2.0, None]
    capsys.readouterr()


def test_train_checks_the_limits_against_the_config_files_fleet(tmp_path):
    """python -m train checked --limits against the default fleet, not the --config
    file's: with ``[fleet]`` 0/0.6/0.4 at 5 agents a limits file naming battery_002 (an
    agent the run has) was refused listing solar_000... (which it has not), and one
    naming solar_001 passed and failed later without naming the file. demo.py and
    evaluate.py check the file's fleet."""
    from train.config import TrainConfig

    fleet = _write(tmp_path, "[fleet]\nshare_solar = 0.0\nshare_battery = 0.6\n"
                             "share_ev = 0.4\n")
    battery = _write(tmp_path, "[agents.battery_002]\nmax_discharge_mw = 1.0\n", "b.toml")
    config = TrainConfig(n_agents=5, env_config_file=str(fleet), limits=str(battery))
    assert "battery_002" in config.kernel_limits().per_agent
    solar = _write(tmp_path, "[agents.solar_001]\nmax_discharge_mw = 1.0\n", "s.toml")
    with pytest.raises(ValueError, match=r"^limits file '.*s\.toml': limits name agent\(s\) "
                                         r"solar_001 that a fleet of 5 agents does not have "
                                         r"\(its agents: battery_000"):
        TrainConfig(n_agents=5, env_config_file=str(fleet), limits=str(solar))


@pytest.mark.parametrize("text, where", [
    ("[grid]\ninertia_h_s = 1" + "0" * 400 + "\n", "grid.inertia_h_s"),
    ("rocof_window_s = 1" + "0" * 30 + "\n", "rocof_window_s"),
    ("[bus]\ncapacity_per_step = [1000000, -1" + "0" * 400 + ", 1, 1]\n",
     "bus.capacity_per_step[1]"),
])
def test_an_integer_beyond_tomls_64_bits_is_refused_naming_the_key(tmp_path, capsys, text,
                                                                   where):
    """tomllib reads integers of any length; one beyond the float range reached a check's
    float() and demo.py ended in 'OverflowError: int too large to convert to float' (a
    traceback, exit 1), in a config file as in a limits file."""
    from gridswarm_env.kernel import Limits

    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"^config file '.*env\.toml' is not valid TOML: "
                                         rf"{re.escape(where)} = -?10+(\.\.\.)? \(\d+ digits\) "
                                         r"is beyond TOML's 64-bit integers"):
        load_env_config(path)
    assert demo.main(["--no-live", "--steps", "1", "--config", str(path)]) == demo.EXIT_USAGE
    assert "\n" not in capsys.readouterr().err.strip()
    limits = _write(tmp_path, "[battery]\nmax_charge_mw = 1" + "0" * 400 + "\n", "lim.toml")
    with pytest.raises(ValueError, match=r"^limits file .* battery\.max_charge_mw = "):
        Limits.read_toml(limits)


def test_demo_no_shadow_overrides_a_files_shadow(tmp_path, capsys):
    """Fuzzing: `shadow = true` in a config file could not be overridden from the command
    line (demo.py had --shadow only)."""
    path = _write(tmp_path, "shadow = true\n")
    parse = demo.build_parser().parse_args
    assert demo.options_from_args(parse(["--config", str(path)]), False).shadow is True
    assert demo.options_from_args(parse(["--config", str(path), "--no-shadow"]),
                                  False).shadow is False
    with pytest.raises(SystemExit) as exc:
        parse(["--shadow", "--no-shadow"])
    assert exc.value.code == 2 and "not allowed with argument --shadow" in (
        capsys.readouterr().err)


def test_the_settings_text_leaves_out_the_audit_file_and_the_fields_shown_elsewhere():
    """``settings_changed``/``env_config_toml`` of a config that streams its audit chain
    (demo.py --audit FILE sets ``audit_path``) and whose deadband the summary names: the
    audit file is an output (a config file holding it is refused, so the recorded TOML
    must not hold it), and a nested ``named`` field is left out alone."""
    import tomllib

    from gridswarm_env.config_file import env_config_toml, settings_changed

    config = EnvConfig(audit_path="run.jsonl", grid=GridParams(
        inertia_h_s=3.0, governor_deadband_hz=0.036))
    assert settings_changed(config, named=("grid.governor_deadband_hz",)) == [
        "grid.inertia_h_s = 3.0 (4.0)"]
    assert settings_changed(EnvConfig(audit_path="run.jsonl")) == []
    assert env_config_toml(EnvConfig(audit_path="run.jsonl")) == ""
    # only what differs from the defaults, the top-level fields first, one blank line
    # between the parts and a final newline
    text = env_config_toml(replace(config, dt_s=0.5))
    assert text == ("dt_s = 0.5\n\n[grid]\ninertia_h_s = 3.0\n"
                    "governor_deadband_hz = 0.036\n")
    assert env_config_from_dict(tomllib.loads(text)) == replace(
        config, dt_s=0.5, audit_path=None)


def test_the_unknown_key_message_does_not_offer_the_refused_audit_path():
    with pytest.raises(ValueError, match="allowed: the EnvConfig fields") as exc:
        env_config_from_dict({"inertia_h_s": 3.0})
    assert "audit_path" not in str(exc.value)


def test_the_crypto_threads_flag_overrides_the_file(tmp_path):
    """--crypto-threads is one of the flags that set an EnvConfig field (CONFIG_FLAGS):
    given, it wins over the file's value (here: the file's default, None)."""
    path = _write(tmp_path, "dt_s = 0.5\n")
    args = evaluate.build_parser().parse_args(["--config", str(path), "--crypto-threads", "1"])
    config = evaluate.config_file_of_args(args).config   # an EnvConfigFile: --config given
    assert config.crypto_threads == 1 and config.dt_s == 0.5
