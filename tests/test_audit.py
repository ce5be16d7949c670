"""Tests for the audit hash chain (AuditLog, verify_audit_file) and its command line."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

from gridswarm_env import audit as audit_cli
from gridswarm_env.audit import (
    EXIT_BROKEN,
    EXIT_OK,
    KEY_SOURCE,
    NO_KEY_SCOPE,
    format_verdict,
    main,
)
from gridswarm_env.trust import (
    AUDIT_PROBLEMS,
    GENESIS_HASH,
    AuditLog,
    AuditVerification,
    IdentityRegistry,
    verify_audit_file,
)

N = 20
REPO = Path(__file__).resolve().parents[1]


def reference_hash(entry: dict) -> str:
    """Independent implementation of the documented entry hash."""
    body = {key: entry[key] for key in ("fields", "index", "kind", "prev_hash")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_chain(
    path: Path, n: int = N, registry: IdentityRegistry | None = None, sign_every: int = 0,
    closed: bool = True,
) -> AuditLog:
    """``n`` entries, a signed head after every ``sign_every``; with ``closed`` the head
    after the last entry is the closing one (``final``), as a writer finishing the file."""
    log = AuditLog(path)
    kinds = [
        "contract_signed",
        "contract_verified",
        "contract_rejected",
        "action_blocked",
        "emergency",
    ]
    for i in range(n):
        log.append(
            kinds[i % len(kinds)], step=i, contract_ids=[f"c-{i}-der_{i % 3}-{i}"], power_mw=0.5 * i
        )
        if registry is not None and sign_every and (i + 1) % sign_every == 0:
            log.sign_head(registry, final=closed and i == n - 1)
    log.close()
    return log


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def line_of(entry: object) -> str:
    """An entry as AuditLog writes it (canonical JSON, "hash" last): what a forger who
    knows the format writes. Anything else as plain ``json.dumps``."""
    if isinstance(entry, dict) and isinstance(entry.get("hash"), str):
        body = {k: v for k, v in entry.items() if k != "hash"}
        try:
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return json.dumps(entry)
        return text[:-1] + ',"hash":"' + entry["hash"] + '"}'
    return json.dumps(entry)


def write(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(line_of(e) + "\n" for e in entries))


def rehash_from(entries: list[dict], start: int) -> None:
    """What a forger can do without keys: recompute every hash from ``start`` on."""
    for i in range(start, len(entries)):
        if i > 0:
            entries[i]["prev_hash"] = entries[i - 1]["hash"]
        entries[i]["hash"] = reference_hash(entries[i])


@pytest.fixture
def chain(tmp_path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_chain(path)
    return path


@pytest.fixture(scope="module")
def registry() -> IdentityRegistry:
    return IdentityRegistry(["der_0", "der_1"], seed=11)


def verdict(path: Path, **kwargs) -> tuple[bool, int | None, str | None]:
    result = verify_audit_file(path, **kwargs)
    assert isinstance(result, AuditVerification)
    assert result.problem is None or result.problem in AUDIT_PROBLEMS
    return result.ok, result.index, result.problem


# --------------------------------------------------------------------------- chain format


def test_entries_form_a_sha256_chain(chain):
    entries = read(chain)
    assert len(entries) == N
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for i, entry in enumerate(entries):
        assert entry["index"] == i
        assert entry["hash"] == reference_hash(entry)
        if i:
            assert entry["prev_hash"] == entries[i - 1]["hash"]
    result = verify_audit_file(chain)
    assert result.ok and result.n_entries == N and result.head_hash == entries[-1]["hash"]
    assert result.message == f"{N} entries, head {entries[-1]['hash']}"


def test_jsonl_round_trip_matches_memory(tmp_path):
    class Colour(Enum):
        RED = "red"

    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    written = [
        log.append("emergency", freq_hz=np.float32(59.5), n=np.int64(3), ok=np.bool_(True)),
        log.append("action_blocked", mask=np.array([1, 0, 1]), key=b"\x01\xff", colour=Colour.RED),
        log.append(
            "note", bad=math.nan, big=math.inf, nested={"a": [1, (2, 3)], "b": None}, text="ünï"
        ),
    ]
    log.close()
    lines = path.read_text(encoding="ascii").splitlines(keepends=True)
    assert lines == [e.to_json_line() for e in written]
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in written]
    assert written[0].fields == {"freq_hz": 59.5, "n": 3, "ok": True}
    assert written[1].fields == {"mask": [1, 0, 1], "key": "01ff", "colour": "red"}
    assert written[2].fields["bad"] == "nan" and written[2].fields["big"] == "inf"
    assert written[2].fields["nested"] == {"a": [1, [2, 3]], "b": None}
    assert verify_audit_file(path).ok
    assert log.head_hash == written[-1].hash and len(log) == 3


def test_append_validation(tmp_path):
    log = AuditLog(tmp_path / "v.jsonl")
    with pytest.raises(ValueError, match="kind"):
        log.append("")
    with pytest.raises(ValueError, match="object"):
        log.append("x", thing=object())
    with pytest.raises(ValueError, match="key"):
        log.append("x", table={1: "a"})
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.append("x")
    with pytest.raises(ValueError, match="max_entries_in_memory"):
        AuditLog(max_entries_in_memory=0)


def test_flush_each_append_streams(tmp_path):
    path = tmp_path / "s.jsonl"
    log = AuditLog(path, flush_each_append=True, keep_entries=False)
    log.append("emergency", t_s=1.0)
    assert len(path.read_text().splitlines()) == 1
    buffered = AuditLog(tmp_path / "b.jsonl")
    buffered.append("emergency", t_s=1.0)
    buffered.flush()
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
    log.close()
    buffered.close()


# --------------------------------------------------------------------------- tampering


def test_altered_entry(chain):
    entries = read(chain)
    entries[7]["fields"]["power_mw"] = 99.0
    write(chain, entries)
    assert verdict(chain) == (False, 7, "altered")


def test_a_verdict_is_true_only_for_an_intact_chain(chain):
    """Conformance review: the result object was always truthy, so ``assert
    log.verify()`` passed on a tampered chain."""
    assert verify_audit_file(chain)
    entries = read(chain)
    entries[7]["fields"]["power_mw"] = 99.0
    write(chain, entries)
    result = verify_audit_file(chain)
    assert not result and result.problem == "altered"


def test_altered_entry_with_recomputed_hash(chain):
    entries = read(chain)
    entries[7]["fields"]["power_mw"] = 99.0
    entries[7]["hash"] = reference_hash(entries[7])
    write(chain, entries)
    assert verdict(chain) == (False, 7, "altered")


def test_altered_first_entry_link(chain):
    entries = read(chain)
    entries[0]["prev_hash"] = "1" * 64
    entries[0]["hash"] = reference_hash(entries[0])
    write(chain, entries)
    assert verdict(chain) == (False, 0, "altered")


@pytest.mark.parametrize(("drop", "at"), [([7], 7), ([7, 8, 9], 7), ([0], 0)])
def test_removed_entries(chain, drop, at):
    entries = [e for i, e in enumerate(read(chain)) if i not in drop]
    write(chain, entries)
    assert verdict(chain) == (False, at, "removed")


def test_removed_last_entry_is_undetectable_without_signature(chain):
    write(chain, read(chain)[:-1])
    assert verdict(chain)[0]


def test_duplicated_entry(chain):
    entries = read(chain)
    write(chain, [*entries[:8], dict(entries[7]), *entries[8:]])
    assert verdict(chain) == (False, 8, "inserted")


@pytest.mark.parametrize(("position", "at"), [(7, 7), (8, 8)])
def test_inserted_forged_sibling(chain, position, at):
    """A forged entry with index 7 and a valid link, placed before or after the original."""
    entries = read(chain)
    forged = {"index": 7, "kind": "emergency", "fields": {"x": 1}, "prev_hash": entries[6]["hash"]}
    forged["hash"] = reference_hash(forged)
    write(chain, [*entries[:position], forged, *entries[position:]])
    assert verdict(chain) == (False, at, "inserted")


@pytest.mark.parametrize("claimed", [999, 12, 3])
def test_inserted_entry_with_other_index(chain, claimed):
    entries = read(chain)
    forged = {"index": claimed, "kind": "emergency", "fields": {}, "prev_hash": "ab" * 32}
    forged["hash"] = reference_hash(forged)
    write(chain, [*entries[:7], forged, *entries[7:]])
    assert verdict(chain) == (False, 7, "inserted")


def test_inserted_fresh_entry_with_bad_link(chain):
    entries = read(chain)
    forged = {"index": 7, "kind": "emergency", "fields": {}, "prev_hash": "ab" * 32}
    forged["hash"] = reference_hash(forged)
    write(chain, [*entries[:7], forged, *entries[7:]])
    assert verdict(chain) == (False, 7, "inserted")


def test_copy_of_old_entry_inserted_later(chain):
    entries = read(chain)
    write(chain, [*entries[:11], dict(entries[2]), *entries[11:]])
    assert verdict(chain) == (False, 11, "inserted")


def test_appended_entry_detected_in_process(tmp_path):
    path = tmp_path / "p.jsonl"
    log = write_chain(path)
    entries = read(path)
    extra = {"index": N, "kind": "emergency", "fields": {}, "prev_hash": entries[-1]["hash"]}
    extra["hash"] = reference_hash(extra)
    write(path, [*entries, extra])
    assert verdict(path)[0]  # a well-formed extension: only the writer (or a signed head) knows
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, N, "inserted")


@pytest.mark.parametrize(
    ("order", "at"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 8, 7, *range(9, N)], 7),
        ([0, 1, 2, *range(4, N), 3], 3),
        ([0, 1, 2, 3, 4, 12, *[i for i in range(5, N) if i != 12]], 5),
    ],
)
def test_reordered_entries(chain, order, at):
    entries = read(chain)
    write(chain, [entries[i] for i in order])
    assert verdict(chain) == (False, at, "reordered")


def test_cut_last_line_is_truncated(chain):
    data = chain.read_bytes()
    chain.write_bytes(data[: len(data) - 40])
    assert verdict(chain) == (False, N - 1, "truncated")


@pytest.mark.parametrize("line", ["garbage", "[1, 2]", '{"index": 5}', ""])
def test_malformed_line(chain, line):
    lines = chain.read_text().splitlines()
    lines[5] = line
    chain.write_text("\n".join(lines) + "\n")
    assert verdict(chain) == (False, 5, "malformed")


def test_malformed_hash_field(chain):
    entries = read(chain)
    entries[4]["hash"] = entries[4]["hash"].upper()
    write(chain, entries)
    assert verdict(chain) == (False, 4, "malformed")


def test_non_finite_number_is_malformed(chain):
    lines = chain.read_text().splitlines()
    lines[3] = lines[3].replace('"power_mw":1.5', '"power_mw":NaN')
    chain.write_text("\n".join(lines) + "\n")
    assert verdict(chain) == (False, 3, "malformed")


def test_empty_file_is_an_empty_chain_but_the_cli_does_not_call_it_ok(tmp_path, capsys):
    """First-use review: ``verify`` printed ``OK: 0 entries`` (exit 0) for an empty file,
    which a file cut to 0 bytes also is; an environment writes one only when closed
    before its first reset."""
    path = tmp_path / "empty.jsonl"
    log = AuditLog(path)
    log.close()
    assert log.verify().ok   # the writer knows it wrote nothing
    assert main(["verify", str(path)]) == EXIT_BROKEN
    assert capsys.readouterr().out.startswith("BROKEN: no entries (the file is empty")


def test_empty_file_is_not_ok_in_the_library_either(tmp_path, capsys):
    """Review: only the CLI applied the empty-file rule, so ``assert
    verify_audit_file(p)`` passed on a file cut to 0 bytes."""
    path = tmp_path / "cut.jsonl"
    write_chain(path, 5)
    path.write_bytes(b"")
    genuine = IdentityRegistry(["x"], seed=3).public_key_bytes("operator")
    for key in (None, genuine):
        result = verify_audit_file(path, public_key=key)
        assert not result
        assert (result.ok, result.index, result.problem, result.n_entries,
                result.head_hash) == (False, None, "empty", 0, None)
        assert "no entries" in result.message and "empty" in AUDIT_PROBLEMS
    assert main(["verify", str(path), "--public-key", genuine.hex()]) == EXIT_BROKEN
    assert capsys.readouterr().out.startswith("BROKEN: no entries (the file is empty")


def test_final_newline_and_blank_lines_follow_the_exact_bytes_rule(chain, capsys):
    """First-use review: a trailing blank line was ``malformed`` but a missing final
    newline passed. The log ends every entry with a newline and writes no blank line,
    so both are bytes it did not write: a cut newline is ``truncated``, a blank line
    ``malformed``."""
    data = chain.read_bytes()
    chain.write_bytes(data[:-1])
    assert verdict(chain) == (False, N - 1, "truncated")
    assert main(["verify", str(chain)]) == EXIT_BROKEN
    assert "line 20 has no final newline" in capsys.readouterr().out
    for blank in (b"\n", b"  \n"):
        chain.write_bytes(data + blank)
        assert verdict(chain) == (False, N, "malformed")
        assert main(["verify", str(chain)]) == EXIT_BROKEN
        assert "line 21 is blank" in capsys.readouterr().out
    chain.write_bytes(data)
    assert verdict(chain) == (True, None, None)


# --------------------------------------------------------------------------- signed heads


def test_signed_head_entry(tmp_path, registry):
    log = AuditLog(tmp_path / "h.jsonl")
    log.append("emergency", t_s=0.0)
    head = log.sign_head(registry)
    log.close()
    assert head.kind == "head_signed"
    assert head.fields["covered_entries"] == 1 and head.fields["head_hash"] == head.prev_hash
    assert head.fields["public_key"] == registry.public_key_bytes("operator").hex()


def test_truncated_tail_detected_with_public_key(tmp_path, registry):
    path = tmp_path / "signed.jsonl"
    write_chain(path, registry=registry, sign_every=5)  # heads after every 5 entries
    key = registry.public_key_bytes("operator")
    entries = read(path)
    assert len(entries) == N + N // 5 and entries[-1]["kind"] == "head_signed"
    assert verdict(path, public_key=key) == (True, None, None)
    write(path, entries[:-3])
    assert verdict(path)[0]  # a clean prefix: fine without the key
    assert verdict(path, public_key=key) == (False, len(entries) - 3, "truncated")


def test_unsigned_chain_fails_when_a_signature_is_required(chain, registry):
    key = registry.public_key_bytes("operator")
    assert verdict(chain, public_key=key) == (False, N, "truncated")


def test_full_rewrite_detected_only_by_signature(tmp_path, registry):
    path = tmp_path / "rewrite.jsonl"
    write_chain(path, n=6, registry=registry, sign_every=6)
    entries = read(path)
    entries[2]["fields"]["power_mw"] = 1e6
    rehash_from(entries, 2)
    head = entries[-1]
    head["fields"]["head_hash"] = head["prev_hash"]
    head["hash"] = reference_hash(head)
    write(path, entries)
    assert verdict(path)[0]  # self-consistent forgery
    key = registry.public_key_bytes("operator")
    assert verdict(path, public_key=key) == (False, 6, "altered")
    other = IdentityRegistry(["x"], seed=12).public_key_bytes("operator")
    path.unlink()   # AuditLog never overwrites a file
    write_chain(path, n=6, registry=registry, sign_every=6)
    assert verdict(path, public_key=other) == (False, 6, "altered")


@pytest.mark.parametrize(("edit", "says"), [
    ("repeated_key", "canonical encoding (the bytes were edited"),
    ("spacing", "canonical encoding (the bytes were edited"),
    ("key_order", "canonical encoding (the bytes were edited"),
    # fuzzing (session 23): a file converted to CRLF was "edited, e.g. a repeated key ..."
    ("crlf", "line 5 is not its entry's canonical encoding: it ends in CRLF (\\r\\n) where "
     "the log writes \\n, a text conversion to Windows line endings (e.g. git autocrlf or an "
     "editor); but for that ending it is the canonical encoding: convert the file back (e.g. "
     "dos2unix) and verify it again"),
])
def test_a_line_that_is_not_its_entrys_canonical_bytes_is_altered(chain, edit, says):
    """Audit finding: a line with a repeated key passed — the verifier hashed the parsed
    (last) value while a reader keeping the first one saw forged content. Every line
    must be the exact bytes the log wrote."""
    lines = chain.read_text().splitlines(keepends=True)
    line = lines[4]
    if edit == "repeated_key":
        line = line.replace('{"fields":', '{"fields":{"power_mw":1e6},"fields":', 1)
    elif edit == "spacing":
        line = line.replace('","', '", "', 1)
    elif edit == "crlf":
        line = line.replace("\n", "\r\n")
    else:   # the same object with "hash" moved first
        entry = json.loads(line)
        line = json.dumps({"hash": entry.pop("hash"), **entry}, separators=(",", ":")) + "\n"
    assert json.loads(line)["hash"] == json.loads(lines[4])["hash"]
    lines[4] = line
    chain.write_bytes("".join(lines).encode())
    result = verify_audit_file(chain)
    assert (result.ok, result.index, result.problem) == (False, 4, "altered")
    assert says in result.message


def test_a_signed_head_whose_scheme_was_edited_is_altered(tmp_path, registry):
    """Audit finding: with a public key, a head re-labelled "hmac" (and re-hashed) was
    skipped as uncheckable and the log reported "truncated" at its end."""
    path = tmp_path / "signed.jsonl"
    write_chain(path, n=6, registry=registry, sign_every=6)
    entries = read(path)
    entries[-1]["fields"]["scheme"] = "hmac"
    entries[-1]["hash"] = reference_hash(entries[-1])
    write(path, entries)
    # without a key: its 128-digit (Ed25519) signature is no HMAC-SHA256 tag's text
    assert verdict(path) == (False, 6, "altered")
    result = verify_audit_file(path, public_key=registry.public_key_bytes("operator"))
    assert (result.ok, result.index, result.problem) == (False, 6, "altered")
    assert "scheme is 'hmac'" in result.message


def _respell(signature_hex: str, spelling: str) -> object:
    if spelling == "upper":
        return signature_hex.upper()
    if spelling == "spaced":
        return " ".join(signature_hex[i:i + 2] for i in range(0, len(signature_hex), 2))
    if spelling == "trailing_space":
        return signature_hex + " "
    if spelling == "short":
        return signature_hex[:-2]
    if spelling == "doubled":
        return signature_hex + signature_hex
    return list(bytes.fromhex(signature_hex))   # "list": the bytes as a JSON array


@pytest.mark.parametrize("spelling", ["upper", "spaced", "trailing_space", "short", "doubled",
                                      "list"])
@pytest.mark.parametrize("mode", ["ed25519", "hmac"])
def test_the_closing_heads_signature_text_must_be_as_written(tmp_path, spelling, mode):
    """Security finding: the signature text is not in the signed bytes and the entry
    hash is unkeyed, and ``bytes.fromhex`` accepts upper case and spaces, so the last
    head's signature could be re-spelled and only the last hash recomputed: verify
    --public-key still said OK/closed, with a chain head the writer never wrote. Only
    the writer's spelling (2 * signature length lowercase hex digits) is accepted."""
    keys = IdentityRegistry(["der_0"], mode=mode, seed=11)
    path = tmp_path / "signed.jsonl"
    log = write_chain(path, n=6, registry=keys, sign_every=3)
    assert log.verify(registry=keys).ok
    # an hmac head is checkable only in process (where the kept hashes show the edit
    # first); from the file: its text, without a key
    checks = [{}, {"public_key": keys.public_key_bytes("operator")}] if mode == "ed25519" \
        else [{}]
    assert all(verdict(path, **kwargs) == (True, None, None) for kwargs in checks)
    entries = read(path)
    fields = entries[-1]["fields"]
    assert len(fields["signature"]) == {"ed25519": 128, "hmac": 64}[mode]
    fields["signature"] = _respell(fields["signature"], spelling)
    entries[-1]["hash"] = reference_hash(entries[-1])
    write(path, entries)
    for kwargs in checks:
        result = verify_audit_file(path, **kwargs)
        assert (result.ok, result.index, result.problem) == (False, 7, "altered"), kwargs
        digits = {"ed25519": 128, "hmac": 64}[mode]
        assert f"expected exactly {digits} lowercase hex digits" in result.message
    if mode == "ed25519":
        key_hex = keys.public_key_bytes("operator").hex()
        assert main(["verify", str(path), "--public-key", key_hex]) == EXIT_BROKEN


