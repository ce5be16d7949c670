"""The live dashboard's header fits 80 columns (new-user review: "cut off at 80 columns":
the title wrapped wherever the words ran out, after "seed 0 ·"). It is now broken
between the run (scenario, fleet, policy) and its progress (trust, seed, time, status),
and stays one line where it fits.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # dashboard.py is a top-level script
    sys.path.insert(0, str(ROOT))

import dashboard  # noqa: E402

HEADER = {"scenario": "emergency", "n_agents": 20, "policy": "heuristic", "trust": "ed25519",
          "seed": 0, "shadow": False, "episode_steps": 120, "dt_s": 1.0, "has_event": True}


def _at_45_s(header) -> dashboard.Dashboard:
    """The dashboard of ``header`` at t = 45 s (step 45), nothing measured yet."""
    dash = dashboard.Dashboard(header)
    dash.update({"t_s": 45.0, "step": 44, "freq_hz": 60.0, "freq_min_hz": 60.0,
                 "freq_max_hz": 60.0, "wall_s": 1.0}, {"negotiations": 0}, {})
    return dash


def _lines(dash: dashboard.Dashboard, width: int = 80, height: int = 24) -> list[str]:
    """What ``dash`` shows on a ``width`` x ``height`` terminal, line by line."""
    console = Console(file=io.StringIO(), width=width, height=height, record=True,
                      color_system=None, force_terminal=False)
    console.print(dash)
    return console.export_text().splitlines()


@pytest.mark.parametrize("header", [
    HEADER,
    {**HEADER, "scenario": "price_spike", "n_agents": 10000, "policy": "oracle",
     "episode_steps": 300, "shadow": True},
    {**HEADER, "scenario": "price_spike", "n_agents": 10000, "policy": "learned",
     "episode_steps": 300, "paced": True, "speed": 10.0},   # the speed shown, still fits
])
def test_the_header_fits_80_columns_broken_between_run_and_progress(header):
    dash = _at_45_s(header)
    lines = _lines(dash)
    top = lines[1:3]
    assert top[0].startswith(f"│ gridswarm  {header['scenario']} · {header['n_agents']} DERs "
                             f"· policy {header['policy']}")
    assert top[1].startswith(f"│ trust ed25519 · seed 0 · t = 45.0 / "
                             f"{header['episode_steps']} s (step 45/")
    assert "running" in top[1]
    assert ("· x10" in top[1]) == bool(header.get("paced"))   # review: how fast, and why
    assert all(len(line) <= 80 for line in lines)
    assert not any(line.rstrip(" │").endswith("·") for line in top)   # no break after a "·"
    first = _lines(dash, 160, 40)[1]   # wide enough: one line, as before
    assert "policy" in first and "seed 0" in first and "running" in first


def test_the_input_files_are_shown_and_the_compact_layout_still_fits_80_by_24():
    """Session 30: the dashboard did not say which --config, --limits or scenario file
    the run came from. They get a line under the title, or, on a terminal too short for
    that row (80 x 24: the compact layout), the header's bottom border."""
    files = ["config file configs/low_inertia.toml (sha256 505828ba0479)",
             "limits file lim.toml (sha256 c472f69d96eb)"]
    dash = _at_45_s({**HEADER, "files": files})
    for height in (24, 40):
        lines = _lines(dash, 80, height)
        assert len(lines) <= height - 1 and all(len(line) <= 80 for line in lines)
        if height == 24:   # in the border: no row of its own
            assert lines[3].startswith("╰─ config file configs/low_inertia.toml "
                                       "(sha256 505828ba0479) · limits file")
        else:
            assert lines[3].startswith("│ config file configs/low_inertia.toml (sha256 "
                                       "505828ba0479) · limits file")


@pytest.mark.parametrize("files", [[], ["limits file lim.toml (sha256 c472f69d96eb)"]])
def test_the_compact_layout_fits_80_by_24_in_shadow_mode(files):
    """The compact layout (80 x 24) in shadow mode: the SHADOW banner, two rows at 80
    columns under the title, made the display 25 lines for 23 (a row is the cursor's),
    so the live display lost its bottom. It goes in the header's top border there."""
    lines = _lines(_at_45_s({**HEADER, "shadow": True, "files": files}))
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines), len(lines)
    assert "SHADOW MODE" in lines[0] and "nothing is dispatched" in lines[0]
    assert lines[-1].startswith("╰")   # the feed's bottom border: nothing cut
