"""A battery discharge cap between power levels (heuristic review, session 28).

The power levels are 0.1·rated apart and the mask allowed a level past a bound only where a
ramp limit set it, so a battery's ``max_discharge_mw`` that is no whole number of its levels
could not be bid in full: with the docs' ``[battery] max_discharge_mw = 2.0`` in
``emergency`` (100 agents, seed 0) the fleet's upward room is 100.75 MW but 3.47 MW of it
(27 capped batteries) lay above their top level under the cap, so 97.28 MW answered the
100 MW trip on every step (0.084 MWh unserved, 960 $; heuristic and oracle alike). Where a
capped (or ramp-limited) battery's discharge limit sets its upper bound, the mask now also
allows the first level past it, bid as the bound (:meth:`Kernel.power_mask`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_ramp_levels import _one_battery

import gridswarm_env
from policies import make_policy
from policies.rollout import run_episode

CAP = {"battery": {"max_discharge_mw": 2.0}}


@pytest.mark.parametrize("reserve_round, held, hi_mw", [
    (False, 0.0, 2.1),    # energy round: the cap
    (True, 0.0, 2.1),     # reserve round: the cap
    (False, 0.6, 1.5),    # energy round over 0.6 MW of reserve: 2.1 − 0.6 (level +6 exactly)
    (False, 0.5, 1.6),    # 2.1 − 0.5: level +6 (1.5 MW) is under it, +7 bid as 1.6
])
def test_a_cap_between_levels_is_bid_in_full(reserve_round: bool, held: float,
                                             hi_mw: float) -> None:
    fleet, kernel = _one_battery(math.inf, max_discharge_mw=2.1)
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=np.zeros(3),
                                 reserve_mw=np.array([0.0, held, 0.0]),
                                 reserve_round=reserve_round, reserve_duration_s=60.0)
    assert hi[1] == pytest.approx(hi_mw)
    mask = kernel.power_mask(lo, hi, kernel.limit_edges)
    top = math.ceil(hi_mw / 0.25 - 1e-9)            # the first level at or past the cap
    assert np.flatnonzero(mask[1]).max() == 10 + top
    level, power, blocked = kernel.enforce(np.array([10, 20, 10]), mask, lo, hi)
    assert level[1] == 10 + top and blocked[1]      # past it: blocked to it
    assert power[1] == pytest.approx(hi_mw, abs=1e-12)


def test_a_bound_the_cap_does_not_set_is_not_passed() -> None:
    """A capped battery whose stored energy allows 0.1 MW (below one level) keeps level 0
    only, and a battery without a cap below its rating (nor a ramp) gets no edge at all."""
    fleet, kernel = _one_battery(math.inf, max_discharge_mw=2.1,
                                 energy_mwh=1.0 + 0.1 / 3600 / 0.9)
    lo, hi = kernel.bid_interval(fleet, now_s=0.0, committed_p_mw=np.zeros(3),
                                 reserve_mw=np.zeros(3), reserve_round=False,
                                 reserve_duration_s=1.0)
    assert hi[1] == pytest.approx(0.1, rel=1e-6)
    assert np.flatnonzero(kernel.power_mask(lo, hi, kernel.limit_edges)[1]).max() == 10
    fleet, unlimited = _one_battery(math.inf)
    unlimited.bid_interval(fleet, now_s=0.0, committed_p_mw=np.zeros(3),
                           reserve_mw=np.array([0.0, 0.6, 0.0]), reserve_round=False,
                           reserve_duration_s=1.0)
    assert unlimited.limit_edges is None


@pytest.mark.parametrize("policy", ["heuristic", "oracle"])
def test_the_docs_cap_no_longer_strands_fleet_room_in_emergency(policy: str) -> None:
    """``emergency``, 100 agents, seed 0, ``[battery] max_discharge_mw = 2.0``: after the
    trip the fleet answered 97.28 of the 100 MW on every step (0.084 MWh unserved, 960 $);
    now all of it (0.0009 MWh, 218 $, as without the cap: 0.001 MWh, 219 $)."""
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=100, trust="hmac",
                                     limits=CAP)
    run = run_episode(env, make_policy(policy, seed=0), seed=0)
    assert run.metrics["executed_violations"] == 0 and run.metrics["blocked_attempts"] == 0
    assert min(run.trace["delivered_mw"][15:]) == pytest.approx(100.0, abs=1e-6)
    assert run.metrics["unserved_energy_mwh"] < 0.001
