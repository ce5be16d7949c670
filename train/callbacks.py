"""Training callbacks: grid KPIs to tensorboard, one definition for every run.

:class:`EpisodeMetricsCallback` reads the KPI dict the adapter puts in
``infos[s]["episode_metrics"]`` when an environment copy finishes an episode (that
is ``raw.episode_metrics()``, :mod:`gridswarm_env.metrics`) and logs it:

* per rollout (the mean over the episodes finished during the rollout, written with
  SB3's own scalars at each dump): ``grid/…``, ``market/…``, ``trust/…``,
  ``kernel/…`` (:data:`KPI_TAGS`), and ``grid/<scenario>/system_cost`` per scenario
  (``scenario="all"`` mixes scenarios whose costs differ by orders of magnitude);
* per finished episode, straight to the tensorboard writer at the current
  timestep: ``<namespace>/episode/<name>`` (and ``grid/<scenario>/episode/system_cost``).

Like SB3's callbacks (a public ``on_step`` around an abstract ``_on_step``), the
class keeps SB3's ``_on_step`` and exposes a public hook, :meth:`on_episode_end`,
called once per finished episode: subclass and override it to do more (early
stopping on a KPI, custom plots).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat

#: tensorboard tag -> KPI key of :meth:`GridSwarmEnv.episode_metrics`.
KPI_TAGS: dict[str, str] = {
    "grid/system_cost": "system_cost",
    "grid/unserved_energy_mwh": "unserved_energy_mwh",
    "grid/frequency_nadir_hz": "frequency_nadir_hz",
    "grid/frequency_zenith_hz": "frequency_zenith_hz",
    "grid/max_abs_deviation_hz": "max_abs_deviation_hz",
    "grid/mean_abs_deviation_hz": "mean_abs_deviation_hz",
    "grid/seconds_outside_band": "seconds_outside_band",
    "market/consensus_rate": "consensus_rate",
    "market/negotiations": "negotiations",
    "market/balancing_payments": "balancing_payments",
    "market/der_revenue": "der_revenue",
    "trust/contracts_signed": "contracts_signed",
    "trust/contracts_rejected": "contracts_rejected",
    "kernel/blocked_attempts": "blocked_attempts",
    "kernel/executed_violations": "executed_violations",
}


def episode_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Tag -> value for one episode's KPIs (keys that are None or absent are skipped)."""
    out: dict[str, float] = {}
    for tag, key in KPI_TAGS.items():
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[tag] = float(value)
    scenario = metrics.get("scenario")
    if scenario and "system_cost" in metrics:
        out[f"grid/{scenario}/system_cost"] = float(metrics["system_cost"])
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
        self._writer = None

    def _on_training_start(self) -> None:
        self._writer = next((f.writer for f in self.logger.output_formats
                             if isinstance(f, TensorBoardOutputFormat)), None)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            metrics = info.get("episode_metrics")
            if metrics is not None:
                self.on_episode_end(metrics)
        return True

    def on_episode_end(self, metrics: dict[str, Any]) -> None:
        """Public hook, called once per finished episode with its KPI dict.

        The default records the scalars for the rollout mean, writes the per-episode
        values (when ``per_episode``) and keeps the dict in :attr:`episodes`.
        """
        self.n_episodes += 1
        self.episodes.append(metrics)
        scalars = episode_scalars(metrics)
        for tag, value in scalars.items():
            self.logger.record_mean(tag, value)
        if self.per_episode and self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(_episode_tag(tag), value, self.num_timesteps)
        self.logger.record("grid/episodes", self.n_episodes)
