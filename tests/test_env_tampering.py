"""Contract tampering inside the environment (issue 4).

The adversary hook ``adversary(env, signed_contracts, owners) -> (signed, owners)``
sees every batch of contracts between signing and publication on the bus; each
tampered contract must be rejected by the dispatcher with the right reason,
dispatch 0 MW, and be written to the audit chain. Private keys are never exposed,
and random contract keys defeat a forger who knows the seed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gridswarm_env
from gridswarm_env.env import GridSwarmEnv
from gridswarm_env.fleet import KIND_BATTERY
from gridswarm_env.trust import Adversary, derive_key_bytes

N_POWER = 21
ATTACKS = {
    # attack name: (expected rejection reason, dispatched MW for the victim)
    "forged_agent_signature": ("bad_agent_signature", "zero"),
    "forged_operator_signature": ("bad_operator_signature", "zero"),
    "altered_power": ("bad_agent_signature", "zero"),
    "wrong_key": ("bad_agent_signature", "zero"),
    "names_other_agent": ("wrong_agent", "zero"),
    "handed_to_other_agent": ("wrong_agent", "zero"),
    "unknown_identity": ("unknown_identity", "zero"),
    "replayed_same_round": ("replayed", "once"),
    "replayed_later_expired": ("expired", "genuine"),
}


@dataclass
class Tamper:
    """Adversary hook: tampers with one battery's energy contract of round >= ``first_round``."""

    attack: str
    mode: str
    first_round: int = 22
    adversary: Adversary = field(init=False)
    victim: int | None = None
    contract_id: str = ""
    exec_step: int = -1
    genuine_mw: float = 0.0          # what the victim is genuinely owed in that window
    other_genuine_mw: float = 0.0    # what the next agent is genuinely owed
    saved: tuple | None = None       # a contract of an earlier round, for the late replay

    def __post_init__(self) -> None:
        self.adversary = Adversary(mode=self.mode, rng=0)

    def __call__(self, env: GridSwarmEnv, signed: list, owners: list) -> tuple[list, list]:
        if not signed or signed[0].contract.product != "energy":
            return signed, owners
        batteries = [i for i, o in enumerate(owners) if env.fleet.kind[o] == KIND_BATTERY]
        if self.saved is None and batteries:
            self.saved = (signed[batteries[0]], owners[batteries[0]])
            return signed, owners
        if self.victim is not None or env.round_index < self.first_round or not batteries:
            return signed, owners
        signed, owners = list(signed), list(owners)
        i = batteries[0]
        adv, s, owner = self.adversary, signed[i], owners[i]
        other = env.possible_agents[owner + 1]
        self.victim, self.contract_id = owner, s.contract.contract_id
        self.exec_step = env.step_index + 1        # delivery window = next step
        self.genuine_mw = s.contract.power_mw
        if self.attack == "forged_agent_signature":
            signed[i] = adv.forge_agent_signature(s)
        elif self.attack == "forged_operator_signature":
            signed[i] = adv.forge_operator_signature(s)
        elif self.attack == "altered_power":
            signed[i] = adv.alter_power(s)
        elif self.attack == "wrong_key":
            signed[i] = adv.sign_with_wrong_key(s)
        elif self.attack == "names_other_agent":
            signed[i] = adv.rename_agent(s, other)
        elif self.attack == "handed_to_other_agent":
            self.other_genuine_mw = sum(c.contract.power_mw for c, o in zip(signed, owners,
                                                                             strict=True)
                                        if o == owner + 1)
            owners[i] = owner + 1
        elif self.attack == "unknown_identity":
            signed[i] = adv.impersonate(s)
        elif self.attack == "replayed_same_round":
            signed.append(s)
            owners.append(owner)
        elif self.attack == "replayed_later_expired":
            old, old_owner = self.saved
            self.victim, self.contract_id = old_owner, old.contract.contract_id
            self.genuine_mw = sum(c.contract.power_mw for c, o in zip(signed, owners,
                                                                       strict=True)
                                  if o == old_owner)
            signed.append(old)
            owners.append(old_owner)
        return signed, owners


def _tampered_run(make_env, attack: str, trust: str, **kwargs) -> tuple[GridSwarmEnv, Tamper,
                                                                         dict[str, Any]]:
    tamper = Tamper(attack, trust)
    raw = make_env("price_spike", 60, trust, adversary=tamper, **kwargs)
    raw.reset(seed=0)
    n = raw.n_agents
    seen: dict[str, Any] = {}
    while raw.agents and (tamper.victim is None or raw.step_index <= tamper.exec_step + 1):
        mask = raw.action_masks()[:, :N_POWER]
        highest = N_POWER - 1 - np.argmax(mask[:, ::-1], axis=1)      # largest offer
        raw.step_arrays(highest, np.zeros(n, dtype=np.int64))         # at 0 $/MWh
        if raw.step_index == tamper.exec_step:   # delivered, not yet dispatched
            seen["scheduled_mw"] = raw.scheduled_p_mw.copy()
        if raw.step_index - 1 == tamper.exec_step:
            seen.update(p_mw=raw.last_p_mw.copy(), events=raw.last_info["events"])
    assert tamper.victim is not None and "p_mw" in seen, "the attack never happened"
    return raw, tamper, seen


