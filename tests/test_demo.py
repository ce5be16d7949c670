"""Tests of demo.py (and dashboard.py) — mostly as a user runs it: as a subprocess.

* every scenario, ``--shadow``, ``--trust hmac --limits FILE``, the default policy and
  ``--policy learned`` run with ``--no-live --json`` (small fleets, ``--steps``); the
  JSON is strict and its records agree with the KPIs and with each other;
* bad flags exit non-zero with a one-line message and no traceback;
* Ctrl-C stops cleanly (summary printed, JSON written, exit 130), in plain mode
  (SIGINT) and in the live view (``^C`` typed into a pseudo-terminal);
* the live dashboard itself runs under a pseudo-terminal (``pty.fork``);
* in-process: the demo's per-step records equal :func:`policies.rollout.run_episode`'s
  trace for the same seed (differential check), accepted-offer lines agree with the
  market's pay-as-clear rule, and the helpers (sparkline, strict JSON) behave.

The subprocesses of one group are launched together (2-core machine, ~1 s of imports
each) and checked by separate tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # demo.py and dashboard.py are top-level scripts
    sys.path.insert(0, str(ROOT))

import dashboard  # noqa: E402
import demo  # noqa: E402
from gridswarm_env import audit as audit_cli  # noqa: E402
from gridswarm_env.metrics import KPI_KEYS  # noqa: E402
from tests.command_lines import TIMEOUT_S as CLI_TIMEOUT_S  # noqa: E402
from tests.command_lines import (  # noqa: E402
    UNWRITABLE,
    _one_line_error,
    _unwritable_here,
    counted_scenario_file,
)

TIMEOUT_S = 120
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
HAS_HEURISTIC = (ROOT / "policies" / "heuristic.py").is_file()
MODEL = demo.default_model_path()
HAS_MODEL = MODEL is not None and MODEL.is_file()


def _cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "demo.py"), *args]


def _strict_load(text: str) -> dict:
    """json.loads that refuses NaN/Infinity (strict JSON)."""

    def refuse(name: str):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _launch(cases: dict[str, list[str]], tmp: Path, with_json: bool = True) -> dict[str, dict]:
    """Start every case at once, wait for all; returns rc, stdout, stderr, json per case."""
    procs = {}
    for name, args in cases.items():
        extra = ["--json", str(tmp / f"{name}.json")] if with_json else []
        cmd = _cmd(*(a.format(tmp=tmp) for a in args), *extra)
        if name == "model_path":
            cmd = [sys.executable, "-c", MODEL_THEN_DEMO, str(tmp / "tiny_model.zip"), *cmd[2:]]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=TIMEOUT_S)
        path = tmp / f"{name}.json"
        out[name] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr,
                     "json": _strict_load(path.read_text()) if path.exists() else None}
    return out


# ---------------------------------------------------------------------- good runs
SMALL = ("--agents", "20", "--no-live")
RUNS = {
    "price_spike": [*SMALL, "--scenario", "price_spike", "--policy", "random", "--steps", "40"],
    "solar_surplus": [*SMALL, "--scenario", "solar_surplus", "--policy", "random",
                      "--steps", "40"],
    "emergency": [*SMALL, "--scenario", "emergency", "--policy", "random", "--steps", "14"],
    "shadow": [*SMALL, "--scenario", "price_spike", "--policy", "random", "--steps", "40",
               "--shadow"],
    # the price_spike run again, with HMAC trust and a limits file (added in the fixture)
    "hmac_limits": [*SMALL, "--scenario", "price_spike", "--policy", "random", "--steps", "40",
                    "--trust", "hmac", "--seed", "0"],
}
if HAS_HEURISTIC:
    RUNS["default_policy"] = ["--agents", "20", "--no-live", "--steps", "30"]
if HAS_MODEL:
    RUNS["learned"] = [*SMALL, "--policy", "learned", "--steps", "10"]
# --policy PATH with a freshly built (untrained) MaskablePPO model, shipped model or not
# (named without ".zip": python -m train --out m2 writes m2.zip, and SB3 appends .zip)
RUNS["model_path"] = [*SMALL, "--policy", "{tmp}/tiny_model", "--steps", "10"]
SCENARIO_RUNS = ("price_spike", "solar_surplus", "emergency")

#: Saves an untrained MaskablePPO model with gridswarm's spaces to argv[1], then runs
#: demo.py as ``__main__`` with argv[2:] (one process, so torch loads once).
MODEL_THEN_DEMO = """
import runpy, sys
import gymnasium as gym, numpy as np
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from gridswarm_env.env import OBS_DIM

class Spaces(gym.Env):
    observation_space = spaces.Box(-5.0, 5.0, (OBS_DIM,), np.float32)
    action_space = spaces.MultiDiscrete([21, 11])

MaskablePPO("MlpPolicy", Spaces(), seed=0, device="cpu",
            policy_kwargs={"net_arch": [16]}).save(sys.argv[1])