@pytest.mark.parametrize("edit", ["identity", "added_field", "public_key", "removed_field"])
def test_the_last_signed_heads_own_fields_cannot_be_edited(tmp_path, registry, edit):
    """Audit finding: the head signature covered only the count and the chain head, so
    the file's last entry (a signed head: no successor's prev_hash shows an edit) could
    be changed and re-hashed - another signer named, a field added - and ``verify
    --public-key`` still printed OK, "ending with a head signed by the given key"."""
    path = tmp_path / "signed.jsonl"
    write_chain(path, n=6, registry=registry, sign_every=6)
    key = registry.public_key_bytes("operator")
    assert verdict(path, public_key=key) == (True, None, None)
    entries = read(path)
    fields = entries[-1]["fields"]
    if edit == "identity":
        fields["identity"] = "regulator"
    elif edit == "added_field":
        fields["approved"] = "every contract honoured"
    elif edit == "public_key":
        fields["public_key"] = IdentityRegistry(["x"], seed=12).public_key_bytes("operator").hex()
    else:
        del fields["public_key"]
    entries[-1]["hash"] = reference_hash(entries[-1])
    write(path, entries)
    assert verdict(path)[0]   # self-consistent without a key
    result = verify_audit_file(path, public_key=key)
    assert (result.ok, result.index, result.problem) == (False, 6, "altered")
    assert "does not verify with the given public key" in result.message
    assert main(["verify", str(path), "--public-key", key.hex()]) == EXIT_BROKEN


