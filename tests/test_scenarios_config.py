"""Scenario registry and configuration validation: clear ``ValueError``s naming the field.

Every check here is what a user hits first: a typo in a scenario name, a zero or
negative setting, an efficiency above 1, shares that do not add up.
"""

from __future__ import annotations

import dataclasses
import math
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
from gridswarm_env.grid import GridParams
from gridswarm_env.scenarios import (
    SCENARIOS,
    Scenario,
    get_scenario,
    load_scenario_file,
    scenario_names,
)

KNOWN = ("price_spike", "solar_surplus", "emergency")


# --------------------------------------------------------------------------- scenarios
def test_registry_names_and_descriptions() -> None:
    assert scenario_names() == KNOWN == gridswarm_env.scenario_names()
    for name in KNOWN:
        sc = SCENARIOS[name]
        assert sc.name == name and sc.description and sc.success
        assert sc.price_cap_per_mwh > sc.price_floor_per_mwh


@pytest.mark.parametrize("make", [
    lambda: get_scenario("blackout"),
    lambda: gridswarm_env.parallel_env(scenario="blackout", n_agents=10, trust="hmac"),
    lambda: gridswarm_env.env(scenario="Price_Spike", n_agents=10, trust="hmac"),
])
def test_unknown_scenario_lists_known_ones(make) -> None:
    with pytest.raises(ValueError, match="unknown scenario") as info:
        make()
    assert all(name in str(info.value) for name in KNOWN)


def test_scenario_timelines() -> None:
    ps, ss, em = (SCENARIOS[n] for n in KNOWN)
    # price_spike: load +110 MW over 20-80 s, generation follows 80-260 s
    np.testing.assert_allclose(ps.forecast_shortage_mw([0.0, 20.0, 50.0, 80.0, 170.0, 260.0]),
                               [0.0, 0.0, 55.0, 110.0, 55.0, 0.0], atol=1e-12)
    # solar_surplus: the mirror image with −70 MW
    np.testing.assert_allclose(ss.forecast_shortage_mw([50.0, 80.0, 260.0]), [-35.0, -70.0, 0.0],
                               atol=1e-12)
    # emergency: 100 MW lost from t = 10 s, before which reserve rounds run
    np.testing.assert_array_equal(em.lost_generation_mw([9.99, 10.0, 50.0]), [0, 100, 100])
    assert em.has_event and not ps.has_event and not ss.has_event
    assert em.reserve_target_mw == 100.0 and em.contingency_mw / 1000.0 == pytest.approx(0.10)
    np.testing.assert_allclose(ps.irradiance(np.array([0.0, 150.0, 300.0]), 300.0),
                               [0.15, 0.115, 0.08])
    np.testing.assert_array_equal(ps.price_levels_per_mwh(11), np.linspace(0, 500, 11))
    np.testing.assert_array_equal(ss.price_levels_per_mwh(11), np.linspace(-50, 50, 11))


def test_env_uses_scenario_profile(make_env) -> None:
    raw = make_env("emergency", 10)
    raw.reset(seed=0)
    sc, pdt = raw.scenario, raw.config.grid.physics_dt_s
    t_mid = (np.arange(sc.episode_steps * raw.n_substeps) + 0.5) * pdt
    expected = (sc.forecast_shortage_mw(t_mid) + sc.lost_generation_mw(t_mid)).reshape(
        sc.episode_steps, raw.n_substeps)
    np.testing.assert_array_equal(raw.requirement_sub_mw, expected)
    np.testing.assert_array_equal(raw.price_levels, np.linspace(0.0, 100.0, 11))
    products = [raw.round_product]
    while raw.agents:
        raw.step_arrays(np.full(10, 10), np.zeros(10, dtype=np.int64))
        products.append(raw.round_product)
    # reserve rounds (product 1) only for windows before the trip, energy afterwards
    assert products[0] == 1 and products[-1] == 0
    assert products.index(0) <= int(sc.event_time_s / raw.config.dt_s)


