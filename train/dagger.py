"""Distil a trained model and the heuristic into one policy: ``python -m train.dagger``.

The shipped PPO model (``policies/pretrained/gridswarm_ppo.zip``) was trained on the
fixed scenarios: it beats the heuristic in ``solar_surplus`` but answers no energy round
after a trip other than 100 MW (README, *Known limitations*). This pipeline keeps what
it learned and adds what it lacks, by imitation on randomized episodes
(:data:`~gridswarm_env.scenarios.RANDOMIZE_PRESET`):

1. **Cloning from a teacher per scenario** (:func:`train.bc.collect_demonstrations`):
   the base model itself in ``price_spike`` and ``solar_surplus``, the heuristic in
   ``emergency`` (``--samples`` agent-steps over the three scenarios, plus
   ``--emergency-samples`` of randomized emergencies, whose post-trip rounds are rare),
   fitted for ``--epochs`` passes, starting from the base model's weights.
2. **DAgger** (Ross, Gordon & Bagnell 2011, ``--iterations`` rounds): the student plays
   randomized emergencies, the heuristic labels every state it visits, the rows join
   the samples and the student is fitted again (``--iteration-epochs`` passes over all
   of them). Cloning alone leaves the states the teacher never reaches, which the
   student's own small mistakes lead to; these rounds correct them.

The loss is :func:`train.bc.behaviour_clone`'s (the actor by likelihood of the teacher's
actions under the masks, the critic on the returns of the play that gave the rows: the
teacher's, then the student's in DAgger's rows, where only the student plays — DAgger's
β = 0 after the first round, as Ross et al. allow). Every stream is seeded from
``--seed`` S (:data:`SEED_OFFSETS`: S for the three-scenario episodes, S + 12 for the
extra emergencies, S + 13 for DAgger's, S + 11 + k for the k-th fit; offsets kept from
the run that made the shipped model), and training draws its episode seeds outside the
evaluation seeds (:data:`policies.rollout.EVAL_SEEDS`), so a run is repeatable on one
machine: the same statistics and weights (the zip's SHA-256 differs, as its files carry
their time of writing). Writes the model and ``<model>.json`` (the
command, settings, the base model's SHA-256, per-phase statistics, the model's SHA-256
and observation fields, read back by :class:`policies.learned.LearnedPolicy`; without
``--overwrite``, never over a model another run wrote at ``--out`` during this one: then
to ``<out>-2.zip`` and its record, with one line on stderr and status 1; what cannot be
written where asked goes to the temporary directory, likewise said) and, under
``--logdir`` (default ``runs/``), a tensorboard run ``dagger_s<seed>_<time>``: per epoch
``distil/likelihood_loss`` and ``distil/value_mse`` (step = epochs so far), per phase
``distil/accuracy_power`` and ``distil/accuracy_price``, per DAgger round
``distil/dagger_disagreement`` (step = round).

``--config FILE`` and ``--governor-deadband-hz HZ`` set every environment's
:class:`~gridswarm_env.config.EnvConfig` (the teachers' and the student's play) as they
do for ``python -m train``, with its rules (:func:`taught_config`: ``n_agents``,
``trust`` and ``shadow`` refused in the file, the flag over the file's deadband); the
record's ``config`` and the model store the file's path and SHA-256 and the deadband
(``env_config_file``, ``env_config_sha256``, ``governor_deadband_hz``), the record's
``env_config_toml`` the settings as a config file.

Usage::

    python -m train.dagger --out policies/pretrained/gridswarm_dagger.zip
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from policies.cli_checks import (
    OneLineParser,
    add_config_argument,
    add_governor_deadband_argument,
    dirs_to_create,
    file_sha256,
    int_flag_type,
    remove_unfinished_run,
)

if TYPE_CHECKING:
    from train.config import TrainConfig

#: seed offsets from ``--seed`` of the streams (module docstring)
SEED_OFFSETS = {"scenarios": 0, "emergency": 12, "dagger": 13, "fit": 11}
#: the teacher per scenario; ``"base"`` is the model being distilled
TEACHERS = {"price_spike": "base", "solar_surplus": "base", "emergency": "heuristic"}


def build_parser() -> argparse.ArgumentParser:
    from policies.learned import PPO_MODEL

    p = OneLineParser(prog="python -m train.dagger", description=__doc__.splitlines()[0])
    a = p.add_argument

    def count(flag: str) -> Callable[[str], int]:
        return int_flag_type(flag, 1, 10**8)

    a("--base", default=str(PPO_MODEL),
      help="the model distilled and started from (default: the shipped PPO model)")
    a("--out", required=True, help="model file to write (.zip)")
    a("--overwrite", action="store_true", help="replace an existing --out")
    a("--agents", type=int_flag_type("--agents", 1, 10_000), default=100,
      help="agents per environment (default 100)")
    a("--trust", choices=("hmac", "ed25519"), default="hmac",
      help="contract signatures (default hmac: faster, the same trajectories)")
    add_config_argument(p, "every environment it plays (the teachers' and the student's)",
                        overrides="n_agents, trust and shadow are refused (--agents and "
                                  "--trust set them), --governor-deadband-hz overrides its "
                                  "deadband; '' = the defaults (python -m train's rules)")
    add_governor_deadband_argument(p, "every environment it plays")
    a("--seed", type=int_flag_type("--seed", 0, 2**31 - 20), default=0, help="seed (default 0)")
    a("--samples", type=count("--samples"), default=600_000,
      help="agent-steps of teacher play over the three scenarios (default 600000)")
    a("--emergency-samples", type=int_flag_type("--emergency-samples", 0, 10**8), default=600_000,
      help="more agent-steps of randomized emergencies (default 600000)")
    a("--epochs", type=count("--epochs"), default=40, help="cloning passes (default 40)")
    a("--iterations", type=int_flag_type("--iterations", 0, 100), default=3,
      help="DAgger rounds (default 3)")
    a("--iteration-samples", type=count("--iteration-samples"), default=240_000,
      help="agent-steps the student plays per DAgger round (default 240000)")
    a("--iteration-epochs", type=count("--iteration-epochs"), default=8,
      help="passes over all samples after each DAgger round (default 8)")
    a("--lr", type=float, default=3e-4, help="Adam step size (default 3e-4)")
    a("--logdir", default="runs", help="tensorboard directory (default runs/; '' for none)")
    return p


def taught_config(n_agents: int = 100, trust: str = "hmac", seed: int = 0,
                  env_config_file: str | None = None,
                  governor_deadband_hz: float | None = None) -> TrainConfig:
    """The :class:`~train.config.TrainConfig` of what a distilled model is taught on:
    every scenario, randomized, with ``env_config_file`` (read and hashed now, refused as
    ``python -m train --config`` refuses it) and ``governor_deadband_hz`` (over the
    file's); every environment of the run is built from it and the model stores its
    :meth:`~train.config.TrainConfig.env_settings`, so ``python -m train --resume`` of
    it keeps them.

    :raises ValueError: as :class:`~train.config.TrainConfig` (naming the field or file).
    """
    from train.config import TrainConfig

    return TrainConfig(scenario="all", randomize=True, n_agents=n_agents, trust=trust,
                       seed=seed, env_config_file=env_config_file,
                       governor_deadband_hz=governor_deadband_hz)


def _shown(path: str | Path) -> str:
    """``path`` as a record shows it: relative to the repository when inside it (the
    shipped model's record then reads the same in every clone)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def _on_one_torch_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with torch on one intra-op thread (the process's setting restored
    after, however it ends)."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        from policies.learned import using_torch_threads

        with using_torch_threads(1):
            return fn(*args, **kwargs)
    return wrapped


@_on_one_torch_thread
def distil(base: str | Path, out: str | Path, *, n_agents: int = 100, trust: str = "hmac",
           seed: int = 0, samples: int = 600_000, emergency_samples: int = 600_000,
           epochs: int = 40, iterations: int = 3, iteration_samples: int = 240_000,
           iteration_epochs: int = 8, lr: float = 3e-4, command: str | None = None,
           logdir: str | Path | None = None, log=print, env_config_file: str | None = None,
           governor_deadband_hz: float | None = None, overwrite: bool = True,
           taught: TrainConfig | None = None) -> dict[str, Any]:
    """Run the pipeline (module docstring); write ``out``, its record and, with
    ``logdir``, a tensorboard run in it; return the record. torch runs on one thread
    (as the shipped model was made; the process's setting is restored after). Every
    environment is built with ``env_config_file``'s settings and ``governor_deadband_hz``
    (:func:`taught_config`; None: the defaults), which the record and the model store as
    ``python -m train``'s do; ``taught``, when given, is what :func:`taught_config` made
    of those arguments (``main`` hands on the one its checks passed: the config file is
    read once per command). Interrupted (``KeyboardInterrupt``) before the model is
    saved, it leaves no tensorboard run; after, the model stays and the interrupt's
    ``written`` attribute says what was written. The environments it builds are closed
    however it ends. Without ``overwrite`` the model never
    replaces a file at ``out`` that is not empty (one another run wrote after the
    command's check, :func:`train.trainer.claim_atomically`): it and its record take the
    next free name, ``<out>-2.zip``…; a model or record that cannot be written (e.g. a
    directory in the way) goes to the temporary directory instead, as ``python -m
    train``'s do.

    :raises OutputError: once all is written, when the model or its record is not where
        asked (above; ``path``: where the model is, None when it could not be saved at
        all; the message says where each went).
    :raises ValueError: ``taught`` is not :func:`taught_config`'s of these arguments.
    """
    from policies.cli_checks import OutputError, write_or_rescue
    from train.trainer import _write_text

    t0 = time.time()
    # what it is taught on, checked before the work and stored in the model, so
    # ``python -m train --resume`` of it keeps --randomize (and the config file)
    made_of = (n_agents, trust, seed, env_config_file, governor_deadband_hz)
    if taught is None:
        taught = taught_config(*made_of)
    elif _made_of(taught) != (*made_of[:3], env_config_file and os.fspath(env_config_file),
                              governor_deadband_hz):
        raise ValueError(f"distil: taught= is not taught_config{made_of} (of its arguments)")
    run = _TensorboardRun.open(logdir, seed)
    path = None
    envs = contextlib.ExitStack()   # the environments it builds, closed however it ends
    try:
        progress = _Progress(run, log, t0)
        venv, model, parts = _teacher_demonstrations(envs, base, taught, seed, samples,
                                                     emergency_samples)
        phases = [_clone(model, parts, epochs, lr, seed, progress)]
        phases += _dagger_rounds(model, parts, taught, seed, iterations, iteration_samples,
                                 iteration_epochs, lr, progress)
        path, problem = _save(model, out, taught, overwrite)
        if path is None:   # nowhere, not even in the temporary directory
            raise OutputError(problem)
        settings = {"n_agents": n_agents, "trust": trust, "seed": seed, "samples": samples,
                    "emergency_samples": emergency_samples, "epochs": epochs,
                    "iterations": iterations, "iteration_samples": iteration_samples,
                    "iteration_epochs": iteration_epochs, "lr": lr}
        record = _record(base, path, taught, settings, phases, venv, run.run_dir, t0, command)
        run.close(keep=True)
        text = json.dumps(record, indent=2) + "\n"
        _, record_problem = write_or_rescue(path.with_suffix(".json"),
                                            lambda p: _write_text(p, text), "the record")
    except BaseException as stop:   # Ctrl-C, SIGTERM or an error: a run whose model was
        # not saved leaves no tensorboard run ("nothing was written")
        run.close(keep=path is not None)
        if path is not None and isinstance(stop, KeyboardInterrupt):   # what main says
            stop.written = _written_before(path, run.run_dir)
        raise
    finally:
        envs.close()
    problems = [said for said in (problem, record_problem) if said]
    if problems:
        raise OutputError("; ".join(problems), path=path)
    return record


def _made_of(taught: TrainConfig) -> tuple[Any, ...] | None:
    """The arguments :func:`taught_config` made ``taught`` of (None: it made no such
    config)."""
    if taught.scenario != "all" or not taught.randomize:
        return None
    return (taught.n_agents, taught.trust, taught.seed, taught.env_config_file,
            taught.governor_deadband_hz)


class _TensorboardRun:
    """:func:`distil`'s tensorboard run ``<logdir>/dagger_s<seed>_<time>``, or none
    (``logdir`` None: every method does nothing)."""

    def __init__(self, run_dir: Path | None = None, writer: Any = None,
                 made: list[Path] | None = None, mine: set[Path] | None = None) -> None:
        self.run_dir = run_dir
        self.writer = writer
        self.made = made or []   # the directories the tensorboard run creates
        self.mine = mine or set()   # and its event file

    @classmethod
    def open(cls, logdir: str | Path | None, seed: int) -> _TensorboardRun:
        if logdir is None:
            return cls()
        from torch.utils.tensorboard import SummaryWriter

        from train.trainer import claim_run_dir

        made = dirs_to_create(logdir)
        # its own directory, even beside a run started within the same second
        run_dir = claim_run_dir(logdir, time.strftime(f"dagger_s{seed}_%Y%m%d-%H%M%S"))
        made.append(run_dir)
        writer = SummaryWriter(str(run_dir))
        return cls(run_dir, writer, made, set(run_dir.glob("events.out.tfevents.*")))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(f"distil/{tag}", value, step)

    def close(self, keep: bool) -> None:
        """Close the writer; ``keep`` False: remove what the run wrote (its event file,
        the directories it created where empty)."""
        if self.writer is not None:
            self.writer.close()
            if not keep:
                remove_unfinished_run(self.mine, self.made)


class _Progress:
    """The log lines (time since ``t0``) and scalars of :func:`distil`'s fits, their
    epochs counted across the phases (the tensorboard step)."""

    def __init__(self, run: _TensorboardRun, log: Callable[[str], Any], t0: float) -> None:
        self.run, self.log, self.t0 = run, log, t0
        self.epochs_done = 0

    def say(self, text: str) -> None:
        self.log(f"{text} ({time.time() - self.t0:.0f} s)")

    def on_epoch(self, what: str, total: int) -> Callable[[int, dict[str, float]], None]:
        def on_epoch(done: int, stats: dict[str, float]) -> None:
            self.epochs_done += 1
            self.run.scalars({"likelihood_loss": stats["bc_nll"],
                              "value_mse": stats["bc_value_mse"]}, self.epochs_done)
            self.say(f"{what}: epoch {done}/{total}, likelihood loss {stats['bc_nll']:.4f}")
        return on_epoch

    def accuracy(self, stats: dict[str, float]) -> None:
        self.run.scalars({"accuracy_power": stats["bc_accuracy_power"],
                          "accuracy_price": stats["bc_accuracy_price"]}, self.epochs_done)


def _teacher_demonstrations(envs: contextlib.ExitStack, base: str | Path,
                            taught: TrainConfig, seed: int, samples: int,
                            emergency_samples: int) -> tuple[Any, Any, list[Any]]:
    """Step 1's rows: the teachers' play (:data:`TEACHERS`) over the three scenarios and
    of the extra randomized emergencies. Returns the three scenarios' environment (closed
    with ``envs``), the base model loaded on it, and the rows (one part per stream)."""
    from train.bc import collect_demonstrations
    from train.trainer import load_model, make_venv

    # every environment from `taught`: the config file is not read again
    venv = envs.enter_context(contextlib.closing(
        make_venv(taught, scenario="all", seed=seed + SEED_OFFSETS["scenarios"])))
    model = load_model(base, venv)
    # attaching a model re-seeds the adapter with the model's own saved seed: seed it again
    venv.seed(seed + SEED_OFFSETS["scenarios"])
    teachers = {k: (str(base) if v == "base" else v) for k, v in TEACHERS.items()}
    parts = [collect_demonstrations(venv, teachers, samples, model.gamma)]
    if emergency_samples:
        with contextlib.closing(make_venv(taught, scenario="emergency",
                                          seed=seed + SEED_OFFSETS["emergency"])) as extra:
            parts.append(collect_demonstrations(extra, "heuristic", emergency_samples,
                                                model.gamma))
    return venv, model, parts


def _clone(model: Any, parts: list[Any], epochs: int, lr: float, seed: int,
           progress: _Progress) -> dict[str, Any]:
    """Step 1's fit: ``epochs`` passes over the teachers' rows (``parts``), from the base
    model's weights; returns its phase entry."""
    from train.bc import behaviour_clone, concatenate

    demos = concatenate(parts)
    progress.say(f"cloning: {len(demos):,} samples")
    phase = {"phase": "cloning", "samples": len(demos),
             **behaviour_clone(model, demos, epochs=epochs, learning_rate=lr,
                               seed=seed + SEED_OFFSETS["fit"],
                               on_epoch=progress.on_epoch("cloning", epochs))}
    progress.accuracy(phase)
    progress.say(f"cloning done: {phase}")
    return phase


def _dagger_rounds(model: Any, parts: list[Any], taught: TrainConfig, seed: int,
                   iterations: int, iteration_samples: int, iteration_epochs: int,
                   lr: float, progress: _Progress) -> list[dict[str, Any]]:
    """Step 2: ``iterations`` rounds of the student's play labelled by the heuristic,
    each added to ``parts`` and fitted on with all of them; returns their phase entries."""
    from policies.learned import greedy_actions
    from train.bc import behaviour_clone, collect_demonstrations, concatenate
    from train.trainer import make_venv

    phases = []
    with contextlib.closing(make_venv(taught, scenario="emergency",
                                      seed=seed + SEED_OFFSETS["dagger"])) as dagger_venv:
        for it in range(iterations):
            rows = collect_demonstrations(dagger_venv, "heuristic", iteration_samples,
                                          model.gamma, student=model)
            pred = greedy_actions(model.policy, rows.obs, rows.masks)
            disagree = float((pred != rows.actions).any(axis=1).mean())
            parts.append(rows)
            demos = concatenate(parts)
            stats = behaviour_clone(model, demos, epochs=iteration_epochs, learning_rate=lr,
                                    seed=seed + SEED_OFFSETS["fit"] + it,
                                    on_epoch=progress.on_epoch(f"DAgger round {it + 1}",
                                                               iteration_epochs))
            phases.append({"phase": f"dagger {it + 1}", "student_rows": len(rows),
                           "disagreement_before": disagree, "samples": len(demos), **stats})
            progress.accuracy(stats)
            progress.run.scalars({"dagger_disagreement": disagree}, it + 1)
            progress.say(f"DAgger round {it + 1}: the student disagreed with the heuristic "
                         f"on {disagree:.2%} of {len(rows):,} states it visited; "
                         f"{phases[-1]}")
    return phases


def _save(model: Any, out: str | Path, taught: TrainConfig, overwrite: bool
          ) -> tuple[Path | None, str | None]:
    """Save the distilled model with the observation fields and environment settings it
    was taught on, to ``out`` or elsewhere (:func:`train.trainer.save_model_or_rescue`:
    atomically, never over another run's model without ``overwrite``); returns where
    (None: nowhere) and, when not at ``out``, the one line saying why."""
    from gridswarm_env.env import OBS_FIELDS
    from policies.learned import OBS_FIELDS_ATTR
    from train.trainer import ENV_SETTINGS_ATTR, save_model_or_rescue

    setattr(model, OBS_FIELDS_ATTR, list(OBS_FIELDS))
    setattr(model, ENV_SETTINGS_ATTR, taught.env_settings())
    out = Path(out)
    with contextlib.suppress(OSError):   # where it cannot be made, the save fails: rescued
        out.parent.mkdir(parents=True, exist_ok=True)
    return save_model_or_rescue(model, out, out, overwrite)


def _record(base: str | Path, path: Path, taught: TrainConfig, settings: dict[str, Any],
            phases: list[dict[str, Any]], venv: Any, run_dir: Path | None, t0: float,
            command: str | None) -> dict[str, Any]:
    """The saved model's record (``<model>.json``; module docstring)."""
    from gridswarm_env.config_file import env_config_toml
    from gridswarm_env.env import OBS_FIELDS
    from train.trainer import _versions

    shown = _shown(base)
    return {
        "command": command,
        "method": "behaviour cloning from a teacher per scenario, then DAgger on "
                  "randomized emergencies (train/dagger.py)",
        "teachers": {k: (shown if v == "base" else v) for k, v in TEACHERS.items()},
        "base": shown, "base_sha256": file_sha256(base),
        "config": {**settings, "randomize": True,
                   "env_config_file": taught.env_config_file,
                   "env_config_sha256": taught.env_config_sha256,
                   "governor_deadband_hz": taught.governor_deadband_hz},
        # the environments' settings as a --config file
        "env_config_toml": env_config_toml(taught.env_config()),
        "phases": phases, "model": _shown(path), "model_sha256": file_sha256(path),
        "obs_fields": list(OBS_FIELDS), "action_nvec": venv.action_space.nvec.tolist(),
        "run_dir": None if run_dir is None else str(run_dir),
        "wall_time_s": round(time.time() - t0, 1), "versions": _versions(),
        "platform": platform.platform(),
    }


def _written_before(path: Path, run_dir: Path | None) -> str:
    """What an interrupt after the model was saved leaves (``main`` prints it)."""
    record = path.with_suffix(".json")
    return (f"the model was saved to {path}, but not its record {record}"
            + (" (the file there is an earlier model's)" if record.exists() else "")
            + ("" if run_dir is None else f"; tensorboard run {run_dir}"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)   # argparse's own errors add "(see ... --help)"

    def refuse(message: str) -> NoReturn:
        """A bad value: one line, exit 2, as python -m train, demo.py and evaluate.py
        word it (no "--help" hint: the line says what is allowed)."""
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    from policies.cli_checks import OutputError, check_output_dir, check_output_file
    from policies.learned import check_model_action_levels, load_maskable_ppo
    from train.__main__ import flag_message
    from train.config import check_step_size

    try:   # TrainConfig's rule for a learning rate, in python -m train's words
        check_step_size("TrainConfig", "learning_rate", args.lr)
    except ValueError as exc:
        refuse(flag_message(str(exc)))
    try:   # a missing file or one that is not a model fails here, not after the work
        base = load_maskable_ppo(args.base)
    except ValueError as exc:
        refuse(f"--base: {exc}")
    try:   # --config and --governor-deadband-hz: python -m train's rules and words
        taught = taught_config(args.agents, args.trust, args.seed, args.config or None,
                               args.governor_deadband_hz)
        market = taught.env_config().market
    except ValueError as exc:
        refuse(flag_message(str(exc)))
    from train.trainer import make_venv

    try:   # and every environment it plays takes them (the environment refuses e.g. a
        # dt_s the randomized emergency's reserve rounds cannot answer in): one line now,
        # not a traceback once the work has started
        make_venv(taught).close()
    except ValueError as exc:
        refuse(str(exc))
    try:   # the base model's network fixes the levels (distilling keeps it)
        check_model_action_levels(base, [market.n_power_levels, market.n_price_levels],
                                  Path(args.base))
    except ValueError as exc:
        refuse(f"--base: {exc}")
    if not args.out.strip():
        refuse("--out is empty; expected a model file path (.zip)")
    if args.logdir:
        try:
            check_output_dir(args.logdir, "--logdir")
        except ValueError as exc:
            refuse(str(exc))
    from train.config import names_a_directory, record_suffix_problem

    if names_a_directory(args.out):
        refuse(f"--out {args.out!r} is a directory; expected a model file path (e.g. "
                     "DIR/model.zip)")
    problem = record_suffix_problem(args.out)
    if problem:
        refuse(f"--out {args.out!r}: {problem}")
    out = Path(args.out if args.out.endswith(".zip") else args.out + ".zip")
    if out.resolve() == Path(args.base).resolve():
        refuse("--out names the --base model; write the distilled one elsewhere")
    try:   # before ~15 minutes of work: the model and its record can be written
        for path in (out, out.with_suffix(".json")):
            check_output_file(path, "--out", create_dirs=True, overwrite=args.overwrite)
    except ValueError as exc:
        refuse(str(exc))
    from train.errors import Terminated, sigterm_as_interrupt

    try:   # SIGTERM (kill, timeout, a scheduler's stop) is handled as Ctrl-C
        with sigterm_as_interrupt():
            record = distil(
                args.base, out, n_agents=args.agents, trust=args.trust, seed=args.seed,
                samples=args.samples, emergency_samples=args.emergency_samples,
                epochs=args.epochs, iterations=args.iterations,
                iteration_samples=args.iteration_samples,
                iteration_epochs=args.iteration_epochs, lr=args.lr,
                logdir=args.logdir or None, env_config_file=args.config or None,
                governor_deadband_hz=args.governor_deadband_hz, overwrite=args.overwrite,
                taught=taught,   # the config file as read and checked above
                command="python -m train.dagger " + shlex.join(
                    sys.argv[1:] if argv is None else argv))
    except OutputError as exc:   # the model or record is elsewhere (the line says where)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:   # distil says what it wrote (nothing, or the model)
        by = " by SIGTERM" if isinstance(exc, Terminated) else ""
        written = getattr(exc, "written", None) or (
            "nothing was written (the model and its record are written at the end)")
        print(f"{parser.prog}: interrupted{by}: {written}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130   # 128 + SIGTERM / SIGINT
    print(f"model saved to {record['model']} (record: {Path(record['model']).with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
