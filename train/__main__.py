"""``python -m train``: train the shared MaskablePPO policy (a thin layer over :func:`train.train`).

Examples::

    python -m train --scenario all --timesteps 2000000 --seed 0
    python -m train --resume runs/all_s0_20250101-120000/checkpoints/model_500000_steps.zip
    python -m train --bc-teacher heuristic --bc-timesteps 200000 --timesteps 1000000

With ``--resume`` the PPO flags you do not pass keep the checkpoint's values; those
you pass are applied (``--net-arch`` must equal the checkpoint's: the network's shape
cannot change). So do the environment and reward flags (``--scenario``,
``--randomize``/``--no-randomize``, ``--agents``, ``--envs``,
``--limits``, ``--reward``, ``--marginal-weight``, ``--reward-scale``,
``--reward-clip``), which every model saved now stores (a model that stores none, such
as the shipped ``gridswarm_ppo.zip`` and ``gridswarm_dagger.zip``, needs ``--randomize``
or ``--no-randomize``); a given reward flag that changes the
checkpoint's reward is applied with a warning on stderr (its critic learned the old
reward's values). The training record shows the values read back from the model.
The limits file is read once per run, and every saved model records the SHA-256 of
those bytes: ``--resume`` without ``--limits`` refuses (exit 2, nothing written) a
checkpoint's limits file whose bytes have changed since (:func:`check_resumed_limits`);
``--limits FILE`` trains on the file as it is now and records its hash. The same holds
for a ``--config`` file and for a scenario file, ``--scenario FILE.toml`` (read as
``evaluate.py --scenarios`` and ``demo.py --scenario`` read one; the record's
``scenario_file`` holds its path, hash, text and the scenario's fields).

Bad arguments, and outputs that cannot be written (checked before training), print
one readable line on stderr and exit with status 2 (no traceback), naming the flag;
Ctrl-C saves the unfinished model as ``<run>/<name>_interrupted.zip`` (never at
``--out``), says where, and exits with status 130 (SIGTERM, from ``kill``, ``timeout``
or a job scheduler, likewise, with status 143; before training started: nothing is
written, and the message says so; a second Ctrl-C while the model and its record are
written: what was written, and what not); a model or record that cannot be written at the end
is saved to the temporary directory instead, with one line on stderr and status 1, and
a model another run wrote at ``--out`` during this one (the same ``--out`` given twice)
is kept: without ``--overwrite`` this run's model and record take the next free name
beside it (``X-2.zip``), with one line on stderr and status 1.
An error once training has started (e.g. a diverged network whose NaN logits make
torch raise) is not a usage error: one line on stderr ("training failed at N
agent-steps ...: the error; whether the model was saved; the last checkpoint; the
training record") and status 1; the record holds it under ``"error"``, and the model
(if its weights are finite) is ``<run>/<name>_failed.zip``.

At the start, one line on stdout names the scenario, ``--config`` and ``--limits`` files
the run reads (given, or the resumed checkpoint's: path and the first 12 hex digits of
the SHA-256, as demo.py's summary names them), and notes on stderr say when
``--timesteps`` is not a whole number of
rollouts (PPO trains whole rollouts of ``--n-steps x --envs x --agents`` agent-steps,
at least one) and when the run is too short to finish an episode (then no grid KPIs
are logged). ``--eval-every`` prints one line per evaluation on stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from gridswarm_env.config import AGENT_LIMIT_WHY, MAX_AGENTS, TRUST_MODES
from gridswarm_env.scenarios import randomize_text, scenario_names
from policies.cli_checks import (
    OneLineParser,
    OutputError,
    add_config_argument,
    add_governor_deadband_argument,
    comma_items,
    input_files,
    int_flag_type,
    one_line_warnings,
)
from policies.learned import MAX_TORCH_THREADS, TORCH_THREADS_WHY
from train.config import (
    EVAL_SEEDS_WHY,
    HASHED_FILES,
    MAX_ROLLOUT,
    MAX_SEED,
    REWARD_FIELDS,
    REWARD_MODES,
    SEED_WHY,
    TEACHERS,
    TrainConfig,
    max_eval_seeds,
    names_a_file,
)

DEFAULTS = TrainConfig()
#: (flag destination, TrainConfig field) of the PPO flags: their argparse default is
#: None ("not given"), filled from the checkpoint with --resume, else from DEFAULTS.
PPO_FLAGS = (("lr", "learning_rate"), ("n_steps", "n_steps"), ("batch_size", "batch_size"),
             ("n_epochs", "n_epochs"), ("gamma", "gamma"), ("ent_coef", "ent_coef"),
             ("clip_range", "clip_range"), ("target_kl", "target_kl"),
             ("net_arch", "net_arch"))
#: --bc-timesteps when --bc-teacher is given without it (agent-steps).
BC_TIMESTEPS = 200_000
#: (flag destination, flag) of the cloning settings: allowed only with --bc-teacher.
BC_FLAGS = (("bc_timesteps", "--bc-timesteps"), ("bc_epochs", "--bc-epochs"),
            ("bc_lr", "--bc-lr"))
#: PPO fields without a flag: the checkpoint's with --resume, else DEFAULTS.
PPO_FIELDS_WITHOUT_FLAG = ("gae_lambda", "vf_coef", "max_grad_norm")


#: (flag destination, TrainConfig field) of the environment and reward flags
#: (:data:`~train.config.ENV_FIELDS`): argparse default None ("not given"), filled from
#: the checkpoint with --resume (when it stores them), else from DEFAULTS.
ENV_FLAGS = (("scenario", "scenario"), ("randomize", "randomize"),
             ("agents", "n_agents"), ("envs", "n_envs"), ("limits", "limits"),
             ("config", "env_config_file"), ("governor_deadband_hz", "governor_deadband_hz"),
             ("reward", "reward"), ("marginal_weight", "marginal_weight"),
             ("reward_scale", "reward_scale"), ("reward_clip", "reward_clip"))


#: TrainConfig field -> the flag that sets it (the fields without a flag are left out)
FIELD_FLAGS = {
    **{name: "--" + dest.replace("_", "-") for dest, name in (*PPO_FLAGS, *ENV_FLAGS)},
    "total_timesteps": "--timesteps", "n_envs": "--envs", "trust": "--trust", "seed": "--seed",
    "logdir": "--logdir", "out": "--out", "overwrite": "--overwrite", "resume": "--resume",
    "checkpoint_every": "--checkpoint-every", "eval_every": "--eval-every",
    "eval_seeds": "--eval-seeds", "bc_teacher": "--bc-teacher",
    "bc_timesteps": "--bc-timesteps", "bc_epochs": "--bc-epochs",
    "bc_learning_rate": "--bc-lr", "run_name": "--run-name", "verbose": "--verbose",
    "torch_threads": "--torch-threads",
}
_FIELD_HEAD = re.compile(r"^TrainConfig\.(\w+)(?: \(--[\w-]+\))?( = |: )")
#: field names in a message's text (only those with an underscore: "seed", "reward"... are
#: also plain words)
_FIELD_WORD = re.compile(r"(?<![\w.\-'])(" + "|".join(
    sorted((f for f in FIELD_FLAGS if "_" in f), key=len, reverse=True)) + r")(?![\w\-'(])")


#: a quoted value in a message (a ``repr`` string: a path, a name): a quote that no
#: letter precedes, up to the same quote that no letter follows (so the apostrophe of
#: "the checkpoint's" opens none)
_QUOTED = re.compile(r"""(?<!\w)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?!\w)""")
#: how a config or limits file's refusal begins (gridswarm_env.config.read_toml_bytes)
_FILE_MESSAGE = ("config file ", "limits file ", "--scenario: scenario file ")


def flag_message(message: str) -> str:
    """A :class:`TrainConfig` error as the command line's: ``TrainConfig.n_agents = 0:
    …`` becomes ``--agents 0: …``, and field names in the rest of the message become
    their flags (``bc_teacher`` → ``--bc-teacher``), except inside quoted values (a
    path such as ``'/runs/n_envs.zip'`` is the user's, left as given) and in a message
    about a config or limits file's contents, which names the file's own keys
    (``[grid] governor_deadband_hz=0.9`` is the file's, not ``--governor-deadband-hz``)."""
    if message.startswith(_FILE_MESSAGE):
        return message
    head = _FIELD_HEAD.match(message)
    if head and head.group(1) in FIELD_FLAGS:
        # "TrainConfig.seed = -1: ..." -> "--seed -1: ..."; "TrainConfig.scenario: ..."
        # -> "--scenario: ..."
        sep = " " if head.group(2) == " = " else ": "
        message = f"{FIELD_FLAGS[head.group(1)]}{sep}{message[head.end():]}"
    parts = _QUOTED.split(message)   # odd indices: the quoted values
    return "".join(part if k % 2 else _FIELD_WORD.sub(lambda m: FIELD_FLAGS[m.group(1)], part)
                   for k, part in enumerate(parts))


#: the message of a Ctrl-C before training began (train() words its own otherwise)
NOTHING_WRITTEN = "interrupted before training started: nothing was written"


def _resume_help(text: str, default: object) -> str:
    return f"{text} (default: {default}; with --resume: the checkpoint's)"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (flags map one to one onto :class:`TrainConfig`)."""
    p = OneLineParser(
        prog="python -m train",
        description="Train one MaskablePPO policy shared by every DER agent of gridswarm. "
                    "Timesteps count agent-steps.")
    a = p.add_argument
    a("--scenario", default=None, metavar="S|FILE.toml",
      help=_resume_help(f"scenario: {', '.join(scenario_names())}, 'all' (every one, mixed "
                        "across episodes), or a scenario file FILE.toml (base = \"<name>\" "
                        "plus the fields it changes; read once, its path, sha256 and text "
                        "recorded)", DEFAULTS.scenario))
    a("--randomize", action="store_const", const=True, default=None,
      help=_resume_help("randomize every scenario " + randomize_text().replace("%", "%%")
                        + ", in training and in the --eval-every evaluations", "off"))
    a("--no-randomize", action="store_true",
      help="play the fixed scenarios (for --resume of a model trained with --randomize)")
    a("--timesteps", type=int_flag_type("--timesteps", 0), default=DEFAULTS.total_timesteps,
      metavar="N",
      help="agent-steps to train in this run (default: %(default)s)")
    a("--logdir", default=DEFAULTS.logdir, help="parent of run directories (default: %(default)s)")
    a("--out", default=None, metavar="PATH",
      help="model file to write; .zip is appended when missing, a name ending in .json "
           "(the record's suffix) is refused (default: <logdir>/<run>/model.zip)")
    a("--overwrite", action="store_true",
      help="replace an existing --out model and its .json record (default: refuse)")
    a("--limits", default=None, metavar="FILE",
      help=_resume_help("kernel limits TOML file for the training (and --eval-every) "
                        "environments; '' = the built-in limits", "the built-in limits"))
    add_config_argument(p, "the training (and --eval-every) environments", overrides=_resume_help(
        "n_agents, trust and shadow are refused (--agents and --trust set them), "
        "--governor-deadband-hz overrides its deadband; '' = the defaults", "the defaults"))
    add_governor_deadband_argument(
        p, "the training (and --eval-every) environments",
        otherwise="with --config: the file's; with --resume: the checkpoint's")
    a("--resume", default=None, metavar="PATH",
      help="continue training a saved model: PPO, environment and reward flags not given "
           "keep the checkpoint's values, those given are applied (--net-arch must equal "
           "the checkpoint's; a changed reward is warned about); no behaviour cloning")
    a("--seed", type=int_flag_type("--seed", 0, MAX_SEED, SEED_WHY), default=DEFAULTS.seed,
      metavar="N", help=f"seed of torch, numpy and the training episodes, 0 to {MAX_SEED:,} "
                        "(default: %(default)s)")
    a("--agents", type=int_flag_type("--agents", 1, MAX_AGENTS, AGENT_LIMIT_WHY), default=None,
      metavar="N", help=_resume_help(f"number of DER agents per environment copy, 1 to "
                                     f"{MAX_AGENTS:,}", DEFAULTS.n_agents))
    a("--envs", type=int_flag_type("--envs", 1), default=None, metavar="N",
      help=_resume_help("environment copies stacked", DEFAULTS.n_envs))
    a("--checkpoint-every", type=int_flag_type("--checkpoint-every", 0),
      default=DEFAULTS.checkpoint_every, metavar="N",
      help="checkpoint every N agent-steps, 0 = never (default: %(default)s)")
    a("--eval-every", type=int_flag_type("--eval-every", 0),
      default=DEFAULTS.eval_every, metavar="N",
      help="evaluate by system_cost about every N agent-steps on held-out seeds, keep "
           "the best model as <run>/best_model.zip, 0 = never (default: %(default)s)")
    a("--eval-seeds", type=int_flag_type("--eval-seeds", 1, max_eval_seeds(), f" ({EVAL_SEEDS_WHY})"),
      default=DEFAULTS.eval_seeds, metavar="K",
      help="evaluation episodes per scenario (default: %(default)s)")
    a("--trust", default=DEFAULTS.trust, choices=TRUST_MODES,
      help="contract signatures (default: %(default)s, faster than ed25519)")
    a("--reward", default=None, choices=REWARD_MODES,
      help=_resume_help("per-agent env reward, or plus each agent's averted value of lost "
                     "load (marginal: a difference reward of system_cost's VOLL part; "
                     "docs/training.md)", DEFAULTS.reward))
    a("--marginal-weight", type=float, default=None,
      help=_resume_help("weight of the term of --reward marginal, refused with --reward env",
                        DEFAULTS.marginal_weight))
    a("--reward-scale", type=float, default=None,
      help=_resume_help("multiplier of the rewards the learner sees", DEFAULTS.reward_scale))
    a("--reward-clip", type=float, default=None,
      help=_resume_help("clip of the scaled rewards, > 0, or 0 = no clipping",
                     DEFAULTS.reward_clip))
    a("--lr", type=float, default=None, help=_resume_help("PPO learning rate",
                                                        DEFAULTS.learning_rate))
    a("--n-steps", type=int_flag_type("--n-steps", 2), default=None,
      help=_resume_help("rollout steps per agent slot", DEFAULTS.n_steps))
    a("--batch-size", type=int_flag_type("--batch-size", 2), default=None,
      help=_resume_help("PPO minibatch size, capped at one rollout", DEFAULTS.batch_size))
    a("--n-epochs", type=int_flag_type("--n-epochs", 1), default=None,
      help=_resume_help("PPO epochs per rollout", DEFAULTS.n_epochs))
    a("--gamma", type=float, default=None,
      help=_resume_help("discount per 1 s step", DEFAULTS.gamma))
    a("--ent-coef", type=float, default=None, help=_resume_help("entropy bonus", DEFAULTS.ent_coef))
    a("--clip-range", type=float, default=None,
      help=_resume_help("PPO clip range", DEFAULTS.clip_range))
    a("--target-kl", type=float, default=None,
      help=_resume_help("early-stop an update past 1.5x this KL, 0 = off", "off"))
    a("--net-arch", default=None,
      help=_resume_help("hidden layer sizes, comma separated",
                     ",".join(map(str, DEFAULTS.net_arch))))
    a("--bc-teacher", default=None, choices=TEACHERS,
      help="behaviour-clone this policy before PPO")
    a("--bc-timesteps", type=int_flag_type("--bc-timesteps", 1), default=None,
      help=f"agent-steps of demonstrations, with --bc-teacher (default: {BC_TIMESTEPS})")
    a("--bc-epochs", type=int_flag_type("--bc-epochs", 1), default=None,
      help=f"passes over demonstrations, with --bc-teacher (default: {DEFAULTS.bc_epochs})")
    a("--bc-lr", type=float, default=None,
      help=f"cloning learning rate, with --bc-teacher (default: {DEFAULTS.bc_learning_rate})")
    a("--run-name",
      default=None, help="run directory name under --logdir, refused if it exists (even "
      "empty) (default: <scenario>_s<seed>_<time>)")
    a("--torch-threads", type=int_flag_type("--torch-threads", 1, MAX_TORCH_THREADS, TORCH_THREADS_WHY),
      default=DEFAULTS.torch_threads, metavar="N",
      help="torch intra-op threads of the cloning and PPO's forward and backward passes "
           "(default: %(default)s, as the shipped models were made; 2 trained 1.2-1.3x as "
           "fast on 2 free cores but 3-75x slower with the second core busy (warned), and gives other "
           "weights: a run repeats bit for bit with the same --seed and N)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--verbose", type=int_flag_type("--verbose", 0, 1), default=DEFAULTS.verbose, metavar="{0,1}",
      help="1: SB3's tables of training scalars on stdout after every update "
           "(default: %(default)s)")
    return p


def ppo_settings(args: argparse.Namespace, checkpoint: dict | None = None) -> dict:
    """The PPO fields of the run: the flags given, else the checkpoint's values (with
    --resume), else :data:`DEFAULTS`.

    :param checkpoint: :func:`train.trainer.checkpoint_hyperparameters` of the resumed
        model, or None.
    :raises ValueError: a malformed --net-arch or a negative --target-kl.
    """
    base = checkpoint if checkpoint is not None else {
        name: getattr(DEFAULTS, name) for _, name in PPO_FLAGS}
    out = {name: base[name] for _, name in PPO_FLAGS}
    if checkpoint is not None:
        out.update({name: checkpoint[name] for name in PPO_FIELDS_WITHOUT_FLAG})
    given = {name: getattr(args, dest) for dest, name in PPO_FLAGS
             if getattr(args, dest) is not None}
    if "net_arch" in given:
        allowed = "layer sizes (e.g. 64,64)"
        items = comma_items(given["net_arch"], "--net-arch", allowed)
        try:
            if not items:
                raise ValueError("no layer size")
            given["net_arch"] = tuple(int(x) for x in items)
        except ValueError:
            raise ValueError(f"--net-arch {given['net_arch']!r}: expected {allowed}") from None
    if "target_kl" in given:
        if given["target_kl"] < 0:
            raise ValueError(f"--target-kl {given['target_kl']}: must be > 0, or 0 = off")
        given["target_kl"] = given["target_kl"] or None
    out.update(given)
    return out


def env_settings(args: argparse.Namespace, saved: dict | None = None) -> dict:
    """The environment and reward fields of the run (:data:`ENV_FLAGS`): the flags given,
    else the resumed checkpoint's (``saved``), else :data:`DEFAULTS`.

    :param saved: :func:`train.trainer.model_env_settings` of the resumed model (None:
        not resuming, or a model that stores none).
    :raises ValueError: a negative --reward-clip.
    """
    out = {name: getattr(DEFAULTS, name) for _, name in ENV_FLAGS}
    out.update({name: value for name, value in (saved or {}).items() if name in out})
    given = given_env_settings(args)
    for name, _, flag in HASHED_FILES:
        if name not in given and names_a_file(name, out[name]) and not Path(
                out[name]).is_file():
            instead = (f"{flag} FILE, a scenario name or 'all'" if name == "scenario"
                       else f"{flag} FILE, or {flag} '' for the defaults")
            raise ValueError(f"--resume {args.resume!r} was trained with {flag} "
                             f"{out[name]!r}, which is no longer a file: pass {instead}")
        if name in given and name != "scenario":   # a scenario '' is refused as a name
            given[name] = given[name] or None
    if "reward_clip" in given:
        if given["reward_clip"] < 0:
            raise ValueError(f"--reward-clip {given['reward_clip']}: must be > 0, or 0 = no "
                             "clipping")
        given["reward_clip"] = given["reward_clip"] or None
    out.update(given)
    return out


def check_resumed_limits(args: argparse.Namespace, config: TrainConfig,
                         saved: dict | None) -> None:
    """Refuse to resume on the checkpoint's limits, config or scenario file
    (:data:`~train.config.HASHED_FILES`: ``--limits``, ``--config`` or ``--scenario`` not
    given) when the bytes ``config`` read from it are not those the checkpoint was trained
    with: their SHA-256 differs from the one it recorded. A checkpoint that recorded no
    hash (saved by an older version, or trained on a registered scenario) is not checked.

    :param saved: :func:`train.trainer.model_env_settings` of the resumed model.
    :raises ValueError: naming the file, both hashes and what is allowed.
    """
    given = given_env_settings(args)
    for name, hash_name, flag in HASHED_FILES:
        recorded = (saved or {}).get(hash_name)
        if recorded is None or name in given or getattr(config, hash_name) == recorded:
            continue
        raise ValueError(f"--resume {args.resume!r} was trained with {flag} "
                         f"{getattr(config, name)!r} of sha256 {recorded}, but that file has "
                         f"changed since (sha256 now {getattr(config, hash_name)}): pass "
                         f"{flag} FILE to train on the file as it is now, or restore it")


def given_env_settings(args: argparse.Namespace) -> dict:
    """The environment and reward flags given on the command line, by field name
    (``--no-randomize`` gives ``randomize`` False)."""
    given = {name: getattr(args, dest) for dest, name in ENV_FLAGS
             if getattr(args, dest) is not None}
    if getattr(args, "no_randomize", False):
        given["randomize"] = False
    return given


def check_randomize_flags(args: argparse.Namespace) -> None:
    """``--randomize`` and ``--no-randomize`` contradict each other.

    :raises ValueError: both given (one line, naming both)."""
    if args.randomize and getattr(args, "no_randomize", False):
        raise ValueError("--randomize and --no-randomize: give one of them (--randomize "
                         "draws every episode's scenario, --no-randomize plays the fixed "
                         "scenarios; without either a new run plays the fixed ones and "
                         "--resume keeps the checkpoint's choice)")


def config_from_args(args: argparse.Namespace, argv: Sequence[str],
                     checkpoint: dict | None = None,
                     saved_env: dict | None = None) -> TrainConfig:
    """Build the validated :class:`TrainConfig` (raises ``ValueError`` on bad values).

    :param checkpoint: the resumed model's PPO settings (see :func:`ppo_settings`).
    :param saved_env: the resumed model's environment settings (see :func:`env_settings`;
        a changed limits file is refused, :func:`check_resumed_limits`).
    """
    check_randomize_flags(args)
    if (checkpoint is not None and saved_env is None and args.randomize is None
            and not getattr(args, "no_randomize", False)):
        raise ValueError(f"--resume {args.resume!r} stores no environment settings (saved "
                         "before models stored them, as the shipped gridswarm_ppo.zip and "
                         "gridswarm_dagger.zip were, or outside python -m train), so "
                         "whether it learned on randomized scenarios is unknown: pass "
                         "--randomize or --no-randomize")
    if args.bc_teacher is None:
        given = [f"{flag} {getattr(args, dest)}" for dest, flag in BC_FLAGS
                 if getattr(args, dest) is not None]
        if given:
            many = len(given) > 1
            raise ValueError(f"{', '.join(given)}: {'these set' if many else 'this sets'} the "
                             "behaviour cloning, which needs --bc-teacher "
                             f"{{{','.join(TEACHERS)}}}; add it or drop "
                             f"{'them' if many else 'it'}")
    settings = env_settings(args, saved_env)
    # resuming, the reward is known once the checkpoint is read (main's second call)
    if (args.marginal_weight is not None and settings["reward"] != "marginal"
            and (args.resume is None or checkpoint is not None)):
        of = " (the checkpoint's)" if args.reward is None and saved_env else ""
        raise ValueError(f"--marginal-weight {args.marginal_weight}: weights the term of "
                         f"--reward marginal, and this run trains with --reward "
                         f"{settings['reward']}{of}: add --reward marginal or drop it")
    config = TrainConfig(
        total_timesteps=args.timesteps, trust=args.trust, seed=args.seed,
        logdir=args.logdir, out=args.out, overwrite=args.overwrite,
        resume=args.resume, checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every, eval_seeds=args.eval_seeds,
        **settings, **ppo_settings(args, checkpoint),
        bc_teacher=args.bc_teacher,
        bc_timesteps=0 if args.bc_teacher is None else (
            BC_TIMESTEPS if args.bc_timesteps is None else args.bc_timesteps),
        bc_epochs=DEFAULTS.bc_epochs if args.bc_epochs is None else args.bc_epochs,
        bc_learning_rate=(DEFAULTS.bc_learning_rate if args.bc_lr is None else args.bc_lr),
        run_name=args.run_name, progress_bar=not args.no_progress,
        torch_threads=args.torch_threads,
        verbose=args.verbose, command=shlex.join(["python", "-m", "train", *argv]))
    check_resumed_limits(args, config, saved_env)
    return config


def busy_cores(interval_s: float = 0.2, stat_path: str = "/proc/stat") -> float | None:
    """How many cores the machine's other processes keep busy now: the busy share of all
    CPU time over ``interval_s`` (``/proc/stat``; this process sleeps meanwhile) times
    the machine's cores; None where ``/proc/stat`` cannot be read. Unlike the load
    average, it does not count processes that ended in the last minute (a run just
    before this one)."""
    import time

    def sample() -> tuple[int, int]:
        with open(stat_path) as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
        return sum(fields[:8]), idle   # user..steal (guest time is inside user)

    try:
        total0, idle0 = sample()
        time.sleep(interval_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    spent = total1 - total0
    if spent <= 0:
        return None
    return (spent - (idle1 - idle0)) / spent * (os.cpu_count() or 1)


def threads_warning(torch_threads: int, busy: float | None = None, cpus: int | None = None,
                    wait_policy: str | None = None) -> str | None:
    """A warning for ``--torch-threads N`` (N > 1) when the machine has no free core for
    each thread, else None.

    torch's OpenMP threads spin while they wait for each other (libgomp's default): with
    a core another process holds, a spinning thread waits for a time slice, and the
    training crawls. On the 2-core development VM, ``python -m benchmarks.bench_train
    --quick --torch-threads 2`` with a busy loop on the second core read 259 to 6 800
    agent-steps/s against ~20 000 for one thread (a concurrent training run: 820 against
    19 900). ``OMP_WAIT_POLICY=PASSIVE`` avoids that collapse (19 000-20 400 in the same
    setting) but also the gain on free cores (2 threads then ran at about one thread's
    rate, 17 600-20 300 against 20 800-25 000), so the advice is one thread.

    :param torch_threads: the ``--torch-threads`` value.
    :param busy: cores other processes keep busy (default: :func:`busy_cores`, measured
        over 0.2 s; the 1-minute load average where that cannot be read).
    :param cpus: cores this process may use (default: its affinity mask).
    :param wait_policy: ``OMP_WAIT_POLICY`` (default: from the environment).
    """
    if torch_threads <= 1:
        return None
    if cpus is None:
        from gridswarm_env.trust import _usable_cpus  # the affinity mask, one helper

        cpus = _usable_cpus()
    advice = "--torch-threads 1 trains as fast or faster there"
    if torch_threads > cpus:
        return (f"--torch-threads {torch_threads} on {cpus} usable core(s): the threads "
                f"will wait for each other's cores and train slower than one; {advice}")
    if wait_policy is None:
        wait_policy = os.environ.get("OMP_WAIT_POLICY", "")
    if wait_policy.strip().upper() == "PASSIVE":
        return None
    measured = "measured over 0.2 s"
    if busy is None:
        busy = busy_cores()
        if busy is None:
            try:
                busy, measured = os.getloadavg()[0], "the 1-minute load average"
            except (AttributeError, OSError):   # pragma: no cover - no load average
                return None
    if busy - (cpus - torch_threads) < 0.5:
        return None
    return (f"--torch-threads {torch_threads} while other processes keep {busy:.1f} of "
            f"{cpus} cores busy ({measured}): torch's threads spin while they wait for "
            "each other's cores (2 threads with the second core busy trained 3-75x slower "
            f"than 1 on the development machine); {advice}")


def reward_changes(args: argparse.Namespace, config: TrainConfig,
                   saved_env: dict | None) -> list[str]:
    """The reward settings given on the command line that differ from the resumed
    model's (``flag new (the checkpoint's: old)``); empty when none does."""
    if not saved_env:
        return []
    flags = {name: "--" + dest.replace("_", "-") for dest, name in ENV_FLAGS}
    given = given_env_settings(args)

    def shown(value: object) -> object:
        return "0 (no clipping)" if value is None else value

    # (--marginal-weight with an "env" reward is refused before: config_from_args)
    return [f"{flags[name]} {shown(getattr(config, name))} (the checkpoint's: "
            f"{shown(saved_env[name])})" for name in REWARD_FIELDS
            if name in given and name in saved_env
            and getattr(config, name) != saved_env[name]]


def input_files_line(config: TrainConfig) -> str | None:
    """``training with scenario file S (sha256 <12 hex>), config file C (…), limits file
    L (…)``: the files the run reads (given, or with ``--resume`` the checkpoint's), in
    demo.py's words (:func:`~policies.cli_checks.input_files`); None when it reads none.
    Printed once before training: the record holds them, the screen and a log did not."""
    files = input_files({
        "scenario_file": config.scenario if config.scenario_sha256 else None,
        "scenario_file_sha256": config.scenario_sha256,
        "env_config_file": config.env_config_file, "env_config_sha256": config.env_config_sha256,
        "limits_path": config.limits, "limits_sha256": config.limits_sha256})
    return "training with " + ", ".join(label for _, label in files) if files else None


def _entries(logdir: Path) -> set[str]:
    """The names in ``logdir`` (empty when it is not a directory)."""
    try:
        return {p.name for p in logdir.iterdir()}
    except OSError:
        return set()


def _bare_interrupt(logdir: Path, before: set[str]) -> str:
    """The message of a Ctrl-C that ``train`` did not word (it words every one from the
    moment it creates the run directory): :data:`NOTHING_WRITTEN`, unless ``logdir``
    gained an entry since ``before`` (then that is named, never "nothing")."""
    new = sorted(_entries(logdir) - before)
    if not new:
        return NOTHING_WRITTEN
    return ("interrupted: no finished model was saved; written under --logdir: "
            + ", ".join(str(logdir / name) for name in new))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:   # the arguments, the configuration and the outputs: bad ones exit 2
        checkpoint = saved_env = None
        if args.resume is not None:
            # the other flags first (no torch yet); not --limits, --config nor a
            # --scenario file: each file is read once,
            # by the config the run uses; nor --batch-size, whose check against the
            # rollout needs the checkpoint's --n-steps and --envs (one rollout: no check)
            config_from_args(argparse.Namespace(**{**vars(args), "limits": None,
                                                   "config": None, "scenario": None,
                                                   "batch_size": MAX_ROLLOUT}), argv)
            from train.trainer import checkpoint_settings

            try:
                checkpoint, saved_env = checkpoint_settings(args.resume)
            except ValueError as exc:   # "model file '…' is corrupt…": name the flag,
                raise ValueError(f"--resume: {exc}") from None   # as --policy does
        config = config_from_args(args, argv, checkpoint, saved_env)
        config.check_outputs(config.run_name)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {flag_message(str(exc))}\n")
    except KeyboardInterrupt as exc:
        print(f"\n{str(exc) or NOTHING_WRITTEN}", file=sys.stderr)
        return 130
    threads = threads_warning(config.torch_threads)
    if threads:
        print(f"{parser.prog}: warning: {threads}", file=sys.stderr)
    changed = reward_changes(args, config, saved_env)
    if changed:
        print(f"{parser.prog}: warning: the reward differs from the one the resumed model "
              f"was trained with ({'; '.join(changed)}): its critic learned the old "
              "reward's values and the learning curves will not compare; training with "
              "the new one", file=sys.stderr)
    inputs = input_files_line(config)
    if inputs:
        print(inputs, flush=True)
    from train.errors import Terminated, TrainingError

    def note(text: str) -> None:
        print(f"{parser.prog}: note: {text}", file=sys.stderr, flush=True)

    logdir = Path(config.logdir)
    before = _entries(logdir)
    try:
        from train.trainer import train  # torch loads only for a valid command

        # e.g. a fleet too small for every DER kind: one line, once (as evaluate.py's),
        # not Python's format for each environment built (training and evaluation)
        with one_line_warnings(parser.prog):
            path = train(config, notes=note)
    except TrainingError as exc:   # failed once started: not a usage error
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:   # train() raises it only before any work (a resume
        parser.exit(2, f"{parser.prog}: error: {exc}\n")   # file that does not fit)
    except OutputError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:   # train() says what it saved; a bare one came
        print(f"\n{str(exc) or _bare_interrupt(logdir, before)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130   # 128 + SIGTERM / SIGINT
    print(f"model saved to {path} (training record: {path.with_suffix('.json')})")
    if config.eval_every:
        import json

        best = json.loads(path.with_suffix(".json").read_text())[
            "evaluation_during_training"]
        if best["best"] is not None:
            print(f"best model by system cost relative to the heuristic: {best['best_model']} "
                  f"({best['best']['system_cost']:,.2f} $, "
                  f"{100 * best['best']['relative_cost']:+,.1f} % vs the heuristic, at "
                  f"{best['best']['agent_steps']:,} agent-steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
