"""Tests of gridswarm_env.market on hand-cleared bid books and random books (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gridswarm_env.market import ClearingResult, clear_market, price_signal_per_mwh, settlement


def _clear(request_mw: float, power: list[float], price: list[float], **kw) -> ClearingResult:
    return clear_market(request_mw, np.array(power, dtype=float), np.array(price, dtype=float),
                        **kw)


def test_shortage_partial_marginal_bid() -> None:
    # Offers (idx: MW @ $/MWh): 0: 10@30, 1: 20@10, 2: 15@20, 3: 5@50; idx 4 absorbs (ignored).
    # Merit order 1, 2, 0, 3: 20 + 15 = 35, 5 more from idx 0 (partly), idx 3 left out.
    # Clearing price = marginal idx 0's price = 30; offered = 10+20+15+5 = 50.
    r = _clear(40.0, [10, 20, 15, 5, -8], [30, 10, 20, 50, 5])
    np.testing.assert_array_equal(r.accepted_mw, [5, 20, 15, 0, 0])
    assert r.clearing_price_per_mwh == 30.0
    assert (r.request_mw, r.offered_mw, r.accepted_total_mw) == (40.0, 50.0, 40.0)
    assert r.consensus and r.n_accepted == 3
    np.testing.assert_array_equal(r.accepted_indices, [0, 1, 2])
    assert r.coverage == 1.0
    # Pay-as-clear over one hour: 30 $/MWh × [5, 20, 15] MWh.
    np.testing.assert_allclose(settlement(r.accepted_mw, r.clearing_price_per_mwh, 3600.0),
                               [150, 600, 450, 0, 0])


def test_surplus_with_negative_prices() -> None:
    # Absorption bids (price = what the agent pays per MWh absorbed; −price = compensation):
    # 0: −10 MW @ −20 (asks 20), 1: −15 @ +5 (pays 5), 2: −20 @ −40 (asks 40),
    # 4: −5 @ −5 (asks 5); idx 3 injects (wrong direction, ignored).
    # Least compensation first = price descending: 1 (15 MW), 4 (5 MW), 0 (10 MW) = 30.
    # Clearing price = marginal idx 0's price = −20: every absorber is paid 20 $/MWh.
    r = _clear(-30.0, [-10, -15, -20, 12, -5], [-20, 5, -40, 1, -5])
    np.testing.assert_array_equal(r.accepted_mw, [-10, -15, 0, 0, -5])
    assert r.clearing_price_per_mwh == -20.0
    assert (r.offered_mw, r.accepted_total_mw) == (-50.0, -30.0)
    assert r.consensus and r.n_accepted == 3
    pay = settlement(r.accepted_mw, r.clearing_price_per_mwh, 3600.0)
    np.testing.assert_allclose(pay, [200, 300, 0, 0, 100])
    # No accepted agent is worse off than its own bid: it pays at most its bid price.
    accepted = r.accepted_mw != 0
    assert np.all(r.clearing_price_per_mwh <= np.array([-20, 5, -40, 1, -5])[accepted])


def test_surplus_at_positive_price_absorbers_pay() -> None:
    # Two absorbers willing to pay 40 and 25 $/MWh; 10 MW needed; idx 0 (pays most) wins
    # fully at its own price 40 (it is the marginal bid); over 900 s it pays 40·10·0.25.
    r = _clear(-10.0, [-10, -10], [40, 25])
    np.testing.assert_array_equal(r.accepted_mw, [-10, 0])
    assert r.clearing_price_per_mwh == 40.0
    np.testing.assert_allclose(settlement(r.accepted_mw, 40.0, 900.0), [-100.0, 0.0])


def test_ties_broken_by_agent_index() -> None:
    # idx 3 is cheapest (10 MW @ 10); then 0, 1, 2 tie at 20: idx 0 fully (10), idx 1
    # partly (5), idx 2 nothing.
    r = _clear(25.0, [10, 10, 10, 10], [20, 20, 20, 10])
    np.testing.assert_array_equal(r.accepted_mw, [10, 5, 0, 10])
    assert r.clearing_price_per_mwh == 20.0 and r.n_accepted == 3
    # Same in a surplus: three absorbers at 0 $/MWh, 15 MW needed -> [−10, −5, 0].
    s = _clear(-15.0, [-10, -10, -10], [0, 0, 0])
    np.testing.assert_array_equal(s.accepted_mw, [-10, -5, 0])
    # A large book with many ties (long enough for a non-stable sort to reorder them):
    # 300 × 1 MW at 10, 20 or 30 $/MWh; the request takes all 10s and 5.5 MW of the 20s,
    # which must be the 20-priced agents of lowest index.
    price = np.random.default_rng(0).choice([10.0, 20.0, 30.0], 300)
    n10 = int(np.sum(price == 10.0))
    big = clear_market(n10 + 5.5, np.ones(300), price)
    expected = (price == 10.0).astype(float)
    twenties = np.flatnonzero(price == 20.0)
    expected[twenties[:5]], expected[twenties[5]] = 1.0, 0.5
    np.testing.assert_array_equal(big.accepted_mw, expected)


def test_short_offer_accepts_everything_without_consensus() -> None:
    # 100 MW needed, only 30 + 20 offered: both accepted, 50 % < 95 % -> no consensus.
    r = _clear(100.0, [30, 20], [10, 20])
    np.testing.assert_array_equal(r.accepted_mw, [30, 20])
    assert r.clearing_price_per_mwh == 20.0
    assert r.offered_mw == 50.0 and not r.consensus
    assert r.coverage == 0.5


def test_exact_consensus_boundary() -> None:
    # 60 + 35 = 95 MW of 100: exactly 95 % -> consensus; 94.99 MW -> none.
    assert _clear(100.0, [60, 35], [1, 2]).consensus
    assert not _clear(100.0, [60, 34.99], [1, 2]).consensus
    assert _clear(-100.0, [-60, -35], [1, 2]).consensus
    assert not _clear(-100.0, [-60, -34.99], [1, 2]).consensus
    # A custom share: 80 of 100 passes 0.8, fails 0.81.
    assert _clear(100.0, [80], [1], consensus_share=0.8).consensus
    assert not _clear(100.0, [80], [1], consensus_share=0.81).consensus


def test_wrong_direction_zero_and_nan_bids_ignored() -> None:
    # Shortage of 10: idx 0 absorbs, idx 1 is zero, idx 2/3 have NaN/inf fields; only
    # idx 4 (5 MW @ 60) is a valid offer -> short, everything valid accepted.
    r = _clear(10.0, [-50, 0, math.nan, 8, 5], [1, 1, 1, math.inf, 60])
    np.testing.assert_array_equal(r.accepted_mw, [0, 0, 0, 0, 5])
    assert r.offered_mw == 5.0 and r.clearing_price_per_mwh == 60.0 and not r.consensus


def test_price_cap_and_floor() -> None:
    # Cap 100: the 150 $/MWh offer is out; 20 @ 10 then 10 of 20 @ 80 -> clearing 80.
    r = _clear(30.0, [20, 20, 20], [10, 150, 80], price_cap_per_mwh=100.0)
    np.testing.assert_array_equal(r.accepted_mw, [20, 0, 10])
    assert r.clearing_price_per_mwh == 80.0 and r.offered_mw == 40.0
    # Floor −200 in a surplus: the bid asking 300 $/MWh compensation (price −300) is out;
    # price descending: idx 1 (−50), idx 2 (−100) -> clearing −100.
    s = _clear(-20.0, [-10, -10, -10], [-300, -50, -100], price_floor_per_mwh=-200.0)
    np.testing.assert_array_equal(s.accepted_mw, [0, -10, -10])
    assert s.clearing_price_per_mwh == -100.0
    # The band applies in both directions: a shortage offer below the floor is invalid.
    t = _clear(10.0, [10, 10], [-500, 30], price_floor_per_mwh=-250.0)
    np.testing.assert_array_equal(t.accepted_mw, [0, 10])
    # A bid exactly at the cap is admissible.
    assert _clear(5.0, [10], [100], price_cap_per_mwh=100.0).accepted_total_mw == 5.0


def test_eligibility_mask() -> None:
    # Book of test_shortage_partial_marginal_bid without idx 1 (its bid did not arrive):
    # 15 @ 20, 10 @ 30, 5 @ 50 = 30 MW of 40 -> all accepted, 75 % -> no consensus.
    eligible = np.array([True, False, True, True, True])
    r = _clear(40.0, [10, 20, 15, 5, -8], [30, 10, 20, 50, 5], eligible=eligible)
    np.testing.assert_array_equal(r.accepted_mw, [10, 0, 15, 5, 0])
    assert r.clearing_price_per_mwh == 50.0 and not r.consensus and r.n_accepted == 3


def test_deadband_and_empty_book() -> None:
    r = _clear(1e-7, [10], [5])
    assert r.consensus and r.n_accepted == 0 and math.isnan(r.clearing_price_per_mwh)
    np.testing.assert_array_equal(r.accepted_mw, [0])
    z = _clear(0.0, [10, -10], [5, 5])
    assert z.consensus and z.offered_mw == 0.0 and z.accepted_total_mw == 0.0
    e = _clear(10.0, [-10], [5])  # nothing in the right direction
    assert not e.consensus and math.isnan(e.clearing_price_per_mwh) and e.n_accepted == 0
    n = clear_market(10.0, np.zeros(0), np.zeros(0))
    assert n.accepted_mw.shape == (0,) and not n.consensus
    np.testing.assert_array_equal(settlement(e.accepted_mw, e.clearing_price_per_mwh, 1.0), [0])


def test_result_is_immutable() -> None:
    r = _clear(5.0, [10], [1])
    with pytest.raises(ValueError):
        r.accepted_mw[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.consensus = False  # type: ignore[misc]


def test_settlement_sums_and_units() -> None:
    accepted = np.array([4.0, -2.0, 0.0, 1.5])
    pay = settlement(accepted, 80.0, 1.0)
    # One second: 80 $/MWh × P MW × 1/3600 h.
    np.testing.assert_allclose(pay, 80.0 * accepted / 3600.0)
    assert pay.sum() == pytest.approx(80.0 * accepted.sum() / 3600.0)
    with pytest.raises(ValueError, match="dt_s"):
        settlement(accepted, 80.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        settlement(accepted, math.nan, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_mw": math.nan}, "request_mw"),
        ({"request_mw": math.inf}, "request_mw"),
        ({"bid_price_per_mwh": np.ones(3)}, "bid_price_per_mwh"),
        ({"bid_power_mw": np.ones((2, 2))}, "bid_power_mw"),
        ({"eligible": np.ones(2)}, "eligible"),
        ({"eligible": np.ones(3, dtype=bool)}, "eligible"),
        ({"consensus_share": 0.0}, "consensus_share"),
        ({"consensus_share": 1.5}, "consensus_share"),
        ({"price_floor_per_mwh": 10.0, "price_cap_per_mwh": 5.0}, "price_floor_per_mwh"),
        ({"price_cap_per_mwh": math.nan}, "price_cap_per_mwh"),
        ({"deadband_mw": -1.0}, "deadband_mw"),
    ],
)
def test_bad_inputs_rejected(kwargs: dict, match: str) -> None:
    args = {"request_mw": 5.0, "bid_power_mw": np.ones(2), "bid_price_per_mwh": np.ones(2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        clear_market(**args)


def test_price_signal() -> None:
    band = {"price_floor_per_mwh": -50.0, "price_cap_per_mwh": 250.0}
    # Neutral price = 0 (in the band); shortage slope 250, surplus slope 50 per unit scarcity.
    assert price_signal_per_mwh(0.0, 100.0, **band) == 0.0
    assert price_signal_per_mwh(50.0, 100.0, **band) == 125.0
    assert price_signal_per_mwh(400.0, 100.0, **band) == 250.0
    assert price_signal_per_mwh(-50.0, 100.0, **band) == -25.0
    assert price_signal_per_mwh(-100.0, 100.0, **band) == -50.0
    # All-positive band [20, 300]: neutral = floor, shortage = floor + (cap − floor)·s.
    assert price_signal_per_mwh(50.0, 100.0, 20.0, 300.0) == 160.0
    assert price_signal_per_mwh(-50.0, 100.0, 20.0, 300.0) == 20.0
    # Reference price 30: surplus of half the flexible capacity -> 30 − 80·0.5 = −10.
    assert price_signal_per_mwh(0.0, 100.0, **band, reference_price_per_mwh=30.0) == 30.0
    assert price_signal_per_mwh(-50.0, 100.0, **band, reference_price_per_mwh=30.0) == -10.0
    # No flexible capacity: any request is full scarcity.
    assert price_signal_per_mwh(1.0, 0.0, **band) == 250.0
    assert price_signal_per_mwh(-1.0, 0.0, **band) == -50.0
    # Monotone in the request.
    prices = [price_signal_per_mwh(r, 100.0, **band) for r in np.linspace(-150, 150, 61)]
    assert np.all(np.diff(prices) >= 0)
    with pytest.raises(ValueError, match="price_cap_per_mwh"):
        price_signal_per_mwh(1.0, 10.0, 10.0, 5.0)
    with pytest.raises(ValueError, match="flexible_capacity_mw"):
        price_signal_per_mwh(1.0, -1.0, 0.0, 5.0)
    with pytest.raises(ValueError, match="reference_price_per_mwh"):
        price_signal_per_mwh(1.0, 10.0, 0.0, 5.0, reference_price_per_mwh=6.0)


def _reference_clear(request: float, power: np.ndarray, price: np.ndarray,
                     eligible: np.ndarray) -> np.ndarray:
    """Greedy merit order written as a plain loop (differential reference)."""
    d = 1.0 if request > 0 else -1.0
    cands = [i for i in range(len(power)) if eligible[i] and power[i] * d > 0]
    cands.sort(key=lambda i: (price[i] * d, i))
    accepted = np.zeros(len(power))
    left = abs(request)
    for i in cands:
        take = min(abs(power[i]), left)
        accepted[i] = take * d
        left -= take
    return accepted


@st.composite
def _books(draw: st.DrawFn) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 25))
    power = draw(st.lists(st.one_of(st.just(0.0), st.floats(-50, 50)), min_size=n, max_size=n))
    price = draw(st.lists(st.integers(-100, 300), min_size=n, max_size=n))  # integers: ties
    eligible = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    request = draw(st.floats(-400, 400).filter(lambda r: abs(r) > 1e-3))
    return request, np.array(power), np.array(price, dtype=float), np.array(eligible)


@settings(max_examples=300, deadline=None)
@given(_books())
def test_clearing_properties(book: tuple[float, np.ndarray, np.ndarray, np.ndarray]) -> None:
    request, power, price, eligible = book
    r = clear_market(request, power, price, eligible)
    acc = r.accepted_mw
    d = math.copysign(1.0, request)
    # Never more than requested, nor more than any bid's power, always in the direction.
    assert abs(r.accepted_total_mw) <= abs(request) * (1 + 1e-12)
    assert np.all(np.abs(acc) <= np.abs(power))
    assert np.all(acc * d >= 0)
    assert np.all(acc[~eligible] == 0)
    # Exactly the cheapest (in merit order, ties by index): equal to the plain greedy loop.
    np.testing.assert_allclose(acc, _reference_clear(request, power, price, eligible),
                               rtol=0, atol=1e-9)
    on = acc != 0
    assert r.n_accepted == int(on.sum())
    if r.n_accepted:
        # Uniform price is the marginal one: no accepted bid is priced beyond it.
        if d > 0:
            assert np.all(price[on] <= r.clearing_price_per_mwh)
        else:
            assert np.all(price[on] >= r.clearing_price_per_mwh)
        # Any valid bid left (partly) out is no better than the clearing price.
        left_out = eligible & (power * d > 0) & (np.abs(acc) < np.abs(power))
        assert np.all(price[left_out] * d >= r.clearing_price_per_mwh * d)
        # At most one bid is partly accepted.
        assert np.sum(on & (np.abs(acc) < np.abs(power))) <= 1
    else:
        assert math.isnan(r.clearing_price_per_mwh)
    assert r.consensus == (abs(r.accepted_total_mw) >= 0.95 * abs(request) * (1 - 1e-12))
    if abs(r.offered_mw) <= abs(request):
        np.testing.assert_allclose(r.accepted_total_mw, r.offered_mw, rtol=1e-12)
    pay = settlement(acc, r.clearing_price_per_mwh, 1.0)
    if r.n_accepted:
        assert pay.sum() == pytest.approx(r.clearing_price_per_mwh * r.accepted_total_mw / 3600,
                                          rel=1e-9, abs=1e-12)


def test_pro_rata_shares_the_marginal_price_by_size() -> None:
    """``tie_break="pro_rata"``: the book of test_ties_broken_by_agent_index, idx 3
    cheapest (10 MW @ 10), then 0, 1, 2 at 20 share the 15 MW left: 5 MW each; sizes
    1, 2, 3 at one price sharing 3 MW get half of each; in a surplus the least
    compensation first (1 MW at 0 $/MWh), then two 2 MW absorbers at -10 share 2 MW."""
    r = _clear(25.0, [10, 10, 10, 10], [20, 20, 20, 10], tie_break="pro_rata")
    np.testing.assert_array_equal(r.accepted_mw, [5, 5, 5, 10])
    assert r.clearing_price_per_mwh == 20.0 and r.n_accepted == 4 and r.consensus
    r = _clear(3.0, [1, 2, 3], [50, 50, 50], tie_break="pro_rata")
    np.testing.assert_array_equal(r.accepted_mw, [0.5, 1.0, 1.5])
    s = _clear(-3.0, [-2, -1, -2, 1], [-10, 0, -10, 5], tie_break="pro_rata")
    np.testing.assert_array_equal(s.accepted_mw, [-1, -1, -1, 0])
    assert s.clearing_price_per_mwh == -10.0
    # a group the request covers is taken whole, as by index; dearer bids get nothing
    r = _clear(25.0, [10, 10, 10, 10], [20, 20, 30, 10], tie_break="pro_rata")
    np.testing.assert_array_equal(r.accepted_mw, [7.5, 7.5, 0, 10])
    r = _clear(40.0, [10, 10, 10, 10], [20, 20, 30, 10], tie_break="pro_rata")
    np.testing.assert_array_equal(r.accepted_mw, [10, 10, 10, 10])
    with pytest.raises(ValueError, match="tie_break='random' is not allowed: expected one "
                                         "of index, pro_rata"):
        _clear(1.0, [1], [1], tie_break="random")


def _denormal_tie_book() -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """A 2 MW and a 5e-324 MW (the smallest denormal) absorber tied at 0 $/MWh sharing a
    1 MW surplus (found by hypothesis): each gets half its size, and half of 5e-324
    rounds to 0 MW."""
    power, eligible = np.zeros(21), np.zeros(21, dtype=bool)
    power[3], power[19] = -2.0, -5e-324
    eligible[[3, 19]] = True
    return -1.0, power, np.zeros(21), eligible


@settings(max_examples=300, deadline=None)
@given(_books())
@example(_denormal_tie_book())
def test_pro_rata_clears_what_the_index_rule_clears(
        book: tuple[float, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """The same total, clearing price, consensus and bids wholly in or out; only the
    bids at the clearing price share it, each the same fraction ``f`` of its size (to
    rounding: ``|P|·f`` of a denormal bid may round to 0 MW)."""
    request, power, price, eligible = book
    by_index = clear_market(request, power, price, eligible)
    r = clear_market(request, power, price, eligible, tie_break="pro_rata")
    assert r.accepted_total_mw == pytest.approx(by_index.accepted_total_mw, rel=1e-12,
                                                abs=1e-9)
    assert r.consensus == by_index.consensus and r.offered_mw == by_index.offered_mw
    if not by_index.n_accepted:
        assert not r.n_accepted and math.isnan(r.clearing_price_per_mwh)
        return
    clearing = r.clearing_price_per_mwh
    assert clearing == by_index.clearing_price_per_mwh
    d = math.copysign(1.0, request)
    valid = eligible & (power * d > 0)
    tied = valid & (price == clearing)
    np.testing.assert_array_equal(r.accepted_mw[~tied], by_index.accepted_mw[~tied])
    sizes = np.abs(power[tied])
    share = float(np.abs(r.accepted_mw[tied]).sum() / sizes.sum())
    assert 0.0 < share <= 1.0
    np.testing.assert_allclose(np.abs(r.accepted_mw[tied]), sizes * share, rtol=1e-12,
                               atol=np.finfo(float).tiny)
    assert np.all(r.accepted_mw[tied] * d >= 0.0)


def test_prefix_sums_keep_the_merit_order_with_tiny_bids() -> None:
    """A denormal-sized bid between two others must not let the next bid in: with
    ``cumsum − size`` the computed Σ_{j<k} is not monotone and a 5.5e-17 MW sliver of a
    pricier bid was accepted while a cheaper one stayed out (found by hypothesis)."""
    power = np.zeros(18)
    power[6], power[11], power[17] = 1 / 3, 1.86855433e-289, 1.0
    price = np.zeros(18)
    price[6] = price[11] = -1.0
    eligible = np.zeros(18, dtype=bool)
    eligible[[6, 11, 17]] = True
    r = clear_market(1 / 3, power, price, eligible)
    assert r.accepted_mw[17] == 0.0 and r.n_accepted == 1
    assert r.clearing_price_per_mwh == -1.0
    assert r.accepted_mw[6] == pytest.approx(1 / 3)


def test_a_rounding_crumb_of_the_request_is_not_awarded() -> None:
    """Market review: ten 0.1 MW bids fill a 1 MW request, but 1.0 − Σ left 1.1e-16 MW,
    which went to the eleventh bid: it became marginal and set the price (100 instead of
    90) with a 1e-16 MW contract. A whole tiny bid is still accepted."""
    r = clear_market(1.0, np.full(11, 0.1), np.arange(11) * 10.0)
    assert r.n_accepted == 10 and r.accepted_mw[-1] == 0.0
    assert r.clearing_price_per_mwh == 90.0 and r.consensus
    tiny = clear_market(1.0, np.array([1e-12, 0.5]), np.array([5.0, 10.0]))
    assert tiny.accepted_mw.tolist() == [1e-12, 0.5] and tiny.clearing_price_per_mwh == 10.0


def test_settlement_refuses_non_finite_or_non_numeric_power() -> None:
    """Review: a NaN or infinite accepted power was settled silently into a NaN or
    infinite payment, and a bool request or bid array was read as 1 MW."""
    for bad, shown in ((np.array([1.0, math.nan]), r"accepted_mw\[1\] = nan"),
                       (np.array([math.inf]), r"accepted_mw\[0\] = inf"),
                       (np.array([True, False]), "accepted_mw has dtype bool")):
        with pytest.raises(ValueError, match=shown):
            settlement(bad, 80.0, 1.0)
    for price in (True, "80", None, math.inf):
        with pytest.raises(ValueError, match="clearing_price_per_mwh"):
            settlement(np.array([1.0]), price, 1.0)
    with pytest.raises(ValueError, match="dt_s"):
        settlement(np.array([1.0]), 80.0, "1")
    np.testing.assert_array_equal(settlement(np.zeros(2), math.nan, 1.0), [0.0, 0.0])
    np.testing.assert_array_equal(settlement(np.array([3]), 36, 100), [3.0])   # ints are fine
    assert clear_market(np.array(2.0), np.ones(2), np.ones(2)).accepted_total_mw == 2.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"request_mw": True}, "request_mw"),
    ({"bid_power_mw": np.array([True, True])}, "bid_power_mw has dtype bool"),
    ({"bid_power_mw": ["1", "2"]}, "bid_power_mw has dtype"),
    ({"bid_price_per_mwh": [None, 1.0]}, "bid_price_per_mwh has dtype object"),
    ({"consensus_share": "0.95"}, "consensus_share"),
    ({"price_cap_per_mwh": "500"}, "price_cap_per_mwh"),
    ({"deadband_mw": None}, "deadband_mw"),
])
def test_non_numeric_inputs_name_the_argument(kwargs: dict, match: str) -> None:
    """Review: strings, None and booleans either passed as numbers or failed inside
    NumPy/float() with a message that did not name the argument."""
    args = {"request_mw": 5.0, "bid_power_mw": np.ones(2), "bid_price_per_mwh": np.ones(2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        clear_market(**args)


# --------------------------------------------------------------------------- deadband edge (mutation audit)
def test_a_request_equal_to_the_deadband_holds_no_round() -> None:
    """"A round with |request_mw| <= deadband_mw accepts nothing and counts as
    consensus": at exactly the deadband, nothing is accepted (in either direction)."""
    power, price = np.array([1.0, -1.0]), np.array([10.0, 10.0])
    for request in (0.05, -0.05):
        r = clear_market(request, power, price, deadband_mw=0.05)
        assert r.n_accepted == 0 and r.consensus
        assert not r.accepted_mw.any() and math.isnan(r.clearing_price_per_mwh)
    r = clear_market(0.0500001, power, price, deadband_mw=0.05)   # just above: cleared
    assert r.n_accepted == 1 and r.accepted_mw[0] == 0.0500001


