"""ReserveBook alone: holding, withdrawing, copies failing or done, the availability rate
over time, activation order (no bus, ledger or environment)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from gridswarm_env.reserve import ReserveBook


def _signed(cid: str, power_mw: float, price: float = 50.0, start_s: float = 2.0):
    """A stand-in for a SignedContract: the books read ``signed.contract`` only."""
    return SimpleNamespace(contract=SimpleNamespace(
        contract_id=cid, power_mw=power_mw, price_per_mwh=price, window_start_s=start_s))


def _awarded(book: ReserveBook, signed: list, owners: list[int]) -> None:
    """What the operator does when a reserve round clears: award, send one copy each."""
    book.award(signed, owners)
    book.sent(signed)
    for s, o in zip(signed, owners, strict=True):
        book.awarded_mw[o] += s.contract.power_mw


def test_a_fresh_book_holds_nothing() -> None:
    book = ReserveBook(3)
    for arr in (book.awarded_mw, book.held_mw, book.active_mw, book.standing_mw):
        np.testing.assert_array_equal(arr, np.zeros(3))
    assert np.all(np.isinf(book.activation_s)) and book.late is None
    assert not (book.contracts or book.terms or book.awards or book.copies)
    np.testing.assert_array_equal(book.rate_at(0.0), np.zeros(3))


def test_hold_moves_an_award_to_held_and_refresh_makes_it_standing() -> None:
    book = ReserveBook(3)
    a, b = _signed("a", 2.0), _signed("b", 1.5)
    _awarded(book, [a, b], [0, 2])
    assert book.awards == {"a": (0, 2.0), "b": (2, 1.5)} and book.copies == {"a": 1, "b": 1}
    assert book.copy_done("a") == 0 and "a" not in book.copies
    book.hold(a, 0, received_s=1.25)
    assert "a" not in book.awards and book.received_s == {"a": 1.25}
    assert book.terms == {"a": (0, 2.0, 50.0, 2.0)}
    np.testing.assert_array_equal(book.held_mw, [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(book.standing_mw, np.zeros(3))   # not refreshed yet
    book.refresh_standing()
    np.testing.assert_array_equal(book.standing_mw, [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(book.awarded_mw, [2.0, 0.0, 1.5])


def test_the_last_failed_copy_withdraws_the_award_and_a_held_one_stays() -> None:
    book = ReserveBook(2)
    c = _signed("c", 3.0)
    _awarded(book, [c], [1])
    book.sent([c])                       # a duplicate on its way (e.g. an adversary's)
    book.copy_failed("c", book.copy_done("c"))     # one copy left: nothing changes
    assert book.awards == {"c": (1, 3.0)} and book.awarded_mw[1] == 3.0
    book.copy_lost("c")                  # the last copy: the award leaves the books
    assert book.awards == {} and book.copies == {}
    np.testing.assert_array_equal(book.awarded_mw, [0.0, 0.0])
    # a lost duplicate of a held contract changes nothing
    d = _signed("d", 1.0)
    _awarded(book, [d], [0])
    book.sent([d])
    assert book.copy_done("d") == 1      # the genuine copy arrives and is held
    book.hold(d, 0, 1.0)
    book.copy_lost("d")
    assert book.terms and book.awarded_mw[0] == 1.0 and book.held_mw[0] == 1.0


def test_withdraw_a_held_contract_stops_its_payment_and_floors_at_zero() -> None:
    book = ReserveBook(2)
    e = _signed("e", 2.0, price=40.0, start_s=0.0)
    _awarded(book, [e], [0])
    book.hold(e, 0, 0.5)
    book.refresh_standing()
    np.testing.assert_array_equal(book.rate_at(1.0), [80.0, 0.0])
    book.withdraw(0, 2.5, held_id="e")   # more than held: the books stop at 0
    assert book.terms == {}
    np.testing.assert_array_equal(book.awarded_mw, [0.0, 0.0])
    np.testing.assert_array_equal(book.held_mw, [0.0, 0.0])
    np.testing.assert_array_equal(book.standing_mw, [0.0, 0.0])
    np.testing.assert_array_equal(book.rate_at(1.0), [0.0, 0.0])


def test_the_rate_pays_each_contract_from_its_window_at_its_own_price() -> None:
    book = ReserveBook(3)
    early, late, other = (_signed("x", 2.0, 30.0, 1.0), _signed("y", 1.0, 70.0, 3.0),
                          _signed("z", 0.5, 10.0, 1.0))
    _awarded(book, [early, late, other], [0, 0, 2])
    for s, o in ((early, 0), (late, 0), (other, 2)):
        book.hold(s, o, 0.5)
    np.testing.assert_array_equal(book.rate_at(0.0), np.zeros(3))     # no window open
    first = book.rate_at(1.0)
    np.testing.assert_array_equal(first, [60.0, 0.0, 5.0])
    assert book.rate_at(2.0) is first                 # cached until the next window
    np.testing.assert_array_equal(book.rate_at(3.0), [60.0 + 70.0, 0.0, 5.0])
    book.hold(_signed("w", 1.0, 20.0, 0.0), 1, 3.5)    # a receipt invalidates the cache
    np.testing.assert_array_equal(book.rate_at(3.5), [130.0, 20.0, 5.0])


def test_take_due_orders_by_activation_and_late_rows_keep_their_time() -> None:
    book = ReserveBook(2)
    p, q, r = (_signed("p", 1.0, start_s=0.0), _signed("q", 2.0, start_s=0.0),
               _signed("r", 0.5, start_s=0.0))
    _awarded(book, [p, q, r], [0, 0, 1])
    for s, o, at in ((p, 0, 4.5), (q, 0, 3.0), (r, 1, 9.0)):
        book.hold(s, o, at)
        book.contracts.append((s, o))
    book.refresh_standing()
    arrivals = np.array([4.0, 4.0])
    due = book.take_due(arrivals, t1_s=5.0)
    assert [(s.contract.contract_id, o, at) for s, o, at in due] == [("q", 0, 4.0),
                                                                     ("p", 0, 4.5)]
    assert book.contracts == [(r, 1)] and book.received_s == {"r": 9.0}
    for s, o, at in due:
        book.activate(o, s.contract.power_mw, at)
    book.end_activation()
    assert book.activation_s[0] == 4.0 and math.isinf(book.activation_s[1])
    np.testing.assert_array_equal(book.active_mw, [3.0, 0.0])
    owners, mw, at = book.late
    assert owners.tolist() == [0] and mw.tolist() == [1.0] and at.tolist() == [4.5]
    np.testing.assert_array_equal(book.standing_mw, [3.0, 0.5])   # r held, not active
    assert book.take_due(arrivals, t1_s=6.0) == []      # r arrives at 9 s
