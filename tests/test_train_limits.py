"""A training run's ``--limits`` file: read once, the bytes checked are the bytes every
environment uses (training copies and ``--eval-every`` evaluations), their SHA-256 is
recorded, and ``--resume`` refuses a checkpoint's limits file that has changed since."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from stable_baselines3.common.callbacks import BaseCallback

import gridswarm_env.kernel
import train.callbacks as callbacks
from gridswarm_env.kernel import Limits
from tests.test_train_failures import PROG, TINY, one_error_line, tiny_config, without_notes
from train.__main__ import main
from train.config import TrainConfig
from train.trainer import ENV_SETTINGS_ATTR, load_model, train

#: the limits a run is started with, and what the file holds afterwards (both valid
#: for a 5-agent fleet, so the old code trained on the second without a word)
FIRST = b"[agents.battery_001]\nmax_discharge_mw = 0.0\n"
LATER = b"[agents.battery_000]\nmax_discharge_mw = 0.0\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parsed(data: bytes, tmp_path: Path) -> Limits:
    copy = tmp_path / "parsed.toml"
    copy.write_bytes(data)
    return Limits.from_toml(copy)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every read of a limits file (the one function that reads one) is listed here."""
    real = gridswarm_env.kernel.read_toml_bytes
    seen: list[str] = []

    def counted(path, what):
        seen.append(str(path))
        return real(path, what)

    monkeypatch.setattr(gridswarm_env.kernel, "read_toml_bytes", counted)
    return seen


