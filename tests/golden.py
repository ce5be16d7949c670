"""Golden trajectories: a fingerprint of whole episodes, to keep speed work bit-exact.

``python -m tests.golden`` (re)writes ``tests/data/golden_trajectories.json`` from the
current code; ``tests/test_golden.py`` replays the same episodes and compares. Each case
records, per step, a SHA-256 over everything a user sees (observations, rewards, masks,
the step info) plus a few float summaries, and at the end the KPIs and the audit head.

Run it only when a change is *meant* to alter trajectories, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridswarm_env.env import GridSwarmEnv  # noqa: E402
from gridswarm_env.metrics import json_safe  # noqa: E402
from policies import make_policy  # noqa: E402

PATH = Path(__file__).parent / "data" / "golden_trajectories.json"

#: (name, env kwargs, policy, seed)
CASES: tuple[tuple[str, dict[str, Any], str, int], ...] = (
    ("price_spike-hmac-heuristic", {"scenario": "price_spike", "n_agents": 100,
                                    "trust": "hmac"}, "heuristic", 0),
    ("price_spike-hmac-random", {"scenario": "price_spike", "n_agents": 60,
                                 "trust": "hmac"}, "random", 3),
    ("solar_surplus-hmac-heuristic", {"scenario": "solar_surplus", "n_agents": 100,
                                      "trust": "hmac"}, "heuristic", 1),
    ("emergency-hmac-heuristic", {"scenario": "emergency", "n_agents": 100,
                                  "trust": "hmac"}, "heuristic", 2),
    ("emergency-ed25519-random", {"scenario": "emergency", "n_agents": 40,
                                  "trust": "ed25519"}, "random", 4),
    ("solar_surplus-shadow-random", {"scenario": "solar_surplus", "n_agents": 50,
                                     "trust": "hmac", "shadow": True}, "random", 5),
)


def fingerprint() -> dict[str, str]:
    """Where the recorded hashes are expected to hold bit for bit."""
    return {"machine": platform.machine(), "numpy": np.__version__,
            "python": platform.python_version()}


def run_case(env_kwargs: dict[str, Any], policy_name: str, seed: int) -> dict[str, Any]:
    env = GridSwarmEnv(**env_kwargs)
    env.reset(seed=seed)
    policy = make_policy(policy_name, seed=seed)
    policy.reset(env, seed=seed)
    obs = env.observations_array()
    step_hashes, summaries = [], []
    while env.agents:
        masks = env.action_masks()
        acts = policy.act(obs, masks)
        obs, rewards, _trunc, info = env.step_arrays(acts[:, 0], acts[:, 1])
        h = hashlib.sha256()
        for arr in (obs, rewards, env.action_masks(), env.freq_trace_hz):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(json_safe(info), sort_keys=True).encode())
        step_hashes.append(h.hexdigest()[:16])
        summaries.append([float(np.sum(obs, dtype=np.float64)), float(np.sum(rewards)),
                          float(info["freq_hz"])])
    metrics = json_safe(env.episode_metrics())
    whole = hashlib.sha256("".join(step_hashes).encode()).hexdigest()
    return {"trajectory_sha256": whole, "step_hashes": step_hashes,
            "summaries": summaries, "metrics": metrics,
            "audit_head": env.audit_log.head_hash}


def record() -> dict[str, Any]:
    out: dict[str, Any] = {"fingerprint": fingerprint(), "cases": {}}
    for name, kwargs, pol, seed in CASES:
        out["cases"][name] = run_case(kwargs, pol, seed)
    return out


if __name__ == "__main__":
    data = record()
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"wrote {PATH} ({len(data['cases'])} cases)")
