"""``evaluate()`` as a library and Ctrl-C / SIGTERM (session 30).

A library must not replace the caller's signal handlers, and ``evaluate()`` does not:
SIGTERM keeps whatever handling the caller has (Python's default ends the process at
once; ``policies.cli_checks.sigterm_as_interrupt()`` gives the command line's). Whatever
it is, ``DIR`` is never left half-written: the tensorboard event file is written in the
temporary directory and moved into ``DIR`` with the other outputs at the end, and a
Ctrl-C or SIGTERM while those are written is held back until the last one is.

Before: the default SIGTERM in the middle of the episodes left a partial event file in
``DIR/tensorboard`` beside the earlier run's (two runs' points at the same steps), and a
Ctrl-C or SIGTERM while the outputs were written left a new results.json beside the
earlier run's results.md (and, for the command line, said the run was interrupted).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import evaluate
from tests.command_lines import _evaluate

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(scenarios="emergency", episodes=2, n_agents=5, trust="hmac", progress=False)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def event_tags(out: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files   # one run's scalars, no mixed curves
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    return {tag.split("/")[2] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def earlier(tmp_path) -> Path:
    """``tmp/out`` holding a finished run of ``random``."""
    out = tmp_path / "out"
    evaluate.evaluate(policies="random", out_dir=out, **SMALL)
    return out


def run_killed(tmp_path: Path, out: Path, patch: str) -> subprocess.CompletedProcess:
    """``evaluate(policies="heuristic")`` into ``out`` in a new process with Python's
    default SIGTERM handling, which ``patch`` (code run before) sends at some point."""
    script = textwrap.dedent(f"""
        import os, signal
        import evaluate, policies.rollout
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        {patch}
        evaluate.evaluate(policies="heuristic", out_dir={str(out)!r}, **{SMALL!r})
        print("returned")
        """)
    tmp = tmp_path / "tmp"   # the process's temporary directory (TMPDIR)
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_default_sigterm_during_the_episodes_leaves_dir_as_it_was(tmp_path, earlier):
    before = snapshot(earlier)
    proc = run_killed(tmp_path, earlier, textwrap.dedent("""
        real, calls = policies.rollout.run_episode, []
        def kill_second(*args, **kwargs):   # the no-DER baseline ran; then SIGTERM
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        policies.rollout.run_episode = kill_second
        """).replace("\n", "\n        "))
    assert proc.returncode == -signal.SIGTERM, proc.stderr   # Python's default: ended
    assert "returned" not in proc.stdout
    assert snapshot(earlier) == before   # no partial event file beside the earlier one
    # the unfinished event file is in the temporary directory, not in DIR
    assert list((tmp_path / "tmp").glob("gridswarm-evaluate-*/events.out.tfevents.*"))


def test_default_sigterm_while_the_outputs_are_written_takes_effect_after(tmp_path, earlier):
    proc = run_killed(tmp_path, earlier, textwrap.dedent("""
        real = evaluate.write_markdown
        def kill_then_write(*args, **kwargs):   # results.json is written: SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        evaluate.write_markdown = kill_then_write
        """).replace("\n", "\n        "))
    assert proc.returncode == -signal.SIGTERM, proc.stderr   # still ended, after writing
    assert "returned" not in proc.stdout
    results = json.loads((earlier / "results.json").read_text())
    assert results["summary"]["config"]["policies"] == ["heuristic"]
    assert "- policies: heuristic\n" in (earlier / "results.md").read_text()
    assert event_tags(earlier) == {"heuristic"}   # the earlier run's file removed
    assert not list((tmp_path / "tmp").iterdir())   # nothing left in the temporary dir


def test_ctrl_c_while_the_outputs_are_written_leaves_them_complete(tmp_path, earlier,
                                                                   monkeypatch):
    """In-process: the KeyboardInterrupt comes once every output is written, as an
    :class:`evaluate.EvaluationInterrupted` saying so; the handlers are the caller's."""
    real = evaluate.write_markdown

    def interrupt_then_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "write_markdown", interrupt_then_write)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(evaluate.EvaluationInterrupted) as stopped:
        evaluate.evaluate(policies="heuristic", out_dir=earlier, **SMALL)
    assert signal.getsignal(signal.SIGTERM) is handler
    assert str(stopped.value) == (f"interrupted after all 2 episodes, while its outputs "
                                  f"were written; they were written in full to "
                                  f"{str(earlier)!r}")
    assert stopped.value.written == earlier and stopped.value.saved is None
    assert "- policies: heuristic\n" in (earlier / "results.md").read_text()
    assert event_tags(earlier) == {"heuristic"}