def test_get_scenario_overrides_and_validates() -> None:
    sc = get_scenario("price_spike", load_step_mw=120.0, episode_steps=50)
    assert sc.load_step_mw == 120.0 and sc.episode_steps == 50
    assert SCENARIOS["price_spike"].load_step_mw == 110.0       # the registry is untouched
    assert get_scenario(sc) is sc
    with pytest.raises(ValueError, match="no field.*load_stepp_mw"):
        get_scenario("price_spike", load_stepp_mw=1.0)
    with pytest.raises(ValueError, match="episode_steps"):
        get_scenario("price_spike", episode_steps=0)
    with pytest.raises(ValueError, match="price_cap_per_mwh"):
        get_scenario("solar_surplus", price_cap_per_mwh=-60.0)
    with pytest.raises(ValueError, match="contingency_mw"):
        get_scenario("emergency", contingency_mw=2000.0)
    with pytest.raises(ValueError, match="gen_follow"):
        get_scenario("price_spike", gen_follow=1.5)
    with pytest.raises(ValueError, match="start_hour"):
        get_scenario("price_spike", start_hour=24.0)


def test_custom_scenario_in_env(make_env) -> None:
    short = get_scenario("price_spike", episode_steps=15)
    raw = make_env(short, 10)
    raw.reset(seed=0)
    steps = 0
    while raw.agents:
        raw.step_arrays(np.full(10, 10), np.zeros(10, dtype=np.int64))
        steps += 1
    assert steps == 15 and raw.episode_metrics()["steps"] == 15


