"""Training settings and the choices the command line offers (importing this loads no torch).

:class:`TrainConfig` is the CleanRL-style dataclass of one run (every field
documented, validated in ``__post_init__``); :func:`resolve_scenarios` turns a
``scenario`` argument into scenario names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gridswarm_env.config import (
    AGENT_LIMIT_WHY,
    INT_TYPES,
    MAX_AGENTS,
    TRUST_MODES,
    EnvConfig,
    check_agent_limit,
    check_bool,
    check_choice,
    check_finite,
    check_int_at_least,
    check_int_at_most,
    check_non_negative,
    check_path,
    check_positive,
    check_range,
    store,
)
from gridswarm_env.scenarios import (
    SCENARIOS,
    Scenario,
    ScenarioFile,
    check_randomizable,
    is_scenario_file,
    read_scenario_file,
    scenario_names,
    unknown_scenario_text,
)
from policies.cli_checks import (
    check_governor_deadband,
    check_output_dir,
    check_output_file,
    check_path_names,
    directory_syntax_problem,
)
from policies.learned import MAX_TORCH_THREADS, TORCH_THREADS_WHY

#: ``reward`` modes of :class:`~train.adapter.GridSwarmVecEnv`.
REWARD_MODES = ("env", "marginal")
#: teachers for behaviour-cloning pre-training (:mod:`train.bc`).
TEACHERS = ("heuristic", "oracle")
#: PPO fields of :class:`TrainConfig` that a resumed model takes from the config
#: (``net_arch`` cannot change: it is the shape of the saved network).
RESUMABLE_FIELDS = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma",
                    "gae_lambda", "clip_range", "ent_coef", "vf_coef", "max_grad_norm",
                    "target_kl")

#: the largest ``TrainConfig.seed``: numpy's global seed is 32-bit, and behaviour
#: cloning reseeds the episode stream with ``seed + 1``.
MAX_SEED = 2**32 - 2
#: why :data:`MAX_SEED` (appended to the messages that state the bound)
SEED_WHY = (" (numpy's seeds are 32-bit and behaviour cloning seeds PPO's episode "
            "stream with seed + 1)")
#: first seed of the ``eval_every`` evaluation episodes (seeds ``EVAL_SEED_BASE + k``,
#: k < ``eval_seeds``): among :data:`policies.rollout.EVAL_SEEDS`, which training never
#: plays (:func:`train.adapter.training_episode_seed`)
EVAL_SEED_BASE = 10_000
#: why ``eval_seeds`` has an upper bound (its message)
EVAL_SEEDS_WHY = ("the seeds 10,000 + k must stay among the evaluation seeds, 0..99,999, "
                  "which training never plays")
#: the widest hidden layer of ``net_arch``: a 4,096 x 4,096 layer holds 16.8 M weights;
#: much wider ones exhaust memory (or overflow torch's sizes) before anything trains
MAX_LAYER_SIZE = 4096
#: the largest PPO rollout, ``n_steps x n_envs x n_agents`` agent-steps: SB3's rollout
#: buffer keeps ~0.3 kB for each (observation, action mask, value, advantage...)
MAX_ROLLOUT = 10_000_000
#: fields of :class:`TrainConfig` that define the environment and the reward the policy
#: learns, and ``n_envs`` (the copies stacked: the rollout's size and, with scenario
#: "all", its mix of scenarios): every model ``train`` saves (the model, checkpoints, the
#: best model) stores them (:meth:`TrainConfig.env_settings`), and ``python -m train
#: --resume`` takes them from the checkpoint for every flag not given
#: (``limits_sha256``, ``env_config_sha256`` and ``scenario_sha256``, which have no flag,
#: are checked instead: a resume on the checkpoint's limits, config or scenario file
#: refuses other bytes). A checkpoint saved before ``n_envs``
#: was stored resumes with 1 copy unless ``--envs`` is given.
ENV_FIELDS = ("scenario", "scenario_sha256", "randomize", "n_agents", "n_envs", "limits",
              "limits_sha256", "env_config_file", "env_config_sha256", "governor_deadband_hz", "reward",
              "marginal_weight", "reward_scale", "reward_clip")
#: (field, its hash field, flag) of the files a run reads once and records by hash:
#: ``python -m train --resume`` without the flag reuses the checkpoint's file and
#: refuses it when its bytes changed
HASHED_FILES = (("limits", "limits_sha256", "--limits"),
                ("env_config_file", "env_config_sha256", "--config"),
                ("scenario", "scenario_sha256", "--scenario"))
#: what a checkpoint saved before these :data:`ENV_FIELDS` were stored was trained with
#: (no config file, no governor deadband): ``--resume`` compares it with the run's
#: values, so a resume that adds a file or a deadband is named in ``changed_on_resume``
UNSTORED_ENV_FIELDS = {"env_config_file": None, "env_config_sha256": None,
                       "governor_deadband_hz": None, "scenario_sha256": None}
#: EnvConfig fields a training config file may not set, and why: TrainConfig sets them
#: (``n_agents``, ``trust``), or training cannot use them
TRAIN_SET_FIELDS = {"n_agents": "training takes it from --agents; remove it from the file",
                    "trust": "training takes it from --trust; remove it from the file",
                    "shadow": "training dispatches the contracts (no shadow mode); remove "
                              "it from the file"}
#: the subset of :data:`ENV_FIELDS` that defines the reward (a resumed model's critic
#: has learned its values): ``python -m train`` warns when a resume changes one.
REWARD_FIELDS = ("reward", "marginal_weight", "reward_scale", "reward_clip")


def names_a_file(name: str, value: object) -> bool:
    """Whether ``value`` of the :data:`HASHED_FILES` field ``name`` names a file: any
    value but None, except for ``scenario``, which names a file only when it ends in
    ``.toml`` (:func:`~gridswarm_env.scenarios.is_scenario_file`; else a registered
    name or ``"all"``)."""
    if value is None:
        return False
    return name != "scenario" or (isinstance(value, str) and is_scenario_file(value))


def resolve_scenarios(scenario: str | Sequence[str]) -> tuple[str, ...]:
    """Scenario names to train on: one name, ``"all"`` or a sequence of names.

    :raises ValueError: for an unknown name (the message lists the known ones) or an
        empty sequence.
    """
    known = scenario_names()
    names = known if scenario == "all" else (
        (scenario,) if isinstance(scenario, str) else tuple(scenario))
    if not names:
        raise ValueError(f"scenario: empty; allowed: all, {', '.join(known)}")
    for name in names:
        if name not in known:
            raise ValueError(f"scenario = {name!r}: allowed values are all, {', '.join(known)}")
    return names


def max_eval_seeds() -> int:
    """The most ``eval_seeds``: seeds :data:`EVAL_SEED_BASE` + k stay below the end of
    :data:`policies.rollout.EVAL_SEEDS` (90 000)."""
    from policies.rollout import EVAL_SEEDS

    return EVAL_SEEDS.stop - EVAL_SEED_BASE


def check_eval_seeds(owner: str, name: str, value: Any) -> int:
    """A count of ``eval_every`` evaluation seeds: an integer from 1 to
    :func:`max_eval_seeds` (:data:`EVAL_SEEDS_WHY`), returned as an int.

    :raises ValueError: naming ``owner.name``, the value and what is allowed.
    """
    count = check_int_at_least(owner, name, value, 1)
    check_int_at_most(owner, name, count, max_eval_seeds(), EVAL_SEEDS_WHY)
    return count


def check_step_size(owner: str, name: str, value: Any) -> float:
    """A step size (Adam's learning rate) or PPO's ratio clip: a finite number in (0, 1].
    Above 1 is no setting Adam or PPO is used with: refused before training (--lr 1e308
    failed only once the weights had gone non-finite)."""
    return check_range(owner, name, value, 0.0, 1.0, lo_open=True)


def minibatch_size(batch_size: int, rollout: int) -> int:
    """The minibatch PPO trains with: ``batch_size`` capped at one rollout (the cap
    applies per run: a resumed model keeps the size asked for, not the capped one)."""
    return min(batch_size, rollout)


def lone_sample_problem(n_steps: int, n_envs: int, n_agents: int,
                        batch_size: int) -> str | None:
    """Why these settings would make every PPO update fail, or None: a rollout of
    ``n_steps x n_envs x n_agents`` agent-steps that leaves exactly one sample after its
    full minibatches of :func:`minibatch_size`. MaskablePPO (sb3-contrib 2.9) normalizes
    each minibatch's advantages by their standard deviation, which is NaN for one sample
    (SB3's own PPO skips the normalization there): the first update makes every weight
    NaN and the run fails with torch's "probability tensor contains ... nan"."""
    rollout = n_steps * n_envs * n_agents
    size = minibatch_size(batch_size, rollout)
    if rollout % size != 1:
        return None
    below = next((b for b in range(size - 1, 1, -1) if rollout % b != 1), None)
    above = next((b for b in range(size + 1, rollout + 1) if rollout % b != 1), None)
    fits = [b for b in (below, above) if b is not None]   # the nearest on each side
    return (f"a rollout of n_steps {n_steps} x n_envs {n_envs} x n_agents {n_agents} = "
            f"{rollout:,} agent-steps leaves a last minibatch of one sample after its "
            f"full minibatches of {size:,}, and MaskablePPO normalizes a minibatch's "
            "advantages by their standard deviation (NaN for one sample): the first "
            "update would make every weight NaN. Use batch_size "
            f"{' or '.join(f'{b}' for b in fits)}, or another n_steps, n_envs or n_agents")


def names_a_directory(out: str) -> bool:
    """``out`` (an ``--out`` model path) ends with a path separator or is a directory
    (``python -m train`` and ``python -m train.dagger`` refuse it: ``X/`` would write the
    model as the hidden file ``X/.zip``, a directory ``X`` as ``X.zip`` beside it). A
    name the file system refuses (too long) is no directory: the path checks word it.
    The separator rule is :func:`~policies.cli_checks.directory_syntax_problem`'s."""
    if directory_syntax_problem(out) is not None:
        return True
    try:
        return Path(out).is_dir()
    except OSError:
        return False


def record_suffix_problem(out: str) -> str | None:
    """Why ``out`` cannot name a model file, or None: a name ending in ``.json`` (the
    training record's suffix) would write ``X.json.zip`` and its record ``X.json.json``
    (``python -m train`` and ``python -m train.dagger`` share this rule)."""
    if not out.lower().endswith(".json"):
        return None
    return ("the model is a .zip and its training record is written beside it as .json "
            f"(this would write {out}.zip and {out}.json); expected a model path such as "
            f"{out[:-len('.json')]}.zip")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (validated; errors name the field and what is
    allowed). Values are stored as plain Python values, so the config is hashable and
    its record plain JSON: numbers (numpy scalars too) as int or float, ``net_arch`` as
    a tuple of ints, the paths (``logdir``, ``out``, ``resume``, ``limits``: a str or
    an :class:`os.PathLike` such as a :class:`~pathlib.Path`) as str.

    :param scenario: a scenario name, ``"all"`` (mixed across episodes in a seeded
        cycle, see :class:`~train.adapter.GridSwarmVecEnv`) or a scenario file ending in
        ``.toml`` (:func:`~gridswarm_env.scenarios.read_scenario_file`, as
        ``evaluate.py --scenarios`` and ``demo.py --scenario`` take), read once when the
        config is made (:meth:`scenarios`) and hashed (``scenario_sha256``, checked on
        ``--resume`` as the limits file's; the run's record holds the file's text).
    :param scenario_sha256: not an argument: the SHA-256 (hex) of the scenario file's
        bytes (None for a registered name or ``"all"``).
    :param randomize: play every scenario randomized per episode
        (:data:`gridswarm_env.scenarios.RANDOMIZE_PRESET`, ``--randomize``: the load step
        and the trip x (1 ± 10 %), their times ± 5 s, drawn from the episode's seed), in
        training and in the ``eval_every`` evaluations (the heuristic's reference costs
        too); False: the fixed scenarios.
    :param total_timesteps: PPO agent-steps to train for in this run (with ``resume``:
        on top of the loaded model's count, SB3's ``reset_num_timesteps=False``); 0 =
        behaviour cloning only (needs ``bc_teacher``).
    :param n_agents: agents per environment copy.
    :param n_envs: environment copies stacked in the adapter.
    :param trust: contract signatures, ``"hmac"`` (fast, default) or ``"ed25519"``.
    :param seed: seeds torch, numpy, the adapter's episode stream and BC shuffling,
        0..:data:`MAX_SEED`; environment copy ``e`` of ``n_envs`` draws its episodes from
        ``SeedSequence(seed, spawn_key=(e,))``, copy 0 from ``seed`` itself
        (:func:`train.adapter.copy_seed_sequence`). With
        ``resume`` the seed used is :func:`train.trainer.resume_seed` of it and the
        model's agent-steps (``SeedSequence([seed, num_timesteps])``): a resumed run does
        not replay the episodes and random stream of the run that wrote the checkpoint.
    :param logdir: parent directory of run directories.
    :param out: model file to write (default ``<logdir>/<run name>/model.zip``);
        ``.zip`` is appended when the name does not end with it (SB3 writes ``X.zip``
        for a name ``X`` without suffix), so ``out`` is the file really written (a name
        ending in ``.json``, the record's suffix, is refused). An
        existing file there, or its record ``<out>.json``, is refused unless ``overwrite``.
    :param overwrite: replace an existing ``out`` model and its record (the new model is
        written to a temporary file beside it and renamed over it once complete).
    :param resume: a saved model (.zip) to continue training; a path without ``.zip``
        that is not a file names its ``.zip`` sibling (as ``out`` does), and is stored as
        that. The PPO fields below
        (:data:`RESUMABLE_FIELDS`) are applied to it: SB3 sets them before it rebuilds
        the rollout buffer and the learning-rate schedule. ``net_arch`` is the saved
        network's shape and must equal the checkpoint's. The environment and reward
        fields (:data:`ENV_FIELDS`) are this config's too; the ones the checkpoint was
        trained with are in the record (``checkpoint_env_settings``) with any that
        differ (``changed_on_resume``). ``python -m train --resume`` fills the PPO and
        environment fields whose flags are not given from the checkpoint. No behaviour
        cloning (``bc_teacher`` must be None).
    :param checkpoint_every: save a checkpoint every this many agent-steps (0: never).
    :param eval_every: judge the model by ``system_cost`` about every this many agent-steps
        (0: never; :class:`~train.callbacks.SystemCostEvaluation`): greedy episodes on
        ``eval_seeds`` held-out seeds per scenario, ``eval/…`` tensorboard scalars, the
        best model so far saved as ``<run dir>/best_model.zip`` and the curve in the
        record. The reward is each DER's profit, so the last model need not be the best.
    :param eval_seeds: evaluation episodes per scenario (seeds :data:`EVAL_SEED_BASE` + k;
        at most :func:`max_eval_seeds`, 90 000, so that they stay evaluation seeds).
    :param reward: ``"env"`` (the env's per-agent reward) or ``"marginal"`` (plus each
        agent's averted value of lost load, :func:`~train.adapter.marginal_reward_term`).
    :param marginal_weight: weight of that term.
    :param reward_scale: multiplier of the rewards the learner sees (the env's are $ x 100).
    :param reward_clip: clip of the scaled rewards, > 0 (None: none). An EV that leaves short
        of its departure energy costs the env reward up to ~10⁵ in one step, mostly
        beyond any bid's control (the same under every policy); unclipped, these spikes
        dominate the critic's loss and the normalized advantages. With the default fleet
        no EV leaves within the shipped scenarios and the scaled rewards stay below ~0.5
        at 100 agents (they scale as ``1/n_agents``; up to ~10 at 1-3 agents under random
        play), so on the env reward the default clip binds in configurations whose EVs
        leave and, rarely, under poor play with 1-3 agents (1 of 300 random
        ``price_spike`` steps at 1 agent); on ``reward="marginal"`` it binds in ~0.4 % of
        heuristic agent-steps at 100 agents and ~19 % at 20 (see :mod:`train.adapter`,
        *Reward scale*).
    :param learning_rate: Adam step size of PPO.
    :param n_steps: steps per slot per rollout (rollout = ``n_steps · num_envs`` samples).
    :param batch_size: PPO minibatch size (samples).
    :param n_epochs: PPO passes over each rollout.
    :param gamma: discount per step (1 s).
    :param gae_lambda: GAE λ.
    :param clip_range: PPO ratio clip.
    :param ent_coef: entropy bonus weight.
    :param vf_coef: value-loss weight.
    :param max_grad_norm: gradient-norm clip.
    :param target_kl: stop an update's epochs early past 1.5 x this KL (None: off).
    :param net_arch: hidden layer sizes of the actor and of the critic (separate MLPs).
    :param bc_teacher: policy to behaviour-clone first (``"heuristic"``, ``"oracle"``)
        or None (no pre-training).
    :param bc_timesteps: agent-steps of teacher demonstrations.
    :param bc_epochs: passes over the demonstrations.
    :param bc_learning_rate: Adam step size of the cloning phase.
    :param torch_threads: torch intra-op threads (``--torch-threads``). A run repeats bit
        for bit with the same seed and thread count; another count gives other weights
        (float sums in another order). 2 threads trained 1.2-1.3x as fast as 1 at 100
        agents on 2 free cores (three alternated pairs of 6 rollouts: 23 600 / 30 900,
        24 800 / 29 400, 24 700 / 29 600 agent-steps/s), but 3-75x slower than 1 with
        another process busy on the second core (259-6 800 against ~20 000, ``python -m
        benchmarks.bench_train --quick --torch-threads 2``; ``python -m train`` warns,
        see :func:`train.__main__.threads_warning`); the shipped models used 1.
    :param progress_bar: show SB3's progress bar.
    :param verbose: SB3 verbosity (0 silent, 1 tables on stdout).
    :param run_name: run directory name, a plain name (no ``/``, not ``.`` or ``..``;
        default built from scenario, seed, time).
    :param limits: kernel limits TOML file (DESIGN §6) for the training environments and
        the ``eval_every`` evaluations; None: the default limits. The file is read once,
        when the config is made: those bytes are checked (agents the fleet has, see
        :func:`~policies.cli_checks.read_limits_agents`), parsed (:meth:`kernel_limits`,
        what every environment of the run is given) and hashed (``limits_sha256``); a
        file changed afterwards does not reach the run.
    :param limits_sha256: not an argument: the SHA-256 (hex) of the bytes of ``limits``
        read when the config was made (None without ``limits``). Recorded with the
        settings of every saved model (:meth:`env_settings`): ``python -m train
        --resume`` refuses a checkpoint's limits file whose bytes have changed since.
    :param env_config_file: a TOML file of ``EnvConfig`` settings
        (:mod:`gridswarm_env.config_file`, ``--config``) for the training environments and
        the ``eval_every`` evaluations; None: the defaults. Read once, when the config is
        made, and hashed (``env_config_sha256``, checked on ``--resume`` as the limits
        file's); ``n_agents``, ``trust`` and ``shadow`` other than the defaults are
        refused (``n_agents`` and ``trust`` above set them).
    :param env_config_sha256: not an argument: the SHA-256 (hex) of that file's bytes.
    :param governor_deadband_hz: the governors' deadband of those environments, Hz
        (``GridParams.governor_deadband_hz``, 0 to 0.5; ``--governor-deadband-hz``);
        None: the ``env_config_file``'s, else 0 (none, DESIGN's model). A checkpoint
        saved before this field existed was trained without one.
    :param command: the command line that started the run (recorded in the JSON).
    """

    scenario: str = "all"
    scenario_sha256: str | None = field(default=None, init=False)
    randomize: bool = False
    total_timesteps: int = 1_000_000
    n_agents: int = 100
    n_envs: int = 1
    trust: str = "hmac"
    seed: int = 0
    logdir: str = "runs"
    out: str | None = None
    overwrite: bool = False
    resume: str | None = None
    checkpoint_every: int = 500_000
    eval_every: int = 0
    eval_seeds: int = 3
    reward: str = "env"
    marginal_weight: float = 1.0
    reward_scale: float = 0.01
    reward_clip: float | None = 10.0
    learning_rate: float = 3e-4
    n_steps: int = 64
    batch_size: int = 4096
    n_epochs: int = 5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    net_arch: tuple[int, ...] = (64, 64)
    bc_teacher: str | None = None
    bc_timesteps: int = 0
    bc_epochs: int = 10
    bc_learning_rate: float = 1e-3
    torch_threads: int = 1
    progress_bar: bool = True
    verbose: int = 0
    run_name: str | None = None
    limits: str | None = None
    limits_sha256: str | None = field(default=None, init=False)
    env_config_file: str | None = None
    env_config_sha256: str | None = field(default=None, init=False)
    governor_deadband_hz: float | None = None
    command: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # every value is type-checked before it is used, and stored as a plain Python
        # value (int, float, str, tuple): numpy scalars become int or float, so the
        # record's JSON holds numbers, and the config stays hashable and immutable
        owner = type(self).__name__
        if not isinstance(self.scenario, str | os.PathLike):   # resolve_scenarios would
            # iterate it
            raise ValueError(f"{owner}.scenario = {self.scenario!r}: expected a scenario "
                             f"name or 'all' (allowed: all, {', '.join(scenario_names())}) "
                             "or a scenario file FILE.toml")
        store(self, "scenario", os.fspath(self.scenario))
        file = None
        if is_scenario_file(self.scenario):
            # read once: the run plays (scenarios()) and records the hash of these bytes
            try:
                file = read_scenario_file(self.scenario)
            except ValueError as exc:   # names the file; the flag as evaluate.py and demo.py
                raise ValueError(f"--scenario: {exc}") from None
            store(self, "scenario_sha256", file.sha256)
        elif self.scenario not in ("all", *scenario_names()):
            raise ValueError(f"{owner}.scenario: "
                             f"{unknown_scenario_text(self.scenario, all_allowed=True)}")
        store(self, "_scenario_file", file)
        check_bool(f"{owner}.randomize", self.randomize)
        if self.randomize and file is not None:
            check_randomizable(file.scenario, f"--scenario {self.scenario!r}")
        store(self, "total_timesteps",
              check_int_at_least(owner, "total_timesteps", self.total_timesteps, 0))
        if self.total_timesteps == 0 and self.bc_teacher is None:
            raise ValueError(f"{owner}.total_timesteps = 0: allowed only with bc_teacher "
                             "(behaviour cloning without PPO); otherwise must be >= 1")
        store(self, "n_agents", check_int_at_least(owner, "n_agents", self.n_agents, 1))
        check_agent_limit(f"{owner}.n_agents", self.n_agents)
        base = EnvConfig()
        if self.env_config_file is not None:
            store(self, "env_config_file", check_path(owner, "env_config_file",
                                                      self.env_config_file,
                                                      "a TOML file path"))
            from gridswarm_env.config_file import load_env_config

            # names the file
            base, sha = load_env_config(self.env_config_file, refuse=TRAIN_SET_FIELDS)
            store(self, "env_config_sha256", sha)
        store(self, "_env_config_base", base)
        kernel_limits = None
        if self.limits is not None:
            from policies.cli_checks import read_limits_agents

            store(self, "limits", check_path(owner, "limits", self.limits,
                                             "a TOML file path"))
            # read once: the run uses (kernel_limits) and records the hash of these bytes;
            # checked against the run's fleet, whose agents a config file's [fleet] shares
            # name (the default fleet's refused agents the run has); names the file
            kernel_limits, sha = read_limits_agents(self.limits, self.n_agents, base.fleet)
            store(self, "limits_sha256", sha)
        store(self, "_kernel_limits", kernel_limits)
        if self.governor_deadband_hz is not None:
            store(self, "governor_deadband_hz", check_governor_deadband(
                self.governor_deadband_hz, f"{owner}.governor_deadband_hz ="))
        store(self, "n_envs", check_int_at_least(owner, "n_envs", self.n_envs, 1))
        if self.n_envs * self.n_agents > MAX_AGENTS:   # every copy lives in this process
            raise ValueError(
                f"{owner}.n_envs = {self.n_envs!r}: {self.n_envs:,} copies x n_agents "
                f"{self.n_agents:,} = {self.n_envs * self.n_agents:,} agents in one "
                f"process; at most {MAX_AGENTS:,}{AGENT_LIMIT_WHY}")
        store(self, "trust", str(check_choice(owner, "trust", self.trust, TRUST_MODES)))
        if (not isinstance(self.seed, INT_TYPES) or isinstance(self.seed, bool)
                or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"{owner}.seed (--seed) = {self.seed!r}: must be an integer in "
                             f"0..{MAX_SEED}{SEED_WHY}")
        store(self, "seed", int(self.seed))
        store(self, "logdir", check_path(owner, "logdir", self.logdir, "a directory path "
                                         "('.' for the current directory)"))
        for name, minimum in (("checkpoint_every", 0), ("eval_every", 0)):
            store(self, name, check_int_at_least(owner, name, getattr(self, name), minimum))
        store(self, "eval_seeds", check_eval_seeds(owner, "eval_seeds", self.eval_seeds))
        store(self, "reward", str(check_choice(owner, "reward", self.reward, REWARD_MODES)))
        store(self, "marginal_weight",
              check_non_negative(owner, "marginal_weight", self.marginal_weight))
        store(self, "reward_scale", check_positive(owner, "reward_scale", self.reward_scale))
        if self.reward_clip is not None:
            store(self, "reward_clip", check_finite(owner, "reward_clip", self.reward_clip))
            if self.reward_clip <= 0:
                raise ValueError(f"{owner}.reward_clip = {self.reward_clip!r}: must be > 0, "
                                 "or None for no clipping")
        store(self, "max_grad_norm", check_positive(owner, "max_grad_norm", self.max_grad_norm))
        for name in ("learning_rate", "clip_range", "bc_learning_rate"):
            store(self, name, check_step_size(owner, name, getattr(self, name)))
        store(self, "n_steps", check_int_at_least(owner, "n_steps", self.n_steps, 2))
        rollout = self.n_steps * self.n_envs * self.n_agents
        if rollout > MAX_ROLLOUT:
            raise ValueError(
                f"{owner}.n_steps = {self.n_steps!r}: a rollout of n_steps x n_envs x "
                f"n_agents = {rollout:,} agent-steps; at most {MAX_ROLLOUT:,} (PPO's "
                "rollout buffer keeps ~0.3 kB for each)")
        store(self, "batch_size", check_int_at_least(owner, "batch_size", self.batch_size, 2))
        if self.total_timesteps:   # a cloning-only run makes no PPO update
            problem = lone_sample_problem(self.n_steps, self.n_envs, self.n_agents,
                                          self.batch_size)
            if problem:
                raise ValueError(f"{owner}.batch_size = {self.batch_size!r}: {problem}")
        store(self, "n_epochs", check_int_at_least(owner, "n_epochs", self.n_epochs, 1))
        for name in ("gamma", "gae_lambda"):
            store(self, name, check_range(owner, name, getattr(self, name), 0.0, 1.0))
        for name in ("ent_coef", "vf_coef"):
            store(self, name, check_non_negative(owner, name, getattr(self, name)))
        if self.target_kl is not None:
            store(self, "target_kl", check_positive(owner, "target_kl", self.target_kl))
        if (not isinstance(self.net_arch, tuple | list) or not self.net_arch
                or any(not isinstance(h, INT_TYPES) or isinstance(h, bool) or h < 1
                       for h in self.net_arch)):
            raise ValueError(f"{owner}.net_arch = {self.net_arch!r}: expected a non-empty "
                             "tuple of positive layer sizes (integers >= 1)")
        store(self, "net_arch", tuple(int(h) for h in self.net_arch))   # a list stays mutable
        if max(self.net_arch) > MAX_LAYER_SIZE:
            raise ValueError(f"{owner}.net_arch = {self.net_arch!r}: layer sizes are at most "
                             f"{MAX_LAYER_SIZE:,} (a {MAX_LAYER_SIZE:,} x {MAX_LAYER_SIZE:,} "
                             "layer holds 16.8 M weights)")
        if self.bc_teacher is not None:
            store(self, "bc_teacher",
                  str(check_choice(owner, "bc_teacher", self.bc_teacher, TEACHERS)))
        store(self, "bc_timesteps", check_int_at_least(  # 0 without a teacher (unused)
            owner, "bc_timesteps", self.bc_timesteps, 0 if self.bc_teacher is None else 1))
        store(self, "bc_epochs", check_int_at_least(owner, "bc_epochs", self.bc_epochs, 1))
        store(self, "torch_threads",
              check_int_at_least(owner, "torch_threads", self.torch_threads, 1))
        if self.torch_threads > MAX_TORCH_THREADS:
            raise ValueError(f"{owner}.torch_threads = {self.torch_threads!r}: at most "
                             f"{MAX_TORCH_THREADS}{TORCH_THREADS_WHY}")
        check_bool(f"{owner}.progress_bar", self.progress_bar)
        store(self, "verbose", check_int_at_least(owner, "verbose", self.verbose, 0))
        if self.resume is not None:
            from policies.learned import check_model_file  # no torch

            store(self, "resume", check_path(owner, "resume", self.resume,
                                             "a model file path"))
            # demo.py --policy's and evaluate.py --policies' rule and words (a missing
            # file, a directory, a name too long); `--out m2` writes m2.zip, and
            # demo/evaluate load m2.zip for m2: so does resume
            try:
                model = check_model_file(self.resume)
            except ValueError as exc:
                raise ValueError(f"{owner}.resume: {exc}") from None
            if model != Path(self.resume):
                store(self, "resume", str(model))
        if self.resume is not None and self.bc_teacher is not None:
            raise ValueError(f"{owner}.bc_teacher = {self.bc_teacher!r}: behaviour cloning "
                             "pre-trains a new model; it cannot be combined with resume (--resume)")
        check_bool(f"{owner}.overwrite", self.overwrite)
        if self.out is not None:
            store(self, "out", check_path(owner, "out", self.out, "a model file path"))
            check_path_names(self.out, f"{owner}.out =")
            if names_a_directory(self.out):
                raise ValueError(f"{owner}.out = {self.out!r} is a directory; expected a "
                                 "model file path (e.g. DIR/model.zip)")
            problem = record_suffix_problem(self.out)
            if problem:
                raise ValueError(f"{owner}.out = {self.out!r}: {problem}")
            if not self.out.lower().endswith(".zip"):
                store(self, "out", self.out + ".zip")
        if self.run_name is not None and (
                not isinstance(self.run_name, str) or self.run_name in ("", ".", "..")
                or "/" in self.run_name or os.sep in self.run_name):
            raise ValueError(f"{owner}.run_name = {self.run_name!r}: expected a plain "
                             "directory name (no '/', not '.' or '..')")
        if self.command is not None and not isinstance(self.command, str):
            raise ValueError(f"{owner}.command = {self.command!r}: expected the command "
                             "line as a str, or None")

    def rollout_timesteps(self) -> int:
        """Agent-steps of one PPO rollout, the unit PPO trains in:
        ``n_steps · n_envs · n_agents``."""
        return self.n_steps * self.n_envs * self.n_agents

    def planned_timesteps(self) -> int:
        """The PPO agent-steps this run trains: ``total_timesteps`` rounded up to whole
        rollouts (SB3 collects a rollout before it checks the budget), unless a
        callback stops it earlier."""
        rollout = self.rollout_timesteps()
        return -(-self.total_timesteps // rollout) * rollout

    def timestep_notes(self) -> list[str]:
        """One-line notes for the start of a run whose budget will surprise: one that
        is not a whole number of rollouts (it is rounded up), and one too short for
        any environment copy to finish an episode (whose KPIs are what
        ``grid/``, ``market/``, ``trust/`` and ``kernel/`` log), or, with scenarios of
        different episode lengths (``"all"``), too short for the longer ones: a copy
        that draws one of those may finish no episode."""
        if not self.total_timesteps:
            return []
        notes = []
        rollout, planned = self.rollout_timesteps(), self.planned_timesteps()
        rollouts = planned // rollout
        if planned != self.total_timesteps:
            notes.append(
                f"PPO trains in whole rollouts of {rollout:,} agent-steps (--n-steps "
                f"{self.n_steps} x --envs {self.n_envs} x --agents {self.n_agents}): "
                f"--timesteps {self.total_timesteps:,} will train {planned:,} agent-steps "
                f"({rollouts:,} rollout{'s' if rollouts > 1 else ''})")
        steps_of = {name: sc.episode_steps for name, sc in self.scenarios().items()}
        lengths = sorted(set(steps_of.values()))
        per_copy = rollouts * self.n_steps   # steps of each environment copy
        need = -(-lengths[-1] // self.n_steps) * rollout   # every copy finishes one
        if per_copy < lengths[0]:
            ends = lengths[:1] if len(lengths) == 1 else [lengths[0], lengths[-1]]
            steps = "-".join(f"{n:,}" for n in ends)
            agent_steps = "-".join(f"{n * self.n_agents:,}" for n in ends)
            notes.append(
                f"an episode is {steps} steps ({agent_steps} agent-steps per env copy at "
                f"{self.n_agents} agents); this run's {per_copy} steps per copy finish no "
                "episode, so no episode KPIs (grid/, market/, trust/, kernel/) will be "
                f"logged: use --timesteps {need:,} or more to see them")
        elif per_copy < lengths[-1]:
            # scenario "all" draws a scenario per episode: a copy that draws a longer one
            # than its steps finishes none
            longer = sorted(name for name, n in steps_of.items() if n > per_copy)
            shorter = sorted(name for name, n in steps_of.items() if n <= per_copy)
            if self.n_envs >= len(steps_of):
                # copies start on different scenarios and keep away from the others'
                # (train.adapter): the copies on the longer ones finish nothing
                notes.append(
                    f"{' and '.join(longer)} episodes are "
                    f"{'-'.join(f'{n:,}' for n in sorted({steps_of[x] for x in longer}))} "
                    f"steps, more than this run's {per_copy} steps per env copy: the copies "
                    f"playing {'them' if len(longer) > 1 else 'it'} finish no episode, so "
                    f"only {' and '.join(shorter)} episode KPIs (grid/, market/, trust/, "
                    f"kernel/) are logged: use --timesteps {need:,} or more to see them all")
                return notes
            notes.append(
                f"{' and '.join(longer)} episodes are "
                f"{'-'.join(f'{n:,}' for n in sorted({steps_of[x] for x in longer}))} steps, "
                f"more than this run's {per_copy} steps per env copy (only "
                f"{' and '.join(shorter)} episodes fit): a copy that draws "
                f"{'one of them' if len(longer) > 1 else 'it'} first may finish no episode, "
                "and then no episode KPIs (grid/, market/, trust/, kernel/) are logged: use "
                f"--timesteps {need:,} or more to be sure to see them")
        return notes

    def scenarios(self) -> dict[str, Scenario]:
        """The scenarios the run plays, by name: the registered ones ``scenario`` names
        (every one for ``"all"``), or the one its scenario file held when this config was
        made (never a later read of the file)."""
        file: ScenarioFile | None = self._scenario_file
        if file is not None:
            return {file.scenario.name: file.scenario}
        return {name: SCENARIOS[name] for name in resolve_scenarios(self.scenario)}

    def scenario_file(self) -> ScenarioFile | None:
        """The scenario file read when this config was made (None: a registered name or
        ``"all"``)."""
        return self._scenario_file

    def kernel_limits(self) -> Any:
        """The :class:`~gridswarm_env.kernel.Limits` the run's environments are given
        (training copies and ``eval_every`` evaluations): those parsed from ``limits``
        when this config was made, the bytes checked and hashed (``limits_sha256``),
        never a later read of the file; None: the default limits."""
        return self._kernel_limits

    def env_config(self) -> EnvConfig:
        """The :class:`~gridswarm_env.config.EnvConfig` of the run's environments
        (training copies and ``eval_every`` evaluations; the adapter and the evaluation
        set ``n_agents`` and ``trust``): ``env_config_file``'s as read when this config
        was made (the defaults without one), keeping only the audit chain's head
        (nothing in training reads its entries), with ``governor_deadband_hz`` when
        given."""
        base = self._env_config_base
        grid = (base.grid if self.governor_deadband_hz is None
                else replace(base.grid, governor_deadband_hz=self.governor_deadband_hz))
        return replace(base, audit_keep_entries=False, grid=grid)

    def env_settings(self) -> dict[str, object]:
        """The :data:`ENV_FIELDS` of this run (``limits`` as an absolute path, so a
        resume from another directory finds the same file, and ``limits_sha256``, the
        hash of the bytes this run read from it)."""
        settings: dict[str, object] = {name: getattr(self, name) for name in ENV_FIELDS}
        for name, _, _ in HASHED_FILES:
            if names_a_file(name, settings[name]):
                settings[name] = str(Path(settings[name]).resolve())
        return settings

    def model_path(self, run_dir: Path) -> Path:
        """The model file this run writes (``out``, or ``<run_dir>/model.zip``)."""
        return Path(self.out) if self.out else run_dir / "model.zip"

    def check_outputs(self, run_name: str | None = None) -> None:
        """Check before any work that the run directory, the model and its JSON record
        can be written (nothing is created), and that the directory of a ``run_name``
        given does not exist yet (:func:`train.trainer.make_named_run_dir` creates it,
        refusing one made since).

        :param run_name: the run's directory name (None: check ``logdir`` only).
        :raises ValueError: a file where a directory must go (or the reverse), a
            place that cannot be written, or an existing ``out`` model or record without
            ``overwrite``; the message names the flag.
        """
        run_dir = Path(self.logdir) / run_name if run_name else Path(self.logdir)
        check_output_dir(run_dir, "--logdir" if run_name is None else "run directory")
        if run_name and run_dir.is_dir() and any(run_dir.iterdir()):
            names = sorted(p.name for p in run_dir.iterdir())
            held = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise ValueError(f"run directory {str(run_dir)!r} already holds a run ({held}): "
                             "choose another --run-name, or remove it first (a new run "
                             "would overwrite its model and mix its tensorboard logs)")
        # a --run-name's directory is made by the run, atomically (a default name that
        # was taken since is replaced by the next free one then)
        if run_name and self.run_name is not None and os.path.lexists(run_dir):
            empty = " (empty)" if run_dir.is_dir() else ""
            raise ValueError(f"run directory {str(run_dir)!r} already exists{empty}: "
                             "choose another --run-name, or remove it first (a run "
                             "creates its own directory)")
        if run_name is None and self.out is None:
            return
        model = self.model_path(run_dir)
        if self.out and not self.overwrite:
            for path, what in ((model, "--out model file"),
                               (model.with_suffix(".json"), "training record")):
                if path.exists() and not path.is_dir():
                    raise ValueError(
                        f"{what} {str(path)!r} already exists: pass --overwrite to replace "
                        f"the model {str(model)!r} and its record, or choose another --out")
        check_output_file(model, "--out model file" if self.out else "model file",
                          create_dirs=True)
        check_output_file(model.with_suffix(".json"), "training record", create_dirs=True)

    def default_run_name(self, now: float | None = None) -> str:
        """``<scenario>_s<seed>_<YYYYmmdd-HHMMSS>`` (local time; a scenario file's
        scenario by its name, which :data:`~gridswarm_env.scenarios.SCENARIO_NAME` keeps
        a plain file name)."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        file = self._scenario_file
        scenario = self.scenario if file is None else file.scenario.name
        return f"{scenario}_s{self.seed}_{stamp}"