def test_the_wrong_key_for_an_intact_file_says_so(tmp_path, registry, capsys):
    """Review: `verify --public-key` with the key printed for another run called an
    intact file "altered" without a hint; the head names its signer's key (an unsigned
    claim), so the message now says the key given may be the wrong one."""
    path = tmp_path / "signed.jsonl"
    write_chain(path, n=6, registry=registry, sign_every=6)
    other = IdentityRegistry(["x"], seed=12).public_key_bytes("operator")
    result = verify_audit_file(path, public_key=other)
    assert (result.ok, result.index, result.problem) == (False, 6, "altered")
    named = registry.public_key_bytes("operator").hex()
    assert (f"the head names another key ({named[:16]}...): either the key given is not "
            "the one printed for this file, or the file was altered") in result.message
    assert main(["verify", str(path), "--public-key", other.hex()]) == EXIT_BROKEN
    assert "either the key given is not the one printed" in capsys.readouterr().out
    # the right key: no such words (and, when the head's named key was edited, none either)
    assert verify_audit_file(path, public_key=bytes.fromhex(named)).ok


#: the small-order points of edwards25519 in canonical encoding (RFC 8032): the
#: identity, (sqrt(-1), 0), (0, -1), (-sqrt(-1), 0)
_SMALL_ORDER = [bytes([1]) + bytes(31), bytes(32), (2**255 - 20).to_bytes(32, "little"),
                bytes(31) + b"\x80"]