# --------------------------------------------------------------------------- mutation audit (session 12)
def test_a_one_price_band_and_a_zero_deadband_are_admissible() -> None:
    """The documented bounds are inclusive: ``floor <= cap`` admits floor == cap (a
    one-price market: a bid at that price clears, one a cent either side is out of band)
    and ``deadband_mw >= 0`` admits 0 (every non-zero request holds a round)."""
    r = clear_market(5.0, np.full(3, 10.0), np.array([49.99, 50.0, 50.01]),
                     price_floor_per_mwh=50.0, price_cap_per_mwh=50.0)
    np.testing.assert_array_equal(r.accepted_mw, [0.0, 5.0, 0.0])
    assert r.clearing_price_per_mwh == 50.0 and r.offered_mw == 10.0
    assert price_signal_per_mwh(30.0, 100.0, 50.0, 50.0) == 50.0
    tiny = clear_market(1e-9, np.ones(1), np.ones(1), deadband_mw=0.0)
    assert tiny.n_accepted == 1 and tiny.accepted_total_mw == 1e-9 and tiny.consensus
    zero = clear_market(0.0, np.ones(1), np.ones(1), deadband_mw=0.0)
    assert zero.consensus and zero.n_accepted == 0 and zero.offered_mw == 0.0


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("request_mw", [0.0, -0.0])
def test_a_zero_request_clears_nothing_with_plus_zero_sums(request_mw: float,
                                                           check: bool) -> None:
    """A zero request (the idle round, returned early): nothing accepted, offer and total
    +0.0 (not −0.0), fresh read-only zeros; NaN and inf bids change nothing."""
    power = np.array([10.0, -10.0, np.inf, np.nan]) if check else np.array([10.0, -10.0])
    r = clear_market(request_mw, power, np.full(power.size, 5.0), check=check)
    assert r.consensus and r.n_accepted == 0 and math.isnan(r.clearing_price_per_mwh)
    for total in (r.offered_mw, r.accepted_total_mw):
        assert total == 0.0 and math.copysign(1.0, total) == 1.0
    assert not np.signbit(r.accepted_mw).any() and not r.accepted_mw.flags.writeable
    np.testing.assert_array_equal(r.accepted_mw, np.zeros(power.size))
    assert math.copysign(1.0, r.request_mw) == math.copysign(1.0, request_mw)


