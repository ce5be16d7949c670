"""Tests for the IATP trust layer: identities, contracts, ledger, adversary, key secrecy."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import pickle
import struct
from dataclasses import fields, replace
from enum import IntEnum
from fractions import Fraction

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from gridswarm_env.trust import (
    ED25519_BACKENDS,
    PRODUCTS,
    TRUST_MODES,
    Adversary,
    AuditLog,
    Contract,
    ContractLedger,
    IdentityRegistry,
    RejectReason,
    SignedContract,
    UnknownIdentityError,
    contracts_digest,
    default_ed25519_backend,
    derive_key_bytes,
    signature_length,
    verify_audit_file,
)

AGENTS = [f"der_{i}" for i in range(8)]
SEED = 1234


def _sign_in_child(n: int) -> list[bytes]:
    registry = IdentityRegistry(AGENTS, seed=SEED, crypto_threads=2)
    return registry._sign_many([registry._signers[0]] * n, [b"x%d" % i for i in range(n)])


def make_ledger(
    mode: str = "ed25519", *, seed: int = SEED, rng: int = 7, audit: AuditLog | None = None,
    crypto_threads: int | None = None,
):
    registry = IdentityRegistry(AGENTS, mode=mode, seed=seed, crypto_threads=crypto_threads)
    return registry, ContractLedger(registry, rng=rng, audit=audit)


def issue_round(
    ledger: ContractLedger, round_index: int = 0, start_s: float = 10.0, end_s: float = 11.0
):
    n = len(AGENTS)
    return ledger.issue(
        round_index,
        np.arange(n),
        np.linspace(-1.0, 1.0, n),
        np.full(n, 42.5),
        start_s,
        end_s,
    )


def sample_contract(**overrides) -> Contract:
    values = dict(
        contract_id="c-0-der_0-0",
        round_index=3,
        agent_id="der_0",
        operator_id="operator",
        power_mw=0.25,
        price_per_mwh=55.0,
        window_start_s=10.0,
        window_end_s=11.0,
        nonce=bytes(range(16)),
        product="energy",
    )
    values.update(overrides)
    return Contract(**values)


# --------------------------------------------------------------------------- registry


def count_signature_checks(registry) -> list[int]:
    """Wrap ``registry._verify_many``: the returned list gets the batch size of every
    signature-check call."""
    checked: list[int] = []
    verify_many = registry._verify_many

    def counting(*args):
        checked.append(len(args[-1]))
        return verify_many(*args)

    registry._verify_many = counting
    return checked


class TestIdentityRegistry:
    def test_unknown_mode_lists_allowed_modes(self):
        with pytest.raises(ValueError, match="ed25519, hmac"):
            IdentityRegistry(AGENTS, mode="rsa")

    @pytest.mark.parametrize(
        ("agents", "operator", "match"),
        [
            (["a", "a"], "operator", "more than once"),
            (["a", ""], "operator", "non-empty"),
            (["a", 3], "operator", "non-empty"),
            (["a", "operator"], "operator", "also an agent id"),
            (["a"], "", "operator_id"),
            # a lone surrogate cannot be encoded: UnicodeEncodeError naming no setting
            (["a", "\ud800"], "operator", "agent_ids contains '\\\\ud800'"),
            (["a"], "\udfff", "operator_id='\\\\udfff'"),
        ],
    )
    def test_bad_identities_rejected(self, agents, operator, match):
        with pytest.raises(ValueError, match=match):
            IdentityRegistry(agents, operator_id=operator)

    @pytest.mark.parametrize("seed", [-1, 1.5, True, "7"])
    def test_bad_seed_rejected(self, seed):
        with pytest.raises(ValueError, match="seed"):
            IdentityRegistry(AGENTS, seed=seed)

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_sign_verify_round_trip(self, mode):
        registry = IdentityRegistry(AGENTS, mode=mode, seed=SEED)
        message = b"balancing award"
        for identity in registry.identities:
            signature = registry.sign(identity, message)
            assert len(signature) == signature_length(mode) == registry.signature_length
            assert registry.verify_signature(identity, message, signature)
            assert not registry.verify_signature(identity, message + b"!", signature)
            flipped = bytes([signature[0] ^ 1]) + signature[1:]
            assert not registry.verify_signature(identity, message, flipped)
        other = registry.sign("der_1", message)
        assert not registry.verify_signature("der_0", message, other)
        assert not registry.verify_signature("mallory", message, other)
        assert not registry.verify_signature("der_0", message, other[:-1])
        assert not registry.verify_signature("der_0", message, "not bytes")  # type: ignore[arg-type]

    def test_unknown_identity_cannot_sign(self):
        registry = IdentityRegistry(AGENTS, seed=SEED)
        with pytest.raises(UnknownIdentityError, match="mallory"):
            registry.sign("mallory", b"x")
        with pytest.raises(KeyError):
            registry.public_key_bytes("mallory")

    def test_hmac_mode_has_no_public_key(self):
        registry = IdentityRegistry(AGENTS, mode="hmac", seed=SEED)
        with pytest.raises(ValueError, match="no public key"):
            registry.public_key_bytes("der_0")

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_same_seed_same_signatures(self, mode):
        a = IdentityRegistry(AGENTS, mode=mode, seed=SEED)
        b = IdentityRegistry(AGENTS, mode=mode, seed=SEED)
        c = IdentityRegistry(AGENTS, mode=mode, seed=SEED + 1)
        d = IdentityRegistry(AGENTS, mode=mode, seed=None)
        e = IdentityRegistry(AGENTS, mode=mode, seed=None)
        message = b"same bytes"
        for identity in a.identities:
            assert a.sign(identity, message) == b.sign(identity, message)
            assert a.sign(identity, message) != c.sign(identity, message)
            assert d.sign(identity, message) != e.sign(identity, message)
        assert a.sign("der_0", message) != a.sign("der_1", message)

    def test_key_derivation_is_rfc5869_hkdf(self):
        for identity in ("der_0", "operator", "ünïcode"):
            for mode in TRUST_MODES:
                reference = HKDF(
                    algorithm=hashes.SHA256(),
                    length=32,
                    salt=b"gridswarm-iatp-key-derivation-v1",
                    info=mode.encode() + b"\x00" + identity.encode(),
                ).derive(str(SEED).encode())
                assert derive_key_bytes(SEED, identity, mode) == reference

    @pytest.mark.parametrize("backend", ED25519_BACKENDS)
    def test_ed25519_keys_are_the_derived_keys(self, backend):
        registry = IdentityRegistry(AGENTS, seed=SEED, ed25519_backend=backend)
        assert registry.ed25519_backend == backend
        for identity in registry.identities:
            private = Ed25519PrivateKey.from_private_bytes(
                derive_key_bytes(SEED, identity, "ed25519")
            )
            assert private.public_key().public_bytes_raw() == registry.public_key_bytes(identity)
            message = identity.encode()
            # Ed25519 is deterministic (RFC 8032): same key, same message -> same signature.
            assert private.sign(message) == registry.sign(identity, message)
            Ed25519PublicKey.from_public_bytes(registry.public_key_bytes(identity)).verify(
                registry.sign(identity, message), message
            )

    def test_ed25519_backends_are_interchangeable(self):
        # libsodium is the default (PyNaCl is a dependency); both libraries give the same
        # public keys and signature bytes and accept each other's signatures
        assert default_ed25519_backend() == "libsodium"
        assert IdentityRegistry(AGENTS, seed=SEED).ed25519_backend == "libsodium"
        assert IdentityRegistry(AGENTS, mode="hmac", seed=SEED).ed25519_backend is None
        sodium, openssl = (IdentityRegistry(AGENTS, seed=SEED, ed25519_backend=b)
                           for b in ED25519_BACKENDS)
        for identity in sodium.identities:
            assert sodium.public_key_bytes(identity) == openssl.public_key_bytes(identity)
            for message in (b"", identity.encode(), bytes(range(256)) * 3):
                sig = sodium.sign(identity, message)
                assert sig == openssl.sign(identity, message)
                assert sodium.verify_signature(identity, message, sig)
                assert openssl.verify_signature(identity, message, sig)
                flipped = bytes([sig[0] ^ 1]) + sig[1:]
                for registry in (sodium, openssl):
                    assert not registry.verify_signature(identity, message, flipped)
                    assert not registry.verify_signature(identity, message + b"!", sig)
                    assert not registry.verify_signature(identity, message, sig[:-1])
                    assert not registry.verify_signature(identity, message, sig.hex())

    def test_ledger_verdicts_do_not_depend_on_the_backend(self):
        verdicts = []
        for backend in ED25519_BACKENDS:
            registry = IdentityRegistry(AGENTS, seed=SEED, ed25519_backend=backend)
            ledger = ContractLedger(registry, rng=7)
            signed = issue_round(ledger)
            attacks = Adversary(mode="ed25519", rng=4).attacks(
                signed[0], now_s=10.5, other_agent="der_1", tolerance_s=0.05)
            valid, reasons = ledger.verify_batch(signed, 10.5)
            assert valid.all()
            verdicts.append((
                [(s.agent_signature, s.operator_signature) for s in signed],
                [ledger.verify(a.signed, a.now_s, expected_agent=a.expected_agent)
                 for a in attacks],
            ))
        assert verdicts[0] == verdicts[1]
        assert all(r is not None for r in verdicts[0][1])   # every attack rejected

    def test_threaded_batches_equal_serial_ones(self):
        # crypto_threads=2 spreads a batch over a worker thread: the same signatures, in
        # call order, and the same per-contract verdicts with bad signatures mixed in
        serial, threaded = (IdentityRegistry(AGENTS, seed=SEED, crypto_threads=k) for k in (1, 2))
        assert (serial.crypto_threads, threaded.crypto_threads) == (1, 2)
        n = 40
        positions = [i % len(AGENTS) for i in range(n)]
        messages = [bytes([i]) * (i + 1) for i in range(n)]
        calls = [f for p in positions for f in (serial._signers[p], serial._signers[-1])]
        twice = [m for m in messages for _ in range(2)]
        sigs = serial._sign_many(calls, twice)
        assert sigs == threaded._sign_many(calls, twice)
        assert sigs[0::2] == [serial.sign(AGENTS[p], m)
                              for p, m in zip(positions, messages, strict=True)]
        assert sigs[1::2] == [serial.sign("operator", m) for m in messages]
        bad_agent, bad_operator = {3, 17}, {17, 25, 39}
        agent_sigs = [bytes(64) if i in bad_agent else s for i, s in enumerate(sigs[0::2])]
        operator_sigs = [bytes(64) if i in bad_operator else s
                         for i, s in enumerate(sigs[1::2])]
        want = [1 if i in bad_agent else 2 if i in bad_operator else 0 for i in range(n)]
        for registry in (serial, threaded):
            codes = registry._verify_many(registry._verifiers[-1],
                                          [registry._verifiers[p] for p in positions],
                                          agent_sigs, operator_sigs, messages)
            assert codes == want

    @pytest.mark.parametrize("threads", [1, 2])
    def test_a_forged_agent_signature_costs_no_operator_verification(self, threads):
        registry, ledger = make_ledger(crypto_threads=threads)
        operator_checks = []
        real = registry._verifiers[-1]
        registry._verifiers = (*registry._verifiers[:-1],
                               lambda sig, m: (operator_checks.append(m), real(sig, m))[1])
        forge = Adversary(mode="ed25519", rng=4).forge_agent_signature
        forged = [forge(s) for s in issue_round(ledger)]
        _, reasons = ledger.verify_batch(forged, 10.5)
        assert reasons == [RejectReason.BAD_AGENT_SIGNATURE] * len(forged)
        assert ledger.authenticate(forged[0], 10.5) == RejectReason.BAD_AGENT_SIGNATURE
        assert operator_checks == []

    def test_threaded_batch_raises_the_first_calls_error_and_keeps_working(self):
        registry = IdentityRegistry(AGENTS, seed=SEED, crypto_threads=2)
        signer = registry._signers[0]

        def broken(message):
            raise ValueError("a later call's error")

        calls = [signer, None] + [signer] * 28 + [broken] + [signer] * 10   # None: TypeError
        for _ in range(20):   # whichever thread meets which error first
            with pytest.raises(TypeError):
                registry._sign_many(calls, [b"m"] * len(calls))
        assert registry._sign_many([signer] * 20, [b"m"] * 20) == [signer(b"m")] * 20

    def test_a_pool_that_refuses_work_leaves_the_batch_to_the_caller(self, monkeypatch):
        # at interpreter shutdown the executor refuses new work; batches must still finish
        from concurrent.futures import ThreadPoolExecutor

        from gridswarm_env.trust import identities  # where _spread looks the pool up

        closed = ThreadPoolExecutor(1)
        closed.shutdown()
        monkeypatch.setattr(identities, "_worker_pool", lambda: (closed, 1))
        registry = IdentityRegistry(AGENTS, seed=SEED, crypto_threads=2)
        signer = registry._signers[0]
        assert registry._sign_many([signer] * 20, [b"m"] * 20) == [signer(b"m")] * 20

    def test_a_batch_does_not_wait_for_a_worker_busy_with_another_batch(self, monkeypatch):
        # two environments stepping in two threads share the pool: when its workers are
        # all taken, the caller signs everything itself and does not wait for them
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from gridswarm_env.trust import identities  # where _spread looks the pool up

        pool = ThreadPoolExecutor(1)
        release, started = threading.Event(), threading.Event()
        blocker = pool.submit(lambda: (started.set(), release.wait(30)))
        started.wait(10)
        monkeypatch.setattr(identities, "_worker_pool", lambda: (pool, 1))
        registry = IdentityRegistry(AGENTS, seed=SEED, crypto_threads=2)
        signer = registry._signers[0]
        done = []
        caller = threading.Thread(
            target=lambda: done.append(registry._sign_many([signer] * 20, [b"m"] * 20)))
        caller.start()
        caller.join(10)
        finished_while_busy = list(done) if not blocker.done() else None
        release.set()
        pool.shutdown()
        assert finished_while_busy == [[signer(b"m")] * 20]

    def test_threaded_signing_works_in_a_forked_child(self):
        # the worker pool does not survive fork(); a child makes its own
        import multiprocessing

        registry = IdentityRegistry(AGENTS, seed=SEED, crypto_threads=2)
        registry._sign_many([registry._signers[0]] * 20, [b"m"] * 20)   # pool started
        with multiprocessing.get_context("fork").Pool(1) as pool:
            child = pool.apply_async(_sign_in_child, (20,)).get(timeout=60)   # hangs without
        assert child == [registry.sign(AGENTS[0], b"x%d" % i) for i in range(20)]

    @pytest.mark.parametrize("value", [0, -1, 1.0, True, "2"])
    def test_bad_crypto_threads_is_a_clear_error(self, value):
        with pytest.raises(ValueError, match=r"crypto_threads=.*must be an int >= 1"):
            IdentityRegistry(AGENTS, seed=SEED, crypto_threads=value)

    def test_unknown_backend_is_a_clear_error(self):
        with pytest.raises(ValueError, match=r"ed25519_backend='nacl'.*libsodium, cryptography"):
            IdentityRegistry(AGENTS, seed=SEED, ed25519_backend="nacl")

    def test_hmac_tags_match_stdlib_hmac(self):
        registry = IdentityRegistry(AGENTS, mode="hmac", seed=SEED)
        for identity in registry.identities:
            key = derive_key_bytes(SEED, identity, "hmac")
            for message in (b"", b"x", b"y" * 200):
                assert registry.sign(identity, message) == hmac.digest(key, message, "sha256")

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_registry_and_ledger_refuse_pickling_and_copying(self, mode):
        registry, ledger = make_ledger(mode)
        for obj in (registry, ledger):
            with pytest.raises(TypeError):
                pickle.dumps(obj)
        with pytest.raises(TypeError):
            copy.deepcopy(registry)
        with pytest.raises(TypeError):
            copy.copy(registry)


# --------------------------------------------------------------------------- contracts


class TestContract:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("contract_id", ""),
            ("contract_id", 5),
            ("agent_id", "x" * 70000),
            ("operator_id", None),
            ("round_index", -1),
            ("round_index", 1.0),
            ("round_index", True),
            ("power_mw", math.nan),
            ("price_per_mwh", math.inf),
            ("window_start_s", "0"),
            ("power_mw", True),
            ("window_end_s", 10.0),
            ("nonce", b"short"),
            ("nonce", "0123456789abcdef"),
            ("product", "capacity"),
        ],
    )
    def test_invalid_field_named_in_error(self, field, value):
        with pytest.raises(ValueError, match=field):
            sample_contract(**{field: value})

    @pytest.mark.parametrize(
        ("field", "value"),
        [("power_mw", 10**400), ("price_per_mwh", 2**53 + 1), ("window_start_s", Fraction(1, 3)),
         ("window_end_s", 10**5000)],
        ids=["10**400", "2**53+1", "Fraction", "10**5000"],
    )
    def test_a_number_no_float_holds_exactly_is_refused(self, field, value):
        # Audit finding: 10**400 raised OverflowError; 2**53 + 1 and Fraction(1, 3) were
        # kept as they are but signed rounded, so two different contracts had one
        # encoding (and one pair of signatures) and decoding did not give the contract
        with pytest.raises(ValueError, match=field):
            sample_contract(**{field: value})

    def test_numbers_are_kept_as_the_float_and_int_they_are_signed_as(self):
        contract = sample_contract(power_mw=np.float32(0.5), price_per_mwh=55,
                                   window_start_s=np.float64(10.0), window_end_s=Fraction(11),
                                   round_index=IntEnum("Round", "ONE TWO THREE").THREE)
        for name in ("power_mw", "price_per_mwh", "window_start_s", "window_end_s"):
            assert type(getattr(contract, name)) is float, name
        assert type(contract.round_index) is int
        assert Contract.from_canonical_bytes(contract.canonical_bytes()) == contract
        assert contract == sample_contract(power_mw=0.5, price_per_mwh=55.0)

    def test_canonical_layout(self):
        contract = sample_contract()
        data = contract.canonical_bytes()
        assert data[:5] == b"IATP\x01"
        (round_index,) = struct.unpack_from(">Q", data, 5)
        power, price, start, end = struct.unpack_from(">dddd", data, 13)
        assert (round_index, power, price, start, end) == (3, 0.25, 55.0, 10.0, 11.0)
        assert data[45:61] == contract.nonce
        assert data.endswith(b"c-0-der_0-0der_0operatorenergy")
        assert Contract.from_canonical_bytes(data) == contract

    def test_every_field_changes_the_encoding(self):
        base = sample_contract()
        alternatives = {
            "contract_id": "c-0-der_0-1",
            "round_index": 4,
            "agent_id": "der_1",
            "operator_id": "operator2",
            "power_mw": 0.2500000001,
            "price_per_mwh": -55.0,
            "window_start_s": 9.5,
            "window_end_s": 11.5,
            "nonce": bytes(range(1, 17)),
            "product": "reserve",
        }
        assert set(alternatives) == {f.name for f in fields(Contract)}
        encodings = {base.canonical_bytes()}
        for name, value in alternatives.items():
            encodings.add(replace(base, **{name: value}).canonical_bytes())
        assert len(encodings) == len(alternatives) + 1

    def test_string_boundaries_are_unambiguous(self):
        a = sample_contract(contract_id="ab", agent_id="c")
        b = sample_contract(contract_id="a", agent_id="bc")
        assert a.canonical_bytes() != b.canonical_bytes()
        assert (
            sample_contract(power_mw=0.0).canonical_bytes()
            != sample_contract(power_mw=-0.0).canonical_bytes()
        )

    @settings(max_examples=150, deadline=None)
    @given(
        cid=st.text(min_size=1, max_size=20),
        aid=st.text(min_size=1, max_size=10),
        oid=st.text(min_size=1, max_size=10),
        round_index=st.integers(0, 2**64 - 1),
        power=st.floats(allow_nan=False, allow_infinity=False),
        price=st.floats(allow_nan=False, allow_infinity=False),
        start=st.floats(-1e9, 1e9),
        duration=st.floats(1e-3, 1e6),
        nonce=st.binary(min_size=16, max_size=16),
        product=st.sampled_from(PRODUCTS),
    )
    def test_decoding_inverts_encoding(
        self, cid, aid, oid, round_index, power, price, start, duration, nonce, product
    ):
        contract = Contract(
            cid, round_index, aid, oid, power, price, start, start + duration, nonce, product
        )
        decoded = Contract.from_canonical_bytes(contract.canonical_bytes())
        assert decoded == contract
        assert math.copysign(1.0, decoded.power_mw) == math.copysign(1.0, power)

    def test_decoding_rejects_bad_input(self):
        data = sample_contract().canonical_bytes()
        with pytest.raises(ValueError, match="version"):
            Contract.from_canonical_bytes(b"XXXX" + data[4:])
        with pytest.raises(ValueError, match="announces"):
            Contract.from_canonical_bytes(data + b"x")
        with pytest.raises(ValueError, match="at least"):
            Contract.from_canonical_bytes(data[:10])

    @pytest.mark.parametrize("field", ["contract_id", "agent_id", "operator_id"])
    @pytest.mark.parametrize("power", [0.25, 1], ids=["fast path", "detailed path"])
    def test_an_id_utf8_cannot_encode_is_refused_naming_the_field(self, field, power):
        """Security review: a lone surrogate built a contract on the fast path, whose
        canonical_bytes() then raised UnicodeEncodeError; on the detailed path (an int
        power) the constructor raised a bare UnicodeEncodeError naming no field."""
        with pytest.raises(ValueError, match=rf"^{field}='x\\ud800' must be a non-empty str "
                           r"of at most 65535 UTF-8 bytes: character 1 \('\\ud800', a lone "
                           r"surrogate\) has no UTF-8 encoding$"):
            sample_contract(**{field: "x\ud800"}, power_mw=power)
        # non-ASCII ids that do encode are fine (the detailed path)
        contract = sample_contract(**{field: "dér_ü€𝄞"}, power_mw=power)
        assert Contract.from_canonical_bytes(contract.canonical_bytes()) == contract

    def test_decoding_invalid_utf8_names_the_field(self):
        """Security review: from_canonical_bytes raised a bare UnicodeDecodeError naming
        no field for a string that is not UTF-8."""
        data = bytearray(sample_contract().canonical_bytes())   # ...c-0-der_0-0der_0...
        at = data.index(b"der_0operator")
        data[at] = 0xFF
        with pytest.raises(ValueError, match=r"^data's agent_id \(5 bytes at offset \d+\) is "
                           r"not valid UTF-8 \(byte 0: invalid start byte\)"):
            Contract.from_canonical_bytes(bytes(data))

    def test_equal_contracts_may_encode_differently(self):
        """As the Contract docstring says: -0.0 == 0.0, so equality (and hash) is not
        encoding equality; verification uses the encoding."""
        plus, minus = sample_contract(power_mw=0.0), sample_contract(power_mw=-0.0)
        assert plus == minus and hash(plus) == hash(minus)
        assert plus.canonical_bytes() != minus.canonical_bytes()
        assert "Equality is not encoding equality" in Contract.__doc__

    def test_energy(self):
        contract = sample_contract(power_mw=3.6, window_start_s=0.0, window_end_s=10.0)
        assert contract.duration_s == 10.0
        assert contract.energy_mwh == pytest.approx(0.01)


# --------------------------------------------------------------------------- ledger


class TestLedger:
    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_issue_and_verify_round_trip(self, mode):
        registry, ledger = make_ledger(mode)
        signed = issue_round(ledger, round_index=5)
        assert len(signed) == len(AGENTS) == ledger.signed
        for i, item in enumerate(signed):
            c = item.contract
            assert c.contract_id == f"c-5-der_{i}-{i}"
            assert (c.agent_id, c.operator_id, c.round_index, c.product) == (
                f"der_{i}",
                "operator",
                5,
                "energy",
            )
            assert len(c.nonce) == 16
            message = c.canonical_bytes()
            assert registry.verify_signature(c.agent_id, message, item.agent_signature)
            assert registry.verify_signature("operator", message, item.operator_signature)
        assert len({s.contract.nonce for s in signed}) == len(signed)
        valid, reasons = ledger.verify_batch(signed, 10.5, expected_agents=AGENTS)
        assert valid.dtype == bool and valid.all() and reasons == [None] * len(AGENTS)
        assert ledger.verified == len(AGENTS) and ledger.rejected == 0
        again = issue_round(ledger, round_index=6)
        assert again[0].contract.contract_id == f"c-6-der_0-{len(AGENTS)}"

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_issue_deterministic_for_seed(self, mode):
        _, a = make_ledger(mode, rng=99)
        _, b = make_ledger(mode, rng=99)
        _, c = make_ledger(mode, rng=100)
        assert issue_round(a) == issue_round(b)
        assert issue_round(a)[0].contract.nonce != issue_round(c)[0].contract.nonce

    def test_issue_validation(self):
        _, ledger = make_ledger()
        ok = dict(
            round_index=0,
            agent_indices=np.array([0, 1]),
            power_mw=np.ones(2),
            price_per_mwh=np.ones(2),
            window_start_s=0.0,
            window_end_s=1.0,
        )
        bad_cases = [
            ({"round_index": -1}, "round_index"),
            ({"agent_indices": np.array([0, 8])}, "agent_indices"),
            ({"agent_indices": np.array([0.0, 1.0])}, "agent_indices"),
            ({"agent_indices": np.array([[0, 1]])}, "agent_indices"),
            ({"power_mw": np.array([1.0, np.nan])}, "power_mw"),
            ({"price_per_mwh": np.array([1.0, np.inf])}, "price_per_mwh"),
            ({"power_mw": np.ones(3)}, "power_mw"),
            ({"window_end_s": 0.0}, "window_end_s"),
            ({"product": "capacity"}, "product"),
        ]
        for override, match in bad_cases:
            with pytest.raises(ValueError, match=match):
                ledger.issue(**{**ok, **override})
        assert (
            ledger.issue(
                **{
                    **ok,
                    "agent_indices": np.array([], dtype=int),
                    "power_mw": np.ones(0),
                    "price_per_mwh": 1.0,
                }
            )
            == []
        )
        assert ledger.signed == 0
        scalar_price = ledger.issue(**{**ok, "price_per_mwh": 30.0, "product": "reserve"})
        assert [s.contract.price_per_mwh for s in scalar_price] == [30.0, 30.0]
        assert scalar_price[0].contract.product == "reserve"

    @pytest.mark.parametrize(
        "bad", [dict(tolerance_s=-0.1), dict(tolerance_s=math.nan), dict(rng=-3), dict(audit="x")]
    )
    def test_ledger_config_validation(self, bad):
        registry = IdentityRegistry(AGENTS, seed=SEED)
        with pytest.raises(ValueError, match=next(iter(bad))):
            ContractLedger(registry, **bad)

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_every_attack_rejected_with_its_reason(self, mode):
        _, ledger = make_ledger(mode)
        genuine = issue_round(ledger)[2]
        adversary = Adversary(mode=mode, rng=5)
        attacks = adversary.attacks(
            genuine, now_s=10.5, other_agent="der_3", tolerance_s=ledger.tolerance_s
        )
        # every reason but late, which no attack gets: only a copy dispatch vouches for as
        # the operator's own, published when it was issued (verify_batch's own_copies)
        assert {a.expected_reason for a in attacks} == set(RejectReason) - {RejectReason.LATE}
        assert ledger.verify(genuine, 10.5, expected_agent="der_2") is None
        for attack in attacks:
            got = ledger.verify(attack.signed, attack.now_s, expected_agent=attack.expected_agent)
            assert got is attack.expected_reason, attack.name
        counts = ledger.rejected_by_reason
        assert sum(counts.values()) == ledger.rejected == len(attacks)
        assert counts["bad_agent_signature"] == 5 and counts["wrong_agent"] == 2
        assert ledger.verified == 1

    def test_adversary_without_keys_leaves_genuine_intact(self):
        _, ledger = make_ledger()
        genuine = issue_round(ledger)[0]
        snapshot = (
            genuine.contract.canonical_bytes(),
            genuine.agent_signature,
            genuine.operator_signature,
        )
        Adversary(rng=1).attacks(genuine, now_s=10.5, other_agent="der_1", tolerance_s=0.05)
        assert snapshot == (
            genuine.contract.canonical_bytes(),
            genuine.agent_signature,
            genuine.operator_signature,
        )
        assert ledger.verify(genuine, 10.5) is None
        with pytest.raises(ValueError, match="other_agent"):
            Adversary().attacks(genuine, now_s=10.5, other_agent="der_0", tolerance_s=0.05)

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda s: SignedContract("not a contract", s.agent_signature, s.operator_signature),  # type: ignore[arg-type]
            lambda s: replace(s, agent_signature=s.agent_signature[:-1]),
            lambda s: replace(s, operator_signature="x" * 64),
            lambda s: "not a signed contract",
            lambda s: None,
        ],
    )
    def test_malformed_inputs(self, mutate):
        _, ledger = make_ledger()
        genuine = issue_round(ledger)[0]
        assert ledger.verify(mutate(genuine), 10.5) is RejectReason.MALFORMED

    def test_malformed_fields_bypassing_validation(self):
        _, ledger = make_ledger()
        genuine = issue_round(ledger)[0]
        for name, value in [
            ("power_mw", math.nan),
            ("round_index", -1),
            ("agent_id", ["der_0"]),
            ("product", "x"),
        ]:
            contract = replace(genuine.contract)
            object.__setattr__(contract, name, value)
            assert (
                ledger.verify(replace(genuine, contract=contract), 10.5) is RejectReason.MALFORMED
            ), name

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_a_value_slipped_in_behind_validation_is_malformed_not_verified(self, mode):
        # Audit finding: verification encoded whatever number the fields held; a Fraction
        # off the signed float by less than its rounding (or True for 1.0) encodes, and
        # so verifies, as the signed value, and dispatch would then use the other value
        _, ledger = make_ledger(mode)
        genuine = issue_round(ledger, start_s=10.0, end_s=11.0)
        presented = []
        for i, name, value in [
            (0, "power_mw", Fraction(-1) + Fraction(1, 10**30)),
            (1, "price_per_mwh", Fraction(85, 2) + Fraction(1, 10**30)),
            (2, "window_end_s", Fraction(11) + Fraction(1, 10**30)),
            (len(AGENTS) - 1, "power_mw", True),   # signed 1.0
            (3, "round_index", np.uint64(0)),
        ]:
            signed = genuine[i]
            contract = replace(signed.contract)
            object.__setattr__(contract, name, value)
            assert contract.canonical_bytes() == signed.contract.canonical_bytes(), name
            presented.append(replace(signed, contract=contract))
        assert [ledger.verify(p, 10.5) for p in presented[:2]] == [RejectReason.MALFORMED] * 2
        assert ledger.screen_batch(presented[2:], 10.5) == [RejectReason.MALFORMED] * 3
        _, reasons = ledger.verify_batch(presented[2:] + genuine[4:-1], 10.5)
        assert reasons == [RejectReason.MALFORMED] * 3 + [None] * (len(AGENTS) - 5)

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_a_subclass_cannot_choose_the_bytes_it_is_verified_over(self, mode):
        # Audit finding: verification asked the presented object for its canonical bytes:
        # a Contract subclass answering with the genuine contract's bytes carried 200x the
        # awarded power and was verified, screened and authenticated as genuine
        _, ledger = make_ledger(mode)
        genuine = issue_round(ledger, start_s=10.0, end_s=11.0)[1]
        signed_bytes = genuine.contract.canonical_bytes()

        class Inflated(Contract):
            __slots__ = ()

            def canonical_bytes(self) -> bytes:
                return signed_bytes

        values = {f.name: getattr(genuine.contract, f.name) for f in fields(Contract)}
        forged = SignedContract(Inflated(**{**values, "power_mw": 150.0}),
                                genuine.agent_signature, genuine.operator_signature)

        class Wrapped(SignedContract):
            __slots__ = ()

        wrapped = Wrapped(genuine.contract, genuine.agent_signature, genuine.operator_signature)
        malformed = [RejectReason.MALFORMED] * 2
        assert ledger.screen_batch([forged, wrapped], 10.5) == malformed
        assert ledger.authenticate(forged, 10.5) is RejectReason.MALFORMED
        assert ledger.verify(forged, 10.5, expected_agent="der_1") is RejectReason.MALFORMED
        assert ledger.verify_batch([forged, wrapped], 10.5)[1] == malformed
        assert ledger.verify(genuine, 10.5) is None   # the genuine one is still unused

    def test_an_object_whose_attributes_raise_is_malformed_not_a_crash(self):
        # Audit finding: the ledger read .contract of whatever it was given; a property
        # raising anything but the few errors it caught escaped verify, verify_batch,
        # screen_batch and authenticate (a step of the environment would stop there)
        class Hostile:
            @property
            def contract(self):
                raise RuntimeError("presented by an adversary")

        audit = AuditLog()
        _, ledger = make_ledger(audit=audit)
        genuine = issue_round(ledger)[0]
        assert ledger.verify(Hostile(), 10.5) is RejectReason.MALFORMED
        assert ledger.authenticate(Hostile(), 10.5) is RejectReason.MALFORMED
        assert ledger.screen_batch([Hostile(), genuine], 10.5) == [RejectReason.MALFORMED, None]
        assert ledger.verify_batch([Hostile(), genuine], 10.5)[1] == [RejectReason.MALFORMED, None]
        assert audit.entries[-1].fields["rejections"] == [
            {"contract_id": "<malformed>", "reason": "malformed"}]

    def test_operator_named_as_agent_or_foreign_operator_is_unknown(self):
        registry, ledger = make_ledger()
        genuine = issue_round(ledger)[0]
        for contract in (
            replace(genuine.contract, agent_id="operator"),
            replace(genuine.contract, operator_id="der_1"),
        ):
            message = contract.canonical_bytes()
            forged = SignedContract(
                contract,
                registry.sign(contract.agent_id, message),
                registry.sign(contract.operator_id, message),
            )
            assert ledger.verify(forged, 10.5) is RejectReason.UNKNOWN_IDENTITY

    def test_replay_by_id_nonce_and_within_batch(self):
        registry, ledger = make_ledger()
        first, second = issue_round(ledger)[:2]
        valid, reasons = ledger.verify_batch([first, first, second], 10.5)
        assert valid.tolist() == [True, False, True]
        assert reasons == [None, RejectReason.REPLAYED, None]
        assert ledger.verify(first, 10.6) is RejectReason.REPLAYED
        # Same nonce under a fresh id, properly signed by both parties: still a replay.
        reuse = replace(first.contract, contract_id="c-fresh")
        message = reuse.canonical_bytes()
        resigned = SignedContract(
            reuse, registry.sign(reuse.agent_id, message), registry.sign("operator", message)
        )
        assert ledger.verify(resigned, 10.6) is RejectReason.REPLAYED

    def test_rejected_contract_does_not_burn_its_id(self):
        _, ledger = make_ledger()
        genuine = issue_round(ledger)[0]
        adversary = Adversary(rng=2)
        assert (
            ledger.verify(adversary.forge_operator_signature(genuine), 10.5)
            is RejectReason.BAD_OPERATOR_SIGNATURE
        )
        assert ledger.verify(genuine, 9.0) is RejectReason.NOT_YET_VALID
        assert ledger.replay_memory_size == 0
        assert ledger.verify(genuine, 10.5) is None

    def test_window_boundaries(self):
        _, ledger = make_ledger()
        tol = ledger.tolerance_s
        signed = issue_round(ledger, start_s=10.0, end_s=11.0)
        assert ledger.verify(signed[0], 10.0 - tol - 1e-9) is RejectReason.NOT_YET_VALID
        assert ledger.verify(signed[0], 10.0 - tol) is None
        assert ledger.verify(signed[1], math.nextafter(11.0, 0.0)) is None
        assert ledger.verify(signed[2], 11.0) is RejectReason.EXPIRED
        # Time cannot be rewound within an epoch: the clock stays at 11.0.
        assert ledger.clock_s == 11.0
        assert ledger.verify(signed[3], 10.5) is RejectReason.EXPIRED
        with pytest.raises(ValueError, match="now_s"):
            ledger.verify(signed[4], math.nan)

    def test_custom_tolerance(self):
        registry = IdentityRegistry(AGENTS, seed=SEED)
        ledger = ContractLedger(registry, rng=0, tolerance_s=0.0)
        signed = issue_round(ledger)
        assert ledger.verify(signed[0], math.nextafter(10.0, 0.0)) is RejectReason.NOT_YET_VALID
        assert ledger.verify(signed[0], 10.0) is None

    def test_forgotten_contract_cannot_be_replayed_by_rewinding(self):
        _, ledger = make_ledger()
        signed = issue_round(ledger, start_s=10.0, end_s=11.0)
        assert ledger.verify(signed[0], 10.5) is None
        ledger.verify_batch([], 12.0)  # time passes: the id is forgotten
        assert ledger.replay_memory_size == 0
        assert ledger.verify(signed[0], 10.5) is RejectReason.EXPIRED

    def test_new_epoch_rejects_old_contracts(self):
        _, ledger = make_ledger()
        old = issue_round(ledger, start_s=0.0, end_s=100.0)
        assert ledger.verify(old[0], 1.0) is None
        ledger.reset_replay_window()  # env.reset(): simulated time starts again
        assert ledger.epoch == 1 and ledger.replay_memory_size == 0 and ledger.clock_s == -math.inf
        assert ledger.verify(old[1], 1.0) is RejectReason.REPLAYED
        new = issue_round(ledger, start_s=0.0, end_s=100.0)
        assert new[0].contract.nonce[:4] != old[0].contract.nonce[:4]
        assert ledger.verify(new[0], 1.0) is None

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_an_earlier_episodes_contract_is_refused_when_its_epoch_tag_comes_up_again(
            self, mode):
        # The environment builds a ledger per episode on the same keys; replay across
        # episodes rests on the nonce's 4-byte epoch tag. Generators seeded 43408 and
        # 44001 draw the same first 4 bytes: two such ledgers drew the same tag, and the
        # second accepted the first's contract (ids restart with each ledger).
        assert np.random.default_rng(43408).bytes(4) == np.random.default_rng(44001).bytes(4)
        registry = IdentityRegistry(AGENTS, mode=mode, seed=SEED)
        episode_1 = ContractLedger(registry, rng=43408)
        old = issue_round(episode_1, start_s=0.0, end_s=100.0)
        episode_2 = ContractLedger(registry, rng=44001)
        assert episode_2.verify(old[3], 1.0, expected_agent="der_3") is RejectReason.REPLAYED
        new = issue_round(episode_2, start_s=0.0, end_s=100.0)
        assert new[3].contract.nonce[:4] != old[3].contract.nonce[:4]
        assert episode_2.verify(new[3], 1.0, expected_agent="der_3") is None
        # a new registry (other keys) does not inherit the tags: it draws as before
        assert ContractLedger(IdentityRegistry(AGENTS, mode=mode, seed=SEED),
                              rng=44001)._epoch_tag == old[3].contract.nonce[:4]

    def test_replay_memory_stays_bounded(self):
        _, ledger = make_ledger("hmac")
        sizes = []
        for step in range(1500):
            t = float(step)
            signed = issue_round(ledger, round_index=step, start_s=t, end_s=t + 2.0)
            valid, _ = ledger.verify_batch(signed, t)
            assert valid.all()
            sizes.append(ledger.replay_memory_size)
        # Windows last two steps: at most two rounds of ids are open at any time.
        assert max(sizes) == 2 * len(AGENTS)
        assert ledger.verified == 1500 * len(AGENTS)
        assert len(ledger._used_nonces) == len(ledger._expiry_heap) == ledger.replay_memory_size

    def test_verify_batch_argument_checks(self):
        _, ledger = make_ledger()
        signed = issue_round(ledger)
        with pytest.raises(ValueError, match="expected_agents"):
            ledger.verify_batch(signed, 10.5, expected_agents=AGENTS[:2])
        valid, reasons = ledger.verify_batch([], 10.5)
        assert valid.shape == (0,) and reasons == []

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_contract_signed_entries_record_a_digest_of_what_was_signed(self, mode, tmp_path):
        """Security finding: a ``contract_signed`` entry carried ids, count, product,
        round and window, nothing of the terms or signatures: the trail could not show
        what was signed. Each batch entry records ``contracts_sha256``, which an auditor
        holding the contracts recomputes."""
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path)
        _, ledger = make_ledger(mode, audit=audit)
        batches = [issue_round(ledger, round_index=2),
                   ledger.issue(3, np.array([5, 1, 6]), np.array([0.5, -0.25, 2.0]), 40.0,
                                12.0, 13.0, product="reserve")]
        audit.close()
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        assert [e["kind"] for e in entries] == ["contract_signed"] * 2
        for entry, batch in zip(entries, batches, strict=True):
            fields_ = entry["fields"]
            assert fields_["contract_ids"] == [s.contract.contract_id for s in batch]
            # the documented formula, written out by an auditor
            independent = hashlib.sha256(b"".join(
                struct.pack(">I", len(e)) + e
                for e in (s.contract.canonical_bytes() for s in batch))).hexdigest()
            assert fields_["contracts_sha256"] == independent == contracts_digest(batch)
            assert contracts_digest([s.contract for s in batch]) == independent
        recorded = entries[0]["fields"]["contracts_sha256"]
        first = batches[0]
        one_changed = [s.contract for s in first]
        one_changed[3] = replace(one_changed[3], power_mw=one_changed[3].power_mw + 0.5)
        assert contracts_digest(one_changed) != recorded
        assert contracts_digest(first[::-1]) != recorded   # the entry's id order
        assert contracts_digest(first[:-1]) != recorded
        assert verify_audit_file(path).ok
        with pytest.raises(TypeError, match=r"contracts\[1\] is str; expected a Contract"):
            contracts_digest([first[0], "c-2-der_1-1"])

    def test_ledger_writes_batch_audit_entries(self):
        audit = AuditLog()
        _, ledger = make_ledger(audit=audit)
        signed = issue_round(ledger, round_index=2)
        forged = Adversary(rng=0).forge_agent_signature(signed[0])
        ledger.verify_batch([forged, *signed], 10.5)
        kinds = [e.kind for e in audit.entries]
        assert kinds == ["contract_signed", "contract_verified", "contract_rejected"]
        signed_entry, verified_entry, rejected_entry = audit.entries
        assert (
            signed_entry.fields["count"] == len(AGENTS) and signed_entry.fields["round_index"] == 2
        )
        assert signed_entry.fields["contract_ids"] == [s.contract.contract_id for s in signed]
        assert verified_entry.fields["contract_ids"] == [s.contract.contract_id for s in signed]
        assert rejected_entry.fields["rejections"] == [
            {"contract_id": signed[0].contract.contract_id, "reason": "bad_agent_signature"}
        ]
        assert ledger.verify(None, 10.5) is RejectReason.MALFORMED  # type: ignore[arg-type]
        assert audit.entries[-1].fields["rejections"] == [
            {"contract_id": "<malformed>", "reason": "malformed"}
        ]
        assert audit.verify().ok

    def test_counters_snapshot(self):
        _, ledger = make_ledger()
        signed = issue_round(ledger)
        ledger.verify_batch(signed + signed[:1], 10.5)
        snapshot = ledger.counters()
        assert snapshot["signed"] == 8 and snapshot["verified"] == 8 and snapshot["rejected"] == 1
        assert snapshot["rejected_by_reason"]["replayed"] == 1
        snapshot["rejected_by_reason"]["replayed"] = 99
        assert ledger.rejected_by_reason["replayed"] == 1


# --------------------------------------------------------------------------- fast paths


class _Text(str):
    """A str subclass (the fast paths must hand such fields to the reference checks)."""


def _tampered(signed: SignedContract, **fields) -> SignedContract:
    """A copy of ``signed`` whose contract fields are set behind validation's back."""
    contract = replace(signed.contract)
    for name, value in fields.items():
        object.__setattr__(contract, name, value)
    return replace(signed, contract=contract)