def _forged_closing_head(path: Path, key: bytes) -> bool:
    """Write a made-up two-entry file closed by a head 'signed' under ``key`` with
    (R = a small-order point, S = 0), which OpenSSL accepts for any message under a
    small-order key; False when no R worked for this head."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gridswarm_env.trust import _head_message

    log = AuditLog(path)
    log.append("episode_start", episode=0, scenario="emergency", n_agents=6,
               trust="ed25519", shadow=False)
    log.append("contract_verified", contract_ids=["c-0-battery_000-0"], count=1, now_s=1.0)
    fields = {"identity": "operator", "scheme": "ed25519", "covered_entries": log.n_entries,
              "head_hash": log.head_hash, "final": True, "public_key": key.hex()}
    message = _head_message(fields)
    for r in _SMALL_ORDER:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(r + bytes(32), message)
        except Exception:   # noqa: BLE001 - InvalidSignature or ValueError
            continue
        fields["signature"] = (r + bytes(32)).hex()
        log.append("head_signed", **fields)
        log.close()
        return True
    log.close()
    return False


def test_a_small_order_public_key_is_refused(tmp_path, capsys):
    """Crypto review: OpenSSL accepts a small-order point as an Ed25519 public key, and
    under it (R small-order, S = 0) verifies for any message: with `--public-key 00...00`
    a made-up file read "OK ... closed". Such keys are refused before any check."""
    key = bytes(32)
    path = tmp_path / "made_up.jsonl"
    assert _forged_closing_head(path, key)   # the forgery OpenSSL would accept
    with pytest.raises(ValueError, match="not a valid Ed25519 public key"):
        verify_audit_file(path, public_key=key)
    for weak in _SMALL_ORDER:
        with pytest.raises(ValueError, match="small-order"):
            verify_audit_file(path, public_key=weak)
    capsys.readouterr()
    assert main(["verify", str(path), "--public-key", key.hex()]) == audit_cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: --public-key 0000" in captured.err and "all-zero key" in captured.err
    # a genuine key still checks: the same file is not signed by it
    genuine = IdentityRegistry(["x"], seed=3).public_key_bytes("operator")
    assert verify_audit_file(path, public_key=genuine).problem == "altered"


def test_the_key_check_without_pynacl_decides_as_libsodium(monkeypatch):
    """Diff review: the weak-key check needed PyNaCl, which the trust package otherwise
    does without. Its plain-Python fallback decides as libsodium's is_valid_point on genuine
    keys, the small-order encodings (canonical or not) and random bytes (on the curve or
    not, in the prime-order subgroup or not)."""
    import sys

    from nacl.bindings import crypto_core_ed25519_is_valid_point as libsodium

    from gridswarm_env.trust import _ed25519_point_is_valid, weak_public_key_problem

    p = 2**255 - 19
    non_canonical = [(p + k).to_bytes(32, "little") for k in (0, 1)] + [
        (int.from_bytes(b, "little") | 1 << 255).to_bytes(32, "little") for b in _SMALL_ORDER]
    genuine = [IdentityRegistry([f"a{i}"], seed=i).public_key_bytes("operator")
               for i in range(8)]
    rng = np.random.default_rng(5)
    samples = _SMALL_ORDER + non_canonical + genuine + [rng.bytes(32) for _ in range(200)]
    verdicts = [libsodium(b) for b in samples]
    assert [_ed25519_point_is_valid(b) for b in samples] == verdicts
    assert sum(verdicts) >= len(genuine) + 3    # some random points lie in the subgroup
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)   # as without PyNaCl
    assert weak_public_key_problem(genuine[0]) is None
    assert "small-order" in weak_public_key_problem(bytes(32))


def test_the_wrong_key_hint_quotes_only_a_key_as_written(tmp_path, registry):
    """Crypto review: the head's (unsigned) public_key text went to the terminal as it
    was: escape sequences included. Only 64 lowercase hex digits are quoted."""
    path = tmp_path / "signed.jsonl"
    write_chain(path, n=6, registry=registry, sign_every=6)
    entries = read(path)
    entries[-1]["fields"]["public_key"] = "\x1b[2K\rOK\x1b[8m" + "0" * 48
    entries[-1]["hash"] = reference_hash(entries[-1])
    write(path, entries)
    result = verify_audit_file(path, public_key=registry.public_key_bytes("operator"))
    assert (result.ok, result.problem) == (False, "altered")
    assert "\x1b" not in result.message and "names another key" not in result.message


@pytest.mark.parametrize("mode", ["ed25519", "hmac"])
def test_a_head_in_the_first_signature_format_is_refused_with_the_reason(tmp_path, mode):
    """A head signed over the count and chain head only (the first format) proves
    nothing about its own fields: it is refused, and the verdict says why."""
    keys = IdentityRegistry(["der_0"], mode=mode, seed=11)
    log = AuditLog(tmp_path / "v1.jsonl")
    log.append("emergency", t_s=0.0)
    covered, head = log.n_entries, log.head_hash
    v1 = b"gridswarm-audit-head-v1\x00" + covered.to_bytes(8, "big") + bytes.fromhex(head)
    fields = {"identity": "operator", "scheme": mode, "covered_entries": covered,
              "head_hash": head, "signature": keys.sign("operator", v1).hex()}
    if mode == "ed25519":
        fields["public_key"] = keys.public_key_bytes("operator").hex()
    log.append("head_signed", **fields)
    log.close()
    result = (verify_audit_file(log.path, public_key=keys.public_key_bytes("operator"))
              if mode == "ed25519" else log.verify(registry=keys))
    assert (result.ok, result.index, result.problem) == (False, 1, "altered")
    assert "first head format" in result.message
    assert verify_audit_file(log.path).ok   # the hash chain itself is intact


def test_bad_public_key_length(chain):
    with pytest.raises(ValueError, match="public_key"):
        verify_audit_file(chain, public_key=b"short")
    # new-user review: the hex text the CLI takes, given to the library, got no hint
    with pytest.raises(ValueError, match=r"\(a hex string: pass bytes.fromhex\(it\)\)$"):
        verify_audit_file(chain, public_key="ab" * 32)


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file"):
        verify_audit_file(tmp_path / "nope.jsonl")
    with pytest.raises(IsADirectoryError):
        verify_audit_file(tmp_path)


def test_hmac_heads_checked_with_registry(tmp_path):
    hmac_registry = IdentityRegistry(["der_0"], mode="hmac", seed=3)
    log = AuditLog(tmp_path / "hmac.jsonl")
    for i in range(4):
        log.append("emergency", i=i)
    entry = log.sign_head(hmac_registry)
    assert entry.fields["scheme"] == "hmac" and "public_key" not in entry.fields
    assert log.verify(registry=hmac_registry).ok
    assert log.verify().ok
    other = IdentityRegistry(["der_0"], mode="hmac", seed=4)
    result = log.verify(registry=other)
    assert (result.ok, result.index, result.problem) == (False, 4, "altered")
    log.close()


def test_a_head_signed_by_an_agent_does_not_vouch_for_the_log(tmp_path):
    """Review: verify(registry=...) took a head signed by any identity the registry holds;
    in hmac mode that includes every agent's key, so an agent could re-sign a log."""
    registry = IdentityRegistry(["der_0"], mode="hmac", seed=3)
    log = AuditLog(tmp_path / "agent.jsonl")
    log.append("emergency", i=0)
    log.sign_head(registry, "der_0")
    result = log.verify(registry=registry)
    assert (result.ok, result.index, result.problem) == (False, 1, "altered")
    assert "signed by 'der_0', not by the registry's operator 'operator'" in result.message
    log.close()


def test_ok_line_without_a_key_does_not_claim_more_than_self_consistency(
        tmp_path, registry, capsys):
    """Security finding: without ``--public-key`` a middle entry edited and every later
    hash and head field recomputed passed (exit 0, as it must: the hashes are unkeyed),
    but the OK line said only that a cut tail could not be detected, and counted the
    heads it never checked as "signed Ed25519 head(s)"."""
    path = tmp_path / "signed.jsonl"
    write_chain(path, n=9, registry=registry, sign_every=3)
    entries = read(path)
    entries[4]["fields"]["power_mw"] = 1e6
    prev = GENESIS_HASH
    for index, entry in enumerate(entries):   # an attacker without the key
        entry["prev_hash"] = prev
        if entry["kind"] == "head_signed":
            entry["fields"].update(covered_entries=index, head_hash=prev)
        entry["hash"] = prev = reference_hash(entry)
    write(path, entries)
    assert main(["verify", str(path)]) == EXIT_OK
    out = capsys.readouterr().out.strip()
    assert f"hash chain self-consistent only: {NO_KEY_SCOPE}" in out
    assert "anyone can edit an entry and recompute the hashes after it, or cut the tail" in out
    assert "hash chain intact" not in out and "signed Ed25519" not in out
    assert "3 Ed25519 head(s), present but unchecked" in out
    key = registry.public_key_bytes("operator")
    assert verdict(path, public_key=key) == (False, 7, "altered")   # the next head


def test_ok_line_counts_hmac_signed_heads(tmp_path, capsys):
    """Review: a file whose head is HMAC-signed was reported as having "no signed head
    … an hmac-mode file has none"."""
    hmac_registry = IdentityRegistry(["a"], mode="hmac", seed=1)
    path = tmp_path / "hh.jsonl"
    log = AuditLog(path)
    for episode in (1, 2):
        log.append("episode_start", episode=episode)
        log.sign_head(hmac_registry)
    log.close()
    result = verify_audit_file(path)
    assert result.ok and (result.ed25519_heads, result.hmac_heads) == (0, 2)
    assert main(["verify", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "no signed head" not in out and "has none" not in out
    assert out.rstrip().endswith(
        "the file has no Ed25519 head, only 2 HMAC head(s), present but unchecked "
        "(checkable only with the HMAC key in the process that wrote the file: "
        "AuditLog.verify(registry=...))")


# --------------------------------------------------------------------------- in-process checks and memory


def test_in_process_verify_catches_truncation_and_rewrites(tmp_path):
    path = tmp_path / "live.jsonl"
    log = write_chain(path)
    assert log.verify().ok
    entries = read(path)
    write(path, entries[:-2])
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, N - 2, "truncated")
    entries[15]["fields"]["power_mw"] = -1.0
    rehash_from(entries, 15)
    write(path, entries)
    assert verdict(path)[0]
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, 15, "altered")
    path.unlink()
    assert log.verify().problem == "removed"