sys.argv = ["demo.py", *sys.argv[2:]]
runpy.run_path("demo.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("demo_runs")
    limits = tmp / "limits.toml"
    limits.write_text("[battery]\nmax_discharge_mw = 0.0\n")
    cases = dict(RUNS)
    cases["hmac_limits"] = [*cases["hmac_limits"], "--limits", str(limits)]
    return _launch(cases, tmp)


def _check_common(res: dict, n_steps: int, scenario: str) -> dict:
    assert res["rc"] == 0, res["stderr"]
    assert "Traceback" not in res["stderr"]
    doc = res["json"]
    assert set(doc) == {"run", "steps", "metrics"}
    steps, metrics = doc["steps"], doc["metrics"]
    assert len(steps) == n_steps == doc["run"]["steps_run"] == metrics["steps"]
    run = doc["run"]
    assert run["agent_steps_per_s"] == pytest.approx(n_steps * run["n_agents"] / run["wall_s"])
    assert doc["run"]["interrupted"] is False and metrics["scenario"] == scenario
    assert set(KPI_KEYS) <= set(metrics)
    assert metrics["executed_violations"] == 0
    # plain output: one line per step, in order, then the summary table
    lines = [ln for ln in res["stdout"].splitlines() if ln.startswith("t=")]
    assert len(lines) == n_steps
    for line, rec in zip(lines, steps, strict=True):
        assert line.startswith(f"t={rec['t_s']:7.1f}s f={rec['freq_hz']:8.4f}Hz "
                               f"need={rec['requirement_mw']:+7.2f}MW "
                               f"request={rec['request_mw']:+7.2f}MW ")
        assert f"blocked={rec['blocked']:4d}" in line
    assert "system cost" in res["stdout"] and "executed violations" in res["stdout"]
    assert "╭" not in res["stdout"]   # no dashboard panel drawn in plain mode
    # per-step records are consistent with the final KPIs
    assert [r["step"] for r in steps] == list(range(n_steps))
    assert sum(r["negotiations"] for r in steps) == metrics["negotiations"]
    assert sum(r["contracts_signed"] for r in steps) == metrics["contracts_signed"]
    assert steps[-1]["contracts_signed_total"] == metrics["contracts_signed"]
    assert sum(r["blocked"] for r in steps) == metrics["blocked_attempts"]
    nadir = min(60.0, *(r["freq_min_hz"] for r in steps))   # the KPI starts at 60 Hz
    assert nadir == pytest.approx(metrics["frequency_nadir_hz"])
    for r in steps:
        assert 0 <= r["ders_active"] <= 20 and 0 <= r["ders_contracted"] <= 20
        price = r["clearing_price_per_mwh"]
        assert (price is None) == (r["negotiations"] == 0)
        assert len(r["offers"]) <= 3 and (r["offers"] == [] or r["negotiations"] > 0)
    return doc


@pytest.mark.parametrize("scenario", SCENARIO_RUNS)
def test_every_scenario_runs_plain_with_json(runs, scenario) -> None:
    n = int(RUNS[scenario][RUNS[scenario].index("--steps") + 1])
    doc = _check_common(runs[scenario], n, scenario)
    steps = doc["steps"]
    assert any(r["negotiations"] > 0 for r in steps), "no market round cleared"
    assert any(r["offers"] for r in steps)
    assert any(r["ders_active"] > 0 for r in steps)
    for r in steps:   # without shadow, executed = would-be dispatch
        assert r["delivered_mw"] == pytest.approx(r["would_dispatch_mw"])
    out = runs[scenario]["stdout"]
    lines = [ln for ln in out.splitlines() if ln.startswith("t=")]
    for line, r in zip(lines, steps, strict=True):
        assert f" deliv={r['delivered_mw']:+7.2f}MW price=" in line
    # event lines printed under their step, e.g. "15 agents reach agreement …"
    assert re.search(r"^\s+\[\s*\d+\.\d s\] \d+ agents reach agreement", out, re.M)
    assert re.search(r"^\s+\[\s*\d+\.\d s\] \w+_\d{3} (offers|bids to absorb) \d+\.\d\d MW",
                     out, re.M)


def test_emergency_event_and_response_are_reported(runs) -> None:
    doc = runs["emergency"]["json"]
    steps, m = doc["steps"], doc["metrics"]
    events = [e for r in steps for e in r["events"]]
    assert any(e.startswith("EMERGENCY: 100 MW lost at t = 10.0 s") for e in events)
    assert any("reserve" in o for r in steps for o in r["offers"])
    assert m["emergency_response_latency_ms"] is not None
    assert 0 < m["emergency_response_latency_ms"] <= 100
    assert steps[-1]["lost_generation_mw"] == 100.0 and steps[0]["lost_generation_mw"] == 0.0
    assert "EMERGENCY: 100 MW lost" in runs["emergency"]["stdout"]
    # review: after the trip the lines read "req=   +0.00MW deliv= +100.00MW" (the
    # reserve covers the requirement, the request is what remains), which looked like
    # 100 MW over-delivered; they show the requirement beside the request now
    lines = [ln for ln in runs["emergency"]["stdout"].splitlines() if ln.startswith("t=")]
    after = [(ln, r) for ln, r in zip(lines, steps, strict=True) if r["t_s"] > 11.0]
    assert after and all(r["requirement_mw"] >= 99.0 for _, r in after)
    for line, r in after:
        assert (f"need={r['requirement_mw']:+7.2f}MW request={r['request_mw']:+7.2f}MW "
                f"deliv={r['delivered_mw']:+7.2f}MW") in line
    # review: the summary lacked the RoCoF and the largest deviation (DESIGN §8), the
    # emergency's protection KPIs; they are printed from the run's own KPI dict
    summary = runs["emergency"]["stdout"]
    summary = summary[summary.rfind("KPI summary"):]
    for label, value, unit in (
            ("max. RoCoF (rate of change of f)", f"{m['max_rocof_hz_per_s']:.4f}", "Hz/s"),
            ("max. deviation from 60 Hz", f"{m['max_abs_deviation_hz']:.4f}", "Hz"),
            ("contracts lost (never delivered)", f"{m['contracts_lost']:d}", "")):
        assert re.search(rf"│ {re.escape(label)}\s+│\s+{re.escape(value)} │ {re.escape(unit)}\s*│",
                         summary), label
    assert m["max_rocof_hz_per_s"] > 0 and m["max_abs_deviation_hz"] > 0


def test_shadow_mode_dispatches_nothing_and_is_marked(runs) -> None:
    doc = _check_common(runs["shadow"], 40, "price_spike")
    steps = doc["steps"]
    assert doc["metrics"]["shadow"] is True and doc["run"]["shadow"] is True
    assert all(r["delivered_mw"] == 0.0 and r["ders_active"] == 0 for r in steps)
    assert any(r["would_dispatch_mw"] > 0 for r in steps), "nothing would have been dispatched"
    assert any(r["ders_contracted"] > 0 for r in steps)
    lines = [ln for ln in runs["shadow"]["stdout"].splitlines() if ln.startswith("t=")]
    assert all(ln.endswith("[SHADOW]") for ln in lines)
    assert "SHADOW mode" in runs["shadow"]["stdout"]
    # first-use review: the lines showed deliv= +0.00MW and the summary only the table's
    # "— (none)" latency; the would-be figures were only in --json
    for line, r in zip(lines, steps, strict=True):
        assert f"would-deliv={r['would_dispatch_mw']:+7.2f}MW" in line and " deliv=" not in line
    summary = " ".join(runs["shadow"]["stdout"].split())
    energy = doc["metrics"]["shadow_dispatch_energy_mwh"]
    assert energy > 0 and f"energy that would have been dispatched {energy:.4f} MWh" in summary
    assert "SHADOW mode, would-be (nothing was dispatched): emergency response latency" in summary


def test_shadow_summary_shows_the_would_be_latency() -> None:
    text = demo.shadow_summary({"shadow_response_latency_ms": 20.72,
                                "shadow_dispatch_energy_mwh": 3.0545})
    assert text == ("SHADOW mode, would-be (nothing was dispatched): emergency response latency "
                    "20.7 ms; energy that would have been dispatched 3.0545 MWh")


def test_hmac_trust_and_limits_file(runs) -> None:
    doc = _check_common(runs["hmac_limits"], 40, "price_spike")
    assert doc["metrics"]["trust"] == "hmac" and doc["run"]["seed"] == 0
    assert doc["run"]["limits_path"].endswith("limits.toml")
    # Batteries may not discharge (max_discharge_mw = 0): in the evening ramp only EV
    # fleets (deferring charging) can sell, so no battery offer ever clears; the same
    # seed without the file sells battery energy.
    limited = [o for r in doc["steps"] for o in r["offers"]]
    assert not any(o.startswith("battery_") for o in limited)
    unlimited = [o for r in runs["price_spike"]["json"]["steps"] for o in r["offers"]]
    assert any(o.startswith("battery_") for o in unlimited)


@pytest.mark.skipif(not HAS_HEURISTIC, reason="policies/heuristic.py not written yet")
def test_default_policy_is_heuristic(runs) -> None:
    doc = _check_common(runs["default_policy"], 30, "price_spike")
    assert doc["run"]["policy_name"] == "heuristic" and doc["run"]["n_agents"] == 20
    assert doc["run"]["trust"] == "ed25519"


@pytest.mark.skipif(not HAS_MODEL, reason=f"no pretrained model at {MODEL} yet "
                    "(policies/learned.py's DEFAULT_MODEL; train one with python -m train)")
def test_learned_policy_runs(runs) -> None:
    doc = _check_common(runs["learned"], 10, "price_spike")
    assert doc["run"]["policy_name"] == "learned"


def test_policy_path_loads_a_saved_model(runs) -> None:
    doc = _check_common(runs["model_path"], 10, "price_spike")
    assert doc["run"]["policy_name"] == "learned"
    assert doc["run"]["policy"].endswith("tiny_model")
    # first-use review: a path without .zip was refused as "does not exist", and the
    # summary said "policy learned" as for the shipped model; it names the file loaded
    assert doc["run"]["model_path"].endswith("tiny_model.zip")
    summary = runs["model_path"]["stdout"]
    assert f"policy learned (model {doc['run']['model_path']})" in " ".join(summary.split())


# ---------------------------------------------------------------------- bad flags
BAD = {
    "agents_zero": (["--agents", "0"], "--agents"),
    "agents_text": (["--agents", "many"], "--agents"),
    "unknown_scenario": (["--scenario", "blackout"], "blackout"),
    "missing_scenario_file": (["--scenario", "{tmp}/none.toml"],
                              "--scenario: scenario file '"),   # ... none.toml' does not exist
    "bad_scenario_file": (["--scenario", "{tmp}/bad.toml"], "bad.toml' is not valid TOML"),
    "unknown_policy": (["--policy", "genius"], "unknown policy 'genius'"),
    "missing_model": (["--policy", "no/such/model.zip"], "does not exist"),
    "corrupt_model": (["--policy", "{tmp}/corrupt.zip"], "corrupt.zip"),
    "missing_limits": (["--policy", "random", "--limits", "{tmp}/none.toml"], "none.toml"),
    "bad_limits_toml": (["--policy", "random", "--limits", "{tmp}/bad.toml"], "not valid TOML"),
    "limits_unknown_agent": (["--policy", "random", "--limits", "{tmp}/agent.toml"],
                             "battery_999"),
    "steps_zero": (["--steps", "0"], "--steps"),
    "bad_trust": (["--trust", "rsa"], "--trust"),
    "json_dir_missing": (["--policy", "random", "--json", "{tmp}/no/dir/out.json"], "no/dir"),
}
if not HAS_MODEL:
    BAD["learned_without_model"] = (["--policy", "learned"], "python -m train")


def test_learned_without_a_shipped_model_says_how_to_train_one(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(demo, "default_model_path", lambda: tmp_path / "gridswarm_ppo.zip")
    with pytest.raises(demo.DemoError, match=r"no pretrained model at .*python -m train"):
        demo.build_policy("learned")


def _bad_files(tmp: Path) -> None:
    (tmp / "corrupt.zip").write_bytes(b"this is not a model")
    (tmp / "bad.toml").write_text("[battery\n")
    (tmp / "agent.toml").write_text("[agents.battery_999]\nsoc_min = 0.3\n")


def _bad_args(case: str, tmp: Path) -> list[str]:
    # a small fleet first; a case's own --agents comes later and wins
    return ["--agents", "5", "--no-live", *(a.format(tmp=tmp) for a in BAD[case][0])]


def _check_one_line_error(case: str, rc: int, stdout: str, stderr: str) -> None:
    assert rc == demo.EXIT_USAGE, (case, stdout, stderr)
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("demo.py: error: ")
    assert BAD[case][1] in lines[0], lines[0]
    assert stdout == ""


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_flags_exit_with_one_line_message(case, tmp_path, capsys) -> None:
    """Every bad input through demo.main (in-process: a traceback would escape main)."""
    _bad_files(tmp_path)
    try:
        rc = demo.main(_bad_args(case, tmp_path))
    except SystemExit as exc:   # argparse's errors
        rc = exc.code
    out = capsys.readouterr()
    _check_one_line_error(case, rc, out.out, out.err)


def test_bad_flags_as_subprocesses(tmp_path) -> None:
    """The same, as a user sees it, for one error of each stage: argument parsing,
    policy loading, limits checked at reset."""
    _bad_files(tmp_path)
    cases = ("agents_zero", "corrupt_model", "limits_unknown_agent")
    procs = {c: subprocess.Popen(_cmd(*_bad_args(c, tmp_path)), cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cases}
    for case, p in procs.items():
        stdout, stderr = p.communicate(timeout=TIMEOUT_S)
        _check_one_line_error(case, p.returncode, stdout, stderr)


# ---------------------------------------------------------------------- Ctrl-C, plain
#: the stdout pipe of a demo a test interrupts (``Popen(pipesize=...)``; Linux only,
#: ignored elsewhere): one page, so the unread demo blocks a few steps in
INTERRUPTED_PIPE_BYTES = 4096


@contextlib.contextmanager
def _children_take_sigint() -> Iterator[None]:
    """Processes started inside get SIGINT's default disposition (Python's: raise
    KeyboardInterrupt) even when this process ignores SIGINT.

    A shell without job control starts ``cmd &`` with SIGINT ignored (so that a Ctrl-C
    at the terminal spares it; the tool shells here do so too), its children inherit
    that across exec, and Python keeps an inherited SIG_IGN: under a pytest started so,
    demo.py ran its 300 steps through the tests' SIGINT and exited 0 (``assert 0 == 130``
    in the three Ctrl-C tests; session 28). A handler, unlike SIG_IGN, is reset to the
    default at exec: one is installed here while the child starts (this main thread
    only; SIG_IGN is back afterwards). (A child forked by Python, as in
    :func:`_run_in_pty`, sets SIG_DFL itself before its exec.)"""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_demo_to_interrupt(*args: str) -> subprocess.Popen:
    """demo.py with ``args``, returned once its first step line was read (the episode
    is running) and ready for a SIGINT.

    However late this process then sends it (CPU load), the episode cannot have ended:
    nothing reads stdout until ``communicate()`` and the pipe holds one page, so the
    demo blocks writing its lines a few steps in. (With Linux's default 64 KiB pipe it
    ran to step ~203 of 300 first, ~72 kB of the ~89 kB of step lines; a kernel with
    64 KiB pages has 1 MiB pipes, which hold them all.)"""
    with _children_take_sigint():
        p = subprocess.Popen(_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             pipesize=INTERRUPTED_PIPE_BYTES)
    first = p.stdout.readline()
    assert first.startswith("t="), first + p.stderr.read()
    return p


def test_children_take_sigint_even_when_this_process_ignores_it() -> None:
    """The Ctrl-C tests' children (a pipe or a pseudo-terminal) raise KeyboardInterrupt
    on SIGINT under a pytest that ignores it (started as ``python -m pytest ... &``);
    SIG_IGN is restored here afterwards. Without :func:`_children_take_sigint` and the
    reset in :func:`_run_in_pty`'s child the probe prints False."""
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) "
             "is signal.default_int_handler)"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _children_take_sigint():
            piped = subprocess.run(probe, capture_output=True, text=True,
                                   timeout=CLI_TIMEOUT_S).stdout
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        rc, on_terminal = _run_in_pty([], command=probe)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (piped, rc, on_terminal.strip()) == ("True\n", 0, "True")


def test_sigint_stops_cleanly_and_still_writes_summary_and_json(tmp_path) -> None:
    out = tmp_path / "int.json"
    p = _start_demo_to_interrupt("--agents", "100", "--policy", "random", "--no-live",
                                 "--json", str(out))
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=TIMEOUT_S)
    assert p.returncode == demo.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert "interrupted after" in stdout and "system cost" in stdout
    doc = _strict_load(out.read_text())
    assert doc["run"]["interrupted"] is True and doc["run"]["stop_reason"] == "interrupted"
    assert 1 <= len(doc["steps"]) < 300
    assert doc["metrics"]["steps"] >= len(doc["steps"])
    assert doc["run"]["steps_run"] == len(doc["steps"])
    assert f"interrupted after {len(doc['steps'])}/300 steps" in stdout


def test_sigterm_stops_as_ctrl_c_does_and_exits_143(tmp_path) -> None:
    """Session 28: SIGTERM (``timeout``, ``kill``, a cancelled CI job) ended demo.py at
    once (status -15): no summary, no --json. Now it stops as Ctrl-C does, the JSON's
    ``stop_reason`` is ``"terminated"``, and the status is 143 (128 + SIGTERM), as for
    ``python -m train``."""
    out = tmp_path / "term.json"
    p = _start_demo_to_interrupt("--agents", "100", "--policy", "random", "--no-live",
                                 "--json", str(out))
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=TIMEOUT_S)
    assert p.returncode == 143, stderr   # was -15: killed
    assert "Traceback" not in stderr
    doc = _strict_load(out.read_text())
    assert doc["run"]["interrupted"] is True and doc["run"]["stop_reason"] == "terminated"
    assert 1 <= len(doc["steps"]) < 300
    assert f"terminated (SIGTERM) after {len(doc['steps'])}/300 steps" in stdout
    assert "system cost" in stdout


