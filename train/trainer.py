"""Shared-policy MaskablePPO training on gridswarm (CleanRL-style: reads top to bottom).

:func:`train` takes a :class:`TrainConfig` and returns the path of the saved model::

    from train import TrainConfig, train
    path = train(TrainConfig(scenario="all", total_timesteps=2_000_000, seed=0))

Steps: build the adapter (:class:`~train.adapter.GridSwarmVecEnv`, one slot per agent,
hmac trust by default for speed) → build or load (``resume``) a ``MaskablePPO``
model → optionally pre-train it by behaviour cloning from a teacher policy
(:mod:`train.bc`) → ``learn`` with the grid-KPI callback, periodic checkpoints and a
progress bar → save the model and, beside it, a JSON record of how it was produced
(config, command, versions, wall time, agent-steps/s, recent episode KPIs).

Timesteps are **agent-steps** (one observation of one agent), SB3's
``num_timesteps``: one environment step of ``n_envs`` copies of ``n_agents`` agents is
``n_envs · n_agents`` timesteps. Run names carry the scenario, seed and start time:
``<scenario>_s<seed>_<YYYYmmdd-HHMMSS>``; everything of a run lives in
``<logdir>/<run name>/`` (tensorboard events, ``progress.csv``, ``checkpoints/`` once
the first checkpoint is written, ``model.zip`` unless ``out`` says otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gridswarm_env.config_file import env_config_toml
from gridswarm_env.env import OBS_FIELDS
from gridswarm_env.metrics import is_finite_or_none
from policies.cli_checks import OutputError, file_sha256, write_or_rescue
from policies.learned import (
    ENV_SETTINGS_ATTR,
    OBS_FIELDS_ATTR,
    nonfinite_tensors,
    unvalidated_distributions,
    using_torch_threads,
)
from train.adapter import GridSwarmVecEnv
from train.config import (
    ENV_FIELDS,
    RESUMABLE_FIELDS,
    UNSTORED_ENV_FIELDS,
    TrainConfig,
    minibatch_size,
)
from train.errors import Terminated, TrainingError, sigterm_as_interrupt


def make_venv(config: TrainConfig, scenario: str | None = None,
              seed: int | None = None) -> GridSwarmVecEnv:
    """The training adapter described by ``config`` (its environments get the limits
    ``config`` read, :meth:`~train.config.TrainConfig.kernel_limits`: the file is not
    read again, and :meth:`~train.config.TrainConfig.env_config`), on ``scenario`` and
    ``seed`` when given instead of ``config``'s (``dataclasses.replace`` of a config
    would read its limits and config files again)."""
    return GridSwarmVecEnv(list(config.scenarios().values()) if scenario is None else scenario,
                           n_agents=config.n_agents, n_envs=config.n_envs, trust=config.trust,
                           seed=config.seed if seed is None else seed, reward=config.reward,
                           marginal_weight=config.marginal_weight,
                           reward_scale=config.reward_scale, reward_clip=config.reward_clip,
                           limits=config.kernel_limits(), randomize=config.randomize,
                           config=config.env_config())


#: SB3's default ``stats_window_size``: slot episodes ``rollout/ep_rew_mean`` averages
SB3_STATS_WINDOW = 100


def stats_window_size(n_agents: int, n_envs: int) -> int:
    """The ``stats_window_size`` of a run (the slot episodes ``rollout/ep_rew_mean`` and
    ``rollout/ep_len_mean`` average): SB3's 100 rounded up to whole copy episodes of
    ``n_agents`` slots, and at least one episode of every slot,
    ``max(ceil(100 / n_agents), n_envs) · n_agents``. Each copy's episode ends for all its
    agents at once, so SB3's 100 kept only the last 100 slots: at 1 000 agents the mean
    return of agents 900-999 alone, and with ``--envs 2`` copies ending together only the
    second copy's agents (unchanged at 100 agents and one copy, or below 100 agents).
    """
    episodes = max(-(-SB3_STATS_WINDOW // n_agents), n_envs)
    return episodes * n_agents


def make_model(config: TrainConfig, venv: GridSwarmVecEnv):
    """A new ``MaskablePPO`` (shared MLP policy, CPU) for ``venv``."""
    from sb3_contrib import MaskablePPO

    arch = list(config.net_arch)
    return MaskablePPO(
        "MlpPolicy", venv, learning_rate=config.learning_rate, n_steps=config.n_steps,
        batch_size=minibatch_size(config.batch_size, config.n_steps * venv.num_envs),
        n_epochs=config.n_epochs, gamma=config.gamma, gae_lambda=config.gae_lambda,
        clip_range=config.clip_range, ent_coef=config.ent_coef, vf_coef=config.vf_coef,
        max_grad_norm=config.max_grad_norm, target_kl=config.target_kl,
        policy_kwargs={"net_arch": {"pi": arch, "vf": arch}}, seed=config.seed,
        stats_window_size=stats_window_size(config.n_agents, config.n_envs),
        device="cpu", verbose=config.verbose)


def model_hyperparameters(model) -> dict[str, Any]:
    """The PPO settings of a ``MaskablePPO`` model, read back from it, as
    :class:`TrainConfig` fields (:data:`~train.config.RESUMABLE_FIELDS` and
    ``net_arch``, the actor's hidden layers). A schedule is given by its start value."""

    def start(value: Any) -> float:
        return float(value(1.0) if callable(value) else value)

    # the layers asked for when it was built, else those the policy built by default
    # (SB3 fills in its own, e.g. 64,64, when policy_kwargs names none)
    arch = model.policy_kwargs.get("net_arch") or getattr(model.policy, "net_arch", None)
    layers = arch.get("pi") if isinstance(arch, dict) else arch
    return {"learning_rate": start(model.learning_rate), "n_steps": int(model.n_steps),
            "batch_size": int(model.batch_size), "n_epochs": int(model.n_epochs),
            "gamma": float(model.gamma), "gae_lambda": float(model.gae_lambda),
            "clip_range": start(model.clip_range), "ent_coef": float(model.ent_coef),
            "vf_coef": float(model.vf_coef), "max_grad_norm": float(model.max_grad_norm),
            "target_kl": None if model.target_kl is None else float(model.target_kl),
            "net_arch": tuple(int(h) for h in layers or ())}


#: attribute of a saved model holding the ``batch_size`` its run asked for: the model's own
#: ``batch_size`` is the one it trained with, capped at one rollout
#: (:func:`~train.config.minibatch_size`); a resume with a larger rollout (more agents,
#: copies or steps) takes the size asked for, capped at its own rollout
BATCH_SIZE_ATTR = "gridswarm_batch_size"


def resumable_hyperparameters(model) -> dict[str, Any]:
    """:func:`model_hyperparameters` of ``model``, with the ``batch_size`` its run asked
    for (:data:`BATCH_SIZE_ATTR`) where it stores one, not the one capped at that run's
    rollout: the settings ``python -m train --resume`` starts from."""
    settings = model_hyperparameters(model)
    asked = getattr(model, BATCH_SIZE_ATTR, None)
    if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 2:
        settings["batch_size"] = asked
    return settings


def model_env_settings(model) -> dict[str, Any] | None:
    """The environment and reward settings (:data:`~train.config.ENV_FIELDS`) ``model``
    was trained with, or None for a model saved without them (built outside ``train``
    or by an older version); fields it lacks are left out (a model saved before
    ``limits_sha256`` was recorded has none: the bytes of its limits file are unknown)."""
    stored = getattr(model, ENV_SETTINGS_ATTR, None)
    if not isinstance(stored, dict):
        return None
    return {name: stored[name] for name in ENV_FIELDS if name in stored}


def checkpoint_settings(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(:func:`resumable_hyperparameters`, :func:`model_env_settings`) of a saved model,
    loaded once.

    :raises ValueError: missing, corrupt or incompatible file (the message says which).
    """
    from policies.learned import load_maskable_ppo

    model = load_maskable_ppo(path)
    return resumable_hyperparameters(model), model_env_settings(model)


def checkpoint_hyperparameters(path: str | Path) -> dict[str, Any]:
    """:func:`resumable_hyperparameters` of a saved model.

    :raises ValueError: missing, corrupt or incompatible file (the message says which).
    """
    from policies.learned import load_maskable_ppo

    return resumable_hyperparameters(load_maskable_ppo(path))


def load_model(path: str | Path, venv: GridSwarmVecEnv | None = None, **changes: Any):
    """Load a saved ``MaskablePPO`` model (optionally attached to ``venv``).

    :param changes: with ``venv``: PPO settings to apply (names of
        :data:`~train.config.RESUMABLE_FIELDS`; SB3 sets them before it builds the
        rollout buffer and the schedules) and ``net_arch``, which must equal the
        saved network's.
    :raises ValueError: missing, corrupt or incompatible file (a model of other action
        levels than ``venv``'s: :func:`~policies.learned.check_model_action_levels`), or
        a ``net_arch`` other than the saved one (the message says which).
    """
    from sb3_contrib import MaskablePPO

    from policies.learned import check_model_action_levels, load_maskable_ppo

    model = load_maskable_ppo(path)          # file checks with readable errors
    if venv is None:
        if changes:
            raise ValueError("load_model: changes need a venv to attach the model to")
        return model
    # the command lines' one message for other action levels (SB3's names no fix)
    check_model_action_levels(model, venv.action_space.nvec, Path(path))
    arch = changes.pop("net_arch", None)
    saved = model_hyperparameters(model)["net_arch"]
    if arch is not None and tuple(arch) != saved:
        have = ",".join(map(str, saved))
        raise ValueError(f"net_arch (--net-arch) = {','.join(map(str, arch))}: the model being "
                         f"resumed, {str(path)!r}, has hidden layers {have} and a resumed "
                         f"model keeps its network (drop --net-arch or pass {have})")
    unknown = sorted(set(changes) - set(RESUMABLE_FIELDS))
    if unknown:
        raise ValueError(f"load_model: cannot change {', '.join(unknown)} of a saved model; "
                         f"allowed: net_arch (unchanged), {', '.join(RESUMABLE_FIELDS)}")
    try:
        return MaskablePPO.load(Path(path), env=venv, device="cpu", **changes)
    except ValueError as exc:   # SB3 reports space mismatches as ValueError
        raise ValueError(f"model file {str(path)!r} does not fit this environment: {exc}"
                         ) from None


def free_run_name(logdir: str | Path, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``… : the first name no entry of ``logdir`` has
    (runs started within the same second share a timestamp; a dangling symlink is an
    entry too: ``mkdir`` fails on it, and :func:`claim_run_dir` would retry it forever)."""
    name, k = base, 1
    while os.path.lexists(Path(logdir) / name):
        k += 1
        name = f"{base}-{k}"
    return name


def claim_run_dir(logdir: str | Path, base: str) -> Path:
    """Create ``<logdir>/<name>`` for a new run, ``name`` :func:`free_run_name`'s, and
    return it. The directory is made without ``exist_ok``: when another process makes it
    first (two runs started within the same second, a sweep launched in parallel) this
    run takes the next name, never a directory shared with it (whose event files,
    ``progress.csv`` and ``model.zip`` would mix with or replace its own)."""
    Path(logdir).mkdir(parents=True, exist_ok=True)
    while True:
        run_dir = Path(logdir) / free_run_name(logdir, base)
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir


def make_named_run_dir(run_dir: Path) -> None:
    """Create the directory of a run given its name (``--run-name``), without
    ``exist_ok``, as :func:`claim_run_dir` does for a default name:
    :meth:`TrainConfig.check_outputs` refuses one that exists before the work, and this
    one made since by another process (two runs started at once with the same name),
    whose event files and ``progress.csv`` would mix with this run's and whose
    ``model.zip`` one of them would replace.

    :raises ValueError: ``run_dir`` exists (the message names ``--run-name``).
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise ValueError(f"run directory {str(run_dir)!r} was created after this run "
                         "checked it, as by another run started with the same --run-name: "
                         "choose another --run-name") from None


def resume_seed(seed: int, num_timesteps: int) -> int:
    """The seed a resumed run gives SB3's ``set_random_seed`` (python, numpy, torch, the
    action space and the adapter's episode stream): the first 32-bit word of
    ``np.random.SeedSequence([seed, num_timesteps])``, so resuming a checkpoint starts a
    new, reproducible stream, not the one ``seed`` started at 0 agent-steps.

    :param seed: the run's ``TrainConfig.seed``.
    :param num_timesteps: the loaded model's agent-steps.
    """
    return int(np.random.SeedSequence([seed, num_timesteps]).generate_state(1)[0])


def _configure_logger(model, run_dir: Path, verbose: int) -> None:
    from stable_baselines3.common.logger import configure

    formats = ["tensorboard", "csv"] + (["stdout"] if verbose else [])
    model.set_logger(configure(str(run_dir), formats))


def train(config: TrainConfig, callbacks: Sequence[Any] = (),
          notes: Callable[[str], None] | None = None) -> Path:
    """Run one training job described by ``config``; return the saved model's path.

    Writes ``<model>.json`` beside the model (see the module docstring); its
    ``config`` holds the PPO settings read back from the model, i.e. the ones really
    used (e.g. ``batch_size`` capped at one rollout, a resumed model's values), and
    ``batch_size_requested``, the size asked for (stored in the model,
    :data:`BATCH_SIZE_ATTR`: a resume caps it at its own rollout).

    :param config: the run's settings.
    :param callbacks: extra SB3 callbacks, run after the grid-KPI and checkpoint ones
        (e.g. a subclass of :class:`~train.callbacks.EpisodeMetricsCallback`) and
        before :class:`~train.callbacks.DumpAfterUpdate`, so what they record at a rollout
        start or at the end of learning is written with that rollout's scalars.
    :param notes: called, once the run is set up and before it trains, with each of
        :meth:`TrainConfig.timestep_notes` (a budget rounded up to whole rollouts, a run
        too short to finish an episode); ``python -m train`` prints them on stderr.
    :raises ValueError: before any work: a resume file that is missing, corrupt or does
        not fit (or another ``net_arch``), an output that cannot be written.
    :raises OutputError: the model or its record could not be written where asked at
        the end; it was saved to the temporary directory instead (``exc.path``); or,
        without ``overwrite``, a model another run wrote at ``out`` since the check is
        there: this run's model and record were saved to the next free name beside it
        (``<out>-2.zip``, :func:`claim_atomically`; ``exc.path``).
    :raises TrainingError: an error once training had started (e.g. torch's
        ``RuntimeError`` sampling from the NaN logits of a diverged network): the record
        is written with an ``"error"`` entry (message, stage, ``num_timesteps``, last checkpoint,
        traceback) and the model is saved if all its weights (and optimizer state) are
        finite, else not (the message says which). A run that ends with non-finite
        weights is a failure too.
    :raises KeyboardInterrupt: Ctrl-C during behaviour cloning or learning, after saving
        the model (as far as it got) and the record (``interrupted_during``: ``"PPO"`` or
        ``"behaviour cloning (...)"``; ``behaviour_cloning`` has ``samples`` and
        ``epochs_done``) as ``<run dir>/<name>_interrupted.zip`` and ``.json``, never at
        ``out``; the message says where and what was saved. A Ctrl-C while the run is
        set up saves nothing, and its message says so; one while the model and record
        are written (a second Ctrl-C) stops there, and its message says which of them
        were written. The scalars recorded since the last update are written first.
        SIGTERM is handled the same way (raising :class:`~train.errors.Terminated`, a
        ``KeyboardInterrupt``; the record's ``interrupted_by`` says which), when
        ``train`` runs in the main thread (the only one that can handle signals).

    A run that fails or is interrupted never writes to ``out`` (which always holds a
    finished model): its model and record go to ``<run dir>/<name>_failed.zip`` or
    ``<run dir>/<name>_interrupted.zip`` (``<name>`` is ``out``'s, ``model`` by
    default). The scalars of SB3 and of the callbacks are written after every update,
    at the step of the rollout it learned from, the last one included
    (:class:`~train.callbacks.DumpAfterUpdate`).
    """
    # torch's thread count is the process's: restored when the run ends, however it ends
    with sigterm_as_interrupt(), using_torch_threads(config.torch_threads):
        return _train(config, callbacks, notes)


def _train(config: TrainConfig, callbacks: Sequence[Any],
           notes: Callable[[str], None] | None) -> Path:
    """:func:`train`'s work (SIGTERM already raises :class:`~train.errors.Terminated`)."""
    from stable_baselines3.common.callbacks import CallbackList

    from train.callbacks import (
        EPISODES_ATTR,
        AtomicCheckpointCallback,
        DumpAfterUpdate,
        EpisodeMetricsCallback,
        GradientClipMonitor,
        PlannedProgressBar,
        SystemCostEvaluation,
        stored_episodes,
    )

    t_start = time.time()
    run_name = config.run_name
    if run_name is None:   # a timestamp; runs started within the same second get -2, -3...
        run_name = free_run_name(config.logdir, config.default_run_name(t_start))
    run_dir = Path(config.logdir) / run_name
    config.check_outputs(run_name)
    out = config.model_path(run_dir)

    venv = None
    try:   # a Ctrl-C while the run is set up: say what (little) was written
        venv = make_venv(config)
        record: dict[str, Any] = {"config": _config_dict(config),
                                  # the environments' settings as a --config file
                                  "env_config_toml": env_config_toml(config.env_config()),
                                  "run_name": run_name,
                                  "run_dir": str(run_dir), "command": config.command,
                                  "scenario_randomization": _randomization(config),
                                  **_scenario_file_record(config)}
        if config.resume:
            changes = {name: getattr(config, name) for name in RESUMABLE_FIELDS}
            # capped at this run's rollout; the size asked for is stored (BATCH_SIZE_ATTR)
            changes["batch_size"] = minibatch_size(config.batch_size,
                                                   config.n_steps * venv.num_envs)
            try:
                model = load_model(config.resume, venv, net_arch=config.net_arch, **changes)
            except ValueError as exc:   # the checkpoint does not fit: named by its flag
                venv.close()
                raise ValueError(f"--resume: {exc}") from None
            # not config.seed itself: that would replay the episodes and the random stream
            # of the run that wrote the checkpoint
            # SB3 keeps the checkpoint's episode buffers (saved in the zip) on a resume:
            # rollout/ep_rew_mean would show the old run's returns (at its reward scale)
            # until this run had finished a window of its own; start them empty (SB3
            # makes new ones, of this run's window: whole episodes of its fleet)
            model._stats_window_size = stats_window_size(config.n_agents, config.n_envs)
            model.ep_info_buffer = model.ep_success_buffer = None
            seed = resume_seed(config.seed, int(model.num_timesteps))
            model.set_random_seed(seed)
            record["resumed_from"] = str(config.resume)
            record["resumed_at_timesteps"] = int(model.num_timesteps)
            # None: saved without the count (an older version): episodes numbered from 1
            record["resumed_at_episodes"] = stored_episodes(model)
            record["resume_seed"] = seed
            saved = model_env_settings(model)
            now = config.env_settings()
            record["checkpoint_env_settings"] = saved
            # an older checkpoint lacks the newer fields: it was trained without them
            trained = None if saved is None else {**UNSTORED_ENV_FIELDS, **saved}
            record["changed_on_resume"] = {} if trained is None else {
                name: {"checkpoint": trained[name], "now": now[name]}
                for name in ENV_FIELDS if name in trained and trained[name] != now[name]}
        else:
            model = make_model(config, venv)
        setattr(model, ENV_SETTINGS_ATTR, config.env_settings())   # saved with every model
        setattr(model, BATCH_SIZE_ATTR, int(config.batch_size))
        setattr(model, OBS_FIELDS_ATTR, list(OBS_FIELDS))   # checked by policies.learned
        # the per-episode tensorboard step goes on from it (EpisodeMetricsCallback)
        setattr(model, EPISODES_ATTR, stored_episodes(model) or 0)
        used = model_hyperparameters(model)
        record["config"].update(used, net_arch=list(used["net_arch"]),
                                batch_size_requested=int(config.batch_size))
        # made now, atomically: the name checked above may have been taken since by a
        # run started within the same second (or given the same --run-name)
        if config.run_name is None:
            run_dir = claim_run_dir(config.logdir, config.default_run_name(t_start))
            run_name, out = run_dir.name, config.model_path(run_dir)
            record.update(run_name=run_name, run_dir=str(run_dir))
        else:
            try:
                make_named_run_dir(run_dir)
            except ValueError:
                venv.close()
                raise
        out.parent.mkdir(parents=True, exist_ok=True)
        _configure_logger(model, run_dir, config.verbose)
        for note in config.timestep_notes() if notes is not None else ():
            notes(note)
    except KeyboardInterrupt as stop:   # Terminated (SIGTERM) stays one
        if venv is not None:
            venv.close()
        raise type(stop)(_interrupted_in_setup(run_dir)) from None

    metrics_cb = EpisodeMetricsCallback()
    clip_cb = GradientClipMonitor()
    dump_cb = DumpAfterUpdate()
    evaluation = None
    steps_before = int(model.num_timesteps)
    t_learn = time.time()
    interrupted = False
    stopped_by: KeyboardInterrupt | None = None   # Ctrl-C, or Terminated (SIGTERM)
    failure: Exception | None = None
    stage = "PPO"
    try:
        if config.bc_teacher and not config.resume:
            stage = "behaviour cloning"
            record["behaviour_cloning"] = bc = {"teacher": config.bc_teacher}
            _behaviour_clone(model, venv, config, bc)
            venv.seed(config.seed + 1)   # PPO starts a fresh, seeded episode stream
            t_learn = time.time()
            stage = "PPO"
        all_callbacks = [metrics_cb, clip_cb]
        if config.eval_every:   # made after the cloning: its clock is PPO's
            evaluation = SystemCostEvaluation(
                list(venv.scenario_table.values()), config.n_agents, config.eval_every,
                config.eval_seeds,
                best_path=run_dir / "best_model.zip", limits=config.kernel_limits(),
                env_config=config.env_config(),
                echo=lambda line: print(line, flush=True), randomize=config.randomize)
            all_callbacks.append(evaluation)
        if config.checkpoint_every:
            all_callbacks.append(AtomicCheckpointCallback(
                save_freq=max(config.checkpoint_every // venv.num_envs, 1),
                save_path=str(run_dir / "checkpoints"), name_prefix="model"))
        all_callbacks.extend(callbacks)
        if config.progress_bar:   # its total: the whole rollouts that will run
            all_callbacks.append(PlannedProgressBar(config.planned_timesteps()))
        # last: what the others record at a rollout start or at the end is in its dump
        all_callbacks.append(dump_cb)
        if config.total_timesteps:
            with unvalidated_distributions():
                model.learn(total_timesteps=config.total_timesteps,
                            callback=CallbackList(all_callbacks),
                            reset_num_timesteps=not config.resume, progress_bar=False,
                            tb_log_name=run_name,
                            log_interval=None)   # DumpAfterUpdate writes the scalars
        if evaluation is not None and not config.total_timesteps:
            stage = "evaluation"
            evaluation.init_callback(model)   # cloning only: judge the cloned model once
            evaluation.evaluate()   # writes its scalars itself (a dump: an empty csv row)
    except KeyboardInterrupt as stop:
        interrupted, stopped_by = True, stop
    except Exception as exc:   # e.g. torch sampling from the NaN logits of a diverged network
        failure = exc
    saved_to = record_to = None
    try:   # a second Ctrl-C while the model and record are written: say what was
        logs_problem = (_flush_logs(dump_cb) if interrupted or failure is not None
                        else None)
        # PPO's time: the cloning and the evaluations (--eval-every) are not training
        learn_s = 0.0 if stage == "behaviour cloning" else (
            time.time() - t_learn - (evaluation.eval_s if evaluation is not None else 0.0))
        bad_weights = nonfinite_weights(model)
        failed = failure is not None or (bool(bad_weights) and not interrupted)
        # an unfinished run never writes to `out`: its model and record go to the run directory
        target = (_unfinished_path(out, run_dir, "interrupted" if interrupted else "failed")
                  if interrupted or failed else out)
        if bad_weights:
            not_saved = (f"the model was not saved: its weights are not finite (NaN or inf in "
                         f"{_names(bad_weights)})")
            saved_to, problem = None, None
        else:
            not_saved = None
            saved_to, problem = save_model_or_rescue(model, target, out, config.overwrite)
        problems = [problem] if problem else []
        venv.close()
        steps = int(model.num_timesteps) - steps_before
        error = None
        if failed:
            error = _error_entry(failure, stage, model, run_dir, saved_to,
                                 not_saved or (problem if saved_to is None else None))
        record.update({
            "model": None if saved_to is None else str(saved_to),
            # what evaluate.py's results.md names a model by (the hash of its bytes)
            "model_sha256": None if saved_to is None else _sha256_of(saved_to),
            "interrupted": interrupted,
            "interrupted_during": _where(stage, record.get("behaviour_cloning"))
            if interrupted else None,
            "interrupted_by": None if stopped_by is None else (
                "SIGTERM" if isinstance(stopped_by, Terminated) else "Ctrl-C"),
            "error": error,
            "num_timesteps": int(model.num_timesteps), "timesteps_this_run": steps,
            "wall_time_s": round(time.time() - t_start, 1), "learn_time_s": round(learn_s, 1),
            "agent_steps_per_s": round(steps / learn_s, 1) if steps and learn_s > 0 else None,
            "episodes_finished": metrics_cb.n_episodes,
            # episodes with NaN or infinite KPIs, left out of the scalars (and of the means
            # below), and how many times each KPI was
            "nonfinite_kpis": {"episodes": metrics_cb.nonfinite_episodes,
                               "kpis": dict(metrics_cb.nonfinite)},
            "recent_episodes": _summarize(list(metrics_cb.episodes)),
            # how much the shared gradient-norm clip shrank the updates (1: not at all)
            "grad_clip_factor": clip_cb.summary(),
            "evaluation_during_training": None if evaluation is None else {
                "seeds": evaluation.seeds, "every": config.eval_every,
                "eval_s": round(evaluation.eval_s, 2),   # left out of learn_time_s
                "best_model": str(evaluation.best_path) if evaluation.best else None,
                "ranked_by": "relative_cost",
                "reference": {"policy": "heuristic", "per_scenario": evaluation.reference},
                "best": evaluation.best, "curve": evaluation.points},
            "obs_fields": list(OBS_FIELDS), "action_nvec": venv.action_space.nvec.tolist(),
            "versions": _versions(), "platform": platform.platform(),
        })
        if logs_problem:   # the last scalars could not be written (the run's error stands)
            record["logs_flush_error"] = logs_problem
        text = json.dumps(record, indent=2, default=str) + "\n"
        record_path = _record_path(target, saved_to, run_dir)
        record_to, problem = write_or_rescue(record_path, lambda p: _write_text(p, text),
                                             "the training record")
        problems += [problem] if problem else []
    except KeyboardInterrupt as stop:
        with contextlib.suppress(Exception):
            venv.close()
        raise type(stop)(_interrupted_finishing(
            config, model, run_dir, out, interrupted, failure, stage, saved_to, record_to)
        ) from None
    if error is not None:
        where = (f"the model was saved to {saved_to}" if saved_to is not None
                 else not_saved or "; ".join(problems) or "the model was not saved")
        last = (f"last checkpoint {error['last_checkpoint']}" if error["last_checkpoint"]
                else "no checkpoint was written")
        kept = (f"training record {record_to}" if record_to is not None
                else "the training record was lost")
        untouched = f"; --out {out} was not written" if config.out else ""
        raise TrainingError(
            f"training failed at {error['num_timesteps']:,} agent-steps ({stage}): "
            f"{error['type']}: {error['message']}; {where}; {last}; {kept}{untouched}",
            num_timesteps=error["num_timesteps"], stage=stage, model=saved_to,
            checkpoint=None if error["last_checkpoint"] is None
            else Path(error["last_checkpoint"]),
            record=record_to) from failure
    if interrupted:
        by = " by SIGTERM" if isinstance(stopped_by, Terminated) else ""
        head = (f"interrupted{by} during {record['interrupted_during']} at "
                f"{int(model.num_timesteps):,} agent-steps")
        if not_saved:
            problems.insert(0, not_saved)
        parts = [head, *problems] if problems else [
            head, f"the unfinished model was saved to {saved_to}"]
        parts.append(f"training record {record_to}" if record_to is not None
                     else "the training record was lost")
        if config.out:
            parts.append(f"--out {out} was not written")
        raise type(stopped_by)("; ".join(parts))
    if problems:
        raise OutputError("; ".join(problems), path=saved_to)
    return out


def _behaviour_clone(model, venv: GridSwarmVecEnv, config: TrainConfig,
                     progress: dict[str, Any]) -> None:
    """Pre-train ``model`` by cloning ``config.bc_teacher`` (:mod:`train.bc`), keeping
    ``progress`` (the record's ``behaviour_cloning``) up to date as it goes, so that a
    Ctrl-C or an error leaves in it how far the cloning got: ``samples`` (0 while the
    demonstrations are collected) and ``epochs_done`` of ``epochs``, then the final
    statistics and ``wall_time_s``."""
    from train.bc import behaviour_clone, collect_demonstrations

    t_bc = time.time()
    progress.update(samples=0, epochs=config.bc_epochs, epochs_done=0)
    demos = collect_demonstrations(venv, config.bc_teacher, config.bc_timesteps,
                                   config.gamma)
    progress["samples"] = len(demos)

    def on_epoch(done: int, stats: dict[str, float]) -> None:
        progress.update(stats, epochs_done=done)

    stats = behaviour_clone(model, demos, epochs=config.bc_epochs,
                            learning_rate=config.bc_learning_rate, vf_coef=config.vf_coef,
                            seed=config.seed, on_epoch=on_epoch)
    for key, value in stats.items():
        model.logger.record(f"bc/{key.removeprefix('bc_')}", value)
    model.logger.dump(0)
    progress.update(stats, wall_time_s=round(time.time() - t_bc, 1))


def _interrupted_in_setup(run_dir: Path) -> str:
    """The message of a Ctrl-C before training began (no model, no record)."""
    if run_dir.is_dir():
        return (f"interrupted before training started: no model and no record were "
                f"written (only the run directory {run_dir}, with empty logs)")
    return "interrupted before training started: nothing was written"


def _flush_logs(dump_cb) -> str | None:
    """After a Ctrl-C or an error in learning, write the scalars recorded since the last
    dump (the interrupted rollout's grid KPIs, ``time/fps``) through ``dump_cb``
    (:class:`~train.callbacks.DumpAfterUpdate`, whose end-of-learning dump SB3 skips
    then). A logger that fails is reported, never raised: the run's own error (or
    Ctrl-C) stays the one reported.

    :returns: None, or the logger's error as one line (kept in the record).
    """
    if getattr(dump_cb, "model", None) is None:   # learning never started (e.g. cloning)
        return None
    try:
        dump_cb.dump()
    except Exception as exc:
        return f"the last scalars were not written: {type(exc).__name__}: {exc}"
    return None


def _interrupted_finishing(config: TrainConfig, model, run_dir: Path, out: Path,
                           interrupted: bool, failure: Exception | None, stage: str,
                           saved_to: Path | None, record_to: Path | None) -> str:
    """The message of a Ctrl-C while the model and its record were being written (e.g. a
    second Ctrl-C after the first stopped training): how training had ended and what
    was written, each output named."""
    how = ("interrupted" if interrupted else f"failed ({type(failure).__name__})"
           if failure is not None else "ended")
    parts = [f"interrupted while the model and its record were written (training had "
             f"{how} during {stage} at {int(model.num_timesteps):,} agent-steps)",
             f"the model was saved to {saved_to}" if saved_to is not None
             else "the model was not saved",
             f"training record {record_to}" if record_to is not None
             else "the training record was not written"]
    ckpt = last_checkpoint(run_dir)
    parts.append(f"last checkpoint {ckpt}" if ckpt is not None else "no checkpoint was written")
    parts.append(f"logs in {run_dir}")
    if config.out and saved_to != out:
        parts.append(f"--out {out} was not written")
    return "; ".join(parts)


def _where(stage: str, bc: dict[str, Any] | None) -> str:
    """Where the run was, for the record's ``interrupted_during`` and the messages."""
    if stage != "behaviour cloning" or bc is None:
        return stage
    if not bc.get("samples"):
        return "behaviour cloning (collecting demonstrations)"
    return f"behaviour cloning (fitting: {bc['epochs_done']} of {bc['epochs']} epochs done)"


def nonfinite_weights(model) -> list[str]:
    """Names of the tensors of ``model``'s policy (``model.policy.state_dict()``) and of
    its optimizer's state (Adam's moments, which a resumed run would step with) that hold
    a NaN or an infinity; empty when every value is finite."""
    return [name for name, _ in nonfinite_tensors(model, optimizer=True)]


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more"
                                       if len(names) > shown else "")


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``<run_dir>/checkpoints/model_<N>_steps.zip`` (largest N), or None."""
    def steps(p: Path) -> int:
        middle = p.stem.removeprefix("model_").removesuffix("_steps")
        return int(middle) if middle.isdigit() else -1

    found = [p for p in (run_dir / "checkpoints").glob("model_*_steps.zip") if steps(p) >= 0]
    return max(found, key=steps) if found else None


def _error_entry(failure: Exception | None, stage: str, model, run_dir: Path,
                 saved_to: Path | None, not_saved: str | None) -> dict[str, Any]:
    """The record's ``"error"``: what failed, where, and what was kept."""
    import traceback

    if failure is None:   # learning ended normally, but the last update left NaN or inf
        kind, text, trace = ("NonFiniteWeights", "the network's weights are not finite "
                             "after the last update", None)
    else:
        kind = type(failure).__name__
        lines = str(failure).strip().splitlines()
        text = (lines[0] if lines else "") or "(no message)"
        text = text if len(text) <= 500 else text[:497] + "..."
        trace = "".join(traceback.format_exception(failure))[-20_000:]
    ckpt = last_checkpoint(run_dir)
    return {"type": kind, "message": text, "stage": stage,
            "num_timesteps": int(model.num_timesteps),
            "last_checkpoint": None if ckpt is None else str(ckpt),
            "model_saved": saved_to is not None, "model_not_saved": not_saved,
            "traceback": trace}


def _unfinished_path(out: Path, run_dir: Path, how: str) -> Path:
    """Where the model of a run that did not finish goes (``how``: ``"interrupted"`` or
    ``"failed"``): ``<run>/<name>_interrupted.zip`` or ``<run>/<name>_failed.zip`` (its
    record beside it), never ``out``: a file there always holds a finished model, and an
    earlier one (``--overwrite``) is never replaced by an unfinished one."""
    return run_dir / f"{out.stem}_{how}{out.suffix}"


def _record_path(target: Path, saved_to: Path | None, run_dir: Path) -> Path:
    """Where the training record goes: beside the model saved, else beside ``target``
    (``out``, or the unfinished run's path in the run directory); but if no model was
    saved and a file is at ``target`` (an earlier model that ``--overwrite`` would have
    replaced), into the run directory, so that model keeps its own record."""
    if saved_to is not None:
        return saved_to.with_suffix(".json")
    if target.exists():
        return run_dir / f"{target.stem}.json"
    return target.with_suffix(".json")


def _sha256_of(path: Path) -> str | None:
    """:func:`~policies.cli_checks.file_sha256`, or None if the model cannot be read back
    (the record is still written, without the hash)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()))


def save_model_or_rescue(model, target: Path, out: Path, overwrite: bool
                         ) -> tuple[Path | None, str | None]:
    """Save ``model`` at ``target`` (:func:`~policies.cli_checks.write_or_rescue`: where
    that fails, to the temporary directory instead); at ``out`` without ``overwrite``
    never over a model another run wrote there since the check (:func:`claim_atomically`:
    the next free name beside it instead).

    :returns: (where it was saved or None, one line saying where and why when that is
        not ``target``, else None).
    """
    saved, problem = write_or_rescue(
        target, lambda p: _save_model(model, p, overwrite or p != out), "the model")
    if problem is None and saved != target:
        problem = claimed_elsewhere(target, saved)
    return saved, problem


def _save_model(model, path: Path, replace: bool = True) -> Path:
    """``model.save``, to a temporary file beside ``path`` renamed over it once complete
    (:func:`replace_atomically`: a crash never leaves a half-written model, and an
    existing model stays whole until then), or with ``replace`` False put there by
    :func:`claim_atomically` (never over another run's model: the next free name
    instead); a directory in the way is an error (SB3 would write to ``<path>_2``
    instead and say so only in a warning). Returns the path written."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not replace:
        return claim_atomically(path, model.save)
    replace_atomically(path, model.save)
    return path


def _written_beside(path: Path, write) -> Path:
    """A new temporary file ``.<name>.<pid>-<random>.part`` beside ``path``, written
    through ``write(file object)`` and flushed to disk; removed on any error."""
    import secrets

    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace_atomically(path: Path, write) -> None:
    """Write a file through ``write(file object)`` to ``.<name>.<pid>-<random>.part``
    beside ``path``, flush it to disk and ``os.replace`` it over ``path`` (atomic on one
    file system); on any error the temporary file is removed and ``path`` is untouched.

    :raises OSError: the temporary file could not be written or renamed.
    """
    tmp = _written_beside(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def claim_atomically(path: Path, write, record_suffix: str = ".json") -> Path:
    """Write a new file at ``path`` as :func:`replace_atomically` does, but never over a
    regular file that is not empty: the up-front check of ``--out`` without
    ``--overwrite`` refused one, so one there now was written since, as by another run
    given the same ``--out`` (both passed the check, and the later one replaced the
    other's model). The complete temporary file is hard-linked to ``path`` (``os.link``
    fails atomically when anything is there), else to the next free name,
    ``<stem>-2<suffix>``, ``-3``… (as run directories take ``-2``), where its record
    ``<stem>-k<record_suffix>`` is free too. What the check allows is still replaced
    (an empty file, as made by ``touch``, or a dangling symbolic link: only the moment
    between looking at it and replacing it is unguarded, not the run); a directory
    raises ``IsADirectoryError`` as :func:`replace_atomically` does. Where the file
    system has no hard links, an exclusive create (``O_CREAT | O_EXCL``) claims the
    name instead.

    :returns: the path written (``path``, or the free name taken).
    :raises OSError: the temporary file could not be written or put in place (it is
        removed; no file is changed).
    """
    tmp = _written_beside(path, write)
    try:
        k, target = 1, path
        while not _put_new(tmp, target, target.with_suffix(record_suffix)):
            k += 1
            target = path.with_name(f"{path.stem}-{k}{path.suffix}")
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _holds_data(path: Path) -> bool:
    """A regular file that is not empty is at ``path`` (through a symbolic link too)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:   # nothing there, or a dangling symbolic link
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size > 0


def _put_new(tmp: Path, path: Path, record: Path) -> bool:
    """Put ``tmp`` at ``path`` (:func:`claim_atomically`) unless ``path`` or its
    ``record`` holds data; True when it did."""
    if _holds_data(record):
        return False
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        pass
    except OSError:   # no hard links on this file system (e.g. FAT, some network ones)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            pass
        else:   # the name is this run's: only a run that replaces would take it now
            os.replace(tmp, path)
            return True
    if _holds_data(path):
        return False
    os.replace(tmp, path)
    return True


def claimed_elsewhere(out: Path, saved: Path, what: str = "the model") -> str:
    """The message of a model :func:`claim_atomically` saved under another name than
    ``out`` (``write_or_rescue``'s words)."""
    return (f"could not write {what} to {str(out)!r} (a file appeared there during the run, "
            f"as another run given the same --out writes, and is kept; --overwrite "
            f"replaces it); saved it to {str(saved)!r} instead, its record beside it")


def _randomization(config: TrainConfig) -> dict[str, Any] | None:
    """The record's ``scenario_randomization``: the preset ``--randomize`` applied, in
    numbers and words, or None (the fixed scenarios)."""
    from gridswarm_env.scenarios import RANDOMIZE_PRESET, randomize_text

    if not config.randomize:
        return None
    return {**RANDOMIZE_PRESET, "text": randomize_text()}


def _scenario_file_record(config: TrainConfig) -> dict[str, Any]:
    """The record's ``scenario_file`` of a run on a scenario file (nothing for a
    registered name or ``"all"``): its absolute ``path``, the ``sha256`` of the bytes
    read, their ``text`` (save it as FILE.toml to train on it again) and ``scenario``,
    every field of the scenario played (``evaluate.scenario_from_record`` rebuilds it,
    also if the registered scenario the file's ``base`` names changes)."""
    from gridswarm_env.scenarios import scenario_record

    file = config.scenario_file()
    if file is None:
        return {}
    return {"scenario_file": {
        "path": str(Path(file.path).resolve()), "sha256": file.sha256, "text": file.text,
        "scenario": scenario_record(file.scenario)}}


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["net_arch"] = list(config.net_arch)
    return d


def _summarize(episodes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of the headline KPIs over recent episodes, per scenario (NaN and infinite
    values left out, as None ones)."""
    keys = ("system_cost", "unserved_energy_mwh", "frequency_nadir_hz",
            "seconds_outside_band", "consensus_rate", "blocked_attempts")
    out: dict[str, dict[str, float]] = {}
    for name in sorted({str(m.get("scenario")) for m in episodes}):
        group = [m for m in episodes if str(m.get("scenario")) == name]
        out[name] = {"episodes": len(group)}
        for k in keys:
            vals = [float(m[k]) for m in group if isinstance(m.get(k), int | float)
                    and is_finite_or_none(m[k])]
            if vals:
                out[name][k] = float(np.mean(vals))
    return out


def _versions() -> dict[str, str]:
    import gymnasium
    import sb3_contrib
    import stable_baselines3
    import torch

    import gridswarm_env

    return {"python": sys.version.split()[0], "gridswarm": gridswarm_env.__version__,
            "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "sb3_contrib": sb3_contrib.__version__, "gymnasium": gymnasium.__version__,
            "numpy": np.__version__}