def test_memory_only_log_detects_in_memory_tampering():
    log = AuditLog()
    for i in range(10):
        log.append("emergency", i=i)
    assert log.verify().ok
    log.entries[4].fields["i"] = 40
    result = log.verify()
    assert (result.ok, result.index, result.problem) == (False, 4, "altered")


def test_bounded_memory_modes_keep_the_same_head(tmp_path):
    full = AuditLog()
    window = AuditLog(max_entries_in_memory=50)
    head_only = AuditLog(keep_entries=False)
    streamed = AuditLog(tmp_path / "stream.jsonl", keep_entries=False)
    for i in range(3000):
        for log in (full, window, head_only, streamed):
            log.append("contract_verified", count=1, contract_ids=[f"c-{i}"])
    assert full.head_hash == window.head_hash == head_only.head_hash == streamed.head_hash
    assert len(full.entries) == 3000 and len(window.entries) == 50
    assert len(head_only.entries) == 0 and len(streamed.entries) == 0
    assert len(head_only) == len(streamed) == 3000
    assert [e.index for e in window.entries] == list(range(2950, 3000))
    assert window.verify().ok and head_only.verify().ok and streamed.verify().ok
    assert "not retained" in head_only.verify().message
    window.entries[10].fields["count"] = 2
    result = window.verify()
    assert (result.ok, result.index, result.problem) == (False, 2960, "altered")
    streamed.close()
    assert verify_audit_file(tmp_path / "stream.jsonl").n_entries == 3000


