"""Benchmark: IATP contract pipeline against the raw signature bound (DESIGN.md section 10).

Pipeline = ``ContractLedger.issue`` (contract construction, canonical encoding,
nonces, agent signature, operator countersignature, counters) followed by
``ContractLedger.verify_batch`` (decoding checks, both signature verifications,
window, replay memory, counters), in rounds of ``n_agents`` awards.

Raw bound = exactly 2 signs + 2 verifies per contract on the same canonical bytes
with the same keys, nothing else: for ``"ed25519"`` the library the registry uses
(libsodium through PyNaCl's bindings, called directly; ``cryptography`` when it is the
registry's backend), with ``cryptography``'s (OpenSSL) bound reported beside it;
for ``"hmac"`` both the stdlib ``hmac.digest`` (+ ``hmac.compare_digest``) bound
and the bound of the precomputed-pad HMAC the registry uses. Every verification
recomputes the signatures with the keys.

    python -m benchmarks.bench_trust [--quick] [--agents N]

The pipeline and the raw bounds are interleaved round by round on the same
bytes; rates are medians over rounds and the ratio is the median per-round ratio,
so load from other processes affects both sides alike. The comparison uses one
signing thread on both sides (``crypto_threads=1``); the default registry, which
spreads each batch over two threads with libsodium, is measured too and reported
against the same one-thread bound. Prints a table; :func:`run` returns the figures.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gridswarm_env.trust import (
    AuditLog,
    ContractLedger,
    IdentityRegistry,
    _HmacSha256Key,
    derive_key_bytes,
)

SEED = 0


Raw = Callable[[list[tuple[int, bytes]]], None]


def _raw_sign_verify(signers: list[Callable], verifiers: list[Callable]) -> Raw:
    """2 signs (agent, operator) + 2 verifies per message; the operator is last."""
    op_sign, op_verify = signers[-1], verifiers[-1]

    def raw(messages: list[tuple[int, bytes]]) -> None:
        for i, m in messages:
            s1 = signers[i](m)
            s2 = op_sign(m)
            verifiers[i](s1, m)
            op_verify(s2, m)

    return raw


def _raw_ed25519_sodium(registry: IdentityRegistry) -> Raw:
    """The raw bound with libsodium's Ed25519 (PyNaCl bindings, no wrapper) and the
    registry's (derived) keys."""
    from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair

    pairs = [crypto_sign_seed_keypair(derive_key_bytes(SEED, a, "ed25519"))
             for a in registry.identities]
    signers = [lambda m, sk=sk: crypto_sign(m, sk)[:64] for _, sk in pairs]
    verifiers = [lambda sig, m, pk=pk: crypto_sign_open(sig + m, pk) for pk, _ in pairs]
    return _raw_sign_verify(signers, verifiers)


def _raw_ed25519(registry: IdentityRegistry) -> Raw:
    """The raw bound with ``cryptography`` Ed25519 and the registry's (derived) keys."""
    keys = [
        Ed25519PrivateKey.from_private_bytes(derive_key_bytes(SEED, a, "ed25519"))
        for a in registry.identities
    ]
    return _raw_sign_verify([k.sign for k in keys], [k.public_key().verify for k in keys])


def _raw_hmac_precomputed(registry: IdentityRegistry) -> Raw:
    """The raw bound with the registry's precomputed-pad HMAC-SHA256."""
    keys = [_HmacSha256Key(derive_key_bytes(SEED, a, "hmac")) for a in registry.identities]
    return _raw_sign_verify([k.sign for k in keys], [k.verify for k in keys])


def _raw_hmac_stdlib(registry: IdentityRegistry) -> Raw:
    """2 ``hmac.digest`` tags + 2 recomputed-and-compared tags per message."""
    keys = [derive_key_bytes(SEED, a, "hmac") for a in registry.identities]
    op_key = keys[-1]
    digest, compare = hmac.digest, hmac.compare_digest

    def raw(messages: list[tuple[int, bytes]]) -> None:
        for i, m in messages:
            s1 = digest(keys[i], m, "sha256")
            s2 = digest(op_key, m, "sha256")
            if not (
                compare(digest(keys[i], m, "sha256"), s1)
                and compare(digest(op_key, m, "sha256"), s2)
            ):
                raise RuntimeError("hmac mismatch")

    return raw


