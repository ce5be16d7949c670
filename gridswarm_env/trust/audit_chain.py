"""The IATP audit chain: an append-only SHA-256 hash chain and its verifier.

:class:`AuditLog` appends entries (optionally streamed as JSONL) and signs its head
with a registry's key; :func:`verify_audit_file` and :meth:`AuditLog.verify` report
the first altered, removed, inserted or reordered entry (the public-key check of a
signed head included: :func:`weak_public_key_problem`).

Format and verdicts
-------------------
Each JSONL line is ``{"index", "kind", "fields", "prev_hash", "hash"}`` with
``hash = SHA-256(canonical JSON of the entry without "hash")`` (sorted keys, no
whitespace, ASCII) and ``prev_hash`` the previous entry's hash (64 zeros for the
first). A ``contract_signed`` entry records what was signed as ``contracts_sha256``
(:func:`~gridswarm_env.trust.contracts.contracts_digest`). The verifier walks the lines in
order and reports the first problem, at the chain index where it occurs:

* ``malformed``: a line that is not an entry (bad JSON, keys, types, NaN), or one
  longer than :data:`MAX_ENTRY_LINE_BYTES` or nesting deeper than
  :data:`MAX_ENTRY_NESTING`, which the log never writes (not decoded further);
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
import hashlib
import itertools
import json
import math
import os
import re
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from hashlib import sha256
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gridswarm_env.trust.identities import _SIGNATURE_LENGTH, TRUST_MODES, IdentityRegistry

__all__ = [
    "AUDIT_KINDS",
    "AUDIT_PROBLEMS",
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditVerification",
    "verify_audit_file",
]


GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry of a chain."""

