"""The audit file verifier and writer on hostile input: a verdict or a clear refusal,
never a crash, a hang or unbounded memory (security review, session 21)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gridswarm_env
from gridswarm_env.audit import EXIT_ERROR, main
from gridswarm_env.trust import (
    AuditLog,
    IdentityRegistry,
    audit_chain,
    check_new_audit_file,
    verify_audit_file,
)
from gridswarm_env.trust.audit_chain import _file_records, _verify_records

REPO = Path(__file__).resolve().parents[1]
GENESIS = "0" * 64


def nested(depth: int) -> object:
    """``depth`` lists nested in one another (``[[...]]``), built without recursion."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_line(depth: int, index: int = 0, prev: str = GENESIS) -> str:
    """An entry line whose field ``x`` nests ``depth`` arrays (the line: ``depth + 2``
    levels), with a made-up hash, as the review's deep*.py scripts wrote them."""
    return ('{"fields":{"x":' + "[" * depth + "]" * depth + '},"index":' + str(index)
            + ',"kind":"k","prev_hash":"' + prev + '","hash":"' + "0" * 64 + '"}\n')


def run(code_or_args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


# --- 1. nesting: a verdict at every depth, whatever the stack ---------------------------
def test_deeply_nested_lines_are_a_verdict_never_a_recursion_error(tmp_path):
    """Review: lines nesting ~984-989 arrays (the window where ``json`` still parses a
    line but can no longer encode it from the verifier's deeper stack) raised
    RecursionError from verify_audit_file and AuditLog.verify (deep2.py, deep3.py). A
    range of depths covers the window wherever the caller's stack puts it."""
    path = tmp_path / "deep.jsonl"
    for depth in range(850, 1010):
        path.write_text(deep_line(depth))
        result = verify_audit_file(path)
        assert (result.ok, result.index) == (False, 0), depth
    # the writer's own in-process check of its file (the review's deep3.py)
    for depth in range(850, 1010):
        own = tmp_path / f"own{depth}.jsonl"
        with AuditLog(own) as log:
            log.append("k", a=1)
        with own.open("a") as handle:
            handle.write(deep_line(depth, 1, log.head_hash))
        result = log.verify()
        assert (result.ok, result.index) == (False, 1), depth


def test_lines_nested_deeper_than_the_log_writes_are_malformed(tmp_path):
    """Lines nesting more than MAX_ENTRY_NESTING (64) levels are ``malformed``, at any
    depth (a deep line is not decoded further)."""
    path = tmp_path / "deep.jsonl"
    for depth in [*range(63, 200, 17), *range(980, 1000), 5000]:
        path.write_text(deep_line(depth))
        result = verify_audit_file(path)
        assert (result.ok, result.index, result.problem) == (False, 0, "malformed"), depth
        # (json itself gives up at some depth near 1 000, which depends on the stack)
        assert result.message == ("malformed at entry 0: line 1 nests JSON objects and arrays "
                                  "more than 64 levels deep (MAX_ENTRY_NESTING: the log writes "
                                  "no such entry)") or (
            depth > 900 and result.message.endswith("is not a JSON object (RecursionError)"))
    path.write_text(deep_line(62))     # 64 levels: an entry (its hash made up: altered)
    assert verdict_of(path) == (False, 0, "altered")
    own = tmp_path / "own.jsonl"
    with AuditLog(own) as log:
        log.append("k", a=1)
    with own.open("a") as handle:
        handle.write(deep_line(500, 1, log.head_hash))
    assert verdict_of(own) == (False, 1, "malformed")
    assert (log.verify().index, log.verify().problem) == (1, "malformed")


def verdict_of(path: Path) -> tuple[bool, int | None, str | None]:
    result = verify_audit_file(path)
    return result.ok, result.index, result.problem


def test_the_nesting_bound_is_what_the_log_writes(tmp_path):
    """The bound the verifier applies is the one the writer keeps: fields may nest
    MAX_ENTRY_NESTING - 2 containers (the entry and its fields object are the first two
    levels), and such an entry verifies; one more is refused by append, with a
    ValueError (self-referencing fields, which recursed without end, too)."""
    limit = audit_chain.MAX_ENTRY_NESTING
    assert limit == 64
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("k", x=nested(limit - 2), y={"a": nested(limit - 3)})
        with pytest.raises(ValueError, match="more than 62 levels deep"):
            log.append("k", x=nested(limit - 1))
        with pytest.raises(ValueError, match="more than 62 levels deep"):
            log.append("k", x={"a": nested(limit - 2)})
        loop: list = []
        loop.append(loop)
        with pytest.raises(ValueError, match="levels deep"):
            log.append("k", x=loop)
        assert log.n_entries == 1
    assert verify_audit_file(path).ok
    assert log.verify().ok


# --- 2. line length: bounded memory, a verdict ------------------------------------------
def test_an_overlong_line_is_malformed_and_not_read_to_its_end(tmp_path, monkeypatch):
    """Review: no line-length cap (``verify /dev/zero``: MemoryError); a regular file of
    zeros (one endless line) was read whole. A line longer than MAX_ENTRY_LINE_BYTES is
    now ``malformed``, read no further (here with the bound lowered to 1 MiB)."""
    monkeypatch.setattr(audit_chain, "MAX_ENTRY_LINE_BYTES", 2**20)
    zeros = tmp_path / "zeros.jsonl"
    with zeros.open("wb") as handle:
        handle.truncate(3 * 2**20)           # sparse: /dev/zero copied to a file
    result = verify_audit_file(zeros)
    assert (result.ok, result.index, result.problem) == (False, 0, "malformed")
    assert "longer than 1,048,576 bytes" in result.message
    # a valid first entry, then an overlong second line
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("k", a=1)
    with path.open("a") as handle:
        handle.write('{"fields":{"x":"' + "a" * 2**20 + '"}}\n')
    result = verify_audit_file(path)
    assert (result.ok, result.index, result.problem, result.n_entries) == (
        False, 1, "malformed", 1)


def test_the_line_bound_is_documented_generous_and_kept_by_the_writer(tmp_path, monkeypatch):
    """256 MiB: far above a batch of a million contracts (~30 MB of ids); append refuses
    an entry whose line would be longer, so the log never writes what its verifier
    refuses (the bound lowered here to keep the test small)."""
    assert audit_chain.MAX_ENTRY_LINE_BYTES == 256 * 2**20
    monkeypatch.setattr(audit_chain, "_MAX_BODY_CHARS", 1000)
    with AuditLog(tmp_path / "audit.jsonl") as log:
        log.append("k", ids=["c" * 30] * 20)
        with pytest.raises(ValueError, match="an audit line holds at most 268,435,456"):
            log.append("k", ids=["c" * 30] * 40)
        assert log.n_entries == 1
    assert verify_audit_file(tmp_path / "audit.jsonl").ok


# --- 3. files that are no regular files: refused, never read or waited on ---------------
@pytest.fixture
def fifo(tmp_path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo.jsonl"
    os.mkfifo(path)
    return path


def test_verify_refuses_a_fifo_instead_of_waiting_for_a_writer(fifo):
    """Review: ``verify FIFO`` blocked for ever (open() waits for a writer). It is
    refused at once, exit 2 as for any unreadable file, saying what it is."""
    result = run(["-m", "gridswarm_env.audit", "verify", str(fifo)], timeout=60)
    assert result.returncode == EXIT_ERROR
    assert result.stderr == (
        f"python -m gridswarm_env.audit: error: cannot read audit file {str(fifo)!r}: it is "
        "a FIFO (named pipe), not a regular file (an audit file is a regular file: copy the "
        "bytes to one to verify them)\n")
    with pytest.raises(OSError, match="FIFO"):
        verify_audit_file(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_verify_refuses_a_device_instead_of_reading_it_for_ever(capsys):
    """Review: ``verify /dev/zero`` read until MemoryError. (In a child process with its
    address space limited, so that the code before the fix fails fast.)"""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
            "from gridswarm_env.audit import main; sys.exit(main(['verify', '/dev/zero']))")
    result = run(["-c", code], timeout=120)
    assert result.returncode == EXIT_ERROR, result.stderr[-300:]
    assert result.stderr.startswith("python -m gridswarm_env.audit: error: cannot read audit "
                                    "file '/dev/zero': it is a character device, not a regular "
                                    "file")
    assert main(["verify", "/dev/zero"]) == EXIT_ERROR
    assert "character device" in capsys.readouterr().err


def test_a_directory_is_still_an_unreadable_file(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == EXIT_ERROR
    assert "it is a directory, not a regular file" in capsys.readouterr().err
    with pytest.raises(IsADirectoryError):
        verify_audit_file(tmp_path)


def test_an_audit_log_refuses_an_existing_fifo_at_once(fifo):
    """Review: ``AuditLog(fifo)`` hung in open() (no reader), before its documented
    refusal of anything but a regular file; demo.py --audit FIFO hung with it. Both now
    refuse at once (in child processes, so that the code before the fix times out)."""
    code = ("import sys; from gridswarm_env.trust import AuditLog\n"
            "try:\n    AuditLog(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n")
    result = run(["-c", code, str(fifo)], timeout=60)
    assert result.stdout == (f"AuditLog path {str(fifo)!r} exists and is no regular file (a "
                             "FIFO or a device); expected a new file path or an existing "
                             "empty file\n")
    # also with a reader on the FIFO (open() then succeeds: the fstat check refuses it)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(ValueError, match="is no regular file"):
            AuditLog(fifo)
    finally:
        os.close(reader)
    with pytest.raises(ValueError, match="--audit .* is no regular file"):
        check_new_audit_file(fifo, "--audit")
    demo = run([str(REPO / "demo.py"), "--audit", str(fifo), "--steps", "1", "--no-live"],
               timeout=60)
    assert demo.returncode == 2
    assert demo.stderr == (f"demo.py: error: --audit {str(fifo)!r} exists and is no regular "
                           "file (a FIFO or a device); expected a new file path or an existing "
                           "empty file\n")


def test_an_environment_refuses_a_fifo_audit_path(fifo):
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # so the old code could not hang
    try:
        with pytest.raises(ValueError, match="is no regular file"):
            gridswarm_env.parallel_env(n_agents=2, trust="hmac", audit_path=str(fifo))
    finally:
        os.close(reader)


# --- 4. an environment's file checked with its contract registry: a hint ----------------
def test_verifying_an_env_file_with_its_contract_registry_names_the_audit_key(tmp_path):
    """Review: ``audit_log.verify(registry=env.registry)`` on an intact ed25519 file said
    only "its signature by 'operator' does not verify": the environment signs heads with
    an audit key of its own. The verdict (still altered: a registry cannot tell a wrong
    key from a re-signed file) now says the head names another key and how to check an
    environment's file; with the audit key it verifies."""
    path = tmp_path / "audit.jsonl"
    env = gridswarm_env.parallel_env(scenario="emergency", n_agents=3, trust="ed25519",
                                     audit_path=str(path))
    raw = env.unwrapped
    env.reset(seed=0)
    env.close()
    log = raw.audit_log
    key = bytes.fromhex(raw.operator_public_key_hex())
    assert log.verify(public_key=key).ok and verify_audit_file(path, public_key=key).ok
    named = json.loads(path.read_text().splitlines()[-1])["fields"]["public_key"]
    assert named == key.hex() != raw.registry.public_key_bytes("operator").hex()
    result = log.verify(registry=raw.registry)
    assert (result.ok, result.problem) == (False, "altered")
    assert result.message.endswith(
        f"signed head is invalid: its signature by 'operator' does not verify; the head "
        f"names another key ({named[:16]}...): either the registry given is not the one "
        "that signed this file (an environment signs its file's heads with an audit key of "
        "its own, not env.registry's: check it with public_key=bytes.fromhex(env.unwrapped."
        "operator_public_key_hex())), or the file was altered (re-signed, or the head's key "
        "edited)")


def test_a_registry_whose_key_the_head_names_gets_no_hint(tmp_path):
    """A head that names the registry's own key but does not verify under it (signed
    with another key, the named key then edited and the hash recomputed: a forger
    without keys) is altered, with no wrong-key hint: the registry is the right one."""
    signer, forger = IdentityRegistry(["a"]), IdentityRegistry(["a"])
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("k", a=1)
        log.sign_head(forger, final=True)
    *lines, last = path.read_text().splitlines()
    head = json.loads(last)
    head["fields"]["public_key"] = signer.public_key_bytes("operator").hex()
    body = json.dumps({k: head[k] for k in ("fields", "index", "kind", "prev_hash")},
                      sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()
    path.write_text("\n".join([*lines, body[:-1] + ',"hash":"' + digest + '"}']) + "\n")
    assert verify_audit_file(path).ok   # self-consistent: no key, no check
    result = _verify_records(_file_records(path), registry=signer)
    assert (result.ok, result.index, result.problem) == (False, 1, "altered")
    assert result.message.endswith("its signature by 'operator' does not verify")


# --- 2b. values per line: a verdict before decoding, bounded memory ---------------------
def empty_objects_line(n: int, index: int = 0, prev: str = GENESIS) -> str:
    """An entry line whose field ``x`` lists ``n`` empty objects (``[{},{},...]``), with a
    made-up hash: ~3 bytes of the line per decoded dict."""
    return ('{"fields":{"x":[' + "{}," * n + '1]},"index":' + str(index)
            + ',"kind":"k","prev_hash":"' + prev + '","hash":"' + "0" * 64 + '"}\n')


def test_a_line_of_more_json_values_than_the_bound_is_malformed_before_decoding(
        tmp_path, monkeypatch):
    """Security review (session 26): a line of empty objects or arrays costs ~50x its bytes
    when decoded (``[{},{},...]``: a 57 MiB line, far under MAX_ENTRY_LINE_BYTES, took 2.9
    GB and 54 s before its verdict; with a 1.5 GB memory limit the CLI died with a
    MemoryError traceback and exit 1). A line that may hold more than MAX_ENTRY_VALUES
    values is now ``malformed`` and not decoded (the bound lowered here to keep the test
    small; a line under it still gets its usual verdict)."""
    assert audit_chain.MAX_ENTRY_VALUES == 2**22
    monkeypatch.setattr(audit_chain, "MAX_ENTRY_VALUES", 1000)
    decoded = []
    real_loads = audit_chain.json.loads
    monkeypatch.setattr(audit_chain.json, "loads",
                        lambda raw, *a, **k: decoded.append(len(raw)) or real_loads(raw, *a, **k))
    path = tmp_path / "dense.jsonl"
    path.write_text(empty_objects_line(600))          # 1 201 commas and brackets: refused
    result = verify_audit_file(path)
    assert (result.ok, result.index, result.problem) == (False, 0, "malformed")
    assert "holds more than 1,000 JSON values" in result.message
    assert decoded == []                               # never handed to json
    path.write_text(empty_objects_line(400))           # 801: decoded, its hash is wrong
    result = verify_audit_file(path)
    assert (result.ok, result.index, result.problem) == (False, 0, "altered")
    # after a valid first entry, at its position
    with AuditLog(tmp_path / "audit.jsonl") as log:
        log.append("k", a=1)
    with (tmp_path / "audit.jsonl").open("a") as handle:
        handle.write(empty_objects_line(600, 1, log.head_hash))
    result = verify_audit_file(tmp_path / "audit.jsonl")
    assert (result.ok, result.index, result.problem, result.n_entries) == (
        False, 1, "malformed", 1)


def test_the_writer_refuses_an_entry_with_more_json_values_than_the_verifier_reads(
        tmp_path, monkeypatch):
    """append refuses an entry whose line would exceed MAX_ENTRY_VALUES (the line's own
    comma before ``hash`` counted), so the log never writes what its verifier refuses;
    an entry at the bound is written and verifies."""
    monkeypatch.setattr(audit_chain, "MAX_ENTRY_VALUES", 1000)
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        fits = None
        for n in range(300, 600):
            try:
                log.append("k", x=[{}] * n)
            except ValueError as exc:
                assert "more than 1,000 JSON values" in str(exc)
                fits = n - 1
                break
        assert fits is not None and log.n_entries == fits - 299
        with pytest.raises(ValueError, match="MAX_ENTRY_VALUES"):
            log.append("k", ids=["c"] * 1000)
    lines = path.read_bytes().splitlines(keepends=True)
    assert audit_chain._json_values_bound(lines[-1]) <= 1000   # the largest written
    assert verify_audit_file(path).ok


def test_the_cli_out_of_memory_is_an_error_not_a_broken_verdict(tmp_path, monkeypatch, capsys):
    """Review (session 26): a MemoryError while verifying (a hostile line, a small memory
    limit) ended the CLI with a traceback and exit 1, the status of a BROKEN chain; it
    says nothing about the file: exit 2 (error), one line, no traceback."""
    import gridswarm_env.audit as cli

    def out_of_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(cli, "verify_audit_file", out_of_memory)
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    assert main(["verify", str(path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "out of memory verifying audit file" in err and "Traceback" not in err


def test_forged_contract_ids_full_of_commas_cannot_make_the_log_refuse_a_step(
        tmp_path, monkeypatch):
    """The verifier counts a line's commas and brackets, inside strings too, against
    MAX_ENTRY_VALUES; a rejected contract's id (an attacker's, up to 200 characters
    listed) counted each of its commas, so an adversary on the bus presenting ~22 000
    forged contracts with ids of 200 commas in one step (a 5.5 MB line, 4.4 M counted)
    made ``append`` refuse the batch's ``contract_rejected`` entry: the step failed
    half-way, the episode stopped and its audit ended there. The log lists such ids with
    those characters percent-escaped (``audit_contract_id``), ids the ledger mints as
    they are. Here at a bound of 20 000 and 200 forged contracts."""
    import dataclasses

    from gridswarm_env.trust import SignedContract, audit_contract_id
    from policies.heuristic import HeuristicPolicy

    monkeypatch.setattr(audit_chain, "MAX_ENTRY_VALUES", 20_000)
    forged_ids = [(f"{i}%[{{" + "," * 200)[:200] for i in range(200)]

    def adversary(env, signed, owners):   # forged copies of the first energy contract
        if adversary.done or not signed or signed[0].contract.product != "energy":
            return signed, owners
        adversary.done = True
        first = signed[0]
        forged = [SignedContract(dataclasses.replace(first.contract, contract_id=cid),
                                 first.agent_signature, first.operator_signature)
                  for cid in forged_ids]
        return list(signed) + forged, list(owners) + [owners[0]] * len(forged)

    adversary.done = False
    path = tmp_path / "audit.jsonl"
    env = gridswarm_env.parallel_env("price_spike", n_agents=20, trust="hmac",
                                     audit_path=str(path), adversary=adversary).unwrapped
    env.reset(seed=0)
    policy = HeuristicPolicy()
    policy.reset(env, seed=0)
    for _ in range(60):
        act = policy.act(env.observations_array(), env.action_masks())
        env.step_arrays(act[:, 0], act[:, 1])   # raised ValueError (MAX_ENTRY_VALUES)
    assert adversary.done and env.episode_metrics()["contracts_rejected"] == 200
    env.close()
    assert verify_audit_file(path).ok
    rejected = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "contract_rejected":
            rejected += [r["contract_id"] for r in entry["fields"]["rejections"]]
    assert sorted(rejected) == sorted(audit_contract_id(cid) for cid in forged_ids)
    assert "0%25%5B%7B%2C%2C" + "%2C" * 194 in rejected and "," not in "".join(rejected)
    assert audit_contract_id("c-3-battery_007-12") == "c-3-battery_007-12"   # the ledger's