def _measure(
    registry: IdentityRegistry,
    n_rounds: int,
    raws: dict[str, Raw],
) -> dict[str, float]:
    """Interleave, round by round, the pipeline, the pipeline with a head-only audit
    log and each raw bound on that round's canonical bytes; return median seconds
    per round of each and the median per-round ratio raw/pipeline (robust to load
    from other processes, which hits all of them alike)."""
    n = len(registry.agent_ids)
    plain = ContractLedger(registry, rng=SEED)
    audited = ContractLedger(registry, rng=SEED, audit=AuditLog(keep_entries=False))
    agents = np.arange(n)
    rng = np.random.default_rng(SEED)
    power = rng.uniform(-1.0, 1.0, n)
    price = rng.uniform(20.0, 200.0, n)
    expected = list(registry.agent_ids)
    perf = time.perf_counter
    times: dict[str, list[float]] = {
        "pipeline": [], "audit": [], **{k: [] for k in raws}
    }

    def pipeline(ledger: ContractLedger, r: int) -> tuple[float, list[tuple[int, bytes]]]:
        t0 = perf()
        signed = ledger.issue(r, agents, power, price, float(r), r + 1.0)
        valid, _ = ledger.verify_batch(signed, float(r), expected)
        elapsed = perf() - t0
        if not valid.all():
            raise RuntimeError("benchmark contracts must all verify")
        return elapsed, [(i, s.contract.canonical_bytes()) for i, s in enumerate(signed)]

    for r in range(n_rounds):
        elapsed, messages = pipeline(plain, r)
        times["pipeline"].append(elapsed)
        times["audit"].append(pipeline(audited, r)[0])
        for name, raw in raws.items():
            t0 = perf()
            raw(messages)
            times[name].append(perf() - t0)
    pipe = np.asarray(times["pipeline"])
    out = {f"{k}_s_per_round": float(np.median(v)) for k, v in times.items() if v}
    for name in raws:
        out[f"{name}_ratio"] = float(np.median(np.asarray(times[name]) / pipe))
    return out