# ---------------------------------------------------------------------- live, under a pty
def _run_in_pty(args: list[str], interrupt_after: str | None = None,
                cols: int = 110, rows: int = 42,
                command: list[str] | None = None) -> tuple[int, str]:
    """Run demo.py with ``args`` (or ``command``) on a pseudo-terminal; optionally type
    ^C once ``interrupt_after`` appears. Returns (exit status, output without ANSI
    escapes)."""
    env = {**os.environ, "COLUMNS": str(cols), "LINES": str(rows), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    command = command or _cmd(*args)
    pid, fd = pty.fork()
    if pid == 0:   # child: the pty is its controlling terminal
        try:
            # ^C raises KeyboardInterrupt even under a pytest that ignores SIGINT (an
            # ignored signal stays so across exec): see _children_take_sigint
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(ROOT)
            os.execve(command[0], command, env)
        finally:
            os._exit(127)
    chunks: list[bytes] = []
    sent = False
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        if (interrupt_after and not sent
                and interrupt_after in ANSI.sub("", b"".join(chunks).decode(errors="replace"))):
            os.write(fd, b"\x03")   # the terminal turns ^C into SIGINT
            sent = True
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", errors="replace"))
    return os.waitstatus_to_exitcode(status), text


def test_live_dashboard_under_a_pseudo_terminal() -> None:
    rc, text = _run_in_pty(["--agents", "20", "--scenario", "emergency", "--policy", "random",
                            "--steps", "25"])
    assert rc == 0, text[-2000:]
    assert "Traceback" not in text
    frame = text[text.rfind("gridswarm  emergency"):]
    for label in ("20 DERs", "policy random", "trust ed25519", "finished", "frequency",
                  "band (NERC)", "59.95–60.05 Hz", "grid load", "DERs active",
                  "clearing price", "negotiations/s", "consensus rate", "emergency resp.",
                  "contracts signed", "blocked attempts", "executed violations",
                  "agent message bus", "market events", "EMERGENCY: 100 MW lost"):
        assert label in frame, label
    assert re.search(r"last \d+ steps\s+[▁▂▃▄▅▆▇█]{5,}", frame)   # the sparkline
    assert re.search(r"emergency resp\.\s+\d+\.\d ms", frame)   # measured latency
    assert "system cost" in text[text.rfind("KPI summary"):]
    assert not re.search(r"^t=\s*\d", text, re.M)   # no plain lines on a terminal


def test_live_dashboard_ctrl_c_and_shadow_banner(tmp_path) -> None:
    out = tmp_path / "live.json"
    rc, text = _run_in_pty(["--agents", "100", "--policy", "random", "--shadow",
                            "--json", str(out)], interrupt_after="SHADOW MODE")
    assert rc == demo.EXIT_INTERRUPTED, text[-2000:]
    assert "Traceback" not in text
    assert "nothing is dispatched to the grid" in text
    assert "interrupted after" in text and "system cost" in text
    doc = _strict_load(out.read_text())
    assert doc["run"]["interrupted"] is True and doc["run"]["live"] is True
    assert len(doc["steps"]) < 300


# ---------------------------------------------------------------------- in-process
@pytest.fixture(scope="module")
def session_run():
    """A 20-agent random run of 60 price_spike steps, through demo's own functions."""
    opts = demo.DemoOptions(n_agents=20, scenario="price_spike", policy="random", seed=5,
                            max_steps=60, live=False, trust="hmac", offers_per_step=50)
    lines: list[str] = []
    session = demo.open_session(opts)
    result = demo.run_demo(session, write=lines.append)
    return session, result, lines


def test_records_equal_run_episode_trace_for_the_same_seed(session_run) -> None:
    import gridswarm_env
    from policies import make_policy
    from policies.rollout import run_episode

    _, result, lines = session_run
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac")
    ref = run_episode(env, make_policy("random"), seed=5, max_steps=60)
    for key in ("t_s", "freq_hz", "freq_min_hz", "request_mw", "delivered_mw",
                "accepted_mw", "negotiations", "blocked"):
        assert [r[key] for r in result.steps] == ref.trace[key], key
    prices = [r["clearing_price_per_mwh"] for r in result.steps]
    assert all((math.isnan(a) and math.isnan(b)) or a == b
               for a, b in zip(prices, ref.trace["clearing_price_per_mwh"], strict=True))
    for key in KPI_KEYS:
        assert result.metrics[key] == ref.metrics[key], key
    assert sum(ln.startswith("t=") for ln in lines) == 60


def test_offer_lines_follow_pay_as_clear(session_run) -> None:
    """Listed offers are accepted bids: priced at or below the clearing price in a
    shortage (at or above in a surplus), listed in merit order, and as many as the
    round accepted (offers_per_step=50 lists them all)."""
    pattern = re.compile(r"^(\w+_\d{3}) (offers|bids to absorb) (\d+\.\d\d) MW at "
                         r"\$(-?\d+)/MWh(?:, (\d+\.\d\d) MW accepted)?$")
    _, result, _ = session_run
    checked = 0
    for r in result.steps:
        if not r["negotiations"]:
            continue
        parsed = [pattern.match(o) for o in r["offers"]]
        assert all(parsed), r["offers"]
        assert len(parsed) == r["negotiations"]
        prices = [int(m[4]) for m in parsed]
        clearing = r["clearing_price_per_mwh"]
        accepted = sum(float(m[5] or m[3]) for m in parsed)
        assert accepted == pytest.approx(abs(r["accepted_mw"]), abs=0.01 * len(parsed) + 1e-6)
        if r["accepted_mw"] > 0:
            assert all(m[2] == "offers" for m in parsed)
            assert prices == sorted(prices) and max(prices) <= clearing + 1e-9
        else:
            assert all(m[2] == "bids to absorb" for m in parsed)
            assert prices == sorted(prices, reverse=True) and min(prices) >= clearing - 1e-9
        for m in parsed:   # a partly accepted bid offered more than it got
            if m[5] is not None:
                assert float(m[5]) < float(m[3])
        checked += 1
    assert checked >= 5


def test_same_seed_same_records() -> None:
    def records() -> list[dict]:
        opts = demo.DemoOptions(n_agents=10, scenario="solar_surplus", policy="random",
                                seed=11, max_steps=40, live=False, trust="hmac")
        res = demo.run_demo(demo.open_session(opts), write=lambda _line: None)
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in res.steps]

    a, b = records(), records()
    assert json.dumps(demo.strict_json(a)) == json.dumps(demo.strict_json(b))