def test_an_infinite_power_bid_is_ignored_not_awarded_the_request() -> None:
    """"NaN/inf power or price ... ignored": an infinite offer (or absorption bid) is
    not valid, so it neither takes the whole request at its price nor makes the offer
    infinite; the finite bids clear as if it were absent."""
    r = _clear(10.0, [math.inf, 5.0], [1.0, 60.0])
    np.testing.assert_array_equal(r.accepted_mw, [0.0, 5.0])
    assert r.offered_mw == 5.0 and r.clearing_price_per_mwh == 60.0 and not r.consensus
    s = _clear(-10.0, [-math.inf, -5.0], [1.0, -60.0])
    np.testing.assert_array_equal(s.accepted_mw, [0.0, -5.0])
    assert s.offered_mw == -5.0 and s.clearing_price_per_mwh == -60.0


def test_consensus_holds_down_to_the_edge_of_its_relative_tolerance() -> None:
    """``|accepted| >= share·|request|`` with relative tolerance 1e-12, inclusive: an
    offer of exactly share·|request|·(1 − 1e-12) reaches consensus, the float below it
    does not (a strict comparison or a tolerance on the wrong side moves the edge)."""
    edge = 0.95 * 100.0 * (1.0 - 1e-12)
    for request, sign in ((100.0, 1.0), (-100.0, -1.0)):
        assert _clear(request, [sign * edge], [1.0]).consensus
        below = np.nextafter(edge, 0.0)
        assert not _clear(request, [sign * below], [1.0]).consensus


