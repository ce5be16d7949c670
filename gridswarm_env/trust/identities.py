"""IATP identities and keys: who signs, with which key, on how many threads.

:class:`IdentityRegistry` holds one key per identity (every agent and the operator):
Ed25519 (RFC 8032, through libsodium or ``cryptography``) or HMAC-SHA256 (RFC 2104),
derived from a seed with HKDF-SHA256 (:func:`derive_key_bytes`) or drawn from
``os.urandom``. Its batches of signatures and contract verifications may be shared
with the process's crypto worker threads (``crypto_threads``; the pool exists once,
here). The key classes keep their keys private: no public attribute holds key bytes,
``repr()`` shows none, pickling is refused.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from numbers import Integral
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

try:   # libsodium (through PyNaCl): the same RFC 8032 signatures, ~1.9x faster than OpenSSL
    from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
    from nacl.exceptions import BadSignatureError
except ImportError:   # pragma: no cover - PyNaCl is a dependency; this keeps a bare install working
    crypto_sign = None

__all__ = [
    "ED25519_BACKENDS",
    "TRUST_MODES",
    "IdentityRegistry",
    "UnknownIdentityError",
    "default_ed25519_backend",
    "derive_key_bytes",
    "signature_length",
]


TRUST_MODES = ("ed25519", "hmac")
"""Signature schemes: Ed25519 (RFC 8032, default) or HMAC-SHA256 (RFC 2104)."""

ED25519_BACKENDS = ("libsodium", "cryptography")
"""Libraries that can compute Ed25519 (RFC 8032) signatures. Both give the same bytes
(Ed25519 is deterministic) and verify each other's signatures; ``"libsodium"`` (through
PyNaCl) signs ~1.6x and verifies ~1.9x faster than ``"cryptography"`` (OpenSSL)."""

_SIGNATURE_LENGTH = {"ed25519": 64, "hmac": 32}
_KEY_DERIVATION_SALT = b"gridswarm-iatp-key-derivation-v1"


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
    seeds find it: one derivation and one key pair (or one HMAC tag) per candidate. As
    measured on one core of a shared 2-core VM (lower bounds for an attacker, who may
    use more cores and faster code): from the operator's Ed25519 public key ~30 000 to
    45 000 seeds/s with libsodium (seed 48 213 found in 1.1-1.6 s, every seed below
    10**6 in ~31 s); in hmac mode, from one contract's operator tag, ~120 000 to
    165 000 seeds/s (every seed below 10**6 in ~8 s). Two environments built with one seed also share every key (and
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
        """Reserve ``tag`` for one epoch of one
        :class:`~gridswarm_env.trust.contracts.ContractLedger` using these keys.

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