def test_dashboard_shows_the_measured_values(session_run) -> None:
    session, result, _ = session_run
    raw = session.raw
    dash = dashboard.Dashboard({"scenario": "price_spike", "n_agents": 20, "policy": "random",
                                "trust": "hmac", "seed": 5, "shadow": True,
                                "episode_steps": 300, "dt_s": 1.0, "has_event": False})
    for r in result.steps:
        dash.update(r, result.metrics, raw.bus.stats())
    console = Console(file=io.StringIO(), width=110, height=45, record=True,
                      color_system=None, force_terminal=False)
    console.print(dash)
    text = console.export_text()
    last, m = result.steps[-1], result.metrics
    assert f"{last['freq_hz']:.4f} Hz" in text
    assert f"{m['frequency_nadir_hz']:.4f} / {m['frequency_zenith_hz']:.4f} Hz" in text
    assert f"{last['grid_load_mw']:,.1f} MW" in text
    shown = re.search(r"last (\d+) steps\s+([▁▂▃▄▅▆▇█]+)", text)
    assert shown and int(shown[1]) == len(shown[2]) == min(len(result.steps), dash.spark_width)
    assert "SHADOW MODE" in text and "no event" in text
    assert f"{m['contracts_signed']:,d}" in text
    assert len(text.splitlines()) <= 45   # the feed shrinks to fit the terminal


