"""Tests of input validation: configs, scenario files and kernel limits.

Every bad value must be refused where it is given, with a ``ValueError`` that names the
field (and the file or section) and what is allowed, never a ``TypeError`` or
``OverflowError`` later at reset or step time. Accepted values are stored normalized:
integer fields as Python ``int`` (numpy integers accepted; floats, even ``21.0``, and
bools refused), real-number fields as Python ``float`` (numpy scalars accepted; strings,
``None`` and bools refused).
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gridswarm_env
from gridswarm_env.config import (
    CostConfig,
    EnvConfig,
    FleetConfig,
    MarketConfig,
    RewardConfig,
    override,
)
from gridswarm_env.kernel import DerLimits, Limits, as_limits
from gridswarm_env.scenarios import get_scenario, load_scenario_file

ROOT = Path(__file__).resolve().parents[1]


def _raises(make, *parts: str) -> str:
    """Call ``make``; it must raise ValueError whose message contains every part."""
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    for part in parts:
        assert part in message, message
    return message


def _float_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.type == "float"]


# --------------------------------------------------------------------------- integer fields
@pytest.mark.parametrize("bad", [100.0, float("nan"), float("inf"), True, "100", None])
def test_n_agents_non_integer_refused_naming_the_field(bad) -> None:
    _raises(lambda: EnvConfig(n_agents=bad), "n_agents", "integer")
    if bad is not None:     # parallel_env(n_agents=None) means "the config's default"
        _raises(lambda: gridswarm_env.parallel_env(scenario="emergency", n_agents=bad,
                                                   trust="hmac"), "n_agents", "integer")


@pytest.mark.parametrize("bad", [21.0, np.float64(21.0), True, "21"])
def test_n_power_levels_float_refused(bad) -> None:
    _raises(lambda: MarketConfig(n_power_levels=bad), "n_power_levels", "integer")


def test_numpy_integers_accepted_and_stored_as_int() -> None:
    cfg = EnvConfig(n_agents=np.int64(100))
    assert cfg.n_agents == 100 and type(cfg.n_agents) is int
    market = MarketConfig(n_power_levels=np.int64(21), n_price_levels=np.int32(11))
    assert type(market.n_power_levels) is int and type(market.n_price_levels) is int
    assert market == MarketConfig()
    assert type(override(cfg, n_agents=np.int16(5)).n_agents) is int
    sc = get_scenario("emergency", episode_steps=np.int64(7))
    assert sc.episode_steps == 7 and type(sc.episode_steps) is int


def test_env_runs_with_numpy_sizes() -> None:
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=np.int64(10),
                                     trust="hmac")
    obs, _ = env.reset(seed=0)
    assert len(obs) == 10 and env.unwrapped.n_agents == 10
    actions = {a: env.action_space(a).sample() for a in env.agents}
    obs, rewards, *_ = env.step(actions)
    assert len(rewards) == 10


# --------------------------------------------------------------------------- real-number fields
@pytest.mark.parametrize("cls", [FleetConfig, MarketConfig, CostConfig, RewardConfig])
@pytest.mark.parametrize("bad", ["1.0", None, True])
def test_every_real_field_refuses_strings_none_and_bools(cls, bad) -> None:
    names = _float_fields(cls)
    assert names
    for name in names:
        _raises(lambda name=name: cls(**{name: bad}), f"{cls.__name__}.{name}",
                "expected a finite number")


@pytest.mark.parametrize(("make", "field", "got"), [
    (lambda: EnvConfig(dt_s="1.0"), "EnvConfig.dt_s = '1.0'", "got str"),
    (lambda: CostConfig(voll_per_mwh="9000"), "CostConfig.voll_per_mwh = '9000'", "got str"),
    (lambda: RewardConfig(scale="100"), "RewardConfig.scale = '100'", "got str"),
    (lambda: EnvConfig(dt_s=None), "EnvConfig.dt_s = None", "got NoneType"),
])
def test_reported_string_values_refused(make, field: str, got: str) -> None:
    _raises(make, field, "expected a finite number", got)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_fleet_departure_window_must_be_finite(bad) -> None:
    _raises(lambda: FleetConfig(ev_departure_max_s=bad), "ev_departure_max_s", "finite")


def test_fleet_departure_max_positive() -> None:
    _raises(lambda: FleetConfig(ev_departure_min_s=60.0, ev_departure_max_s=-1.0),
            "ev_departure_max_s", "> 0")


def test_real_fields_stored_as_float() -> None:
    costs = CostConfig(voll_per_mwh=9000, battery_degradation_per_mwh=np.float32(40.0))
    assert type(costs.voll_per_mwh) is float and type(costs.battery_degradation_per_mwh) is float
    assert costs == CostConfig()
    fleet = FleetConfig(share_solar=0, share_battery=1, share_ev=0, ev_departure_max_s=3600)
    assert all(type(getattr(fleet, n)) is float for n in _float_fields(FleetConfig))
    env = EnvConfig(dt_s=np.float64(1.0), reward=RewardConfig(scale=np.int64(100)))
    assert type(env.dt_s) is float and type(env.reward.scale) is float


def test_env_config_other_fields_checked() -> None:
    _raises(lambda: EnvConfig(audit_keep_entries="no"), "audit_keep_entries", "True or False")
    _raises(lambda: EnvConfig(market=None), "EnvConfig.market", "MarketConfig")
    _raises(lambda: EnvConfig(fleet={"share_ev": 0.5}), "EnvConfig.fleet", "FleetConfig")
    _raises(lambda: EnvConfig(audit_path=3), "audit_path", "path")
    assert EnvConfig(audit_path=Path("a/b.jsonl")).audit_path == str(Path("a/b.jsonl"))


# --------------------------------------------------------------------------- scenario files
@pytest.mark.parametrize(("text", "parts"), [
    ("episode_steps = 30.0", ("episode_steps", "integer")),
    ('price_cap_per_mwh = "900"', ("price_cap_per_mwh", "finite number")),
    ("load_step_mw = true", ("load_step_mw", "finite number")),
    ('event_time_s = "10"', ("event_time_s", "number")),
    ("event_time_s = nan", ("event_time_s", "number")),
    ("start_hour = 25", ("start_hour", "[0.0, 24.0)")),
    ("name = 5", ("name", "string")),
])
def test_scenario_file_bad_values_name_file_and_key(tmp_path: Path, text: str, parts) -> None:
    path = tmp_path / "sc.toml"
    path.write_text(f'base = "price_spike"\n{text}\n')
    _raises(lambda: load_scenario_file(path), str(path), *parts)


@pytest.mark.parametrize("base", ["5", '"nowhere"', '["price_spike"]'])
def test_scenario_file_bad_base(tmp_path: Path, base: str) -> None:
    path = tmp_path / "sc.toml"
    path.write_text(f"base = {base}\n")
    _raises(lambda: load_scenario_file(path), "base", "price_spike, solar_surplus, emergency")


def test_scenario_file_integers_become_floats(tmp_path: Path) -> None:
    path = tmp_path / "sc.toml"
    path.write_text('base = "emergency"\nepisode_steps = 30\nprice_cap_per_mwh = 900\n'
                    "event_time_s = inf\ncontingency_mw = 0\nreserve_target_mw = 0\n")
    sc = load_scenario_file(path)
    assert sc.episode_steps == 30 and type(sc.episode_steps) is int
    assert sc.price_cap_per_mwh == 900.0 and type(sc.price_cap_per_mwh) is float
    assert sc.event_time_s == math.inf and not sc.has_event
    raw = gridswarm_env.parallel_env(scenario=sc, n_agents=10, trust="hmac").unwrapped
    raw.reset(seed=0)
    assert raw.price_levels[-1] == 900.0


# --------------------------------------------------------------------------- limits
@pytest.mark.parametrize(("section", "key", "value", "allowed"), [
    ("battery", "max_discharge_mw", "2", "finite number"),
    ("battery", "soc_max", "0.9", "finite number"),
    ("battery", "soc_min", True, "finite number"),
    ("battery", "ramp_mw_per_s", "fast", "number (inf allowed)"),
    ("battery", "ramp_mw_per_s", math.nan, "number (inf allowed)"),
    ("battery", "ramp_mw_per_s", -math.inf, "> 0"),
    ("ev", "departure_soc", "0.8", "finite number"),
    ("ev", "max_charge_mw", [1.0], "finite number"),
    ("solar", "soc_min", None, "finite number"),
])
def test_limits_wrong_types_name_section_and_key(section, key, value, allowed) -> None:
    data = {section: {key: value}}
    _raises(lambda: Limits.from_dict(data), f"limits[{section!r}].{key}", allowed)
    _raises(lambda: DerLimits(**{key: value}), f"DerLimits.{key}", allowed)


@pytest.mark.parametrize("value", [5, "x", [1, 2]])
def test_limits_agent_entry_must_be_a_table(value) -> None:
    _raises(lambda: Limits.from_dict({"agents": {"battery_003": value}}),
            "limits.agents['battery_003']", "table", "soc_min")


def test_limits_agents_section_must_be_a_table() -> None:
    _raises(lambda: Limits.from_dict({"agents": 3}), "limits['agents']", "table")
    _raises(lambda: Limits(per_agent=[("battery_003", {})]), "per_agent", "table")


def test_limits_per_agent_values_checked_before_reset() -> None:
    _raises(lambda: Limits.from_dict({"agents": {"battery_003": {"soc_min": "0.3"}}}),
            "limits.agents['battery_003'].soc_min", "finite number")
    _raises(lambda: Limits(per_agent={"battery_003": {"soc_min": 0.9, "soc_max": 0.2}}),
            "limits.agents['battery_003']", "soc_min (0.9) must be <= soc_max (0.2)")
    _raises(lambda: Limits.from_dict({"agents": {"battery_003": {7: 0.1}}}),
            "unknown field", "7", "soc_min")


def test_limits_per_agent_merge_error_names_the_agent(make_env) -> None:
    # soc_min alone is valid; merged on the battery default soc_max = 0.95 it is not
    # (refused when the environment is built; it used to wait for the first reset)
    _raises(lambda: make_env("emergency", 10,
                             limits={"agents": {"battery_003": {"soc_min": 0.99}}}),
            "limits.agents['battery_003']", "soc_min (0.99)", "soc_max (0.95)")
    _raises(lambda: make_env("emergency", 10, limits={"agents": {"battery_077": {}}}),
            "limits name agent(s) battery_077 that a fleet of 10 agents does not have")


def test_limits_numbers_normalized_and_equivalent(make_env) -> None:
    as_ints = Limits.from_dict({"battery": {"max_discharge_mw": 1, "soc_min": np.float32(0.25),
                                            "ramp_mw_per_s": np.int64(2)},
                                "agents": {"battery_003": {"soc_max": np.float64(0.9)}}})
    as_floats = Limits.from_dict({"battery": {"max_discharge_mw": 1.0,
                                              "soc_min": float(np.float32(0.25)),
                                              "ramp_mw_per_s": 2.0},
                                  "agents": {"battery_003": {"soc_max": 0.9}}})
    assert as_ints == as_floats
    battery = as_ints.for_kind("battery")
    assert type(battery.max_discharge_mw) is float and type(battery.ramp_mw_per_s) is float
    assert type(as_ints.per_agent["battery_003"]["soc_max"]) is float
    assert Limits.from_dict(as_ints.to_dict()) == as_ints
    a = make_env("emergency", 10, limits=as_ints)
    b = make_env("emergency", 10, limits=as_floats)
    a.reset(seed=0)
    b.reset(seed=0)
    for name in ("max_discharge_mw", "soc_min", "soc_max", "ramp_mw_per_s"):
        np.testing.assert_array_equal(getattr(a.kernel.arrays, name),
                                      getattr(b.kernel.arrays, name))
    assert DerLimits(ramp_mw_per_s=math.inf).ramp_mw_per_s == math.inf


def test_limits_caller_dict_not_aliased() -> None:
    changes = {"soc_min": 0.3}
    limits = Limits.from_dict({"agents": {"battery_003": changes}})
    changes["soc_min"] = "oops"
    assert limits.per_agent["battery_003"] == {"soc_min": 0.3}


@pytest.mark.parametrize(("toml", "parts"), [
    ('[battery]\nmax_discharge_mw = "2"\n', ("limits['battery'].max_discharge_mw", "'2'")),
    ('[battery]\nsoc_max = "0.9"\n', ("limits['battery'].soc_max", "'0.9'")),
    ("[agents]\nbattery_003 = 5\n", ("limits.agents['battery_003'] = 5", "table")),
    ("[battery]\nsoc_min = 0.99\n", ("limits['battery']", "soc_min (0.99) must be <= soc_max")),
])
def test_limits_file_errors_name_the_file(tmp_path: Path, toml: str, parts) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(toml)
    _raises(lambda: as_limits(path), f"limits file {str(path)!r}", *parts)


# --------------------------------------------------------------------------- command lines
BAD_LIMITS = [
    '[battery]\nmax_discharge_mw = "2"\n',
    '[battery]\nsoc_max = "0.9"\n',
    "[agents]\nbattery_003 = 5\n",
]


@pytest.mark.parametrize("toml", BAD_LIMITS)
def test_demo_bad_limits_file_is_a_one_line_usage_error(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--no-live", "--steps", "3",
                           "--limits", str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.py: error: limits file"), proc.stderr
    assert proc.stdout == ""


def test_evaluate_bad_limits_file_is_a_one_line_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_LIMITS[0])
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--episodes", "1",
                           "--limits", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_discharge_mw" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
