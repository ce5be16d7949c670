"""Unit checks of :mod:`gridswarm_env.contract_flow`'s helpers, pinning behaviour that the
environment-level tests reach only in rare steps (found by hand mutation testing,
session 27)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gridswarm_env.contract_flow import (
    add_by_owner,
    check_tampered,
    contract_power_at,
    joined_price,
)
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


def test_the_accepted_share_counts_only_the_round_just_cleared() -> None:
    """``file_arrived``'s accepted share is the part of an agent's last bid awarded by the
    contracts *of the round just cleared* that reached it: a deferred contract of an
    earlier round delivered in the same step is scheduled (``awarded``) but is no answer
    to the last bid."""
    import gridswarm_env

    raw = gridswarm_env.parallel_env(scenario="price_spike", n_agents=6, trust="hmac").unwrapped
    raw.reset(seed=0)
    flow = raw.contract_flow
    flow.arrived, flow.arrived_reserve = [], False
    ledger = flow.ledger
    old = ledger.issue(1, np.array([0, 1]), np.array([1.0, 0.5]), np.array([40.0, 40.0]),
                       3.0, 4.0)
    new = ledger.issue(2, np.array([0, 2]), np.array([0.25, 2.0]), np.array([60.0, 60.0]),
                       3.0, 4.0)
    flow.arrived = [(old[0], 0), (old[1], 1), (new[0], 0), (new[1], 2)]
    bid = np.array([1.0, 1.0, 4.0, 1.0, 0.0, 0.0])
    awarded, share = flow.file_arrived(2, 2.5, bid)
    np.testing.assert_array_equal(awarded, [1.25, 0.5, 2.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(share, [0.25, 0.0, 0.5, 0.0, 0.0, 0.0])


def test_a_held_reserve_contract_is_received_at_its_bus_delivery_time() -> None:
    """A reserve contract is held from its delivery by the bus (its activation waits for
    max(broadcast arrival, contract delivery, window start)), not from the end of the step
    in which it arrived: the round-1 contracts, published at gate closure in the first
    step, arrive each after its own latency, before their window opens at 2·dt_s."""
    import gridswarm_env
    from tests.episodes import play

    raw = gridswarm_env.parallel_env(scenario="emergency", n_agents=40, trust="hmac").unwrapped
    for _ in play(raw, "heuristic", 0, until_s=raw.scenario.event_time_s):
        pass
    received = raw.reserve_book.received_s
    held = [c.contract for c, _o in raw.reserve_contracts]
    assert held
    dt = raw.config.dt_s
    for c in held:
        start = c.window_start_s
        assert start - dt < received[c.contract_id] < start, (c.contract_id, start)
    assert len({received[c.contract_id] for c in held}) > 1   # latencies, not one time


def test_the_reserve_response_is_the_earliest_holders_activation() -> None:
    """The emergency response latency is the first DER response: with reserve standing,
    the earliest holder's activation (the holders' broadcast arrivals differ, so the
    first activations of one step span several bus latencies)."""
    import gridswarm_env
    from tests.episodes import play

    raw = gridswarm_env.parallel_env(scenario="emergency", n_agents=40, trust="hmac").unwrapped
    for _ in play(raw, "heuristic", 0):
        pass
    acts = raw.activation_s[np.isfinite(raw.activation_s)]
    assert acts.size > 1 and acts.max() > acts.min()
    event_s = raw.scenario.event_time_s
    assert raw.episode_metrics()["emergency_response_latency_ms"] == pytest.approx(
        (acts.min() - event_s) * 1000.0, rel=1e-12)


def _joined() -> tuple[np.ndarray, ...]:
    """Two contracts joined inside the step: agent 1 +2 MW at $80 from 0.3 s, agent 2
    −1 MW at $−20 from 0.6 s, and agent 1 +1 MW at $20 from 0.9 s (owners, MW, s, $)."""
    return (np.array([1, 2, 1]), np.array([2.0, -1.0, 1.0]), np.array([0.3, 0.6, 0.9]),
            np.array([80.0, -20.0, 20.0]))


def test_contract_power_at_adds_the_contracts_joined_by_then() -> None:
    """The contract power acting at an instant: the on-time contracts plus those joined by
    then (at their delivery instant included), each of an agent's added."""
    on_time = np.array([5.0, 1.0, 0.0])
    np.testing.assert_array_equal(contract_power_at(on_time, _joined(), 0.29), on_time)
    np.testing.assert_array_equal(contract_power_at(on_time, _joined(), 0.6), [5.0, 3.0, -1.0])
    np.testing.assert_array_equal(contract_power_at(on_time, _joined(), 1.0), [5.0, 4.0, -1.0])
    np.testing.assert_array_equal(on_time, [5.0, 1.0, 0.0])   # not written in place


def test_joined_price_weights_each_contract_by_its_energy_this_step() -> None:
    """Agent 1: 1 MW on time at $50 and the joined +2 MW at $80 for 70 % of the step and
    +1 MW at $20 for 10 %: (50·1 + 80·1.4 + 20·0.1) / 2.5; agent 2, its joined contract
    alone: its own price; agent 0, untouched; an agent whose weights cancel: 0."""
    on_time, price = np.array([5.0, 1.0, 0.0]), np.array([30.0, 50.0, 0.0])
    share = np.array([0.7, 0.4, 0.1])
    got = joined_price(on_time, price, _joined(), share)
    np.testing.assert_allclose(got, [30.0, (50.0 + 112.0 + 2.0) / 2.5, -20.0], rtol=1e-15)
    cancel = joined_price(np.array([0.0, -1.4, 0.0]), np.array([0.0, 50.0, 0.0]),
                          (np.array([1]), np.array([2.0]), np.array([0.3]),
                           np.array([80.0])), np.array([0.7]))
    assert cancel[1] == 0.0