def test_price_signal_at_zero_request_is_the_neutral_price_inside_any_band() -> None:
    """The neutral price is 0 $/MWh clipped into the band: the cap for an all-negative
    band (not 0, which is outside it), and a zero request is no scarcity even with no
    flexible capacity (only a non-zero request is "full scarcity" there)."""
    below = {"price_floor_per_mwh": -100.0, "price_cap_per_mwh": -10.0}
    assert price_signal_per_mwh(0.0, 100.0, **below) == -10.0
    assert price_signal_per_mwh(-50.0, 100.0, **below) == -55.0     # −10 − 90·0.5
    assert price_signal_per_mwh(50.0, 100.0, **below) == -10.0      # already at the cap
    band = {"price_floor_per_mwh": -50.0, "price_cap_per_mwh": 250.0}
    assert price_signal_per_mwh(0.0, 0.0, **band) == 0.0
    assert price_signal_per_mwh(0.0, 0.0, **band, reference_price_per_mwh=30.0) == 30.0


def test_coverage_is_one_for_a_zero_request() -> None:
    """``coverage`` = |accepted| / |request|, 1.0 for a zero request (nothing asked,
    nothing missing), not a division by zero or 0.0."""
    assert _clear(0.0, [10.0], [5.0]).coverage == 1.0
    assert _clear(40.0, [10.0], [5.0]).coverage == 0.25


