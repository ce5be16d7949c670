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


def test_an_own_copy_that_failed_only_its_window_is_late_not_expired() -> None:
    """``verify_batch(own_copies=)``: a contract its presenter vouches for (the operator's
    own copy, published at issue) that fails only its window's end is rejected as
    ``late``, counted and audited apart; every other contract and verdict is as before:
    one not vouched for is ``expired``, a forged one keeps its signature reason, a
    vouched one inside its window is accepted, and none of the late ones executes."""
    from gridswarm_env.trust import Adversary, AuditLog

    registry = IdentityRegistry(AGENTS, seed=11, crypto_threads=1)
    audit = AuditLog()
    ledger = ContractLedger(registry, rng=3, audit=audit)
    old = ledger.issue(0, [0, 1, 2, 3], [0.5] * 4, 40.0, 10.0, 11.0)
    new = ledger.issue(1, [0, 1], [0.5] * 2, 40.0, 11.0, 12.0)
    forged = Adversary(mode=registry.mode, rng=0).forge_agent_signature(old[3])
    items = [old[0], old[1], old[2], forged, new[0], new[1]]
    valid, reasons = ledger.verify_batch(items, 11.0, own_copies=[True, False, True, True,
                                                                  True, False])
    r = RejectReason
    assert reasons == [r.LATE, r.EXPIRED, r.LATE, r.BAD_AGENT_SIGNATURE, None, None]
    assert valid.tolist() == [False, False, False, False, True, True]
    assert ledger.rejected_by_reason["late"] == 2 and ledger.rejected_by_reason["expired"] == 1
    assert ledger.rejected == 4 and ledger.verified == 2
    (entry,) = [e for e in audit.entries if e.kind == "contract_rejected"]
    assert {(x["contract_id"], x["reason"]) for x in entry.fields["rejections"]} == {
        (old[0].contract.contract_id, "late"), (old[1].contract.contract_id, "expired"),
        (old[2].contract.contract_id, "late"),
        (old[3].contract.contract_id, "bad_agent_signature")}
    # without own_copies (or with none vouched for) it is expired, as before
    ledger2 = ContractLedger(registry, rng=4)
    again = ledger2.issue(0, [0], [0.5], 40.0, 10.0, 11.0)
    assert ledger2.verify_batch(again, 11.0)[1] == [r.EXPIRED]


def test_an_earlier_epochs_contract_is_never_late() -> None:
    """A contract of an earlier epoch (episode), vouched for or not, is not this ledger's
    issue of this epoch: an ended window makes it ``expired``, never ``late``."""
    _registry, ledger, signed = _setup()
    ledger.reset_replay_window()   # a new episode: a new epoch tag
    assert ledger.verify_batch(signed[:1], 11.0, own_copies=[True])[1] == [
        RejectReason.EXPIRED]
    fresh = ledger.issue(1, [0], [0.5], 40.0, 11.0, 12.0)
    assert ledger.verify_batch(fresh, 12.0, own_copies=[True])[1] == [RejectReason.LATE]


def test_own_copies_must_match_the_batch() -> None:
    _registry, ledger, signed = _setup()
    with pytest.raises(ValueError, match=r"own_copies has 1 items; it must match signed \(4\)"):
        ledger.verify_batch(signed, 10.5, own_copies=[True])
