"""IATP contracts and the operator's ledger that issues and verifies them.

:class:`Contract` / :class:`SignedContract` are an award and its two signatures over
:meth:`Contract.canonical_bytes`; :class:`ContractLedger` issues (signs and
countersigns) and verifies them with replay protection and counters, and writes its
batches to an :class:`~gridswarm_env.trust.audit_chain.AuditLog` when given one.

Verification (:meth:`ContractLedger.verify`) reports the first failing check in
this order::

    malformed -> unknown_identity -> wrong_agent -> bad_agent_signature
      -> bad_operator_signature -> not_yet_valid / expired (late) -> replayed

``late`` is ``expired`` for a contract its presenter vouches was delivered late by the
network, not replayed (:meth:`ContractLedger.verify_batch`'s ``own_copies``): it is
rejected all the same, and only the label differs.

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
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from hashlib import sha256
from itertools import repeat
from numbers import Integral, Real
from typing import Any

import numpy as np

from gridswarm_env.trust.audit_chain import AuditLog, _json_str_list
from gridswarm_env.trust.identities import _SIGNATURE_LENGTH, IdentityRegistry

__all__ = [
    "CONTRACT_FORMAT_VERSION",
    "PRODUCTS",
    "Contract",
    "ContractLedger",
    "RejectReason",
    "SignedContract",
    "contracts_digest",
]


PRODUCTS = ("energy", "reserve")
"""Market products a contract can be for (DESIGN.md section 7)."""

_MAX_STRING_BYTES = 0xFFFF
_FAST_STRING_CHARS = _MAX_STRING_BYTES // 4  # UTF-8 needs at most 4 bytes per character
_NONCE_BYTES = 16
_EPOCH_TAG_BYTES = 4
_PRODUCT_BYTES = {p: p.encode("utf-8") for p in PRODUCTS}
#: bytes a ledger draws from its generator at a time (a multiple of 4, see _random_bytes)
_RANDOM_POOL_BYTES = 4096


def _as_generator(rng: np.random.Generator | int | None, name: str = "rng") -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, Integral) and not isinstance(rng, bool) and int(rng) >= 0):
        return np.random.default_rng(None if rng is None else int(rng))
    raise ValueError(f"{name}={rng!r} must be a numpy.random.Generator, a non-negative int or None")


CONTRACT_FORMAT_VERSION = 1
_CONTRACT_MAGIC = b"IATP"
# magic, version, round, power_mw, price_per_mwh, window_start_s, window_end_s, nonce,
# then the UTF-8 byte lengths of contract_id, agent_id, operator_id, product; the four
# strings follow in that order. Fixed header + explicit lengths = injective encoding.
_CONTRACT_HEADER = struct.Struct(">4sBQdddd16sHHHH")
#: the strings of a canonical encoding, in order (their lengths end the header)
_STRING_FIELDS = ("contract_id", "agent_id", "operator_id", "product")


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
    :raises ValueError: naming the first invalid field (a string field must be a
        non-empty ``str`` that UTF-8 encodes, so no lone surrogate such as ``"\\ud800"``,
        in at most 65 535 bytes).

    Equality is not encoding equality: ``==`` and ``hash`` compare the field values,
    and ``-0.0 == 0.0``, so a contract with ``power_mw=-0.0`` equals (and hashes as) one
    with ``0.0``, yet :meth:`canonical_bytes` encodes the two differently (IEEE-754 sign
    bit) and a signature over one does not verify for the other. Verification always
    uses the encoding; compare ``canonical_bytes()`` to tell what was signed.
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
            and cid.isascii()    # O(1): an ASCII str always encodes (a lone surrogate
            and aid.isascii()    # does not): other ids take the detailed checks
            and oid.isascii()
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
            allowed = f"must be a non-empty str of at most {_MAX_STRING_BYTES} UTF-8 bytes"
            if type(value) is not str or not value:
                raise ValueError(f"{name}={_shown(value)} {allowed}")
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{name}={_shown(value)} {allowed}: character {exc.start} "
                    f"({value[exc.start]!r}, a lone surrogate) has no UTF-8 encoding"
                ) from None
            if size > _MAX_STRING_BYTES:
                raise ValueError(f"{name}={_shown(value)} {allowed} (it has {size})")
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
        for name, length in zip(_STRING_FIELDS, lengths, strict=True):
            try:
                strings.append(bytes(data[offset : offset + length]).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"data's {name} ({length} bytes at offset {offset}) is not valid UTF-8 "
                    f"(byte {exc.start}: {exc.reason}); a canonical contract encoding holds "
                    "UTF-8 strings"
                ) from None
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
    #: expired, and the presenter vouches it is the operator's own copy, published when
    #: the ledger issued it, that the network delivered after its window began (not a
    #: replay): rejected as ``expired`` is, counted apart (``verify_batch(own_copies=)``)
    LATE = "late"
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
        own_copies: Sequence[bool] | None = None,
    ) -> tuple[np.ndarray, list[RejectReason | None]]:
        """Verify a batch at one time; each item exactly as :meth:`verify`.

        :param signed: the contracts, in order (a contract repeated in the batch is
            accepted once, then rejected as replayed).
        :param now_s: current simulated time, s.
        :param expected_agents: per item, the agent it is presented for (or None).
        :param own_copies: per item, whether the presenter vouches that it is the
            operator's own copy of the contract, the one published to its holder when
            this ledger issued it (not a copy anyone else put on the network), and the
            first copy of that contract presented: its lateness, if any, is the
            network's. Such an item that fails only its window's end (what would be
            ``expired``) and whose nonce carries this epoch's tag, so this ledger issued
            it in this epoch, is rejected as ``late`` instead: it never executes either,
            and the label tells network lateness from a replay. None: no item is vouched
            for (every such failure is ``expired``).
        :return: ``(valid, reasons)``: a bool array ``(n,)`` and the reason per item.
        :raises ValueError: for a length mismatch or a non-finite ``now_s``.
        """
        now = self._now(now_s)
        items = signed if type(signed) is list else list(signed)
        if expected_agents is not None and len(expected_agents) != len(items):
            raise ValueError(
                f"expected_agents has {len(expected_agents)} items; it must match signed ({len(items)})"
            )
        if own_copies is not None and len(own_copies) != len(items):
            raise ValueError(
                f"own_copies has {len(own_copies)} items; it must match signed ({len(items)})"
            )
        reasons, accepted_ids = self._check_batch(items, now, expected_agents)
        if own_copies is not None and len(accepted_ids) < len(reasons):
            self._relabel_late(items, reasons, own_copies)
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
            ``None`` items; the signature verdict codes
            (:func:`~gridswarm_env.trust.identities._contract_verdict`) of the plans
            whose ``code`` is ``None``, in order. ``seen`` holds what was read from the
            item, encoded and verified: ``(contract_id, agent_id, nonce,
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

    def _relabel_late(self, items: list[Any], reasons: list[RejectReason | None],
                      own_copies: Sequence[bool]) -> None:
        """``expired`` -> ``late`` in ``reasons``, in place, for the items vouched for in
        ``own_copies`` (see :meth:`verify_batch`) whose nonce carries this epoch's tag.
        An ``expired`` item passed every check before the window's (form, identities,
        both signatures), so its fields are those signed."""
        tag = self._epoch_tag
        expired, late = RejectReason.EXPIRED, RejectReason.LATE
        for k, (item, reason, own) in enumerate(zip(items, reasons, own_copies, strict=True)):
            if reason is expired and own and item.contract.nonce.startswith(tag):
                reasons[k] = late

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
    """The contract id of a presented item for the audit log (:func:`audit_contract_id`),
    or a placeholder (read only from a :class:`SignedContract` holding a
    :class:`Contract`: another object's attributes may run arbitrary code)."""
    if type(item) is SignedContract:
        contract = getattr(item, "contract", None)   # a slot: reading it runs no code
        if type(contract) is Contract:   # checked before reading contract_id (a slot too)
            cid = contract.contract_id
            if type(cid) is str:
                return audit_contract_id(cid)
    return "<malformed>"


#: what :func:`audit_contract_id` escapes: the characters the audit verifier counts as
#: JSON values without decoding (``MAX_ENTRY_VALUES``), and ``%``, the escape itself
_AUDIT_ID_ESCAPES = str.maketrans({"%": "%25", ",": "%2C", "[": "%5B", "{": "%7B"})


def audit_contract_id(cid: str) -> str:
    """A contract id as the audit log lists it: its first 200 characters, with ``%``,
    ``,``, ``[`` and ``{`` percent-escaped (``%25``, ``%2C``, ``%5B``, ``%7B``). The
    ledger's ids (``c-<round>-<agent>-<counter>``) hold none of them and are listed as
    they are; a forged id full of commas counted each as a JSON value in the verifier's
    bound (:data:`~gridswarm_env.trust.audit_chain.MAX_ENTRY_VALUES`), so an attacker on
    the bus presenting ~22 000 such contracts in one step made the log refuse the batch's
    entry, failing the step (the episode stopped, its audit cut short)."""
    cid = cid[:200]
    if "," in cid or "[" in cid or "{" in cid or "%" in cid:
        return cid.translate(_AUDIT_ID_ESCAPES)
    return cid
