"""Whole-episode energy and money balances, per scenario (physics review).

Over an episode played by the heuristic policy, with ``h = dt_s/3600`` and a DER's net
injection ``net = baseline + p`` (MW, + into the grid) taken from what dispatch executed:

* storage: ``E_end − E_start = η_c·Σ max(−net, 0)·h − Σ max(net, 0)·h/η_d`` for every
  battery and EV (efficiencies on the store's side: the grid supplies more than is
  stored and receives less than leaves the store), solar stores nothing; the losses
  ``grid in − grid out − ΔE`` are ``(1 − η_c)`` of the energy drawn plus ``(1/η_d − 1)``
  of the energy delivered, so never negative;
* grid: the balancing energy the swing equation saw, ``Σ_sub P_sub·physics_dt``, is the
  energy the stores were charged for, ``Σ_agents p_mean·dt``;
* money: without reserve, ``balancing_payments`` is
  ``Σ_k π_{k−1}·D_k·h`` (pay-as-clear: round ``k − 1``'s clearing price times the
  energy delivered in step ``k``, its delivery window).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from gridswarm_env.config import EnvConfig, FleetConfig
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR
from tests.episodes import play

env_module = importlib.import_module("gridswarm_env.env")


def _play_recording(raw, policy: str, seed: int, monkeypatch) -> tuple[list, np.ndarray, float]:
    """Play an episode; return what dispatch executed each step, the stored energy before
    the first step and ``Σ_k π_{k−1}·D_k·h`` (the previous round's clearing price times
    the balancing energy delivered in its window)."""
    executed, e_start = [], []
    real_execute = env_module.execute

    def recording_execute(fleet, kernel, **kwargs):
        if not e_start:
            e_start.append(fleet.energy_mwh.copy())   # before the first step's dispatch
        ex = real_execute(fleet, kernel, **kwargs)
        executed.append(ex)
        return ex

    monkeypatch.setattr(env_module, "execute", recording_execute)
    h = raw.config.dt_s / 3600.0
    money = 0.0
    price_prev = math.nan
    for _rewards, info in play(raw, policy, seed=seed):
        if math.isfinite(price_prev):
            money += price_prev * info["delivered_mw"] * h
        price_prev = info["clearing_price_per_mwh"]
    return executed, e_start[0], money


@pytest.mark.parametrize("scenario", ["price_spike", "solar_surplus", "emergency"])
def test_episode_energy_and_money_balance(make_env, monkeypatch, scenario: str) -> None:
    raw = make_env(scenario, 60)
    executed, e_start, money = _play_recording(raw, "heuristic", 3, monkeypatch)
    assert len(executed) == raw.scenario.episode_steps
    f = raw.fleet
    h = raw.config.dt_s / 3600.0
    sub_h = raw.config.grid.physics_dt_s / 3600.0

    grid_in = np.zeros(f.n_agents)
    grid_out = np.zeros(f.n_agents)
    seen_by_grid_mwh = stores_charged_mwh = 0.0
    for ex in executed:
        net = ex.baseline_mw + ex.p_mean_mw
        grid_out += np.maximum(net, 0.0) * h
        grid_in += np.maximum(-net, 0.0) * h
        seen_by_grid_mwh += float(ex.p_total_sub_mw.sum()) * sub_h
        stores_charged_mwh += float(ex.p_mean_mw.sum()) * h
    delta = f.energy_mwh - e_start
    expected = f.eta_charge * grid_in - grid_out / np.where(f.eta_discharge > 0,
                                                            f.eta_discharge, 1.0)
    storage = f.kind != KIND_SOLAR
    np.testing.assert_allclose(delta[storage], expected[storage], rtol=1e-9, atol=1e-12)
    assert np.all(f.energy_mwh[f.kind == KIND_SOLAR] == 0.0)
    for kind in (KIND_BATTERY, KIND_EV):
        m = f.kind == kind
        losses = grid_in[m].sum() - grid_out[m].sum() - delta[m].sum()
        want = ((1.0 - f.eta_charge[m]) * grid_in[m]
                + (1.0 / f.eta_discharge[m] - 1.0) * grid_out[m]).sum()
        assert losses == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert losses > 0.0
    assert grid_out[f.kind == KIND_EV].sum() == 0.0          # no V2G
    assert seen_by_grid_mwh == pytest.approx(stores_charged_mwh, rel=1e-9, abs=1e-12)
    assert stores_charged_mwh != 0.0

    kpi = raw.episode_metrics()
    soc = f.soc[storage]
    assert np.all((soc >= 0.0) & (soc <= 1.0))
    assert kpi["executed_violations"] == 0
    if raw.scenario.reserve_target_mw == 0.0:   # energy rounds only
        assert raw.dispatch_clamped == 0
        assert kpi["balancing_payments"] == pytest.approx(money, rel=1e-9, abs=1e-9)
        assert kpi["balancing_payments"] != 0.0


def test_payments_follow_delivered_not_contracted_energy(make_env, monkeypatch) -> None:
    """PV far off its forecast: curtailment contracts that the available output cannot
    deliver are clamped; they are paid for what was delivered and penalized for the rest."""
    fleet = FleetConfig(solar_variability_std=0.3, solar_forecast_error_std=0.3)
    raw = make_env("solar_surplus", 60, config=EnvConfig(fleet=fleet))
    _executed, _e_start, money = _play_recording(raw, "random", 3, monkeypatch)
    kpi = raw.episode_metrics()
    assert raw.dispatch_clamped > 0
    assert kpi["balancing_payments"] == pytest.approx(money, rel=1e-9, abs=1e-9)
    assert kpi["der_revenue"] < kpi["balancing_payments"]    # undelivered energy penalized


@pytest.mark.parametrize("dt_s", [0.5, 2.0])
def test_energy_balance_under_a_ramp_limit_holds_sub_step_by_sub_step(make_env, monkeypatch,
                                                                       dt_s: float) -> None:
    """Under a ramp limit (1 MW/s on every DER, ``emergency``) the power ramps inside the
    step (dispatch._execute_ramped): the storage balance holds with the net injection of
    every sub-step, ``E_end − E_start = η_c·Σ max(−net, 0)·h_sub − Σ max(net, 0)·h_sub/η_d``;
    the swing equation saw ``Σ_agents p_mean·dt``; and the path keeps the ramp sub-step by
    sub-step (``kernel.ramp_path_broken``) from each step's last sub-step."""
    from gridswarm_env.kernel import ramp_path_broken

    ramp = {k: {"ramp_mw_per_s": 1.0} for k in ("battery", "solar", "ev")}
    raw = make_env("emergency", 60, limits=ramp, config=EnvConfig(dt_s=dt_s))
    executed, e_start, _ = _play_recording(raw, "heuristic", 0, monkeypatch)
    f = raw.fleet
    sub_s = raw.config.grid.physics_dt_s
    sub_h, h = sub_s / 3600.0, dt_s / 3600.0
    grid_in = np.zeros(f.n_agents)
    grid_out = np.zeros(f.n_agents)
    seen_by_grid_mwh = stores_charged_mwh = 0.0
    x_end = np.zeros(f.n_agents)
    ramped = False
    for ex in executed:
        assert ex.p_path_mw is not None
        net = ex.baseline_mw[:, None] + ex.p_path_mw
        grid_out += np.maximum(net, 0.0).sum(axis=1) * sub_h
        grid_in += np.maximum(-net, 0.0).sum(axis=1) * sub_h
        seen_by_grid_mwh += float(ex.p_total_sub_mw.sum()) * sub_h
        stores_charged_mwh += float(ex.p_mean_mw.sum()) * h
        assert not ramp_path_broken(ex.p_path_mw, x_end, np.full(f.n_agents, sub_s)).any()
        ramped |= bool(np.any(ex.p_path_mw[:, -1] != ex.p_path_mw[:, 0]))
        x_end = ex.p_path_mw[:, -1]
    assert ramped
    delta = f.energy_mwh - e_start
    expected = f.eta_charge * grid_in - grid_out / np.where(f.eta_discharge > 0,
                                                            f.eta_discharge, 1.0)
    storage = f.kind != KIND_SOLAR
    np.testing.assert_allclose(delta[storage], expected[storage], rtol=1e-9, atol=1e-12)
    assert seen_by_grid_mwh == pytest.approx(stores_charged_mwh, rel=1e-9, abs=1e-12)
    kpi = raw.episode_metrics()
    assert kpi["executed_violations"] == 0 and raw.dispatch_clamped == 0
