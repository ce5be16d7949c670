"""Trust-layer behaviours the rest of the suite let change unnoticed (hand-made mutation audit).

Each test pins one rule of the :mod:`gridswarm_env.trust` module docstring on both
verification paths a user reaches: :meth:`ContractLedger.verify` (one contract) and
:meth:`ContractLedger.verify_batch` (the batch the environment uses every step, which
decides in its own loop), with contracts issued by the ledger or signed by both
parties through the registry (no mocked crypto).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from gridswarm_env import audit as audit_cli
from gridswarm_env.trust import (
    AuditLog,
    ContractLedger,
    IdentityRegistry,
    RejectReason,
    SignedContract,
    verify_audit_file,
)

AGENTS = ["der_0", "der_1", "der_2", "der_3"]


def _ledger(audit: AuditLog | None = None) -> tuple[IdentityRegistry, ContractLedger]:
    registry = IdentityRegistry(AGENTS, seed=11, crypto_threads=1)
    return registry, ContractLedger(registry, rng=3, audit=audit)


def _issue(ledger: ContractLedger, start_s: float = 10.0, end_s: float = 11.0):
    n = len(AGENTS)
    return ledger.issue(0, np.arange(n), np.full(n, 0.5), 40.0, start_s, end_s)


def _one(ledger: ContractLedger, signed: SignedContract, now_s: float):
    return ledger.verify(signed, now_s)


def _batch(ledger: ContractLedger, signed: SignedContract, now_s: float):
    valid, reasons = ledger.verify_batch([signed], now_s)
    assert bool(valid[0]) is (reasons[0] is None)
    return reasons[0]


PATHS = pytest.mark.parametrize("present", [_one, _batch], ids=["verify", "verify_batch"])


@PATHS
def test_window_opens_tolerance_s_before_its_start(present) -> None:
    """``window_start_s - tolerance_s <= now_s``: 10.0 - 0.05 s is the first valid instant."""
    _, ledger = _ledger()
    signed = _issue(ledger, 10.0, 11.0)
    tol = ledger.tolerance_s
    assert tol == 0.05
    assert present(ledger, signed[0], math.nextafter(10.0 - tol, 0.0)) is RejectReason.NOT_YET_VALID
    assert present(ledger, signed[0], 10.0 - tol) is None
    assert present(ledger, signed[1], 10.0 - tol / 2) is None


@PATHS
def test_window_end_is_exclusive_and_time_cannot_be_rewound(present) -> None:
    """Expiry is judged against the ledger clock (the highest ``now_s`` seen): once the
    ledger has seen ``window_end_s``, presenting a contract with an earlier ``now_s`` does
    not bring its window back."""
    _, ledger = _ledger()
    signed = _issue(ledger, 10.0, 11.0)
    assert present(ledger, signed[0], math.nextafter(11.0, 0.0)) is None
    assert present(ledger, signed[1], 11.0) is RejectReason.EXPIRED
    assert ledger.clock_s == 11.0
    assert present(ledger, signed[2], 10.5) is RejectReason.EXPIRED
    assert ledger.rejected_by_reason["expired"] == 2


@PATHS
def test_a_contract_id_is_accepted_once_even_under_a_fresh_nonce(present) -> None:
    """"each contract id and each nonce is accepted once": a second contract with an
    accepted id, a fresh nonce of this epoch and valid signatures of both parties is a
    replay (and audited as one)."""
    audit = AuditLog()
    registry, ledger = _ledger(audit)
    first = _issue(ledger)[0]
    assert present(ledger, first, 10.5) is None
    nonce = first.contract.nonce[:4] + bytes(12)   # this epoch's tag, a nonce never used
    assert nonce != first.contract.nonce
    again = replace(first.contract, nonce=nonce, power_mw=2.0)
    message = again.canonical_bytes()
    resigned = SignedContract(again, registry.sign(again.agent_id, message),
                              registry.sign(registry.operator_id, message))
    assert present(ledger, resigned, 10.6) is RejectReason.REPLAYED
    rejected = [e for e in audit.entries if e.kind == "contract_rejected"]
    assert rejected[-1].fields["rejections"] == [
        {"contract_id": first.contract.contract_id, "reason": "replayed"}]


@PATHS
@pytest.mark.parametrize("start_s, end_s", [(10.0, math.inf), (10.0, math.nan), (10.5, 10.2)],
                         ids=["never_ends", "nan_end", "ends_before_it_starts"])
def test_a_window_slipped_in_behind_validation_is_malformed_even_when_signed(
        present, start_s: float, end_s: float) -> None:
    """A window no :class:`Contract` can hold (an infinite or NaN end, or ``end <= start``),
    set behind the frozen fields and then signed by *both* parties, is ``malformed``: it is
    not accepted (an infinite end would never expire) and uses nothing up."""
    registry, ledger = _ledger()
    genuine = _issue(ledger)[0]
    contract = replace(genuine.contract)
    object.__setattr__(contract, "window_start_s", start_s)
    object.__setattr__(contract, "window_end_s", end_s)
    message = contract.canonical_bytes()
    signed = SignedContract(contract, registry.sign(contract.agent_id, message),
                            registry.sign(registry.operator_id, message))
    assert present(ledger, signed, 10.5) is RejectReason.MALFORMED
    assert ledger.replay_memory_size == 0
    assert present(ledger, genuine, 10.5) is None


# --------------------------------------------------------------------------- audit chain
def _entry_line(entry: dict) -> str:
    """The canonical JSONL line of ``entry`` with its hash recomputed (a forger's rewrite)."""
    body = json.dumps({k: entry[k] for k in ("fields", "index", "kind", "prev_hash")},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(body.encode("ascii")).hexdigest()
    entry["hash"] = digest
    return body[:-1] + ',"hash":"' + digest + '"}\n'


def _streamed_log(path, n: int, **kwargs) -> AuditLog:
    log = AuditLog(path, **kwargs)
    for i in range(n):
        log.append("contract_verified", now_s=float(i), count=1, contract_ids=[f"c-{i}"])
    log.flush()
    return log


def test_in_process_verify_reports_a_file_cut_by_one_whole_entry_as_truncated(tmp_path) -> None:
    """The writer knows it wrote 6 entries: a file cut at the last entry boundary (a
    self-consistent chain of 5) is ``truncated`` at entry 5, not a changed head."""
    path = tmp_path / "audit.jsonl"
    log = _streamed_log(path, 6)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    assert verify_audit_file(path).ok     # without the writer nothing shows the cut
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, 5, "truncated")


def test_a_head_only_log_detects_its_last_entry_rewritten_with_a_recomputed_hash(
        tmp_path) -> None:
    """With ``keep_entries=False`` the log keeps only its head hash and count: a last
    entry rewritten with a recomputed hash (a self-consistent file) is ``altered`` at its
    index because the head differs from the log's."""
    path = tmp_path / "audit.jsonl"
    log = _streamed_log(path, 4, keep_entries=False)
    lines = path.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    last["fields"]["count"] = 99
    lines[-1] = _entry_line(last)
    path.write_text("".join(lines))
    assert verify_audit_file(path).ok
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, 3, "altered")


