"""demo.py ``--speed``: the live dashboard is paced (new-user review: ``emergency`` at 20
agents ran its 120 steps in 0.16 s under a terminal, so the trip was over in two frames),
and pacing changes nothing but the wall clock.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # demo.py and dashboard.py are top-level scripts
    sys.path.insert(0, str(ROOT))

import dashboard  # noqa: E402
import demo  # noqa: E402
from tests.command_lines import _one_line_error  # noqa: E402
from tests.test_demo import _run_in_pty, _strict_load  # noqa: E402

HEADER = {"scenario": "emergency", "n_agents": 20, "policy": "heuristic", "trust": "ed25519",
          "seed": 0, "shadow": False, "episode_steps": 120, "dt_s": 1.0, "has_event": True}


def _options(*argv: str, is_terminal: bool = False) -> demo.DemoOptions:
    return demo.options_from_args(demo.build_parser().parse_args(list(argv)), is_terminal)


def _run(speed: float, steps: int = 8) -> demo.DemoResult:
    opts = demo.DemoOptions(n_agents=12, scenario="emergency", policy="random", seed=4,
                            max_steps=steps, live=False, trust="hmac", speed=speed)
    session = demo.open_session(opts)
    try:
        return demo.run_demo(session, write=lambda _line: None)
    finally:
        session.env.close()


class FakeClock:
    """demo.py's clock (``demo.time``) made deterministic: ``perf_counter`` stands still
    but for ``sleep`` and the work each step is given (``work_s``, one entry per step,
    spent when the step is measured). With the real clock the pacing tests failed under
    CPU load (CI: 2 cores shared): a step preempted past its deadline is, by design, not
    waited for, so the number of sleeps, the waits and wall_s - paced_wait_s depended on
    the scheduler."""

    def __init__(self, monkeypatch, work_s=(), on_sleep=None) -> None:
        self.now = 1000.0
        self.work_s = list(work_s)
        self.sleeps: list[tuple[float, float]] = []   # (when it was called, seconds)
        self.on_sleep = on_sleep
        monkeypatch.setattr(demo, "time", self)
        measure = demo.measure_step

        def measure_step(*args, **kwargs):
            if self.work_s:
                self.now += self.work_s.pop(0)
            return measure(*args, **kwargs)

        monkeypatch.setattr(demo, "measure_step", measure_step)

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append((self.now, seconds))
        if self.on_sleep is not None:
            self.on_sleep(self, seconds)   # may cut the wait short and raise
        else:
            self.now += seconds


# ---------------------------------------------------------------------- the flag
def test_speed_defaults_to_10_live_and_0_with_plain_lines():
    assert demo.LIVE_SPEED == 10.0
    assert _options(is_terminal=True).pace_speed == 10.0
    assert _options(is_terminal=False).pace_speed == 0.0          # piped: tests, | head
    assert _options("--no-live", is_terminal=True).pace_speed == 0.0
    assert _options("--no-live", "--speed", "2.5").pace_speed == 2.5   # asked for: paced
    assert _options("--speed", "0", is_terminal=True).pace_speed == 0.0
    assert demo.DemoOptions(live=False).pace_speed == 0.0
    assert demo.DemoOptions(live=True).pace_speed == 10.0


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "-inf", "1e400", "fast", "", "1e-300",
                                  "0.001"])
def test_bad_speeds_are_one_line_naming_the_flag(text, capsys):
    with pytest.raises(SystemExit) as exited:   # "--speed -inf" is a missing value to argparse
        demo.main(["--no-live", "--steps", "1", f"--speed={text}"])
    assert exited.value.code == demo.EXIT_USAGE
    line = _one_line_error(capsys.readouterr().err, "demo.py")
    # review: 1e-300 overflowed the sleep (a traceback), 1e-6 slept ~11 days per step
    assert line.startswith(f"demo.py: error: argument --speed: expected 0 (as fast as "
                           f"possible) or a number >= 0.01 (simulated seconds per wall-clock "
                           f"second), got {text!r}")


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, True, "10", 1e-6])
def test_bad_speeds_in_the_api_name_the_flag(value):
    with pytest.raises(ValueError, match=r"^--speed .*: expected 0 \(as fast as possible\) or"):
        demo.DemoOptions(speed=value)


def test_a_speed_of_another_number_type_says_why_it_is_refused():
    """Fuzzing (session 23): ``Decimal('2')`` is a number >= 0.01, yet the message said
    only that one was expected; the configs' real fields say to pass a float."""
    from decimal import Decimal

    with pytest.raises(ValueError, match=r"^--speed Decimal\('2'\): expected 0 .*, got "
                                         r"Decimal; pass float\(value\)"):
        demo.DemoOptions(speed=Decimal("2"))
    with pytest.raises(ValueError, match=r"^--governor-deadband-hz Decimal\('0\.01'\): "
                                         r"expected a deadband .*, got Decimal; pass float"):
        demo.DemoOptions(governor_deadband_hz=Decimal("0.01"))
    with pytest.raises(ValueError, match=r", got str$"):
        demo.DemoOptions(speed="10")


