"""The IATP adversary: tampered variants of genuine contracts, for tests and demos.

:class:`Adversary` forges a signature, alters power or price after signing, re-signs
with a wrong key, names an unknown identity or another agent, replays, re-times
(expired, not yet valid) or truncates a nonce (malformed), without touching any
private key; :meth:`Adversary.attacks` lists each :class:`Attack` with the rejection
:meth:`~gridswarm_env.trust.contracts.ContractLedger.verify` must report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gridswarm_env.trust.contracts import RejectReason, SignedContract, _as_generator
from gridswarm_env.trust.identities import _SIGNATURE_LENGTH, IdentityRegistry, _check_mode

__all__ = ["Adversary", "Attack"]


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
