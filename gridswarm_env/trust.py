"""IATP trust layer: identities, signed contracts, verification and the audit chain.

Implements DESIGN.md section 5. Nothing is dispatched without a contract that is
signed by the DER agent *and* countersigned by the grid operator, presented inside
its delivery window, and never seen before.

Pieces
------
``IdentityRegistry``
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
``Contract`` / ``SignedContract``
    An award with an unambiguous, versioned binary encoding
    (:meth:`Contract.canonical_bytes`) over which both parties sign.
``ContractLedger``
    The operator's signing and verification pipeline with replay protection and
    counters; optionally writes batch entries to an :class:`AuditLog`.
``Adversary``
    Builds tampered variants of a genuine contract (forged signature, altered power
    or price, replay, expired, wrong key, unknown identity, another agent,
    malformed) for tests and demos, without touching any private key.
``AuditLog``
    Append-only SHA-256 hash chain of entries, optionally streamed as JSONL, with a
    verifier that reports the first altered, removed, inserted or reordered entry.

Verification (:meth:`ContractLedger.verify`) reports the first failing check in
this order::

    malformed -> unknown_identity -> wrong_agent -> bad_agent_signature
      -> bad_operator_signature -> not_yet_valid / expired -> replayed

Only a :class:`SignedContract` holding a :class:`Contract` -- exactly these classes,
with ``str``/``int``/``float``/``bytes`` fields -- can pass; anything else is
``malformed``, so the bytes verified are always those ``Contract.canonical_bytes``
encodes from the very field values dispatch then reads (a subclass could otherwise
answer with another contract's bytes).

Signatures are checked before the window and the replay memory, so a forged
contract is always reported with a signature reason and an unauthenticated
contract never touches (or burns an id in) the replay memory. A contract is valid
for ``window_start_s - tolerance_s <= now_s < window_end_s``; acceptance is
one-shot: each contract id and each nonce is accepted once.

Replay memory stays bounded: an accepted id/nonce is remembered only while its
window is open (until the ledger clock reaches ``window_end_s``); after that the
contract is rejected as expired anyway. The ledger clock is the high-water mark of
the ``now_s`` values seen and expiry is judged against it (a contract is expired
once the ledger has seen ``now_s >= window_end_s``), so time cannot be rewound to
replay a forgotten contract; "not yet valid" is judged against the ``now_s`` given.
Episodes restart simulated time: call :meth:`ContractLedger.reset_replay_window` at
every environment reset. It clears the memory and draws a new 4-byte *epoch tag*
that prefixes every nonce, so contracts issued in an earlier episode are rejected as
``replayed`` even though their ids were forgotten. A tag is never handed out twice under
one registry's keys (the registry remembers them, whichever ledger drew them), so this
holds also for a new ledger per episode, as the environment builds, while the
environment keeps that registry. A registry built anew remembers none of the earlier
tags: with seeded keys the environment builds one at every reset with another seed, so
``reset(seed=0)``, ``reset(seed=1)``, ``reset(seed=0)`` gives the first and third
episode the same keys, and their tags differ only by chance (4 random bytes drawn per
episode: a collision, which would let a contract of the first pass in the third, has
probability 2**-32 per pair of episodes).

Audit chain
-----------
Each JSONL line is ``{"index", "kind", "fields", "prev_hash", "hash"}`` with
``hash = SHA-256(canonical JSON of the entry without "hash")`` (sorted keys, no
whitespace, ASCII) and ``prev_hash`` the previous entry's hash (64 zeros for the
first). A ``contract_signed`` entry records what was signed as ``contracts_sha256``
(:func:`contracts_digest`). The verifier walks the lines in order and reports the first problem, at the
chain index where it occurs:

* ``malformed``: a line that is not an entry (bad JSON, keys, types, NaN);
* ``truncated``: an unterminated, unparseable last line (a cut write); with a public
  key (or registry), a chain that does not end with a valid ``head_signed`` entry, or
  (unless ``allow_open``) one ending with a valid head that is not the writer's
  *closing* head (``final: true``, :meth:`AuditLog.sign_head`); in process, fewer
  entries than the log wrote;
* ``altered``: an entry whose content does not match its own hash; an entry
  rewritten *with* a recomputed hash (its successor's ``prev_hash`` no longer
  matches, or it differs from the copy kept in memory); a signed head whose
  signature fails (it signs the head entry's own fields too, so an edited last
  head, which has no successor to show it, fails as well);
* ``removed``: an index is skipped and the missing entry does not appear later;
* ``reordered``: an index is skipped, the missing entry appears later, and the
  out-of-place entry links into the chain (its predecessor is in the file);
* ``inserted``: an extra entry: a duplicate, a second entry claiming an index that
  links to the same predecessor (the one the chain does not continue from), an
  entry reusing an old index or one that links nowhere, or any entry after a
  closing head (a closed log takes no more);
* ``empty``: an audit file with no entries at all (:func:`verify_audit_file`; a file
  cut to 0 bytes looks the same).

Without keys a forger who rewrites a whole suffix (recomputing every hash) or
cuts the tail at an entry boundary leaves a self-consistent chain; a signed head
over the final hash and its own fields (:meth:`AuditLog.sign_head`, checked with the
operator's public key) or the writer's in-process :meth:`AuditLog.verify` detects both.
A file may hold several signed heads (the environment signs one at every episode's
end); only the writer's last one, signed when the file is finished, is marked
``final`` (inside the signed bytes, format ``gridswarm-audit-head-v3``), so a file cut
right after an earlier head is told apart from a finished one. Heads of the v2 format
(written before closing heads existed) still verify, but cannot show that.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import heapq
import hmac
import json
import math
import os
import re
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from hashlib import sha256
from itertools import repeat
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

try:   # libsodium (through PyNaCl): the same RFC 8032 signatures, ~1.9x faster than OpenSSL
    from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
    from nacl.exceptions import BadSignatureError
except ImportError:   # pragma: no cover - PyNaCl is a dependency; this keeps a bare install working
    crypto_sign = None

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

TRUST_MODES = ("ed25519", "hmac")
"""Signature schemes: Ed25519 (RFC 8032, default) or HMAC-SHA256 (RFC 2104)."""

ED25519_BACKENDS = ("libsodium", "cryptography")
"""Libraries that can compute Ed25519 (RFC 8032) signatures. Both give the same bytes
(Ed25519 is deterministic) and verify each other's signatures; ``"libsodium"`` (through
PyNaCl) signs ~1.6x and verifies ~1.9x faster than ``"cryptography"`` (OpenSSL)."""

PRODUCTS = ("energy", "reserve")
"""Market products a contract can be for (DESIGN.md section 7)."""

_SIGNATURE_LENGTH = {"ed25519": 64, "hmac": 32}
_KEY_DERIVATION_SALT = b"gridswarm-iatp-key-derivation-v1"
_MAX_STRING_BYTES = 0xFFFF
_FAST_STRING_CHARS = _MAX_STRING_BYTES // 4  # UTF-8 needs at most 4 bytes per character
_NONCE_BYTES = 16
_EPOCH_TAG_BYTES = 4
_PRODUCT_BYTES = {p: p.encode("utf-8") for p in PRODUCTS}
#: bytes a ledger draws from its generator at a time (a multiple of 4, see _random_bytes)
_RANDOM_POOL_BYTES = 4096


def signature_length(mode: str) -> int:
    """Length in bytes of a signature (Ed25519: 64) or tag (HMAC-SHA256: 32).

    :param mode: one of :data:`TRUST_MODES`.
    :return: the signature length in bytes.
    :raises ValueError: for an unknown mode.
    """
    _check_mode(mode)
    return _SIGNATURE_LENGTH[mode]


def _check_mode(mode: object) -> str:
    if mode not in TRUST_MODES:
        raise ValueError(f"mode={mode!r} is not a trust mode; allowed: {', '.join(TRUST_MODES)}")
    return str(mode)


def _as_generator(rng: np.random.Generator | int | None, name: str = "rng") -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, Integral) and not isinstance(rng, bool) and int(rng) >= 0):
        return np.random.default_rng(None if rng is None else int(rng))
    raise ValueError(f"{name}={rng!r} must be a numpy.random.Generator, a non-negative int or None")


# --------------------------------------------------------------------------- identities


class UnknownIdentityError(KeyError):
    """Raised when an identity that is not registered is asked to sign."""


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract then expand ``length`` <= 32 bytes."""
    prk = hmac.digest(salt, ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")[:length]


def derive_key_bytes(seed: int, identity: str, mode: str = "ed25519") -> bytes:
    """Derive an identity's 32 private key bytes from a simulation seed.

    ``HKDF-SHA256(ikm = decimal(seed), salt = "gridswarm-iatp-key-derivation-v1",
    info = mode || 0x00 || utf8(identity))`` (RFC 5869). In ``"ed25519"`` mode the
    bytes are the RFC 8032 private key seed; in ``"hmac"`` mode they are the HMAC key.
    Seeded keys make runs reproducible but are no secret: anyone who knows the seed
    derives every key, and a seed need not be disclosed to be known. Simulation seeds
    are small integers, and one public key (or one signed contract) lets a search over
    seeds find it: one derivation and key pair per candidate, ~8 000 seeds/s on one
    core (seed 48 213 found from the operator's public key in 6 s; every seed below
    10**6 in ~2 min). Two environments built with one seed also share every key (and
    their nonces' epoch tags, episode by episode): a contract of one is accepted by
    the other in the episode of the same number. Use
    ``seed=None`` (``os.urandom``) in a registry whenever the keys must be secret.

    :param seed: non-negative integer seed.
    :param identity: identity name (agent id or operator id).
    :param mode: one of :data:`TRUST_MODES`.
    :return: 32 key bytes.
    :raises ValueError: for a negative or non-integer seed or an unknown mode.
    """
    _check_mode(mode)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int or None")
    info = mode.encode("ascii") + b"\x00" + identity.encode("utf-8")
    return _hkdf_sha256(str(int(seed)).encode("ascii"), _KEY_DERIVATION_SALT, info)


class _HmacSha256Key:
    """HMAC-SHA256 with the key's inner/outer pad states precomputed (RFC 2104).

    ``tag(m) = H((K ^ opad) || H((K ^ ipad) || m))``; caching the two hash states
    after the pad block halves the cost of ``hmac.digest`` per message. The object
    keeps only the two hash states (no raw key bytes) and cannot be pickled.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def sign(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, signature: bytes, message: bytes) -> None:
        """Same calling convention as ``Ed25519PublicKey.verify``; the tag is computed as
        in :meth:`sign` (written out: one call fewer per check)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        if not hmac.compare_digest(outer.digest(), signature):
            raise InvalidSignature

    def __repr__(self) -> str:
        return "<HMAC-SHA256 key (secret)>"

    def __getstate__(self) -> None:
        raise TypeError("HMAC keys cannot be pickled")


def default_ed25519_backend() -> str:
    """The Ed25519 library a registry uses unless told otherwise: ``"libsodium"`` when
    PyNaCl is importable (a dependency of this package), else ``"cryptography"``."""
    return "libsodium" if crypto_sign is not None else "cryptography"


def _check_backend(backend: object) -> str:
    if backend is None:
        return default_ed25519_backend()
    if backend not in ED25519_BACKENDS:
        raise ValueError(
            f"ed25519_backend={backend!r} is not an Ed25519 backend; allowed: "
            f"{', '.join(ED25519_BACKENDS)} (or None for the fastest available)"
        )
    if backend == "libsodium" and crypto_sign is None:
        raise ValueError(
            "ed25519_backend='libsodium' needs PyNaCl (pip install pynacl); "
            "use 'cryptography' or None"
        )
    return str(backend)


class _Ed25519SodiumKey:
    """An Ed25519 key pair (RFC 8032) signed and verified with libsodium via PyNaCl.

    ``crypto_sign_seed_keypair(seed)`` gives the same public key as ``cryptography``'s
    ``Ed25519PrivateKey.from_private_bytes(seed)`` and, Ed25519 being deterministic, the
    same signature bytes; libsodium's verification also rejects non-canonical
    encodings and small-order points. The secret key stays in a private slot (as it
    stays inside ``cryptography``'s key object); ``repr()`` hides it and pickling is
    refused. Verification raises ``cryptography``'s ``InvalidSignature``, so both
    backends share one calling convention.
    """

    __slots__ = ("_public", "_secret")

    def __init__(self, seed: bytes) -> None:
        self._public, self._secret = crypto_sign_seed_keypair(seed)

    @property
    def public_bytes_raw(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._secret)[:64]

    def verify(self, signature: bytes, message: bytes) -> None:
        """Same calling convention as ``Ed25519PublicKey.verify``."""
        if type(signature) is not bytes or len(signature) != 64:
            raise InvalidSignature
        try:
            crypto_sign_open(signature + bytes(message), self._public)
        except BadSignatureError:
            raise InvalidSignature from None

    def __repr__(self) -> str:
        return "<Ed25519 key pair (libsodium, secret)>"

    def __getstate__(self) -> None:
        raise TypeError("Ed25519 keys cannot be pickled")


#: smallest batches spread over threads (below them the hand-off, ~30 µs, costs more than
#: a second core saves; measured break-even: ~8 signatures of ~23 µs, 2-3 contracts of
#: two ~63 µs verifications): signatures to make and contracts to check
_PARALLEL_MIN_SIGNATURES = 12
_PARALLEL_MIN_CONTRACTS = 3

_crypto_pool: ThreadPoolExecutor | None = None
_crypto_pool_workers = 0
_crypto_pool_lock = threading.Lock()


def _usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _worker_pool() -> tuple[ThreadPoolExecutor, int]:
    """The process's crypto worker threads and their number (created on first use, one
    fewer than the usable cores; a forked child starts without them, see
    ``os.register_at_fork``)."""
    global _crypto_pool, _crypto_pool_workers
    pool = _crypto_pool
    if pool is None:
        with _crypto_pool_lock:
            if _crypto_pool is None:
                _crypto_pool_workers = max(1, _usable_cpus() - 1)
                _crypto_pool = ThreadPoolExecutor(max_workers=_crypto_pool_workers,
                                                  thread_name_prefix="gridswarm-crypto")
            pool = _crypto_pool
    return pool, _crypto_pool_workers


def _forget_worker_pool() -> None:
    global _crypto_pool
    _crypto_pool = None


os.register_at_fork(after_in_child=_forget_worker_pool)


def _sign_serial(signers: list[Callable[[bytes], bytes]], messages: list[bytes]) -> list[bytes]:
    """``[signers[i](messages[i]) for every i]``, in this thread."""
    return [sign(message) for sign, message in zip(signers, messages, strict=True)]


def _contract_verdict(
    verify: Callable[[bytes, bytes], None],
    operator_verify: Callable[[bytes, bytes], None],
    agent_signature: bytes,
    operator_signature: bytes,
    message: bytes,
) -> int:
    """0 when ``verify`` accepts the agent's signature and ``operator_verify`` the
    operator's over ``message``; 1 when the agent's fails (the operator's is then not
    checked); 2 when only the operator's fails."""
    try:
        verify(agent_signature, message)
    except InvalidSignature:
        return 1
    try:
        operator_verify(operator_signature, message)
    except InvalidSignature:
        return 2
    return 0


def _verify_serial(
    operator_verify: Callable[[bytes, bytes], None],
    verifiers: list[Callable[[bytes, bytes], None]],
    agent_signatures: list[bytes],
    operator_signatures: list[bytes],
    messages: list[bytes],
) -> list[int]:
    """:func:`_contract_verdict` of every contract ``i`` (``verifiers[i]``,
    ``agent_signatures[i]``, ``operator_signatures[i]``, ``messages[i]``), in this
    thread (inlined: the same checks in the same order)."""
    codes: list[int] = []
    add = codes.append
    for verify, agent_sig, operator_sig, message in zip(
            verifiers, agent_signatures, operator_signatures, messages, strict=True):
        try:
            verify(agent_sig, message)
        except InvalidSignature:
            add(1)
            continue
        try:
            operator_verify(operator_sig, message)
        except InvalidSignature:
            add(2)
            continue
        add(0)
    return codes


def _spread(task: Callable[[int], Any], n: int, threads: int) -> list[Any]:
    """``[task(i) for i in range(n)]``, computed by this thread and up to ``threads - 1``
    worker threads at once (never more than the pool has).

    Each thread takes the next index from one shared, locked iterator until none is
    left, so every task runs exactly once and a worker that starts late just takes
    fewer; one that has not started when this thread has done them all (the pool busy
    with another caller's batch) is cancelled, not waited for. The tasks are
    independent and stateless (signatures): one that raises is recorded and the rest
    still run; after every worker has finished, the error of the lowest index is
    raised, as the loop above would raise it. An interrupt in this
    thread stops the workers at their next task. A pool that no longer takes work (the
    interpreter is shutting down) leaves the whole batch to this thread.
    """
    out: list[Any] = [None] * n
    errors: list[tuple[int, Exception]] = []
    indices = iter(range(n))
    lock = threading.Lock()
    stop = False

    def drain() -> None:
        while not stop:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            try:
                out[i] = task(i)
            except Exception as exc:   # noqa: BLE001 - re-raised below, lowest index first
                errors.append((i, exc))

    pool, workers = _worker_pool()
    futures: list[Future[None]] = []
    try:
        try:
            for _ in range(min(threads - 1, workers, n - 1)):
                futures.append(pool.submit(drain))
        except RuntimeError:   # "cannot schedule new futures after (interpreter) shutdown"
            pass
        drain()
    finally:
        stop = True   # only matters when drain() did not finish (an interrupt)
        # a worker that has not started (the pool's threads busy with another caller's
        # batch, e.g. an environment stepping in another thread) would find nothing left:
        # cancel it rather than wait for it to start
        futures = [future for future in futures if not future.cancel()]
        wait_futures(futures)
    for future in futures:
        future.result()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    return out


def _sign_parallel(
    threads: int, signers: list[Callable[[bytes], bytes]], messages: list[bytes]
) -> list[bytes]:
    """:func:`_sign_serial` spread over ``threads`` threads (same output)."""
    n = len(messages)
    if n < _PARALLEL_MIN_SIGNATURES or len(signers) != n:
        return _sign_serial(signers, messages)
    return _spread(lambda i: signers[i](messages[i]), n, threads)


def _verify_parallel(
    threads: int,
    operator_verify: Callable[[bytes, bytes], None],
    verifiers: list[Callable[[bytes, bytes], None]],
    agent_signatures: list[bytes],
    operator_signatures: list[bytes],
    messages: list[bytes],
) -> list[int]:
    """:func:`_verify_serial` spread over ``threads`` threads (same output)."""
    n = len(messages)
    if n < _PARALLEL_MIN_CONTRACTS or not (
        len(verifiers) == len(agent_signatures) == len(operator_signatures) == n
    ):
        return _verify_serial(operator_verify, verifiers, agent_signatures,
                              operator_signatures, messages)
    return _spread(
        lambda i: _contract_verdict(verifiers[i], operator_verify, agent_signatures[i],
                                    operator_signatures[i], messages[i]),
        n, threads)


def _check_crypto_threads(value: object, backend: str | None) -> int:
    """Validate ``crypto_threads``; ``None`` gives 2 where that pays (libsodium, which
    releases the GIL, on a machine with 2 or more usable cores), else 1."""
    if value is None:
        return 2 if backend == "libsodium" and _usable_cpus() >= 2 else 1
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise ValueError(
            f"crypto_threads={value!r} must be an int >= 1 (1 = sign and verify in the "
            "calling thread) or None (2 with libsodium on 2+ cores, else 1)"
        )
    return int(value)


def _utf8_encodable(text: str) -> bool:
    """False for a str with a lone surrogate (``"\\ud800"``), which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class IdentityRegistry:
    """Keys of every agent and of the operator.

    :param agent_ids: agent identity names (unique, non-empty strings).
    :param operator_id: the grid operator's identity name (not among ``agent_ids``).
    :param mode: ``"ed25519"`` (default) or ``"hmac"``, see :data:`TRUST_MODES`.
    :param seed: derive keys with :func:`derive_key_bytes` (reproducible signatures,
        but no secret: a small seed is found from one public key by search, see there);
        ``None`` draws every key from ``os.urandom``.
    :param ed25519_backend: the library that computes Ed25519 signatures in
        ``"ed25519"`` mode, one of :data:`ED25519_BACKENDS`; ``None`` (default) takes
        :func:`default_ed25519_backend`. The backends give identical signatures.
    :param crypto_threads: threads that sign and verify a batch of contracts: the
        calling thread and up to ``crypto_threads - 1`` worker threads of a pool shared
        by the process (one fewer than its usable cores), for batches of 12 or more
        signatures or 3 or more contracts; smaller batches stay in the calling thread.
        ``None`` (default): 2 with libsodium on a machine with 2 or more usable cores —
        libsodium releases the GIL, so the two run at once — else 1. Measured on 2 idle
        cores: signing batches 1.1x the one-thread rate at 10 signatures, 1.3x at 20,
        1.45-1.8x from 46 on; verification 1.3x at 3 contracts, 1.5-1.9x from 20 on. A
        second thread needs a free core (with the other core busy it measured
        0.65-1.04x). Results are identical for every value; with ``cryptography`` or
        HMAC, which hold the GIL, more threads only add hand-off cost.
    :raises ValueError: for an unknown mode or backend, duplicate/empty ids, a bad
        seed or a bad ``crypto_threads``.

    Signing and verification objects are cached per identity; keys live only inside
    them (Ed25519 keys in ``cryptography`` key objects or a private slot of the
    libsodium key object, HMAC keys as precomputed hash states), never in a public
    attribute. ``repr()`` shows no key material and pickling raises ``TypeError``.
    """

    __slots__ = (
        "_agent_id_bytes",
        "_agent_ids",
        "_agent_index",
        "_backend",
        "_crypto_threads",
        "_epoch_lock",
        "_epoch_tags",
        "_index",
        "_max_id_bytes",
        "_mode",
        "_operator_id",
        "_public_raw",
        "_seeded",
        "_sign_many",
        "_signers",
        "_verifiers",
        "_verify_many",
    )

    def __init__(
        self,
        agent_ids: Sequence[str],
        *,
        operator_id: str = "operator",
        mode: str = "ed25519",
        seed: int | None = None,
        ed25519_backend: str | None = None,
        crypto_threads: int | None = None,
    ) -> None:
        self._mode = _check_mode(mode)
        self._backend = _check_backend(ed25519_backend) if self._mode == "ed25519" else None
        self._crypto_threads = threads = _check_crypto_threads(crypto_threads, self._backend)
        # batches: _sign_many(signers, messages) -> the signatures, and
        # _verify_many(operator_verify, agent_verifiers, agent_signatures,
        # operator_signatures, messages) -> a code per contract (0 valid, 1 bad agent
        # signature, 2 bad operator signature); in input order
        if threads == 1:
            self._sign_many = _sign_serial
            self._verify_many = _verify_serial
        else:
            self._sign_many = functools.partial(_sign_parallel, threads)
            self._verify_many = functools.partial(_verify_parallel, threads)
        sodium = self._backend == "libsodium"
        ids = tuple(agent_ids)
        for name in ids:
            if not isinstance(name, str) or not name or not _utf8_encodable(name):
                raise ValueError(
                    f"agent_ids contains {name!r}; every agent id must be a non-empty str "
                    "(encodable as UTF-8: contracts carry it so)"
                )
        if len(set(ids)) != len(ids):
            dup = next(a for a in ids if ids.count(a) > 1)
            raise ValueError(f"agent_ids contains {dup!r} more than once; ids must be unique")
        if not isinstance(operator_id, str) or not operator_id or not _utf8_encodable(operator_id):
            raise ValueError(f"operator_id={operator_id!r} must be a non-empty str "
                             "(encodable as UTF-8: contracts carry it so)")
        if operator_id in ids:
            raise ValueError(
                f"operator_id={operator_id!r} is also an agent id; it must differ from every agent id"
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0
        ):
            raise ValueError(f"seed={seed!r} must be a non-negative int or None")
        self._agent_ids = tuple(str(a) for a in ids)
        self._agent_id_bytes = tuple(a.encode("utf-8") for a in self._agent_ids)
        self._operator_id = str(operator_id)
        self._max_id_bytes = max(
            [len(b) for b in self._agent_id_bytes] + [len(self._operator_id.encode("utf-8"))]
        )
        self._seeded = seed is not None
        identities = (*self._agent_ids, self._operator_id)
        self._index = {name: i for i, name in enumerate(identities)}
        self._agent_index = {name: i for i, name in enumerate(self._agent_ids)}
        signers: list[Callable[[bytes], bytes]] = []
        verifiers: list[Callable[[bytes, bytes], None]] = []
        public_raw: list[bytes] = []
        for name in identities:
            key = os.urandom(32) if seed is None else derive_key_bytes(int(seed), name, self._mode)
            if sodium:
                pair = _Ed25519SodiumKey(key)
                signers.append(pair.sign)
                verifiers.append(pair.verify)
                public_raw.append(pair.public_bytes_raw)
            elif self._mode == "ed25519":
                private = Ed25519PrivateKey.from_private_bytes(key)
                public = private.public_key()
                signers.append(private.sign)
                verifiers.append(public.verify)
                public_raw.append(public.public_bytes_raw())
            else:
                secret = _HmacSha256Key(key)
                signers.append(secret.sign)
                verifiers.append(secret.verify)
            del key
        self._signers = tuple(signers)
        self._verifiers = tuple(verifiers)
        self._public_raw = tuple(public_raw)
        # the nonce epoch tags ledgers have claimed under these keys (see _claim_epoch_tag)
        self._epoch_tags: set[int] = set()
        self._epoch_lock = threading.Lock()

    def _claim_epoch_tag(self, tag: bytes) -> bool:
        """Reserve ``tag`` for one epoch of one :class:`ContractLedger` using these keys.

        A contract's nonce starts with the epoch tag of the ledger that issued it, and a
        ledger refuses (as ``replayed``) every nonce without its own tag: that is what
        keeps a contract of an earlier episode (a ledger per episode, the same keys) or of
        another ledger from being accepted. Tags are random 4-byte draws, so two epochs
        could draw the same one (for each pair 2**-32: likely once ~10**5 episodes share
        the keys); the registry therefore remembers every tag claimed under its keys and
        a ledger draws again until its tag is new. Memory: one small int per epoch
        (under 100 bytes; a new registry, e.g. new seeded keys, starts empty).

        :return: True if ``tag`` was free (it is now taken), False if already claimed.
        """
        value = int.from_bytes(tag, "big")
        with self._epoch_lock:
            if value in self._epoch_tags:
                return False
            self._epoch_tags.add(value)
            return True

    # -- read-only description
    @property
    def mode(self) -> str:
        """The signature scheme, one of :data:`TRUST_MODES`."""
        return self._mode

    @property
    def ed25519_backend(self) -> str | None:
        """The library computing Ed25519 signatures (one of :data:`ED25519_BACKENDS`);
        ``None`` in ``"hmac"`` mode."""
        return self._backend

    @property
    def crypto_threads(self) -> int:
        """Threads that sign and verify a batch of contracts (see the class docstring)."""
        return self._crypto_threads

    @property
    def agent_ids(self) -> tuple[str, ...]:
        """Agent identity names, in registration order."""
        return self._agent_ids

    @property
    def operator_id(self) -> str:
        """The operator's identity name."""
        return self._operator_id

    @property
    def identities(self) -> tuple[str, ...]:
        """All identities: the agents then the operator."""
        return (*self._agent_ids, self._operator_id)

    @property
    def signature_length(self) -> int:
        """Signature length in bytes for this registry's mode."""
        return _SIGNATURE_LENGTH[self._mode]

    def __contains__(self, identity: object) -> bool:
        return identity in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _position(self, identity: str) -> int:
        try:
            return self._index[identity]
        except (KeyError, TypeError):
            raise UnknownIdentityError(f"identity {identity!r} is not registered") from None

    # -- keys and signatures
    def public_key_bytes(self, identity: str) -> bytes:
        """Raw 32-byte Ed25519 public key of ``identity``.

        :param identity: a registered identity.
        :return: the RFC 8032 encoded public key.
        :raises UnknownIdentityError: for an unregistered identity.
        :raises ValueError: in ``"hmac"`` mode, whose keys are symmetric (no public key).
        """
        position = self._position(identity)
        if self._mode != "ed25519":
            raise ValueError(
                f"mode={self._mode!r} has symmetric keys and no public key; allowed only in mode 'ed25519'"
            )
        return self._public_raw[position]

    def sign(self, identity: str, message: bytes) -> bytes:
        """Sign ``message`` as ``identity``.

        :param identity: a registered identity.
        :param message: bytes to sign.
        :return: a 64-byte Ed25519 signature or a 32-byte HMAC-SHA256 tag.
        :raises UnknownIdentityError: for an unregistered identity.
        """
        return self._signers[self._position(identity)](message)

    def verify_signature(self, identity: str, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is ``identity``'s valid signature over ``message``.

        Unknown identities and signatures of the wrong type or length give False.

        :param identity: the claimed signer.
        :param message: the signed bytes.
        :param signature: the signature to check.
        """
        position = self._index.get(identity) if isinstance(identity, str) else None
        if (
            position is None
            or type(signature) is not bytes
            or len(signature) != self.signature_length
        ):
            return False
        try:
            self._verifiers[position](signature, message)
        except (InvalidSignature, TypeError, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return (
            f"IdentityRegistry(mode={self._mode!r}, "
            + (f"ed25519_backend={self._backend!r}, " if self._backend else "")
            + f"crypto_threads={self._crypto_threads}, "
            + f"n_agents={len(self._agent_ids)}, "
            f"operator_id={self._operator_id!r}, seeded={self._seeded})"
        )

    __str__ = __repr__

    def __getstate__(self) -> None:
        raise TypeError("IdentityRegistry holds private keys and cannot be pickled or copied")

    def __reduce_ex__(self, protocol: object) -> None:
        raise TypeError("IdentityRegistry holds private keys and cannot be pickled or copied")


# --------------------------------------------------------------------------- contracts

CONTRACT_FORMAT_VERSION = 1
_CONTRACT_MAGIC = b"IATP"
# magic, version, round, power_mw, price_per_mwh, window_start_s, window_end_s, nonce,
# then the UTF-8 byte lengths of contract_id, agent_id, operator_id, product; the four
# strings follow in that order. Fixed header + explicit lengths = injective encoding.
_CONTRACT_HEADER = struct.Struct(">4sBQdddd16sHHHH")


def _shown(value: object) -> str:
    """``repr(value)`` for an error message, cut to 60 characters (an int of 10**400 has
    401 digits; one beyond 4 300 digits has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Contract:
    """One award: ``power_mw`` delivered over ``[window_start_s, window_end_s)``.

    :param contract_id: unique id (the ledger uses ``c-<round>-<agent>-<counter>``).
    :param round_index: market round, non-negative int.
    :param agent_id: the DER agent that delivers.
    :param operator_id: the operator that pays.
    :param power_mw: contracted balancing power, positive = injection into the grid.
    :param price_per_mwh: clearing price paid, $/MWh (may be negative).
    :param window_start_s: delivery window start, simulated seconds.
    :param window_end_s: delivery window end (exclusive), ``> window_start_s``.
    :param nonce: 16 bytes (the ledger's 4-byte epoch tag + 12 random bytes).
    :param product: ``"energy"`` or ``"reserve"`` (:data:`PRODUCTS`).
    :raises ValueError: naming the first invalid field.
    """

    contract_id: str
    round_index: int
    agent_id: str
    operator_id: str
    power_mw: float
    price_per_mwh: float
    window_start_s: float
    window_end_s: float
    nonce: bytes
    product: str = "energy"

    def __post_init__(self) -> None:
        # Fast path for the common, clearly valid case (issue() builds ~1e5 contracts/s);
        # anything else goes through the detailed checks, which name the bad field.
        cid, aid, oid = self.contract_id, self.agent_id, self.operator_id
        power, price = self.power_mw, self.price_per_mwh
        start, end, nonce = self.window_start_s, self.window_end_s, self.nonce
        if not (
            type(cid) is str
            and type(aid) is str
            and type(oid) is str
            and 0 < len(cid) <= _FAST_STRING_CHARS
            and 0 < len(aid) <= _FAST_STRING_CHARS
            and 0 < len(oid) <= _FAST_STRING_CHARS
            and type(self.round_index) is int
            and 0 <= self.round_index < 2**64
            and type(power) is float
            and type(price) is float
            and type(start) is float
            and type(end) is float
            and math.isfinite(power)
            and math.isfinite(price)
            and math.isfinite(start)
            and math.isfinite(end)
            and end > start
            and type(nonce) is bytes
            and len(nonce) == _NONCE_BYTES
            and self.product in PRODUCTS
        ):
            self._validate()

    def _validate(self) -> None:
        """Detailed field checks; raise ``ValueError`` naming the first bad field."""
        for name in ("contract_id", "agent_id", "operator_id"):
            value = getattr(self, name)
            if (
                type(value) is not str
                or not value
                or len(value.encode("utf-8")) > _MAX_STRING_BYTES
            ):
                raise ValueError(
                    f"{name}={value!r} must be a non-empty str of at most {_MAX_STRING_BYTES} UTF-8 bytes"
                )
        r = self.round_index
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < 2**64:
            raise ValueError(f"round_index={r!r} must be an int in [0, 2**64)")
        # the fields hold exactly what canonical_bytes encodes (a float, an int), so two
        # contracts with one encoding are equal: other numbers are converted, and one a
        # float cannot represent exactly (2**53 + 1, 1/3 as a Fraction) is refused
        set_field = object.__setattr__
        set_field(self, "round_index", int(r))
        for name in ("power_mw", "price_per_mwh", "window_start_s", "window_end_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{name}={value!r} must be a finite real number")
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"{name}={_shown(value)} must be a finite real number")
            if type(value) is not float and number != value:
                raise ValueError(
                    f"{name}={_shown(value)} must be a float or a number a float holds exactly "
                    f"(it would be signed as {number!r})"
                )
            set_field(self, name, number)
        if not self.window_end_s > self.window_start_s:
            raise ValueError(
                f"window_end_s={self.window_end_s!r} must be greater than window_start_s={self.window_start_s!r}"
            )
        if type(self.nonce) is not bytes or len(self.nonce) != _NONCE_BYTES:
            raise ValueError(f"nonce={self.nonce!r} must be exactly {_NONCE_BYTES} bytes")
        if self.product not in PRODUCTS:
            raise ValueError(
                f"product={self.product!r} is not a product; allowed: {', '.join(PRODUCTS)}"
            )
        set_field(self, "product", PRODUCTS[PRODUCTS.index(self.product)])

    @property
    def duration_s(self) -> float:
        """Length of the delivery window, s."""
        return self.window_end_s - self.window_start_s

    @property
    def energy_mwh(self) -> float:
        """Contracted energy ``power_mw * duration_s / 3600``, MWh."""
        return self.power_mw * (self.window_end_s - self.window_start_s) / 3600.0

    def canonical_bytes(self) -> bytes:
        """Unambiguous, versioned binary encoding that both parties sign.

        Layout (big-endian): ``b"IATP"``, version u8 (:data:`CONTRACT_FORMAT_VERSION`),
        ``round_index`` u64, ``power_mw``, ``price_per_mwh``, ``window_start_s``,
        ``window_end_s`` as IEEE-754 doubles, the 16-byte nonce, the u16 UTF-8 byte
        lengths of ``contract_id``, ``agent_id``, ``operator_id``, ``product``, then
        those four strings. Every field has a fixed position or an explicit length,
        so distinct contracts have distinct encodings
        (:meth:`from_canonical_bytes` inverts it).

        :return: the encoding.
        """
        cid = self.contract_id.encode("utf-8")
        aid = self.agent_id.encode("utf-8")
        oid = self.operator_id.encode("utf-8")
        product = self.product.encode("utf-8")
        return (
            _CONTRACT_HEADER.pack(
                _CONTRACT_MAGIC,
                CONTRACT_FORMAT_VERSION,
                self.round_index,
                self.power_mw,
                self.price_per_mwh,
                self.window_start_s,
                self.window_end_s,
                self.nonce,
                len(cid),
                len(aid),
                len(oid),
                len(product),
            )
            + cid
            + aid
            + oid
            + product
        )

    @classmethod
    def from_canonical_bytes(cls, data: bytes) -> Contract:
        """Decode :meth:`canonical_bytes` output (e.g. a contract read off the wire).

        :param data: the encoding.
        :return: the contract.
        :raises ValueError: for a wrong magic/version, a length mismatch or invalid fields.
        """
        size = _CONTRACT_HEADER.size
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < size:
            raise ValueError(f"data must be at least {size} bytes of a canonical contract encoding")
        magic, version, round_index, power, price, start, end, nonce, *lengths = (
            _CONTRACT_HEADER.unpack_from(data)
        )
        if magic != _CONTRACT_MAGIC or version != CONTRACT_FORMAT_VERSION:
            raise ValueError(
                f"data starts with {bytes(magic)!r} version {version}; expected {_CONTRACT_MAGIC!r} "
                f"version {CONTRACT_FORMAT_VERSION}"
            )
        if len(data) != size + sum(lengths):
            raise ValueError(
                f"data has {len(data)} bytes; its header announces {size + sum(lengths)}"
            )
        strings = []
        offset = size
        for length in lengths:
            strings.append(bytes(data[offset : offset + length]).decode("utf-8"))
            offset += length
        cid, aid, oid, product = strings
        return cls(cid, round_index, aid, oid, power, price, start, end, nonce, product)


@dataclass(frozen=True, slots=True)
class SignedContract:
    """A contract with the agent's signature and the operator's countersignature.

    Both signatures are over ``contract.canonical_bytes()``. :meth:`ContractLedger.issue`
    makes both, with the registry's keys: in the environment its ledger holds every
    identity's key, so an agent's signature proves that the contract was issued under
    that agent's key, not that the agent's policy consented to its terms (agents' bids
    are not signed).

    :param contract: the contract.
    :param agent_signature: the agent's signature (64 bytes Ed25519, 32 bytes HMAC).
    :param operator_signature: the operator's signature.
    """

    contract: Contract
    agent_signature: bytes
    operator_signature: bytes


class _ContractLayout:
    """Mutable twin of :class:`Contract` (same slots, same order, same base).

    :func:`_contract_unchecked` fills one with plain slot stores and then turns it into a
    :class:`Contract` by assigning ``__class__`` (allowed between classes of identical
    layout): the result is an ordinary frozen ``Contract``, built in about half the time
    of setting ten slots through their descriptors and a fifth of ``Contract(...)``.
    """

    __slots__ = Contract.__slots__

    def __init__(self, contract_id: str, round_index: int, agent_id: str, operator_id: str,
                 power_mw: float, price_per_mwh: float, window_start_s: float,
                 window_end_s: float, nonce: bytes, product: str) -> None:
        self.contract_id = contract_id
        self.round_index = round_index
        self.agent_id = agent_id
        self.operator_id = operator_id
        self.power_mw = power_mw
        self.price_per_mwh = price_per_mwh
        self.window_start_s = window_start_s
        self.window_end_s = window_end_s
        self.nonce = nonce
        self.product = product


class _SignedContractLayout:
    """Mutable twin of :class:`SignedContract` (see :class:`_ContractLayout`)."""

    __slots__ = SignedContract.__slots__

    def __init__(self, contract: Contract, agent_signature: bytes,
                 operator_signature: bytes) -> None:
        self.contract = contract
        self.agent_signature = agent_signature
        self.operator_signature = operator_signature


def _contract_unchecked(cid: str, round_index: int, agent_id: str, operator_id: str,
                        power_mw: float, price_per_mwh: float, start_s: float, end_s: float,
                        nonce: bytes, product: str) -> Contract:
    """A :class:`Contract` built without validation (no ``__post_init__``).

    Only :meth:`ContractLedger.issue` uses it (inlined), on fields it has already
    validated (finite floats, an int round, registry ids of bounded length, 16-byte
    nonces, a known product); everything else builds contracts normally.
    """
    c = _ContractLayout(cid, round_index, agent_id, operator_id, power_mw, price_per_mwh,
                        start_s, end_s, nonce, product)
    c.__class__ = Contract
    return c  # type: ignore[return-value]


def _signed_unchecked(contract: Contract, agent_signature: bytes,
                      operator_signature: bytes) -> SignedContract:
    """A :class:`SignedContract` built without the frozen ``__setattr__`` detour."""
    sc = _SignedContractLayout(contract, agent_signature, operator_signature)
    sc.__class__ = SignedContract
    return sc  # type: ignore[return-value]


assert _ContractLayout.__slots__ == Contract.__slots__ and Contract.__bases__ == (object,)
#: room left for the "c-<round>-" prefix and "-<counter>" suffix of contract ids
_ID_AFFIX_BYTES = 64


class RejectReason(StrEnum):
    """Why :meth:`ContractLedger.verify` rejected a contract (values are audit strings)."""

    BAD_AGENT_SIGNATURE = "bad_agent_signature"
    BAD_OPERATOR_SIGNATURE = "bad_operator_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    UNKNOWN_IDENTITY = "unknown_identity"
    WRONG_AGENT = "wrong_agent"
    MALFORMED = "malformed"


#: the reason of each code of IdentityRegistry._verify_many (0: both signatures valid)
_SIGNATURE_VERDICTS = (None, RejectReason.BAD_AGENT_SIGNATURE, RejectReason.BAD_OPERATOR_SIGNATURE)

_MALFORMED_ERRORS = (
    struct.error,
    TypeError,
    AttributeError,
    ValueError,
    UnicodeError,
    OverflowError,
)


#: the length prefix of each encoding in a ``contracts_sha256`` digest (u32, big-endian)
_ENCODING_LENGTH = struct.Struct(">I")


def _encodings_digest(encodings: Iterable[bytes]) -> str:
    """``SHA-256(‖ u32be(len(e)) ‖ e)`` over ``encodings`` in order, hex (one hash call)."""
    pack = _ENCODING_LENGTH.pack
    return sha256(b"".join([pack(len(e)) + e for e in encodings])).hexdigest()


def contracts_digest(contracts: Iterable[Contract | SignedContract]) -> str:
    """The ``contracts_sha256`` a ``contract_signed`` audit entry records for a batch.

    ``contracts_sha256 = SHA-256(u32be(len(E_1)) ‖ E_1 ‖ … ‖ u32be(len(E_n)) ‖ E_n)``,
    hex, where ``E_i = contracts[i].canonical_bytes()`` (:meth:`Contract.canonical_bytes`:
    the exact bytes both parties signed) in the order of the entry's ``contract_ids``
    and ``u32be`` is a 4-byte big-endian length, so the concatenation is unambiguous.
    An auditor holding the contracts recomputes it and compares: a contract whose
    terms (power, price, window, nonce, ...) differ from what was signed gives another
    digest.

    :param contracts: the batch's contracts (:class:`Contract` or :class:`SignedContract`,
        exactly these classes), in the entry's ``contract_ids`` order.
    :return: 64 lowercase hex digits.
    :raises TypeError: naming the position of anything else.
    """
    encodings = []
    for position, item in enumerate(contracts):
        contract = item.contract if type(item) is SignedContract else item
        if type(contract) is not Contract:
            raise TypeError(f"contracts[{position}] is {type(item).__name__}; expected a "
                            "Contract or SignedContract")
        encodings.append(contract.canonical_bytes())
    return _encodings_digest(encodings)


class ContractLedger:
    """The operator's contract pipeline: issue (sign + countersign) and verify.

    :param registry: identities and keys; the operator is ``registry.operator_id``.
    :param rng: generator (or seed) for nonces and epoch tags; deterministic for a seed.
        The ledger draws from it ahead of use, in blocks (see :meth:`_random_bytes`):
        give it a generator of its own.
    :param audit: optional :class:`AuditLog`; ``issue`` writes one
        ``contract_signed`` entry per batch (``contract_ids``, ``count``, ``product``,
        ``round_index``, the window and ``contracts_sha256``: what was signed, see
        :func:`contracts_digest`), ``verify_batch`` one ``contract_verified``
        and one ``contract_rejected`` entry per batch (when non-empty), ``verify`` one
        entry per contract.
    :param tolerance_s: a contract is valid from ``window_start_s - tolerance_s``
        (default 0.05 s, one physics sub-step of DESIGN.md section 3) to
        ``window_end_s`` exclusive.
    :raises ValueError: for a negative or non-finite tolerance or a bad ``rng``.

    Counters: :attr:`signed`, :attr:`verified`, :attr:`rejected`,
    :attr:`rejected_by_reason` (reason value -> count). Memory: see
    :attr:`replay_memory_size` and the module docstring.

    Every verification recomputes both signatures' checks with the keys (HMAC tag or
    Ed25519 public key) over the canonical bytes of the contract's current field values
    (or, for the same unchanged object, takes the verdict of the last
    :meth:`screen_batch`); no signature verdict computed at issue time is reused. The one thing issue time
    lends is those bytes: a contract of the last :meth:`issue` batch that still holds
    the very objects issue stored is not re-encoded when first checked (screening or
    verification, see :meth:`_screen`).
    """

    __slots__ = (
        "_audit",
        "_clock_s",
        "_counter",
        "_epoch",
        "_epoch_tag",
        "_expiry",
        "_expiry_ends",
        "_issued",
        "_pool",
        "_pool_position",
        "_registry",
        "_rejected_by_reason",
        "_rng",
        "_signed",
        "_received_ids",
        "_screened",
        "_tolerance_s",
        "_used_ids",
        "_used_nonces",
        "_verified",
    )

    def __init__(
        self,
        registry: IdentityRegistry,
        *,
        rng: np.random.Generator | int | None = None,
        audit: AuditLog | None = None,
        tolerance_s: float = 0.05,
    ) -> None:
        if not isinstance(registry, IdentityRegistry):
            raise ValueError(f"registry={registry!r} must be an IdentityRegistry")
        if (
            isinstance(tolerance_s, bool)
            or not isinstance(tolerance_s, Real)
            or not (math.isfinite(tolerance_s) and tolerance_s >= 0)
        ):
            raise ValueError(f"tolerance_s={tolerance_s!r} must be a finite number >= 0")
        if audit is not None and not isinstance(audit, AuditLog):
            raise ValueError(f"audit={audit!r} must be an AuditLog or None")
        self._registry = registry
        self._rng = _as_generator(rng)
        self._audit = audit
        self._tolerance_s = float(tolerance_s)
        self._counter = 0
        self._signed = 0
        self._verified = 0
        self._rejected_by_reason = {reason.value: 0 for reason in RejectReason}
        self._epoch = -1
        self._epoch_tag = b""
        self._pool = b""
        self._pool_position = 0
        self.reset_replay_window()

    # -- description and counters
    @property
    def registry(self) -> IdentityRegistry:
        """The identity registry."""
        return self._registry

    @property
    def audit(self) -> AuditLog | None:
        """The audit log, if any."""
        return self._audit

    @property
    def tolerance_s(self) -> float:
        """Early-acceptance tolerance before ``window_start_s``, s."""
        return self._tolerance_s

    @property
    def epoch(self) -> int:
        """Number of :meth:`reset_replay_window` calls since construction (0 at first)."""
        return self._epoch

    @property
    def signed(self) -> int:
        """Contracts issued (signed by agent and operator)."""
        return self._signed

    @property
    def verified(self) -> int:
        """Contracts accepted by verification."""
        return self._verified

    @property
    def rejected(self) -> int:
        """Contracts rejected by verification."""
        return sum(self._rejected_by_reason.values())

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Rejections per :class:`RejectReason` value (a copy; every reason present)."""
        return dict(self._rejected_by_reason)

    @property
    def replay_memory_size(self) -> int:
        """Ids currently remembered (accepted contracts whose window is still open)."""
        return len(self._used_ids)

    @property
    def _expiry_heap(self) -> list[tuple[float, str, bytes]]:
        """The remembered ``(window_end_s, contract_id, nonce)`` entries, earliest end first
        (a read-only view of the expiry buckets, for introspection and tests)."""
        return [(end, cid, nonce) for end in sorted(self._expiry_ends)
                for cid, nonce in zip(*self._expiry[end], strict=True)]

    @property
    def clock_s(self) -> float:
        """High-water mark of the ``now_s`` values seen in this epoch."""
        return self._clock_s

    def counters(self) -> dict[str, Any]:
        """Snapshot ``{"signed", "verified", "rejected", "rejected_by_reason"}``."""
        return {
            "signed": self._signed,
            "verified": self._verified,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
        }

    def reset_replay_window(self) -> None:
        """Start a new epoch (call at every environment reset).

        Clears the replay memory and the clock, and draws a new 4-byte epoch tag for
        the nonces of contracts issued from now on, one never claimed before under the
        registry's keys (by this or another ledger, see
        ``IdentityRegistry._claim_epoch_tag``); contracts from earlier epochs are then
        rejected as ``replayed``. Counters are kept (they are run totals).
        """
        # a tag never claimed under these keys by this or any other ledger (drawn again
        # on a collision, which leaves every other draw as it was)
        claim = self._registry._claim_epoch_tag
        tag = self._random_bytes(_EPOCH_TAG_BYTES)
        while not claim(tag):
            tag = self._random_bytes(_EPOCH_TAG_BYTES)
        self._epoch_tag = tag
        self._epoch += 1
        self._used_ids: set[str] = set()
        self._used_nonces: set[bytes] = set()
        # ids that passed authenticate() this epoch (a holder receives a contract once)
        self._received_ids: set[str] = set()
        # the last screen_batch's signature verdicts: id(item) -> (item, (what was read
        # from it and verified, its verdict code)), see _screen
        self._screened: dict[int, tuple] = {}
        # the last issue() batch: id(item) -> (item, (seen, None), agent's verifier, the
        # bytes signed), see _screen
        self._issued: dict[int, tuple] = {}
        # accepted ids and nonces bucketed by window end (two parallel lists per end), and
        # a heap of those ends (a batch shares one end: no per-contract heap operation)
        self._expiry: dict[float, tuple[list[str], list[bytes]]] = {}
        self._expiry_ends: list[float] = []
        self._clock_s = -math.inf

    # -- issuing
    def _random_bytes(self, k: int) -> bytes:
        """The next ``k`` bytes (a multiple of 4) of the generator's byte stream.

        ``Generator.bytes(m)`` returns the next ``m / 4`` 32-bit draws, little-endian, so
        ``bytes(a) + bytes(b) == bytes(a + b)`` for multiples of 4: drawing ahead in
        blocks of :data:`_RANDOM_POOL_BYTES` (one ~15 µs call instead of one per batch)
        hands out exactly the bytes that drawing on demand would. The generator must
        then not be shared with other consumers (the environment gives each ledger its
        own); every draw of this ledger (nonces, epoch tags) goes through this pool.
        """
        pool, position = self._pool, self._pool_position
        stop = position + k
        if stop <= len(pool):
            self._pool_position = stop
            return pool[position:stop]
        head = pool[position:]
        need = k - len(head)
        self._pool = pool = self._rng.bytes(max(need, _RANDOM_POOL_BYTES))
        self._pool_position = need
        return head + pool[:need]

    def issue(
        self,
        round_index: int,
        agent_indices: np.ndarray,
        power_mw: np.ndarray,
        price_per_mwh: np.ndarray,
        window_start_s: float,
        window_end_s: float,
        product: str = "energy",
    ) -> list[SignedContract]:
        """Build, sign and countersign one contract per award.

        Contract ids are ``c-<round_index>-<agent_id>-<counter>`` with a ledger-wide
        counter; nonces are the epoch tag + 12 bytes from the ledger's generator, so
        the output is deterministic for a seed. With an audit log, one
        ``contract_signed`` entry records the batch, its ``contracts_sha256`` equal to
        :func:`contracts_digest` of the returned contracts (computed from the bytes just
        signed: one SHA-256 call per batch).

        :param round_index: market round (non-negative int).
        :param agent_indices: int array ``(n,)``, positions in ``registry.agent_ids``.
        :param power_mw: float array ``(n,)``, awarded power, positive = injection.
        :param price_per_mwh: float array ``(n,)`` (or a scalar), price per award.
        :param window_start_s: delivery window start, s.
        :param window_end_s: delivery window end (exclusive), s.
        :param product: ``"energy"`` or ``"reserve"``.
        :return: the signed contracts, in input order.
        :raises ValueError: naming the invalid argument.
        """
        registry = self._registry
        agent_ids = registry._agent_ids
        # fast acceptance of the usual arguments (exact types, all valid); anything else,
        # and every error, goes through _issue_arguments, which names the bad argument
        agents = power = prices = None
        if (
            type(round_index) is int
            and 0 <= round_index < 2**64
            and type(agent_indices) is np.ndarray
            and agent_indices.ndim == 1
            and agent_indices.dtype.kind in "iu"
            and type(power_mw) is np.ndarray
            and power_mw.dtype == np.float64
            and power_mw.shape == agent_indices.shape
            and type(window_start_s) is float
            and type(window_end_s) is float
            and window_end_s > window_start_s
            and window_end_s - window_start_s < math.inf   # both finite (and not NaN)
            and type(product) is str
            and product in _PRODUCT_BYTES
        ):
            agents = agent_indices.tolist()
            power = power_mw.tolist()
            n = len(agents)
            if type(price_per_mwh) is float:
                prices = [price_per_mwh] * n
            elif (
                type(price_per_mwh) is np.ndarray
                and price_per_mwh.dtype == np.float64
                and price_per_mwh.shape == (n,)
            ):
                prices = price_per_mwh.tolist()
            # sum() of floats is finite only if every term is (overflow: checked in detail)
            if (
                prices is None
                or not n
                or min(agents) < 0
                or max(agents) >= len(agent_ids)
                or not math.isfinite(sum(power))
                or not math.isfinite(sum(prices))
            ):
                agents = None
        if agents is None:
            round_index, agents, power, prices, window_start_s, window_end_s = (
                self._issue_arguments(round_index, agent_indices, power_mw, price_per_mwh,
                                      window_start_s, window_end_s, product))
            product = PRODUCTS[PRODUCTS.index(product)]
        n = len(agents)
        if n == 0:
            return []
        start, end = window_start_s, window_end_s

        agent_bytes = registry._agent_id_bytes
        signers = registry._signers
        operator_sign = signers[-1]
        operator_id = registry._operator_id
        # the canonical encoding (Contract.canonical_bytes) built here directly from the
        # pre-encoded constant strings: the same bytes without re-encoding them per award
        operator_bytes = operator_id.encode("utf-8")
        product_bytes = _PRODUCT_BYTES[product]
        tail = operator_bytes + product_bytes
        n_operator, n_product = len(operator_bytes), len(product_bytes)
        pack = _CONTRACT_HEADER.pack
        join = b"".join
        tag = self._epoch_tag
        step = _NONCE_BYTES - _EPOCH_TAG_BYTES
        random_part = self._random_bytes(step * n)
        counter = self._counter
        prefix = f"c-{round_index}-"
        out: list[SignedContract] = []
        append = out.append
        ids: list[str] = []
        append_id = ids.append
        offset = 0
        # every field was validated above; ids are the registry's (bounded length): skip
        # the per-contract re-validation unless an id could be too long for the encoding
        validate = registry._max_id_bytes + _ID_AFFIX_BYTES > _MAX_STRING_BYTES
        # _contract_unchecked and _signed_unchecked, inlined with their slot stores written
        # out: a bare object of the layout class and ten plain stores cost less than a
        # call of the layout class (its __init__ does the same stores)
        new = object.__new__
        contract_layout, signed_layout = _ContractLayout, _SignedContractLayout
        contract_class, signed_class = Contract, SignedContract
        contracts: list[Contract] = []
        add_contract = contracts.append
        verifiers = registry._verifiers
        # every contract's message twice (agent, operator) with its signer beside it:
        # one batch for registry._sign_many, which may spread it over threads
        sign_calls: list[Callable[[bytes], bytes]] = []
        add_signer = sign_calls.append
        messages: list[bytes] = []
        add_message = messages.append
        for a, p, pr in zip(agents, power, prices, strict=True):
            aid = agent_ids[a]
            cid = f"{prefix}{aid}-{counter}"
            counter += 1
            nonce = tag + random_part[offset : offset + step]
            offset += step
            if validate:   # raises ValueError naming a contract id that is too long
                Contract(cid, round_index, aid, operator_id, p, pr, start, end, nonce, product)
            cid_bytes = cid.encode()   # UTF-8
            aid_bytes = agent_bytes[a]
            message = join((
                pack(_CONTRACT_MAGIC, CONTRACT_FORMAT_VERSION, round_index, p, pr, start,
                     end, nonce, len(cid_bytes), len(aid_bytes), n_operator, n_product),
                cid_bytes, aid_bytes, tail,
            ))
            add_signer(signers[a])
            add_signer(operator_sign)
            add_message(message)
            add_message(message)
            contract = new(contract_layout)
            contract.contract_id = cid
            contract.round_index = round_index
            contract.agent_id = aid
            contract.operator_id = operator_id
            contract.power_mw = p
            contract.price_per_mwh = pr
            contract.window_start_s = start
            contract.window_end_s = end
            contract.nonce = nonce
            contract.product = product
            contract.__class__ = contract_class
            add_contract(contract)
            append_id(cid)
        signatures = registry._sign_many(sign_calls, messages)
        # what screen_batch may take from here (see _screen): per contract the objects it
        # holds, its agent's verifier and the bytes just signed
        issued: dict[int, tuple] = {}
        for contract, agent_signature, operator_signature, a, message in zip(
                contracts, signatures[0::2], signatures[1::2], agents, messages[0::2],
                strict=True):
            signed = new(signed_layout)
            signed.contract = contract
            signed.agent_signature = agent_signature
            signed.operator_signature = operator_signature
            signed.__class__ = signed_class
            append(signed)
            issued[id(signed)] = (signed, ((
                contract.contract_id, contract.agent_id, contract.nonce, start, end,
                contract.power_mw, contract.price_per_mwh, operator_id, product, round_index,
                contract, agent_signature, operator_signature), None), verifiers[a], message)
        self._issued = issued
        self._counter = counter
        self._signed += n
        audit = self._audit
        if audit is not None:
            # contracts_digest over the signed bytes at hand (each message is in the list
            # twice, for the agent's and the operator's signature)
            digest = _encodings_digest(messages[0::2])
            # the entry append(kind, round_index=..., product=..., ...) would write,
            # rendered directly (sorted keys, same JSON text)
            audit._append_rendered(
                "contract_signed",
                '"contract_signed"',
                {
                    "contract_ids": ids,
                    "contracts_sha256": digest,
                    "count": n,
                    "product": product,
                    "round_index": round_index,
                    "window_end_s": end,
                    "window_start_s": start,
                },
                (
                    '{"contract_ids":' + _json_str_list(ids)
                    + ',"contracts_sha256":"' + digest
                    + '","count":' + str(n)
                    + ',"product":"' + product
                    + '","round_index":' + str(round_index)
                    + ',"window_end_s":' + repr(end)
                    + ',"window_start_s":' + repr(start) + "}"
                ),
            )
        return out

    def _issue_arguments(
        self,
        round_index: object,
        agent_indices: object,
        power_mw: object,
        price_per_mwh: object,
        window_start_s: object,
        window_end_s: object,
        product: object,
    ) -> tuple[int, list[int], list[float], list[float], float, float]:
        """Validate and normalise :meth:`issue`'s arguments (any accepted type).

        :return: ``(round_index, agents, power, prices, start, end)`` as Python ints,
            lists and floats.
        :raises ValueError: naming the first invalid argument.
        """
        if (
            isinstance(round_index, bool)
            or not isinstance(round_index, Integral)
            or not 0 <= int(round_index) < 2**64
        ):
            raise ValueError(f"round_index={round_index!r} must be an int in [0, 2**64)")
        round_index = int(round_index)
        agents = np.asarray(agent_indices)
        if agents.ndim != 1 or (agents.size and agents.dtype.kind not in "iu"):
            raise ValueError(
                f"agent_indices must be a 1-D integer array; got shape {agents.shape} dtype {agents.dtype}"
            )
        n = agents.shape[0]
        n_agents = len(self._registry._agent_ids)
        if n and (int(np.minimum.reduce(agents)) < 0 or int(np.maximum.reduce(agents)) >= n_agents):
            raise ValueError(
                f"agent_indices must lie in [0, {n_agents}); got min {agents.min()} max {agents.max()}"
            )
        power = _per_award("power_mw", power_mw, n)
        price = _per_award("price_per_mwh", price_per_mwh, n)
        for name, values in (("power_mw", power), ("price_per_mwh", price)):
            if np.count_nonzero(np.isfinite(values)) < n:
                raise ValueError(
                    f"{name} must be finite; got {values[~np.isfinite(values)][:3].tolist()}"
                )
        start, end = float(window_start_s), float(window_end_s)  # type: ignore[arg-type]
        if not (math.isfinite(start) and math.isfinite(end) and end > start):
            raise ValueError(
                f"window_start_s={window_start_s!r}, window_end_s={window_end_s!r} must be finite with end > start"
            )
        if product not in PRODUCTS:
            raise ValueError(
                f"product={product!r} is not a product; allowed: {', '.join(PRODUCTS)}"
            )
        return round_index, agents.tolist(), power.tolist(), price.tolist(), start, end

    # -- verification
    def _prune(self, now_s: float) -> None:
        """Advance the clock to ``max(clock, now_s)`` and forget closed windows."""
        if now_s > self._clock_s:
            self._clock_s = now_s
            ends = self._expiry_ends
            while ends and ends[0] <= now_s:
                ids, nonces = self._expiry.pop(heapq.heappop(ends))
                self._used_ids.difference_update(ids)
                self._used_nonces.difference_update(nonces)

    def _authenticate(
        self, signed: object, expected_agent: str | None
    ) -> tuple[RejectReason | None, Contract | None]:
        """The form, identity and signature checks of :meth:`_check`, in its order.

        :return: ``(None, contract)`` when both signatures verify, else ``(reason, None)``.
        """
        if (type(signed) is not SignedContract
                or type(getattr(signed, "contract", None)) is not Contract):
            # not even read: an arbitrary object's attributes may run arbitrary code
            # (raise anything, answer differently each time); see the module docstring
            return RejectReason.MALFORMED, None
        try:
            contract = signed.contract
            agent_sig = signed.agent_signature
            operator_sig = signed.operator_signature
            cid = contract.contract_id
            nonce = contract.nonce
            start = contract.window_start_s
            end = contract.window_end_s
            sig_len = _SIGNATURE_LENGTH[self._registry._mode]
            if (
                type(cid) is not str
                or type(nonce) is not bytes
                or len(nonce) != _NONCE_BYTES
                or type(agent_sig) is not bytes
                or len(agent_sig) != sig_len
                or type(operator_sig) is not bytes
                or len(operator_sig) != sig_len
                or type(contract.product) is not str
                or contract.product not in PRODUCTS
                or type(contract.agent_id) is not str
                or type(contract.operator_id) is not str
                or type(contract.round_index) is not int
                # only a float is what its encoding says (a Fraction or an int beyond 2**53
                # would be signed rounded and used as it is): anything else got in behind
                # Contract's validation, which converts
                or type(contract.power_mw) is not float
                or type(contract.price_per_mwh) is not float
                or type(start) is not float
                or type(end) is not float
                or not (math.isfinite(contract.power_mw) and math.isfinite(contract.price_per_mwh))
                or not (math.isfinite(start) and math.isfinite(end) and end > start)
            ):
                return RejectReason.MALFORMED, None
            message = contract.canonical_bytes()
        except _MALFORMED_ERRORS:
            return RejectReason.MALFORMED, None
        registry = self._registry
        position = registry._index.get(contract.agent_id)
        if (
            position is None
            or position >= len(registry._agent_ids)
            or contract.operator_id != registry._operator_id
        ):
            return RejectReason.UNKNOWN_IDENTITY, None
        if expected_agent is not None and contract.agent_id != expected_agent:
            return RejectReason.WRONG_AGENT, None
        verifiers = registry._verifiers
        (code,) = registry._verify_many(verifiers[-1], [verifiers[position]], [agent_sig],
                                        [operator_sig], [message])
        return _SIGNATURE_VERDICTS[code], (contract if code == 0 else None)

    def _check(
        self, signed: object, now_s: float, expected_agent: str | None
    ) -> RejectReason | None:
        """Run every check in the documented order; on success remember id and nonce."""
        reason, contract = self._authenticate(signed, expected_agent)
        if contract is None:
            return reason
        cid, nonce = contract.contract_id, contract.nonce
        start, end = contract.window_start_s, contract.window_end_s
        if now_s < start - self._tolerance_s:
            return RejectReason.NOT_YET_VALID
        if self._clock_s >= end:
            return RejectReason.EXPIRED
        if self._replayed(cid, nonce):
            return RejectReason.REPLAYED
        self._used_ids.add(cid)
        self._used_nonces.add(nonce)
        bucket = self._expiry.get(end)
        if bucket is None:
            self._expiry[end] = bucket = ([], [])
            heapq.heappush(self._expiry_ends, end)
        bucket[0].append(cid)
        bucket[1].append(nonce)
        return None

    def _replayed(self, cid: str, nonce: bytes) -> bool:
        """A nonce of an earlier epoch, or an id or nonce already accepted (replay)."""
        return (not nonce.startswith(self._epoch_tag) or cid in self._used_ids
                or nonce in self._used_nonces)

    def _now(self, now_s: float) -> float:
        """Validate ``now_s`` (a finite real), advance the clock and prune; as a float."""
        if type(now_s) is not float or not math.isfinite(now_s):
            if isinstance(now_s, bool) or not isinstance(now_s, Real) or not math.isfinite(now_s):
                raise ValueError(f"now_s={now_s!r} must be a finite number of simulated seconds")
            now_s = float(now_s)
        self._prune(now_s)
        return now_s

    def verify(
        self, signed: SignedContract, now_s: float, *, expected_agent: str | None = None
    ) -> RejectReason | None:
        """Verify one contract at simulated time ``now_s`` (one-shot acceptance).

        :param signed: the signed contract as presented (possibly tampered).
        :param now_s: current simulated time, s. Expiry is judged against the ledger
            clock ``max(now_s seen in this epoch)``, so time cannot be rewound.
        :param expected_agent: the agent the contract is presented for, if known.
        :return: ``None`` if valid (its id and nonce are then used up), else the reason.
        :raises ValueError: for a non-finite ``now_s``.
        """
        now = self._now(now_s)
        reason = self._check(signed, now, expected_agent)
        self._count_and_audit([signed], [reason], now)
        return reason

    def authenticate(
        self, signed: SignedContract, now_s: float, *, expected_agent: str | None = None
    ) -> RejectReason | None:
        """Check a contract on receipt: its form, the identities, both signatures and the
        replay evidence there is before its window opens.

        The check a holder makes when a contract reaches it (e.g. a reserve contract held
        for later activation): the first failing reason of :meth:`verify` among
        ``malformed``, ``unknown_identity``, ``wrong_agent``, ``bad_agent_signature``,
        ``bad_operator_signature``, then ``replayed`` for a nonce of an earlier epoch
        (an earlier episode's contract), an id or nonce already accepted by :meth:`verify`, or an
        id already received (a duplicate delivery). The window is not checked, nothing is
        used up — :meth:`verify` at dispatch still decides, once — and the ledger clock
        does not move. A pass remembers the id as received (until
        :meth:`reset_replay_window`); a failure is counted and audited as a rejection.

        :param signed: the signed contract as received (possibly tampered).
        :param now_s: simulated receipt time, s (for the audit entry only).
        :param expected_agent: the agent the contract was delivered to, if known.
        :return: ``None`` if authentic, else the reason.
        :raises ValueError: for a non-finite ``now_s``.
        """
        if isinstance(now_s, bool) or not isinstance(now_s, Real) or not math.isfinite(now_s):
            raise ValueError(f"now_s={now_s!r} must be a finite number of simulated seconds")
        reason, contract = self._authenticate(signed, expected_agent)
        if contract is not None:
            cid = contract.contract_id
            if self._replayed(cid, contract.nonce) or cid in self._received_ids:
                reason = RejectReason.REPLAYED
            else:
                self._received_ids.add(cid)
        if reason is not None:
            self._count_and_audit([signed], [reason], float(now_s))
        return reason

    def verify_batch(
        self,
        signed: Sequence[SignedContract],
        now_s: float,
        expected_agents: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, list[RejectReason | None]]:
        """Verify a batch at one time; each item exactly as :meth:`verify`.

        :param signed: the contracts, in order (a contract repeated in the batch is
            accepted once, then rejected as replayed).
        :param now_s: current simulated time, s.
        :param expected_agents: per item, the agent it is presented for (or None).
        :return: ``(valid, reasons)``: a bool array ``(n,)`` and the reason per item.
        :raises ValueError: for a length mismatch or a non-finite ``now_s``.
        """
        now = self._now(now_s)
        items = signed if type(signed) is list else list(signed)
        if expected_agents is not None and len(expected_agents) != len(items):
            raise ValueError(
                f"expected_agents has {len(expected_agents)} items; it must match signed ({len(items)})"
            )
        reasons, accepted_ids = self._check_batch(items, now, expected_agents)
        if len(accepted_ids) == len(reasons):   # the usual batch: all valid
            valid = np.ones(len(reasons), dtype=bool)
        else:
            valid = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
        self._count_and_audit(items, reasons, now, accepted_ids)
        return valid, reasons

    def _check_batch(
        self, items: list[Any], now_s: float, expected_agents: Sequence[str | None] | None
    ) -> tuple[list[RejectReason | None], list[str]]:
        """:meth:`_check` of every item in order; also the ids of the accepted ones.

        A fast path takes the usual item: a :class:`SignedContract` holding a
        :class:`Contract` with ``str`` ids naming a registered agent and this
        operator, a known product, a 16-byte nonce, ``bytes`` signatures of the right
        length and finite window/power/price values (``end > start``). For it every
        malformed and identity check of :meth:`_check` passes, and its canonical
        encoding is assembled from the pre-encoded agent, operator and product
        strings and the field values read once from the contract: the same bytes as
        :meth:`Contract.canonical_bytes` of the fields as they are now, over which both
        signatures are then verified. The remaining checks
        (expected agent, agent signature, operator signature, window, replay) run in
        :meth:`_check`'s order. Any other item, or one whose encoding raises, goes
        through :meth:`_check` itself.

        Three passes (:meth:`_screen` makes the first two): the first reads and encodes
        every item, the second verifies the fast-path items' signatures as one batch
        (``registry._verify_many``, which may spread it over threads; signature checks
        have no state, and an operator signature is checked only when the agent's
        passed), the third decides each item in input order — the only pass that touches
        the replay memory, so the verdicts are those of checking the items one by one.
        An item :meth:`screen_batch` checked last (the same object, holding the same
        field values and signatures) is not encoded or verified again: its signature
        verdict from then is used; one of the last :meth:`issue` batch, unchanged, is
        verified over the bytes issue signed (see :meth:`_screen`).
        """
        plans, slow_expected, verdicts = self._screen(items, expected_agents, self._screened,
                                                      self._issued)
        return self._decide(items, plans, slow_expected, verdicts, now_s)

    def _screen(
        self,
        items: list[Any],
        expected_agents: Sequence[str | None] | None,
        screened: dict[int, tuple] | None,
        issued: dict[int, tuple] | None = None,
    ) -> tuple[list[Any], list[str | None], Iterator[int]]:
        """The first two passes of :meth:`_check_batch`.

        :return: per item a plan — ``None`` (not the usual form: :meth:`_check`
            decides), ``WRONG_AGENT``, or ``(seen, code)``; the expected agents of the
            ``None`` items; the signature verdict codes (:func:`_contract_verdict`) of
            the plans whose ``code`` is ``None``, in order. ``seen`` holds what was read
            from the item, encoded and verified: ``(contract_id, agent_id, nonce,
            window_start_s, window_end_s, power_mw, price_per_mwh, operator_id,
            product, round_index, contract, agent_signature, operator_signature)``. A
            plan's ``code`` is already set, and the item is neither re-encoded nor
            re-verified, for an item found in ``screened`` (popped from it: its entry is
            ``(item, plan)``) that still holds the very contract, field values and
            signature objects of its ``seen`` (compared by identity; the entry keeps
            them alive, so no id is reused): an object changed behind its frozen fields
            since is verified afresh. An item not found there is looked up in ``issued``,
            :meth:`issue`'s memo, whose entries are ``(item, (seen, None), agent's
            verifier, bytes signed)``: such an item, unchanged in the same sense, is not
            re-read or re-encoded, and its signatures are verified (with the keys, in
            the batch) over the bytes issue signed. That is sound: those bytes are what issue encoded from these
            very objects — ``str``, ``int``, ``float`` and ``bytes`` of exactly the types
            and values it validated, which cannot change — so they equal what encoding
            them now gives, and the checks of the usual form hold for them.
        """
        registry = self._registry
        agent_index = registry._agent_index.get
        agent_bytes = registry._agent_id_bytes
        operator_id = registry._operator_id
        operator_bytes = operator_id.encode("utf-8")
        n_operator = len(operator_bytes)
        verifiers = registry._verifiers
        operator_verify = verifiers[-1]
        sig_len = _SIGNATURE_LENGTH[registry._mode]
        pack = _CONTRACT_HEADER.pack
        join = b"".join
        isfinite = math.isfinite
        product_bytes = _PRODUCT_BYTES
        wrong_agent = RejectReason.WRONG_AGENT
        pairs = (
            zip(items, repeat(None))
            if expected_agents is None
            else zip(items, expected_agents, strict=True)
        )
        # pass 1: per item, None (-> _check, with its expected agent in slow_expected),
        # WRONG_AGENT, or (seen, code); the fast-path items' signature checks, in item
        # order
        plans: list[Any] = []
        plan = plans.append
        slow_expected: list[str | None] = []
        agent_verifiers: list[Callable[[bytes, bytes], None]] = []
        add_verifier = agent_verifiers.append
        agent_signatures: list[bytes] = []
        add_agent_signature = agent_signatures.append
        operator_signatures: list[bytes] = []
        add_operator_signature = operator_signatures.append
        messages: list[bytes] = []
        add_message = messages.append
        for item, expected in pairs:
            if screened or issued:
                hit = screened.pop(id(item), None) if screened else None
                if hit is None and issued:
                    hit = issued.pop(id(item), None)
                if hit is not None and hit[0] is item:
                    entry = hit[1]
                    (cid, aid, nonce, start, end, power, price, operator, product,
                     round_index, contract, agent_sig, operator_sig) = entry[0]
                    c = item.contract
                    if (c is contract
                            and item.agent_signature is agent_sig
                            and item.operator_signature is operator_sig
                            and c.contract_id is cid
                            and c.agent_id is aid
                            and c.nonce is nonce
                            and c.window_start_s is start
                            and c.window_end_s is end
                            and c.power_mw is power
                            and c.price_per_mwh is price
                            and c.operator_id is operator
                            and c.product is product
                            and c.round_index is round_index):
                        if expected is not None and aid != expected:
                            plan(wrong_agent)
                        elif entry[1] is not None:   # verified on screening
                            plan(entry)
                        else:   # as issued: its signatures are checked over the bytes signed
                            plan(entry)
                            add_verifier(hit[2])
                            add_agent_signature(agent_sig)
                            add_operator_signature(operator_sig)
                            add_message(hit[3])
                        continue
            usual = False
            try:
                if type(item) is SignedContract:
                    contract = item.contract
                    if type(contract) is Contract:
                        cid = contract.contract_id
                        aid = contract.agent_id
                        nonce = contract.nonce
                        start = contract.window_start_s
                        end = contract.window_end_s
                        power = contract.power_mw
                        price = contract.price_per_mwh
                        operator = contract.operator_id
                        product = contract.product
                        round_index = contract.round_index
                        agent_sig = item.agent_signature
                        operator_sig = item.operator_signature
                        position = agent_index(aid) if type(aid) is str else None
                        usual = (
                            position is not None
                            and type(cid) is str
                            and type(nonce) is bytes
                            and len(nonce) == _NONCE_BYTES
                            and type(agent_sig) is bytes
                            and len(agent_sig) == sig_len
                            and type(operator_sig) is bytes
                            and len(operator_sig) == sig_len
                            and type(operator) is str
                            and operator == operator_id
                            and type(product) is str
                            and product in product_bytes
                            and type(round_index) is int
                            and type(power) is float
                            and type(price) is float
                            and type(start) is float
                            and type(end) is float
                            and isfinite(power)
                            and isfinite(price)
                            and isfinite(start)
                            and isfinite(end)
                            and end > start
                        )
                        if usual:
                            cid_bytes = cid.encode()   # UTF-8
                            aid_bytes = agent_bytes[position]
                            product_b = product_bytes[product]
                            message = join((
                                pack(_CONTRACT_MAGIC, CONTRACT_FORMAT_VERSION, round_index,
                                     power, price, start, end, nonce, len(cid_bytes),
                                     len(aid_bytes), n_operator, len(product_b)),
                                cid_bytes, aid_bytes, operator_bytes, product_b,
                            ))
            except _MALFORMED_ERRORS:   # e.g. an unencodable id or a round >= 2**64
                usual = False
            if not usual:
                plan(None)
                slow_expected.append(expected)
            elif expected is not None and aid != expected:
                plan(wrong_agent)
            else:
                plan(((cid, aid, nonce, start, end, power, price, operator, product,
                       round_index, contract, agent_sig, operator_sig), None))
                add_verifier(verifiers[position])
                add_agent_signature(agent_sig)
                add_operator_signature(operator_sig)
                add_message(message)

        # pass 2: every fast-path contract's signatures at once
        verdicts = registry._verify_many(operator_verify, agent_verifiers, agent_signatures,
                                         operator_signatures, messages)
        return plans, slow_expected, iter(verdicts)

    def screen_batch(
        self,
        signed: Sequence[SignedContract],
        now_s: float,
        expected_agents: Sequence[str | None] | None = None,
    ) -> list[RejectReason | None]:
        """Check a batch on receipt: each item's form, identities, expected agent and both
        signatures (the first failing reason of :meth:`verify` among ``malformed``,
        ``unknown_identity``, ``wrong_agent``, ``bad_agent_signature``,
        ``bad_operator_signature``), then ``replayed`` for the replay evidence there is
        before the window opens (as :meth:`authenticate`: an earlier epoch's nonce, an id
        or nonce already accepted) and ``expired`` for a window that ends by ``now_s``.

        Nothing is counted, audited or used up — :meth:`verify_batch` at dispatch decides,
        once — and the clock does not move. What an agent may rely on before dispatch
        (the schedule it observes, the limits the kernel plans with) should count only
        the items that pass. The signature verdicts of this batch's usual items are kept
        (for these objects only, until the next call or :meth:`reset_replay_window`) and
        reused by the next :meth:`verify_batch` that gets the same object still holding
        the same contract, field values and signatures (an object changed behind its
        frozen fields since is verified afresh): one signature check and one encoding
        per contract, as without screening. A contract of the last :meth:`issue` batch,
        unchanged since, is checked over the bytes issue encoded from the same objects
        (see :meth:`_screen`): no encoding at all after issue.

        :param signed: the contracts as received (possibly tampered).
        :param now_s: simulated receipt time, s.
        :param expected_agents: per item, the agent it was delivered to (or None).
        :return: the reason per item, ``None`` for an authentic, still useful one.
        :raises ValueError: for a length mismatch or a non-finite ``now_s``.
        """
        if isinstance(now_s, bool) or not isinstance(now_s, Real) or not math.isfinite(now_s):
            raise ValueError(f"now_s={now_s!r} must be a finite number of simulated seconds")
        items = signed if type(signed) is list else list(signed)
        if expected_agents is not None and len(expected_agents) != len(items):
            raise ValueError(
                f"expected_agents has {len(expected_agents)} items; it must match signed ({len(items)})"
            )
        plans, slow_expected, verdicts = self._screen(items, expected_agents, None,
                                                      self._issued)
        slow = iter(slow_expected)
        screened: dict[int, tuple] = {}
        reasons: list[RejectReason | None] = []
        add_reason = reasons.append
        tag, used_ids, used_nonces = self._epoch_tag, self._used_ids, self._used_nonces
        for item, entry in zip(items, plans, strict=True):
            if type(entry) is tuple:
                seen = entry[0]
                code = next(verdicts)
                screened[id(item)] = (item, (seen, code))
                if code:
                    add_reason(_SIGNATURE_VERDICTS[code])
                    continue
                cid, nonce, end = seen[0], seen[2], seen[4]
            elif entry is None:
                reason, contract = self._authenticate(item, next(slow))
                if contract is None:
                    add_reason(reason)
                    continue
                cid, nonce, end = contract.contract_id, contract.nonce, contract.window_end_s
            else:   # WRONG_AGENT
                add_reason(entry)
                continue
            # the replay evidence of _replayed, inlined
            if not nonce.startswith(tag) or cid in used_ids or nonce in used_nonces:
                add_reason(RejectReason.REPLAYED)
            elif end <= now_s:
                add_reason(RejectReason.EXPIRED)
            else:
                add_reason(None)
        self._screened = screened
        return reasons

    def _decide(self, items: list[Any], plans: list[Any], slow_expected: list[str | None],
                verdicts: Iterator[int], now_s: float
                ) -> tuple[list[RejectReason | None], list[str]]:
        """Pass 3 of :meth:`_check_batch`: the verdicts, in input order."""
        tolerance = self._tolerance_s
        clock = self._clock_s
        tag = self._epoch_tag
        used_ids, used_nonces = self._used_ids, self._used_nonces
        expiry = self._expiry
        check = self._check
        bucket_end = bucket_ids = bucket_nonces = None
        reasons: list[RejectReason | None] = []
        add_reason = reasons.append
        accepted: list[str] = []
        accept = accepted.append
        slow_expectations = iter(slow_expected)
        for item, entry in zip(items, plans, strict=True):
            if type(entry) is not tuple:
                if entry is None:
                    reason = check(item, now_s, next(slow_expectations))
                    if reason is None:
                        accept(item.contract.contract_id)
                    add_reason(reason)
                else:   # WRONG_AGENT
                    add_reason(entry)
                continue
            seen, code = entry
            if code is None:
                code = next(verdicts)
            if code:
                add_reason(_SIGNATURE_VERDICTS[code])
                continue
            cid, nonce, start, end = seen[0], seen[2], seen[3], seen[4]
            if now_s < start - tolerance:
                add_reason(RejectReason.NOT_YET_VALID)
            elif clock >= end:
                add_reason(RejectReason.EXPIRED)
            elif not nonce.startswith(tag) or cid in used_ids or nonce in used_nonces:
                add_reason(RejectReason.REPLAYED)
            else:
                used_ids.add(cid)
                used_nonces.add(nonce)
                if end != bucket_end:
                    bucket = expiry.get(end)
                    if bucket is None:
                        expiry[end] = bucket = ([], [])
                        heapq.heappush(self._expiry_ends, end)
                    bucket_end = end
                    bucket_ids, bucket_nonces = bucket
                bucket_ids.append(cid)  # type: ignore[union-attr]
                bucket_nonces.append(nonce)  # type: ignore[union-attr]
                add_reason(None)
                accept(cid)
        return reasons, accepted

    def _count_and_audit(
        self,
        items: list[Any],
        reasons: list[RejectReason | None],
        now_s: float,
        accepted_ids: list[str] | None = None,
    ) -> None:
        """Count the verdicts and write the batch's audit entries.

        :param accepted_ids: the ids of the accepted items, in order, if the caller
            already collected them.
        """
        if accepted_ids is None:
            accepted_ids = [
                item.contract.contract_id
                for item, reason in zip(items, reasons, strict=True)
                if reason is None
            ]
        n_valid = len(accepted_ids)
        self._verified += n_valid
        audit = self._audit
        rejections = []
        if n_valid < len(reasons):
            by_reason = self._rejected_by_reason
            for item, reason in zip(items, reasons, strict=True):
                if reason is not None:
                    by_reason[reason.value] += 1
                    if audit is not None:
                        rejections.append(
                            {"contract_id": _describe_id(item), "reason": reason.value}
                        )
        if audit is None:
            return
        if accepted_ids:
            # append("contract_verified", now_s=..., count=..., contract_ids=...) rendered
            # directly (sorted keys, the same JSON text)
            audit._append_rendered(
                "contract_verified",
                '"contract_verified"',
                {"contract_ids": accepted_ids, "count": n_valid, "now_s": now_s},
                '{"contract_ids":' + _json_str_list(accepted_ids) + ',"count":' + str(n_valid)
                + ',"now_s":' + repr(now_s) + "}",
            )
        if rejections:
            audit.append(
                "contract_rejected", now_s=now_s, count=len(rejections), rejections=rejections
            )

    def __repr__(self) -> str:
        return (
            f"ContractLedger(mode={self._registry.mode!r}, epoch={self._epoch}, signed={self._signed}, "
            f"verified={self._verified}, rejected={self.rejected}, replay_memory={len(self._used_ids)})"
        )

    def __getstate__(self) -> None:
        raise TypeError(
            "ContractLedger holds an IdentityRegistry (private keys) and cannot be pickled"
        )


def _per_award(name: str, values: object, n: int) -> np.ndarray:
    """``values`` as a float array of shape ``(n,)`` (a scalar is repeated)."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape == (n,):
        return array
    if array.shape != ():
        raise ValueError(
            f"{name} has shape {array.shape}; expected a scalar or ({n},), one per award"
        )
    out = np.empty(n)
    out.fill(array)
    return out


def _describe_id(item: object) -> str:
    """The contract id of a presented item for the audit log, or a placeholder (read only
    from a :class:`SignedContract` holding a :class:`Contract`: another object's
    attributes may run arbitrary code)."""
    if type(item) is SignedContract:
        contract = getattr(item, "contract", None)   # a slot: reading it runs no code
        if type(contract) is Contract:   # checked before reading contract_id (a slot too)
            cid = contract.contract_id
            if type(cid) is str:
                return cid[:200]
    return "<malformed>"


# --------------------------------------------------------------------------- adversary


@dataclass(frozen=True, slots=True)
class Attack:
    """A tampered presentation of a contract and the rejection it must get.

    :param name: short attack name.
    :param signed: the contract as the adversary presents it.
    :param now_s: the time at which it is presented.
    :param expected_agent: the agent it is presented for (None: not checked).
    :param expected_reason: the reason verification must report.
    """

    name: str
    signed: SignedContract
    now_s: float
    expected_agent: str | None
    expected_reason: RejectReason


class Adversary:
    """Builds tampered variants of a genuine :class:`SignedContract`.

    The adversary holds no key of the registry: it flips, re-signs with its own
    keys, edits signed fields, renames identities, replays and re-times. Every
    method returns a new object; the genuine contract is never modified.

    :param mode: the registry's mode (signature lengths and the scheme of the
        adversary's own keys).
    :param rng: generator or seed for forged bytes and the adversary's own keys.
    """

    def __init__(
        self, *, mode: str = "ed25519", rng: np.random.Generator | int | None = None
    ) -> None:
        self._mode = _check_mode(mode)
        self._rng = _as_generator(rng)
        self._own = IdentityRegistry(
            ["mallory"],
            operator_id="mallory-operator",
            mode=mode,
            seed=int(self._rng.integers(2**62)),
        )

    @property
    def mode(self) -> str:
        """The signature scheme the adversary mimics."""
        return self._mode

    def _random_signature(self, genuine: bytes) -> bytes:
        forged = self._rng.bytes(_SIGNATURE_LENGTH[self._mode])
        return forged if forged != genuine else bytes(b ^ 0xFF for b in forged)

    def forge_agent_signature(self, signed: SignedContract) -> SignedContract:
        """Replace the agent signature by random bytes of the right length."""
        return replace(signed, agent_signature=self._random_signature(signed.agent_signature))

    def forge_operator_signature(self, signed: SignedContract) -> SignedContract:
        """Replace the operator countersignature by random bytes of the right length."""
        return replace(signed, operator_signature=self._random_signature(signed.operator_signature))

    def alter_power(self, signed: SignedContract, power_mw: float | None = None) -> SignedContract:
        """Change ``power_mw`` after signing (default: double it, or 1 MW if zero)."""
        old = signed.contract.power_mw
        new = power_mw if power_mw is not None else (2.0 * old if old else 1.0)
        return replace(signed, contract=replace(signed.contract, power_mw=float(new)))

    def alter_price(
        self, signed: SignedContract, price_per_mwh: float | None = None
    ) -> SignedContract:
        """Change ``price_per_mwh`` after signing (default: +1000 $/MWh)."""
        new = price_per_mwh if price_per_mwh is not None else signed.contract.price_per_mwh + 1000.0
        return replace(signed, contract=replace(signed.contract, price_per_mwh=float(new)))

    def rename_agent(self, signed: SignedContract, agent_id: str) -> SignedContract:
        """Name another agent in the signed contract, keeping the signatures."""
        return replace(signed, contract=replace(signed.contract, agent_id=agent_id))

    def sign_with_wrong_key(self, signed: SignedContract) -> SignedContract:
        """Re-sign the genuine bytes as the agent with the adversary's own key."""
        message = signed.contract.canonical_bytes()
        return replace(signed, agent_signature=self._own.sign("mallory", message))

    def impersonate(self, signed: SignedContract, identity: str = "mallory") -> SignedContract:
        """A contract naming an unregistered agent, signed with the adversary's keys."""
        contract = replace(signed.contract, agent_id=identity)
        message = contract.canonical_bytes()
        return SignedContract(
            contract,
            self._own.sign("mallory", message),
            self._own.sign("mallory-operator", message),
        )

    def malformed(self, signed: SignedContract) -> SignedContract:
        """A contract whose nonce was truncated in transit (bypasses validation)."""
        contract = replace(signed.contract)
        object.__setattr__(contract, "nonce", signed.contract.nonce[:7])
        return replace(signed, contract=contract)

    @staticmethod
    def expired_time_s(signed: SignedContract) -> float:
        """The first instant at which the contract is expired (``window_end_s``)."""
        return float(signed.contract.window_end_s)

    @staticmethod
    def early_time_s(signed: SignedContract, tolerance_s: float) -> float:
        """An instant before the window opens (more than ``tolerance_s`` early)."""
        start = float(signed.contract.window_start_s)
        return start - tolerance_s - max(1e-3, 1e-9 * abs(start))

    def attacks(
        self, signed: SignedContract, *, now_s: float, other_agent: str, tolerance_s: float
    ) -> list[Attack]:
        """Every attack on one genuine contract, with the reason it must get.

        Present them *after* the genuine contract has been accepted at ``now_s``
        (the ``replay`` attack is the genuine contract itself). ``other_agent`` must
        be a registered agent other than the contract's.

        :param signed: a genuine contract, valid at ``now_s``.
        :param now_s: a time inside its window.
        :param other_agent: another registered agent id.
        :param tolerance_s: the verifier's early tolerance.
        :return: the attacks.
        """
        owner = signed.contract.agent_id
        if other_agent == owner:
            raise ValueError(f"other_agent={other_agent!r} must differ from the contract's agent")
        r = RejectReason
        return [
            Attack(
                "forged_agent_signature",
                self.forge_agent_signature(signed),
                now_s,
                None,
                r.BAD_AGENT_SIGNATURE,
            ),
            Attack(
                "forged_operator_signature",
                self.forge_operator_signature(signed),
                now_s,
                None,
                r.BAD_OPERATOR_SIGNATURE,
            ),
            Attack("altered_power", self.alter_power(signed), now_s, None, r.BAD_AGENT_SIGNATURE),
            Attack("altered_price", self.alter_price(signed), now_s, None, r.BAD_AGENT_SIGNATURE),
            Attack(
                "wrong_key", self.sign_with_wrong_key(signed), now_s, None, r.BAD_AGENT_SIGNATURE
            ),
            Attack("unknown_identity", self.impersonate(signed), now_s, None, r.UNKNOWN_IDENTITY),
            Attack(
                "renamed_agent",
                self.rename_agent(signed, other_agent),
                now_s,
                None,
                r.BAD_AGENT_SIGNATURE,
            ),
            Attack(
                "renamed_agent_presented",
                self.rename_agent(signed, other_agent),
                now_s,
                owner,
                r.WRONG_AGENT,
            ),
            Attack("presented_for_other_agent", signed, now_s, other_agent, r.WRONG_AGENT),
            Attack("malformed", self.malformed(signed), now_s, None, r.MALFORMED),
            Attack(
                "not_yet_valid",
                signed,
                self.early_time_s(signed, tolerance_s),
                None,
                r.NOT_YET_VALID,
            ),
            Attack("replay", signed, now_s, None, r.REPLAYED),
            Attack("expired", signed, self.expired_time_s(signed), None, r.EXPIRED),
        ]

    def __repr__(self) -> str:
        return f"Adversary(mode={self._mode!r})"


# --------------------------------------------------------------------------- audit chain

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry of a chain."""

AUDIT_KINDS = (
    "contract_signed",
    "contract_verified",
    "contract_rejected",
    "contract_lost",
    "action_blocked",
    "emergency",
    "head_signed",
)
"""Entry kinds written by gridswarm; other non-empty kinds are accepted too."""

AUDIT_PROBLEMS = ("altered", "removed", "inserted", "reordered", "truncated", "malformed",
                  "empty")
"""Problems :class:`AuditVerification` can report (``empty``: an audit *file* with no
entries, see :func:`verify_audit_file`)."""

#: why an empty audit file is not a verified chain (the message of problem ``empty``)
EMPTY_AUDIT_FILE = ("no entries (the file is empty, so nothing is verified; a file cut to 0 "
                    "bytes looks the same, and an environment leaves an empty file only when "
                    "it is closed before its first reset)")

#: what a head signature signs starts with this (v3: the head entry's own fields are
#: signed, among them ``final``, which marks the writer's closing head)
_HEAD_MESSAGE_PREFIX = b"gridswarm-audit-head-v3\x00"
#: the second format: the head entry's own fields signed, no ``final`` field (written
#: before closing heads existed); still accepted, but it cannot show that a file is whole
_HEAD_MESSAGE_PREFIX_V2 = b"gridswarm-audit-head-v2\x00"
#: the first format, which signed only the covered count and the chain head: the head
#: entry's other fields (identity, public_key, any added field) could be edited unseen
_HEAD_MESSAGE_PREFIX_V1 = b"gridswarm-audit-head-v1\x00"
_ENTRY_KEYS = frozenset({"index", "kind", "fields", "prev_hash", "hash"})
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_LOWER_HEX = re.compile(r"[0-9a-f]*\Z")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One chain entry.

    ``hash = SHA-256(canonical JSON of {"fields", "index", "kind", "prev_hash"})``
    where canonical JSON has sorted keys, no whitespace, ASCII only and no NaN.

    :param index: position in the chain (0 = first).
    :param kind: entry kind, e.g. one of :data:`AUDIT_KINDS`.
    :param fields: JSON-compatible payload.
    :param prev_hash: hex hash of the previous entry (:data:`GENESIS_HASH` for index 0).
    :param hash: hex hash of this entry.
    """

    index: int
    kind: str
    fields: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as the JSON object of its JSONL line."""
        return {
            "index": self.index,
            "kind": self.kind,
            "fields": self.fields,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    def to_json_line(self) -> str:
        """The JSONL line (with trailing newline) this entry is stored as."""
        body = _canonical_json(self.index, self.kind, self.fields, self.prev_hash)
        return body[:-1] + ',"hash":"' + self.hash + '"}\n'


class _AuditEntryLayout:
    """Mutable twin of :class:`AuditEntry` (see :class:`_ContractLayout`)."""

    __slots__ = AuditEntry.__slots__

    def __init__(self, index: int, kind: str, fields: dict[str, Any], prev_hash: str,
                 hash: str) -> None:  # noqa: A002
        self.index = index
        self.kind = kind
        self.fields = fields
        self.prev_hash = prev_hash
        self.hash = hash


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """Result of verifying an audit chain.

    :param ok: True when no problem was found.
    :param index: chain index of the first bad entry (for a chain starting at
        genesis: its 0-based line number), or of the first missing one; None if ok.
    :param problem: one of :data:`AUDIT_PROBLEMS`, None if ok.
    :param message: human-readable verdict.
    :param n_entries: entries read before stopping (all of them when ok).
    :param head_hash: hash of the last entry read in order (None if none).
    :param ed25519_heads: ``head_signed`` entries of the ``ed25519`` scheme read (when
        ok: all of them, checked only if a public key or registry was given): a file
        with such heads can show a cut tail to a verifier holding the operator's key.
    :param hmac_heads: ``head_signed`` entries of the ``hmac`` scheme read (counted as
        :attr:`ed25519_heads`): checkable only with the HMAC key, i.e. in the process
        that holds the registry (``AuditLog.verify(registry=...)``).
    :param closed: with a public key or registry, whether the chain ends with the
        writer's verified *closing* head (``final: true``): True = the file is whole as
        the writer finished it; False = it ends elsewhere (a head that only ends an
        episode: the writer may still be running or have crashed, or the file was cut
        after that head; or no valid head at all); None = not known (no key given, the
        chain broke before its end, or its last head is in the v2 format, which predates
        closing heads).
    :param episodes: ``episode_start`` entries read (the environment writes one per
        reset), to say after which episode an open file ends.

    Its truth value is :attr:`ok`, so ``assert log.verify()`` fails on a broken chain.
    """

    ok: bool
    index: int | None
    problem: str | None
    message: str
    n_entries: int = 0
    head_hash: str | None = None
    ed25519_heads: int = 0
    hmac_heads: int = 0
    closed: bool | None = None
    episodes: int = 0

    def __bool__(self) -> bool:
        return bool(self.ok)


def _normalise(value: Any) -> Any:
    """Convert a field value to plain JSON types (numpy, bytes, enums, non-finite floats)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else repr(value)
    if t is list or t is tuple:
        if all(type(v) is str for v in value):  # the common case: a list of ids
            return list(value)
        return [_normalise(v) for v in value]
    if t is dict:
        # keys sorted here, as canonical JSON sorts them (see _canonical_json_presorted)
        keys = [_field_key(k) for k in value]
        return {k: _normalise(value[k]) for k in sorted(keys)}
    if isinstance(value, Enum):
        return _normalise(value.value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return _normalise(float(value))
    if isinstance(value, np.ndarray):
        return _normalise(value.tolist())
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return _normalise(dict(value))
    if isinstance(value, list | tuple | set | frozenset):
        return [_normalise(v) for v in value]
    raise ValueError(f"audit field value {value!r} of type {t.__name__} is not JSON-serialisable")


def _field_key(key: object) -> str:
    if not isinstance(key, str):
        raise ValueError(f"audit field key {key!r} must be a str")
    return str(key)


#: the canonical JSON encoder, built once (``json.dumps`` with these options builds a new
#: encoder on every call, which costs more than encoding a typical entry)
_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


_PRESORTED_ENCODER = json.JSONEncoder(
    sort_keys=False, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def _canonical_json(index: int, kind: str, fields: dict[str, Any], prev_hash: str) -> str:
    return _CANONICAL_ENCODER.encode(
        {"fields": fields, "index": index, "kind": kind, "prev_hash": prev_hash}
    )


def _canonical_json_presorted(
    index: int, kind: str, fields: dict[str, Any], prev_hash: str
) -> str:
    """:func:`_canonical_json` of ``fields`` whose dicts (at every level) already have
    sorted keys, as :func:`_normalise` builds them: the same text without sorting again."""
    return _PRESORTED_ENCODER.encode(
        {"fields": fields, "index": index, "kind": kind, "prev_hash": prev_hash}
    )


#: the characters ``json`` writes verbatim with ``ensure_ascii=True``: printable ASCII
#: except ``"`` and ``\\`` (everything else is escaped)
_JSON_VERBATIM = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _json_str_list(items: list[str]) -> str:
    """Canonical JSON of a list of plain ``str`` (what the canonical encoder writes).

    When every string consists of characters ``json`` writes verbatim
    (:data:`_JSON_VERBATIM`), the usual case for contract ids, the list is joined
    directly; otherwise it goes through the encoder.
    """
    if not items:
        return "[]"
    joined = '","'.join(items)
    if joined.isascii() and (
        joined.encode("ascii").translate(None, _JSON_VERBATIM) == b'"' * (2 * len(items) - 2)
    ):
        return '["' + joined + '"]'
    return _PRESORTED_ENCODER.encode(items)


def _entry_hash(index: int, kind: str, fields: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(
        _canonical_json(index, kind, fields, prev_hash).encode("ascii")
    ).hexdigest()


def _head_message(fields: dict[str, Any]) -> bytes:
    """The bytes a ``head_signed`` entry's signature signs: ``b"gridswarm-audit-head-v3\\x00"
    || u64(covered_entries) || head_hash bytes || canonical JSON of every field of the
    entry except ``signature``) (so no field of the head, ``final`` included, can be
    edited, added or removed without breaking its signature; the verifier also checks
    that ``covered_entries`` and ``head_hash`` are the entry's index and ``prev_hash``).

    A head without a ``final`` field is in the v2 format (written before closing heads
    existed): the same bytes after ``b"gridswarm-audit-head-v2\\x00"``. Removing
    ``final`` from a v3 head or adding it to a v2 head therefore changes the prefix as
    well as the JSON, and the signature fails.

    :param fields: the head's fields (with or without ``signature``), plain JSON types.
    :raises ValueError: for fields that are not canonical JSON.
    """
    signed = {k: v for k, v in fields.items() if k != "signature"}
    prefix = _HEAD_MESSAGE_PREFIX if "final" in fields else _HEAD_MESSAGE_PREFIX_V2
    return (prefix + struct.pack(">Q", fields["covered_entries"])
            + bytes.fromhex(fields["head_hash"]) + _CANONICAL_ENCODER.encode(signed).encode("ascii"))


def _head_message_v1(covered_entries: int, head_hash: str) -> bytes:
    """What a head signature signed in the first format (for a clear verdict only: such
    a head is never accepted, see :data:`_HEAD_MESSAGE_PREFIX_V1`)."""
    return _HEAD_MESSAGE_PREFIX_V1 + struct.pack(">Q", covered_entries) + bytes.fromhex(head_hash)


def check_new_audit_file(path: str | os.PathLike[str], label: str) -> None:
    """Refuse to start an audit chain in ``path`` when that would destroy something.

    An audit trail is evidence: a non-empty existing file is never overwritten (an empty
    one, e.g. made by ``touch``, is fine), a symbolic link is never written through, and
    a directory is no file path.

    :param label: how the message names the setting or flag (e.g. ``"--audit"``).
    :raises ValueError: naming the path, what is wrong and what to do instead.
    """
    p = Path(path)
    if p.is_symlink():
        raise _audit_symlink_error(path, label)
    if p.is_dir():
        raise ValueError(f"{label} {str(path)!r} is a directory; expected a file path")
    if p.is_file() and p.stat().st_size > 0:
        raise _existing_audit_file(path, label, p.stat().st_size)


def _audit_symlink_error(path: str | os.PathLike[str], label: str) -> ValueError:
    return ValueError(f"{label} {str(path)!r} is a symbolic link; an audit trail is written "
                      "only to the path given, never through a link: expected a new file path "
                      "or an existing empty regular file")


def _existing_audit_file(path: str | os.PathLike[str], label: str, size: int) -> ValueError:
    return ValueError(f"{label} {str(path)!r} already exists ({size:,} bytes): an audit trail "
                      "is never overwritten (only a new path or an existing empty file is "
                      "allowed); choose a new path or remove the old file")


def _open_new_audit_file(path: Path) -> Any:
    """Open ``path`` to write a new chain without ever destroying an existing file.

    The file is created exclusively (``open(path, "x")``: ``O_CREAT | O_EXCL``, which
    also refuses a symbolic link, dangling or not). An existing file is opened without
    truncating it or following a symbolic link (``O_WRONLY | O_APPEND | O_NOFOLLOW``;
    a link to an empty file is refused, not followed) and kept only
    when that same handle shows an empty regular file (``os.fstat``: size 0, e.g. made by
    ``touch``), as :func:`check_new_audit_file` allows; anything else is closed untouched
    and refused. The check and the writes use one handle, so no other writer's bytes can
    be truncated between them (with ``O_APPEND`` they would only precede the chain, which
    the verifier then reports).

    :raises ValueError: for an existing non-empty file, a symbolic link or something
        that is no regular file (a directory), naming the path, what exists and what is allowed.
    :raises OSError: when the file cannot be created or opened (permissions, missing
        directory).
    """
    label = "AuditLog path"
    try:
        return open(path, "x", encoding="ascii", newline="\n")
    except FileExistsError:
        pass
    if os.path.islink(path):
        raise _audit_symlink_error(path, label)
    try:
        # O_NOFOLLOW: a symbolic link swapped in after the check above is refused too.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    except IsADirectoryError:
        raise ValueError(f"{label} {str(path)!r} is a directory; expected a file path") from None
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise _audit_symlink_error(path, label) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{label} {str(path)!r} exists and is no regular file; expected "
                             "a new file path or an existing empty file")
        if info.st_size > 0:
            raise _existing_audit_file(path, label, info.st_size)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding="ascii", newline="\n")


class AuditLog:
    """Append-only SHA-256 hash chain of audit entries, optionally streamed as JSONL.

    :param path: JSONL file to write, created exclusively; an existing file is never
        overwritten: it is refused unless it is empty (see :func:`_open_new_audit_file`);
        None = memory only.
    :param keep_entries: keep entries in memory (False: only the head hash and count).
    :param max_entries_in_memory: keep at most this many recent entries (None = all).
    :param flush_each_append: flush the file after every append (default: buffered;
        call :meth:`flush` or :meth:`close`, or use the log as a context manager).
    :raises ValueError: for a bad ``max_entries_in_memory``, or a ``path`` that exists
        and is not an empty regular file.
    :raises OSError: when ``path`` cannot be created or opened.

    Memory is bounded whenever ``keep_entries=False`` or ``max_entries_in_memory``
    is set: the log then holds the head (index and hash), the retained window and
    the hash anchoring it. :meth:`verify` checks the file when there is one
    (against the in-memory head and retained hashes too), else the retained window.
    """

    __slots__ = (
        "_anchor_hash",
        "_closing_head_signed",
        "_entries",
        "_file",
        "_flush_each_append",
        "_head_hash",
        "_keep_entries",
        "_n_entries",
        "_path",
    )

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        keep_entries: bool = True,
        max_entries_in_memory: int | None = None,
        flush_each_append: bool = False,
    ) -> None:
        if max_entries_in_memory is not None and (
            isinstance(max_entries_in_memory, bool)
            or not isinstance(max_entries_in_memory, Integral)
            or max_entries_in_memory < 1
        ):
            raise ValueError(
                f"max_entries_in_memory={max_entries_in_memory!r} must be a positive int or None"
            )
        self._path = None if path is None else Path(path)
        self._keep_entries = bool(keep_entries)
        self._flush_each_append = bool(flush_each_append)
        maxlen = int(max_entries_in_memory) if max_entries_in_memory is not None else None
        self._entries: deque[AuditEntry] = deque(maxlen=maxlen if self._keep_entries else 0)
        self._anchor_hash = GENESIS_HASH
        self._head_hash = GENESIS_HASH
        self._n_entries = 0
        self._closing_head_signed = False
        self._file = None if self._path is None else _open_new_audit_file(self._path)

    # -- state
    @property
    def path(self) -> Path | None:
        """The JSONL file, if any."""
        return self._path

    @property
    def head_hash(self) -> str:
        """Hash of the last entry (:data:`GENESIS_HASH` when empty)."""
        return self._head_hash

    @property
    def n_entries(self) -> int:
        """Entries appended since construction."""
        return self._n_entries

    def __len__(self) -> int:
        return self._n_entries

    @property
    def closing_head_signed(self) -> bool:
        """True once :meth:`sign_head` wrote the closing head (``final=True``): the chain
        is finished and takes no more entries."""
        return self._closing_head_signed

    @property
    def entries(self) -> tuple[AuditEntry, ...]:
        """The entries retained in memory (the most recent ones)."""
        return tuple(self._entries)

    # -- writing
    def append(self, kind: str, **fields: Any) -> AuditEntry:
        """Append an entry to the chain (and to the file, if any).

        :param kind: entry kind (non-empty str), e.g. one of :data:`AUDIT_KINDS`.
        :param fields: JSON-compatible payload; numpy scalars/arrays, bytes (hex) and
            enums are converted, non-finite floats stored as strings.
        :return: the new entry.
        :raises ValueError: for an empty kind or a non-serialisable field.
        :raises RuntimeError: after :meth:`close` or the closing head.
        """
        if type(kind) is not str or not kind:
            raise ValueError(
                f"kind={kind!r} must be a non-empty str, e.g. one of {', '.join(AUDIT_KINDS)}"
            )
        if self._file is None and (self._path is not None or self._closing_head_signed):
            self._refuse_append()
        clean = {k: _normalise(fields[k]) for k in sorted(fields)}
        index = self._n_entries
        return self._commit(
            index, kind, clean, _canonical_json_presorted(index, kind, clean, self._head_hash)
        )

    def _append_rendered(
        self, kind: str, kind_json: str, fields: dict[str, Any], fields_json: str
    ) -> AuditEntry:
        """:meth:`append` for callers that already hold the entry's canonical form.

        For internal hot paths (the ledger's batch entries). ``kind`` must be a
        non-empty str and ``kind_json`` its JSON string; ``fields`` must be what
        :meth:`append` would store (plain JSON types, keys sorted at every level) and
        ``fields_json`` its canonical JSON text. The entry, its hash and its line are
        then exactly those :meth:`append` writes (tests compare the two).

        :raises RuntimeError: after :meth:`close` or the closing head.
        """
        if self._file is None and (self._path is not None or self._closing_head_signed):
            self._refuse_append()
        index = self._n_entries
        body = (
            '{"fields":' + fields_json + ',"index":' + str(index) + ',"kind":' + kind_json
            + ',"prev_hash":"' + self._head_hash + '"}'
        )
        return self._commit(index, kind, fields, body)

    def _refuse_append(self) -> None:
        """Raise the ``RuntimeError`` for an append to a closed or finished log."""
        where = "" if self._path is None else repr(str(self._path))
        if self._closing_head_signed:
            raise RuntimeError(
                f"AuditLog({where}) ends with its closing head (sign_head(final=True), entry "
                f"{self._n_entries - 1}): a finished audit chain takes no more entries; start "
                "a new log (a new file) for more")
        raise RuntimeError(f"AuditLog({where}) is closed")

    def _commit(self, index: int, kind: str, clean: dict[str, Any], body: str) -> AuditEntry:
        """Hash the canonical ``body`` of entry ``index``, write it and advance the head."""
        digest = sha256(body.encode("ascii")).hexdigest()
        entry = _AuditEntryLayout(index, kind, clean, self._head_hash, digest)
        entry.__class__ = AuditEntry
        if self._file is not None:
            self._file.write(body[:-1] + ',"hash":"' + digest + '"}\n')
            if self._flush_each_append:
                self._file.flush()
        entries = self._entries
        if entries.maxlen and len(entries) == entries.maxlen:
            self._anchor_hash = entries[0].hash  # the entry about to be evicted
        entries.append(entry)  # type: ignore[arg-type]
        self._head_hash = digest
        self._n_entries = index + 1
        return entry  # type: ignore[return-value]

    def sign_head(self, registry: IdentityRegistry, identity: str = "operator", *,
                  final: bool = False) -> AuditEntry:
        """Append a ``head_signed`` entry: ``identity``'s signature over the head.

        Fields: ``identity``, ``scheme`` (the registry's mode), ``covered_entries`` (the
        number of entries before this one), ``head_hash``, ``final``, ``public_key``
        (Ed25519 only) and ``signature``, over ``b"gridswarm-audit-head-v3\\x00" ||
        u64(covered_entries) || head_hash bytes || canonical JSON of the other fields``
        (:func:`_head_message`). With the public key, a verifier then detects a truncated
        tail (the chain must end with a valid signed head), any rewrite of the covered
        entries and any edit of the head entry itself (the last entry of a file has no
        successor whose ``prev_hash`` would show it).

        ``final=True`` writes the *closing* head: the chain is finished, so the log is
        flushed and its file closed, and every later append raises ``RuntimeError``. A
        verifier with the key then tells a finished file (it ends with this head) from
        one cut right after an earlier, non-final head, which it reports as not closed.

        :param registry: the registry holding ``identity``'s key.
        :param identity: the signer (default the operator).
        :param final: True for the writer's closing head (the last entry it writes).
        :return: the ``head_signed`` entry.
        :raises UnknownIdentityError: for an identity the registry does not hold.
        :raises ValueError: for a ``final`` that is not True or False.
        :raises RuntimeError: after :meth:`close` or the closing head.
        """
        if type(final) is not bool:
            raise ValueError(f"final={final!r} must be True (the closing head) or False")
        registry._position(identity)   # an unknown signer fails before anything is built
        fields: dict[str, Any] = {
            "identity": str(identity),
            "scheme": registry.mode,
            "covered_entries": self._n_entries,
            "head_hash": self._head_hash,
            "final": final,
        }
        if registry.mode == "ed25519":
            fields["public_key"] = registry.public_key_bytes(identity).hex()
        fields["signature"] = registry.sign(identity, _head_message(fields)).hex()
        entry = self.append("head_signed", **fields)
        if final:
            self._closing_head_signed = True
            self.close()
        return entry

    def flush(self) -> None:
        """Flush buffered lines to the file (no-op without a file)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file; further appends raise ``RuntimeError``."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- verifying
    def verify(
        self, public_key: bytes | None = None, *, registry: IdentityRegistry | None = None
    ) -> AuditVerification:
        """Verify the chain; report the first problem.

        With a file: the file is verified, and its entry count, head and every
        retained entry's hash are compared with this log's (so an in-process check
        catches a truncated or rewritten file even without signatures). Without a
        file: the retained entries are verified from their anchor. With
        ``keep_entries=False`` and no file there is nothing to re-check; the result
        is ok and says so.

        :param public_key: operator's raw Ed25519 public key; Ed25519 signed heads
            are checked and the chain must end with a valid signed head (a key that is
            no valid Ed25519 public key, such as the all-zero one, raises ValueError:
            :func:`weak_public_key_problem`).
        :param registry: alternatively, check signed heads of either scheme with
            this registry (the chain must then end with a valid signed head, signed by
            the registry's operator: a head an agent signed is refused).
        :return: the verdict. The writer knows whether it signed its closing head: after
            it, the chain must end with that head; before, a chain ending with a non-final
            head is fine (``closed`` False, the log is still open).
        """
        known = {e.index: e.hash for e in self._entries}
        if self._path is not None:
            self.flush()
            if not self._path.is_file():
                return AuditVerification(False, 0, "removed", f"audit file {self._path} is missing")
            return _verify_records(
                _file_records(self._path),
                public_key=public_key,
                registry=registry,
                known_hashes=known,
                expected_count=self._n_entries,
                expected_head=self._head_hash,
                allow_open=not self._closing_head_signed,
            )
        if not self._keep_entries:
            return AuditVerification(
                True,
                None,
                None,
                f"{self._n_entries} entries, head {self._head_hash} (entries not retained; nothing to re-check)",
                self._n_entries,
                self._head_hash,
            )
        first = self._entries[0].index if self._entries else self._n_entries
        return _verify_records(
            ((e.index, e.to_dict(), True) for e in self._entries),
            start_index=first,
            start_prev_hash=self._anchor_hash,
            public_key=public_key,
            registry=registry,
            expected_count=self._n_entries,
            expected_head=self._head_hash,
            allow_open=not self._closing_head_signed,
        )

    def __repr__(self) -> str:
        return (
            f"AuditLog(path={None if self._path is None else str(self._path)!r}, "
            f"entries={self._n_entries}, retained={len(self._entries)}, head={self._head_hash[:16]})"
        )


class _Bad:
    """A record that is not a parseable entry."""

    __slots__ = ("message", "problem")

    def __init__(self, problem: str, message: str) -> None:
        self.problem = problem
        self.message = message


def _file_records(path: Path) -> Iterator[tuple[int, Any, bool]]:
    """Yield ``(line_number, entry_dict | _Bad, ended_with_newline)`` for a JSONL file."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            complete = raw.endswith(b"\n")
            # the log ends every entry with a newline and writes no blank line, and a
            # file must be the exact bytes it wrote: a last line without its newline was
            # cut (even if the JSON before the cut is whole), a blank line was added
            if raw.strip() == b"":
                yield number, _Bad("malformed", f"line {number + 1} is blank (the log "
                                   "writes no blank lines)"), complete
                continue
            if not complete:
                yield number, _Bad("truncated", f"line {number + 1} has no final newline "
                                   "(the log ends every entry with one: the file was cut "
                                   "inside its last entry)"), complete
                continue
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:   # deep nesting
                yield (
                    number,
                    _Bad(
                        "malformed",
                        f"line {number + 1} is not a JSON object ({exc.__class__.__name__})",
                    ),
                    complete,
                )
                continue
            body = _canonical_body(record) if _schema_problem(record) is None else None
            if body is not None:
                line = body[:-1] + b',"hash":"' + record["hash"].encode() + b'"}'
                if raw != line + b"\n":
                    yield (
                        number,
                        _Bad(
                            "altered",
                            f"line {number + 1} is not its entry's canonical encoding (the "
                            "bytes were edited, e.g. a repeated key, spacing or key order)",
                        ),
                        complete,
                    )
                    continue
                # the hash of the canonical text, computed once here (see _recompute)
                record = _HashedRecord(record)
                record.recomputed = hashlib.sha256(body).hexdigest()
            yield number, record, complete


class _HashedRecord(dict):
    """A parsed entry carrying the hash of its canonical text (:func:`_file_records`
    has encoded it already to compare it with the line on disk)."""

    recomputed: str


def _canonical_body(record: dict[str, Any]) -> bytes | None:
    """The canonical text of a well-formed ``record`` without its hash, as
    :class:`AuditLog` hashes and writes it (None when its fields cannot be encoded
    canonically, e.g. NaN: the verifier reports that itself)."""
    try:
        return _canonical_json(record["index"], record["kind"], record["fields"],
                               record["prev_hash"]).encode("ascii")
    except ValueError:
        return None


def _schema_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "is not a JSON object"
    if set(record) != _ENTRY_KEYS:
        return f"has keys {sorted(record)}; expected {sorted(_ENTRY_KEYS)}"
    index = record["index"]
    if type(index) is not int or index < 0:
        return f"has index {index!r}; expected a non-negative int"
    if type(record["kind"]) is not str or not record["kind"]:
        return "has an empty or non-string kind"
    if type(record["fields"]) is not dict:
        return "has fields that are not a JSON object"
    for key in ("prev_hash", "hash"):
        if type(record[key]) is not str or not _HEX64.match(record[key]):
            return f"has {key} {record[key]!r}; expected 64 lowercase hex digits"
    return None


def _recompute(record: dict[str, Any]) -> str | None:
    if type(record) is _HashedRecord:
        return record.recomputed
    try:
        return _entry_hash(record["index"], record["kind"], record["fields"], record["prev_hash"])
    except ValueError:
        return None


class _Peekable:
    __slots__ = ("_buffer", "_it")

    def __init__(self, it: Iterable[Any]) -> None:
        self._it = iter(it)
        self._buffer: list[Any] = []

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> Any:
        if self._buffer:
            return self._buffer.pop()
        return next(self._it)

    def peek(self) -> Any:
        if not self._buffer:
            try:
                self._buffer.append(next(self._it))
            except StopIteration:
                return None
        return self._buffer[-1]


def _valid_record(item: Any) -> dict[str, Any] | None:
    """The entry dict of a peeked item if it is well formed and self-consistent."""
    if item is None:
        return None
    record = item[1]
    if isinstance(record, _Bad) or _schema_problem(record) is not None:
        return None
    return record if _recompute(record) == record["hash"] else None


def _check_head_signature(
    record: dict[str, Any], public_key: bytes | None, registry: IdentityRegistry | None
) -> tuple[bool | None, str]:
    """(True/False = signature checked good/bad, None = not checkable; detail)."""
    fields = record["fields"]
    try:
        covered = fields["covered_entries"]
        head = fields["head_hash"]
        signature_hex = fields["signature"]
        scheme = fields["scheme"]
        identity = fields["identity"]
    except KeyError:
        return False, "its fields are incomplete"
    if public_key is not None and scheme != "ed25519":
        return False, (
            f"its scheme is {scheme!r}; the given Ed25519 public key checks only 'ed25519' "
            "heads (a log written in hmac mode is checked in process with "
            "AuditLog.verify(registry=...); otherwise the scheme was edited)"
        )
    problem = _signature_text_problem(signature_hex, scheme)
    if problem is not None:
        return False, problem
    signature = bytes.fromhex(signature_hex)
    if type(covered) is not int or type(head) is not str:   # 1.0 == 1 would pass below
        return False, "its covered_entries or head_hash has the wrong type"
    if "final" in fields and type(fields["final"]) is not bool:   # 1 == True
        return False, f"its final flag is {fields['final']!r}, not true or false"
    if covered != record["index"] or head != record["prev_hash"]:
        return False, "it does not describe the entry before it"
    try:
        message = _head_message(fields)
    except ValueError:   # not reachable for an entry whose hash matched (canonical JSON)
        return False, "its fields are not canonical JSON"
    if registry is not None:
        if identity != registry.operator_id:   # an agent's key (hmac: the verifier holds
            # every agent's) must not vouch for the log
            return False, (f"it is signed by {identity!r}, not by the registry's operator "
                           f"{registry.operator_id!r}")
        if registry.verify_signature(identity, message, signature):
            return True, f"signature by {identity!r}"
        return False, _v1_detail(
            registry.verify_signature(identity, _head_message_v1(covered, head), signature),
            f"its signature by {identity!r} does not verify")
    if public_key is not None:
        try:
            key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            return False, "the given public key is no Ed25519 public key"
        try:
            key.verify(signature, message)
        except (InvalidSignature, ValueError):
            try:
                key.verify(signature, _head_message_v1(covered, head))
                v1 = True
            except (InvalidSignature, ValueError):
                v1 = False
            detail = "its Ed25519 signature does not verify with the given public key"
            named = fields.get("public_key")
            # only a key as the writer writes it is quoted (the field is the file's text,
            # unsigned: it must not bring escape sequences to the terminal)
            if (type(named) is str and _LOWER_HEX.match(named) and len(named) == 64
                    and named != public_key.hex()):
                # (the head's own claim, unsigned: a hint for a mistyped key, no verdict)
                detail += (f"; the head names another key ({named[:16]}...): either the "
                           "key given is not the one printed for this file, or the file "
                           "was altered (re-signed, or the head's key edited)")
            return False, _v1_detail(v1, detail)
        return True, "Ed25519 signature"
    return None, "not checkable without a key"


def _signature_text_problem(signature_hex: Any, scheme: Any) -> str | None:
    """Why a head's ``signature`` field is not the text :meth:`AuditLog.sign_head`
    writes, or None.

    The writer writes ``signature.hex()``: exactly ``2 * signature_length(scheme)``
    lowercase hex digits (128 for Ed25519, 64 for HMAC-SHA256). The text is not part
    of the signed bytes and the entry hash is unkeyed, so any other spelling of the
    same bytes (upper case, spaces, which ``bytes.fromhex`` accepts) would give a
    head entry, and a chain head, the writer never wrote; it is refused.
    """
    if type(scheme) is not str or scheme not in _SIGNATURE_LENGTH:
        return f"its scheme is {scheme!r}; expected one of {list(TRUST_MODES)}"
    digits = 2 * _SIGNATURE_LENGTH[scheme]
    if type(signature_hex) is not str or not _LOWER_HEX.match(signature_hex) \
            or len(signature_hex) != digits:
        shown = (f"{signature_hex[:16]!r}... ({len(signature_hex)} characters)"
                 if type(signature_hex) is str and len(signature_hex) > 16 else repr(signature_hex))
        return (f"its signature is {shown}; expected exactly {digits} lowercase hex digits "
                f"(a {scheme} signature as the log writes it)")
    return None


_ED_P = 2**255 - 19
_ED_D = -121665 * pow(121666, _ED_P - 2, _ED_P) % _ED_P
_ED_L = 2**252 + 27742317777372353535851937790883648493   # the prime subgroup's order
_ED_SQRT_M1 = pow(2, (_ED_P - 1) // 4, _ED_P)


def _ed_add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]
            ) -> tuple[int, int, int, int]:
    """Sum of two edwards25519 points in extended coordinates (X, Y, Z, T) (RFC 8032
    §5.1.4)."""
    p = _ED_P
    ca = (a[1] - a[0]) * (b[1] - b[0]) % p
    cb = (a[1] + a[0]) * (b[1] + b[0]) % p
    cc = 2 * a[3] * b[3] * _ED_D % p
    cd = 2 * a[2] * b[2] % p
    e, f, g, h = cb - ca, cd - cc, cd + cc, cb + ca
    return e * f % p, g * h % p, f * g % p, e * h % p


def _ed25519_point_is_valid(public_key: bytes) -> bool:
    """What libsodium's ``crypto_core_ed25519_is_valid_point`` decides, in plain Python
    (~1.5 ms; used only without PyNaCl): the 32 bytes are the canonical encoding of a
    point on edwards25519 (RFC 8032 §5.1.3 decoding) whose order is the prime ``L``:
    ``[L]P`` is the identity and ``P`` is not (``L`` prime, so no small order)."""
    p = _ED_P
    if len(public_key) != 32:
        return False
    y = int.from_bytes(public_key, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= p:
        return False                                    # not canonical
    u, v = (y * y - 1) % p, (_ED_D * y * y + 1) % p
    x2 = u * pow(v, p - 2, p) % p
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p:
        x = x * _ED_SQRT_M1 % p
    if (x * x - x2) % p:
        return False                                    # not on the curve
    if x == 0 and sign:
        return False                                    # not canonical
    if x & 1 != sign:
        x = p - x
    point = (x, y, 1, x * y % p)
    acc, add, k = (0, 1, 1, 0), point, _ED_L            # [L]P by double-and-add
    while k:
        if k & 1:
            acc = _ed_add(acc, add)
        add, k = _ed_add(add, add), k >> 1
    identity = acc[0] % p == 0 and (acc[1] - acc[2]) % p == 0
    return identity and not (x == 0 and y == 1)


def weak_public_key_problem(public_key: bytes) -> str | None:
    """Why 32 bytes are no Ed25519 public key a signature can be checked against, or None.

    OpenSSL's Ed25519 verification (``cryptography``) takes a small-order point as a
    public key, and under such a key the signature (R = a small-order point, S = 0)
    verifies for *every* message: the all-zero key, a plausible placeholder, would
    pass any forged head. A genuine public key ``a·B`` is a canonical point of the
    prime-order subgroup; libsodium's ``crypto_core_ed25519_is_valid_point`` checks
    exactly that (canonical encoding, on the curve, main subgroup, not of small order).
    """
    try:
        from nacl.bindings import crypto_core_ed25519_is_valid_point as is_valid
    except ImportError:   # pragma: no cover - PyNaCl is a dependency; a bare install still checks
        is_valid = _ed25519_point_is_valid
    if is_valid(public_key):
        return None
    return ("not a valid Ed25519 public key (a small-order, non-canonical or off-curve "
            "point, under which signatures prove nothing: the all-zero key is one); "
            "expected the 64 hex digits the environment printed for this file")


def _v1_detail(v1_valid: bool, detail: str) -> str:
    """``detail``, or why a head signed in the first format is refused."""
    if not v1_valid:
        return detail
    return ("its signature is in the first head format (gridswarm-audit-head-v1), which "
            "signed only the chain head, not the head entry's own fields, so they may have "
            "been edited: no key accepts it (without a key only the hash chain is checked)")


def _classify_gap(
    record: dict[str, Any],
    expected: int,
    rest: Iterable[tuple[int, Any, bool]],
    fail: Callable[[int | None, str, str], AuditVerification],
) -> AuditVerification:
    """Classify an entry whose index is higher than ``expected`` (reads the rest).

    ``reordered`` when the missing entry comes later and this entry links into the
    chain (its predecessor appears later); ``inserted`` when it does not link in, or
    a later entry is its twin (same index and link); else ``removed``.
    """
    index = record["index"]
    missing_later = twin_later = links_in = False
    for _, later, _ in rest:
        if not isinstance(later, dict):
            continue
        later_index = later.get("index")
        if type(later_index) is not int:
            continue
        if later_index == expected:
            missing_later = True
        if later_index == index and later.get("prev_hash") == record["prev_hash"]:
            twin_later = True
        if later_index == index - 1 and later.get("hash") == record["prev_hash"]:
            links_in = True
    if twin_later or (missing_later and not links_in):
        return fail(
            expected,
            "inserted",
            f"an entry claiming index {index} stands where entry {expected} belongs",
        )
    if missing_later:
        return fail(
            expected,
            "reordered",
            f"entry {index} stands where entry {expected} belongs; {expected} comes later",
        )
    return fail(expected, "removed", f"entries {expected}..{index - 1} are missing")


def _verify_records(
    records: Iterable[tuple[int, Any, bool]],
    *,
    start_index: int = 0,
    start_prev_hash: str = GENESIS_HASH,
    public_key: bytes | None = None,
    registry: IdentityRegistry | None = None,
    known_hashes: dict[int, str] | None = None,
    expected_count: int | None = None,
    expected_head: str | None = None,
    require_entries: bool = False,
    allow_open: bool = False,
) -> AuditVerification:
    """Walk a chain in order and classify the first problem.

    ``expected`` is the index the next entry must have and ``prev`` the hash it must
    link to. For each record:

    * unparseable -> ``malformed`` (``truncated`` if it is an unterminated last line);
      wrong keys/types -> ``malformed``;
    * its own hash does not match its content -> ``altered`` at ``expected``;
    * right index, right link -> accepted;
    * right index, wrong link -> if the next entry claims the same index and links to
      ``prev``, this entry is an ``inserted`` sibling; otherwise the previous entry
      was rewritten with a recomputed hash -> ``altered`` at ``expected - 1``;
    * index too high -> the missing index appears later in the file: ``reordered``,
      else ``removed`` (both at ``expected``);
    * index too low -> ``inserted``: a duplicate of the previous entry, a second
      sibling of it (the one the chain does not continue from), or an entry
      reusing an old index;
    * a retained in-memory hash differs -> ``altered``; a ``head_signed`` entry that
      does not describe its predecessor or whose signature fails -> ``altered``;
    * any entry after a closing head (``final: true``) -> ``inserted``.

    At the end: with ``require_entries``, no entries at all is ``empty``; with a key, a
    chain not ending in a verified signed head is ``truncated`` (at the entry count), and
    so is one ending in a verified head that is not final (the writer's closing head)
    unless ``allow_open``; a last head in the v2 format (no ``final`` field) is accepted
    with ``closed`` None. With the writer's own count and head, fewer entries is
    ``truncated``, more is ``inserted``, a different head ``altered``.
    """
    if public_key is not None and (type(public_key) is not bytes or len(public_key) != 32):
        hint = " (a hex string: pass bytes.fromhex(it))" if isinstance(public_key, str) else ""
        raise ValueError(f"public_key must be 32 raw Ed25519 public key bytes; got "
                         f"{public_key!r}{hint}")
    problem = None if public_key is None else weak_public_key_problem(public_key)
    if problem is not None:
        raise ValueError(f"public_key {public_key.hex()}: {problem}")
    signing_required = public_key is not None or registry is not None
    items = _Peekable(records)
    expected = start_index
    prev = start_prev_hash
    previous: dict[str, Any] | None = None
    last_verified_head = False
    last_signed_index: int | None = None
    closing_index: int | None = None   # a head marked final (no entry may follow it)
    count = 0
    ed25519_heads = 0
    hmac_heads = 0
    episodes = 0
    hmac_episodes = 0     # episode_start entries that say trust = hmac (for the message only)

    def fail(index: int | None, problem: str, message: str) -> AuditVerification:
        where = "" if index is None else f" at entry {index}"
        head = previous["hash"] if previous is not None else None
        return AuditVerification(False, index, problem, f"{problem}{where}: {message}", count, head)

    for _, record, _complete in items:
        if isinstance(record, _Bad):
            return fail(expected, record.problem, record.message)
        schema = _schema_problem(record)
        if schema is not None:
            return fail(expected, "malformed", f"entry {schema}")
        index = record["index"]
        recomputed = _recompute(record)
        if recomputed is None:
            return fail(
                expected, "malformed", "entry fields are not canonical JSON (NaN or infinity)"
            )
        if recomputed != record["hash"]:
            return fail(expected, "altered", "its content does not match its recorded hash")
        if index == expected and record["prev_hash"] == prev:
            pass
        elif index == expected:
            nxt = _valid_record(items.peek())
            if nxt is not None and nxt["index"] == index and nxt["prev_hash"] == prev:
                return fail(
                    expected,
                    "inserted",
                    "an extra entry claims this index; the chain continues from the next one",
                )
            if expected == start_index:
                return fail(expected, "altered", "it does not link to the chain's start")
            return fail(
                expected - 1,
                "altered",
                f"its hash differs from the one entry {expected} recorded (rewritten)",
            )
        elif index > expected:
            return _classify_gap(record, expected, items, fail)
        else:
            if previous is not None and record["hash"] == previous["hash"]:
                return fail(expected, "inserted", f"it duplicates entry {index}")
            if (
                previous is not None
                and index == previous["index"]
                and record["prev_hash"] == previous["prev_hash"]
            ):
                nxt = _valid_record(items.peek())
                if nxt is not None and nxt["prev_hash"] == record["hash"]:
                    return fail(
                        expected - 1,
                        "inserted",
                        "an extra entry claims this index; the chain continues from the next one",
                    )
            return fail(expected, "inserted", f"it claims index {index}, already used")
        if known_hashes is not None and known_hashes.get(index, record["hash"]) != record["hash"]:
            return fail(
                expected,
                "altered",
                "it differs from the copy kept in memory (rewritten with recomputed hashes)",
            )
        if closing_index is not None:
            return fail(expected, "inserted", f"it follows the closing head (entry "
                        f"{closing_index}, final: true): a finished log takes no more entries")
        last_verified_head = False
        episodes += record["kind"] == "episode_start"
        hmac_episodes += (record["kind"] == "episode_start"
                          and record["fields"].get("trust") == "hmac")
        if record["kind"] == "head_signed":
            scheme = record["fields"].get("scheme")
            ed25519_heads += scheme == "ed25519"
            hmac_heads += scheme == "hmac"
            good, detail = _check_head_signature(record, public_key, registry)
            if good is False:
                return fail(expected, "altered", f"signed head is invalid: {detail}")
            if good:
                last_verified_head = True
                last_signed_index = index
            if record["fields"].get("final") is True:
                closing_index = index
        previous = record
        prev = record["hash"]
        expected += 1
        count += 1

    head = previous["hash"] if previous is not None else None
    if require_entries and count == 0:
        return AuditVerification(False, None, "empty", f"empty: {EMPTY_AUDIT_FILE}", 0, None)
    if expected_count is not None and expected < expected_count:
        return fail(
            expected,
            "truncated",
            f"the chain stops at {expected} entries; the log wrote {expected_count}",
        )
    if expected_count is not None and expected > expected_count:
        return fail(
            expected_count, "inserted", f"{expected} entries found; the log wrote {expected_count}"
        )
    if expected_head is not None and expected_count and head != expected_head:
        return fail(
            expected - 1, "altered", "the chain head differs from the log's head (suffix rewritten)"
        )
    if signing_required and not last_verified_head:
        since = (
            "no signed head"
            if last_signed_index is None
            else f"the last signed head is entry {last_signed_index}"
        )
        reason = (f"the chain does not end with a verified signed head ({since}); its tail "
                  "was cut or is unsigned")
        if last_signed_index is None and episodes and hmac_episodes == episodes:
            # the entries' own word, which anyone editing the file can write: a hint
            # for the honest mistake, never a pass
            reason += ("; its episode_start entries say trust = hmac, and an hmac-mode "
                       "environment signs no heads, so none of its files verifies with a "
                       "public key: verify it without --public-key (self-consistency only); "
                       "if its writer ran in ed25519 mode, the file was altered")
        return replace(fail(expected, "truncated", reason), closed=False, episodes=episodes)
    # with a key: True/False = the last head is (not) the writer's closing head; None:
    # no key, or a v2 head (no "final" field: written before closing heads existed)
    closed = previous["fields"].get("final") if signing_required and previous else None
    if closed is False and not allow_open:
        return replace(fail(expected, "truncated", f"{open_file_reason(episodes)}; allow_open "
                            "(--allow-open) accepts a file still being written"),
                       closed=False, episodes=episodes)
    return AuditVerification(
        True, None, None, f"{count} entries, head {head or GENESIS_HASH}", count, head,
        ed25519_heads, hmac_heads, closed, episodes,
    )


def open_file_reason(episodes: int) -> str:
    """Why a chain ending with a verified head that is not final is not a whole file
    (``episodes``: its ``episode_start`` entries, see :attr:`AuditVerification.episodes`)."""
    after = f"after its episode {episodes}" if episodes else "after that head"
    return ("not closed: its last signed head is not the writer's closing head, so the "
            f"writer may still be running (or crashed), or the file was cut {after}")


def verify_audit_file(
    path: str | os.PathLike[str], public_key: bytes | None = None, *, allow_open: bool = False
) -> AuditVerification:
    """Verify a JSONL audit file written by :class:`AuditLog`.

    :param path: the file.
    :param public_key: the operator's raw 32-byte Ed25519 public key; when given,
        every Ed25519 ``head_signed`` entry is checked and the file must end with a
        valid signed head (else ``truncated``), and :attr:`AuditVerification.closed`
        says whether that is the writer's closing head. Heads signed in ``"hmac"``
        mode are symmetric and cannot be checked with a public key; check those in
        process with ``AuditLog.verify(registry=...)``.
    :param allow_open: with ``public_key``, accept a file ending with a valid head that
        is not the closing one (a writer still running: ``closed`` False, ok); by
        default that is ``truncated``, as a file cut right after an earlier episode's
        head looks the same. A last head in the v2 format (written before closing heads
        existed) is accepted either way, with ``closed`` None.
    :return: the verdict (see :class:`AuditVerification`). An empty file is not ok
        (problem ``empty``, index None, n_entries 0): a file cut to 0 bytes looks the
        same, so it verifies nothing (an environment leaves one only when it is closed
        before its first reset). ``AuditLog.verify`` of the writer itself, which knows
        it wrote nothing, accepts its empty file.
    :raises OSError: when the file cannot be read.
    :raises ValueError: for a public key that is not 32 bytes or no valid Ed25519 public
        key (:func:`weak_public_key_problem`: a small-order point such as the all-zero
        key), or a non-bool ``allow_open``.
    """
    if type(allow_open) is not bool:
        raise ValueError(f"allow_open={allow_open!r} must be True or False")
    return _verify_records(_file_records(Path(path)), public_key=public_key,
                           require_entries=True, allow_open=allow_open)