# ---------------------------------------------------------------------- pacing
def test_pacing_changes_nothing_but_the_wall_clock(tmp_path, monkeypatch):
    """Same steps (but their wall_s) and KPIs, and the same --json but for the run's
    speed and wall-clock figures, at any speed."""
    docs = {}
    for speed in (0.0, 200.0):   # 200: 5 ms per 1-s step
        if speed:   # every step waits (real clock: under load all 8 could be late)
            clock = FakeClock(monkeypatch)
        result = _run(speed)
        out = tmp_path / f"{speed}.json"
        demo.write_json(out, result.run, result.steps, result.metrics)
        docs[speed] = _strict_load(out.read_text())
    fast, paced = docs[0.0], docs[200.0]
    assert fast["run"]["speed"] == 0.0 and paced["run"]["speed"] == 200.0
    assert fast["run"]["paced_wait_s"] == 0.0 and paced["run"]["paced_wait_s"] > 0
    assert paced["run"]["wall_s"] == pytest.approx(8 / 200.0)
    assert len(clock.sleeps) == 8
    wall = {"wall_s", "paced_wait_s", "agent_steps_per_s", "speed"}
    assert ({k: v for k, v in fast["run"].items() if k not in wall}
            == {k: v for k, v in paced["run"].items() if k not in wall})
    assert fast["metrics"] == paced["metrics"]
    strip = [{k: v for k, v in s.items() if k != "wall_s"} for s in fast["steps"]]
    assert [{k: v for k, v in s.items() if k != "wall_s"} for s in paced["steps"]] == strip
    assert json.dumps(strip)   # non-trivial: 8 records
    assert len(strip) == 8


def test_pacing_sleeps_until_each_steps_deadline(monkeypatch):
    """Step k is released at start + k * dt_s / speed: one time.sleep per step at most
    (no busy wait), each ending on that grid; a late step is not waited for."""
    # 50 ms per step; step 3 takes 120 ms of work: steps 3 and 4 are late
    clock = FakeClock(monkeypatch, work_s=[0.01, 0.01, 0.12, 0.01, 0.01, 0.01])
    start = clock.now
    result = _run(20.0, steps=6)
    wake_at = [(t + s - start) / 0.05 for t, s in clock.sleeps]
    assert wake_at == pytest.approx([1, 2, 5, 6], abs=1e-9)   # on the grid; 3, 4 not waited
    assert [s for _, s in clock.sleeps] == pytest.approx([0.04, 0.04, 0.01, 0.04])
    assert result.wall_s == pytest.approx(6 * 0.05)
    assert result.run["paced_wait_s"] == pytest.approx(0.13)
    assert result.run["agent_steps_per_s"] == pytest.approx(6 * 12 / 0.17)   # waits left out


def test_pacing_sleeps_on_the_real_clock(monkeypatch):
    """The same with the real time.sleep: the run lasts at least until the last step's
    deadline (late steps, e.g. under CPU load, only make it longer), sleeping at most
    once per step."""
    real_sleep, calls = time.sleep, []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(demo.time, "sleep", sleep)
    result = _run(20.0, steps=6)   # 50 ms per step
    assert len(calls) <= 6 and all(0 < s <= 0.05 for s in calls)
    assert result.wall_s >= 6 * 0.05 - 1e-3
    assert 0 <= result.run["paced_wait_s"] <= result.wall_s


def test_ctrl_c_during_a_pacing_wait_stops_cleanly(monkeypatch):
    def interrupt_the_third(clock: FakeClock, seconds: float) -> None:
        if len(clock.sleeps) == 3:
            clock.now += seconds / 2
            raise KeyboardInterrupt
        clock.now += seconds

    FakeClock(monkeypatch, work_s=[0.01] * 10, on_sleep=interrupt_the_third)
    result = _run(20.0, steps=10)
    assert result.stop_reason == "interrupted" and len(result.steps) == 3
    # 40 + 40 ms of waits and the cut-short wait's 20 ms: it is counted too
    assert result.run["paced_wait_s"] == pytest.approx(0.10)
    assert result.wall_s == pytest.approx(0.13)


def test_the_summary_says_the_run_was_paced_and_leaves_the_waits_out_of_the_rates():
    run = {"policy_name": "random", "model_path": None, "scenario": "emergency",
           "n_agents": 10, "seed": 0, "trust": "hmac", "shadow": False, "steps_run": 4,
           "episode_steps": 120, "agent_steps_per_s": 40.0, "speed": 10.0,
           "paced_wait_s": 1.0}
    console = Console(file=io.StringIO(), width=300)
    demo.print_summary(demo.DemoResult(steps=[], metrics={"negotiations": 100},
                                       stop_reason=None, wall_s=2.0, run=run), console)
    assert ("ran 4/120 steps in 2.00 s wall clock, 1.00 s of it waiting for --speed 10 "
            "(without the waits: 40 agent-steps/s, 100 negotiations/s)"
            in console.file.getvalue())


def test_the_live_rate_leaves_the_waits_out_and_says_so():
    dash = dashboard.Dashboard({**HEADER, "paced": True})
    for k in range(5):   # 0.1 s of work per step, 1 s of wall clock
        dash.update({"t_s": float(k), "freq_min_hz": 60.0, "freq_max_hz": 60.0,
                     "wall_s": 1.0 * k}, {"negotiations": 10 * k}, {}, clock_s=0.1 * k)
    assert dash.negotiations_per_s == pytest.approx(100.0)
    console = Console(file=io.StringIO(), width=110, height=45, record=True,
                      color_system=None, force_terminal=False)
    console.print(dash)
    assert "100 (unpaced)" in console.export_text()


def test_the_live_dashboard_is_paced_by_default_under_a_terminal(tmp_path):
    out = tmp_path / "live.json"
    rc, text = _run_in_pty(["--agents", "10", "--scenario", "emergency", "--policy", "random",
                            "--steps", "12", "--json", str(out)])
    assert rc == 0, text[-2000:]
    run = _strict_load(out.read_text())["run"]
    assert run["live"] is True and run["speed"] == 10.0
    assert run["wall_s"] >= 1.2 - 1e-3 and run["paced_wait_s"] > 0
    assert "of it waiting for --speed 10" in text