# --------------------------------------------------------------------------- operator
def test_operator_request_reserve_rounds_until_the_trip_is_known_then_energy() -> None:
    from gridswarm_env.market import operator_request
    from gridswarm_env.scenarios import PRODUCT_ENERGY, PRODUCT_RESERVE

    awarded, standing = np.array([30.0, 50.0]), np.array([20.0, 40.0])
    common = {"reserve_target_mw": 100.0, "reserve_awarded_mw": awarded,
              "contingency_mw": 108.0, "standing_reserve_mw": standing, "deadband_mw": 0.05}
    # before the trip is known: the reserve still to buy, whatever the forecast
    assert operator_request(5.0, trip_known=False, **common) == (20.0, PRODUCT_RESERVE)
    # ... until the target is met (the rest inside the deadband): then the forecast
    # shortage as energy (a load step before the trip), or no request where that is
    # inside the deadband too (a reserve round, as before)
    met = {**common, "reserve_awarded_mw": np.array([49.96, 50.0])}
    assert operator_request(5.0, trip_known=False, **met) == (5.0, PRODUCT_ENERGY)
    assert operator_request(-3.0, trip_known=False, **met) == (-3.0, PRODUCT_ENERGY)
    assert operator_request(0.05, trip_known=False, **met) == (
        pytest.approx(0.04), PRODUCT_RESERVE)
    over = {**common, "reserve_awarded_mw": np.array([70.0, 50.0])}
    assert operator_request(0.0, trip_known=False, **over) == (0.0, PRODUCT_RESERVE)
    # known: the forecast plus the lost generation standing reserve does not cover
    assert operator_request(5.0, trip_known=True, **common) == (5.0 + 108.0 - 60.0,
                                                                PRODUCT_ENERGY)
    # no reserve target: energy rounds on the forecast alone until the trip is known
    assert operator_request(-3.0, trip_known=False, **{**common, "reserve_target_mw": 0.0}) \
        == (-3.0, PRODUCT_ENERGY)


