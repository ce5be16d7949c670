"""IATP trust layer: identities, signed contracts, verification and the audit chain.

Implements DESIGN.md section 5. Nothing is dispatched without a contract that is
signed by the DER agent *and* countersigned by the grid operator, presented inside
its delivery window, and never seen before.

Pieces
------
``IdentityRegistry`` (:mod:`~gridswarm_env.trust.identities`)
    One key per identity (every agent and the operator). ``mode="ed25519"`` uses
    Ed25519 key pairs (RFC 8032), signed and verified with libsodium (PyNaCl) or
    ``cryptography`` (OpenSSL) — the same signature bytes, libsodium ~1.8x faster per
    contract, and with libsodium (which releases the GIL) each large enough batch of
    signatures is shared by the calling thread and a worker thread
    (``crypto_threads``); ``mode="hmac"`` uses one
    32-byte HMAC-SHA256 key per identity (RFC 2104), a faster symmetric mode for
    training in which the verifier holds every key. Keys are derived from ``seed``
    with HKDF-SHA256 (RFC 5869) so that a seed gives bit-identical signatures (such
    keys are only as secret as the seed is unguessable, see :func:`derive_key_bytes`);
    ``seed=None`` draws keys from ``os.urandom``. Private keys never leave the
    registry: no public attribute holds key bytes, ``repr()`` shows none, pickling is
    refused.
``Contract`` / ``SignedContract`` (:mod:`~gridswarm_env.trust.contracts`)
    An award with an unambiguous, versioned binary encoding
    (:meth:`Contract.canonical_bytes`) over which both parties sign.
``ContractLedger`` (:mod:`~gridswarm_env.trust.contracts`)
    The operator's signing and verification pipeline with replay protection and
    counters; optionally writes batch entries to an :class:`AuditLog`.
``Adversary`` (:mod:`~gridswarm_env.trust.adversary`)
    Builds tampered variants of a genuine contract (forged signature, altered power
    or price, replay, expired, wrong key, unknown identity, another agent,
    malformed) for tests and demos, without touching any private key.
``AuditLog`` (:mod:`~gridswarm_env.trust.audit_chain`)
    Append-only SHA-256 hash chain of entries, optionally streamed as JSONL, with a
    verifier that reports the first altered, removed, inserted or reordered entry.

The verification order, the one-shot acceptance and the bounded replay memory are
described in :mod:`~gridswarm_env.trust.contracts`; the audit file format and the
verifier's verdicts in :mod:`~gridswarm_env.trust.audit_chain`.

Modules
-------
One module per responsibility; they import one another in one direction only:
``identities`` <- ``audit_chain`` (a signed head uses a registry's key) <- ``contracts``
(a ledger writes to an audit log) <- ``adversary``. Every public name is importable
from this package (``from gridswarm_env.trust import ContractLedger``), as are the
private helpers other modules of the project use. Module-level state (the crypto
worker pool) lives in :mod:`~gridswarm_env.trust.identities`; code that replaces a
private helper (a test's monkeypatch) must patch the module that looks it up, e.g.
``gridswarm_env.trust.identities._spread``, not this package.
"""

from __future__ import annotations

from gridswarm_env.trust.adversary import Adversary, Attack
from gridswarm_env.trust.audit_chain import (
    AUDIT_KINDS,
    AUDIT_PROBLEMS,
    GENESIS_HASH,
    AuditEntry,
    AuditLog,
    AuditVerification,
    verify_audit_file,
)
from gridswarm_env.trust.contracts import (
    CONTRACT_FORMAT_VERSION,
    PRODUCTS,
    Contract,
    ContractLedger,
    RejectReason,
    SignedContract,
    contracts_digest,
)
from gridswarm_env.trust.identities import (
    ED25519_BACKENDS,
    TRUST_MODES,
    IdentityRegistry,
    UnknownIdentityError,
    default_ed25519_backend,
    derive_key_bytes,
    signature_length,
)

# isort: split
# Importable from here as from the single module trust.py was, outside __all__ as then:
# the other public names, and the private helpers used elsewhere in the project (env.py,
# audit.py, demo.py, policies/cli_checks.py, train, benchmarks/bench_trust.py, tests).
# Names tests replace (_spread, _worker_pool, _CONTRACT_HEADER) are deliberately not
# here: a patch of the package would not reach the module that looks them up.
from gridswarm_env.trust.audit_chain import EMPTY_AUDIT_FILE as EMPTY_AUDIT_FILE
from gridswarm_env.trust.audit_chain import MAX_ENTRY_LINE_BYTES as MAX_ENTRY_LINE_BYTES
from gridswarm_env.trust.audit_chain import MAX_ENTRY_NESTING as MAX_ENTRY_NESTING
from gridswarm_env.trust.audit_chain import MAX_ENTRY_VALUES as MAX_ENTRY_VALUES
from gridswarm_env.trust.audit_chain import _canonical_json as _canonical_json
from gridswarm_env.trust.audit_chain import _ed25519_point_is_valid as _ed25519_point_is_valid
from gridswarm_env.trust.audit_chain import _head_message as _head_message
from gridswarm_env.trust.audit_chain import _json_str_list as _json_str_list
from gridswarm_env.trust.audit_chain import check_new_audit_file as check_new_audit_file
from gridswarm_env.trust.audit_chain import open_file_reason as open_file_reason
from gridswarm_env.trust.audit_chain import weak_public_key_problem as weak_public_key_problem
from gridswarm_env.trust.contracts import _describe_id as _describe_id
from gridswarm_env.trust.contracts import audit_contract_id as audit_contract_id
from gridswarm_env.trust.identities import _HmacSha256Key as _HmacSha256Key
from gridswarm_env.trust.identities import _usable_cpus as _usable_cpus

__all__ = [
    "AUDIT_KINDS",
    "AUDIT_PROBLEMS",
    "CONTRACT_FORMAT_VERSION",
    "ED25519_BACKENDS",
    "GENESIS_HASH",
    "PRODUCTS",
    "TRUST_MODES",
    "Adversary",
    "Attack",
    "AuditEntry",
    "AuditLog",
    "AuditVerification",
    "Contract",
    "ContractLedger",
    "IdentityRegistry",
    "RejectReason",
    "SignedContract",
    "UnknownIdentityError",
    "contracts_digest",
    "default_ed25519_backend",
    "derive_key_bytes",
    "signature_length",
    "verify_audit_file",
]
