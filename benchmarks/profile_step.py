"""Where one environment step spends its time: a per-phase breakdown and cProfile.

The phases are the named calls of ``GridSwarmEnv._step`` (DESIGN §2: kernel → bus →
clear → sign → verify → dispatch → fleet → grid → reward → observe), timed by wrapping
them on one environment instance; cProfile then lists the functions with the most own
time. The step's time is also split by the contracts it signed (a least-squares line
and the median of the steps that signed none: what the rest of the step costs without
any contract path). Only the step is measured (the heuristic policy acts outside the timers and the
profiler).

Usage::

    python -m benchmarks.profile_step [--agents 100] [--trust hmac] [--scenario price_spike]
                                      [--steps 300] [--sort tottime] [--limit 30] [--no-cprofile]
"""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_env import CryptoTimer, settle_process  # noqa: E402
from gridswarm_env.env import GridSwarmEnv  # noqa: E402
from policies import make_policy  # noqa: E402

#: the step's phases, in order (methods of GridSwarmEnv; ``part.method``: a method of the
#: environment's per-episode ``part``, e.g. its ``contract_flow``)
PHASES = ("_kernel_filter", "_publish_bids", "_maybe_broadcast_emergency", "_clear",
          "_operator_request", "_announce", "contract_flow.verify_pending",
          "contract_flow.activate_reserve", "_physics", "_settle", "_update_signals",
          "_update_feasible", "observations_array", "action_masks")


def _wrap(obj: Any, name: str, totals: dict[str, float], label: str) -> None:
    func: Callable[..., Any] = getattr(obj, name)

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t0

    setattr(obj, name, timed)