@pytest.mark.parametrize("rows", [24, 30])
def test_a_short_terminal_gets_the_compact_layout_whole(session_run, rows) -> None:
    """First-use review: the full layout needs ~34 rows, so on an 80 x 24 terminal the
    live view cropped the trust, kernel and bus panels (executed violations included)
    until the last frame. Shorter terminals get the compact layout, which fits."""
    session, result, _ = session_run
    dash = dashboard.Dashboard({"scenario": "price_spike", "n_agents": 20, "policy": "random",
                                "trust": "hmac", "seed": 5, "shadow": False,
                                "episode_steps": 300, "dt_s": 1.0, "has_event": False})
    for r in result.steps:
        dash.update(r, result.metrics, session.raw.bus.stats())

    def frame(height: int) -> str:
        console = Console(file=io.StringIO(), width=80, height=height, record=True,
                          color_system=None, force_terminal=False)
        console.print(dash)
        return console.export_text()

    text, m = frame(rows), result.metrics
    assert len(text.splitlines()) <= rows - 1   # one row for the cursor under a live view
    lanes = session.raw.bus.stats()["lanes"].values()
    published = sum(s["published"] for s in lanes)
    bus = [f"{dashboard.compact_count(sum(s[key] for s in lanes))} {key}"
           for key in ("delivered", "deferred", "dropped")]
    for shown in (*bus, f"kernel {m['executed_violations']} violations",
                  f"{m['blocked_attempts']} blocked attempts",
                  f"contracts {m['contracts_signed']:,d} signed",
                  f"{m['contracts_verified']:,d} verified",
                  f"bus {dashboard.compact_count(published)} published",
                  f"{result.steps[-1]['freq_hz']:.4f} Hz", "market events"):
        assert shown in text, shown
    full = frame(40)   # tall enough: the full layout, as before
    assert "agent message bus" in full and "band (NERC)" in full
    assert "agent message bus" not in text and len(full.splitlines()) <= 39


def test_sparkline_and_frequency_colours() -> None:
    assert dashboard.sparkline([0, 1, 2, 3, 4, 5, 6, 7], 0, 7) == dashboard.SPARK_BLOCKS
    assert dashboard.sparkline([-5, 50], 0, 10) == "▁█"          # clipped
    assert dashboard.sparkline([1.0, 2.0], 3.0, 3.0) == "▄▄"      # degenerate scale
    text = dashboard.frequency_sparkline([60.0, 59.9, 60.06, 60.04])
    console = Console(file=io.StringIO())
    styles = [str(text.get_style_at_offset(console, i)) for i in range(4)]
    assert styles[0] == styles[3] and "green" in styles[0]
    assert "red" in styles[1] and "red" in styles[2]
    assert str(text)[1] == "▁" and str(text)[2] == "█"   # scale = [59.9, 60.06]


def test_strict_json_and_compact_counts() -> None:
    doc = demo.strict_json({"a": float("nan"), "b": [np.float64("inf"), np.int64(3)],
                            "c": (np.bool_(True), -math.inf), 4: np.array([1.5, np.nan])})
    assert doc == {"a": None, "b": [None, 3], "c": [True, None], "4": [1.5, None]}
    json.dumps(doc, allow_nan=False)
    counts = (950, 9999, 60_100, 99_999, 654_321, 999_999, 1_234_567, 12_345_678, None)
    assert [dashboard.compact_count(n) for n in counts] == \
        ["950", "9,999", "60.1k", "100k", "654k", "1.00M", "1.23M", "12.3M", "—"]


def test_options_are_validated() -> None:
    """Messages name the command-line flag and what is allowed (first-use review: they
    named the dataclass fields, ``DemoOptions.n_agents = 2000000``)."""
    with pytest.raises(ValueError, match=r"^--agents 0: expected an integer from 1 to 1,000,000"):
        demo.DemoOptions(n_agents=0)
    with pytest.raises(ValueError, match=r"^--agents 1000000000: expected an integer from 1 "
                                         r"to 1,000,000"):
        demo.DemoOptions(n_agents=10**9)   # it allocated for minutes before the env refused
    with pytest.raises(ValueError, match=r"^--scenario: unknown scenario 'x'.*price_spike"):
        demo.DemoOptions(scenario="x")
    with pytest.raises(ValueError, match=r"^--trust 'rsa': expected one of ed25519, hmac"):
        demo.DemoOptions(trust="rsa")
    with pytest.raises(ValueError, match=r"^--steps 0: expected an integer >= 1"):
        demo.DemoOptions(max_steps=0)
    from policies.cli_checks import max_crypto_threads

    cores = max_crypto_threads()
    with pytest.raises(ValueError, match=rf"^--crypto-threads {cores + 1}: expected an integer "
                                         rf"from 1 to {cores} \(the cores this process"):
        demo.DemoOptions(crypto_threads=cores + 1)
    with pytest.raises(demo.DemoError, match="unknown policy"):
        demo.build_policy("genius")


@pytest.mark.parametrize(("field", "value", "stored"), [
    ("n_agents", np.int64(5), 5), ("seed", np.int64(0), 0), ("seed", np.uint8(3), 3),
    ("max_steps", np.int32(4), 4), ("offers_per_step", np.int16(2), 2),
    ("speed", np.int64(2), 2.0), ("speed", np.float32(0.5), 0.5),
])
def test_numpy_numbers_are_accepted_and_stored_as_python_ones(field, value, stored) -> None:
    """Fuzzing (session 23): ``DemoOptions(n_agents=np.int64(5))`` and ``seed=np.int64(0)``
    were refused ("expected an integer ..."), unlike ``EnvConfig``; they are stored as a
    Python int (float for ``speed``) so the ``--json`` record stays plain JSON."""
    got = getattr(demo.DemoOptions(live=False, **{field: value}), field)
    assert got == stored and type(got) is type(stored)
    with pytest.raises(ValueError, match=r"^\S+ np.True_: expected "):
        demo.DemoOptions(live=False, **{field: np.True_})   # numpy bools stay refused


def test_oracle_says_it_is_planning_before_the_first_step(capsys, monkeypatch) -> None:
    """First-use review: ``--policy oracle --agents 1000`` sat silent for minutes while
    the oracle solved its episode LP at reset; a status line now says so first. Review:
    the order is checked where planning starts (the notice already on stderr)."""
    from policies import oracle

    seen: list[str] = []
    build_problem = oracle.problem_from_env

    def planning_starts(raw):
        seen.append(capsys.readouterr().err)   # stderr so far, when planning starts
        return build_problem(raw)

    monkeypatch.setattr(oracle, "problem_from_env", planning_starts)
    opts = demo.DemoOptions(n_agents=10, scenario="price_spike", policy="oracle",
                            max_steps=2, live=False, trust="hmac")
    session = demo.open_session(opts)
    assert len(seen) == 1
    assert "oracle: planning the episode (LP, 10 agents × 300 steps;" in seen[0]
    assert "planning the episode" not in capsys.readouterr().err   # not printed again
    assert session.policy.plan is not None
    assert demo.planning_notice(demo.build_policy("random"), session.raw) is None


def test_steps_message_names_the_flag_and_no_python_none(capsys) -> None:
    """Review: ``DemoOptions(max_steps=0)`` says "or None" (right for the API); the
    command line must name ``--steps`` and not offer ``None``, which cannot be typed."""
    with pytest.raises(ValueError, match=r"^--steps 0: expected an integer >= 1 or None$"):
        demo.DemoOptions(max_steps=0)
    with pytest.raises(SystemExit) as exited:
        demo.main(["--no-live", "--steps", "0"])
    assert exited.value.code == demo.EXIT_USAGE
    err = capsys.readouterr().err
    assert "error: --steps 0: expected an integer >= 1 (see" in err and "None" not in err