def test_load_scenario_file(tmp_path: Path) -> None:
    good = tmp_path / "sc.toml"
    good.write_text('base = "emergency"\ncontingency_mw = 60.0\nevent_time_s = 5.0\n')
    sc = load_scenario_file(good)
    assert (sc.name, sc.contingency_mw, sc.event_time_s) == ("emergency", 60.0, 5.0)
    no_base = tmp_path / "nobase.toml"
    no_base.write_text("contingency_mw = 60.0\n")
    with pytest.raises(ValueError, match="base"):
        load_scenario_file(no_base)
    bad_field = tmp_path / "bad.toml"
    bad_field.write_text('base = "emergency"\ncontingency = 60.0\n')
    with pytest.raises(ValueError, match="unknown field 'contingency'"):
        load_scenario_file(bad_field)
    with pytest.raises(ValueError, match="does not exist"):
        load_scenario_file(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(("make", "field", "allowed"), [
    (lambda: EnvConfig(n_agents=0), "n_agents", ">= 1"),
    (lambda: EnvConfig(n_agents=-5), "n_agents", ">= 1"),
    (lambda: EnvConfig(n_agents=2.5), "n_agents", "integer"),
    (lambda: EnvConfig(n_agents=True), "n_agents", "integer"),
    (lambda: EnvConfig(dt_s=0.0), "dt_s", "> 0"),
    (lambda: EnvConfig(dt_s=-1.0), "dt_s", "> 0"),
    (lambda: EnvConfig(dt_s=float("nan")), "dt_s", "finite"),
    (lambda: EnvConfig(dt_s=1.03), "dt_s", "multiple"),
    # user-path review: these allocated until memory ran out (or for minutes)
    (lambda: EnvConfig(n_agents=10**9), "n_agents", "at most 1,000,000 agents"),
    (lambda: EnvConfig(dt_s=1e12), "dt_s", "at most 3600 s"),
    (lambda: EnvConfig(dt_s=3600.0), "dt_s", "sub-steps of 0.05 s per step; at most 2,400"),
    (lambda: EnvConfig(grid={"inertia_h_s": 2.0}), "grid", "expected a GridParams, got dict"),
    (lambda: EnvConfig(bus=None), "bus", "expected a BusConfig, got NoneType"),
    (lambda: gridswarm_env.parallel_env("emergency", config=EnvConfig(dt_s=5.0)), "dt_s",
     "no reserve round its agents can answer before the event"),
    # the KPIs measure deviations from 60 Hz: a 50 Hz grid reported 10 Hz off everywhere
    (lambda: gridswarm_env.parallel_env(config=EnvConfig(grid=GridParams(nominal_freq_hz=50.0))),
     "nominal_freq_hz = 50.0", "only 60 is supported"),
    (lambda: gridswarm_env.parallel_env(seed=-1), "seed", "non-negative int"),
    (lambda: gridswarm_env.parallel_env(seed=1.5), "seed", "non-negative int"),
    (lambda: EnvConfig(dt_s=0.2), "gate_s", "shorter than dt_s"),
    (lambda: EnvConfig(trust="rsa"), "trust", "ed25519, hmac"),
    (lambda: EnvConfig(shadow="yes"), "shadow", "True or False"),
    (lambda: EnvConfig(crypto_threads=0), "crypto_threads", ">= 1"),
    (lambda: EnvConfig(crypto_threads=2.0), "crypto_threads", "integer >= 1"),
    (lambda: EnvConfig(crypto_threads=1000), "crypto_threads = 1000", "at most 256"),
    (lambda: FleetConfig(battery_power_mw=-1.0), "battery_power_mw", ">= 0"),
    (lambda: FleetConfig(ev_power_mw=-0.1), "ev_power_mw", ">= 0"),
    (lambda: FleetConfig(solar_capacity_mw=-10.0), "solar_capacity_mw", ">= 0"),
    (lambda: FleetConfig(battery_duration_h=0.0), "battery_duration_h", "> 0"),
    (lambda: FleetConfig(battery_eta_charge=0.0), "battery_eta_charge", "(0.0, 1.0]"),
    (lambda: FleetConfig(battery_eta_discharge=1.2), "battery_eta_discharge", "(0.0, 1.0]"),
    (lambda: FleetConfig(ev_eta_charge=-0.5), "ev_eta_charge", "(0.0, 1.0]"),
    (lambda: FleetConfig(solar_inverter_eta=1.01), "solar_inverter_eta", "(0.0, 1.0]"),
    (lambda: FleetConfig(share_solar=0.5), "share_solar + share_battery + share_ev",
     "sum to 1"),
    (lambda: FleetConfig(share_solar=-0.1, share_battery=0.8), "share_solar", "[0.0, 1.0]"),
    (lambda: FleetConfig(ev_soc_init_low=0.8, ev_soc_init_high=0.2), "ev_soc_init_low",
     "<="),
    (lambda: MarketConfig(n_power_levels=20), "n_power_levels", "odd"),
    (lambda: MarketConfig(n_power_levels=1), "n_power_levels", ">= 3"),
    (lambda: MarketConfig(n_price_levels=1), "n_price_levels", ">= 2"),
    # fuzzing review: these failed deep inside numpy (8 TiB masks, 2**62-step profiles)
    (lambda: gridswarm_env.parallel_env(["emergency"]), "unknown scenario ['emergency']",
     "known scenarios: price_spike"),
    (lambda: MarketConfig(n_price_levels=2**40), "n_price_levels", "at most 1,001"),
    (lambda: MarketConfig(n_power_levels=2**63 + 1), "n_power_levels", "at most 1,001"),
    (lambda: get_scenario("emergency", episode_steps=2**62), "episode_steps",
     "at most 1,000,000"),
    (lambda: get_scenario("price_spike", price_floor_per_mwh=-1e308, price_cap_per_mwh=1e308),
     "price_cap_per_mwh - price_floor_per_mwh", "must be finite"),
    (lambda: get_scenario("emergency", load_step_mw=1e308), "load_step_mw",
     "below base_load_mw"),
    (lambda: MarketConfig(consensus_share=0.0), "consensus_share", "(0.0, 1.0]"),
    (lambda: CostConfig(voll_per_mwh=-1.0), "voll_per_mwh", ">= 0"),
    (lambda: RewardConfig(scale=0.0), "scale", "> 0"),
])
def test_bad_config_names_field_value_and_allowed(make, field: str, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert field in message and allowed in message, message


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n_agents": 0}, "n_agents"),
    ({"trust": "rsa"}, "trust"),
    ({"render_mode": "rgb_array"}, "render_mode"),
    ({"render_mode": "ANSI"}, "render_mode"),
    ({"shadow": 1}, "shadow"),
])
def test_bad_env_arguments(kwargs: dict, field: str) -> None:
    kwargs = {"scenario": "emergency", "n_agents": 10, "trust": "hmac", **kwargs}
    with pytest.raises(ValueError, match=field):
        gridswarm_env.parallel_env(**kwargs)
    with pytest.raises(ValueError, match=field):
        gridswarm_env.env(**kwargs)