def breakdown(n_agents: int = 100, trust: str = "hmac", scenario: str = "price_spike",
              steps: int = 300, seed: int = 0) -> dict[str, Any]:
    """Mean seconds per step of each phase (plus bus calls and the signatures alone), and
    the step's time against the contracts it signed (:func:`contract_split`).

    :return: ``{"step_s": float, "phases": {name: seconds per step}, "steps": int,
        "by_contracts": contract_split(...), "phases_without_contract": {name: seconds
        per step}}`` (the last over the steps that signed no contract, with
        ``"(rest of the step)"``: their mean time less the phases, i.e. dispatch, fleet
        updates, the bus's deliveries and the step's info).
    """
    settle_process()
    env = GridSwarmEnv(scenario=scenario, n_agents=n_agents, trust=trust, seed=seed)
    env.reset(seed=seed)
    totals: dict[str, float] = defaultdict(float)
    for name in PHASES:
        if "." not in name:
            _wrap(env, name, totals, name)
    pol = make_policy("heuristic")
    crypto = CryptoTimer(env.registry)   # the registry outlives resets with the same seed
    obs = _restart(env, pol, seed)
    step_s, done = 0.0, 0
    durations: list[float] = []
    contracts: list[int] = []
    idle: dict[str, float] = defaultdict(float)   # phases of the steps without a contract
    idle_s = 0.0
    while done < steps:
        if not env.agents:
            obs = _restart(env, pol, seed)
        _instrument_episode(env, totals)
        act = pol.act(obs, env.action_masks())
        before = dict(totals)
        t0 = time.perf_counter()
        obs, _rewards, _truncated, info = env.step_arrays(act[:, 0], act[:, 1])
        took = time.perf_counter() - t0
        step_s += took
        durations.append(took)
        contracts.append(info["negotiations"])
        if not info["negotiations"]:
            idle_s += took
            for name, seconds in totals.items():
                idle[name] += seconds - before.get(name, 0.0)
        done += 1
    totals.pop("action_masks", None)   # called by the policy loop, outside the step
    totals["  sign + verify (inside _clear, verify_pending)"] = crypto.seconds
    idle.pop("action_masks", None)
    split = contract_split(contracts, durations)
    n_idle = split["steps_without_contract"]
    if n_idle:   # the indented entries (bus publishing, signatures) are parts of phases
        idle["(rest of the step)"] = idle_s - sum(v for k, v in idle.items()
                                                   if not k.startswith(" "))
    return {"step_s": step_s / steps, "steps": steps,
            "phases": {k: v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
            "by_contracts": split,
            "phases_without_contract": {k: v / n_idle for k, v in
                                        sorted(idle.items(), key=lambda kv: -kv[1])}}


def contract_split(contracts: list[int], durations_s: list[float]) -> dict[str, Any]:
    """The step's time against the contracts it signed (``info["negotiations"]``).

    A least-squares line ``t = a + b·n`` over the steps (``a``: a step that holds a round
    but signs nothing, extrapolated; ``b``: the cost of one more contract, everything it
    touches) and the median time of the steps that signed none (no market clearing,
    issuing, screening or verification at all): the floor the rest of the step sets.

    :return: ``{"steps_without_contract": int, "median_s_without_contract": float | None,
        "fit_intercept_s": float | None, "fit_s_per_contract": float | None,
        "mean_contracts": float}`` (the fit is None when every step signed as many).
    """
    n = np.asarray(contracts, dtype=float)
    t = np.asarray(durations_s, dtype=float)
    none = t[n == 0]
    fit = np.polyfit(n, t, 1) if np.unique(n).size > 1 else None
    return {"steps_without_contract": int(none.size),
            "median_s_without_contract": float(np.median(none)) if none.size else None,
            "fit_intercept_s": None if fit is None else float(fit[1]),
            "fit_s_per_contract": None if fit is None else float(fit[0]),
            "mean_contracts": float(n.mean()) if n.size else 0.0}


def _restart(env: GridSwarmEnv, pol: Any, seed: int) -> Any:
    env.reset(seed=seed)
    pol.reset(env, seed=seed)
    return env.observations_array()


def _instrument_episode(env: GridSwarmEnv, totals: dict[str, float]) -> None:
    """Time the bus calls and the phases of per-episode parts (a new bus and contract flow
    every episode) once per episode."""
    if getattr(env.bus, "_profiled", False):
        return
    _wrap(env.bus, "deliver", totals, "  bus.deliver")
    _wrap(env.bus, "publish_batch", totals, "  bus.publish_batch (in phases)")
    env.bus._profiled = True
    for name in PHASES:
        if "." in name:
            part, method = name.split(".")
            _wrap(getattr(env, part), method, totals, name)


def profile(n_agents: int = 100, trust: str = "hmac", scenario: str = "price_spike",
            steps: int = 300, sort: str = "tottime", limit: int = 30, seed: int = 0) -> str:
    """cProfile of ``steps`` steps (the step only); the printed statistics."""
    env = GridSwarmEnv(scenario=scenario, n_agents=n_agents, trust=trust, seed=seed)
    pol = make_policy("heuristic")
    obs = _restart(env, pol, seed)
    prof = cProfile.Profile()
    for _ in range(steps):
        if not env.agents:
            obs = _restart(env, pol, seed)
        act = pol.act(obs, env.action_masks())
        prof.enable()
        obs = env.step_arrays(act[:, 0], act[:, 1])[0]
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(limit)
    return out.getvalue()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the breakdown and the profile."""
    from policies.cli_checks import OneLineParser

    parser = OneLineParser(prog="python -m benchmarks.profile_step",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents (default 100)")
    parser.add_argument("--trust", default="hmac", choices=("hmac", "ed25519"),
                        help="contract signatures (default hmac)")
    parser.add_argument("--scenario", default="price_spike",
                        help="scenario stepped (default price_spike)")
    parser.add_argument("--steps", type=int, default=300,
                        help="steps profiled, over episodes as needed (default 300)")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    parser.add_argument("--limit", type=int, default=30, help="functions listed (default 30)")
    parser.add_argument("--no-cprofile", action="store_true", help="only the breakdown")
    args = parser.parse_args(argv)
    from gridswarm_env.config import MAX_AGENTS
    from gridswarm_env.scenarios import scenario_names

    if args.scenario not in scenario_names():
        parser.error(f"--scenario {args.scenario!r}: known scenarios are "
                     f"{', '.join(scenario_names())}")
    for flag, value, lo, hi in (("--agents", args.agents, 1, MAX_AGENTS),
                                ("--steps", args.steps, 1, None), ("--limit", args.limit, 1, None)):
        if value < lo or (hi is not None and value > hi):
            parser.error(f"{flag} {value}: expected an integer >= {lo}"
                         + ("" if hi is None else f" and <= {hi:,}"))
    if args.sort not in pstats.Stats.sort_arg_dict_default:
        parser.error(f"--sort {args.sort!r}: allowed pstats sort keys are "
                     f"{', '.join(sorted(pstats.Stats.sort_arg_dict_default))}")
    b = breakdown(args.agents, args.trust, args.scenario, args.steps)
    print(f"{args.agents:,} agents, {args.trust}, {args.scenario}: "
          f"{b['step_s'] * 1e6:,.0f} us/step ({args.agents / b['step_s']:,.0f} agent-steps/s)")
    for name, seconds in b["phases"].items():
        print(f"  {name:<28} {seconds * 1e6:>10,.1f} us/step  {seconds / b['step_s']:>6.1%}")
    split = b["by_contracts"]
    print(f"  contracts per step: {split['mean_contracts']:.1f} on average")
    if split["fit_s_per_contract"] is not None:
        print(f"  step time ~ {split['fit_intercept_s'] * 1e6:,.0f} us + "
              f"{split['fit_s_per_contract'] * 1e6:,.1f} us per contract (least squares)")
    if split["steps_without_contract"]:
        print(f"  steps that signed no contract: {split['steps_without_contract']:,}, median "
              f"{split['median_s_without_contract'] * 1e6:,.0f} us/step "
              f"({args.agents / split['median_s_without_contract']:,.0f} agent-steps/s); "
              "their phases:")
        for name, seconds in b["phases_without_contract"].items():
            print(f"    {name:<26} {seconds * 1e6:>10,.1f} us/step")
    if not args.no_cprofile:
        print(profile(args.agents, args.trust, args.scenario, args.steps, args.sort, args.limit))
    return b


if __name__ == "__main__":
    main()