def test_command_line_sigterm_while_the_outputs_are_written(tmp_path, earlier, capsys,
                                                            monkeypatch):
    real = evaluate.write_markdown

    def terminate_then_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "write_markdown", terminate_then_write)
    status, err = _evaluate(["--agents", "5", "--episodes", "2", "--policies", "heuristic",
                             "--trust", "hmac", "--scenarios", "emergency",
                             "--out", str(earlier)], capsys)
    assert status == 143
    assert err.strip() == (f"evaluate.py: interrupted by SIGTERM after all 2 episodes, "
                           f"while its outputs were written; they were written in full to "
                           f"{str(earlier)!r}")
    assert "- policies: heuristic\n" in (earlier / "results.md").read_text()
    assert event_tags(earlier) == {"heuristic"}


def test_ctrl_c_while_an_output_fails_does_not_say_they_were_written(tmp_path, earlier,
                                                                     monkeypatch):
    """A Ctrl-C held back while an output could not be written (results.md rescued to the
    temporary directory, the earlier run's files left in place) does not hide that: the
    interrupt says which output could not be written to ``DIR`` and where it went, not
    "they were written in full". Before: the KeyboardInterrupt raised
    when the handlers were put back replaced the OutputError, and the line said
    "they were written in full to DIR"."""
    real = evaluate.write_markdown

    def interrupt_then_fail(path, *args, **kwargs):
        if Path(path).parent == earlier:   # DIR's results.md cannot be written
            os.kill(os.getpid(), signal.SIGINT)
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(evaluate, "write_markdown", interrupt_then_fail)
    with pytest.raises(evaluate.EvaluationInterrupted) as stopped:
        evaluate.evaluate(policies="heuristic", out_dir=earlier, **SMALL)
    text = str(stopped.value)
    assert "written in full" not in text and stopped.value.written == earlier
    assert "could not write the results table (results.md)" in text, text
    rescued = [p for p in Path(tempfile.gettempdir()).glob("results-*.md")
               if "- policies: heuristic\n" in p.read_text()]
    assert len(rescued) == 1 and str(rescued[0]) in text, text
    rescued[0].unlink()
    shutil.rmtree(text.split("this run's tensorboard scalars are in '")[1].split("'")[0])
    assert "- policies: random\n" in (earlier / "results.md").read_text()   # left in place


def test_ctrl_c_after_the_episodes_before_the_outputs_are_written(tmp_path, earlier,
                                                                  monkeypatch):
    """A Ctrl-C once the last episode finished, while the results are summarized (before
    any output is written), is held back as one while they are written: the outputs
    are written in full and the temporary directory holds no event file. Before: a bare
    KeyboardInterrupt left evaluate() (the command line said only "interrupted"), the
    finished episodes were lost and the event file was left in the temporary
    directory."""
    real = evaluate.summarize

    def interrupt_then_summarize(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "summarize", interrupt_then_summarize)
    with pytest.raises(evaluate.EvaluationInterrupted) as stopped:
        evaluate.evaluate(policies="heuristic", out_dir=earlier, **SMALL)
    assert stopped.value.written == earlier, str(stopped.value)
    assert "- policies: heuristic\n" in (earlier / "results.md").read_text()
    assert event_tags(earlier) == {"heuristic"}
    assert not list(Path(tempfile.gettempdir()).glob("gridswarm-evaluate-*"))
