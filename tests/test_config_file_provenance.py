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
