"""A reused nonce is a replay on every path that checks contracts.

The replay test (contract id, nonce, epoch tag) is written three times in
``gridswarm_env.trust.contracts`` for speed: in ``verify`` (one contract), in the
receipt screening of ``screen_batch`` (what the environment runs when contracts reach
their holders) and in the batch decision of ``verify_batch`` (what it runs at dispatch).
Code review (mutation): deleting the nonce test from either of the two copies the
environment uses left the whole suite green; a re-signed copy of a verified contract
under a fresh id and the same nonce was then accepted at dispatch.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gridswarm_env.trust import ContractLedger, IdentityRegistry, RejectReason, SignedContract

AGENTS = ["der_0", "der_1", "der_2", "der_3"]


def _setup():
    registry = IdentityRegistry(AGENTS, seed=11, crypto_threads=1)
    ledger = ContractLedger(registry, rng=3)
    signed = ledger.issue(0, [0, 1, 2, 3], [0.5] * 4, 40.0, 10.0, 11.0)
    return registry, ledger, signed


def _resigned(registry: IdentityRegistry, signed: SignedContract, **changes) -> SignedContract:
    """``signed``'s contract with ``changes``, properly signed by agent and operator."""
    contract = replace(signed.contract, **changes)
    message = contract.canonical_bytes()
    return SignedContract(contract, registry.sign(contract.agent_id, message),
                          registry.sign("operator", message))


def _flip(nonce: bytes) -> bytes:
    """Another nonce of the same length (its last bit flipped)."""
    return nonce[:-1] + bytes([nonce[-1] ^ 1])


def _verify(ledger, signed, now_s):
    return ledger.verify(signed, now_s)


def _verify_batch(ledger, signed, now_s):
    valid, reasons = ledger.verify_batch([signed], now_s)
    assert bool(valid[0]) is (reasons[0] is None)
    return reasons[0]


def _screen(ledger, signed, now_s):
    return ledger.screen_batch([signed], now_s, [signed.contract.agent_id])[0]


PATHS = pytest.mark.parametrize("present", [_verify, _verify_batch, _screen],
                                ids=["verify", "verify_batch", "screen_batch"])


@PATHS
def test_a_verified_contracts_nonce_under_a_fresh_id_is_a_replay(present) -> None:
    registry, ledger, signed = _setup()
    first = signed[0]
    assert ledger.verify(first, 10.5) is None                 # verified: id and nonce used
    fresh_id = _resigned(registry, first, contract_id="c-fresh")
    assert present(ledger, fresh_id, 10.6) is RejectReason.REPLAYED
    # the guard: a fresh id with a fresh nonce, signed alike, is accepted on the same path
    other = _resigned(registry, first, contract_id="c-other", nonce=_flip(first.contract.nonce))
    assert present(ledger, other, 10.6) is None


@PATHS
def test_a_verified_contracts_id_with_a_fresh_nonce_is_a_replay(present) -> None:
    registry, ledger, signed = _setup()
    first = signed[0]
    assert ledger.verify(first, 10.5) is None
    fresh_nonce = _resigned(registry, first, nonce=_flip(first.contract.nonce))
    assert present(ledger, fresh_nonce, 10.6) is RejectReason.REPLAYED