def _assorted_presentations(signed: list[SignedContract], mode: str) -> list:
    """Genuine, replayed, forged, malformed and oddly typed presentations, in one batch."""
    adversary = Adversary(mode=mode, rng=11)
    s0, s1, s2, s3, s4, s5, s6, s7 = signed
    missing = object.__new__(Contract)  # a contract whose slots were never set
    return [
        s0,
        s0,  # replayed within the batch
        adversary.forge_agent_signature(s1),
        adversary.forge_operator_signature(s1),
        adversary.alter_power(s1),
        adversary.alter_price(s1),
        adversary.impersonate(s1),
        adversary.malformed(s1),
        adversary.sign_with_wrong_key(s1),
        adversary.rename_agent(s1, "der_7"),
        _tampered(s1, operator_id="someone-else"),
        _tampered(s1, product="capacity"),
        _tampered(s1, contract_id="c-\ud800"),  # not encodable: malformed
        _tampered(s1, round_index=2**64),  # not encodable: malformed
        _tampered(s1, power_mw=math.nan),
        _tampered(s1, window_end_s=s1.contract.window_start_s),
        _tampered(s1, agent_id=["der_1"]),  # unhashable
        replace(s1, agent_signature=bytearray(s1.agent_signature)),
        replace(s1, operator_signature=s1.operator_signature[:-1]),
        replace(s1, contract=missing),
        (s1.contract, s1.agent_signature, s1.operator_signature),  # not a SignedContract
        None,
        s1,
        # other types: the reference checks decide (same values encode to the same bytes)
        _tampered(s2, power_mw=np.float64(s2.contract.power_mw), round_index=np.uint64(0)),
        _tampered(s3, agent_id=_Text("der_3"), contract_id=_Text(s3.contract.contract_id)),
        _tampered(s4, window_start_s=int(s4.contract.window_start_s)),
        s5,
        s6,
        s7,
    ]


