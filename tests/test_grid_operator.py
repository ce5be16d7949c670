"""Unit checks of :class:`gridswarm_env.grid_operator.GridOperator`'s market results
(found by hand mutation testing, session 27)."""

from __future__ import annotations

import numpy as np
import pytest

import gridswarm_env
from gridswarm_env.bus import TopicBatch
from gridswarm_env.messages import TOPIC_BIDS
from gridswarm_env.scenarios import PRODUCT_RESERVE


def _no_bids() -> TopicBatch:
    f, i = np.empty(0), np.empty(0, np.int64)
    return TopicBatch(TOPIC_BIDS, np.empty(0, object), i, i, np.empty(0, np.int8), f, f)


def test_a_short_reserve_round_counts_from_round_1_on() -> None:
    """``reserve_short`` is whether the last reserve round *held from round 1 on*
    accepted less than asked (market.operator_request): round 0, cleared on bids made
    before its signal could reach the agents, never switches the next rounds to energy;
    the same shortfall in round 1 does."""
    raw = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="hmac").unwrapped
    raw.reset(seed=0)
    op = raw.operator
    request = 10.0 * op.market_config.deadband_mw + 1.0   # no bid: all of it short
    op.reserve_short = False
    op.clear(_no_bids(), 0, request, PRODUCT_RESERVE, None)
    assert not op.reserve_short
    op.clear(_no_bids(), 1, request, PRODUCT_RESERVE, None)
    assert op.reserve_short


def test_a_round_that_clears_no_price_keeps_the_last_clearing_price() -> None:
    """The announced last clearing price is that of the last round that cleared *at a
    price*: a round with no accepted bid (NaN price) leaves it as it was."""
    raw = gridswarm_env.parallel_env(scenario="price_spike", n_agents=10, trust="hmac").unwrapped
    raw.reset(seed=0)
    op = raw.operator
    op.last_clearing_price_per_mwh = 42.0
    result, _stale = op.clear(_no_bids(), 3, 10.0 * op.market_config.deadband_mw + 1.0,
                              op.cleared_product, None)
    assert np.isnan(result.clearing_price_per_mwh)
    assert op.last_clearing_price_per_mwh == 42.0


def test_the_flexibility_the_operator_prices_with_is_what_the_kernel_lets_the_fleet_bid(
        ) -> None:
    """Session 29: the operator priced with the battery caps of the limits file but with
    the EVs' ratings and the PV plants' raw forecasts, so ``[ev] max_charge_mw`` and
    ``[solar] max_discharge_mw`` did not reach the flexibility behind the price signal
    and ``request_rel`` (100 agents, ``[ev] max_charge_mw = 1.0``: upward 125.000 MW
    announced against 123.909 MW the EVs could defer with the batteries, downward 142.33
    against 123.21 MW in ``price_spike``). At reset (no reserve, nothing committed,
    every battery with room for a step at its caps) the fleet's energy bid interval
    sums to the operator's flexibility in each direction, with and without caps."""
    caps = {"ev": {"max_charge_mw": 1.0}, "solar": {"max_discharge_mw": 2.0},
            "battery": {"max_discharge_mw": 2.0, "max_charge_mw": 1.5},
            "agents": {"ev_003": {"max_charge_mw": 0.8}}}
    for limits in (None, caps):
        raw = gridswarm_env.parallel_env(scenario="solar_surplus", n_agents=100,
                                         trust="hmac", limits=limits).unwrapped
        raw.reset(seed=0)
        lo, hi = raw._lo, raw._hi
        op = raw.operator
        assert op.flexible_mw(1.0) == pytest.approx(float(hi.sum()), rel=1e-12)
        assert op.flexible_mw(-1.0) == pytest.approx(float(-lo.sum()), rel=1e-12)
        if limits is not None:   # the caps bind: each side is well below the ratings'
            assert op.flexible_mw(1.0) < 124.0 and op.flexible_mw(-1.0) < 170.0