def test_valid_edge_values_accepted() -> None:
    assert FleetConfig(battery_eta_charge=1.0, ev_eta_charge=1.0).battery_eta_charge == 1.0
    assert FleetConfig(share_solar=0.0, share_battery=1.0, share_ev=0.0).share_battery == 1.0
    assert FleetConfig(share_solar=0.1, share_battery=0.7, share_ev=0.2)   # 0.1+0.7+0.2 != 1.0
    assert EnvConfig(n_agents=1, dt_s=0.5).n_agents == 1
    assert MarketConfig(n_power_levels=3).n_power_levels == 3


def test_configs_are_frozen_and_override_validates() -> None:
    cfg = EnvConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_agents = 3  # type: ignore[misc]
    small = override(cfg, n_agents=5)
    assert small.n_agents == 5 and cfg.n_agents == 100
    with pytest.raises(ValueError, match="known fields"):
        override(cfg, agents=5)
    with pytest.raises(ValueError, match="n_agents"):
        override(cfg, n_agents=0)


def test_config_fleet_reaches_env(make_env) -> None:
    fleet = FleetConfig(share_solar=0.0, share_battery=1.0, share_ev=0.0,
                        battery_power_mw=50.0)
    raw = make_env("price_spike", 8, config=EnvConfig(fleet=fleet))
    raw.reset(seed=0)
    assert all(a.startswith("battery_") for a in raw.possible_agents)
    assert raw.fleet.rated_power_mw.sum() == pytest.approx(50.0)
    assert not math.isnan(raw.fleet.soc.sum())


def test_scenario_objects_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SCENARIOS["emergency"].contingency_mw = 0.0  # type: ignore[misc]
    assert isinstance(SCENARIOS["emergency"], Scenario)


def test_a_trip_inside_a_substep_counts_for_the_part_after_it():
    """Reviewer: the trip was sampled at sub-step midpoints, so it started up to
    physics_dt_s/2 early or late (10.024 s -> 10.000 s, 10.026 s -> 10.050 s)."""
    from gridswarm_env.env import GridSwarmEnv

    base = get_scenario("emergency")
    pdt = 0.05
    t0 = np.arange(400) * pdt
    for event in (10.0, 10.024, 10.026, 10.05):
        sc = dataclasses.replace(base, event_time_s=event)
        mean = sc.lost_generation_mean_mw(t0, t0 + pdt)
        # exact energy of the step function over [0, 20 s)
        assert mean.sum() * pdt == pytest.approx(sc.contingency_mw * (20.0 - event), rel=1e-12)
        assert np.all((mean == 0.0) | (mean == sc.contingency_mw) | (t0 < event) & (event < t0 + pdt))
    # in the environment: moving the trip by 2 ms moves the lost energy by 2 ms, not 50
    lost_mwh = {}
    for event in (10.024, 10.026):
        raw = GridSwarmEnv(dataclasses.replace(base, event_time_s=event), n_agents=5,
                           trust="hmac")
        raw.reset(seed=0)
        lost_mwh[event] = float((raw.requirement_sub_mw.sum() * pdt) / 3600.0)
    assert lost_mwh[10.024] - lost_mwh[10.026] == pytest.approx(
        base.contingency_mw * 0.002 / 3600.0, rel=1e-6)


