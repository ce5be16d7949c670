"""Policy inference time: one ``act`` call over the whole fleet, per policy.

The observations and masks are a real episode's: ``price_spike`` played by the heuristic
(``steps`` steps at ``n_agents`` agents, hmac, seed 0), recorded once; every policy then
acts on the same recorded batches, one call per step, and the figure is the median over
repeats of the mean time per call (torch on one thread, as ``LearnedPolicy`` runs it);
the learned model's speed-up is the median of the per-repeat ratios (predict time /
direct time), which need not equal the ratio of the two medians.
The environment's own step time is :mod:`benchmarks.bench_env`'s.

Rows: ``heuristic``, ``random`` and the shipped ``learned`` model twice, alternated
repeat by repeat: greedy actions computed from the network directly (what ``act`` does,
:func:`policies.learned.greedy_actions`) and through SB3's ``model.predict`` (what it
did before). The two must give the same actions on every call, or the run stops with an
error. The oracle plans whole episodes at reset and is left out.

Usage: ``python -m benchmarks.bench_policy [--quick] [--agents N]``; ``run(quick) -> dict``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gridswarm_env  # noqa: E402
from policies import make_policy  # noqa: E402


def record_batches(n_agents: int, steps: int) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """The environment (reset, for policies' ``reset``) and ``steps`` copies of
    ``(observations, action masks)`` from a heuristic ``price_spike`` episode, seed 0."""
    env = gridswarm_env.parallel_env("price_spike", n_agents=n_agents, trust="hmac")
    raw = env.unwrapped
    heuristic = make_policy("heuristic")
    raw.reset(seed=0)
    heuristic.reset(raw, seed=0)
    batches = []
    obs = raw.observations_array()
    while raw.agents and len(batches) < steps:
        mask = raw.action_masks()
        batches.append((obs.copy(), mask.copy()))
        actions = heuristic.act(obs, mask)
        obs, *_ = raw.step_arrays(actions[:, 0], actions[:, 1])
    raw.reset(seed=0)
    return raw, batches


def mean_act_s(policy: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list]:
    """Mean seconds per ``act`` call over ``batches``, and the actions."""
    actions = []
    t0 = time.perf_counter()
    for obs, mask in batches:
        actions.append(policy.act(obs, mask))
    return (time.perf_counter() - t0) / len(batches), actions


def run(quick: bool = False, n_agents: int = 100) -> dict[str, Any]:
    """Time each policy's ``act``; ``{"n_agents", "calls", "repeats", "rows": [{"policy",
    "act_ms"}], "learned_predict_ms", "learned_direct_speedup", "same_actions",
    "load_average"}`` (``learned_direct_speedup``: the median over repeats of predict
    time / direct time, each repeat timing both)."""
    steps, repeats = (60, 3) if quick else (240, 7)
    raw, batches = record_batches(n_agents, steps)
    rows = []
    for name in ("heuristic", "random"):
        policy = make_policy(name)
        times = []
        for _ in range(repeats):
            policy.reset(raw, seed=0)
            times.append(mean_act_s(policy, batches)[0])
        rows.append({"policy": name, "act_ms": 1e3 * statistics.median(times)})
    out = {"n_agents": n_agents, "calls": len(batches), "repeats": repeats, "rows": rows,
           "load_average": os.getloadavg()[0]}
    try:
        import sb3_contrib  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        out["learned_skipped"] = (f"the train extra is not installed ({exc}): pip install "
                                  "-e '.[train]'")
        return out
    direct, predict = make_policy("learned"), make_policy("learned")
    predict.direct_greedy = False
    for p in (direct, predict):
        p.reset(raw, seed=0)
        mean_act_s(p, batches[:5])   # warm-up: torch's first calls allocate
    t_direct, t_predict, ratios = [], [], []
    for repeat in range(repeats):   # each path first in every other repeat
        if repeat % 2:
            tp, a_predict = mean_act_s(predict, batches)
            td, a_direct = mean_act_s(direct, batches)
        else:
            td, a_direct = mean_act_s(direct, batches)
            tp, a_predict = mean_act_s(predict, batches)
        if not all(np.array_equal(a, b) for a, b in zip(a_direct, a_predict, strict=True)):
            raise RuntimeError("the direct greedy path and model.predict gave different "
                               "actions: policies.learned.greedy_actions no longer matches "
                               "sb3-contrib")
        t_direct.append(td)
        t_predict.append(tp)
        ratios.append(tp / td)
    rows.append({"policy": "learned", "act_ms": 1e3 * statistics.median(t_direct)})
    out.update(learned_predict_ms=1e3 * statistics.median(t_predict),
               learned_direct_speedup=statistics.median(ratios), same_actions=True,
               load_average=os.getloadavg()[0])
    return out


def describe(r: dict[str, Any]) -> str:
    """The figures as lines of text."""
    lines = [f"policy act per call at {r['n_agents']:,} agents ({r['calls']} calls, "
             f"median of {r['repeats']} repeats; load {r['load_average']:.2f}):"]
    lines += [f"  {row['policy']:<10} {row['act_ms']:.3f} ms" for row in r["rows"]]
    if "learned_skipped" in r:
        return "\n".join([*lines, f"  learned: skipped ({r['learned_skipped']})"])
    lines.append(f"  learned through model.predict {r['learned_predict_ms']:.3f} ms: the "
                 f"direct greedy path is {r['learned_direct_speedup']:.2f}x as fast, the "
                 "same actions on every call")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the figures."""
    from gridswarm_env.config import MAX_AGENTS
    from policies.cli_checks import OneLineParser, int_flag_type

    parser = OneLineParser(prog="python -m benchmarks.bench_policy",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="60 calls x 3 repeats instead of 240 x 7")
    parser.add_argument("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS), default=100,
                        help="fleet size (default 100)")
    args = parser.parse_args(argv)
    r = run(args.quick, args.agents)
    print(describe(r))
    return r


if __name__ == "__main__":
    main()
