"""An EV draws no power after its departure time, and the independent check counts one
that does (energy review, session 24).

Before: ``departure_s`` was drawn in continuous time, but an EV counted as plugged in for
every agent step that *began* before its departure, so it kept charging (or was paid for
deferring charging) for up to ``dt_s`` after it had left; ``executed_violations`` read 0
because the check used the same step-granular ``plugged`` flag as the executor
(``price_spike``, heuristic, 100 agents, seed 0, ``dt_s`` = 30 with the departures
fleet below: 17 EV-steps, 0.062 MWh drawn by EVs that had left).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gridswarm_env.config import EnvConfig, FleetConfig
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR
from gridswarm_env.kernel import LimitArrays, check_executed
from policies.heuristic import HeuristicPolicy

#: EVs that leave within the episode (docs/model.md, "Scenarios")
LEAVING = dataclasses.replace(FleetConfig(), ev_soc_init_low=0.6, ev_soc_init_high=0.95,
                              ev_departure_min_s=30.0, ev_departure_max_s=240.0)


def test_no_ev_draws_power_after_its_departure_time() -> None:
    dt = 10.0
    env = GridSwarmEnv("price_spike", n_agents=100, trust="hmac",
                       config=EnvConfig(n_agents=100, trust="hmac", dt_s=dt, fleet=LEAVING))
    obs, _ = env.reset(seed=0)
    policy = HeuristicPolicy()
    policy.reset(env, seed=0)
    f = env.fleet
    ev = np.flatnonzero(f.kind == KIND_EV)
    inside = ev[f.departure_s[ev] < env.duration_s]
    assert inside.size >= 5   # departures within the episode, between step boundaries
    obs = env.observations_array()
    moved_after_leaving = 0
    while env.agents:
        t1 = env.t_s + dt
        gone = f.kind == KIND_EV
        gone &= f.departure_s < t1            # left before the step's end
        e0 = f.energy_mwh.copy()
        acts = policy.act(obs, env.action_masks())
        obs, _, _, info = env.step_arrays(acts[:, 0], acts[:, 1])
        moved = gone & ((f.energy_mwh != e0) | (env.last_p_mw != 0.0))
        moved_after_leaving += int(np.count_nonzero(moved))
        assert info["executed_violations"] == 0
    assert moved_after_leaving == 0
    assert not f.plugged[inside].any()


def test_the_check_counts_an_ev_moving_after_its_departure_inside_the_step() -> None:
    """A departure moved inside a step by hand (the executor keeps the EV plugged in until
    the step ends): the independent check counts it, from the departure time itself."""
    env = GridSwarmEnv("price_spike", n_agents=10, trust="hmac")
    env.reset(seed=0)
    i = int(np.flatnonzero(env.fleet.kind == KIND_EV)[0])
    env.fleet.departure_s[i] = 0.5   # leaves within the first step [0, 1) s
    idle = np.full(10, env.config.market.n_power_levels // 2)
    _, _, _, info = env.step_arrays(idle, np.zeros(10, dtype=np.int64))
    assert info["executed_violations"] == 1
    assert env.metrics.executed_violations == 1


def test_check_executed_reads_the_departure_time() -> None:
    kinds = np.array([KIND_SOLAR, KIND_BATTERY, KIND_EV], dtype=np.int8)
    cap = np.array([0.0, 2.0, 2.0])
    arrays = LimitArrays(max_discharge_mw=np.ones(3), max_charge_mw=np.ones(3),
                         soc_min=np.array([0.0, 0.1, 0.05]), soc_max=np.array([1.0, 0.95, 1.0]),
                         ramp_mw_per_s=np.full(3, np.inf), departure_soc=np.array([0, 0, 0.8]))
    net = np.array([0.0, 0.0, -0.5])
    e = np.array([0.0, 1.0, 1.0])
    common = dict(kinds=kinds, net_min_mw=net, net_max_mw=net, p_now_mw=np.zeros(3),
                  p_prev_mw=np.zeros(3), energy_before_mwh=e, energy_after_mwh=e + 1e-4,
                  capacity_mwh=cap, solar_available_mw=np.zeros(3),
                  plugged=np.ones(3, dtype=bool), arrays=arrays, dt_s=1.0)
    assert check_executed(**common).count == 0
    dep = np.array([np.inf, np.inf, 10.5])
    assert check_executed(**common, departure_s=dep, step_end_s=11.0).unplugged.tolist() == [
        False, False, True]
    # leaving at the step's end (or later) is no violation
    for end in (10.5, 10.0):
        assert check_executed(**common, departure_s=dep, step_end_s=end).count == 0


def test_departures_move_back_to_step_boundaries_and_a_first_step_one_is_charged() -> None:
    """Departures inside the episode move back to the start of their step (on the
    clock's own grid); one inside the first step moves to 0: the EV is never plugged in
    and its unmet departure energy is charged in the first step's settlement. Later
    departures (after the episode) stay as drawn."""
    dt = 10.0
    fleet = dataclasses.replace(FleetConfig(), ev_duration_h=0.001, ev_soc_init_low=0.5,
                                ev_soc_init_high=0.5, ev_departure_min_s=1.0,
                                ev_departure_max_s=2.0)
    env = GridSwarmEnv("price_spike", n_agents=20, trust="hmac",
                       config=EnvConfig(n_agents=20, trust="hmac", dt_s=dt, fleet=fleet))
    env.reset(seed=0)
    f = env.fleet
    ev = f.kind == KIND_EV
    # drawn between 1.1 and 3 times the 2.4 s their baseline charging needs: all inside
    # the first step [0, 10) s
    assert np.all(f.departure_s[ev] == 0.0) and not f.plugged[ev].any()
    assert np.all(np.isinf(f.departure_s[~ev]))
    want = float(np.sum(0.3 * f.energy_capacity_mwh[ev]))
    idle = np.full(20, env.config.market.n_power_levels // 2)
    _, _, _, info = env.step_arrays(idle, np.zeros(20, dtype=np.int64))
    assert info["executed_violations"] == 0
    assert env.episode_metrics()["ev_unmet_energy_mwh"] == pytest.approx(want, rel=1e-12)
    assert np.all(f.energy_mwh[ev] == 0.5 * f.energy_capacity_mwh[ev])   # never charged
    env.step_arrays(idle, np.zeros(20, dtype=np.int64))   # charged once, not every step
    assert env.episode_metrics()["ev_unmet_energy_mwh"] == pytest.approx(want, rel=1e-12)


def test_a_departure_on_a_step_boundary_stays_there() -> None:
    """An EV leaving exactly when a step begins is plugged in over every step before it
    (the steps that begin before its departure): it is not moved a step earlier, and
    one leaving at the end of the first step is plugged in for that step."""
    dt = 10.0
    for depart in (dt, 2 * dt):
        fleet = dataclasses.replace(FleetConfig(), ev_soc_init_low=0.9, ev_soc_init_high=0.9,
                                    ev_departure_soc=0.8, ev_departure_min_s=depart,
                                    ev_departure_max_s=depart)
        env = GridSwarmEnv("price_spike", n_agents=20, trust="hmac",
                           config=EnvConfig(n_agents=20, trust="hmac", dt_s=dt, fleet=fleet))
        env.reset(seed=0)
        ev = env.fleet.kind == KIND_EV
        assert ev.any()
        assert np.all(env.fleet.departure_s[ev] == depart) and env.fleet.plugged[ev].all()