def test_fewer_agents_than_kinds_warns_which_capacity_is_left_out() -> None:
    """Energy review: at n_agents = 1 or 2 whole kinds (115 MW of PV, 50 MW of EVs) had no
    agent and vanished silently, so the scenario no longer behaved as at larger fleets."""
    import warnings

    from gridswarm_env.env import GridSwarmEnv

    with pytest.warns(UserWarning, match=r"n_agents=1 .*solar \(115\.2 MW\), ev \(50 MW\)"):
        GridSwarmEnv("price_spike", n_agents=1, trust="hmac")
    with pytest.warns(UserWarning, match=r"n_agents=2 .*: ev \(50 MW\): no agent"):
        GridSwarmEnv("price_spike", n_agents=2, trust="hmac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GridSwarmEnv("price_spike", n_agents=3, trust="hmac")


@pytest.mark.parametrize("build", ["parallel_env", "env", "GridSwarmEnv"])
def test_fewer_agents_warning_points_at_the_callers_line(build) -> None:
    """First-use review: the warning's stacklevel named the package's own
    ``return GridSwarmEnv(...)`` line in ``parallel_env``, printed under the message."""
    import gridswarm_env

    make = getattr(gridswarm_env, build) if build != "GridSwarmEnv" else gridswarm_env.raw_env
    with pytest.warns(UserWarning, match="fewer than the fleet's DER kinds") as record:
        make("price_spike", n_agents=2, trust="hmac")
    [warning] = [w for w in record if "DER kinds" in str(w.message)]
    assert warning.filename == __file__


def test_a_reserve_target_needs_an_event(tmp_path: Path) -> None:
    """Review: reserve rounds run while a round's window starts before event_time_s, so a
    reserve target with no event (event_time_s = inf) made every round a reserve round:
    price_spike with reserve_target_mw = 50 never requested energy (heuristic, seed 0:
    system_cost 33 000 $, nadir 59.64 Hz, as with no DER at all)."""
    for name, changes in (("price_spike", {"reserve_target_mw": 50.0}),
                          ("emergency", {"event_time_s": math.inf}),
                          ("emergency", {"event_time_s": math.inf, "contingency_mw": 0.0})):
        with pytest.raises(ValueError, match=r"reserve_target_mw = \d.*finite event_time_s"):
            get_scenario(name, **changes)
    path = tmp_path / "sc.toml"
    path.write_text('base = "emergency"\nevent_time_s = inf\ncontingency_mw = 0\n')
    with pytest.raises(ValueError, match=r"sc\.toml.*reserve_target_mw = 100\.0.*set "
                                         r"reserve_target_mw = 0"):
        load_scenario_file(path)
    # still allowed: no reserve with no event, and reserve bought before a finite event
    assert not get_scenario("emergency", event_time_s=math.inf,
                            reserve_target_mw=0.0).has_event
    assert get_scenario("price_spike", reserve_target_mw=50.0, event_time_s=30.0,
                        contingency_mw=0.0).reserve_target_mw == 50.0


def test_stabilization_is_measured_from_the_moved_disturbance():
    """Review: disturbance_time_s was a field of its own, so moving the emergency's trip to
    30 s still measured stabilization_time_s from 10 s (20 s too long whenever the
    frequency left the band). It now follows the first disturbance unless given."""
    assert get_scenario("emergency").disturbance_time_s == 10.0
    assert get_scenario("emergency", event_time_s=30.0).disturbance_time_s == 30.0
    assert get_scenario("price_spike", load_step_start_s=50.0).disturbance_time_s == 50.0
    assert get_scenario("price_spike", load_step_mw=0.0).disturbance_time_s == 0.0
    explicit = get_scenario("emergency", event_time_s=30.0, disturbance_time_s=5.0)
    assert explicit.disturbance_time_s == 5.0
    assert get_scenario(explicit, event_time_s=40.0).disturbance_time_s == 5.0   # kept
    env = gridswarm_env.parallel_env(scenario=get_scenario("emergency", event_time_s=30.0),
                                     n_agents=6, trust="hmac")
    env.reset(seed=0)
    assert env.unwrapped.metrics.disturbance_time_s == 30.0
    with pytest.raises(ValueError, match="disturbance_time_s"):
        get_scenario("emergency", disturbance_time_s=-1.0)
