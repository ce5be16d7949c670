"""Whole episodes replay exactly as recorded (``tests/golden.py``): speed work may not
change a single bit of what users observe, earn or audit.

On the machine/NumPy/Python the file was recorded with, every step's SHA-256 must match;
elsewhere (different SIMD paths may change the last bit of a sum) the per-step float
summaries and KPIs must agree to 1e-9 relative.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.golden import CASES, PATH, fingerprint, run_case

RECORDED = json.loads(PATH.read_text())
EXACT = RECORDED["fingerprint"] == fingerprint()


def _first_difference(got: list[str], want: list[str]) -> str:
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"first differing step: {i}"
    return f"lengths {len(got)} vs {len(want)}"


@pytest.mark.parametrize("name, kwargs, policy, seed", CASES, ids=[c[0] for c in CASES])
def test_episode_replays_as_recorded(name, kwargs, policy, seed) -> None:
    want = RECORDED["cases"][name]
    got = run_case(kwargs, policy, seed)
    if EXACT:
        assert got["step_hashes"] == want["step_hashes"], _first_difference(
            got["step_hashes"], want["step_hashes"])
        assert got["audit_head"] == want["audit_head"]
        assert got["metrics"] == want["metrics"]
    else:
        np.testing.assert_allclose(got["summaries"], want["summaries"], rtol=1e-9, atol=1e-9)
        for key, value in want["metrics"].items():
            if isinstance(value, float):
                assert got["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            elif isinstance(value, int):
                assert got["metrics"][key] == value, key


def test_ed25519_episode_is_the_same_with_one_or_two_crypto_threads(monkeypatch) -> None:
    # EnvConfig.crypto_threads spreads signing and verification over threads; what users
    # observe, earn and audit may not depend on it
    from gridswarm_env.config import EnvConfig
    from gridswarm_env.trust import identities  # where the parallel batches look it up

    spread = []   # batches big enough to go to the worker thread
    real_spread = identities._spread
    monkeypatch.setattr(identities, "_spread", lambda *a: (spread.append(a[1]), real_spread(*a))[1])
    kwargs = {"scenario": "price_spike", "n_agents": 100, "trust": "ed25519"}
    runs = [run_case({**kwargs, "config": EnvConfig(crypto_threads=k)}, "heuristic", 0)
            for k in (1, 2)]
    assert runs[0]["step_hashes"] == runs[1]["step_hashes"]
    assert runs[0]["audit_head"] == runs[1]["audit_head"]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert len(spread) >= 100 and max(spread) >= 20, spread