def test_operator_request_buys_energy_after_a_reserve_round_cleared_short() -> None:
    """A target the fleet cannot reach kept every round before the trip a reserve round,
    so a load step before it went unbought. Once a reserve round clears short of its
    request (``reserve_short``) a round whose forecast shortage is beyond the deadband
    buys it as energy; a quiet round asks for the missing reserve again."""
    from gridswarm_env.market import operator_request
    from gridswarm_env.scenarios import PRODUCT_ENERGY, PRODUCT_RESERVE

    common = {"reserve_target_mw": 100.0, "reserve_awarded_mw": np.array([30.0, 50.0]),
              "contingency_mw": 108.0, "standing_reserve_mw": np.array([30.0, 50.0]),
              "deadband_mw": 0.05}
    short = {**common, "reserve_short": True}
    assert operator_request(5.0, trip_known=False, **short) == (5.0, PRODUCT_ENERGY)
    assert operator_request(-3.0, trip_known=False, **short) == (-3.0, PRODUCT_ENERGY)
    assert operator_request(0.04, trip_known=False, **short) == (
        pytest.approx(20.0), PRODUCT_RESERVE)                  # quiet: try again
    # not short (the last reserve round got what it asked): the reserve first, as before
    assert operator_request(5.0, trip_known=False, **common) == (
        pytest.approx(20.0), PRODUCT_RESERVE)
    # known trip: unchanged
    assert operator_request(5.0, trip_known=True, **short) == (5.0 + 108.0 - 80.0,
                                                               PRODUCT_ENERGY)