def test_plain_line_shows_the_requirement_beside_the_request() -> None:
    """Review: after a trip the plain line read ``req=   +0.00MW deliv= +100.00MW``, which
    looks like 100 MW over-delivered: the activated reserve covers the requirement and
    the operator's request is what remains. The line shows both, labelled, and stays
    within 120 columns."""
    record = {"t_s": 12.0, "freq_hz": 59.9944, "requirement_mw": 100.0, "request_mw": 0.0,
              "delivered_mw": 100.0, "would_dispatch_mw": 100.0,
              "clearing_price_per_mwh": None, "contracts_signed": 0, "blocked": 0}
    line = demo.plain_line(record)
    assert line == ("t=   12.0s f= 59.9944Hz need=+100.00MW request=  +0.00MW "
                    "deliv=+100.00MW price=      -$/MWh contracts=   0 blocked=   0")
    assert " req=" not in line and len(line) <= 120
    assert line in (ROOT / "docs" / "demo.md").read_text()   # the documented example
    shadow = demo.plain_line({**record, "shadow": True, "delivered_mw": 0.0,
                              "clearing_price_per_mwh": 1234.5, "contracts_signed": 1234,
                              "blocked": 1234, "requirement_mw": -999.99,
                              "request_mw": -999.99, "would_dispatch_mw": -999.99})
    assert ("need=-999.99MW request=-999.99MW would-deliv=-999.99MW price= 1234.5$/MWh"
            in shadow) and shadow.endswith(" [SHADOW]") and len(shadow) <= 135


def test_summary_table_shows_rocof_deviation_and_lost_contracts() -> None:
    """Review: the end-of-run summary lacked ``max_rocof_hz_per_s`` and
    ``max_abs_deviation_hz`` (DESIGN §8; the RoCoF is the ``emergency`` scenario's
    protection KPI) and ``contracts_lost`` (signed contracts never delivered: refused or
    dropped by the bus). They are read from the KPI dict, formatted with units like the
    other rows; every row is a key of :meth:`episode_metrics` (one definition,
    :mod:`gridswarm_env.metrics`)."""
    from gridswarm_env.config import CostConfig
    from gridswarm_env.metrics import MetricsAccumulator

    console = Console(file=io.StringIO(), width=120)
    console.print(dashboard.summary_table({"max_rocof_hz_per_s": 0.05151604,
                                           "max_abs_deviation_hz": 0.030518,
                                           "contracts_lost": 3}))
    text = console.file.getvalue()
    assert re.search(r"│ max\. RoCoF \(rate of change of f\)\s+│\s+0\.0515 │ Hz/s │", text)
    assert re.search(r"│ max\. deviation from 60 Hz\s+│\s+0\.0305 │ Hz\s+│", text)
    assert re.search(r"│ contracts lost \(never delivered\)\s+│\s+3 │\s+│", text)
    keys = MetricsAccumulator(CostConfig(), 1.0, 0.05, 0.0, None).result(
        contracts={}, bus_totals={}).keys()
    assert {key for key, *_ in dashboard.SUMMARY_ROWS} <= set(keys)
    assert {"max_rocof_hz_per_s", "max_abs_deviation_hz", "contracts_lost"} <= {
        key for key, *_ in dashboard.SUMMARY_ROWS}


def test_summary_reports_the_nadir_against_the_first_ufls_stage() -> None:
    """Code review: DESIGN §3 reports the nadir against ERCOT's first UFLS stage (59.3 Hz,
    metrics.UFLS_FIRST_STAGE_HZ), which the summary did not: a row after the nadir gives
    its margin, marked when below (load shed), "—" without a nadir; derived from the
    nadir, so not a KPI key (SUMMARY_ROWS stays the KPI dict's)."""
    def row(metrics: dict) -> str:
        console = Console(file=io.StringIO(), width=120)
        console.print(dashboard.summary_table(metrics))
        lines = console.file.getvalue().splitlines()
        return next(line for line in lines if "UFLS" in line)

    assert re.search(r"│ nadir − first UFLS stage \(59\.3 Hz\)\s+│\s+\+0\.0500 │ Hz", row(
        {"frequency_nadir_hz": 59.35}))
    assert "-0.0200 (below: load shed) │ Hz" in row({"frequency_nadir_hz": 59.28})
    assert "— │ Hz" in row({})
    assert "UFLS" not in " ".join(key for key, *_ in dashboard.SUMMARY_ROWS)


def test_summary_counts_contracts_for_windows_after_the_run(capsys) -> None:
    """New-user walkthrough: ``--steps 20`` reported 2 contracts signed and 0 verified,
    rejected or lost, with no word on the other 2: they were awarded in the last round
    for the window after the run, never dispatched. The summary now counts them (and
    shows no such row when every contract was accounted for)."""
    def rows(metrics: dict) -> str:
        console = Console(file=io.StringIO(), width=120)
        console.print(dashboard.summary_table(metrics))
        return console.file.getvalue()

    counts = {"contracts_signed": 9, "contracts_verified": 5, "contracts_rejected": 1,
              "contracts_lost": 1}
    assert re.search(r"│ contracts for windows after the run\s+│\s+2 │", rows(counts))
    assert "after the run" not in rows({**counts, "contracts_signed": 7})
    assert "after the run" not in rows({})
    rc = demo.main(["--agents", "100", "--steps", "20", "--no-live", "--seed", "0"])
    assert rc == 0
    assert re.search(r"contracts for windows after the run\s+│\s+2 │", capsys.readouterr().out)


def test_a_run_stopped_inside_the_100_ms_window_does_not_report_its_reserve(capsys) -> None:
    """Review: ``--randomize --seed 4`` draws the trip at 9.972 s, so ``--steps 10``
    stops inside its 100 ms window (it ends at 10.072 s); the summary reported the reserve
    activated by 10 s at contract power as answering within 100 ms (28.29 MW at 100
    agents, where 100 MW answered). It now says "— (not yet)": not measured; one step
    more measures it."""
    def reserve_row(steps: str) -> str:
        rc = demo.main(["--agents", "20", "--scenario", "emergency", "--randomize",
                        "--seed", "4", "--trust", "hmac", "--no-live", "--steps", steps])
        assert rc == demo.EXIT_OK
        return next(line for line in capsys.readouterr().out.splitlines()
                    if "reserve answering within 100 ms" in line)

    assert re.search(r"│\s+— \(not yet\) │ MW", reserve_row("10"))
    assert re.search(r"│\s+\d+\.\d\d │ MW", reserve_row("11"))
    table = Console(file=io.StringIO(), width=120)
    table.print(dashboard.summary_table({}))   # no event: "(none)", as before
    assert re.search(r"reserve answering within 100 ms\s+│\s+— \(none\) │",
                     table.file.getvalue())


def test_steps_beyond_the_episode_get_a_note(capsys) -> None:
    """Review: ``--steps 500`` on a 120-step episode ran 120 steps without a word; a
    one-line note on stderr says the episode ends after its own steps."""
    rc = demo.main(["--agents", "2", "--scenario", "emergency", "--policy", "random",
                    "--no-live", "--trust", "hmac", "--steps", "500"])
    out = capsys.readouterr()
    assert rc == demo.EXIT_OK
    notes = [ln for ln in out.err.splitlines() if "note:" in ln]
    assert notes == ["demo.py: note: --steps 500: the emergency episode ends after 120 steps"]
    assert "ran 120/120 steps" in out.out
    raw = type("Raw", (), {"scenario": type("S", (), {"episode_steps": 120,
                                                     "name": "emergency"})()})()
    assert demo.steps_notice(120, raw) is None and demo.steps_notice(None, raw) is None
    assert demo.steps_notice(121, raw) is not None


def test_summary_line_uses_the_policy_label() -> None:
    """print_summary names the policy as policy_label does (one rule, label_of)."""
    run = {"policy_name": "learned", "model_path": "m.zip", "scenario": "emergency",
           "n_agents": 3, "seed": 0, "trust": "hmac", "shadow": False, "steps_run": 1,
           "episode_steps": 300, "agent_steps_per_s": 0.0}

    class Learned:
        name, path = "learned", "m.zip"

    console = Console(file=io.StringIO(), width=200)
    demo.print_summary(demo.DemoResult(steps=[], metrics={}, stop_reason=None, wall_s=0.0,
                                       run=run), console)
    assert f"policy {demo.policy_label(Learned())}, seed 0" in console.file.getvalue()
    assert demo.label_of("heuristic", None) == "heuristic"


# --------------------------------------------------------------------------- output paths, audit chain, interrupts
def _demo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "demo.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, **kwargs)


