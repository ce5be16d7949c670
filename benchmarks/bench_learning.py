"""Time for MaskablePPO to beat the heuristic on ``system_cost`` (DESIGN §10).

Trains exactly as ``python -m train`` does (:func:`train.trainer.train` with a
:class:`train.config.TrainConfig`: 100 agents, one environment copy, hmac trust, the
shipped PPO model's (``gridswarm_ppo.zip``) PPO settings; from a random network, or with
``--bc`` after cloning the heuristic as that model was) and pauses to evaluate the model being trained when
training starts and at the first rollout start after every ``--eval-every`` agent-steps
(the network as last updated; a rollout is 6 400 agent-steps, so the points fall on
multiples of it), with :class:`train.callbacks.SystemCostEvaluation` (what
``python -m train --eval-every`` uses): greedy actions on held-out evaluation seeds,
through :func:`policies.rollout.run_episode` like ``evaluate.py``, leaving the
training's random generators alone. The heuristic is scored on the same seeds first.
The run stops at the first evaluation whose mean ``system_cost`` is at least ``--margin`` below the
heuristic's:

    beaten  <=>  mean_cost(learned) <= (1 - margin) * mean_cost(heuristic)

(for ``--scenario all``, the costs are summed over the scenarios' per-seed means).

Reported: ``train_s_to_beat`` = wall time from the start of the job (environment and
model built, demonstrations collected, cloning, PPO) to that evaluation, *excluding*
the evaluations themselves; ``agent_steps_to_beat`` = PPO agent-steps by then (the
cloning's demonstration agent-steps are reported separately, ``bc_agent_steps``); the
learning curve (cost at every evaluation). A run that does not beat the heuristic
within ``--timesteps`` says so (``beaten: false``) and reports the best cost reached.

The cost at the stop is measured on the seeds that decide the stop, so it is
optimistic (the run stops at the first evaluation that happens to look good on them).
After training, the final model (the one saved: at the stop, or at the budget's end)
and the heuristic are therefore also measured on ``--heldout-seeds`` K other seeds,
``HELDOUT_SEED_BASE + k`` = 0 … K − 1 (``evaluate.py``'s default seeds): disjoint from
the stopping seeds (:data:`train.config.EVAL_SEED_BASE` + k = 10 000 + k) and, like
them, evaluation seeds that training never plays (:data:`policies.rollout.EVAL_SEEDS`).
Both figures are reported (``final_stopping_system_cost`` and ``heldout_system_cost``,
each with its ratio to the heuristic on the same seeds); the held-out episodes are timed
(``heldout_eval_s``) and left out of ``train_s``.

The reward the learner maximizes is each DER's profit, not ``system_cost``
(docs/training.md, "The reward is each DER's profit"): a learner can raise its reward
while the system cost rises: with ``--scenario all`` neither reward beat the heuristic
by 1 % within 1.5 M agent-steps (docs/training.md). Scenario ``solar_surplus`` is the default because it
leaves room (the heuristic costs 1.32x the perfect-foresight oracle there); in
``price_spike`` the heuristic is within 7 % of the oracle and the shipped learned policy
only matches it.

Usage::

    python -m benchmarks.bench_learning [--scenario S] [--timesteps N] [--eval-every N]
        [--eval-seeds K] [--heldout-seeds K] [--margin F] [--bc] [--bc-timesteps N]
        [--bc-epochs N] [--reward env|marginal] [--seed N] [--randomize] [--quick]
        [--json FILE] [--overwrite]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import add_json_arguments, check_json_path, write_json  # noqa: E402

#: first held-out seed (``evaluate.py``'s default ``--seed``): held-out seeds
#: ``HELDOUT_SEED_BASE + k`` stay below the stopping seeds (``EVAL_SEED_BASE`` + k)
HELDOUT_SEED_BASE = 0


#: the cloning's defaults (with --bc): demonstration agent-steps and passes over them
BC_TIMESTEPS, BC_EPOCHS = 200_000, 10


def run(scenario: str = "solar_surplus", timesteps: int = 1_000_000,
        eval_every: int = 100_000, eval_seeds: int = 3, margin: float = 0.01,
        bc: bool = False, bc_timesteps: int = BC_TIMESTEPS, bc_epochs: int = BC_EPOCHS,
        seed: int = 0, n_agents: int = 100, quick: bool = False,
        reward: str = "env", heldout_seeds: int = 3,
        randomize: bool = False) -> dict[str, Any]:
    """Train until the learned policy beats the heuristic or ``timesteps`` run out.

    :param scenario: training and evaluation scenario, or ``"all"``.
    :param timesteps: PPO agent-steps budget (after cloning).
    :param eval_every: PPO agent-steps between evaluations (one also right after cloning).
    :param eval_seeds: evaluation episodes per scenario (seeds ``EVAL_SEED_BASE + k``).
    :param margin: relative improvement over the heuristic that counts as beating it.
    :param bc: clone the heuristic first (its time counts), as the shipped PPO model was made;
        default: PPO from a random network.
    :param bc_timesteps: demonstration agent-steps for the cloning.
    :param bc_epochs: cloning passes over the demonstrations.
    :param seed: the training run's seed.
    :param n_agents: agents per environment.
    :param reward: the reward PPO learns from, ``TrainConfig.reward``: ``"env"`` (each
        DER's profit) or ``"marginal"`` (plus its averted value of lost load).
    :param heldout_seeds: held-out episodes per scenario for the final model and the
        heuristic (seeds ``HELDOUT_SEED_BASE + k``, 1 to ``EVAL_SEED_BASE`` = 10 000).
    :param randomize: train and evaluate on randomized scenarios (``python -m train
        --randomize``, :data:`gridswarm_env.scenarios.RANDOMIZE_PRESET`): every episode,
        the heuristic's and the held-out ones included, draws its load step and trip from
        its seed.
    :param quick: a small smoke run (50 000 PPO steps, 20 000 demonstration steps, one
        evaluation seed and one held-out seed), for checking the harness, not for the
        figure.
    :return: the figures (see the module docstring) or ``{"skipped": reason}``.
    :raises ValueError: a bad argument, before any work.
    """
    for name, value in (("timesteps", timesteps), ("eval_every", eval_every),
                        ("eval_seeds", eval_seeds), ("heldout_seeds", heldout_seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} = {value!r}: expected an integer >= 1")
    if quick:   # after the checks: a bad value given with quick is refused, not replaced
        timesteps, eval_every, eval_seeds = min(timesteps, 50_000), min(eval_every, 25_000), 1
        bc_timesteps, bc_epochs, heldout_seeds = min(bc_timesteps, 20_000), min(bc_epochs, 3), 1
    from train.config import EVAL_SEED_BASE, EVAL_SEEDS_WHY, max_eval_seeds

    if eval_seeds > max_eval_seeds():
        raise ValueError(f"eval_seeds = {eval_seeds!r}: at most {max_eval_seeds():,} "
                         f"({EVAL_SEEDS_WHY})")
    if HELDOUT_SEED_BASE + heldout_seeds > EVAL_SEED_BASE:
        raise ValueError(f"heldout_seeds = {heldout_seeds!r}: at most "
                         f"{EVAL_SEED_BASE - HELDOUT_SEED_BASE:,} (the held-out seeds "
                         f"{HELDOUT_SEED_BASE} + k must stay below the stopping seeds, "
                         f"{EVAL_SEED_BASE:,} + k)")
    if not (isinstance(margin, int | float) and math.isfinite(margin) and 0 <= margin < 1):
        raise ValueError(f"margin = {margin!r}: expected a number in [0, 1)")
    from gridswarm_env.config import check_bool

    check_bool("randomize", randomize)
    try:
        import sb3_contrib  # noqa: F401
        import torch  # noqa: F401

        from train.config import resolve_scenarios
    except ImportError as exc:  # pragma: no cover - depends on the installation
        return {"skipped": f"train/ or its dependencies are unavailable: {exc}"}
    scenarios = resolve_scenarios(scenario)
    seeds = [EVAL_SEED_BASE + k for k in range(eval_seeds)]
    heldout = [HELDOUT_SEED_BASE + k for k in range(heldout_seeds)]
    from train.errors import sigterm_as_interrupt

    # SIGTERM raises (train.errors.Terminated) for the whole run, not only inside
    # train(): Python's default ended the process during the heuristic's evaluation or
    # the held-out episodes at once, leaving the directory behind
    with sigterm_as_interrupt():
        workdir = tempfile.mkdtemp(prefix="gridswarm_bench_learning_")
        try:   # the model, its record and tensorboard files are removed in every case
            return _run(scenarios, scenario, seeds, heldout, workdir, timesteps, eval_every,
                        margin, bc, bc_timesteps, bc_epochs, seed, n_agents, reward,
                        randomize)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(scenarios: tuple[str, ...], scenario: str, seeds: list[int], heldout: list[int],
         workdir: str, timesteps: int, eval_every: int, margin: float, bc: bool,
         bc_timesteps: int, bc_epochs: int, seed: int, n_agents: int,
         reward: str, randomize: bool) -> dict[str, Any]:
    """:func:`run` inside its working directory."""
    from gridswarm_env.env import GridSwarmEnv
    from gridswarm_env.scenarios import randomized
    from policies import make_policy
    from train.callbacks import SystemCostEvaluation, mean_system_costs
    from train.config import TrainConfig
    from train.trainer import train

    config = TrainConfig(
        scenario=scenario, total_timesteps=timesteps, n_agents=n_agents, trust="hmac",
        reward=reward,
        seed=seed, logdir=workdir, out=str(Path(workdir) / "model.zip"), checkpoint_every=0,
        learning_rate=1e-4, target_kl=0.02, net_arch=(128, 128),
        bc_teacher="heuristic" if bc else None, bc_timesteps=bc_timesteps,
        bc_epochs=bc_epochs, torch_threads=1, progress_bar=False, verbose=0,
        run_name="bench_learning", randomize=randomize)
    envs = {name: GridSwarmEnv(scenario=randomized(name) if randomize else name,
                               n_agents=n_agents, trust="hmac")
            for name in scenarios}
    t_h = time.perf_counter()
    heuristic = mean_system_costs(envs, make_policy("heuristic"), seeds)
    heuristic_eval_s = time.perf_counter() - t_h
    target_cost = sum(heuristic.values())
    threshold = (1.0 - margin) * target_cost

    # its clock starts now: building the adapter and model, cloning and PPO count, its
    # own evaluations do not
    evaluation = SystemCostEvaluation(scenarios, n_agents, eval_every, len(seeds),
                                      stop_at_cost=threshold, reference=heuristic,
                                      randomize=randomize)
    model_path = train(config, callbacks=[evaluation])
    total_s = evaluation.train_s()
    curve = [{**p, "relative_to_heuristic": p["system_cost"] / target_cost
              if target_cost else None} for p in evaluation.points]
    # the final model on held-out seeds: the file train saved, loaded as evaluate.py does
    t_held = time.perf_counter()
    heldout_heuristic = mean_system_costs(envs, make_policy("heuristic"), heldout)
    heldout_final = mean_system_costs(envs, make_policy(str(model_path)), heldout)
    heldout_eval_s = time.perf_counter() - t_held
    heldout_target = sum(heldout_heuristic.values())
    heldout_cost = sum(heldout_final.values())
    # the final model is the one of the curve's last point (at the stop or at the end)
    final = curve[-1]
    # training stops at the point that beat the heuristic: the curve's last one
    found = curve[-1] if evaluation.stopped_at is not None else {}
    record = json.loads((Path(workdir) / "model.json").read_text())
    best = min(curve, key=lambda p: p["system_cost"])
    cloning = record.get("behaviour_cloning", {})
    ppo_steps = int(evaluation.num_timesteps)
    bc_done_s = curve[0]["train_s"]   # the first evaluation: when PPO starts
    ppo_s = total_s - bc_done_s
    return {
        "scenario": scenario, "n_agents": n_agents, "trust": "hmac", "seed": seed,
        "eval_seeds": seeds, "margin": margin, "bc": bc, "reward": reward,
        "randomize": randomize,
        "timesteps_budget": timesteps, "eval_every": eval_every,
        "heuristic_system_cost": target_cost, "heuristic_per_scenario": heuristic,
        "threshold_system_cost": threshold,
        "beaten": bool(found),
        "agent_steps_to_beat": found.get("agent_steps"),
        "train_s_to_beat": found.get("train_s"),
        "relative_cost_at_beat": found.get("relative_to_heuristic"),
        "best": best,
        "bc_agent_steps": cloning.get("samples", 0), "bc_s": bc_done_s,
        "ppo_agent_steps": ppo_steps,
        "train_s": round(total_s, 1),
        "eval_s": round(evaluation.eval_s + heuristic_eval_s, 1),
        # PPO rollouts and updates only (no cloning, no evaluation)
        "ppo_agent_steps_per_s": ppo_steps / ppo_s if ppo_s > 0 else None,
        "curve": curve, "torch_threads": 1, "load_average": os.getloadavg()[0],
        "command": config.command,
        # the final model on the stopping seeds (optimistic) and on held-out seeds
        "final_agent_steps": final["agent_steps"],
        "final_stopping_system_cost": final["system_cost"],
        "final_stopping_relative_to_heuristic": final["relative_to_heuristic"],
        "heldout_seeds": heldout,
        "heldout_heuristic_system_cost": heldout_target,
        "heldout_heuristic_per_scenario": heldout_heuristic,
        "heldout_system_cost": heldout_cost,
        "heldout_per_scenario": heldout_final,
        "heldout_relative_to_heuristic": heldout_cost / heldout_target
        if heldout_target else None,
        "heldout_eval_s": round(heldout_eval_s, 1),
    }


def describe(r: dict[str, Any]) -> str:
    """One paragraph for the benchmark table."""
    if "skipped" in r:
        return f"learning: skipped ({r['skipped']})"
    start = "PPO from a random network" if not r["bc"] else (
        f"cloning the heuristic ({r['bc_agent_steps']:,} agent-steps, {r['bc_s']:.0f} s) then PPO")
    if r.get("reward", "env") != "env":
        start += f" on the {r['reward']} reward"
    if r.get("randomize"):
        start += ", randomized scenarios (--randomize)"
    head = (f"learning ({r['scenario']}, {r['n_agents']} agents, {start}; heuristic "
            f"system_cost {r['heuristic_system_cost']:.2f} $ on seeds "
            f"{r['eval_seeds'][0]}..{r['eval_seeds'][-1]}): ")
    if r["beaten"]:
        text = (head + f"beat the heuristic by >= {r['margin']:.0%} after "
                f"{r['agent_steps_to_beat']:,} PPO agent-steps, {r['train_s_to_beat']:.0f} s "
                f"of training ({r['relative_cost_at_beat']:.3f}x its cost on these seeds, "
                "which decided the stop)")
    else:
        best = r["best"]
        text = (head + f"did NOT beat it by {r['margin']:.0%} within {r['ppo_agent_steps']:,} "
                f"PPO agent-steps ({r['train_s']:.0f} s); best "
                f"{best['relative_to_heuristic']:.3f}x its cost at {best['agent_steps']:,}")
    return text + "; " + heldout_text(r)


def seeds_text(seeds: list[int]) -> str:
    """``"seed 7"`` or ``"seeds 0..4"``."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]}"


def heldout_text(r: dict[str, Any]) -> str:
    """The final model on the held-out seeds, beside its cost on the stopping seeds."""
    if "heldout_system_cost" not in r:   # a result from before the held-out measurement
        return "no held-out measurement"
    return (f"the final model ({r['final_agent_steps']:,} PPO agent-steps) on held-out "
            f"{seeds_text(r['heldout_seeds'])}: {r['heldout_relative_to_heuristic']:.3f}x the "
            f"heuristic's cost ({r['heldout_system_cost']:.2f} $ vs "
            f"{r['heldout_heuristic_system_cost']:.2f} $; "
            f"{r['final_stopping_relative_to_heuristic']:.3f}x on the stopping seeds)")


def comparison_lines(r: dict[str, Any]) -> list[str]:
    """The final model's cost on the stopping seeds and on the held-out seeds, a row each."""
    rows = (("stopping", r["eval_seeds"], r["final_stopping_system_cost"],
             r["heuristic_system_cost"], r["final_stopping_relative_to_heuristic"]),
            ("held-out", r["heldout_seeds"], r["heldout_system_cost"],
             r["heldout_heuristic_system_cost"], r["heldout_relative_to_heuristic"]))
    lines = [f"  final model ({r['final_agent_steps']:,} PPO agent-steps):"]
    for label, seeds, cost, heuristic, ratio in rows:
        lines.append(f"    {label + ' ' + seeds_text(seeds) + ':':<28} system_cost {cost:9.3f} $  "
                     f"({ratio:.3f}x the heuristic's {heuristic:.3f} $)")
    return lines


def stopped_message(prog: str, exc: BaseException) -> int:
    """Print why :func:`run` stopped (Ctrl-C, SIGTERM or a failed training) in one line
    and return the exit status (130, 143 or 1)."""
    from train.errors import Terminated

    if isinstance(exc, KeyboardInterrupt):
        how, status = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
        what = f"interrupted ({how})"
    else:
        what, status = f"error: training failed ({exc})", 1
    print(f"\n{prog}: {what}: no figures written; the run's model, record and logs were in "
          "a temporary directory, removed", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: print the figure and the learning curve."""
    from policies.cli_checks import OneLineParser

    parser = OneLineParser(prog="python -m benchmarks.bench_learning",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="solar_surplus",
                        help="scenario name or 'all' (default solar_surplus)")
    parser.add_argument("--timesteps", type=int, default=1_000_000,
                        help="PPO agent-steps budget (default 1 000 000)")
    parser.add_argument("--eval-every", type=int, default=100_000,
                        help="PPO agent-steps between evaluations (default 100 000)")
    parser.add_argument("--eval-seeds", type=int, default=3,
                        help="evaluation episodes per scenario (default 3)")
    parser.add_argument("--heldout-seeds", type=int, default=3,
                        help="held-out episodes per scenario for the final model, seeds "
                             "0..K-1 (default 3)")
    parser.add_argument("--margin", type=float, default=0.01,
                        help="relative cost improvement that counts as beating (default 0.01)")
    parser.add_argument("--bc", action="store_true",
                        help="clone the heuristic before PPO (as the shipped PPO model was made)")
    # default None: given without --bc they are refused, as python -m train refuses
    # --bc-* without --bc-teacher (they were ignored without a word)
    parser.add_argument("--bc-timesteps", type=int, default=None,
                        help="agent-steps of heuristic demonstrations, with --bc (default "
                             "200 000)")
    parser.add_argument("--bc-epochs", type=int, default=None,
                        help="passes over the demonstrations, with --bc (default 10)")
    parser.add_argument("--reward", default="env", choices=("env", "marginal"),
                        help="the reward PPO learns from (as python -m train --reward)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--randomize", action="store_true",
                        help="train and evaluate on randomized scenarios (as python -m train "
                             "--randomize: every episode draws its load step and trip)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run of the harness")
    add_json_arguments(parser, "the figures")
    args = parser.parse_args(argv)
    from train.config import resolve_scenarios
    from train.errors import TrainingError

    check_json_path(parser, args.json, args.overwrite)
    for flag, value in (("--bc-timesteps", args.bc_timesteps), ("--bc-epochs", args.bc_epochs)):
        if value is not None and not args.bc:
            parser.error(f"{flag} {value}: this sets the behaviour cloning, which needs --bc; "
                         "add it or drop it")
    bc_timesteps = BC_TIMESTEPS if args.bc_timesteps is None else args.bc_timesteps
    bc_epochs = BC_EPOCHS if args.bc_epochs is None else args.bc_epochs
    try:
        resolve_scenarios(args.scenario)
        r = run(args.scenario, args.timesteps, args.eval_every, args.eval_seeds, args.margin,
                args.bc, bc_timesteps, bc_epochs, args.seed,
                quick=args.quick, reward=args.reward, heldout_seeds=args.heldout_seeds,
                randomize=args.randomize)
    except ValueError as exc:
        parser.error(str(exc))
    except (KeyboardInterrupt, TrainingError) as exc:
        # train()'s own message names the model it saved inside run()'s temporary
        # directory, removed by then: one line instead of a traceback pointing at it
        sys.exit(stopped_message(parser.prog, exc))
    print(describe(r))
    for p in r.get("curve", []):
        print(f"  {p['agent_steps']:>9,} PPO agent-steps  {p['train_s']:7.1f} s  "
              f"system_cost {p['system_cost']:9.3f} $  ({p['relative_to_heuristic']:.3f}x)")
    if "heldout_system_cost" in r:
        print("\n".join(comparison_lines(r)))
    if args.json:
        write_json(args.json, r, args.overwrite)
    return r


if __name__ == "__main__":
    main()