def test_fleet_flexibility_counts_plugged_evs_and_the_pv_forecast_downward() -> None:
    from gridswarm_env.market import downward_flexibility_mw, fleet_flexibility

    # DERs: battery, battery, EV plugged, EV gone, PV, EV plugged under a charge cap
    # (0.3 MW) below its baseline rate (0.4 MW), EV plugged under a cap above it (0.7 MW)
    is_battery = np.array([True, True, False, False, False, False, False])
    is_ev = np.array([False, False, True, True, False, True, True])
    plugged = np.array([False, False, True, False, False, True, True])
    up, down = fleet_flexibility(
        is_battery, is_ev, plugged,
        max_discharge_mw=np.array([2.0, 3.0, 0.0, 0.0, 2.5, 0.0, 0.0]),
        max_charge_mw=np.array([1.5, 2.5, 1.0, 1.0, 4.0, 0.3, 0.7]),
        ev_baseline_rate_mw=np.array([0.0, 0.0, 0.4, 0.4, 0.0, 0.4, 0.4]))
    # the gone EV's charging is not counted; the capped EVs defer what they charge
    assert up == pytest.approx(2.0 + 3.0 + 0.4 + 0.3 + 0.4)
    np.testing.assert_allclose(down, [1.5, 2.5, 0.6, 0.0, 4.0, 0.0, 0.3])
    pv_forecast = np.array([0.0, 0.0, 0.0, 0.0, 2.75, 0.0, 0.0])
    # the PV plant curtails at most its export cap (2.5 MW), not its 2.75 MW forecast
    export_cap = np.array([2.0, 3.0, 0.0, 0.0, 2.5, 0.0, 0.0])
    assert downward_flexibility_mw(down, slice(4, 5), pv_forecast, export_cap) == pytest.approx(
        1.5 + 2.5 + 0.6 + 2.5 + 0.3)
    export_cap[4] = 4.0
    assert downward_flexibility_mw(down, slice(4, 5), pv_forecast, export_cap) == pytest.approx(
        1.5 + 2.5 + 0.6 + 2.75 + 0.3)
    np.testing.assert_allclose(down, [1.5, 2.5, 0.6, 0.0, 4.0, 0.0, 0.3])   # not in place


