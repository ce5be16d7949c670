"""The ``--config`` file across evaluate.py and demo.py: like ``python -m train``'s
record (``env_config_file``, ``env_config_sha256``) and like scenario files, the
results name the file a run's settings came from by its path as given and the SHA-256
of the bytes read, and the file is read once (session 29: they recorded the settings,
never which file they came from)."""

from __future__ import annotations

import hashlib
import json

import pytest

import demo
import evaluate
from gridswarm_env import config_file
from gridswarm_env.config import EnvConfig
from gridswarm_env.grid import GridParams
from tests.command_lines import EVAL_SMALL, _evaluate

WEAK = b"[grid]\ninertia_h_s = 3.0\n"
#: a file that changes nothing results.md's environment line lists
AGENTS_ONLY = b"n_agents = 5\n"
LIMITS = b"[battery]\nmax_discharge_mw = 5.0\n"
TRIP = b'base = "emergency"\nname = "trip_90"\ncontingency_mw = 90.0\n'

EVAL_ONE = [*EVAL_SMALL, "--scenarios", "emergency"]
DEMO_ONE = ["--scenario", "emergency", "--no-live", "--steps", "1", "--agents", "5",
            "--trust", "hmac"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def config_reads(monkeypatch) -> list:
    """The paths the config files are read from (once per command)."""
    read, reads = config_file.read_toml_bytes, []

    def counted(path, what):
        if what == "config file":
            reads.append(str(path))
        return read(path, what)

    monkeypatch.setattr(config_file, "read_toml_bytes", counted)
    return reads


def test_evaluate_records_the_config_files_path_and_hash(tmp_path, capsys, config_reads):
    path = tmp_path / "weak.toml"
    path.write_bytes(WEAK)
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_ONE, "--config", str(path), "--out", str(out)], capsys)
    assert status == 0, err
    assert config_reads == [str(path)]   # read once: the bytes hashed are those played
    config = json.loads((out / "results.json").read_text())["summary"]["config"]
    assert config["env_config_file"] == {"path": str(path), "sha256": sha(WEAK)}
    assert config["env_config"]["grid"]["inertia_h_s"] == 3.0
    md = (out / "results.md").read_text()
    assert ("environment: custom EnvConfig, changed from the defaults (in parentheses): "
            f"grid.inertia_h_s = 3.0 (4.0); from config file {path} (sha256 {sha(WEAK)})"
            in md)


def test_evaluate_names_a_config_file_that_changes_no_listed_setting(tmp_path, capsys):
    path = tmp_path / "agents.toml"
    path.write_bytes(AGENTS_ONLY)
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_ONE, "--config", str(path), "--out", str(out)], capsys)
    assert status == 0, err
    md = (out / "results.md").read_text()
    assert (f"environment: as the defaults; from config file {path} (sha256 "
            f"{sha(AGENTS_ONLY)})") in md


def test_evaluate_without_config_records_no_file(tmp_path, capsys):
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_ONE, "--out", str(out)], capsys)
    assert status == 0, err
    assert json.loads((out / "results.json").read_text())[
        "summary"]["config"]["env_config_file"] is None
    assert "config file" not in (out / "results.md").read_text()


def test_evaluate_api_takes_an_env_config_or_an_env_config_file(tmp_path):
    """``evaluate(env_config=EnvConfig)`` as before (no file); an ``EnvConfigFile``
    plays its config and records its file."""
    from policies.cli_checks import EnvConfigFile

    weak = EnvConfig(grid=GridParams(inertia_h_s=3.0))
    kwargs = dict(policies="random", scenarios="emergency", episodes=1, n_agents=5,
                  trust="hmac", progress=False)
    plain = evaluate.evaluate(out_dir=tmp_path / "a", env_config=weak, **kwargs)
    assert plain["summary"]["config"]["env_config_file"] is None
    path = tmp_path / "weak.toml"
    path.write_bytes(WEAK)
    filed = evaluate.evaluate(out_dir=tmp_path / "b", env_config=EnvConfigFile.read(path),
                              **kwargs)
    config = filed["summary"]["config"]
    assert config["env_config_file"] == {"path": str(path), "sha256": sha(WEAK)}
    assert config["env_config"] == plain["summary"]["config"]["env_config"]
    with pytest.raises(evaluate.UsageError, match="EnvConfigFile: a config file read"):
        evaluate.evaluate(out_dir=tmp_path / "c", env_config={"dt_s": 1.0}, **kwargs)