class SeesTheVenv(BaseCallback):
    """Keeps the training environments' limits, once learning starts."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[Limits] = []

    def _on_training_start(self) -> None:
        self.limits = [raw.limits for raw in self.training_env.active_envs]

    def _on_step(self) -> bool:
        return True


def test_the_environments_use_the_bytes_that_were_checked(tmp_path, monkeypatch):
    """Review: TrainConfig read the --limits file to check it, then every environment
    copy and every --eval-every environment was given the path and read it again when
    built, so a file replaced in between trained on limits never checked, and the record
    named the file by its path only. Here the file is replaced right after the config
    read it: every environment still has the first limits, and the record and every
    saved model carry the hash of those bytes."""
    limits = tmp_path / "limits.toml"
    limits.write_bytes(FIRST)
    judges: list[callbacks.SystemCostEvaluation] = []

    class Judge(callbacks.SystemCostEvaluation):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            judges.append(self)

    monkeypatch.setattr(callbacks, "SystemCostEvaluation", Judge)
    # three copies: each plays another scenario of "all" from the start
    config = tiny_config(tmp_path, scenario="all", n_envs=3, n_steps=10, batch_size=150,
                         total_timesteps=150, eval_every=150, eval_seeds=1,
                         limits=str(limits), run_name="r")
    limits.write_bytes(LATER)
    seen = SeesTheVenv()
    path = train(config, callbacks=[seen])
    first = parsed(FIRST, tmp_path)
    assert len(seen.limits) == 3 and all(lim == first for lim in seen.limits)
    assert len(judges) == 1 and len(judges[0].envs) == 3
    assert all(raw.limits == first for raw in judges[0].envs.values())
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["config"]["limits"] == str(limits)
    assert record["config"]["limits_sha256"] == sha(FIRST)
    for saved in (path, path.parent / "best_model.zip"):
        stored = getattr(load_model(saved), ENV_SETTINGS_ATTR)
        assert stored["limits"] == str(limits.resolve()), saved
        assert stored["limits_sha256"] == sha(FIRST), saved


def test_a_run_reads_its_limits_file_once(tmp_path, reads):
    """The command line checked the file, the config read it, and each environment (and
    each evaluation environment) read it again: one read now."""
    limits = tmp_path / "limits.toml"
    limits.write_bytes(FIRST)
    assert main([*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--eval-every",
                 "300", "--eval-seeds", "1", "--limits", str(limits), "--logdir",
                 str(tmp_path), "--run-name", "once"]) == 0
    assert reads == [str(limits)]


def test_resume_refuses_a_changed_limits_file(tmp_path, capsys, reads):
    """Review: --resume re-read the checkpoint's limits file by its path, so a file
    changed since the first run silently trained the resumed run on other limits. Now
    the resume refuses it (exit 2, nothing written), naming the file and both hashes;
    a restored file resumes, and --limits FILE trains on the file as it is now and
    records its hash."""
    limits = tmp_path / "limits.toml"
    limits.write_bytes(FIRST)
    base = [*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--logdir", str(tmp_path)]
    assert main([*base, "--limits", str(limits), "--run-name", "base"]) == 0
    model = tmp_path / "base" / "model.zip"
    limits.write_bytes(LATER)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--resume", str(model), "--run-name", "changed"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"{PROG}: error: --resume {str(model)!r} was trained with --limits "
                    f"{str(limits.resolve())!r} of sha256 {sha(FIRST)}, but that file has "
                    f"changed since (sha256 now {sha(LATER)}): pass --limits FILE to train "
                    "on the file as it is now, or restore it")
    assert not (tmp_path / "changed").exists()
    # the file restored: resumed on it
    limits.write_bytes(FIRST)
    assert main([*base, "--resume", str(model), "--run-name", "restored"]) == 0
    record = json.loads((tmp_path / "restored" / "model.json").read_text())
    assert record["config"]["limits_sha256"] == sha(FIRST)
    assert record["changed_on_resume"] == {}
    # --limits FILE: today's meaning, the file as it is now, its hash recorded (read once)
    limits.write_bytes(LATER)
    reads.clear()
    capsys.readouterr()
    assert main([*base, "--resume", str(model), "--limits", str(limits),
                 "--run-name", "new"]) == 0
    assert reads == [str(limits)]
    assert without_notes(capsys.readouterr().err) == []
    record = json.loads((tmp_path / "new" / "model.json").read_text())
    assert record["config"]["limits_sha256"] == sha(LATER)
    assert record["checkpoint_env_settings"]["limits_sha256"] == sha(FIRST)
    assert record["changed_on_resume"] == {
        "limits_sha256": {"checkpoint": sha(FIRST), "now": sha(LATER)}}
    assert getattr(load_model(tmp_path / "new" / "model.zip"),
                   ENV_SETTINGS_ATTR)["limits_sha256"] == sha(LATER)
    # --limits '': the default limits, no hash
    assert main([*base, "--resume", str(model), "--limits", "", "--run-name", "none"]) == 0
    record = json.loads((tmp_path / "none" / "model.json").read_text())
    assert record["config"]["limits"] is None and record["config"]["limits_sha256"] is None


def test_a_checkpoint_without_a_limits_hash_resumes_unchecked(tmp_path):
    """A model saved before the hash was recorded: its limits file's bytes are unknown,
    so --resume reads the file as it is now (today's behaviour) and records that hash."""
    limits = tmp_path / "limits.toml"
    limits.write_bytes(FIRST)
    base = [*TINY, "--timesteps", "300", "--checkpoint-every", "0", "--logdir", str(tmp_path)]
    assert main([*base, "--limits", str(limits), "--run-name", "base"]) == 0
    model = load_model(tmp_path / "base" / "model.zip")
    older = {k: v for k, v in getattr(model, ENV_SETTINGS_ATTR).items()
             if k != "limits_sha256"}
    setattr(model, ENV_SETTINGS_ATTR, older)
    model.save(tmp_path / "older.zip")
    limits.write_bytes(LATER)
    assert main([*base, "--resume", str(tmp_path / "older.zip"), "--run-name", "again"]) == 0
    record = json.loads((tmp_path / "again" / "model.json").read_text())
    assert record["config"]["limits"] == str(limits.resolve())
    assert record["config"]["limits_sha256"] == sha(LATER)
    assert "limits_sha256" not in record["checkpoint_env_settings"]
    assert record["changed_on_resume"] == {}


def test_env_settings_store_the_limits_file_as_an_absolute_path(tmp_path, monkeypatch):
    """A model trained with ``--limits limits.toml`` (a relative path) records the file's
    absolute path, so ``--resume`` from another directory finds the same file."""
    (tmp_path / "limits.toml").write_bytes(b"[agents.battery_001]\nmax_discharge_mw = 0.0\n")
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(n_agents=5, limits="limits.toml")
    assert config.limits == "limits.toml"
    assert config.env_settings()["limits"] == str(tmp_path.resolve() / "limits.toml")
