"""MaskablePPO training throughput through the SB3 adapter (agent-steps/s).

Builds the adapter and the model exactly as ``python -m train`` does
(:func:`train.trainer.make_venv`, :func:`train.trainer.make_model` from a
:class:`train.config.TrainConfig`: 100 agents, one environment copy, hmac trust, shared
64x64 MLP, 64 steps per rollout) and times ``model.learn`` over a few rollouts.
``agent_steps_per_s`` = agent-steps learned / wall time, rollouts *and* PPO updates
included; ``env_share`` is the part of that time spent in the adapter's ``step_wait``
(the environments). Skipped, with a note, when ``train`` or sb3-contrib is unavailable.

Usage::

    python -m benchmarks.bench_train [--quick] [--rollouts N] [--torch-threads N]

``--torch-threads 2`` times what ``python -m train --torch-threads 2`` runs (other weights
than one thread, 1.2-1.3x the rate on 2 free cores); the default, 1, is what the
shipped models were trained with.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(quick: bool = False, rollouts: int | None = None, n_agents: int = 100,
        torch_threads: int = 1) -> dict[str, Any]:
    """Time ``model.learn`` for ``rollouts`` rollouts.

    :param quick: 2 rollouts instead of 8.
    :param rollouts: override the number of rollouts.
    :param n_agents: agents per environment copy.
    :param torch_threads: torch intra-op threads (``TrainConfig.torch_threads``); the
        process's setting is restored afterwards.
    :return: ``{"agent_steps_per_s", "timesteps", "wall_s", "env_share", "n_agents",
        "n_steps", "torch_threads", "load_average"}`` or ``{"skipped": reason}``.
    """
    try:
        from stable_baselines3.common.logger import Logger

        from policies.learned import unvalidated_distributions, using_torch_threads
        from train.config import TrainConfig
        from train.trainer import make_model, make_venv
    except ImportError as exc:  # pragma: no cover - depends on the installation
        return {"skipped": f"train/ or its dependencies are unavailable: {exc}"}
    n_rollouts = rollouts if rollouts is not None else (2 if quick else 8)
    config = TrainConfig(scenario="price_spike", n_agents=n_agents, n_envs=1, trust="hmac",
                         total_timesteps=1, progress_bar=False, verbose=0,
                         torch_threads=torch_threads)
    venv = make_venv(config)
    model = make_model(config, venv)
    # a logger with no output: SB3's default one makes an empty tempdir/SB3-<time> folder
    # per learn() call, left behind
    model.set_logger(Logger(folder=None, output_formats=[]))
    env_seconds = [0.0]
    step_wait = venv.step_wait

    def timed_step_wait() -> Any:
        t0 = time.perf_counter()
        try:
            return step_wait()
        finally:
            env_seconds[0] += time.perf_counter() - t0

    venv.step_wait = timed_step_wait   # instance attribute: only this adapter is timed
    timesteps = n_rollouts * config.n_steps * venv.num_envs
    # as train.trainer.train learns: its thread count, torch's distribution checks off
    with using_torch_threads(config.torch_threads), unvalidated_distributions():
        t0 = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        wall = time.perf_counter() - t0
    venv.close()
    return {"agent_steps_per_s": model.num_timesteps / wall, "timesteps": model.num_timesteps,
            "wall_s": wall, "env_share": env_seconds[0] / wall, "n_agents": n_agents,
            "n_steps": config.n_steps, "rollouts": n_rollouts,
            "torch_threads": config.torch_threads, "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the figure."""
    from policies.cli_checks import OneLineParser, int_flag_type
    from policies.learned import MAX_TORCH_THREADS

    parser = OneLineParser(prog="python -m benchmarks.bench_train",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rollouts instead of 8")
    parser.add_argument("--rollouts", type=int_flag_type("--rollouts", 1), help="number of rollouts to time")
    parser.add_argument("--torch-threads", type=int_flag_type("--torch-threads", 1, MAX_TORCH_THREADS),
                        default=1, help="torch intra-op threads, as python -m train "
                        "--torch-threads (default: %(default)s)")
    args = parser.parse_args(argv)
    r = run(args.quick, args.rollouts, torch_threads=args.torch_threads)
    if "skipped" in r:
        print(f"train benchmark skipped: {r['skipped']}")
    else:
        print(f"MaskablePPO via train.adapter, {r['n_agents']} agents: "
              f"{r['agent_steps_per_s']:,.0f} agent-steps/s ({r['timesteps']:,} agent-steps in "
              f"{r['wall_s']:.1f} s; environment {r['env_share']:.0%} of the time; "
              f"{r['torch_threads']} torch thread{'s' if r['torch_threads'] > 1 else ''}; "
              f"load {r['load_average']:.2f})")
    return r


if __name__ == "__main__":
    main()