def test_pro_rata_keeps_the_index_rules_marginal_bid_and_pays_ties_alike() -> None:
    """Two books where pro rata left the index rule's result (found by a fuzz): the
    cheaper bids, summed again in another order, covered the request exactly and the
    marginal group got nothing (a 6.6e-16 MW bid at 100 $/MWh the index rule awarded
    whole: the clearing price fell to 90); three identical 0.3 MW bids at the marginal
    price, a request their running sum left 1 ulp short: the last got 1 ulp less."""
    power = np.array([6.576879887751868e-16, 5.012752637134686e-11, 8.175954399662715e-14,
                      3.854174391800799e-12, 5.018589970596674, 5.6385991530657835e-12,
                      3.7232371097018896e-06, 3.6499797069912466e-10,
                      4.928233893412892e-07, 9.458091456024769e-10, 5.765335957090669e-07])
    price = np.array([100.0, 30, 60, 0, 0, 40, 90, 50, 40, 20, 100])
    by_index = clear_market(5.018594188027682, power, price)
    r = clear_market(5.018594188027682, power, price, tie_break="pro_rata")
    assert by_index.clearing_price_per_mwh == r.clearing_price_per_mwh == 100.0
    assert r.accepted_total_mw == pytest.approx(by_index.accepted_total_mw, rel=1e-12)
    assert r.accepted_mw[0] > 0.0 and r.accepted_mw[10] > 0.0   # the group shares it
    r = clear_market(0.3 + 0.3 + 0.3, np.full(3, 0.3), np.zeros(3), tie_break="pro_rata")
    assert r.accepted_mw[0] == r.accepted_mw[1] == r.accepted_mw[2] > 0.0