def test_demo_refuses_bad_output_paths_before_the_episode(tmp_path, capsys):
    limits = tmp_path / "limits.toml"
    limits.write_text("[agents.battery_003]\nsoc_min = 0.3\n")
    audit = tmp_path / "a.jsonl"
    cases = [(["--json", str(tmp_path)], "is a directory"),
             (["--audit", str(tmp_path)], "is a directory"),
             (["--json", str(audit), "--audit", str(audit)], "same file"),
             (["--agents", "3", "--limits", str(limits), "--audit", str(audit)],
              "battery_003")]
    if _unwritable_here():
        cases.append((["--json", str(UNWRITABLE)], "cannot be written"))
    for args, words in cases:
        rc = demo.main(["--agents", "5", "--policy", "random", "--no-live", *args])
        captured = capsys.readouterr()
        assert rc == demo.EXIT_USAGE, (args, captured.err)
        assert words in _one_line_error(captured.err, "demo.py"), args
        assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limits.toml"]
    # user-path review: an existing audit trail was replaced by the next run
    audit.write_text('{"earlier": "trail"}\n')
    rc = demo.main(["--agents", "5", "--policy", "random", "--no-live", "--audit", str(audit)])
    err = _one_line_error(capsys.readouterr().err, "demo.py")
    assert rc == demo.EXIT_USAGE and "already exists" in err and "never overwritten" in err
    assert audit.read_text() == '{"earlier": "trail"}\n'


def _verify(path: Path, key: str | None, capsys) -> tuple[int, str]:
    args = ["verify", str(path)] + (["--public-key", key] if key else [])
    status = audit_cli.main(args)
    return status, capsys.readouterr().out


def test_demo_audit_chain_verifies_with_the_printed_key_and_a_cut_tail_does_not(tmp_path,
                                                                                capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    proc = _demo("--agents", "10", "--scenario", "emergency", "--policy", "random",
                 "--steps", "15", "--no-live", "--audit", str(audit), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    key = doc["audit"]["operator_public_key"]
    assert doc["audit"]["path"] == str(audit) and len(key) == 64
    hint = [ln for ln in proc.stdout.splitlines() if ln.startswith("audit chain:")]
    assert hint == [f"audit chain: {audit} (verify: python -m gridswarm_env.audit verify "
                    f"{audit} --public-key {key})"]
    status, verdict = _verify(audit, key, capsys)
    assert status == 0 and verdict.startswith("OK"), verdict
    assert "closing head signed by the given key (closed: the file is whole" in verdict
    # one episode, one episode_start (the demo's validation reset is the episode's reset)
    kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert kinds.count("episode_start") == 1 and kinds[-1] == "head_signed"
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(audit.read_text().splitlines(keepends=True)[:-2]))
    status, verdict = _verify(cut, key, capsys)
    assert status == 1 and "truncated" in verdict, verdict


def test_demo_audit_in_hmac_mode_says_the_head_is_unsigned(tmp_path, capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    proc = _demo("--agents", "10", "--scenario", "emergency", "--policy", "random",
                 "--steps", "10", "--no-live", "--trust", "hmac", "--audit", str(audit),
                 "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["audit"] == {"path": str(audit),
                                                    "operator_public_key": None}
    assert "the head is unsigned" in proc.stdout
    assert _verify(audit, None, capsys)[0] == 0


def test_demo_ctrl_c_still_signs_the_audit_head(tmp_path, capsys):
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    p = _start_demo_to_interrupt("--agents", "100", "--policy", "random", "--no-live",
                                 "--audit", str(audit), "--json", str(out))
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=CLI_TIMEOUT_S)
    assert p.returncode == demo.EXIT_INTERRUPTED, stderr
    doc = json.loads(out.read_text())
    assert doc["run"]["interrupted"] is True
    status, verdict = _verify(audit, doc["audit"]["operator_public_key"], capsys)
    assert status == 0, verdict
    assert "closing head signed by the given key (closed: the file is whole" in verdict
    assert "audit chain:" in stdout


def test_demo_whole_episode_audit_file_ends_closed_after_the_episodes_head(tmp_path, capsys):
    """A whole episode: the episode's end signs a head and the demo's env.close() the
    closing one; the file cut back to the episode's head is reported, not OK."""
    audit, out = tmp_path / "audit.jsonl", tmp_path / "run.json"
    proc = _demo("--agents", "6", "--scenario", "emergency", "--policy", "random",
                 "--no-live", "--audit", str(audit), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    key = json.loads(out.read_text())["audit"]["operator_public_key"]
    lines = audit.read_text().splitlines(keepends=True)
    finals = [json.loads(line)["fields"]["final"] for line in lines
              if json.loads(line)["kind"] == "head_signed"]
    assert finals == [False, True]
    status, verdict = _verify(audit, key, capsys)
    assert status == 0 and "(closed: the file is whole as its writer finished it" in verdict
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]))
    status, verdict = _verify(cut, key, capsys)
    assert status == 1 and "truncated (not closed:" in verdict, verdict


def test_demo_json_failing_at_the_end_is_rescued(tmp_path, capsys, monkeypatch):
    target = tmp_path / "run.json"
    real = demo.run_demo

    def run_then_block(session, **kwargs):   # the path becomes a directory meanwhile
        result = real(session, **kwargs)
        target.mkdir()
        return result

    monkeypatch.setattr(demo, "run_demo", run_then_block)
    rc = demo.main(["--agents", "5", "--policy", "random", "--steps", "3", "--no-live",
                    "--json", str(target)])
    captured = capsys.readouterr()
    assert rc == demo.EXIT_OUTPUT_FAILED
    line = _one_line_error(captured.err, "demo.py")
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert json.loads(rescued.read_text())["run"]["steps_run"] == 3
    assert f"wrote {rescued}" in captured.out
    rescued.unlink()


def test_demo_setup_failure_gives_an_existing_audit_file_its_content_back(tmp_path,
                                                                          monkeypatch):
    """Code review: the environment truncates --audit FILE when built; a policy failing
    its reset afterwards (exit 2) left an existing file changed. (A non-empty one is now
    refused up front, see test_demo_refuses_bad_output_paths_before_the_episode; an
    existing empty file, e.g. made by ``touch``, stays as it was.)"""
    audit = tmp_path / "audit.jsonl"
    audit.write_text("")

    class FailsOnReset:
        name = "fails"

        def reset(self, env, seed=None):
            raise ValueError("model does not match the environment's spaces")

    monkeypatch.setattr(demo, "build_policy", lambda _name: FailsOnReset())
    opts = demo.DemoOptions(n_agents=5, scenario="emergency", policy="random", live=False,
                            audit_path=str(audit))
    with pytest.raises(demo.DemoError, match="does not match"):
        demo.open_session(opts)
    assert audit.read_text() == ""