@pytest.mark.parametrize("trust", ["hmac", "ed25519"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_tampered_contract_rejected_and_not_dispatched(make_env, attack: str,
                                                       trust: str) -> None:
    reason, dispatched = ATTACKS[attack]
    raw, tamper, seen = _tampered_run(make_env, attack, trust)
    m = raw.episode_metrics()
    assert m["contracts_rejected"] == 1
    assert m["contracts_rejected_by_reason"] == {reason: 1}
    assert m["contracts_verified"] > 0        # the untouched contracts still go through
    assert m["executed_violations"] == 0
    p_victim = seen["p_mw"][tamper.victim]
    expected = {"zero": 0.0, "once": tamper.genuine_mw, "genuine": tamper.genuine_mw}[dispatched]
    assert p_victim == pytest.approx(expected, abs=1e-12)
    if dispatched == "zero":
        assert tamper.genuine_mw > 0.0                  # a real award was withheld
    # the schedule the victim observed (and its kernel planned with) before dispatch
    # already left the rejected contract out: what it is then dispatched
    assert seen["scheduled_mw"][tamper.victim] == pytest.approx(expected, abs=1e-12)
    if attack == "handed_to_other_agent":    # the receiver gets only its own awards
        assert seen["scheduled_mw"][tamper.victim + 1] == pytest.approx(
            tamper.other_genuine_mw, abs=1e-12)
        assert seen["p_mw"][tamper.victim + 1] == pytest.approx(tamper.other_genuine_mw,
                                                                abs=1e-12)
    assert any("rejected" in e and reason in e for e in seen["events"])
    # the audit chain names the contract and the reason, and verifies
    rejections = [r for e in raw.audit_log.entries if e.kind == "contract_rejected"
                  for r in e.fields["rejections"]]
    assert {"contract_id": tamper.contract_id, "reason": reason} in rejections
    assert raw.audit_log.verify().ok


def _key_material(raw: GridSwarmEnv, seed: int) -> list[bytes]:
    """Every identity's private key bytes, re-derived and proven to be the env's keys."""
    mode, message = raw.config.trust, b"probe"
    keys = []
    for identity in raw.registry.identities:
        key = derive_key_bytes(seed, identity, mode)
        if mode == "hmac":
            assert hmac.new(key, message, hashlib.sha256).digest() == raw.registry.sign(
                identity, message)
        else:
            public = Ed25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
            assert public == raw.registry.public_key_bytes(identity)
        keys.append(key)
    return keys


def _leaks(text: str | bytes, keys: list[bytes]) -> list[int]:
    data = text.encode() if isinstance(text, str) else text
    low = data.lower()
    return [i for i, k in enumerate(keys)
            if k in data or k.hex().encode() in low or base64.b64encode(k) in data]


@pytest.mark.parametrize("keys_from", ["seeded", "random"])
@pytest.mark.parametrize("trust", ["hmac", "ed25519"])
def test_private_keys_never_exposed(make_env, tmp_path: Path, trust: str, keys_from: str,
                                    monkeypatch) -> None:
    """No private key (contract keys, seeded or drawn; with random keys every 32 bytes
    the process drew from os.urandom, the audit key's seed included) appears in what the
    environment shows or writes."""
    from gridswarm_env.config import EnvConfig

    drawn: list[bytes] = []
    urandom = __import__("os").urandom

    def recording(k: int) -> bytes:
        out = urandom(k)
        if k == 32:
            drawn.append(out)
        return out

    monkeypatch.setattr("os.urandom", recording)
    audit = tmp_path / "audit.jsonl"
    raw, _, _ = _tampered_run(make_env, "forged_agent_signature", trust, audit_path=audit,
                              config=EnvConfig(contract_keys=keys_from))
    if keys_from == "seeded":
        keys = _key_material(raw, seed=0)
    else:
        keys = drawn
        assert len(keys) >= len(raw.registry.identities)
    obs, infos = raw.observations_array(), raw._infos()
    raw.close()
    exposed = {
        "observations": obs.tobytes(),
        "infos": repr(infos),
        "last_info": repr(raw.last_info),
        "metrics": json.dumps(raw.episode_metrics(), default=str),
        "repr(env)": repr(raw) + str(raw),
        "repr(parts)": repr(raw.registry) + repr(raw.ledger) + repr(raw.audit_log),
        "audit entries": "\n".join(e.to_json_line() for e in raw.audit_log.entries),
        "audit file": audit.read_bytes(),
        "state": raw.state().tobytes(),
    }
    assert audit.stat().st_size > 0
    leaks = {where: _leaks(text, keys) for where, text in exposed.items()}
    assert not any(leaks.values()), leaks
    # keys cannot be smuggled out by pickling either: the registry's own guard refuses
    # (without it a lock in it or the keys' own __getstate__ raise a TypeError too, so the
    # message is matched)
    with pytest.raises(TypeError, match="IdentityRegistry holds private keys"):
        pickle.dumps(raw.registry)


def test_a_duplicated_energy_contract_is_scheduled_once_and_rejected_at_dispatch():
    """Protocol review: a duplicate delivery doubled the agent's observed schedule (and
    the kernel's committed power) for a step; execution was already right."""
    import gridswarm_env
    from tests.episodes import play

    def duplicate(env, signed, owners):
        if signed and signed[0].contract.product == "energy":
            return signed + signed, owners + owners
        return signed, owners

    runs = {}
    for name, adversary in (("honest", None), ("dup", duplicate)):
        env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=30, trust="hmac",
                                         adversary=adversary)
        raw = env.unwrapped
        scheduled = [raw.scheduled_p_mw.copy() for _ in play(raw)]
        runs[name] = (np.array(scheduled), raw.episode_metrics())
    (s_honest, m_honest), (s_dup, m_dup) = runs["honest"], runs["dup"]
    np.testing.assert_array_equal(s_dup, s_honest)
    assert m_dup["system_cost"] == m_honest["system_cost"]
    assert m_dup["contracts_rejected_by_reason"] == {"replayed": m_honest["contracts_signed"]}


def test_an_agent_holding_two_contracts_is_paid_each_at_its_own_price():
    """Audit finding: with two valid contracts for one agent in a window (only an injected
    or forged one makes that), the price dispatched was the last contract's for both;
    now their power-weighted price, so full delivery earns Σ C_i·π_i."""
    raw = GridSwarmEnv(scenario="price_spike", n_agents=10, trust="hmac", seed=0)
    raw.reset(seed=0)
    t0, end = float(raw.t_s), float(raw.t_s + raw.config.dt_s)
    first = raw.ledger.issue(1, np.array([3, 5]), np.array([0.004, 0.002]),
                             np.array([100.0, 80.0]), t0, end)
    second = raw.ledger.issue(1, np.array([3]), np.array([-0.001]), 300.0, t0, end)
    raw.contract_flow.pending = [(first[0], 3), (first[1], 5), (second[0], 3)]
    mw, price = raw.contract_flow.verify_pending(t0)
    assert mw[3] == pytest.approx(0.003) and mw[5] == 0.002
    assert mw[3] * price[3] == pytest.approx(0.004 * 100.0 - 0.001 * 300.0)
    assert price[5] == 80.0                       # a single contract keeps its price exactly
    assert np.count_nonzero(mw) == 2 and np.count_nonzero(price) == 2


def _forge_with_the_seed(seed: int, trust: str):
    """An adversary that knows the seed: it signs a contract of its own for agent 4
    with keys re-derived from the seed (``derive_key_bytes``)."""
    from dataclasses import replace as replace_field

    from gridswarm_env.trust import SignedContract

    def sign(identity: str, message: bytes) -> bytes:
        key = derive_key_bytes(seed, identity, trust)
        if trust == "hmac":
            return hmac.new(key, message, hashlib.sha256).digest()
        return Ed25519PrivateKey.from_private_bytes(key).sign(message)

    def forge(env, signed, owners):
        if env.step_index == 30 and signed and signed[0].contract.product == "energy":
            genuine = signed[0].contract
            fake = replace_field(genuine, contract_id=f"{genuine.contract_id}-forged",
                                 agent_id=env.possible_agents[4], power_mw=0.0,
                                 price_per_mwh=genuine.price_per_mwh,
                                 nonce=genuine.nonce[:4] + bytes(12))
            message = fake.canonical_bytes()
            forged = SignedContract(fake, sign(fake.agent_id, message),
                                    sign(env.registry.operator_id, message))
            return signed + [forged], list(owners) + [4]
        return signed, owners
    return forge


@pytest.mark.parametrize("trust", ["hmac", "ed25519"])
def test_random_contract_keys_defeat_a_forger_who_knows_the_seed(trust: str) -> None:
    """Audit finding: seeded keys are as secret as the seed. With
    ``EnvConfig(contract_keys="random")`` the forgery is rejected; without an adversary
    the episode is the same as with seeded keys, bit for bit."""
    from gridswarm_env.config import EnvConfig
    from tests.episodes import play

    def run(keys: str, adversary):
        raw = GridSwarmEnv(scenario="price_spike", n_agents=20, trust=trust, seed=3,
                           adversary=adversary, config=EnvConfig(contract_keys=keys))
        observations = [raw.observations_array().copy() for _ in play(raw, seed=3)]
        return raw, np.array(observations), raw.episode_metrics()

    forge = _forge_with_the_seed(3, trust)
    _, _, m_seeded = run("seeded", forge)
    assert m_seeded["contracts_rejected"] == 0          # the seed is the key
    assert m_seeded["contracts_verified"] == m_seeded["contracts_signed"] + 1
    _, _, m_secret = run("random", forge)
    assert m_secret["contracts_rejected_by_reason"] == {"bad_agent_signature": 1}
    _, obs_seeded, honest_seeded = run("seeded", None)
    _, obs_random, honest_random = run("random", None)
    np.testing.assert_array_equal(obs_random, obs_seeded)
    assert honest_random == honest_seeded


def test_contract_keys_setting_is_checked() -> None:
    from gridswarm_env.config import EnvConfig

    with pytest.raises(ValueError, match="contract_keys = 'secret': allowed values are "
                                         "seeded, random"):
        EnvConfig(contract_keys="secret")


class _Hostile:
    """Not a signed contract: reading an attribute runs code."""

    ran = False

    @property
    def contract(self):
        _Hostile.ran = True
        raise AssertionError("the environment read an attribute of a foreign object")


@pytest.mark.parametrize("put", ["object", "hostile", "subclass", "owners", 999, -1, 2.5, "x",
                                 None, True, "nothing"])
def test_an_adversary_puts_only_signed_contracts_on_the_bus(put: object) -> None:
    """Crypto review: the environment read attributes of whatever the adversary put on
    the bus before the ledger's checks (a plain object: AttributeError deep in step();
    a property: its code ran). The boundary now refuses anything but the contract
    format, in one line, before the environment reads it."""
    from dataclasses import replace

    from gridswarm_env.trust import SignedContract

    class Sub(SignedContract):
        pass

    def adversary(env, signed, owners):
        if not signed:
            return signed, owners
        if put == "nothing":   # review: "cannot unpack non-iterable NoneType object"
            return None
        if put == "object":
            signed[0] = object()
        elif put == "hostile":
            signed[0] = _Hostile()
        elif put == "subclass":
            s = signed[0]
            signed[0] = Sub(replace(s.contract), s.agent_signature, s.operator_signature)
        elif put == "owners":
            owners = owners[:-1]
        else:   # a recipient that is no agent index (diff review: 999 crashed deep in
            # step(), -1 reached the last agent, the others raised elsewhere)
            owners = [put, *owners[1:]]
        return signed, owners

    env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=20, trust="hmac",
                                     adversary=adversary)
    raw = env.unwrapped
    raw.reset(seed=0)
    _Hostile.ran = False
    if put == "owners":
        says = "one recipient per contract"
    elif isinstance(put, str):
        says = "at position 0: an attacker on the bus sends signed contracts only"
    else:
        says = (f"adversary returned recipient {put!r} at position 0: expected an agent "
                "index, an integer from 0 to 19")
    if put == "x":
        says = "adversary returned recipient 'x' at position 0"
    if put == "nothing":
        says = r"adversary returned NoneType: expected \(signed contracts, recipients\)"
    with pytest.raises(TypeError, match=says):
        while raw.agents:
            mask = raw.action_masks()[:, :N_POWER]
            highest = N_POWER - 1 - np.argmax(mask[:, ::-1], axis=1)      # largest offer
            raw.step_arrays(highest, np.zeros(raw.n_agents, dtype=np.int64))
    assert not _Hostile.ran


def test_an_adversary_set_after_reset_acts_from_the_next_contracts() -> None:
    """Code review of the env.py split: ``env.adversary`` was copied into the episode's
    contract flow at reset, so an adversary set (or removed) mid-episode was ignored until
    the next reset (before the split, and now again, the environment reads
    ``env.adversary`` at each issue)."""
    from policies import make_policy

    seen: list[int] = []

    def count(env, signed, owners):
        seen.append(len(signed))
        return signed, owners

    raw = GridSwarmEnv(scenario="price_spike", n_agents=30, trust="hmac", seed=0)
    raw.reset(seed=0)
    pol = make_policy("heuristic")
    pol.reset(raw, seed=0)
    raw.adversary = count   # set after reset: sees every contract issued from now on
    while raw.agents:
        act = pol.act(raw.observations_array(), raw.action_masks())
        raw.step_arrays(act[:, 0], act[:, 1])
    signed = raw.episode_metrics()["contracts_signed"]
    assert signed > 0 and sum(seen) == signed
