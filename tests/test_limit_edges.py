"""Power limits between levels on every side and kind (kernel review, session 29).

Bids are power levels 0.1·rated apart. Session 28 let a battery's discharge limit between
levels be bid in full (tests/test_cap_levels.py); the other bounds a power limit sets
still stranded the room past the last level inside them: an EV's charge cap (the deferral
of a capped baseline, ``C``, above it; the extra charging ``C − rate`` below), an EV's
``rate − reserve`` under a ramp limit, a battery's charge cap, a capped or ramp-limited PV
plant's full curtailment. Where a power limit of an agent under a cap below its rating or
a ramp limit sets a bound, the mask now allows the first level past it, bid as the bound
(:meth:`Kernel.power_mask`); bounds its stored energy, an EV's departure or a PV forecast
set are not passed, and nothing changes without such limits.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from test_ramp_levels import _one_battery

import gridswarm_env
from gridswarm_env.fleet import KIND_BATTERY, KIND_EV, KIND_SOLAR, FleetState
from gridswarm_env.kernel import DerLimits, Kernel, Limits
from policies import make_policy
from policies.oracle import problem_from_env
from policies.rollout import run_episode

NAMES = ["solar_000", "battery_000", "ev_000"]
SOLAR, BATTERY, EV = 0, 1, 2
MID = 10   # level 0 MW of 21


def _fleet(*, forecast_mw: float = 0.9, battery_mwh: float = 5.0,
           ev_departure_s: float = math.inf, ev_departure_soc: float = 0.0) -> FleetState:
    """A 1 MW PV plant (forecast ``forecast_mw``), a 2.5 MW / 10 MWh battery (levels 0.25
    MW apart) and a 1 MW / 10 MWh EV at 50 % charging at 0.5 MW (levels 0.1 MW apart):
    test_ramp_levels' fleet, its PV plant shining and its EV charging."""
    fleet = _one_battery(math.inf, energy_mwh=battery_mwh)[0]
    return replace(fleet, ev_baseline_rate_mw=np.array([0.0, 0.0, 0.5]),
                   departure_s=np.array([math.inf, math.inf, ev_departure_s]),
                   departure_soc=np.array([0.0, 0.0, ev_departure_soc]),
                   solar_available_mw=np.array([forecast_mw, 0.0, 0.0]),
                   solar_forecast_mw=np.array([forecast_mw, 0.0, 0.0]))


def _kernel(fleet: FleetState, **per_kind: dict) -> Kernel:
    kinds = {"solar": DerLimits(), "battery": DerLimits(soc_min=0.1),
             "ev": DerLimits(soc_min=0.05)}
    for kind, changes in per_kind.items():
        kinds[kind] = replace(kinds[kind], **changes)
    return Kernel(Limits(per_kind=kinds), NAMES, fleet, 21, 1.0)


def _interval(kernel: Kernel, fleet: FleetState, *, committed=(0.0, 0.0, 0.0),
              reserve=(0.0, 0.0, 0.0), reserve_round: bool = False):
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=np.array(committed),
                                 reserve_mw=np.array(reserve), reserve_round=reserve_round,
                                 reserve_duration_s=60.0)
    return lo, hi, kernel.power_mask(lo, hi, kernel.limit_edges)


