"""demo.py and a Ctrl-C or SIGTERM while the summary and the JSON are written (session 30).

As evaluate.py does with its outputs (tests/test_evaluate_signals.py), the signal is held
back until they are written (``policies.cli_checks.stop_signals_deferred``) and then
acts: exit status 130 (Ctrl-C) or 143 (SIGTERM) and one line saying the outputs were
written in full. Before: both were ignored there (``stop_signals_ignored``) and the
signal was lost: the demo exited 0 as if none had come.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_signalled_while_writing(tmp_path: Path, sig: signal.Signals,
                                json_path: Path) -> subprocess.CompletedProcess:
    """``demo.main`` (a short unpaced run with --json) in a new process whose
    ``write_json`` sends ``sig`` to the process, then writes the JSON."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)   # even if inherited ignored
        import demo
        real = demo.write_json
        def signal_then_write(*args, **kwargs):
            os.kill(os.getpid(), {int(sig)})
            return real(*args, **kwargs)
        demo.write_json = signal_then_write
        sys.exit(demo.main(["--agents", "5", "--steps", "3", "--trust", "hmac",
                            "--no-live", "--json", {str(json_path)!r}]))
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("sig, status, reason", [(signal.SIGTERM, 143, "terminated"),
                                                 (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_the_json_is_written_acts_after_it(tmp_path, sig, status, reason):
    out = tmp_path / "run.json"
    proc = run_signalled_while_writing(tmp_path, sig, out)
    assert proc.returncode == status, proc.stderr   # was 0: the signal was dropped
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"demo.py: {reason} after its last step, while the summary and the JSON were "
        f"written; they were written in full")
    doc = json.loads(out.read_text())   # written in full, for the whole run
    assert doc["run"]["interrupted"] is False and doc["run"]["steps_run"] == 3
    assert "system cost" in proc.stdout and f"wrote {out}" in proc.stdout