class TestFastPaths:
    """The batch fast paths give exactly the verdicts of the per-item reference checks."""

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_issue_output_is_the_reference_encoding_and_signatures(self, mode):
        registry, ledger = make_ledger(mode)
        signed = issue_round(ledger, round_index=4)
        for i, s in enumerate(signed):
            c = s.contract
            assert type(s) is SignedContract and type(c) is Contract
            assert c == Contract(*(getattr(c, f.name) for f in fields(Contract)))
            assert (c.contract_id, c.agent_id, c.round_index) == (f"c-4-der_{i}-{i}", f"der_{i}", 4)
            message = c.canonical_bytes()
            assert Contract.from_canonical_bytes(message) == c
            assert registry.verify_signature(c.agent_id, message, s.agent_signature)
            assert registry.verify_signature("operator", message, s.operator_signature)
            with pytest.raises(AttributeError):
                c.power_mw = 1.0  # type: ignore[misc]
            with pytest.raises(AttributeError):
                s.agent_signature = b""  # type: ignore[misc]

    @pytest.mark.parametrize("mode", TRUST_MODES)
    @pytest.mark.parametrize("threads", [1, 2])
    def test_verify_batch_matches_one_by_one_verification(self, mode, threads):
        # two identical ledgers: one verifies the batch (its signatures spread over
        # `threads` threads), the other item by item (_check)
        _, batch_ledger = make_ledger(mode, crypto_threads=threads)
        _, single_ledger = make_ledger(mode, crypto_threads=1)
        items_a = _assorted_presentations(issue_round(batch_ledger), mode)
        items_b = _assorted_presentations(issue_round(single_ledger), mode)
        expected = ["der_1" if i % 5 == 3 else None for i in range(len(items_a))]
        valid, got = batch_ledger.verify_batch(items_a, 10.5, expected)
        want = [
            single_ledger.verify(item, 10.5, expected_agent=e)
            for item, e in zip(items_b, expected, strict=True)
        ]
        assert got == want
        assert valid.tolist() == [r is None for r in want]
        assert batch_ledger.counters() == single_ledger.counters()
        assert batch_ledger._expiry_heap == single_ledger._expiry_heap
        assert {r for r in want} >= {
            None,
            RejectReason.REPLAYED,
            RejectReason.MALFORMED,
            RejectReason.UNKNOWN_IDENTITY,
            RejectReason.WRONG_AGENT,
            RejectReason.BAD_AGENT_SIGNATURE,
            RejectReason.BAD_OPERATOR_SIGNATURE,
        }

    @pytest.mark.parametrize("mode", ["hmac", "ed25519"])
    def test_tampering_with_the_issued_objects_is_caught(self, mode):
        """Fields or signatures changed on the very objects issue() returned (frozen, but
        not in Python's eyes) are re-encoded and re-checked with the keys."""
        _, ledger = make_ledger(mode)
        signed = issue_round(ledger)
        forged = Adversary(mode=mode, rng=3).forge_agent_signature(signed[1]).agent_signature
        object.__setattr__(signed[0].contract, "power_mw", 99.0)
        object.__setattr__(signed[1], "agent_signature", forged)
        object.__setattr__(signed[2], "operator_signature", forged)
        object.__setattr__(signed[3].contract, "price_per_mwh", -1e6)
        object.__setattr__(signed[4].contract, "agent_id", "der_5")
        valid, reasons = ledger.verify_batch(signed, 10.5)
        assert reasons[:5] == [RejectReason.BAD_AGENT_SIGNATURE] * 2 + [
            RejectReason.BAD_OPERATOR_SIGNATURE,
            RejectReason.BAD_AGENT_SIGNATURE,
            RejectReason.BAD_AGENT_SIGNATURE,
        ]
        assert valid.tolist() == [False] * 5 + [True] * 3
        assert ledger.verify(signed[5], 10.5) is RejectReason.REPLAYED

    def test_nonces_are_the_generator_bytes_drawn_on_demand(self):
        """Drawing ahead in blocks hands out the very bytes drawn one call at a time."""
        registry = IdentityRegistry(AGENTS, mode="hmac", seed=SEED)
        ledger = ContractLedger(registry, rng=np.random.default_rng(21))
        reference = np.random.default_rng(21)
        tag = reference.bytes(4)
        nonces = []
        for step, n in enumerate([8, 3, 1, 8, 8, 5] * 40):  # 1320 nonces: several blocks
            if step == 100:
                ledger.reset_replay_window()
                previous = tag
                while tag == previous:
                    tag = reference.bytes(4)
            signed = ledger.issue(step, np.arange(n), np.ones(n), 1.0, 0.0, 1.0)
            drawn = reference.bytes(12 * n)
            assert [s.contract.nonce for s in signed] == [
                tag + drawn[12 * i : 12 * i + 12] for i in range(n)
            ]
            nonces += [s.contract.nonce for s in signed]
        assert len(set(nonces)) == len(nonces)

    def test_long_registry_ids_are_still_validated(self):
        registry = IdentityRegistry(["a" * 65531, "b" * 65400], mode="hmac", seed=1)
        ledger = ContractLedger(registry, rng=0)
        ok = ledger.issue(0, np.array([1]), np.ones(1), 1.0, 0.0, 1.0)
        assert ledger.verify(ok[0], 0.5) is None
        with pytest.raises(ValueError, match="contract_id"):
            ledger.issue(0, np.array([0]), np.ones(1), 1.0, 0.0, 1.0)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(max_size=12), max_size=6))
    def test_audit_id_lists_are_canonical_json(self, ids):
        from gridswarm_env.trust import _json_str_list

        assert _json_str_list(ids) == json.dumps(ids, separators=(",", ":"), ensure_ascii=True)

    def test_ledger_audit_entries_equal_generic_appends(self, tmp_path):
        """Entries rendered by the ledger are byte for byte those of AuditLog.append."""
        registry = IdentityRegistry(["der_0", "dér \"1\"", "d\\2\x7f"], mode="hmac", seed=3)
        fast = AuditLog(tmp_path / "fast.jsonl")
        ledger = ContractLedger(registry, rng=5, audit=fast)
        signed = ledger.issue(7, np.array([0, 1, 2]), np.array([0.1, -0.0, 1e16]), 33.3, 1e-7,
                              2.5, product="reserve")
        ledger.verify_batch(signed, 2.0)
        ledger.verify(signed[0], 2.0)
        fast.close()
        generic = AuditLog(tmp_path / "generic.jsonl")
        for entry in fast.entries:
            generic.append(entry.kind, **entry.fields)
        generic.close()
        assert [e.kind for e in fast.entries] == [
            "contract_signed", "contract_verified", "contract_rejected"
        ]
        assert fast.entries == generic.entries
        assert (tmp_path / "fast.jsonl").read_bytes() == (tmp_path / "generic.jsonl").read_bytes()
        assert verify_audit_file(tmp_path / "fast.jsonl").ok