def _reach(kernel: Kernel, mask: np.ndarray, lo: np.ndarray, hi: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per agent, the lowest and highest power a bid the mask allows is executed at."""
    n, n_levels = mask.shape
    powers = np.empty((n, n_levels))
    for level in range(n_levels):
        powers[:, level] = kernel.enforce(np.full(n, level), mask, lo, hi)[1]
    return (np.where(mask, powers, np.inf).min(axis=1),
            np.where(mask, powers, -np.inf).max(axis=1))


@pytest.mark.parametrize("limits, kw, agent, bound_mw, level", [
    # an EV charge cap below its 0.5 MW baseline: the capped baseline is deferrable (+)
    ({"ev": {"max_charge_mw": 0.35}}, {}, EV, 0.35, MID + 4),
    # an EV charge cap above it: 0.87 − 0.5 MW of extra charging (−)
    ({"ev": {"max_charge_mw": 0.87}}, {}, EV, -0.37, MID - 4),
    # an EV under a ramp it does not meet (committed 0.2, ramp 0.25): 0.5 − 0.23 held
    ({"ev": {"ramp_mw_per_s": 0.25}}, {"committed": (0.0, 0.0, 0.2),
                                       "reserve": (0.0, 0.0, 0.23)}, EV, 0.27, MID + 3),
    # the same EV in a reserve round (ramp cap 1 − 0.23 MW, above the 0.27 MW left)
    ({"ev": {"ramp_mw_per_s": 1.0}}, {"reserve": (0.0, 0.0, 0.23), "reserve_round": True},
     EV, 0.27, MID + 3),
    # a battery charge cap between levels (0.25 MW apart)
    ({"battery": {"max_charge_mw": 2.1}}, {}, BATTERY, -2.1, MID - 9),
    # a PV export cap below the forecast: full curtailment is the cap
    ({"solar": {"max_discharge_mw": 0.73}}, {}, SOLAR, -0.73, MID - 8),
    # a PV plant under a ramp it does not meet (committed −0.5, ramp 1): full curtailment
    # of its 0.57 MW forecast
    ({"solar": {"ramp_mw_per_s": 1.0}}, {"committed": (-0.5, 0.0, 0.0), "forecast": 0.57},
     SOLAR, -0.57, MID - 6),
])
def test_a_power_limit_between_levels_is_bid_in_full(limits, kw, agent: int,
                                                     bound_mw: float, level: int) -> None:
    kw = dict(kw)
    fleet = _fleet(forecast_mw=kw.pop("forecast", 0.9))
    kernel = _kernel(fleet, **limits)
    lo, hi, mask = _interval(kernel, fleet, **kw)
    bound = hi if bound_mw > 0 else lo
    assert bound[agent] == pytest.approx(bound_mw, abs=1e-9)
    allowed = np.flatnonzero(mask[agent])
    assert (allowed.max() if bound_mw > 0 else allowed.min()) == level
    ask = np.full(3, MID)
    ask[agent] = 20 if bound_mw > 0 else 0          # the extreme level: blocked to the edge
    got, power, blocked = kernel.enforce(ask, mask, lo, hi)
    assert got[agent] == level and blocked[agent]
    assert power[agent] == pytest.approx(bound_mw, abs=1e-12)


def test_bounds_no_power_limit_sets_are_not_passed() -> None:
    """Under caps, a bound set by the stored energy (a battery near its SoC ceiling), an
    EV's departure (forced charging) or nothing limited (no caps, no ramps) keeps the
    levels inside it only."""
    # battery at 94.99 % of a 95 % ceiling under a 2.1 MW charge cap: room 0.1 MW (< a level)
    fleet = _fleet(battery_mwh=9.5 - 0.1 * 0.9 / 3600)
    kernel = Kernel(Limits(per_kind={"solar": DerLimits(), "ev": DerLimits(soc_min=0.05),
                                     "battery": DerLimits(soc_min=0.1, soc_max=0.95,
                                                          max_charge_mw=2.1)}),
                    NAMES, fleet, 21, 1.0)
    lo, hi, mask = _interval(kernel, fleet)
    assert lo[BATTERY] == pytest.approx(-0.1, rel=1e-6)
    assert np.flatnonzero(mask[BATTERY]).min() == MID
    # an EV that must charge 0.33 MW to make its departure, below its 0.5 MW baseline,
    # under a 0.95 MW cap: its departure sets hi = 0.5 − 0.33 (not passed), the cap
    # lo = −0.95 + 0.5 (passed: level −5)
    dep_s = 2.0 + 3600.0 * (1.0 - 0.5 * 0.9 / 3600 - 0.33 * 0.9 / 3600) / (0.95 * 0.9)
    fleet = _fleet(ev_departure_s=dep_s, ev_departure_soc=0.6)
    kernel = _kernel(fleet, ev={"max_charge_mw": 0.95})
    lo, hi, mask = _interval(kernel, fleet)
    assert hi[EV] == pytest.approx(0.17, abs=1e-6)
    assert np.flatnonzero(mask[EV]).max() == MID + 1
    assert lo[EV] == pytest.approx(-0.45, abs=1e-9)
    assert np.flatnonzero(mask[EV]).min() == MID - 5
    # no caps below the ratings, no ramps: the rule applies to nobody
    fleet = _fleet()
    kernel = Kernel(Limits(), NAMES, fleet, 21, 1.0)
    kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=np.zeros(3),
                        reserve_mw=np.array([0.0, 0.6, 0.23]), reserve_round=False,
                        reserve_duration_s=60.0)
    assert kernel.limit_edge_agents is None and kernel.limit_edges is None


#: per kind: the power limits tried (None: the rating), in MW of a 1 MW PV plant and EV
#: and a 2.5 MW battery; ramps in MW/s (dt_s = 1)
CAPS = (None, 0.0, 0.05, 0.37, 0.5, 0.73, 2.1)
RAMPS = (math.inf, 0.13, 0.6)


def _cases():
    for kind, cap, ramp in itertools.product(("solar", "battery", "ev"), CAPS, RAMPS):
        fields = ["max_discharge_mw"] if kind == "solar" else (
            ["max_charge_mw"] if kind == "ev" else ["max_discharge_mw", "max_charge_mw"])
        for name in fields:
            yield kind, {name: cap, "ramp_mw_per_s": ramp}


@pytest.mark.parametrize("kind, limits", list(_cases()),
                         ids=lambda v: v if isinstance(v, str) else "-".join(
                             f"{k}={v[k]}" for k in sorted(v)))
def test_every_limit_set_bound_is_reachable(kind: str, limits: dict) -> None:
    """Exhaustive small cases: a PV plant, battery and EV whose stored energy, departure and
    forecast bind nothing (a 10 MWh store at 50 %, no departure; a PV forecast of 0.57 or
    0.9 MW, above or below the cap), under each cap and ramp, from several committed powers
    and reserves, in energy and reserve rounds. Every bound inside the level range is
    reached by a bid the mask allows when a limit applies (a cap below the rating or a
    ramp: what the rule covers; a PV plant's full curtailment of its forecast too), the
    mask of an agent under neither holds only the levels inside, and no allowed bid is
    executed outside the interval."""
    agent = {"solar": SOLAR, "battery": BATTERY, "ev": EV}[kind]
    for forecast_mw, committed, held, reserve_round in itertools.product(
            (0.57, 0.9), (-0.61, -0.2, 0.0, 0.2, 0.61), (0.0, 0.17, 0.5), (False, True)):
        if kind == "solar" and (held or reserve_round):
            continue
        fleet = _fleet(forecast_mw=forecast_mw)
        kernel = _kernel(fleet, **{kind: limits})
        rated = fleet.rated_power_mw[agent]
        cap = limits.get("max_discharge_mw", limits.get("max_charge_mw"))
        limited = math.isfinite(limits["ramp_mw_per_s"]) or (cap is not None and cap < rated)
        c, r = np.zeros(3), np.zeros(3)
        c[agent], r[agent] = committed, held
        lo, hi, mask = _interval(kernel, fleet, committed=c, reserve=r,
                                 reserve_round=reserve_round)
        low, high = _reach(kernel, mask, lo, hi)
        assert np.all(low >= lo - 1e-12) and np.all(high <= hi + 1e-12)
        if not limited:
            assert np.array_equal(mask[agent], kernel.power_mask(lo, hi)[agent])
            continue
        case = (f"{kind} {limits} forecast {forecast_mw} committed {committed} held {held} "
                f"reserve {reserve_round}")
        assert high[agent] == pytest.approx(min(hi[agent], rated), abs=1e-9), case
        assert low[agent] == pytest.approx(max(lo[agent], -rated), abs=1e-9), case


@pytest.mark.parametrize("scenario, policy", [("solar_surplus", "heuristic"),
                                              ("emergency", "oracle")])
def test_an_ev_and_battery_charge_cap_strand_nothing_in_an_episode(scenario: str,
                                                                   policy: str) -> None:
    """100 agents, seed 0, ``[ev] max_charge_mw = 1.0`` and ``[battery] max_charge_mw =
    2.0``: every step, every EV's and battery's bounds inside the level range are reached
    by a bid its mask allows (before, per step, 0.95 MW of the EVs' deferral, 1.1-1.25 MW
    of their extra charging and 1.1-4.3 MW of the batteries' charging lay past their last
    levels, fleet totals),
    and nothing executed breaks a limit."""
    env = gridswarm_env.parallel_env(scenario=scenario, n_agents=100, trust="hmac",
                                     limits={"ev": {"max_charge_mw": 1.0},
                                             "battery": {"max_charge_mw": 2.0}})
    gaps: list[float] = []

    def on_step(raw, _info) -> None:
        if not raw.agents:
            return
        lo, hi, mask = raw._lo, raw._hi, raw._mask_power
        low, high = _reach(raw.kernel, mask, lo, hi)
        rated = raw.fleet.rated_power_mw
        stores = raw.fleet.kind != KIND_SOLAR
        gaps.append(float(np.max((np.minimum(hi, rated) - high)[stores])))
        gaps.append(float(np.max((low - np.maximum(lo, -rated))[stores])))

    run = run_episode(env, make_policy(policy, seed=0), seed=0, on_step=on_step)
    assert run.metrics["executed_violations"] == 0
    assert gaps and max(gaps) < 1e-9


def test_the_oracle_plans_with_the_bounds_the_mask_allows() -> None:
    """The oracle rounded every power bound down to a level, so it planned a capped
    battery's 2.0 MW cap as its last level under it (1.72-2.00 MW: 3.47 MW less over the
    27 capped batteries) and bid the rest only as backup; and it took an EV's reserve as its baseline rate even when a charge cap below
    it leaves only the cap to defer. ``emergency``, 100 agents, seed 0, the plan's bounds
    from the first step on."""
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=100, trust="hmac",
                                     limits={"battery": {"max_discharge_mw": 2.0},
                                             "ev": {"max_charge_mw": 0.6}})
    raw = env.unwrapped
    raw.reset(seed=0)
    problem, f = problem_from_env(raw), raw.fleet
    capped = (f.kind == KIND_BATTERY) & (f.rated_power_mw > 2.0)
    assert capped.sum() > 20
    assert np.all(problem.up_max_mw[capped, 1:] == 2.0)
    assert np.all(problem.reserve_max_mw[capped] == 2.0)
    ev = f.kind == KIND_EV
    rate = f.ev_baseline_rate_mw[ev]
    assert np.all(problem.reserve_max_mw[ev] == np.minimum(rate, 0.6))
    assert np.all(problem.up_max_mw[ev, 1] == np.minimum(rate, 0.6))
    # the extra charging above a baseline under the cap: 0.6 − rate, not rounded down
    below = rate < 0.6
    assert np.allclose(problem.down_max_mw[ev, 1][below], 0.6 - rate[below], atol=1e-12)


def test_the_oracle_uses_a_battery_cap_between_levels_in_price_spike() -> None:
    """``price_spike``, 100 agents, seed 0, ``[battery] max_discharge_mw = 2.0``: planned
    at the levels under the cap, the oracle cost 683 $ (seeds 0-4: 772 $, 0.059 MWh
    unserved, worse than the heuristic's 512 $); planned at the cap, 477 $ (498 $, 0.028
    MWh)."""
    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=100, trust="hmac",
                                     limits={"battery": {"max_discharge_mw": 2.0}})
    run = run_episode(env, make_policy("oracle", seed=0), seed=0)
    assert run.metrics["executed_violations"] == 0
    assert run.metrics["system_cost"] < 580.0
