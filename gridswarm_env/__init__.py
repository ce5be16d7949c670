"""gridswarm: DER agents keep a grid at 60 Hz through a market, a message bus and signed contracts.

>>> import gridswarm_env
>>> env = gridswarm_env.parallel_env(scenario="price_spike", n_agents=100)
>>> obs, infos = env.reset(seed=0)

``parallel_env`` returns the PettingZoo ``ParallelEnv``; ``env`` the AEC version
(``parallel_to_aec``, checking each action at its agent's step); ``raw_env`` is the
environment class. Importing the package has no side effects.
"""

from __future__ import annotations

import numbers
from typing import Any

# The submodule ``gridswarm_env.env`` is imported here, before the function ``env`` below is
# defined, so that the package attribute ``env`` stays the AEC factory (PettingZoo's naming).
from gridswarm_env.env import OBS_DIM, OBS_FIELDS, GridSwarmEnv
from gridswarm_env.scenarios import SCENARIOS, get_scenario, scenario_names

__version__ = "0.1.0"

raw_env = GridSwarmEnv


def _with_max_cycles(scenario: Any, max_cycles: Any) -> Any:
    """``scenario`` with ``episode_steps = max_cycles`` (PettingZoo's name for the episode
    length), or as given when ``max_cycles`` is None."""
    if max_cycles is None:
        return scenario
    if (isinstance(max_cycles, bool) or not isinstance(max_cycles, numbers.Integral)
            or max_cycles < 1):
        raise ValueError(f"max_cycles = {max_cycles!r}: expected an integer >= 1, the steps "
                         "of an episode (Scenario.episode_steps)")
    base = get_scenario(scenario)   # an unknown scenario: its own message
    try:
        return get_scenario(base, episode_steps=int(max_cycles))
    except ValueError as exc:
        raise ValueError(f"max_cycles = {max_cycles!r}: {exc}") from None


def parallel_env(scenario: str = "price_spike", n_agents: int | None = None,
                 trust: str | None = None, shadow: bool | None = None,
                 render_mode: str | None = None, max_cycles: int | None = None,
                 **kwargs: Any) -> GridSwarmEnv:
    """Create the parallel environment (see :class:`GridSwarmEnv` for the arguments).

    ``n_agents``, ``trust`` and ``shadow`` default to ``config`` (an
    :class:`~gridswarm_env.config.EnvConfig`, default 100 agents, ed25519, live).
    ``max_cycles`` (PettingZoo's convention) sets the scenario's ``episode_steps``:
    the episode is truncated after that many steps (None: the scenario's own).
    """
    chosen = _with_max_cycles(scenario, max_cycles)
    try:
        return GridSwarmEnv(scenario=chosen, n_agents=n_agents, trust=trust, shadow=shadow,
                            render_mode=render_mode, **kwargs)
    except ValueError as exc:
        if max_cycles is None or "episode_steps" not in str(exc):
            raise
        raise ValueError(f"{exc} (max_cycles = {max_cycles!r} sets episode_steps)") from None


def env(scenario: str = "price_spike", n_agents: int | None = None, trust: str | None = None,
        shadow: bool | None = None, render_mode: str | None = None,
        max_cycles: int | None = None, **kwargs: Any):
    """Create the AEC environment: the parallel one wrapped by PettingZoo's ``parallel_to_aec``,
    checking each action at its own agent's ``step()`` (:mod:`gridswarm_env.aec`)."""
    from gridswarm_env.aec import aec_env

    return aec_env(parallel_env(scenario=scenario, n_agents=n_agents, trust=trust,
                                shadow=shadow, render_mode=render_mode,
                                max_cycles=max_cycles, **kwargs))


__all__ = ["GridSwarmEnv", "OBS_DIM", "OBS_FIELDS", "SCENARIOS", "__version__", "env",
           "get_scenario", "parallel_env", "raw_env", "scenario_names"]