# --------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gridswarm_env.audit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_cli_ok_and_broken(chain):
    head = read(chain)[-1]["hash"]
    ok = run_cli("verify", str(chain))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (
        f"OK: {N} entries, head {head}; hash chain self-consistent only: {NO_KEY_SCOPE}; "
        "the file has no signed head (an ed25519-mode file whose heads were cut off or "
        "removed looks like this; --public-key HEX reveals that, HEX being the operator's "
        f"audit key, {KEY_SOURCE}; an hmac-mode environment signs no heads, and only the "
        "process that wrote the file can detect such edits)"
    )

    entries = read(chain)
    entries[17]["fields"]["step"] = -1
    write(chain, entries)
    broken = run_cli("verify", str(chain))
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN at entry 17: altered (")


def test_cli_public_key(registry, tmp_path, capsys):
    signed = tmp_path / "signed.jsonl"
    write_chain(signed, registry=registry, sign_every=4)
    key_hex = registry.public_key_bytes("operator").hex()
    assert main(["verify", str(signed), "--public-key", key_hex]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {N + N // 4} entries")
    write(signed, read(signed)[:-1])
    assert main(["verify", str(signed), "--public-key", key_hex]) == 1
    assert capsys.readouterr().out.startswith(f"BROKEN at entry {N + N // 4 - 1}: truncated (")


def test_an_hmac_mode_file_checked_with_a_key_fails_and_says_why(tmp_path, capsys):
    """New-user review: an hmac-mode trail checked with ``--public-key`` read "truncated
    ... its tail was cut or is unsigned", though nothing was cut: hmac mode signs no
    heads. It still fails (the trust field is the file's own word, which an editor
    could write), but the message names the likely mistake, and only when every
    episode_start says hmac."""
    import gridswarm_env

    trail = tmp_path / "hmac.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac",
                                     audit_path=str(trail))
    env.reset(seed=0)
    env.close()
    key_hex = IdentityRegistry(["x"], seed=3).public_key_bytes("operator").hex()
    assert main(["verify", str(trail), "--public-key", key_hex]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN at entry 1: truncated (") and "trust = hmac" in out
    assert "verify it without --public-key" in out
    assert main(["verify", str(trail)]) == 0
    capsys.readouterr()
    unsigned = tmp_path / "unsigned.jsonl"   # no episode_start at all: no hint
    write_chain(unsigned, n=3)
    assert main(["verify", str(unsigned), "--public-key", key_hex]) == 1
    assert "trust = hmac" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # the program's name first, as argparse's own errors (review: a bare "error: ")
        (("verify", "/nonexistent/audit.jsonl"),
         "python -m gridswarm_env.audit: error: cannot read audit file"),
        # one line, as the project's other commands (it printed a usage block first)
        ((), "python -m gridswarm_env.audit: error: the following arguments are required: "
             "COMMAND (see python -m gridswarm_env.audit --help)\n"),
    ],
)
def test_cli_errors_exit_2_without_traceback(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("check", "x"), "python -m gridswarm_env.audit: error: argument COMMAND: invalid "
                         "choice: 'check' (choose from 'verify') (see "),
        (("verify", "FILE", "--public-key", "zz"),
         "python -m gridswarm_env.audit: error: --public-key must be 64 hex digits"),
        (("verify", "FILE", "--public-key", "ab" * 31), "64 hex digits"),
        (("verify",), "python -m gridswarm_env.audit verify: error: the following arguments "
                      "are required: FILE (see python -m gridswarm_env.audit verify --help)"),
        (("verify", "FILE", "--bogus"), "error: unrecognized arguments: --bogus (see "),
    ],
)
def test_cli_usage_errors_exit_2(args, needle, chain, capsys):
    args = [str(chain) if a == "FILE" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1   # one line, no usage block


def test_cli_main_in_process(chain, capsys):
    assert main(["verify", str(chain)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {N} entries")
    assert main(["verify", str(chain) + ".missing"]) == 2
    assert main(["--help"]) == 0


def test_import_has_no_side_effects():
    result = subprocess.run(
        [sys.executable, "-c", "import gridswarm_env, gridswarm_env.audit, gridswarm_env.trust"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_format_verdict():
    closing = ("OK: 3 entries, head ab; hash chain intact, ending with the writer's closing "
               "head signed by the given key (closed: the file is whole as its writer "
               "finished it")
    assert format_verdict(AuditVerification(True, None, None, "3 entries, head ab", 3, "ab",
                                            closed=True), public_key_given=True) == closing + ")"
    assert format_verdict(AuditVerification(True, None, None, "3 entries, head ab", 3, "ab",
                                            closed=True, episodes=2),
                          public_key_given=True) == closing + ", 2 episode(s))"
    assert format_verdict(AuditVerification(True, None, None, "3 entries, head ab", 3, "ab",
                                            closed=False, episodes=1),
                          public_key_given=True) == (
        "OK: 3 entries, head ab; hash chain intact, ending with a head signed by the given "
        "key, but not closed: its last signed head is not the writer's closing head, so the "
        "writer may still be running (or crashed), or the file was cut after its 1st "
        'episode ("episode": 0)')
    assert format_verdict(AuditVerification(True, None, None, "3 entries, head ab", 3, "ab",
                                            episodes=4), public_key_given=True) == (
        "OK: 3 entries, head ab; hash chain intact, ending with a head signed by the given "
        "key in the v2 format (gridswarm-audit-head-v2), which predates closing heads: a "
        "file cut right after an earlier episode's head looks the same, so check the "
        "episode count too (episode_start entries: 4)")
    assert format_verdict(
        AuditVerification(True, None, None, "3 entries, head ab", 3, "ab", 1)
    ) == (f"OK: 3 entries, head ab; hash chain self-consistent only: {NO_KEY_SCOPE}; the file "
          "has 1 Ed25519 head(s), present but unchecked: --public-key HEX checks them and "
          f"the file's end (HEX is the operator's audit key, {KEY_SOURCE})")
    assert format_verdict(AuditVerification(True, None, None, "0 entries", 0, None)).startswith(
        "BROKEN: no entries (the file is empty"
    )
    assert format_verdict(
        AuditVerification(False, None, "empty", "empty: no entries", 0, None)
    ).startswith("BROKEN: no entries (the file is empty")
    mixed = AuditVerification(True, None, None, "3 entries, head ab", 3, "ab", 1, 2, True)
    assert format_verdict(mixed).endswith(
        f"{KEY_SOURCE}); it also has 2 HMAC head(s), present but unchecked (checkable only "
        "with the HMAC key in the process that wrote the file: AuditLog.verify(registry=...))")
    assert format_verdict(mixed, public_key_given=True) == (
        f"{closing}); the file also has 2 HMAC head(s), present but unchecked (checkable "
        "only with the HMAC key in the process that wrote the file: "
        "AuditLog.verify(registry=...))")
    broken = AuditVerification(
        False, 4, "removed", "removed at entry 4: entries 4..5 are missing", 4, "cd"
    )
    assert format_verdict(broken) == "BROKEN at entry 4: removed (entries 4..5 are missing)"


# --------------------------------------------------------------------------- env-written files


def _run_env_episode(path: Path, trust: str):
    import gridswarm_env
    from policies import make_policy

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=12, trust=trust,
                                     audit_path=str(path))
    raw = env.unwrapped
    env.reset(seed=3)
    policy = make_policy("heuristic")
    policy.reset(raw, seed=3)
    for _ in range(25):
        act = policy.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(act[:, 0], act[:, 1])
    env.close()
    return raw


def test_env_file_ends_with_a_signed_head_that_catches_a_cut_tail(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    raw = _run_env_episode(path, "ed25519")
    key = raw.operator_public_key_hex()
    assert len(key) == 64
    entries = read(path)
    assert entries[-1]["kind"] == "head_signed"
    assert entries[-1]["fields"]["covered_entries"] == len(entries) - 1
    assert main(["verify", str(path), "--public-key", key]) == EXIT_OK
    # closing again writes no second head (nothing new to cover)
    raw.close()
    assert len(read(path)) == len(entries)
    # a tail cut at an entry boundary: the chain alone looks intact, the key catches it
    write(path, entries[:-2])
    assert verdict(path) == (True, None, None)
    # ... and without the key the OK line says what it could not check (first-use
    # review: a plain "OK: 63 entries" for a file whose signed head was cut off)
    capsys.readouterr()
    assert main(["verify", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"self-consistent only: {NO_KEY_SCOPE}" in out and "--public-key HEX" in out
    assert "operator_public_key_hex()" in out
    assert main(["verify", str(path), "--public-key", key]) == EXIT_BROKEN
    assert verdict(path, public_key=bytes.fromhex(key))[2] == "truncated"
    # a rewritten suffix (hashes recomputed) breaks the signature over the head
    entries = entries[:]
    entries[-2]["fields"]["count"] = 0
    rehash_from(entries, len(entries) - 2)
    write(path, entries)
    assert verdict(path, public_key=bytes.fromhex(key))[:1] == (False,)
    assert verdict(path, public_key=bytes.fromhex(key))[2] == "altered"


def test_audit_head_key_is_not_derived_from_the_seed_and_spans_seeds(tmp_path, capsys):
    """README review: with the seeded contract key anyone who knew the seed could re-sign
    a cut file, and a file with episodes of two seeds verified with no single key."""
    import gridswarm_env
    from policies import make_policy
    from policies.rollout import run_episode

    path = tmp_path / "audit.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=12, audit_path=str(path))
    raw = env.unwrapped
    for seed in (0, 1):
        run_episode(raw, make_policy("heuristic"), seed=seed)   # each ends sealed
    env.close()   # and the file with the closing head
    key = raw.operator_public_key_hex()
    # not the seeded operator key, and another environment with the same seed differs
    assert key != raw.registry.public_key_bytes("operator").hex()
    other = gridswarm_env.parallel_env(scenario="emergency", n_agents=12,
                                       audit_path=str(tmp_path / "other.jsonl"))
    other.reset(seed=1)
    assert other.unwrapped.operator_public_key_hex() != key
    other.close()
    # one key verifies every episode's head and the closing head in the file
    heads = [e for e in read(path) if e["kind"] == "head_signed"]
    assert len(heads) == 3 and {h["fields"]["public_key"] for h in heads} == {key}
    assert [h["fields"]["final"] for h in heads] == [False, False, True]
    assert main(["verify", str(path), "--public-key", key]) == EXIT_OK
    # the closing head cut off, the episodes' kept: the OK line without a key counts
    # them and asks for the key, which then reports the cut
    write(path, read(path)[:-1])
    capsys.readouterr()
    assert main(["verify", str(path)]) == EXIT_OK
    assert ("the file has 2 Ed25519 head(s), present but unchecked: --public-key HEX checks "
            "them and the file's end") in capsys.readouterr().out
    assert main(["verify", str(path), "--public-key", key]) == EXIT_BROKEN
    assert "truncated" in capsys.readouterr().out
    write(path, [*read(path), heads[-1]])
    # re-signing a cut file with the seed-derived operator key does not pass
    seeded = IdentityRegistry(raw.possible_agents, seed=1)
    entries = read(path)[:-5]
    write(path, entries)
    forged = AuditLog(tmp_path / "forged.jsonl")
    for e in entries:
        forged.append(e["kind"], **e["fields"])
    forged.sign_head(seeded)
    forged.close()
    assert main(["verify", str(tmp_path / "forged.jsonl"), "--public-key", key]) == EXIT_BROKEN


def test_hmac_env_files_have_no_signed_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    raw = _run_env_episode(path, "hmac")
    assert raw.operator_public_key_hex() is None
    # documented: the audit key exists only to sign a streamed file's heads
    import gridswarm_env

    unstreamed = gridswarm_env.parallel_env(n_agents=3, trust="ed25519").unwrapped
    assert unstreamed.operator_public_key_hex() is None
    assert all(e["kind"] != "head_signed" for e in read(path))
    assert main(["verify", str(path)]) == EXIT_OK


def test_wrongly_typed_signed_head_and_deep_nesting_are_verdicts_not_crashes(tmp_path, registry):
    """Protocol review: a float covered_entries (hash recomputed, no key needed) raised
    struct.error and a line of 1000 nested brackets raised RecursionError."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("emergency", now_s=1.0)
        log.sign_head(registry)
    entries = read(path)
    entries[1]["fields"]["covered_entries"] = 1.0     # == 1, but not an integer
    rehash_from(entries, 1)
    write(path, entries)
    key = registry.public_key_bytes("operator")
    for kwargs in ({}, {"public_key": key}):
        ok, index, problem = verdict(path, **kwargs)
        assert not ok and index == 1 and problem == "altered"
    deep = tmp_path / "deep.jsonl"
    deep.write_text(path.read_text().splitlines(keepends=True)[0] + "[" * 5000 + "\n")
    assert verdict(deep)[1:] == (1, "malformed")
    assert main(["verify", str(deep)]) == EXIT_BROKEN


def test_an_environment_never_overwrites_an_existing_audit_trail(tmp_path):
    """Fuzzing review: building a second environment on a sealed trail's path emptied it
    (the file was opened for writing in the constructor); a directory gave a bare
    IsADirectoryError."""
    import gridswarm_env

    trail = tmp_path / "trail.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac",
                                     audit_path=str(trail))
    env.reset(seed=0)
    env.close()
    kept = trail.read_bytes()
    assert kept
    with pytest.raises(ValueError, match="already exists .*never overwritten"):
        gridswarm_env.parallel_env(n_agents=3, trust="hmac", audit_path=str(trail))
    assert trail.read_bytes() == kept
    with pytest.raises(ValueError, match="is a directory; expected a file path"):
        gridswarm_env.parallel_env(n_agents=3, trust="hmac", audit_path=str(tmp_path))
    with pytest.raises(ValueError, match="cannot be written"):
        gridswarm_env.parallel_env(n_agents=3, trust="hmac",
                                   audit_path=str(tmp_path / "missing" / "a.jsonl"))
    empty = tmp_path / "touched.jsonl"
    empty.touch()
    gridswarm_env.parallel_env(n_agents=3, trust="hmac", audit_path=str(empty)).close()


def test_an_audit_log_never_empties_an_existing_file(tmp_path):
    """Security finding: ``AuditLog(path)`` opened its file with "w", so any caller but
    the environment (whose check ran before, separately: a race) emptied an existing
    trail. It creates the file exclusively; an existing file is kept only if empty."""
    trail = tmp_path / "trail.jsonl"
    write_chain(trail, n=3)
    kept = trail.read_bytes()
    with pytest.raises(ValueError, match=r"AuditLog path '.*trail.jsonl' already exists "
                       r"\(\d+ bytes\): an audit trail is never overwritten \(only a new path "
                       r"or an existing empty file is allowed\)"):
        AuditLog(trail)
    assert trail.read_bytes() == kept
    with pytest.raises(ValueError, match="is a directory; expected a file path"):
        AuditLog(tmp_path)
    with pytest.raises(FileNotFoundError):
        AuditLog(tmp_path / "missing" / "a.jsonl")
    empty = tmp_path / "touched.jsonl"   # README: an existing empty file is fine
    empty.touch()
    write_chain(empty, n=3)
    assert verdict(empty) == (True, None, None) and len(read(empty)) == 3
    fresh = tmp_path / "fresh.jsonl"
    write_chain(fresh, n=3)
    assert fresh.read_bytes() == empty.read_bytes()


def test_an_audit_trail_is_never_written_through_a_symbolic_link(tmp_path):
    """Security finding (listed undone last pass): an existing empty file was opened
    with ``O_WRONLY | O_APPEND``, which follows a symbolic link, so a link planted at
    the audit path sent the trail elsewhere. Links are refused, dangling or not, by the
    writer and by the environment's path check; the link's target is left untouched."""
    import gridswarm_env

    target = tmp_path / "elsewhere.jsonl"
    target.touch()
    link = tmp_path / "trail.jsonl"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nothing-here.jsonl")
    for path in (link, dangling):
        with pytest.raises(ValueError, match=r"is a symbolic link; an audit trail is written "
                           r"only to the path given, never through a link"):
            AuditLog(path)
        with pytest.raises(ValueError, match=r"EnvConfig.audit_path = '.*' is a symbolic link"):
            gridswarm_env.parallel_env(n_agents=3, trust="hmac", audit_path=str(path))
    assert target.read_bytes() == b""
    assert not (tmp_path / "nothing-here.jsonl").exists()


def test_an_environment_loses_no_trail_written_after_its_path_check(tmp_path, monkeypatch):
    """The environment checks its audit path before it opens it; a file that appears
    in between (another writer winning the race) is refused, not emptied."""
    import importlib

    import gridswarm_env

    env_module = importlib.import_module("gridswarm_env.env")   # not the env() function
    trail = tmp_path / "trail.jsonl"
    check = env_module.check_new_audit_file

    def check_then_lose_the_race(path, label):
        check(path, label)
        trail.write_text("another writer's entry\n")

    monkeypatch.setattr(env_module, "check_new_audit_file", check_then_lose_the_race)
    with pytest.raises(ValueError, match="already exists .*never overwritten"):
        gridswarm_env.parallel_env(n_agents=3, trust="hmac", audit_path=str(trail))
    assert trail.read_text() == "another writer's entry\n"


# --- boundaries a mutation audit found unpinned: the writer's own verdict, forged lines
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


# --- command line boundaries a mutation audit found unpinned
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


def test_cli_ok_line_with_the_key_says_the_tail_was_checked(registry, tmp_path, capsys):
    """With ``--public-key`` the OK line must say the file ends with a head signed by
    that key (here the writer's closing head), not advise passing the key it was given."""
    signed = tmp_path / "signed.jsonl"
    write_chain(signed, registry=registry, sign_every=4)
    key_hex = registry.public_key_bytes("operator").hex()
    assert main(["verify", str(signed), "--public-key", key_hex]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("hash chain intact, ending with the writer's closing head signed by "
                        "the given key (closed: the file is whole as its writer finished it)")
    assert "cannot be detected" not in out


def test_cli_unreadable_path_is_an_error_not_a_traceback(tmp_path, capsys):
    """Any OSError reading FILE (here a directory, not only a missing file) is exit 2
    with ``error: cannot read audit file``."""
    assert main(["verify", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "python -m gridswarm_env.audit: error: cannot read audit file" in captured.err
    assert captured.out == ""


def test_cli_empty_path_says_empty_not_directory(capsys):
    """Fuzzing: ``verify ''`` said "cannot read audit file '': Is a directory"."""
    assert main(["verify", ""]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("python -m gridswarm_env.audit: error: empty audit file path; "
                            "expected a JSONL audit file\n")
    assert captured.out == ""


# --- closing heads: a file the writer finished is checkable as whole with the key alone
V2_FILE = REPO / "tests" / "data" / "audit_v2_two_episodes.jsonl"
#: the operator key of V2_FILE (two episodes and env.close(), written before closing heads)
V2_KEY = "905421482d506b766ded1bc640d44044b32e3bdaa14ee77548d0c828b0e93379"


def _two_episode_file(tmp_path: Path) -> tuple[Path, str]:
    """An ed25519 environment's audit file: two whole episodes, then ``env.close()``."""
    import gridswarm_env
    from policies import make_policy
    from policies.rollout import run_episode

    path = tmp_path / "audit.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=12, audit_path=str(path))
    for seed in (0, 1):
        run_episode(env.unwrapped, make_policy("heuristic"), seed=seed)
    env.close()
    return path, env.unwrapped.operator_public_key_hex()


def _first_head(entries: list[dict]) -> int:
    return next(i for i, e in enumerate(entries) if e["kind"] == "head_signed")


def test_a_file_cut_right_after_an_earlier_episodes_head_is_not_reported_ok(tmp_path, capsys):
    """Audit finding: a file cut exactly after episode 1's signed head (of a two-episode
    run) verified OK with --public-key ("ending with a head signed by the given key"):
    the reader could notice only by counting episode_start entries. Only the head
    env.close() signs is final, so such a cut is ``truncated`` unless --allow-open."""
    path, key = _two_episode_file(tmp_path)
    entries = read(path)
    first = _first_head(entries)   # episode 1's head
    cut = tmp_path / "cut.jsonl"
    write(cut, entries[:first + 1])
    assert verdict(cut) == (True, None, None)   # the chain alone cannot tell
    assert main(["verify", str(cut), "--public-key", key]) == EXIT_BROKEN
    out = capsys.readouterr().out
    assert out.startswith(f"BROKEN at entry {first + 1}: truncated (not closed: its last "
                          "signed head is not the writer's closing head"), out
    result = verify_audit_file(cut, public_key=bytes.fromhex(key))
    assert (result.ok, result.index, result.problem) == (False, first + 1, "truncated")
    assert result.closed is False and result.episodes == 1
    assert 'the file was cut after its 1st episode ("episode": 0)' in out
    assert "--allow-open" in out
    # a writer still running between episodes: accepted on request, and the OK line says so
    running = verify_audit_file(cut, public_key=bytes.fromhex(key), allow_open=True)
    assert running.ok and running.closed is False and running.episodes == 1
    assert main(["verify", str(cut), "--public-key", key, "--allow-open"]) == EXIT_OK
    assert capsys.readouterr().out.rstrip().endswith(
        "ending with a head signed by the given key, but not closed: its last signed head is "
        "not the writer's closing head, so the writer may still be running (or crashed), or "
        'the file was cut after its 1st episode ("episode": 0)')
    # the whole file: heads of episodes 1 and 2, then env.close()'s closing head
    heads = [i for i, e in enumerate(entries) if e["kind"] == "head_signed"]
    assert heads == [first, len(entries) - 2, len(entries) - 1]
    whole = verify_audit_file(path, public_key=bytes.fromhex(key))
    assert whole.ok and whole.closed is True and whole.episodes == 2
    assert main(["verify", str(path), "--public-key", key]) == EXIT_OK
    assert capsys.readouterr().out.rstrip().endswith(
        "ending with the writer's closing head signed by the given key (closed: the file is "
        "whole as its writer finished it, 2 episode(s))")
    # with --allow-open a closed file is still reported closed
    assert verify_audit_file(path, public_key=bytes.fromhex(key), allow_open=True).closed
    # cut after episode 2's head (only the closing head missing): not closed either
    write(cut, entries[:-1])
    result = verify_audit_file(cut, public_key=bytes.fromhex(key))
    assert (result.problem, result.closed, result.episodes) == ("truncated", False, 2)


@pytest.mark.parametrize("edit", ["episode_head_made_final", "closing_head_made_open",
                                  "final_removed", "final_as_int"])
def test_the_final_flag_is_covered_by_the_head_signature(tmp_path, edit):
    """Marking an episode's head as closing (after cutting the rest), un-marking the
    closing head, or dropping the flag (to pass as a v2 head) needs the operator's key."""
    path, key = _two_episode_file(tmp_path)
    entries = read(path)
    at = _first_head(entries) if edit == "episode_head_made_final" else len(entries) - 1
    entries = entries[:at + 1]
    fields = entries[at]["fields"]
    assert fields["final"] is (edit != "episode_head_made_final")
    if edit == "episode_head_made_final":
        fields["final"] = True
    elif edit == "closing_head_made_open":
        fields["final"] = False
    elif edit == "final_removed":
        del fields["final"]
    else:
        fields["final"] = 1
    entries[at]["hash"] = reference_hash(entries[at])
    write(path, entries)
    # self-consistent without the key (a flag that is no bool is refused even so, as a
    # float covered_entries)
    assert verdict(path) == ((False, at, "altered") if edit == "final_as_int"
                             else (True, None, None))
    for allow_open in (False, True):
        result = verify_audit_file(path, public_key=bytes.fromhex(key), allow_open=allow_open)
        assert (result.ok, result.index, result.problem) == (False, at, "altered")
    assert main(["verify", str(path), "--public-key", key]) == EXIT_BROKEN


def test_a_v2_file_written_before_closing_heads_still_verifies_and_says_so(tmp_path, capsys):
    """tests/data/audit_v2_two_episodes.jsonl was written by the environment before
    closing heads (two episodes, then env.close()): it verifies as it did, with a verdict
    saying its heads predate closing heads, so a cut after episode 1 cannot be shown."""
    key = bytes.fromhex(V2_KEY)
    entries = read(V2_FILE)
    assert all("final" not in e["fields"] for e in entries if e["kind"] == "head_signed")
    result = verify_audit_file(V2_FILE, public_key=key)
    assert result.ok and result.closed is None and result.episodes == 2
    assert main(["verify", str(V2_FILE), "--public-key", V2_KEY]) == EXIT_OK
    assert capsys.readouterr().out.rstrip().endswith(
        "ending with a head signed by the given key in the v2 format "
        "(gridswarm-audit-head-v2), which predates closing heads: a file cut right after an "
        "earlier episode's head looks the same, so check the episode count too "
        "(episode_start entries: 2)")
    cut = tmp_path / "cut.jsonl"
    write(cut, entries[:_first_head(entries) + 1])
    result = verify_audit_file(cut, public_key=key)
    assert result.ok and result.closed is None and result.episodes == 1
    # its heads' fields are still signed: a final flag added to a v2 head fails
    entries[-1]["fields"]["final"] = True
    entries[-1]["hash"] = reference_hash(entries[-1])
    write(cut, entries)
    result = verify_audit_file(cut, public_key=key)
    assert (result.ok, result.index, result.problem) == (False, len(entries) - 1, "altered")


@pytest.mark.parametrize("with_key", [False, True])
def test_an_entry_appended_after_the_closing_head_is_inserted(tmp_path, with_key):
    path, key = _two_episode_file(tmp_path)
    entries = read(path)
    extra = {"index": len(entries), "kind": "contract_verified",
             "fields": {"count": 1, "contract_ids": ["c-forged"]},
             "prev_hash": entries[-1]["hash"]}
    extra["hash"] = reference_hash(extra)
    write(path, [*entries, extra])
    kwargs = {"public_key": bytes.fromhex(key)} if with_key else {}
    result = verify_audit_file(path, **kwargs)
    assert (result.ok, result.index, result.problem) == (False, len(entries), "inserted")
    assert f"follows the closing head (entry {len(entries) - 1}" in result.message


def test_a_log_takes_no_entry_after_its_closing_head(tmp_path, registry):
    for path in (tmp_path / "closed.jsonl", None):
        log = AuditLog(path)
        log.append("emergency", t_s=0.0)
        log.sign_head(registry)
        assert not log.closing_head_signed
        assert log.verify(public_key=registry.public_key_bytes("operator")).closed is False
        head = log.sign_head(registry, final=True)
        assert head.fields["final"] is True and log.closing_head_signed
        for append in (lambda lg: lg.append("emergency", t_s=1.0),
                       lambda lg: lg.sign_head(registry),
                       lambda lg: lg.sign_head(registry, final=True)):
            with pytest.raises(RuntimeError, match=r"ends with its closing head .*entry 2.*"
                                                   r"takes no more entries"):
                append(log)
        assert log.n_entries == 3
        result = log.verify(public_key=registry.public_key_bytes("operator"))
        assert result.ok and result.closed is True
    with pytest.raises(ValueError, match="final='yes' must be True"):
        AuditLog().sign_head(registry, final="yes")
    with pytest.raises(ValueError, match="allow_open=1 must be True or False"):
        verify_audit_file(tmp_path / "closed.jsonl", allow_open=1)


def test_the_writer_knows_whether_it_closed_its_log(tmp_path, registry):
    """In process, an open log ending with a non-final head verifies (closed False); a
    closed one must end with its closing head: a file cut by it is truncated."""
    key = registry.public_key_bytes("operator")
    log = _streamed_log(tmp_path / "a.jsonl", 3)
    log.sign_head(registry)
    assert log.verify(public_key=key).ok
    log.sign_head(registry, final=True)
    path = tmp_path / "a.jsonl"
    write(path, read(path)[:-1])
    result = log.verify(public_key=key)
    assert (result.ok, result.index, result.problem) == (False, 4, "truncated")


def test_cli_allow_open_needs_the_public_key(chain, capsys):
    assert main(["verify", str(chain), "--allow-open"]) == audit_cli.EXIT_ERROR
    assert "--allow-open needs --public-key HEX" in capsys.readouterr().err


def test_a_closed_ed25519_environment_refuses_reset_and_step(tmp_path):
    """env.close() ends the file with the closing head: another episode would append
    after it, so reset() and step() are refused (hmac mode is unchanged: no heads)."""
    import gridswarm_env

    path = tmp_path / "audit.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=4, audit_path=str(path))
    raw = env.unwrapped
    env.reset(seed=0)
    zeros = np.zeros(raw.n_agents, dtype=np.int64)
    raw.step_arrays(zeros, zeros)
    env.close()   # mid-episode (as demo.py --steps N): the closing head covers it all
    entries = read(path)
    assert entries[-1]["kind"] == "head_signed" and entries[-1]["fields"]["final"] is True
    assert [e["kind"] for e in entries].count("head_signed") == 1
    with pytest.raises(RuntimeError, match=r"step\(\) after close\(\): the audit file .* ends "
                                           r"with the operator's closing head"):
        raw.step_arrays(zeros, zeros)
    with pytest.raises(RuntimeError, match=r"reset\(\) after close\(\).*build a new "
                                           r"environment \(with a new audit_path\)"):
        env.reset(seed=1)
    env.close()   # closing again does nothing
    assert read(path) == entries
    assert raw.episode_metrics()["steps"] == 1   # what ran can still be read
    result = verify_audit_file(path, public_key=bytes.fromhex(raw.operator_public_key_hex()))
    assert result.ok and result.closed is True and result.episodes == 1
    # closed before its first reset: the file stays empty, and no episode can start
    empty = gridswarm_env.parallel_env(n_agents=3, audit_path=str(tmp_path / "e.jsonl"))
    empty.close()
    assert (tmp_path / "e.jsonl").read_bytes() == b""
    with pytest.raises(RuntimeError, match=r"was closed before the first reset \(empty\)"):
        empty.reset(seed=0)
    # hmac mode as before: close() only flushes, reset() after it goes on in the same file
    hmac_path = tmp_path / "hmac.jsonl"
    hmac_env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="hmac",
                                          audit_path=str(hmac_path))
    hmac_env.reset(seed=0)
    hmac_env.close()
    hmac_env.reset(seed=1)
    hmac_env.close()
    kinds = [e["kind"] for e in read(hmac_path)]
    assert kinds.count("episode_start") == 2 and "head_signed" not in kinds


def test_the_library_imports_no_script_policy_or_training_code() -> None:
    """DESIGN §1: ``gridswarm_env`` is a library that imports nothing from ``policies``,
    ``train``, ``benchmarks`` or the scripts, and none of its modules but the package
    itself imports ``env.py`` (code review: audit.py imported its argument parser from
    policies; the AEC wrapper takes the action check from ``actions.py`` since env.py was
    split), except for a type under ``if TYPE_CHECKING:``, which never runs. Checked on
    the source, at every nesting level."""
    import ast
    import pathlib

    import gridswarm_env

    root = pathlib.Path(gridswarm_env.__file__).parent
    outside = {"policies", "train", "benchmarks", "evaluate", "demo", "dashboard", "tests"}
    may_import_env = {root / "__init__.py"}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # imports under ``if TYPE_CHECKING:`` never run: they may name env.py for a type
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in outside, (path.name, name)
                if path not in may_import_env and id(node) not in typing_only:
                    assert name != "gridswarm_env.env", (path.name, name)


def test_every_kind_the_environment_writes_is_listed_in_audit_kinds(tmp_path):
    """Docs review: ``AUDIT_KINDS``, "entry kinds written by gridswarm", lacked
    ``episode_start``, the entry the environment writes first in every episode (and the
    one the verifier counts episodes by)."""
    import gridswarm_env
    from gridswarm_env.trust import AUDIT_KINDS

    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=10, trust="ed25519",
                                     audit_path=str(tmp_path / "audit.jsonl"))
    env.reset(seed=0)
    raw = env.unwrapped
    top = np.full(raw.n_agents, raw.config.market.n_power_levels - 1)
    while raw.agents:        # every agent bids its top level, unmasked: some are blocked
        raw.step_arrays(top, np.zeros(raw.n_agents, np.int64))
    env.close()
    kinds = {entry["kind"] for entry in read(tmp_path / "audit.jsonl")}
    assert {"episode_start", "contract_signed", "contract_verified", "action_blocked",
            "emergency", "head_signed"} <= kinds
    assert kinds <= set(AUDIT_KINDS)
