"""Training callbacks: grid KPIs to tensorboard, one definition for every run.

:class:`EpisodeMetricsCallback` reads the KPI dict the adapter puts in
``infos[s]["episode_metrics"]`` when an environment copy finishes an episode (that
is ``raw.episode_metrics()``, :mod:`gridswarm_env.metrics`) and logs it:

* per rollout (the mean over the episodes finished during the rollout, written with
  SB3's own scalars at each dump): ``grid/…``, ``market/…``, ``trust/…``,
  ``kernel/…`` (:data:`KPI_TAGS`), and per scenario ``grid/<scenario>/system_cost``
  and ``grid/<scenario>/frequency_nadir_hz`` (``scenario="all"`` mixes scenarios whose
  costs differ by orders of magnitude) and, for an episode with an event
  (``emergency``), ``grid/<scenario>/emergency_response_latency_ms``,
  ``…/emergency_response_mw_100ms``, ``…/stabilization_time_s`` and
  ``…/max_rocof_hz_per_s`` (each when not None),
  with ``…/never_stabilized_share`` and ``…/no_response_share``, the share of those
  episodes whose ``stabilization_time_s`` / ``emergency_response_latency_ms`` was None
  (:data:`NONE_SHARES`: 1 or 0 per episode);
* per finished episode, straight to the tensorboard writer:
  ``<namespace>/episode/<name>`` (and ``grid/<scenario>/episode/<name>``), with
  the episode's number (1, 2, …, in the order episodes finish) as tensorboard's step:
  with ``--envs`` > 1 several copies can finish in the same timestep, and one step
  per episode keeps each point apart (the rollout means above stay on the timestep
  axis). The number counts on from the model's :data:`EPISODES_ATTR` (the episodes of
  the runs before a resume; 0 for a model saved without it), and the callback keeps it
  there, so every model saved after (checkpoints too) carries its count.

A KPI that is NaN or infinite (:func:`~gridswarm_env.metrics.nonfinite_keys`, the rule of
``evaluate.py``) is left out of both, as one that is None: one broken episode would make
its rollout mean NaN. :attr:`EpisodeMetricsCallback.nonfinite` counts them per KPI, and
the first such episode is warned about (``warnings.warn``, once).

Like SB3's callbacks (a public ``on_step`` around an abstract ``_on_step``), the
class keeps SB3's ``_on_step`` and exposes a public hook, :meth:`on_episode_end`,
called once per finished episode: subclass and override it to do more (early
stopping on a KPI, custom plots).

:class:`SystemCostEvaluation` judges the model being trained by ``system_cost`` on
held-out seeds (``python -m train --eval-every N``, and the benchmark of the time PPO
takes to beat the heuristic), keeps the best model and can stop training at a cost.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    ProgressBarCallback,
)
from stable_baselines3.common.logger import (
    HumanOutputFormat,
    KVWriter,
    TensorBoardOutputFormat,
)

from gridswarm_env.config import check_int_at_least
from gridswarm_env.metrics import is_finite_or_none, nonfinite_keys
from train.config import EVAL_SEED_BASE, check_eval_seeds

#: tensorboard tag -> KPI key of :meth:`GridSwarmEnv.episode_metrics`.
KPI_TAGS: dict[str, str] = {
    "grid/system_cost": "system_cost",
    "grid/unserved_energy_mwh": "unserved_energy_mwh",
    "grid/frequency_nadir_hz": "frequency_nadir_hz",
    "grid/frequency_zenith_hz": "frequency_zenith_hz",
    "grid/max_abs_deviation_hz": "max_abs_deviation_hz",
    "grid/max_rocof_hz_per_s": "max_rocof_hz_per_s",
    "grid/mean_abs_deviation_hz": "mean_abs_deviation_hz",
    "grid/seconds_outside_band": "seconds_outside_band",
    "market/consensus_rate": "consensus_rate",
    "market/negotiations": "negotiations",
    "market/balancing_payments": "balancing_payments",
    "market/der_revenue": "der_revenue",
    "trust/contracts_signed": "contracts_signed",
    "trust/contracts_rejected": "contracts_rejected",
    "trust/contracts_late": "contracts_late",
    "kernel/blocked_attempts": "blocked_attempts",
    "kernel/executed_violations": "executed_violations",
}


#: KPIs also logged per scenario, ``grid/<scenario>/<key>``: ``scenario="all"`` mixes
#: scenarios whose costs differ by orders of magnitude and whose nadirs differ in kind.
SCENARIO_KPIS = ("system_cost", "frequency_nadir_hz")
#: KPIs of the episode's event (the ``emergency`` trip), logged per scenario as above
#: when the episode had one (``emergency_response_mw_100ms`` not None) and not None.
EVENT_KPIS = ("emergency_response_latency_ms", "emergency_response_mw_100ms",
              "stabilization_time_s", "max_rocof_hz_per_s")
#: for an episode with an event, ``grid/<scenario>/<name>`` is 1.0 when the KPI is None
#: (left out of its own curve) and 0.0 when not: the rollout mean is the share of the
#: scenario's episodes that never stabilized / got no DER response, which the KPI's
#: curve, a mean over the other episodes only, cannot show.
NONE_SHARES = {"stabilization_time_s": "never_stabilized_share",
               "emergency_response_latency_ms": "no_response_share"}


#: attribute of a saved model holding how many episodes its training runs finished (the
#: step of its last per-episode tensorboard point): a resumed run's steps continue from it
EPISODES_ATTR = "gridswarm_episodes_finished"


def stored_episodes(model: Any) -> int | None:
    """:data:`EPISODES_ATTR` of ``model``, or None for a model saved without it (built
    outside ``train`` or by an older version)."""
    count = getattr(model, EPISODES_ATTR, None)
    ok = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    return count if ok else None


def _number(value: Any) -> bool:
    """A KPI value tensorboard takes: a finite number (metrics' rule), not None or a bool."""
    return value is not None and not isinstance(value, bool) and is_finite_or_none(value)


def episode_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Tag -> value for one episode's KPIs (keys that are None, NaN, infinite or absent are
    skipped; a share is skipped with its NaN or infinite KPI):
    :data:`KPI_TAGS`, and per scenario :data:`SCENARIO_KPIS`, :data:`EVENT_KPIS` and,
    of an episode with an event, :data:`NONE_SHARES` (1.0: that KPI is None)."""
    out = {tag: float(metrics[key]) for tag, key in KPI_TAGS.items()
           if _number(metrics.get(key))}
    scenario = metrics.get("scenario")
    if scenario:
        event = metrics.get("emergency_response_mw_100ms") is not None
        out.update({f"grid/{scenario}/{key}": float(metrics[key])
                    for key in SCENARIO_KPIS + (EVENT_KPIS if event else ())
                    if _number(metrics.get(key))})
        if event:
            out.update({f"grid/{scenario}/{name}": float(metrics[key] is None)
                        for key, name in NONE_SHARES.items()
                        if key in metrics and is_finite_or_none(metrics[key])})
    return out


def _episode_tag(tag: str) -> str:
    head, _, name = tag.rpartition("/")
    return f"{head}/episode/{name}"


class EpisodeMetricsCallback(BaseCallback):
    """Log the grid KPIs of every finished episode (see the module docstring).

    :param per_episode: also write each episode's values (``…/episode/…`` tags).
    :param keep: how many recent episodes' KPI dicts to keep in :attr:`episodes`.
    :param verbose: SB3 verbosity.
    """

    def __init__(self, per_episode: bool = True, keep: int = 100, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.per_episode = per_episode
        self.episodes: deque[dict[str, Any]] = deque(maxlen=keep)
        self.n_episodes = 0
        #: the episodes before this callback's (the model's :data:`EPISODES_ATTR` when
        #: training started): its episodes are numbered from ``episodes_before + 1``
        self.episodes_before = 0
        #: KPI key -> episodes in which it was NaN or infinite (left out of the scalars)
        self.nonfinite: dict[str, int] = {}
        self.nonfinite_episodes = 0
        self._writer = None

    def _on_training_start(self) -> None:
        self._writer = next((f.writer for f in self.logger.output_formats
                             if isinstance(f, TensorBoardOutputFormat)), None)
        if not self.n_episodes:   # a second learn() call goes on with its own count
            self.episodes_before = stored_episodes(self.model) or 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            metrics = info.get("episode_metrics")
            if metrics is not None:
                self.on_episode_end(metrics)
        return True

    def on_episode_end(self, metrics: dict[str, Any]) -> None:
        """Public hook, called once per finished episode with its KPI dict.

        The default records the scalars for the rollout mean, writes the per-episode
        values (when ``per_episode``), keeps the dict in :attr:`episodes`, counts its NaN
        or infinite KPIs (:attr:`nonfinite`) and stores the episode's number in the model
        (:data:`EPISODES_ATTR`).
        """
        self.n_episodes += 1
        number = self.episodes_before + self.n_episodes
        setattr(self.model, EPISODES_ATTR, number)
        self.episodes.append(metrics)
        broken = nonfinite_keys(metrics)
        if broken:
            self.nonfinite_episodes += 1
            for key in broken:
                self.nonfinite[key] = self.nonfinite.get(key, 0) + 1
            if self.nonfinite_episodes == 1:
                warnings.warn(f"episode {number} ({metrics.get('scenario')}) ended with "
                              f"non-finite {', '.join(broken)}: left out of the tensorboard "
                              "scalars, as every NaN or infinite KPI will be (counted in the "
                              "training record's nonfinite_kpis)", RuntimeWarning, stacklevel=2)
        scalars = episode_scalars(metrics)
        for tag, value in scalars.items():
            self.logger.record_mean(tag, value)
        if self.per_episode and self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(_episode_tag(tag), value, number)
        self.logger.record("grid/episodes", number)


def mean_system_costs(envs: dict[str, Any], policy: Any, seeds: list[int]) -> dict[str, float]:
    """Mean ``system_cost`` per scenario of ``policy`` over ``seeds``
    (:func:`policies.rollout.run_episode`, as ``evaluate.py`` runs episodes).

    :param envs: scenario name -> environment.
    """
    from policies.rollout import run_episode

    return {name: sum(run_episode(env, policy, seed).metrics["system_cost"]
                      for seed in seeds) / len(seeds)
            for name, env in envs.items()}


#: floor of the reference cost a scenario's relative difference divides by, $ (a scenario
#: whose reference costs next to nothing must not dominate the mean)
RELATIVE_COST_FLOOR = 1.0


def relative_cost(costs: dict[str, float], reference: dict[str, float]) -> float:
    """Mean over scenarios of ``(cost_s − ref_s) / max(|ref_s|, RELATIVE_COST_FLOOR)``.

    0 means the reference's cost in every scenario, −0.1 on average 10 % below it. Unlike
    the sum of costs it weighs each scenario alike: the scenarios' costs differ by
    orders of magnitude (``price_spike`` ~262 $, ``solar_surplus`` ~15 $ for the
    heuristic), so a 2x regression in ``solar_surplus`` would weigh less in the sum than
    a 6 % change in ``price_spike``. With one scenario it orders points as the cost does.

    :raises ValueError: the two do not cover the same scenarios.
    """
    if set(costs) != set(reference):
        raise ValueError(f"costs for {sorted(costs)} but a reference for {sorted(reference)}")
    return sum((costs[n] - reference[n]) / max(abs(reference[n]), RELATIVE_COST_FLOOR)
               for n in costs) / len(costs)


class SystemCostEvaluation(BaseCallback):
    """Judge the model being trained by the system objective, not its reward.

    When training starts and then at the first rollout start after every ``every``
    agent-steps (the network as last updated: it does not change during a rollout), and
    when training ends, the model acts greedily
    (:meth:`policies.learned.LearnedPolicy.from_model`, which leaves the training's
    random generators alone: training is the same with or without this callback) in
    ``n_seeds`` held-out episodes per scenario (seeds :data:`EVAL_SEED_BASE` + k, hmac
    trust; evaluation seeds, which training never plays:
    :data:`policies.rollout.EVAL_SEEDS`). Each evaluation appends a point to
    :attr:`points` (``agent_steps``, ``train_s`` = seconds since the callback was made minus the evaluations before it,
    ``system_cost`` = the sum over scenarios of the per-scenario means, ``per_scenario``,
    ``relative_cost`` = :func:`relative_cost` against :attr:`reference`), and writes
    ``eval/system_cost``, ``eval/relative_cost`` and ``eval/<scenario>/system_cost`` to
    every output format (tensorboard, csv, stdout) at the point's step (directly: no
    ``logger.dump``, which would repeat the steps of SB3's pending ``train/…`` scalars).

    The best model is the first point of the lowest ``relative_cost``: the reference is
    the heuristic's per-scenario mean cost on the same seeds (measured at the first
    evaluation, its time left out of ``train_s`` like the evaluations'), so every
    scenario counts alike (see :func:`relative_cost`); with one scenario that is the
    first point of the lowest cost. ``stop_at_cost`` compares the summed cost.

    :param scenarios: scenario names (or :class:`~gridswarm_env.scenarios.Scenario` objects,
        as a scenario file's) to evaluate on.
    :param n_agents: agents per evaluation environment.
    :param every: agent-steps between evaluations (>= 1).
    :param n_seeds: evaluation episodes per scenario, 1 to 90 000 (the seeds
        10 000 + k stay evaluation seeds, which training never plays).
    :param best_path: save the model there whenever an evaluation is the best so far.
    :param stop_at_cost: stop training at the first evaluation whose cost is at most this.
    :param limits: kernel limits of the evaluation environments (as the training's).
    :param env_config: their :class:`~gridswarm_env.config.EnvConfig` (as the training's,
        :meth:`~train.config.TrainConfig.env_config`; None:
        ``EnvConfig(audit_keep_entries=False)``); ``trust`` and ``n_agents`` are set here.
    :param randomize: evaluate on the randomized scenarios (as the training's,
        ``--randomize``): each seed draws its episode, the heuristic's reference too.
    :param reference: per-scenario reference costs on these seeds (None: the heuristic's,
        measured at the first evaluation; a caller that has them passes them).
    :param echo: called with one line per evaluation (:meth:`line`; ``python -m train``
        prints it, whatever its ``--verbose``); the logger's stdout table, if any, then
        leaves the evaluation out (it would say the same twice).
    :raises ValueError: ``every`` or ``n_seeds`` out of range, before anything is built.
    """

    def __init__(self, scenarios: Sequence[str], n_agents: int, every: int, n_seeds: int = 3,
                 best_path: str | Path | None = None, stop_at_cost: float | None = None,
                 verbose: int = 0, limits: Any = None,
                 echo: Callable[[str], None] | None = None,
                 reference: dict[str, float] | None = None, randomize: bool = False,
                 env_config: Any = None) -> None:
        super().__init__(verbose)
        owner = type(self).__name__
        every = check_int_at_least(owner, "every", every, 1)
        n_seeds = check_eval_seeds(owner, "n_seeds", n_seeds)
        self.echo = echo
        from gridswarm_env.config import EnvConfig
        from gridswarm_env.env import GridSwarmEnv
        from gridswarm_env.scenarios import randomized
        from train.adapter import scenario_table

        # nobody reads their audit entries (~1 MB per price_spike episode at 100 agents,
        # kept for the run): only the chain's head, as the training environments
        self.envs = {name: GridSwarmEnv(scenario=randomized(sc) if randomize else sc,
                                        n_agents=n_agents, trust="hmac", limits=limits,
                                        config=(EnvConfig(audit_keep_entries=False)
                                                if env_config is None else env_config))
                     for name, sc in scenario_table(scenarios).items()}
        self.every = every
        self.seeds = [EVAL_SEED_BASE + k for k in range(n_seeds)]
        self.best_path = None if best_path is None else Path(best_path)
        self.stop_at_cost = stop_at_cost
        if reference is not None and set(reference) != set(self.envs):
            raise ValueError(f"{owner}.reference covers {sorted(reference)}, the evaluation "
                             f"{sorted(self.envs)}: give one cost per scenario evaluated")
        self.reference = None if reference is None else {
            name: float(reference[name]) for name in self.envs}
        self.points: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.stopped_at: dict[str, Any] | None = None
        self.eval_s = 0.0
        self._t0 = time.perf_counter()
        self._next = 0

    def train_s(self) -> float:
        """Seconds since the callback was made, evaluations left out."""
        return time.perf_counter() - self._t0 - self.eval_s

    def evaluate(self) -> dict[str, Any]:
        """Evaluate the model now; the point (also appended to :attr:`points`)."""
        from policies.learned import LearnedPolicy

        at_s = self.train_s()
        t0 = time.perf_counter()
        if self.reference is None:
            from policies import make_policy

            self.reference = mean_system_costs(self.envs, make_policy("heuristic"), self.seeds)
        costs = mean_system_costs(self.envs, LearnedPolicy.from_model(self.model), self.seeds)
        total = sum(costs.values())
        rel = relative_cost(costs, self.reference)
        point = {"agent_steps": int(self.num_timesteps), "train_s": round(at_s, 1),
                 "system_cost": total, "per_scenario": costs, "relative_cost": rel}
        self.points.append(point)
        scalars = {"eval/system_cost": total, "eval/relative_cost": rel,
                   **{f"eval/{name}/system_cost": cost for name, cost in costs.items()}}
        # written now, at the point's own step, straight to every output format
        # (tensorboard, csv, stdout): through the logger they would wait for the next dump,
        # after the rollout that follows (the last point never), and a logger.dump here
        # would also write the pending train/* scalars a second time at a step they have
        row = {"time/total_timesteps": point["agent_steps"], **scalars}   # csv: the step
        not_excluded = dict.fromkeys(row, ("",))
        for fmt in self.logger.output_formats:
            if self.echo is not None and isinstance(fmt, HumanOutputFormat):
                continue   # echo says it in one line
            if isinstance(fmt, TensorBoardOutputFormat):
                for tag, value in scalars.items():
                    fmt.writer.add_scalar(tag, value, point["agent_steps"])
                fmt.writer.flush()
            elif isinstance(fmt, KVWriter):
                fmt.write(row, not_excluded, point["agent_steps"])
        best = self.best is None or rel < self.best["relative_cost"]
        if best:   # saved first: an interrupted save keeps the earlier best, file and point
            if self.best_path is not None:
                save_model_atomically(self.model, self.best_path)
            self.best = point
        if self.echo is not None:
            self.echo(self.line(point, best))
        if self.stop_at_cost is not None and total <= self.stop_at_cost and not self.stopped_at:
            self.stopped_at = point
        self.eval_s += time.perf_counter() - t0
        return point

    def line(self, point: dict[str, Any], best: bool = False) -> str:
        """One evaluation as one line: ``eval at 6,400 agent-steps: system_cost 262.23 $
        (price_spike 262.23 $, mean of 3 seeds; +0.0 % vs the heuristic) - best so far``
        (the percentage is ``relative_cost``)."""
        per = ", ".join(f"{name} {cost:,.2f} $" for name, cost in point["per_scenario"].items())
        return (f"eval at {point['agent_steps']:,} agent-steps: system_cost "
                f"{point['system_cost']:,.2f} $ ({per}, mean of {len(self.seeds)} seed"
                f"{'s' if len(self.seeds) > 1 else ''}; "
                f"{100 * point['relative_cost']:+,.1f} % vs the heuristic)"
                + (" - best so far" if best else ""))

    def _on_training_start(self) -> None:
        self._next = int(self.num_timesteps) + self.every
        self.evaluate()

    def _on_rollout_start(self) -> None:
        if self.stopped_at is None and self.num_timesteps >= self._next:
            while self._next <= self.num_timesteps:
                self._next += self.every
            self.evaluate()

    def _on_step(self) -> bool:
        return self.stopped_at is None

    def _on_training_end(self) -> None:
        if self.stopped_at is None and self.points[-1]["agent_steps"] < self.num_timesteps:
            self.evaluate()   # the budget's end, when it fell between two evaluations


#: an update whose mean clip factor is below this shrinks the actor's steps more than
#: tenfold: :class:`GradientClipMonitor` warns (once)
STARVED_CLIP_FACTOR = 0.1


def is_critic_parameter(name: str) -> bool:
    """Whether a parameter of a MaskablePPO policy (``policy.named_parameters()``) is
    the critic's: its own MLP (``mlp_extractor.value_net``) and its head (``value_net``);
    the rest (``mlp_extractor.policy_net``, ``action_net``; the flatten feature extractor
    has none) is the actor's."""
    return name.startswith(("mlp_extractor.value_net.", "value_net."))


class GradientClipMonitor(BaseCallback):
    """Log how much PPO's gradient-norm clip shrinks each update, actor and critic apart.

    SB3's PPO clips the norm of the gradient of *all* the policy's parameters together
    (``max_grad_norm``, 0.5) before every minibatch step, and its loss adds the critic's
    squared error (``vf_coef`` x value loss) to the actor's clipped surrogate. The
    actor's gradient is about the same size whatever the reward's scale (the advantages
    are normalized per minibatch); the critic's grows with the returns. When the
    critic's gradient is large, the shared clip divides the *actor's* step by the same
    factor: with ``--reward marginal`` at the default ``--reward-scale 0.01`` (100 agents,
    ``price_spike``) the critic's gradient norm was 34-45 against the actor's ~0.1, so every
    step was scaled by ~0.012 and the actor learned at ~1/85 of ``--lr``.

    Per minibatch step it reads each parameter's gradient as backward accumulates it
    (before the clip; tensor hooks, the computation is untouched: the same weights bit
    for bit) and records the means over the update (tensorboard, with SB3's ``train/…``):
    ``train/grad_norm`` (all parameters, before the clip), ``train/grad_norm_actor``,
    ``train/grad_norm_critic`` and ``train/grad_clip_factor`` (``min(1, max_grad_norm /
    grad_norm)``, SB3's factor; 1: no clipping). An update whose mean factor is below
    :data:`STARVED_CLIP_FACTOR` is warned about once (``warnings.warn``), naming the
    fix. :attr:`factors` holds every update's mean factor.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        #: mean clip factor of each update (one entry per rollout learned from)
        self.factors: list[float] = []
        self._handles: list[Any] = []
        self._squares: dict[str, Any] = {}
        self._critic: dict[str, bool] = {}
        self._steps: list[tuple[float, float, float, float]] = []
        self._warned = False

    def _on_training_start(self) -> None:
        import torch

        self._remove()
        policy = self.model.policy
        for name, param in policy.named_parameters():
            if not param.requires_grad:
                continue
            self._critic[name] = is_critic_parameter(name)

            def keep(p: torch.Tensor, name: str = name) -> None:
                self._squares[name] = p.grad.detach().pow(2).sum()
            self._handles.append(param.register_post_accumulate_grad_hook(keep))
        self._handles.append(policy.optimizer.register_step_pre_hook(self._on_minibatch))

    def _on_minibatch(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Before each optimizer step: the step's norms from the gradients kept."""
        import torch

        if not self._squares:   # a step without a backward through the policy
            return
        actor = sum((s for n, s in self._squares.items() if not self._critic[n]),
                    torch.zeros(()))
        critic = sum((s for n, s in self._squares.items() if self._critic[n]),
                     torch.zeros(()))
        self._squares = {}
        total = float(torch.sqrt(actor + critic))
        max_norm = float(self.model.max_grad_norm)
        factor = min(1.0, max_norm / (total + 1e-6))   # SB3's clip_grad_norm_ factor
        self._steps.append((total, float(torch.sqrt(actor)), float(torch.sqrt(critic)),
                            factor))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:   # after an update: its means, before the dump
        self._flush()

    def _on_training_end(self) -> None:   # the last update's, then the hooks go
        self._flush()
        self._remove()

    def _flush(self) -> None:
        """Record the last update's means (called before DumpAfterUpdate writes them)."""
        if not self._steps:
            return
        steps, self._steps = self._steps, []
        means = [sum(column) / len(steps) for column in zip(*steps, strict=True)]
        for tag, value in zip(("train/grad_norm", "train/grad_norm_actor",
                               "train/grad_norm_critic", "train/grad_clip_factor"), means,
                              strict=True):
            self.logger.record(tag, value)
        factor = means[3]
        self.factors.append(factor)
        if factor < STARVED_CLIP_FACTOR and not self._warned:
            self._warned = True
            warnings.warn(
                f"PPO's gradient clip (max_grad_norm {self.model.max_grad_norm}) scaled an "
                f"update's steps by {factor:.3g} on average: the critic's gradient (norm "
                f"{means[2]:.3g}, the actor's {means[1]:.3g}) dominates the shared clip, so "
                "the policy learns at a fraction of --lr; lower --reward-scale until "
                "train/grad_clip_factor is near 1 (docs/training.md, Reward scale)",
                RuntimeWarning, stacklevel=2)

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._squares = {}

    def summary(self) -> dict[str, Any]:
        """The record's ``grad_clip_factor``: updates, mean and lowest update mean."""
        f = self.factors
        return {"updates": len(f), "mean": sum(f) / len(f) if f else None,
                "min": min(f) if f else None}


def save_model_atomically(model: Any, path: str | Path) -> Path:
    """``model.save`` to ``path`` (``.zip``), through a temporary file beside it renamed over
    it once complete (:func:`train.trainer.replace_atomically`): a Ctrl-C, a second signal
    or a crash while the model is written leaves the earlier file (or none), never a
    half-written one that a later ``--resume`` or ``LearnedPolicy`` would refuse as
    corrupt.

    :returns: the path written.
    """
    from train.trainer import replace_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, model.save)
    return path


class AtomicCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` (``<save_path>/<name_prefix>_<N>_steps.zip`` every
    ``save_freq`` calls), each checkpoint written by :func:`save_model_atomically`: SB3
    writes into the file itself, so an interrupt during the write left a truncated newest
    checkpoint, the one an unfinished run's message names as its last checkpoint. (No
    replay buffer or ``VecNormalize`` statistics: ``python -m train`` uses neither.)
    ``<save_path>`` is created with the first checkpoint (SB3 creates it at the start,
    leaving an empty directory in a run too short for one)."""

    def _init_callback(self) -> None:
        pass   # save_model_atomically creates the directory when a checkpoint is due

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            save_model_atomically(self.model, self._checkpoint_path(extension="zip"))
        return True


class PlannedProgressBar(ProgressBarCallback):
    """SB3's progress bar whose total is the agent-steps that will run,
    :meth:`~train.config.TrainConfig.planned_timesteps` (the budget rounded up to whole
    rollouts), not the budget: SB3's ended at ``25,600/20,000`` for ``--timesteps
    20000`` while the note at the start said 25,600 would run.

    :param total_timesteps: the agent-steps this ``learn`` call will run.
    """

    def __init__(self, total_timesteps: int) -> None:
        super().__init__()
        self.total_timesteps = int(total_timesteps)

    def _on_training_start(self) -> None:
        from stable_baselines3.common import callbacks

        self.pbar = callbacks.tqdm(total=self.total_timesteps)   # SB3's tqdm (rich)


class DumpAfterUpdate(BaseCallback):
    """Write the logger's scalars after every PPO update, at the step of the rollout the
    update learned from, and once more when learning ends.

    SB3 writes its scalars right after collecting a rollout, before the update: the
    ``train/…`` scalars of an update wait for the next rollout's dump (one rollout late)
    and the last update's are never written, so a one-rollout run logged no ``train/…``
    at all. Learn with ``log_interval=None`` (SB3 then writes nothing itself) and this
    callback: at each rollout start after an update, and at the end of learning, it
    calls ``model.dump_logs`` (``time/fps`` and the scalars recorded since the last
    dump: the update's ``train/…``, the rollout's ``grid/…``) at ``num_timesteps``
    (``dump_logs`` is public from stable-baselines3 2.6, ``_dump_logs`` before).

    Put it last in the ``CallbackList``: callbacks after it that record at a rollout
    start or at the end of learning would be written a rollout late, or never. SB3 skips
    ``_on_training_end`` when learning raises (Ctrl-C, an error): call :meth:`dump`
    then (``train`` does), so the interrupted rollout's scalars are written too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0
        self._dumped_at = 0

    def _on_training_start(self) -> None:
        self._dumped_at = int(self.model.num_timesteps)

    def dump(self) -> None:
        """Write what was recorded since the last dump, if training moved on since."""
        if int(self.model.num_timesteps) > self._dumped_at:
            self.dumps += 1
            self._dumped_at = int(self.model.num_timesteps)
            self.model.dump_logs(self.dumps)

    def _on_rollout_start(self) -> None:
        self.dump()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.dump()
