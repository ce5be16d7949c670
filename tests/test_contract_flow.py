"""Unit checks of :mod:`gridswarm_env.contract_flow`'s helpers, pinning behaviour that the
environment-level tests reach only in rare steps (found by hand mutation testing,
session 27)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gridswarm_env.contract_flow import add_by_owner, check_tampered
from gridswarm_env.trust import Contract, SignedContract


def _signed(k: int = 0) -> SignedContract:
    c = Contract(contract_id=f"c-0-a{k}-{k}", round_index=0, agent_id=f"a{k}",
                 operator_id="operator", power_mw=1.0, price_per_mwh=50.0,
                 window_start_s=1.0, window_end_s=2.0, nonce=bytes(16))
    return SignedContract(c, bytes(32), bytes(32))


def test_add_by_owner_sums_every_value_of_a_repeated_owner() -> None:
    """An agent holding several contracts gets their summed power (``np.add.at``); a
    plain fancy ``+=`` would keep only the last of a repeated owner's values."""
    target = np.array([0.5, 0.0, 0.0])
    idx = add_by_owner(target, [1, 2, 1, 0], [1.0, 3.0, 2.0, 4.0])
    np.testing.assert_array_equal(target, [4.5, 3.0, 3.0])
    np.testing.assert_array_equal(idx, [1, 2, 1, 0])
    # distinct owners: the same sums on the fast path
    target = np.zeros(3)
    add_by_owner(target, [2, 0], [1.5, -2.0])
    np.testing.assert_array_equal(target, [-2.0, 0.0, 1.5])


@pytest.mark.parametrize("owner", [3, -1, True, 1.0, np.int64(3)])
def test_check_tampered_refuses_a_recipient_that_is_no_agent_index(owner: object) -> None:
    """A recipient must be an integer from 0 to ``n_agents - 1``: ``n_agents`` itself
    (one past the last agent) is refused like any other out-of-range index."""
    says = f"recipient {owner!r} at position 1: expected an agent index, an integer from 0 to 2"
    with pytest.raises(TypeError, match=re.escape(says)):
        check_tampered([_signed(0), _signed(1)], [0, owner], 3)


def test_check_tampered_accepts_every_agent_index() -> None:
    """The last agent (``n_agents - 1``) and numpy integers are valid recipients."""
    check_tampered([_signed(0), _signed(1), _signed(2)], np.array([0, 1, 2]), 3)
    check_tampered([_signed(0)], [2], 3)