def test_demo_keeps_an_audit_file_that_appeared_after_its_check(tmp_path, monkeypatch):
    """Security review: ``AuditLog`` refuses a file that appeared between the demo's
    check and the environment's construction (another writer); the demo then removed
    "its" file on the way out, the other writer's trail."""
    import gridswarm_env

    audit = tmp_path / "audit.jsonl"
    opts = demo.DemoOptions(n_agents=5, scenario="emergency", policy="random", live=False,
                            audit_path=str(audit))   # checked here: no file yet
    build = gridswarm_env.parallel_env

    def another_writer_first(**kwargs):
        audit.write_text("another writer's entry\n")
        return build(**kwargs)

    monkeypatch.setattr(gridswarm_env, "parallel_env", another_writer_first)
    with pytest.raises(demo.DemoError, match="already exists .*never overwritten"):
        demo.open_session(opts)
    assert audit.read_text() == "another writer's entry\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["--crypto-threads", "100"], "error: --crypto-threads 100: expected an integer from 1 to "),
    (["--agents", "2000000"], "error: --agents 2000000: expected an integer from 1 to "
                              "1,000,000 (~10 kB of state each;"),
])
def test_demo_refuses_out_of_range_counts_naming_the_flag(argv, message, capsys):
    """First-use review: --crypto-threads 100 was accepted silently (the environment never
    runs more threads than the usable cores) and --agents 2000000 was refused as
    ``DemoOptions.n_agents = 2000000``."""
    with pytest.raises(SystemExit) as exited:
        demo.main(["--no-live", "--steps", "1", *argv])
    assert exited.value.code == demo.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_demo_path_errors_name_the_flag(tmp_path, capsys):
    """First-use review: ``DemoOptions.audit_path = '...'`` named an internal field."""
    rc = demo.main(["--no-live", "--steps", "1", "--audit", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_USAGE and f"--audit {str(tmp_path)!r} is a directory" in err
    assert "DemoOptions" not in err
    same = str(tmp_path / "same.json")
    rc = demo.main(["--no-live", "--steps", "1", "--audit", same, "--json", same])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_USAGE and "the same file as --json" in err
    assert "DemoOptions" not in err


def test_demo_ctrl_c_while_starting_is_one_line(capsys, monkeypatch):
    """Review: Ctrl-C in the first seconds (under load, while ``build_parser`` imported
    the environment) printed a 20-line traceback ending in KeyboardInterrupt."""
    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "build_parser", interrupted_import)
    try:
        status = demo.main(["--no-live"])
    except KeyboardInterrupt:   # would also stop the test session
        pytest.fail("KeyboardInterrupt escaped demo.main: the user saw a traceback")
    assert status == demo.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err == "demo.py: interrupted before the episode started\n"


def test_negotiations_per_second_are_measured_over_the_last_two_seconds() -> None:
    """The live view's negotiations/s: (negotiations now - then) / (wall now - then) over
    the last RATE_WINDOW_S of wall clock, not the run's mean."""
    dash = dashboard.Dashboard({"scenario": "price_spike", "n_agents": 20, "policy": "random",
                                "trust": "hmac", "seed": 5, "shadow": False,
                                "episode_steps": 300, "dt_s": 1.0, "has_event": False})
    for k in range(9):   # a step per 0.5 s: none for the first 2 s, then 40 per step
        dash.update({"t_s": float(k), "freq_min_hz": 60.0, "freq_max_hz": 60.0,
                     "wall_s": 0.5 * k}, {"negotiations": 40 * max(k - 4, 0)}, {})
    assert dashboard.RATE_WINDOW_S == 2.0
    assert dash.negotiations_per_s == pytest.approx(80.0)


def test_summary_line_rates_are_per_wall_second() -> None:
    """The summary's last line: agent-steps/s from the run, negotiations/s = the
    episode's negotiations / wall-clock seconds."""
    run = {"policy_name": "random", "model_path": None, "scenario": "emergency",
           "n_agents": 10, "seed": 0, "trust": "hmac", "shadow": False, "steps_run": 4,
           "episode_steps": 120, "agent_steps_per_s": 20.0}
    console = Console(file=io.StringIO(), width=200)
    demo.print_summary(demo.DemoResult(steps=[], metrics={"negotiations": 100},
                                       stop_reason=None, wall_s=2.0, run=run), console)
    assert ("ran 4/120 steps in 2.00 s wall clock (20 agent-steps/s, 50 negotiations/s)"
            in console.file.getvalue())


def test_frequency_history_keeps_the_sample_farthest_from_nominal() -> None:
    """Each step's point in the frequency sparkline is its sample farthest from 60 Hz,
    so a dip (or a rise) between step ends shows."""
    dash = dashboard.Dashboard({"scenario": "emergency", "n_agents": 20, "policy": "random",
                                "trust": "hmac", "seed": 0, "shadow": False,
                                "episode_steps": 120, "dt_s": 1.0, "has_event": True})
    for lo, hi in ((59.9, 60.01), (59.99, 60.2)):
        dash.update({"t_s": 0.0, "freq_min_hz": lo, "freq_max_hz": hi, "wall_s": 0.0},
                    {"negotiations": 0}, {})
    assert list(dash.freq_history_hz) == [59.9, 60.2]


# ---------------------------------------------------------------------- --contract-keys
def test_demo_contract_keys_reach_the_environment_and_change_no_outcome(tmp_path, capsys):
    """Security review: demo.py always used seeded contract keys (anyone who knows --seed
    can derive every key). ``--contract-keys random`` draws them from os.urandom; --json
    records the choice, and the episode is the same (no decision depends on the keys)."""
    docs, operator_keys = {}, {}
    for keys in ("seeded", "random"):
        out = tmp_path / f"{keys}.json"
        opts = demo.options_from_args(demo.build_parser().parse_args(
            ["--agents", "6", "--scenario", "emergency", "--policy", "random", "--seed", "3",
             "--steps", "4", "--contract-keys", keys, "--json", str(out)]), is_terminal=False)
        assert opts.contract_keys == keys
        session = demo.open_session(opts)
        assert session.raw.config.contract_keys == keys
        operator_keys[keys] = session.raw.registry.public_key_bytes("operator")
        result = demo.run_demo(session, write=lambda _line: None)
        session.env.close()
        demo.write_json(out, result.run, result.steps, result.metrics)
        docs[keys] = json.loads(out.read_text())
        assert docs[keys]["run"]["contract_keys"] == keys
    assert operator_keys["random"] != operator_keys["seeded"]
    assert docs["random"]["metrics"] == docs["seeded"]["metrics"]
    strip = [{k: v for k, v in step.items() if k != "wall_s"} for step in docs["seeded"]["steps"]]
    assert [{k: v for k, v in step.items() if k != "wall_s"}
            for step in docs["random"]["steps"]] == strip
    assert sum(step["contracts_signed"] for step in strip) > 0   # contracts were signed
    # unforgeable by default (crypto review: a seed search forged contracts in 0.3 s)
    assert demo.options_from_args(demo.build_parser().parse_args([]),
                                  is_terminal=False).contract_keys == "random"


def test_demo_refuses_a_bad_contract_keys_value_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        demo.main(["--no-live", "--steps", "1", "--contract-keys", "secret"])
    assert exited.value.code == demo.EXIT_USAGE
    line = _one_line_error(capsys.readouterr().err, "demo.py")
    assert "argument --contract-keys: invalid choice: 'secret'" in line
    with pytest.raises(ValueError, match=r"^--contract-keys 'Random': expected one of "
                                         r"seeded, random$"):
        demo.DemoOptions(contract_keys="Random")


def test_a_scenario_file_plays_and_is_recorded(tmp_path, capsys, monkeypatch) -> None:
    """Docs review: ``--scenario`` took the registered names only, so a scenario file
    (``load_scenario_file``) could not be shown at all. It is read once, played under its
    ``name``, named in the summary and recorded in ``--json``."""
    import evaluate
    import gridswarm_env
    from gridswarm_env.scenarios import load_scenario_file
    from policies import make_policy
    from policies.rollout import run_episode

    trip, reads = counted_scenario_file(tmp_path, monkeypatch)
    out = tmp_path / "run.json"
    rc = demo.main(["--scenario", str(trip), "--agents", "10", "--trust", "hmac",
                    "--no-live", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert rc == demo.EXIT_OK and reads == [str(trip)]
    sha = hashlib.sha256(trip.read_bytes()).hexdigest()
    assert (f"KPI summary: trip_90 from scenario file {trip} (sha256 {sha[:12]}), "
            "10 agents") in stdout
    doc = json.loads(out.read_text())
    run = doc["run"]
    assert run["scenario"] == doc["metrics"]["scenario"] == "trip_90"
    assert run["scenario_file"] == str(trip)
    assert evaluate.scenario_from_record(run["custom_scenario"]) == load_scenario_file(trip)
    env = gridswarm_env.parallel_env(scenario=load_scenario_file(trip), n_agents=10,
                                     trust="hmac")
    alone = run_episode(env, make_policy("heuristic"), seed=0).metrics
    assert doc["metrics"]["system_cost"] == alone["system_cost"]
    assert run["steps_run"] == 120
