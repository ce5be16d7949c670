"""How much slower a step runs after the CPU spent a while on something else.

The ed25519 comparison of ``python -m benchmarks`` (time outside signing and
verification vs the whole hmac step) is confounded by the machine: Python that runs
after a few milliseconds of other work finds its caches and predictors cold. This
script shows it without any cryptography: it times the same hmac-mode step (100
agents, heuristic policy) with a busy wait of 0, 0.2, 1, 4 and 16 ms *before* each
step, the waits alternating repeat by repeat so that all see the same machine.

    python -m benchmarks.cold_cache [--agents 100] [--steps 80] [--repeats 3]

Prints, per wait, the median step time of each repeat and the best over repeats
relative to no wait. :func:`run` returns the figures.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_env import settle_process  # noqa: E402
from gridswarm_env.env import GridSwarmEnv  # noqa: E402
from policies import make_policy  # noqa: E402

WAITS_S = (0.0, 0.0002, 0.001, 0.004, 0.016)
WARMUP_STEPS = 25   # the price spike's first contracts clear after ~20 steps


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _median_step_s(env: GridSwarmEnv, wait_s: float, steps: int, seed: int) -> float:
    """Median wall time of ``steps`` steps, each preceded by a ``wait_s`` busy wait."""
    policy = make_policy("heuristic")
    times: list[float] = []
    while len(times) < steps:
        env.reset(seed=seed)
        policy.reset(env, seed=seed)
        obs = env.observations_array()
        for k in range(env.scenario.episode_steps):
            act = policy.act(obs, env.action_masks())
            if wait_s:
                _busy_wait(wait_s)
            t0 = time.perf_counter()
            obs = env.step_arrays(act[:, 0], act[:, 1])[0]
            if k >= WARMUP_STEPS:
                times.append(time.perf_counter() - t0)
            if len(times) >= steps:
                break
    return statistics.median(times)


def run(n_agents: int = 100, steps: int = 80, repeats: int = 3,
        seed: int = 0) -> dict[str, Any]:
    """Median step time per busy wait, each repeat alternating over the waits.

    :return: ``{"n_agents", "waits_ms": [...], "step_us": {wait_ms: [per repeat]},
        "best_over_no_wait": {wait_ms: ratio of the best repeats}}``.
    """
    settle_process()
    env = GridSwarmEnv(scenario="price_spike", n_agents=n_agents, trust="hmac", seed=seed)
    step_us: dict[float, list[float]] = {w * 1e3: [] for w in WAITS_S}
    for _ in range(repeats):
        for wait in WAITS_S:
            step_us[wait * 1e3].append(_median_step_s(env, wait, steps, seed) * 1e6)
    base = min(step_us[0.0])
    return {"n_agents": n_agents, "waits_ms": list(step_us), "step_us": step_us,
            "best_over_no_wait": {w: min(v) / base for w, v in step_us.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the table."""
    from policies.cli_checks import OneLineParser

    parser = OneLineParser(prog="python -m benchmarks.cold_cache",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents (default 100)")
    parser.add_argument("--steps", type=int, default=80, help="timed steps per repeat (default 80)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats per busy-wait length; the best is kept (default 3)")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--agents, --steps and --repeats must be >= 1")
    r = run(args.agents, args.steps, args.repeats)
    print(f"hmac step at {r['n_agents']} agents after a busy wait (median per repeat, µs)")
    for wait, values in r["step_us"].items():
        cells = " ".join(f"{v:8.0f}" for v in values)
        print(f"  wait {wait:6.1f} ms: {cells}   best {r['best_over_no_wait'][wait]:.2f}x "
              f"the no-wait step")
    return r


if __name__ == "__main__":
    main()
