"""Screening a contract of the last issue() batch: checked over the bytes issue() signed only
while the contract still holds the very objects issue() stored (ContractLedger._screen)."""

from __future__ import annotations

import numpy as np
import pytest

from gridswarm_env.trust import TRUST_MODES, ContractLedger, IdentityRegistry, RejectReason
from tests.test_trust import count_signature_checks

AGENTS = [f"der_{i}" for i in range(6)]


def _ledger(mode: str) -> tuple[IdentityRegistry, ContractLedger, list[int]]:
    """A ledger whose registry counts the signatures it checks (batch sizes)."""
    registry = IdentityRegistry(AGENTS, mode=mode, seed=5, crypto_threads=1)
    checked = count_signature_checks(registry)
    return registry, ContractLedger(registry, rng=3), checked


def _issue(ledger: ContractLedger, round_index: int = 0):
    n = len(AGENTS)
    return ledger.issue(round_index, np.arange(n), np.linspace(-1.0, 1.0, n), 0.0, 10.0, 11.0)


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_issued_contracts_are_still_signature_checked_on_screening(mode):
    registry, ledger, checked = _ledger(mode)
    signed = _issue(ledger)
    wrong = list(AGENTS)
    wrong[2] = AGENTS[3]
    reasons = ledger.screen_batch(signed, 10.0, wrong)
    # every signature checked with the keys (the expected-agent mismatch before any check)
    assert checked == [len(signed) - 1]
    assert reasons == [None, None, RejectReason.WRONG_AGENT, *[None] * (len(signed) - 3)]
    # a forged signature of an issued contract is caught on screening
    signed = _issue(ledger, 1)
    forged = bytes(registry.signature_length)
    object.__setattr__(signed[0], "agent_signature", forged)
    object.__setattr__(signed[1], "operator_signature", forged)
    assert ledger.screen_batch(signed, 10.0)[:3] == [
        RejectReason.BAD_AGENT_SIGNATURE, RejectReason.BAD_OPERATOR_SIGNATURE, None]


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_a_contract_changed_after_issue_is_encoded_afresh(mode):
    # -0.0 == 0.0 but encodes differently (a forgery); an equal str copy encodes the same
    _, ledger, checked = _ledger(mode)
    signed = _issue(ledger)
    object.__setattr__(signed[0].contract, "price_per_mwh", -0.0)
    cid = signed[1].contract.contract_id
    copy = "".join(list(cid))
    assert copy == cid and copy is not cid
    object.__setattr__(signed[1].contract, "contract_id", copy)
    object.__setattr__(signed[2].contract, "power_mw", 99.0)
    reasons = ledger.screen_batch(signed, 10.0)
    assert checked == [len(signed)]
    assert reasons == [RejectReason.BAD_AGENT_SIGNATURE, None, RejectReason.BAD_AGENT_SIGNATURE,
                       *[None] * (len(signed) - 3)]
    # dispatch agrees, from the screening verdicts
    assert ledger.verify_batch(signed, 10.5)[1] == reasons
    assert checked == [len(signed), 0]


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_only_the_last_batch_and_each_contract_once(mode):
    _, ledger, checked = _ledger(mode)
    first = _issue(ledger)
    second = _issue(ledger, 1)   # replaces the first batch's entries
    n = len(AGENTS)
    assert ledger.screen_batch([*first, *second, second[0]], 10.0) == [None] * (2 * n + 1)
    assert checked == [2 * n + 1]
    ledger.reset_replay_window()   # a new episode: the old contracts are replays
    assert ledger.screen_batch(_issue(ledger, 2)[:1] + second[:1], 10.0) == [
        None, RejectReason.REPLAYED]


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_dispatch_without_screening_checks_issued_contracts_too(mode):
    _, ledger, checked = _ledger(mode)
    signed = _issue(ledger)
    object.__setattr__(signed[0].contract, "window_end_s", 12.0)   # a longer window
    valid, reasons = ledger.verify_batch(signed, 10.5)
    assert checked == [len(signed)]
    assert reasons == [RejectReason.BAD_AGENT_SIGNATURE, *[None] * (len(signed) - 1)]
    assert valid.tolist() == [False, *[True] * (len(signed) - 1)]


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_an_unchanged_issued_batch_is_not_encoded_again(mode, monkeypatch):
    """The memo is used: screening and dispatch of the batch just issued encode nothing
    (each signature still checked with the keys); a contract changed since is encoded."""
    from gridswarm_env.trust import contracts  # where issue/_screen look the header up

    _, ledger, checked = _ledger(mode)
    real = contracts._CONTRACT_HEADER
    packed: list[int] = []

    class CountingHeader:
        size = real.size

        def pack(self, *fields):
            packed.append(1)
            return real.pack(*fields)

        def unpack_from(self, *args, **kwargs):
            return real.unpack_from(*args, **kwargs)

    n = len(AGENTS)
    signed = _issue(ledger)
    monkeypatch.setattr(contracts, "_CONTRACT_HEADER", CountingHeader())
    assert ledger.screen_batch(signed, 10.0) == [None] * n
    assert packed == [] and checked == [n]
    monkeypatch.setattr(contracts, "_CONTRACT_HEADER", real)
    unscreened = _issue(ledger, 1)
    object.__setattr__(unscreened[0].contract, "power_mw", 0.25)   # changed: encoded afresh
    monkeypatch.setattr(contracts, "_CONTRACT_HEADER", CountingHeader())
    assert ledger.verify_batch(unscreened, 10.5)[1] == [
        RejectReason.BAD_AGENT_SIGNATURE, *[None] * (n - 1)]
    assert packed == [1] and checked == [n, n]
