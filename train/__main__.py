"""``python -m train``: train the shared MaskablePPO policy (a thin layer over :func:`train.train`).

Examples::

    python -m train --scenario all --timesteps 2000000 --seed 0
    python -m train --resume runs/all_s0_20250101-120000/checkpoints/model_500000_steps.zip
    python -m train --bc-teacher heuristic --bc-timesteps 200000 --timesteps 1000000

Bad arguments print one readable line on stderr and exit with status 2 (no
traceback); Ctrl-C saves the model and exits with status 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from gridswarm_env.config import TRUST_MODES
from gridswarm_env.scenarios import scenario_names
from train.config import REWARD_MODES, TEACHERS, TrainConfig

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (flags map one to one onto :class:`TrainConfig`)."""
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train one MaskablePPO policy shared by every DER agent of gridswarm. "
                    "Timesteps count agent-steps.")
    a = p.add_argument
    a("--scenario", default=DEFAULTS.scenario, choices=("all", *scenario_names()),
      help="scenario, or 'all' to mix them across episodes (default: %(default)s)")
    a("--timesteps", type=int, default=DEFAULTS.total_timesteps,
      help="agent-steps to train in this run (default: %(default)s)")
    a("--logdir", default=DEFAULTS.logdir, help="parent of run directories (default: %(default)s)")
    a("--out", default=None, help="model file to write (default: <logdir>/<run>/model.zip)")
    a("--resume", default=None, metavar="PATH", help="continue training a saved model")
    a("--seed", type=int, default=DEFAULTS.seed, help="random seed (default: %(default)s)")
    a("--agents", type=int, default=DEFAULTS.n_agents, help="agents per env (default: %(default)s)")
    a("--envs", type=int, default=DEFAULTS.n_envs, help="env copies stacked (default: %(default)s)")
    a("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, metavar="N",
      help="checkpoint every N agent-steps, 0 = never (default: %(default)s)")
    a("--trust", default=DEFAULTS.trust, choices=TRUST_MODES,
      help="contract signatures (default: %(default)s, fast)")
    a("--reward", default=DEFAULTS.reward, choices=REWARD_MODES,
      help="per-agent env reward, or plus each agent's averted value of lost load "
           "(default: %(default)s)")
    a("--marginal-weight", type=float, default=DEFAULTS.marginal_weight,
      help="weight of the term of --reward marginal (default: %(default)s)")
    a("--reward-scale", type=float, default=DEFAULTS.reward_scale,
      help="multiplier of the rewards the learner sees (default: %(default)s)")
    a("--reward-clip", type=float, default=DEFAULTS.reward_clip,
      help="clip of the scaled rewards, 0 = none (default: %(default)s)")
    a("--lr", type=float, default=DEFAULTS.learning_rate, help="PPO learning rate")
    a("--n-steps", type=int, default=DEFAULTS.n_steps, help="rollout steps per agent slot")
    a("--batch-size", type=int, default=DEFAULTS.batch_size, help="PPO minibatch size")
    a("--n-epochs", type=int, default=DEFAULTS.n_epochs, help="PPO epochs per rollout")
    a("--gamma", type=float, default=DEFAULTS.gamma, help="discount per 1 s step")
    a("--ent-coef", type=float, default=DEFAULTS.ent_coef, help="entropy bonus")
    a("--clip-range", type=float, default=DEFAULTS.clip_range, help="PPO clip range")
    a("--target-kl", type=float, default=None, help="early-stop an update past 1.5x this KL")
    a("--net-arch", default=",".join(map(str, DEFAULTS.net_arch)),
      help="hidden layer sizes, comma separated (default: %(default)s)")
    a("--bc-teacher", default=None, choices=TEACHERS,
      help="behaviour-clone this policy before PPO")
    a("--bc-timesteps", type=int, default=200_000, help="agent-steps of demonstrations")
    a("--bc-epochs", type=int, default=DEFAULTS.bc_epochs, help="passes over demonstrations")
    a("--bc-lr", type=float, default=DEFAULTS.bc_learning_rate, help="cloning learning rate")
    a("--run-name", default=None, help="run directory name (default: <scenario>_s<seed>_<time>)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--verbose", type=int, default=DEFAULTS.verbose, help="SB3 verbosity (0, 1)")
    return p


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> TrainConfig:
    """Build the validated :class:`TrainConfig` (raises ``ValueError`` on bad values)."""
    try:
        arch = tuple(int(x) for x in args.net_arch.split(","))
    except ValueError:
        raise ValueError(f"--net-arch {args.net_arch!r}: expected sizes like 64,64") from None
    return TrainConfig(
        scenario=args.scenario, total_timesteps=args.timesteps, n_agents=args.agents,
        n_envs=args.envs, trust=args.trust, seed=args.seed, logdir=args.logdir, out=args.out,
        resume=args.resume, checkpoint_every=args.checkpoint_every, reward=args.reward,
        marginal_weight=args.marginal_weight, reward_scale=args.reward_scale,
        reward_clip=args.reward_clip or None, learning_rate=args.lr, n_steps=args.n_steps,
        batch_size=args.batch_size, n_epochs=args.n_epochs, gamma=args.gamma,
        ent_coef=args.ent_coef, clip_range=args.clip_range, target_kl=args.target_kl,
        net_arch=arch, bc_teacher=args.bc_teacher,
        bc_timesteps=args.bc_timesteps if args.bc_teacher else 0, bc_epochs=args.bc_epochs,
        bc_learning_rate=args.bc_lr,
        run_name=args.run_name, progress_bar=not args.no_progress, verbose=args.verbose,
        command=shlex.join(["python", "-m", "train", *argv]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, argv)
        from train.trainer import train  # torch loads only for a valid command

        path = train(config)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt as exc:
        print(f"\n{exc or 'interrupted'}", file=sys.stderr)
        return 130
    print(f"model saved to {path} (training record: {path.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