# --------------------------------------------------------------------------- key secrecy


def _secret_forms(mode: str, identities) -> list[tuple[str, bytes]]:
    forms = []
    for identity in identities:
        raw = derive_key_bytes(SEED, identity, mode)
        forms += [
            (identity, raw),
            (identity, raw.hex().encode()),
            (identity, raw.hex().upper().encode()),
            (identity, base64.b64encode(raw)),
            (identity, repr(raw).encode()),
        ]
    return forms


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_private_keys_never_leak(mode, tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    registry, ledger = make_ledger(mode, audit=audit)
    signed = issue_round(ledger)
    adversary = Adversary(mode=mode, rng=4)
    attacks = adversary.attacks(signed[0], now_s=10.5, other_agent="der_1", tolerance_s=0.05)
    ledger.verify_batch(signed, 10.5)
    for attack in attacks:
        ledger.verify(attack.signed, attack.now_s, expected_agent=attack.expected_agent)
    audit.append(
        "action_blocked", agent="der_3", power_mw=np.float64(1.5), note=RejectReason.MALFORMED
    )
    audit.sign_head(registry)
    audit.close()

    texts = [repr(registry), str(registry), repr(ledger), str(ledger), repr(audit), repr(adversary)]
    texts += [repr(s) for s in signed] + [str(s) for s in signed] + [repr(a) for a in attacks]
    texts += [repr(e) for e in audit.entries] + [e.to_json_line() for e in audit.entries]
    texts += [repr(getattr(registry, slot)) for slot in IdentityRegistry.__slots__]
    texts += [repr(getattr(ledger, slot)) for slot in ContractLedger.__slots__]
    haystacks = [t.encode("utf-8", "backslashreplace") for t in texts] + [path.read_bytes()]
    # The derived bytes really are the keys (so the scan looks for the right thing).
    assert registry.sign("der_0", b"m") == (
        Ed25519PrivateKey.from_private_bytes(derive_key_bytes(SEED, "der_0", mode)).sign(b"m")
        if mode == "ed25519"
        else hmac.digest(derive_key_bytes(SEED, "der_0", mode), b"m", "sha256")
    )
    for identity, secret in _secret_forms(mode, registry.identities):
        for haystack in haystacks:
            assert secret not in haystack, f"{identity}'s private key leaked"
    # No slot of the registry stores raw key bytes either.
    raws = {derive_key_bytes(SEED, i, mode) for i in registry.identities}
    for slot in IdentityRegistry.__slots__:
        value = getattr(registry, slot)
        items = value if isinstance(value, tuple) else (value,)
        assert not any(isinstance(v, bytes) and v in raws for v in items)
    assert path.stat().st_size > 0   # the scan above read a written file


@pytest.mark.parametrize("mode", TRUST_MODES)
def test_authenticate_checks_signatures_only_and_uses_nothing_up(mode):
    audit = AuditLog()
    registry, ledger = make_ledger(mode, audit=audit)
    signed = issue_round(ledger)           # window [10, 11)
    genuine = signed[0]
    # on receipt, long before the window: authentic, nothing recorded, clock unmoved
    assert ledger.authenticate(genuine, 2.0, expected_agent="der_0") is None
    assert ledger.clock_s == -math.inf and ledger.verified == 0 and ledger.rejected == 0
    # a second receipt of the same contract is a duplicate delivery
    assert ledger.authenticate(genuine, 3.0) is RejectReason.REPLAYED
    # ... and dispatch still accepts the contract once
    assert ledger.verify(genuine, 10.5, expected_agent="der_0") is None
    assert ledger.verify(genuine, 10.5) is RejectReason.REPLAYED
    # failures are named, counted and audited like verify's
    adversary = Adversary(mode=mode, rng=1)
    n_entries = audit.n_entries
    assert ledger.authenticate(adversary.forge_agent_signature(signed[1]), 4.0) \
        is RejectReason.BAD_AGENT_SIGNATURE
    assert ledger.authenticate(adversary.alter_power(signed[1]), 4.0) \
        is RejectReason.BAD_AGENT_SIGNATURE
    assert ledger.authenticate(signed[1], 4.0, expected_agent="der_5") \
        is RejectReason.WRONG_AGENT
    counts = {k: v for k, v in ledger.rejected_by_reason.items() if v}
    assert counts == {"replayed": 2, "bad_agent_signature": 2, "wrong_agent": 1}
    assert audit.n_entries == n_entries + 3
    assert audit.entries[-1].kind == "contract_rejected"
    with pytest.raises(ValueError, match="now_s"):
        ledger.authenticate(genuine, float("nan"))
    # a contract of an earlier epoch (episode) is a replay already on receipt
    ledger.reset_replay_window()
    assert ledger.authenticate(signed[2], 20.0) is RejectReason.REPLAYED
    fresh = issue_round(ledger, round_index=1, start_s=30.0, end_s=31.0)
    assert ledger.authenticate(fresh[2], 20.0) is None


# --------------------------------------------------------------------------- receipt screening


class TestScreenBatch:
    """``screen_batch``: what a holder may rely on before dispatch, at no extra crypto."""

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_screening_gives_verify_s_reasons_and_uses_nothing_up(self, mode):
        _, screen_ledger = make_ledger(mode)
        _, single_ledger = make_ledger(mode)
        items_a = _assorted_presentations(issue_round(screen_ledger), mode)
        items_b = _assorted_presentations(issue_round(single_ledger), mode)
        expected = ["der_1" if i % 5 == 3 else None for i in range(len(items_a))]
        before = screen_ledger.counters()
        got = screen_ledger.screen_batch(items_a, 10.5, expected)
        assert screen_ledger.counters() == before          # nothing counted
        assert screen_ledger._used_ids == set()            # nothing used up
        want = [single_ledger.verify(item, 10.5, expected_agent=e)
                for item, e in zip(items_b, expected, strict=True)]
        # the same verdicts, except that a copy repeated in the batch is not yet a replay
        assert [r for i, r in enumerate(got) if i != 1] == [r for i, r in enumerate(want) if i != 1]
        assert want[1] is RejectReason.REPLAYED and got[1] is None
        # dispatch then decides exactly as without screening
        _, plain_ledger = make_ledger(mode)
        items_c = _assorted_presentations(issue_round(plain_ledger), mode)
        assert (screen_ledger.verify_batch(items_a, 10.5, expected)[1]
                == plain_ledger.verify_batch(items_c, 10.5, expected)[1])
        assert screen_ledger.counters() == plain_ledger.counters()

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_visible_replays_and_ended_windows_fail_screening(self, mode):
        _, ledger = make_ledger(mode)
        old = issue_round(ledger)                                  # window [10, 11)
        assert ledger.verify_batch(old[:2], 10.5)[0].all()
        ledger.screen_batch(old, 10.9)
        assert ledger.screen_batch(old[:3], 10.9) == [RejectReason.REPLAYED] * 2 + [None]
        assert ledger.screen_batch(old[2:3], 11.0) == [RejectReason.EXPIRED]
        ledger.reset_replay_window()                               # a new episode
        assert ledger.screen_batch(old[2:3], 10.5) == [RejectReason.REPLAYED]

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_dispatch_reuses_the_screened_signature_checks_only_for_unchanged_objects(self, mode):
        registry, ledger = make_ledger(mode)
        checked = count_signature_checks(registry)
        signed = issue_round(ledger)
        assert ledger.screen_batch(signed, 10.0) == [None] * len(signed)
        assert checked == [len(signed)]
        # changed behind the frozen fields after screening: re-encoded, checked again
        object.__setattr__(signed[0].contract, "power_mw", 99.0)
        object.__setattr__(signed[1], "operator_signature", signed[2].operator_signature)
        copy_of_3 = replace(signed[3])                             # equal, but not screened
        valid, reasons = ledger.verify_batch([*signed, copy_of_3], 10.5)
        assert checked == [len(signed), 3]
        assert reasons == [RejectReason.BAD_AGENT_SIGNATURE, RejectReason.BAD_OPERATOR_SIGNATURE,
                           *[None] * (len(signed) - 2), RejectReason.REPLAYED]
        # used once: a later batch of the same objects is checked with the keys again
        ledger.verify_batch(signed[2:4], 10.6)
        assert checked == [len(signed), 3, 2]

    @pytest.mark.parametrize("mode", TRUST_MODES)
    def test_the_screening_memo_compares_fields_by_identity_not_equality(self, mode):
        # a field swapped for an equal value after screening is verified afresh: -0.0 ==
        # 0.0 but encodes differently (a forgery), an equal str copy encodes the same
        registry, ledger = make_ledger(mode)
        checked = count_signature_checks(registry)
        n = len(AGENTS)
        signed = ledger.issue(0, np.arange(n), np.linspace(-1.0, 1.0, n), 0.0, 10.0, 11.0)
        assert ledger.screen_batch(signed, 10.0) == [None] * n
        object.__setattr__(signed[0].contract, "price_per_mwh", -0.0)
        cid = signed[1].contract.contract_id
        copy = "".join(list(cid))
        assert copy == cid and copy is not cid
        object.__setattr__(signed[1].contract, "contract_id", copy)
        _, reasons = ledger.verify_batch(signed, 10.5)
        assert checked == [n, 2]
        assert reasons == [RejectReason.BAD_AGENT_SIGNATURE, *[None] * (n - 1)]

    def test_bad_arguments_are_refused(self):
        _, ledger = make_ledger("hmac")
        signed = issue_round(ledger)
        with pytest.raises(ValueError, match="now_s"):
            ledger.screen_batch(signed, math.nan)
        with pytest.raises(ValueError, match="expected_agents"):
            ledger.screen_batch(signed, 10.0, ["der_0"])


# --- boundaries a mutation audit found unpinned: each rule of the trust.contracts docstring
# on both verification paths, ContractLedger.verify and ContractLedger.verify_batch
FOUR_AGENTS = ["der_0", "der_1", "der_2", "der_3"]


def _ledger(audit: AuditLog | None = None) -> tuple[IdentityRegistry, ContractLedger]:
    registry = IdentityRegistry(FOUR_AGENTS, seed=11, crypto_threads=1)
    return registry, ContractLedger(registry, rng=3, audit=audit)


def _issue(ledger: ContractLedger, start_s: float = 10.0, end_s: float = 11.0):
    n = len(FOUR_AGENTS)
    return ledger.issue(0, np.arange(n), np.full(n, 0.5), 40.0, start_s, end_s)


def _one(ledger: ContractLedger, signed: SignedContract, now_s: float):
    return ledger.verify(signed, now_s)


def _batch(ledger: ContractLedger, signed: SignedContract, now_s: float):
    valid, reasons = ledger.verify_batch([signed], now_s)
    assert bool(valid[0]) is (reasons[0] is None)
    return reasons[0]


PATHS = pytest.mark.parametrize("present", [_one, _batch], ids=["verify", "verify_batch"])


@PATHS
def test_window_opens_tolerance_s_before_its_start(present) -> None:
    """``window_start_s - tolerance_s <= now_s``: 10.0 - 0.05 s is the first valid instant."""
    _, ledger = _ledger()
    signed = _issue(ledger, 10.0, 11.0)
    tol = ledger.tolerance_s
    assert tol == 0.05
    assert present(ledger, signed[0], math.nextafter(10.0 - tol, 0.0)) is RejectReason.NOT_YET_VALID
    assert present(ledger, signed[0], 10.0 - tol) is None
    assert present(ledger, signed[1], 10.0 - tol / 2) is None


@PATHS
def test_window_end_is_exclusive_and_time_cannot_be_rewound(present) -> None:
    """Expiry is judged against the ledger clock (the highest ``now_s`` seen): once the
    ledger has seen ``window_end_s``, presenting a contract with an earlier ``now_s`` does
    not bring its window back."""
    _, ledger = _ledger()
    signed = _issue(ledger, 10.0, 11.0)
    assert present(ledger, signed[0], math.nextafter(11.0, 0.0)) is None
    assert present(ledger, signed[1], 11.0) is RejectReason.EXPIRED
    assert ledger.clock_s == 11.0
    assert present(ledger, signed[2], 10.5) is RejectReason.EXPIRED
    assert ledger.rejected_by_reason["expired"] == 2


@PATHS
def test_a_contract_id_is_accepted_once_even_under_a_fresh_nonce(present) -> None:
    """"each contract id and each nonce is accepted once": a second contract with an
    accepted id, a fresh nonce of this epoch and valid signatures of both parties is a
    replay (and audited as one)."""
    audit = AuditLog()
    registry, ledger = _ledger(audit)
    first = _issue(ledger)[0]
    assert present(ledger, first, 10.5) is None
    nonce = first.contract.nonce[:4] + bytes(12)   # this epoch's tag, a nonce never used
    assert nonce != first.contract.nonce
    again = replace(first.contract, nonce=nonce, power_mw=2.0)
    message = again.canonical_bytes()
    resigned = SignedContract(again, registry.sign(again.agent_id, message),
                              registry.sign(registry.operator_id, message))
    assert present(ledger, resigned, 10.6) is RejectReason.REPLAYED
    rejected = [e for e in audit.entries if e.kind == "contract_rejected"]
    assert rejected[-1].fields["rejections"] == [
        {"contract_id": first.contract.contract_id, "reason": "replayed"}]


@PATHS
@pytest.mark.parametrize("start_s, end_s", [(10.0, math.inf), (10.0, math.nan), (10.5, 10.2)],
                         ids=["never_ends", "nan_end", "ends_before_it_starts"])
def test_a_window_slipped_in_behind_validation_is_malformed_even_when_signed(
        present, start_s: float, end_s: float) -> None:
    """A window no :class:`Contract` can hold (an infinite or NaN end, or ``end <= start``),
    set behind the frozen fields and then signed by *both* parties, is ``malformed``: it is
    not accepted (an infinite end would never expire) and uses nothing up."""
    registry, ledger = _ledger()
    genuine = _issue(ledger)[0]
    contract = replace(genuine.contract)
    object.__setattr__(contract, "window_start_s", start_s)
    object.__setattr__(contract, "window_end_s", end_s)
    message = contract.canonical_bytes()
    signed = SignedContract(contract, registry.sign(contract.agent_id, message),
                            registry.sign(registry.operator_id, message))
    assert present(ledger, signed, 10.5) is RejectReason.MALFORMED
    assert ledger.replay_memory_size == 0
    assert present(ledger, genuine, 10.5) is None


@pytest.mark.parametrize("mode, backend", [("hmac", None), ("ed25519", "cryptography"),
                                           ("ed25519", "libsodium")])
def test_verify_signature_refuses_a_signature_of_the_wrong_type_or_length(
        mode: str, backend: str | None) -> None:
    """"signatures of the wrong type or length give False": the right bytes in a
    ``bytearray`` (or with a byte added) are no signature, whatever the backend accepts."""
    registry = IdentityRegistry(FOUR_AGENTS, mode=mode, seed=5, ed25519_backend=backend)
    message = b"gridswarm"
    signature = registry.sign("der_1", message)
    assert registry.verify_signature("der_1", message, signature) is True
    for wrong in (bytearray(signature), memoryview(signature), signature + b"\x00",
                  signature[:-1], signature.hex()):
        assert registry.verify_signature("der_1", message, wrong) is False, type(wrong)
    assert registry.verify_signature("der_2", message, signature) is False


def test_an_audited_rejection_never_reads_a_non_contract_s_attributes() -> None:
    """A :class:`SignedContract` holding some other object is ``malformed``; with an audit
    log attached the rejection is written as ``<malformed>`` without reading the object's
    ``contract_id`` (an adversary's property: it used to run, and its exception escaped
    ``verify`` and ``verify_batch``, stopping the caller's step)."""
    calls = []

    class Hostile:
        @property
        def contract_id(self) -> str:
            calls.append(1)
            raise RuntimeError("presented by an adversary")

    class Pretender:
        contract_id = "c-0-der_0-0"   # an id the audit must not repeat as if it were one

    audit = AuditLog()
    _, ledger = _ledger(audit)
    genuine = _issue(ledger)[0]
    hostile = SignedContract(Hostile(), b"\x00" * 64, b"\x00" * 64)
    pretender = SignedContract(Pretender(), b"\x00" * 64, b"\x00" * 64)
    assert ledger.verify(hostile, 10.5) is RejectReason.MALFORMED
    _, reasons = ledger.verify_batch([hostile, pretender, genuine], 10.5)
    assert reasons == [RejectReason.MALFORMED, RejectReason.MALFORMED, None]
    assert calls == []
    rejected = [e.fields["rejections"] for e in audit.entries if e.kind == "contract_rejected"]
    assert rejected == [[{"contract_id": "<malformed>", "reason": "malformed"}],
                        [{"contract_id": "<malformed>", "reason": "malformed"}] * 2]
    assert ledger.rejected_by_reason["malformed"] == 3


@PATHS
def test_hmac_tags_are_compared_in_constant_time(present, monkeypatch) -> None:
    """Every HMAC check goes through ``hmac.compare_digest`` (the mutation ``==`` changes
    only timing, which no pass/fail test may measure; this pins the call instead): one
    comparison per tag, the agent's and the operator's, of the expected tag against the
    presented one; a forged tag is refused by that comparison."""
    from gridswarm_env.trust import identities  # the HMAC key class's module

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((bytes(a), bytes(b)))
        return real(a, b)

    registry = IdentityRegistry(FOUR_AGENTS, mode="hmac", seed=11, crypto_threads=1)
    ledger = ContractLedger(registry, rng=3)
    signed = ledger.issue(0, np.arange(2), np.full(2, 0.5), 40.0, 10.0, 11.0)
    monkeypatch.setattr(identities.hmac, "compare_digest", spy)
    assert present(ledger, signed[0], 10.0) is None
    assert sorted(compared) == sorted([(signed[0].agent_signature,) * 2,
                                       (signed[0].operator_signature,) * 2])
    compared.clear()
    forged = replace(signed[1], agent_signature=bytes(32))
    assert present(ledger, forged, 10.0) is RejectReason.BAD_AGENT_SIGNATURE
    assert compared == [(signed[1].agent_signature, bytes(32))]


@PATHS
def test_an_earlier_epochs_contract_is_a_replay_on_both_paths(present) -> None:
    """Mutation audit: the environment verifies with ``verify_batch``, whose fast path
    repeats the epoch-tag test of ``verify``; dropping it there went unnoticed. A contract
    issued before ``reset_replay_window`` (an earlier episode's) is a replay afterwards,
    even with its window still open and its id and nonce never used in the new epoch."""
    _, ledger = _ledger()
    old = _issue(ledger, 0.0, 100.0)
    ledger.reset_replay_window()
    assert ledger.replay_memory_size == 0
    assert present(ledger, old[0], 1.0) is RejectReason.REPLAYED
    assert ledger.rejected_by_reason["replayed"] == 1
    new = _issue(ledger, 0.0, 100.0)
    assert present(ledger, new[0], 1.0) is None


TRUST_MODULES = ("identities", "audit_chain", "contracts", "adversary")   # lowest first


def test_the_trust_modules_import_one_way() -> None:
    """Layout: each module of the trust package imports only modules listed before it in
    TRUST_MODULES (identities <- audit_chain <- contracts <- adversary), so no cycle."""
    import ast
    import importlib
    import pathlib

    for rank, name in enumerate(TRUST_MODULES):
        module = importlib.import_module(f"gridswarm_env.trust.{name}")
        tree = ast.parse(pathlib.Path(module.__file__).read_text(encoding="utf-8"))
        imported = {node.module.rsplit(".", 1)[1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("gridswarm_env.trust.")}
        assert imported <= set(TRUST_MODULES[:rank]), (name, imported)


def test_the_trust_package_reexports_its_modules_objects_and_holds_no_state() -> None:
    """Every name of ``gridswarm_env.trust.__all__`` is the object of the one module that
    lists it (no copy: one class, one constant), every other name the package offers is a
    module's object too (it defines nothing itself), and the crypto worker pool
    (module-level state) exists in one module only."""
    import importlib
    import types

    import gridswarm_env.trust as trust

    modules = [importlib.import_module(f"gridswarm_env.trust.{n}") for n in TRUST_MODULES]
    for name in trust.__all__:
        owners = [m for m in modules if name in getattr(m, "__all__", ())]
        assert len(owners) == 1 and getattr(owners[0], name) is getattr(trust, name), name
    for name, value in vars(trust).items():
        if name.startswith("__") or name == "annotations" or isinstance(value, types.ModuleType):
            continue
        assert any(vars(m).get(name, trust) is value for m in modules), name
    assert [m.__name__ for m in modules if "_crypto_pool" in vars(m)] == [
        "gridswarm_env.trust.identities"]