def run(quick: bool = False, n_agents: int = 100) -> dict[str, Any]:
    """Measure both trust modes; return contracts/s figures and ratios.

    :param quick: fewer rounds (a few seconds in total).
    :param n_agents: agents per round (one contract each).
    :return: ``pipeline_contracts_per_s``, ``raw_bound_contracts_per_s``, ``ratio``
        (Ed25519 in one thread, with the registry's ``ed25519_backend``; the default
        threaded pipeline as ``pipeline_threaded_contracts_per_s`` with
        ``threaded_over_raw_bound``, its rate over the one-thread bound
        ``threaded_raw_bound_contracts_per_s`` measured beside it, and
        ``crypto_threads``; the OpenSSL bound as
        ``openssl_raw_bound_contracts_per_s``), ``hmac_pipeline_contracts_per_s``, ``hmac_raw_bound_contracts_per_s``
        (stdlib ``hmac.digest``), ``hmac_ratio``, the precomputed-pad HMAC bound and
        ratio, pipeline rates with a head-only audit log and the registry build time.
    """
    ed_rounds, hmac_rounds = (12, 60) if quick else (80, 600)
    agents = [f"der_{i}" for i in range(n_agents)]
    out: dict[str, Any] = {"n_agents": float(n_agents)}

    t0 = time.perf_counter()
    # one signing thread: the pipeline against the one-thread raw bound
    ed = IdentityRegistry(agents, mode="ed25519", seed=SEED, crypto_threads=1)
    out["ed25519_registry_build_ms_per_identity"] = (time.perf_counter() - t0) * 1e3 / len(ed)
    t0 = time.perf_counter()
    hm = IdentityRegistry(agents, mode="hmac", seed=SEED)
    out["hmac_registry_build_ms_per_identity"] = (time.perf_counter() - t0) * 1e3 / len(hm)

    sodium = ed.ed25519_backend == "libsodium"
    raws = {"raw": _raw_ed25519_sodium(ed) if sodium else _raw_ed25519(ed)}
    if sodium:
        raws["openssl"] = _raw_ed25519(ed)
    m = _measure(ed, ed_rounds, raws)
    out["ed25519_backend"] = ed.ed25519_backend
    out["pipeline_contracts_per_s"] = n_agents / m["pipeline_s_per_round"]
    out["pipeline_with_audit_contracts_per_s"] = n_agents / m["audit_s_per_round"]
    out["raw_bound_contracts_per_s"] = n_agents / m["raw_s_per_round"]
    out["ratio"] = m["raw_ratio"]
    # the bound with cryptography's OpenSSL Ed25519 (the backend before libsodium)
    out["openssl_raw_bound_contracts_per_s"] = n_agents / m[
        "openssl_s_per_round" if sodium else "raw_s_per_round"]
    # the default registry (EnvConfig.crypto_threads=None): batches spread over threads
    threaded = IdentityRegistry(agents, mode="ed25519", seed=SEED)
    out["crypto_threads"] = threaded.crypto_threads
    if threaded.crypto_threads > 1:
        m = _measure(threaded, ed_rounds, {"raw": raws["raw"]})
        out["pipeline_threaded_contracts_per_s"] = n_agents / m["pipeline_s_per_round"]
        # the one-thread bound re-measured in this pass, round by round beside it
        out["threaded_raw_bound_contracts_per_s"] = n_agents / m["raw_s_per_round"]
        out["threaded_over_raw_bound"] = m["raw_ratio"]

    m = _measure(hm, hmac_rounds, {"raw": _raw_hmac_stdlib(hm), "pre": _raw_hmac_precomputed(hm)})
    out["hmac_pipeline_contracts_per_s"] = n_agents / m["pipeline_s_per_round"]
    out["hmac_pipeline_with_audit_contracts_per_s"] = n_agents / m["audit_s_per_round"]
    out["hmac_raw_bound_contracts_per_s"] = n_agents / m["raw_s_per_round"]
    out["hmac_ratio"] = m["raw_ratio"]
    out["hmac_precomputed_raw_bound_contracts_per_s"] = n_agents / m["pre_s_per_round"]
    out["hmac_precomputed_ratio"] = m["pre_ratio"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the table.

    :param argv: arguments (default ``sys.argv[1:]``).
    :return: the figures of :func:`run`.
    """
    from gridswarm_env.config import MAX_AGENTS
    from policies.cli_checks import OneLineParser, int_flag_type

    parser = OneLineParser(prog="python -m benchmarks.bench_trust",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS), default=100, help="agents (contracts) per round")
    args = parser.parse_args(argv)
    r = run(quick=args.quick, n_agents=args.agents)
    print(
        f"IATP contract pipeline, {args.agents} agents/round ({'quick' if args.quick else 'full'} run)"
    )
    print(f"{'mode':<10}{'pipeline/s':>14}{'+audit/s':>12}{'raw bound/s':>14}{'ratio':>8}")
    print(
        f"{'ed25519':<10}{r['pipeline_contracts_per_s']:>14,.0f}{r['pipeline_with_audit_contracts_per_s']:>12,.0f}"
        f"{r['raw_bound_contracts_per_s']:>14,.0f}{r['ratio']:>8.2f}   "
        f"(raw = {r['ed25519_backend']})"
    )
    if "pipeline_threaded_contracts_per_s" in r:
        print(f"{'ed25519':<10}{r['pipeline_threaded_contracts_per_s']:>14,.0f}{'':>12}"
              f"{r['threaded_raw_bound_contracts_per_s']:>14,.0f}"
              f"{r['threaded_over_raw_bound']:>8.2f}   ({r['crypto_threads']} "
              "crypto threads, the default, against the one-thread bound)")
    if r["ed25519_backend"] != "cryptography":
        print(f"{'ed25519':<10}{'':>14}{'':>12}{r['openssl_raw_bound_contracts_per_s']:>14,.0f}"
              f"{'':>8}   (raw = cryptography / OpenSSL, for reference)")
    print(
        f"{'hmac':<10}{r['hmac_pipeline_contracts_per_s']:>14,.0f}{r['hmac_pipeline_with_audit_contracts_per_s']:>12,.0f}"
        f"{r['hmac_raw_bound_contracts_per_s']:>14,.0f}{r['hmac_ratio']:>8.2f}   (stdlib hmac.digest: a reference, not a bound)"
    )
    print(
        f"{'hmac':<10}{'':>14}{'':>12}{r['hmac_precomputed_raw_bound_contracts_per_s']:>14,.0f}"
        f"{r['hmac_precomputed_ratio']:>8.2f}   (raw = precomputed-pad HMAC, as the registry)"
    )
    print(
        f"registry build: ed25519 {r['ed25519_registry_build_ms_per_identity']:.3f} ms/identity, "
        f"hmac {r['hmac_registry_build_ms_per_identity']:.3f} ms/identity"
    )
    target = "meets" if r["ratio"] >= 0.8 else "MISSES"
    print(f"ed25519 pipeline at {r['ratio']:.0%} of the raw bound ({target} the 80 % target)")
    return r


if __name__ == "__main__":
    main()
