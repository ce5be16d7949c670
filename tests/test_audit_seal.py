"""Unit checks of :class:`gridswarm_env.audit_seal.AuditSealer`'s heads (found by hand
mutation testing, session 27)."""

from __future__ import annotations

import json

from gridswarm_env.audit_seal import AuditSealer


def _kinds(path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()]


def test_an_episode_head_is_signed_only_when_entries_were_written_since_the_last(tmp_path):
    """``seal()`` signs a head at the end of an episode *when entries were written since
    the last one*: sealing again with nothing new adds no second head."""
    path = tmp_path / "audit.jsonl"
    sealer = AuditSealer(str(path), True, "ed25519", "operator")
    sealer.log.append("reset", now_s=0.0)
    sealer.seal()
    sealer.seal()   # nothing written since: no head
    assert _kinds(path) == ["reset", "head_signed"]
    sealer.log.append("reset", now_s=0.0)
    sealer.seal()
    sealer.seal(final=True)   # the closing head follows even right after a head
    assert _kinds(path) == ["reset", "head_signed", "reset", "head_signed", "head_signed"]
    assert sealer.closed is not None and "closing head" in sealer.closed


def test_an_hmac_file_gets_no_head(tmp_path):
    """HMAC keys are secret: an hmac-mode file has no head a third party could check."""
    path = tmp_path / "audit.jsonl"
    sealer = AuditSealer(str(path), True, "hmac", "operator")
    sealer.log.append("reset", now_s=0.0)
    sealer.seal()
    sealer.seal(final=True)
    assert _kinds(path) == ["reset"] and sealer.public_key_hex() is None
