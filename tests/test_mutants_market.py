"""Market clearing boundaries (hand-made mutation audit of :mod:`gridswarm_env.market`)."""

from __future__ import annotations

import math

import numpy as np

from gridswarm_env.market import clear_market


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
