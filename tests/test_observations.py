"""gridswarm_env.observations alone: the builder on a fleet and hand-set inputs (no
environment, bus or market), and the info dicts."""

from __future__ import annotations

import math

import numpy as np

from gridswarm_env.config import FleetConfig
from gridswarm_env.fleet import KIND_EV, build_fleet, kind_selector
from gridswarm_env.observations import (
    OBS_DIM,
    OBS_FIELDS,
    OBS_LIMIT,
    ObservationBuilder,
    agent_infos,
)

N = 9
COL = {name: i for i, name in enumerate(OBS_FIELDS)}


def _builder(**changes):
    fleet = build_fleet(N, FleetConfig(), 0.5, np.random.default_rng(0))
    signals = dict(request_mw=np.full(N, 4.0), price_per_mwh=np.full(N, 80.0),
                   product=np.zeros(N, dtype=np.int8), freq_hz=np.full(N, 59.9),
                   rocof_hz_per_s=np.full(N, -0.2),
                   clearing_price_per_mwh=np.full(N, np.nan), signal_age=np.full(N, 2.0),
                   emergency_seen=np.zeros(N, dtype=bool))
    kw = dict(nominal_freq_hz=60.0, request_scale_mw=8.0, price_floor_per_mwh=-20.0,
              price_cap_per_mwh=180.0, start_hour=6.0, duration_s=600.0)
    kw.update(changes)
    b = ObservationBuilder(fleet, kind_selector(fleet.kind, KIND_EV), np.zeros(N),
                           **signals, **kw)
    return b, fleet, signals


def _build(b, t_s=150.0, **changes):
    rated = b.fleet.rated_power_mw
    args = dict(lo_mw=-0.5 * rated, hi_mw=0.25 * rated, baseline_mw=np.zeros(N),
                scheduled_mw=0.1 * rated, executed_mw=-0.2 * rated, standing_mw=np.zeros(N),
                activation_s=np.full(N, np.inf), backpressure=np.zeros(N, dtype=bool),
                accepted_share=np.linspace(0.0, 1.0, N))
    args.update(changes)
    return b.build(t_s, **args)


def test_the_field_table_is_the_environments() -> None:
    import importlib

    import gridswarm_env

    env = importlib.import_module("gridswarm_env.env")   # gridswarm_env.env is the AEC factory

    assert OBS_DIM == len(OBS_FIELDS) == 28 and len(set(OBS_FIELDS)) == OBS_DIM
    assert env.OBS_FIELDS is OBS_FIELDS is gridswarm_env.OBS_FIELDS
    assert env.OBS_DIM == OBS_DIM and env.OBS_LIMIT == OBS_LIMIT


def test_fields_against_their_definitions() -> None:
    b, fleet, _ = _builder()
    obs = _build(b)
    assert obs.shape == (N, OBS_DIM) and obs.dtype == np.float32
    kinds = obs[:, :3].argmax(axis=1)   # is_solar, is_battery, is_ev
    np.testing.assert_array_equal(kinds, fleet.kind)
    np.testing.assert_allclose(obs[:, COL["feasible_lo_rel"]], -0.5, rtol=1e-6)
    np.testing.assert_allclose(obs[:, COL["feasible_hi_rel"]], 0.25, rtol=1e-6)
    np.testing.assert_allclose(obs[:, COL["scheduled_rel"]], 0.1, rtol=1e-6)
    np.testing.assert_allclose(obs[:, COL["executed_rel"]], -0.2, rtol=1e-6)
    store = fleet.energy_capacity_mwh > 0
    np.testing.assert_allclose(obs[store, COL["soc"]],
                               fleet.energy_mwh[store] / fleet.energy_capacity_mwh[store],
                               rtol=1e-6)
    assert np.all(obs[~store, COL["soc"]] == 0.0)
    np.testing.assert_allclose(obs[:, COL["request_rel"]], 0.5)               # 4 / 8 MW
    np.testing.assert_allclose(obs[:, COL["price_rel"]], 0.5)                 # (80 + 20) / 200
    np.testing.assert_allclose(obs[:, COL["freq_dev_rel"]], -0.2, rtol=1e-5)  # −0.1 / 0.5 Hz
    np.testing.assert_allclose(obs[:, COL["rocof_rel"]], -0.2, rtol=1e-6)
    np.testing.assert_allclose(obs[:, COL["signal_age"]], 0.2, rtol=1e-6)
    hour = 6.0 + 150.0 / 3600.0
    np.testing.assert_allclose(obs[:, COL["tod_sin"]], math.sin(2 * math.pi * hour / 24),
                               rtol=1e-6)
    np.testing.assert_allclose(obs[:, COL["progress"]], 0.25)
    assert np.all(obs[:, COL["last_clearing_price_rel"]] == 0.0)   # NaN: none yet
    assert np.all(obs[:, COL["reserve_active"]] == 0.0)
    np.testing.assert_allclose(obs[:, COL["accepted_share"]], np.linspace(0.0, 1.0, N),
                               rtol=1e-6)


def test_signals_written_in_place_are_read_at_the_next_build_and_clipped() -> None:
    b, _fleet, sig = _builder()
    sig["request_mw"][:] = [1e12, -1e12] * 4 + [0.0]
    sig["clearing_price_per_mwh"][:] = 30.0
    sig["signal_age"][:] = 50.0
    activation = np.full(N, np.inf)
    activation[0] = 3.0
    obs = _build(b, activation_s=activation)
    np.testing.assert_array_equal(obs[:, COL["request_rel"]],
                                  [OBS_LIMIT, -OBS_LIMIT] * 4 + [0.0])
    np.testing.assert_allclose(obs[:, COL["last_clearing_price_rel"]], 0.25)
    assert np.all(obs[:, COL["signal_age"]] == 1.0)                 # capped at 10 steps
    assert obs[0, COL["reserve_active"]] == 1.0 and not obs[1:, COL["reserve_active"]].any()


def test_two_builds_of_the_same_inputs_are_equal() -> None:
    b, _fleet, _sig = _builder()
    first = _build(b)
    np.testing.assert_array_equal(_build(b), first)
    assert _build(b) is not first          # a new array each call


def test_agent_infos() -> None:
    masks = np.array([[True, False, True], [False, True, True]])
    lo, hi = np.array([-1.0, 0.0]), np.array([2.0, 0.5])
    infos = agent_infos(["a", "b"], masks, lo, hi)
    assert list(infos) == ["a", "b"] and infos["b"]["feasible_mw"] == (0.0, 0.5)
    assert infos["a"]["action_mask"].dtype == np.int8
    assert infos["a"]["action_mask"].tolist() == [1, 0, 1] and "would_dispatch_mw" not in infos["a"]
    shadow = agent_infos(["a", "b"], masks, lo, hi, np.array([0.25, -1.0]))
    assert shadow["a"]["would_dispatch_mw"] == 0.25 and shadow["b"]["would_dispatch_mw"] == -1.0