AUDIT_KINDS = (
    "episode_start",
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
#: the deepest nesting of JSON objects and arrays in an entry's line (the entry object is
#: level 1, its ``fields`` level 2): :meth:`AuditLog.append` refuses fields nested deeper
#: (the environment's nest 4 levels at most) and the verifier reports a deeper line as
#: ``malformed`` before decoding it further (Python's ``json`` recursion would fail
#: somewhere near 1 000 levels, depending on the caller's stack)
MAX_ENTRY_NESTING = 64
#: the longest line (bytes, newline included) of an audit file: :meth:`AuditLog.append`
#: refuses a longer entry and the verifier reports a longer line as ``malformed`` without
#: reading further, so a hostile file (``/dev/zero`` copied to a file: one endless line)
#: is not read whole. Far above any entry a run writes: a batch of
#: 1 000 000 contracts (:data:`~gridswarm_env.config.MAX_AGENTS`) lists ~30 MB of ids.
MAX_ENTRY_LINE_BYTES = 256 * 2**20
#: the most JSON values a line may hold, counted from above without decoding it
#: (:func:`_json_values_bound`: its commas and opening brackets, plus one): decoding
#: costs memory per value, ~50x the line's bytes for a line of empty objects or arrays
#: (``[{},{},...]``: a 57 MiB line took 2.9 GB and 54 s to decode, a 256 MiB one would
#: take ~13 GB), so a line over this bound is ``malformed`` before it is decoded (at
#: the bound such a line took 0.4 GB; a 255 MiB line of one string 1.4 GB, the most a
#: line within both bounds costs). :meth:`AuditLog.append` refuses such an
#: entry too. Above any entry a run writes: a batch of 1 000 000 rejected contracts
#: counts ~3 000 000 (an object and two separating commas each), a list of
#: 1 000 000 ids ~1 000 000.
MAX_ENTRY_VALUES = 2**22
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
    """Mutable twin of :class:`AuditEntry` (see
    :class:`~gridswarm_env.trust.contracts._ContractLayout`)."""

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


#: the longest canonical body of an entry (its line adds ``,"hash":"<64 hex>"`` and a
#: newline: 77 bytes)
_MAX_BODY_CHARS = MAX_ENTRY_LINE_BYTES - 80
#: how deep containers may nest inside an entry's ``fields`` (the line's levels 1 and 2
#: are the entry and ``fields`` objects)
_MAX_FIELD_NESTING = MAX_ENTRY_NESTING - 2


def _normalise(value: Any, depth: int = 0) -> Any:
    """Convert a field value to plain JSON types (numpy, bytes, enums, non-finite floats).

    ``depth``: the containers ``value`` stands in (0 for a field's own value); a container
    nested deeper than :data:`MAX_ENTRY_NESTING` allows in a line is refused (ValueError).
    """
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else repr(value)
    if t is list or t is tuple:
        if depth >= _MAX_FIELD_NESTING:
            _too_deep()
        if all(type(v) is str for v in value):  # the common case: a list of ids
            return list(value)
        return [_normalise(v, depth + 1) for v in value]
    if t is dict:
        if depth >= _MAX_FIELD_NESTING:
            _too_deep()
        # keys sorted here, as canonical JSON sorts them (see _canonical_json_presorted)
        keys = [_field_key(k) for k in value]
        return {k: _normalise(value[k], depth + 1) for k in sorted(keys)}
    if isinstance(value, Enum):
        return _normalise(value.value, depth)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return _normalise(float(value), depth)
    if isinstance(value, np.ndarray):
        return _normalise(value.tolist(), depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return _normalise(dict(value), depth)
    if isinstance(value, list | tuple | set | frozenset):
        return _normalise(list(value), depth)
    raise ValueError(f"audit field value {value!r} of type {t.__name__} is not JSON-serialisable")


def _json_values_bound(text: str | bytes) -> int:
    """An upper bound on the JSON values (objects, arrays, strings, numbers, literals)
    and object keys in one JSON text, over :data:`MAX_ENTRY_VALUES`'s scale: its commas
    and opening brackets, plus one (every value but a container's first follows a comma;
    commas and brackets inside strings only raise the bound). Never more than
    ``len(text) + 1``."""
    if type(text) is bytes:
        return text.count(b",") + text.count(b"[") + text.count(b"{") + 1
    return text.count(",") + text.count("[") + text.count("{") + 1


def _too_many_values(text: str | bytes, added: int = 0) -> bool:
    """Whether ``text``, with ``added`` more commas (the writer's line adds one to the
    entry's body), may hold more than :data:`MAX_ENTRY_VALUES` JSON values (only counted
    when it is long enough to: the usual entry costs one length check)."""
    return (len(text) + added >= MAX_ENTRY_VALUES
            and _json_values_bound(text) + added > MAX_ENTRY_VALUES)


def _too_deep() -> None:
    raise ValueError(f"audit fields nest lists and dicts more than {_MAX_FIELD_NESTING} levels "
                     f"deep (an entry's line nests at most {MAX_ENTRY_NESTING}, the entry and "
                     "its fields objects included: the verifier refuses deeper lines)")


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
    a directory, a FIFO or a device is no audit file path.

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
    if p.exists() and not p.is_file():
        raise _not_regular_audit_file(path, label)


def _not_regular_audit_file(path: str | os.PathLike[str], label: str) -> ValueError:
    return ValueError(f"{label} {str(path)!r} exists and is no regular file (a FIFO or a "
                      "device); expected a new file path or an existing empty file")


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
    truncating it or following a symbolic link, and without waiting for a reader if it is
    a FIFO (``O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK``; a link to an empty file is
    refused, not followed; a FIFO, read or not, is refused at once) and kept only
    when that same handle shows an empty regular file (``os.fstat``: size 0, e.g. made by
    ``touch``), as :func:`check_new_audit_file` allows; anything else is closed untouched
    and refused. The check and the writes use one handle, so no other writer's bytes can
    be truncated between them (with ``O_APPEND`` they would only precede the chain, which
    the verifier then reports).

    :raises ValueError: for an existing non-empty file, a symbolic link or something
        that is no regular file (a directory, a FIFO, a device), naming the path, what
        exists and what is allowed.
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
    not_regular = _not_regular_audit_file(path, label)
    try:
        # O_NOFOLLOW: a symbolic link swapped in after the check above is refused too;
        # O_NONBLOCK: opening a FIFO for writing would wait for a reader (for ever)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise ValueError(f"{label} {str(path)!r} is a directory; expected a file path") from None
    except OSError as error:
        if error.errno == errno.ENXIO:   # a FIFO no process reads
            raise not_regular from None
        if error.errno != errno.ELOOP:
            raise
        raise _audit_symlink_error(path, label) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_regular
        if info.st_size > 0:
            raise _existing_audit_file(path, label, info.st_size)
        if hasattr(os, "O_NONBLOCK"):   # a regular file: the writes as without it
            os.set_blocking(fd, True)
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
        :raises ValueError: for an empty kind, a non-serialisable field, fields nested
            deeper than :data:`MAX_ENTRY_NESTING` allows or an entry longer than
            :data:`MAX_ENTRY_LINE_BYTES` (the verifier refuses such lines).
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
        if len(body) > _MAX_BODY_CHARS:
            raise ValueError(f"audit entry {index} ({kind!r}) would be a line of "
                             f"{len(body) + 80:,} bytes; an audit line holds at most "
                             f"{MAX_ENTRY_LINE_BYTES:,} (MAX_ENTRY_LINE_BYTES: the verifier "
                             "refuses longer ones)")
        # the line written adds one comma (before "hash") to the body
        if _too_many_values(body, added=1):
            raise ValueError(f"audit entry {index} ({kind!r}) would hold more than "
                             f"{MAX_ENTRY_VALUES:,} JSON values (MAX_ENTRY_VALUES: the "
                             "verifier refuses such lines before decoding them)")
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
            the registry's operator: a head an agent signed is refused): the registry
            that signed them. An environment signs its audit file's heads with an audit
            key of its own, not with ``env.registry`` (its contract keys), so check an
            environment's file with
            ``public_key=bytes.fromhex(env.unwrapped.operator_public_key_hex())``;
            ``registry=env.registry`` reports its heads as ``altered`` (the verdict then
            adds that the head names another key).
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


#: what a file that is no regular file is, by ``stat`` file type (for the error message)
_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _open_audit_file(path: Path) -> Any:
    """``path`` opened for reading, binary, if it is a regular file.

    Opened without blocking (``O_NONBLOCK``: a FIFO would wait for a writer, for ever)
    and checked on that handle (``os.fstat``), so nothing swapped in after a check is read.

    :raises OSError: when it cannot be opened, or is no regular file (a directory,
        FIFO, device or socket: ``errno`` ``EISDIR`` for a directory, else ``EINVAL``),
        its ``strerror`` saying what it is.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _FILE_TYPES if test(mode)), "no regular file")
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise OSError(code, f"it is {what}, not a regular file (an audit file is a "
                          "regular file: copy the bytes to one to verify them)", str(path))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _nested_deeper(record: Any, limit: int) -> bool:
    """Whether JSON objects and arrays nest more than ``limit`` levels in ``record``
    (iteratively: no recursion, whatever the depth)."""
    stack = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if type(value) is dict else value if type(value) is list else ()
        stack.extend((v, depth + 1) for v in children if type(v) is dict or type(v) is list)
    return False


def _file_records(path: Path) -> Iterator[tuple[int, Any, bool]]:
    """Yield ``(line_number, entry_dict | _Bad, ended_with_newline)`` for a JSONL file.

    A line longer than :data:`MAX_ENTRY_LINE_BYTES` is the last one read (``malformed``).

    :raises OSError: when the file cannot be opened or is no regular file
        (:func:`_open_audit_file`).
    """
    limit = MAX_ENTRY_LINE_BYTES
    with _open_audit_file(path) as handle:
        for number in itertools.count():
            raw = handle.readline(limit + 1)
            if not raw:
                return
            if len(raw) > limit:
                yield number, _Bad("malformed", f"line {number + 1} is longer than "
                                   f"{limit:,} bytes (MAX_ENTRY_LINE_BYTES), longer than any "
                                   "line the log writes; not read further"), False
                return
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
            if _too_many_values(raw):   # decoding would cost ~50 bytes per value
                yield number, _Bad("malformed", f"line {number + 1} holds more than "
                                   f"{MAX_ENTRY_VALUES:,} JSON values (MAX_ENTRY_VALUES: "
                                   "the log writes no such entry); not decoded"), complete
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
            # a line cannot nest deeper than it has brackets: most lines are not walked
            if (raw.count(b"[") + raw.count(b"{") > MAX_ENTRY_NESTING
                    and _nested_deeper(record, MAX_ENTRY_NESTING)):
                yield number, _Bad("malformed", f"line {number + 1} nests JSON objects and "
                                   f"arrays more than {MAX_ENTRY_NESTING} levels deep "
                                   "(MAX_ENTRY_NESTING: the log writes no such entry)"), complete
                continue
            body = _canonical_body(record) if _schema_problem(record) is None else None
            if body is not None:
                line = body[:-1] + b',"hash":"' + record["hash"].encode() + b'"}'
                if raw != line + b"\n":
                    # the verdict stands (these are not the bytes written), but a CRLF
                    # ending is a text conversion, not an edit of the entry: say so
                    how = (": it ends in CRLF (\\r\\n) where the log writes \\n, a text "
                           "conversion to Windows line endings (e.g. git autocrlf or an "
                           "editor); but for that ending it is the canonical encoding: "
                           "convert the file back (e.g. dos2unix) and verify it again"
                           if raw == line + b"\r\n" else
                           " (the bytes were edited, e.g. a repeated key, spacing or key order)")
                    yield (
                        number,
                        _Bad("altered",
                             f"line {number + 1} is not its entry's canonical encoding{how}"),
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
        detail = f"its signature by {identity!r} does not verify"
        if registry.mode == "ed25519":
            detail += _other_key_hint(
                fields, registry.public_key_bytes(identity),
                "the registry given is not the one that signed this file (an environment "
                "signs its file's heads with an audit key of its own, not env.registry's: "
                "check it with public_key=bytes.fromhex(env.unwrapped."
                "operator_public_key_hex()))")
        return False, _v1_detail(
            registry.verify_signature(identity, _head_message_v1(covered, head), signature),
            detail)
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
            detail = ("its Ed25519 signature does not verify with the given public key"
                      + _other_key_hint(fields, public_key,
                                        "the key given is not the one printed for this file"))
            return False, _v1_detail(v1, detail)
        return True, "Ed25519 signature"
    return None, "not checkable without a key"


def _other_key_hint(fields: dict[str, Any], key: bytes, mistake: str) -> str:
    """For a head whose signature fails under ``key``: when the head's ``public_key``
    field names another key, ``"; the head names another key (...): either <mistake>,
    or the file was altered ..."``, else ``""``.

    The field is the file's own claim, unsigned: a hint for a wrong key, never a
    verdict. Only a key as the writer writes it (64 lowercase hex digits) is quoted, so
    the file's text brings no escape sequences to the terminal.
    """
    named = fields.get("public_key")
    if (type(named) is str and _LOWER_HEX.match(named) and len(named) == 64
            and named != key.hex()):
        return (f"; the head names another key ({named[:16]}...): either {mistake}, or "
                "the file was altered (re-signed, or the head's key edited)")
    return ""


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


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def open_file_reason(episodes: int) -> str:
    """Why a chain ending with a verified head that is not final is not a whole file
    (``episodes``: its ``episode_start`` entries, see :attr:`AuditVerification.episodes`;
    named by count and by number, as the environment numbers them from 0: after one
    episode, "after its 1st episode ("episode": 0)")."""
    after = (f'after its {_ordinal(episodes)} episode ("episode": {episodes - 1})'
             if episodes else "after that head")
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
    :raises OSError: when the file cannot be read, or is no regular file (a FIFO, a
        device such as ``/dev/zero``, a directory: refused before anything is read, never
        waited on).
    :raises ValueError: for a public key that is not 32 bytes or no valid Ed25519 public
        key (:func:`weak_public_key_problem`: a small-order point such as the all-zero
        key), or a non-bool ``allow_open``.
    """
    if type(allow_open) is not bool:
        raise ValueError(f"allow_open={allow_open!r} must be True or False")
    return _verify_records(_file_records(Path(path)), public_key=public_key,
                           require_entries=True, allow_open=allow_open)
