"""The settlement functions of gridswarm_env.market (what pays agents, DESIGN §3) on
closed-form cases: delivery, payments, penalties, own costs, the reward."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gridswarm_env import market
from gridswarm_env.reserve import ReserveBook

H = 4.0 / 3600.0   # a 4 s step, hours
LAMBDA = 500.0     # undelivered penalty, $/MWh


def _settle(contract, price, planned, executed, active=0.0, share=0.0, rate=0.0):
    """delivery → payment and penalty for arrays built from lists."""
    arr = [np.asarray(x, dtype=float) for x in (contract, planned, executed)]
    n = arr[0].size
    d, u, g = market.contract_delivery_mw(arr[0], arr[1], arr[2], np.full(n, float(active)),
                                          np.full(n, float(share)))
    pay = market.contract_payments_usd(arr[0], np.asarray(price, dtype=float), d,
                                       np.full(n, float(rate)), H)
    pen = market.undelivered_penalty_usd(u, g, LAMBDA * H)
    return d, u, g, pay, pen


def test_full_delivery_pays_price_times_contract_times_h_and_no_penalty() -> None:
    c, price = [10.0, -4.0, 0.0], [80.0, -20.0, 80.0]
    d, u, g, pay, pen = _settle(c, price, planned=c, executed=c)
    np.testing.assert_array_equal(d, [10.0, 4.0, 0.0])
    np.testing.assert_array_equal(u, 0.0)
    np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_allclose(pay, [80.0 * 10.0 * H, -20.0 * -4.0 * H, 0.0], rtol=1e-15)
    np.testing.assert_array_equal(pen, 0.0)
    # the checked special case of a round's awards is the same formula, the same bits
    for p, c_mw in zip(price, c, strict=True):
        np.testing.assert_array_equal(market.settlement(np.array([c_mw]), p, 4.0),
                                      pay[[c.index(c_mw)]])


def test_shortfall_is_penalised_at_the_penalty_rate_and_only_delivery_is_paid() -> None:
    # seller: 10 MW contracted at 50 $/MWh, 6 MW executed: 6 paid, 4 penalised
    d, u, g, pay, pen = _settle([10.0], [50.0], planned=[10.0], executed=[6.0])
    assert (d[0], u[0], g[0]) == (6.0, 4.0, 0.0)
    assert pay[0] == pytest.approx(50.0 * 6.0 * H, rel=1e-15)
    assert pen[0] == pytest.approx(LAMBDA * H * 4.0, rel=1e-15)
    # the shortfall is |P* − p|: executing more than planned is a deviation too
    d, u, _, _, _ = _settle([10.0], [50.0], planned=[10.0], executed=[10.5])
    assert (d[0], u[0]) == (9.5, 0.5)
    # nothing executed: nothing paid, all penalised
    d, u, _, pay, pen = _settle([10.0], [50.0], planned=[10.0], executed=[0.0])
    assert (d[0], u[0], pay[0]) == (0.0, 10.0, 0.0)
    assert pen[0] == pytest.approx(LAMBDA * H * 10.0, rel=1e-15)


def test_signs_for_shortage_sellers_and_surplus_absorbers() -> None:
    # seller in a shortage earns π·d·h; an absorber (C < 0) pays π·d·h: paid at π < 0,
    # pays at π > 0
    c = [10.0, -10.0, -10.0]
    _, _, _, pay, _ = _settle(c, [50.0, -20.0, 20.0], planned=c, executed=c)
    np.testing.assert_allclose(pay, [500.0 * H, 200.0 * H, -200.0 * H], rtol=1e-15)
    # an absorber short of its contract (absorbs 4 of 10 MW) is paid for the 4 only
    d, u, _, pay, pen = _settle([-10.0], [-20.0], planned=[-10.0], executed=[-4.0])
    assert (d[0], u[0]) == (4.0, 6.0)
    assert pay[0] == pytest.approx(20.0 * 4.0 * H, rel=1e-15)
    assert pen[0] == pytest.approx(LAMBDA * H * 6.0, rel=1e-15)


def test_reserve_gap_counts_past_the_contracts_up_to_the_reserve_activated() -> None:
    # no energy contract, 5 MW of reserve active for the whole step, 2 of 5 delivered
    d, u, g, pay, pen = _settle([0.0], [0.0], planned=[5.0], executed=[2.0], active=5.0,
                                share=1.0)
    assert (d[0], u[0], g[0], pay[0]) == (0.0, 0.0, 3.0, 0.0)
    assert pen[0] == pytest.approx(LAMBDA * H * 3.0, rel=1e-15)
    # the shortfall hits the 2 MW contract first; the gap is capped at R·a = 5·0.6
    d, u, g, _, pen = _settle([2.0], [50.0], planned=[7.0], executed=[0.0], active=5.0,
                              share=0.6)
    assert (d[0], u[0], g[0]) == (0.0, 2.0, 3.0)
    assert pen[0] == pytest.approx(LAMBDA * H * 5.0, rel=1e-15)


def test_reserve_availability_pays_price_times_mw_times_h_once_its_window_started() -> None:
    book = ReserveBook(2)
    signed = SimpleNamespace(contract=SimpleNamespace(
        contract_id="r", power_mw=5.0, price_per_mwh=80.0, window_start_s=8.0))
    book.award([signed], [1])
    book.sent([signed])
    book.copy_done("r")
    book.hold(signed, 1, received_s=1.0)
    zero = np.zeros(2)
    before = market.contract_payments_usd(zero, zero, zero, book.rate_at(4.0), H)
    np.testing.assert_array_equal(before, [0.0, 0.0])      # window not started
    after = market.contract_payments_usd(zero, zero, zero, book.rate_at(8.0), H)
    np.testing.assert_allclose(after, [0.0, 80.0 * 5.0 * H], rtol=1e-15)
    # paid whether or not activated, on top of the energy delivered
    both = market.contract_payments_usd(np.array([0.0, 1.0]), np.array([0.0, 100.0]),
                                        np.array([0.0, 1.0]), book.rate_at(12.0), H)
    np.testing.assert_allclose(both, [0.0, (100.0 + 400.0) * H], rtol=1e-15)


def test_own_cost_per_kind_stored_energy_and_unmet_departures() -> None:
    # agents 0-1 batteries, 2-3 PV, 4-5 EVs
    bat, sol, ev = slice(0, 2), slice(2, 4), slice(4, 6)
    p = np.array([3.0, -2.0, -1.5, 0.5, 2.0, -1.0])
    basis = market.cost_basis_mw(p, bat, sol, ev)
    np.testing.assert_array_equal(basis, [3.0, 2.0, 1.5, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(market.cost_basis_mw(p, bat, sol, ev, np.zeros(6)), basis)
    rate = np.array([40.0, 40.0, 27.5, 27.5, 60.0, 60.0])
    d_e = np.array([-3.0 * H, 2.0 * H, 0.0, 0.0, 0.0, 0.0])   # battery 0 lost, 1 gained
    unmet = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.25])
    cost = market.own_cost_usd(basis, rate, bat, d_e, 30.0, unmet, 300.0, H)
    want = [(40.0 * 3.0 + 30.0 * 3.0) * H, (40.0 * 2.0 - 30.0 * 2.0) * H, 27.5 * 1.5 * H,
            0.0, 60.0 * 2.0 * H, 300.0 * 0.25]
    np.testing.assert_allclose(cost, want, rtol=1e-12)
    np.testing.assert_array_equal(p, [3.0, -2.0, -1.5, 0.5, 2.0, -1.0])   # inputs untouched
    np.testing.assert_array_equal(basis, [3.0, 2.0, 1.5, 0.0, 2.0, 0.0])


def test_reward_assembly_and_grid_term() -> None:
    grid = market.grid_term_usd(0.01, 0.002, 0.05)
    assert grid == pytest.approx(0.002 * 0.01 / 0.05, rel=1e-15)
    pay, cost, pen = np.array([5.0, 0.0]), np.array([1.0, 0.5]), np.array([2.0, 0.0])
    r = market.agent_rewards(pay, cost, pen, grid, 100.0)
    np.testing.assert_allclose(r, [100.0 * (5.0 - 1.0 - 2.0 - grid), -100.0 * (0.5 + grid)],
                               rtol=1e-15)
    np.testing.assert_array_equal(pay, [5.0, 0.0])   # inputs untouched


def test_delivery_leaves_its_inputs_untouched() -> None:
    c, planned, ex = np.array([3.0, -2.0]), np.array([3.0, -1.0]), np.array([1.0, -1.0])
    active, share = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    copies = [a.copy() for a in (c, planned, ex, active, share)]
    out = market.contract_delivery_mw(c, planned, ex, active, share)
    np.testing.assert_array_equal(out, [[1.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    # an array of zeros as the 0 operand: the same values
    same = market.contract_delivery_mw(c, planned, ex, active, share, np.zeros(2))
    np.testing.assert_array_equal(same, out)
    for a, b in zip((c, planned, ex, active, share), copies, strict=True):
        np.testing.assert_array_equal(a, b)