def test_demo_json_records_the_config_files_path_and_hash(tmp_path, config_reads):
    path = tmp_path / "weak.toml"
    path.write_bytes(WEAK)
    out = tmp_path / "d.json"
    assert demo.main([*DEMO_ONE, "--config", str(path), "--json", str(out)]) == 0
    assert config_reads == [str(path)]
    run = json.loads(out.read_text())["run"]
    assert (run["env_config_file"], run["env_config_sha256"]) == (str(path), sha(WEAK))
    assert run["env_config"]["grid"]["inertia_h_s"] == 3.0
    plain = tmp_path / "plain.json"
    assert demo.main([*DEMO_ONE, "--json", str(plain)]) == 0
    run = json.loads(plain.read_text())["run"]
    assert (run["env_config_file"], run["env_config_sha256"]) == (None, None)


def test_demo_options_take_an_env_config_file(tmp_path):
    from policies.cli_checks import EnvConfigFile

    path = tmp_path / "weak.toml"
    path.write_bytes(WEAK)
    opts = demo.DemoOptions(n_agents=5, trust="hmac", live=False,
                            env_config=EnvConfigFile.read(path))
    assert opts.env_config == EnvConfig(grid=GridParams(inertia_h_s=3.0))
    assert opts.config_file == {"path": str(path), "sha256": sha(WEAK)}
    assert demo.DemoOptions(live=False, env_config=opts.env_config).config_file is None


def test_demo_summary_and_dashboard_name_the_input_files(tmp_path, capsys):
    """Session 30: the JSON named the --config file, but a user reading the screen or a
    log saw neither it nor the limits file; the summary and the dashboard's header now
    name every input file by path and the first 12 hex digits of its SHA-256 (a
    scenario file was named without a hash)."""
    import io

    from rich.console import Console

    import dashboard

    config = tmp_path / "weak.toml"
    config.write_bytes(WEAK)
    limits = tmp_path / "lim.toml"
    limits.write_bytes(LIMITS)
    scenario = tmp_path / "trip.toml"
    scenario.write_bytes(TRIP)
    out = tmp_path / "d.json"
    assert demo.main([*DEMO_ONE, "--config", str(config), "--limits", str(limits),
                      "--scenario", str(scenario), "--json", str(out)]) == 0
    summary = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("KPI summary:"))
    assert summary.startswith(f"KPI summary: trip_90 from scenario file {scenario} "
                              f"(sha256 {sha(TRIP)[:12]}), 5 agents")
    assert (f", config file {config} (sha256 {sha(WEAK)[:12]}), limits file {limits} "
            f"(sha256 {sha(LIMITS)[:12]}), settings") in summary
    run = json.loads(out.read_text())["run"]
    assert (run["limits_path"], run["limits_sha256"]) == (str(limits), sha(LIMITS))
    labels = [label for _, label in demo.input_files(run)]
    assert labels == [f"scenario file {scenario} (sha256 {sha(TRIP)[:12]})",
                      f"config file {config} (sha256 {sha(WEAK)[:12]})",
                      f"limits file {limits} (sha256 {sha(LIMITS)[:12]})"]
    # the dashboard demo.py builds shows them under its title
    live = [arg for arg in DEMO_ONE if arg != "--no-live"]
    opts = demo.options_from_args(demo.build_parser().parse_args(
        [*live, "--config", str(config), "--limits", str(limits), "--speed", "0"]),
        is_terminal=True)
    assert opts.live
    session = demo.open_session(opts)
    shown = {}

    class Captured(dashboard.Dashboard):
        def __init__(self, header, **kwargs):
            super().__init__(header, **kwargs)
            shown["dash"] = self

    console = Console(file=io.StringIO(), width=200, height=40, record=True,
                      color_system=None, force_terminal=True)
    original = dashboard.Dashboard
    dashboard.Dashboard = Captured
    try:
        demo.run_demo(session, console=console)
    finally:
        dashboard.Dashboard = original
        session.env.close()
    console = Console(file=io.StringIO(), width=500, height=40, record=True,
                      color_system=None, force_terminal=False)   # the paths on one line
    console.print(shown["dash"])
    text = console.export_text()
    assert (f"config file {config} (sha256 {sha(WEAK)[:12]}) · limits file {limits} "
            f"(sha256 {sha(LIMITS)[:12]})") in text
    assert "scenario file" not in text


def test_demo_without_input_files_names_none(capsys):
    assert demo.main(DEMO_ONE) == 0
    out = capsys.readouterr().out
    assert " file " not in next(line for line in out.splitlines()
                                if line.startswith("KPI summary:"))