@pytest.mark.parametrize("mode, backend", [("hmac", None), ("ed25519", "cryptography"),
                                           ("ed25519", "libsodium")])
def test_verify_signature_refuses_a_signature_of_the_wrong_type_or_length(
        mode: str, backend: str | None) -> None:
    """"signatures of the wrong type or length give False": the right bytes in a
    ``bytearray`` (or with a byte added) are no signature, whatever the backend accepts."""
    registry = IdentityRegistry(AGENTS, mode=mode, seed=5, ed25519_backend=backend)
    message = b"gridswarm"
    signature = registry.sign("der_1", message)
    assert registry.verify_signature("der_1", message, signature) is True
    for wrong in (bytearray(signature), memoryview(signature), signature + b"\x00",
                  signature[:-1], signature.hex()):
        assert registry.verify_signature("der_1", message, wrong) is False, type(wrong)
    assert registry.verify_signature("der_2", message, signature) is False


def test_a_line_with_a_negative_index_is_malformed_at_its_position(tmp_path) -> None:
    """An index must be a non-negative int: a third line claiming index −1 (hash
    recomputed, linked to its predecessor) is no entry, ``malformed`` at entry 2."""
    path = tmp_path / "audit.jsonl"
    _streamed_log(path, 4).close()
    lines = path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["index"] = -1
    lines[2] = _entry_line(entry)
    path.write_text("".join(lines))
    result = verify_audit_file(path)
    assert (result.ok, result.index, result.problem, result.n_entries) == (
        False, 2, "malformed", 2)


# --------------------------------------------------------------------------- command line
def test_cli_refuses_a_public_key_longer_than_32_bytes(tmp_path, capsys) -> None:
    """``--public-key`` must be exactly 64 hex digits: 66 digits (33 bytes) is a usage
    error (exit 2, a clear message), not a traceback from the verifier."""
    path = tmp_path / "audit.jsonl"
    _streamed_log(path, 2).close()
    assert audit_cli.main(["verify", str(path), "--public-key", "ab" * 33]) == audit_cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "--public-key must be 64 hex digits" in err and "'" + "ab" * 33 + "'" in err


def test_an_intact_but_empty_chain_does_not_exit_ok() -> None:
    """:func:`exit_status` gives ``EXIT_OK`` only for an intact, *non-empty* chain: the
    writer's own verdict on an empty log (ok, 0 entries) verifies nothing."""
    empty = AuditLog().verify()
    assert empty.ok and empty.n_entries == 0
    assert audit_cli.exit_status(empty) == audit_cli.EXIT_BROKEN
    log = AuditLog()
    log.append("emergency", now_s=1.0)
    assert audit_cli.exit_status(log.verify()) == audit_cli.EXIT_OK


def test_an_audited_rejection_never_reads_a_non_contract_s_attributes() -> None:
    """A :class:`SignedContract` holding some other object is ``malformed``; with an audit
    log attached the rejection is written as ``<malformed>`` without reading the object's
    ``contract_id`` (an adversary's property: it used to run, and its exception escaped
    ``verify`` and ``verify_batch``, stopping the caller's step)."""
    calls = []

    class Hostile:
        @property
        def contract_id(self) -> str:
            calls.append(1)
            raise RuntimeError("presented by an adversary")

    class Pretender:
        contract_id = "c-0-der_0-0"   # an id the audit must not repeat as if it were one

    audit = AuditLog()
    _, ledger = _ledger(audit)
    genuine = _issue(ledger)[0]
    hostile = SignedContract(Hostile(), b"\x00" * 64, b"\x00" * 64)
    pretender = SignedContract(Pretender(), b"\x00" * 64, b"\x00" * 64)
    assert ledger.verify(hostile, 10.5) is RejectReason.MALFORMED
    _, reasons = ledger.verify_batch([hostile, pretender, genuine], 10.5)
    assert reasons == [RejectReason.MALFORMED, RejectReason.MALFORMED, None]
    assert calls == []
    rejected = [e.fields["rejections"] for e in audit.entries if e.kind == "contract_rejected"]
    assert rejected == [[{"contract_id": "<malformed>", "reason": "malformed"}],
                        [{"contract_id": "<malformed>", "reason": "malformed"}] * 2]
    assert ledger.rejected_by_reason["malformed"] == 3
