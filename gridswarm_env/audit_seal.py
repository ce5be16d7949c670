"""The environment's audit chain for its lifetime, and the operator's signed heads that
seal a streamed file.

:class:`AuditSealer` opens the chain (:class:`~gridswarm_env.trust.AuditLog`: streamed to
``EnvConfig.audit_path``, or in memory keeping at most :data:`AUDIT_ENTRIES_IN_MEMORY`
entries), holds the operator's audit-head key for a streamed Ed25519 file, signs a head
at the end of every episode and the closing head at ``close()``
(:meth:`AuditSealer.seal`); after that the environment refuses to reset or step
(:attr:`AuditSealer.closed` says why). The chain's format and verifier are
:mod:`gridswarm_env.trust.audit_chain`'s.
"""

from __future__ import annotations

from gridswarm_env.trust import AuditLog, IdentityRegistry

#: the chain's recent window kept in memory (a design choice: bounded memory for long runs,
#: ~200 episodes of price_spike at 100 agents, heuristic, which writes 481 entries each)
AUDIT_ENTRIES_IN_MEMORY = 100_000


class AuditSealer:
    """One audit chain for an environment's lifetime (see the module docstring).

    :param audit_path: the file streamed to (None: in memory).
    :param keep_entries: ``EnvConfig.audit_keep_entries``: keep the entries in memory
        (False: only the head hash and count).
    :param trust: ``"ed25519"`` (a streamed file gets signed heads) or ``"hmac"``.
    :param operator_id: the operator's identity in the contract registry (the heads
        are signed under it).
    :raises ValueError: when ``audit_path`` cannot be written.
    :ivar log: the :class:`~gridswarm_env.trust.AuditLog`.
    :ivar closed: why the environment may no longer reset or step (the signed file was
        closed), or None.
    """

    def __init__(self, audit_path: str | None, keep_entries: bool, trust: str,
                 operator_id: str) -> None:
        self.sealed_entries = 0   # audit entries covered by the last signed head
        # why reset() and step() are refused: close() ended the signed audit file
        self.closed: str | None = None
        # the operator's audit-head key for a streamed ed25519 file: random (os.urandom),
        # not derived from the seed, one per environment (see public_key_hex)
        self.keys = (IdentityRegistry(["audit"], operator_id=operator_id, seed=None)
                     if audit_path is not None and trust == "ed25519" else None)
        try:
            self.log = AuditLog(audit_path, keep_entries=keep_entries,
                                max_entries_in_memory=AUDIT_ENTRIES_IN_MEMORY)
        except OSError as exc:
            raise ValueError(f"EnvConfig.audit_path = {audit_path!r} cannot be written: "
                             f"{exc.strerror or type(exc).__name__}") from None

    def seal(self, final: bool = False) -> None:
        """End a streamed audit chain with the operator's signed head; flush the file.

        With ``audit_path`` set and Ed25519 identities, the chain gets a ``head_signed``
        entry at the end of every episode (when entries were written since the last
        one), and ``close()`` (``final``) ends the file with the *closing* head
        (``final: true`` inside the signed bytes; a file closed before its first reset
        stays empty), so ``python -m gridswarm_env.audit verify FILE --public-key HEX``
        (the operator's audit key, :meth:`public_key_hex`) can also detect a cut
        tail or a rewritten suffix from the file alone, including a cut right after an
        earlier episode's head (not closed). HMAC keys are secret, so an hmac-mode file
        has no head a third party could check.
        """
        log, keys = self.log, self.keys
        if keys is not None and self.closed is None:
            if final:
                if log.n_entries:
                    log.sign_head(keys, keys.operator_id, final=True)   # closes the file
                log.close()
                self.sealed_entries = log.n_entries
                ended = ("ends with the operator's closing head, which nothing may follow"
                         if log.n_entries else "was closed before the first reset (empty)")
                self.closed = (f"the audit file {str(log.path)!r} {ended}; build a new "
                               "environment (with a new audit_path) for more episodes")
            elif log.n_entries > self.sealed_entries:
                log.sign_head(keys, keys.operator_id)
                self.sealed_entries = log.n_entries
        log.flush()

    def public_key_hex(self) -> str | None:
        """The raw Ed25519 public key (64 hex digits) of the heads, or None (no streamed
        Ed25519 file: see ``GridSwarmEnv.operator_public_key_hex``)."""
        if self.keys is None:
            return None
        return self.keys.public_key_bytes(self.keys.operator_id).hex()
