"""The AEC form of the environment: PettingZoo's ``parallel_to_aec`` wrapper, checking each
action at its own agent's ``step()``.

PettingZoo's wrapper only stores each action and hands the round's actions to the parallel
``step()`` at the last agent: an invalid action was refused there (naming the earlier agent),
stayed stored, and every later ``step()`` raised the same error until ``reset()``. Here an
action is checked by the parallel step's own check (:func:`gridswarm_env.actions.decode_actions`,
same message) before it is stored, so the same agent can step again with a valid one.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec_wrapper
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from gridswarm_env.actions import decode_actions


class CheckedParallelToAEC(parallel_to_aec_wrapper):
    """``parallel_to_aec_wrapper`` whose ``step()`` refuses an invalid action before storing it."""

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            if action is not None:   # PettingZoo's assert fired after it dropped the agent's
                # entry, and every later step then raised KeyError: refuse it first
                raise ValueError(f"{agent} is done (truncated or terminated): its step() takes "
                                 f"None, got {action!r}")
            return super().step(action)         # a dead agent's step
        # ValueError: nothing stored, same agent (unwrapped: the parallel env may be wrapped)
        decode_actions(self.env.unwrapped.action_space(agent).nvec, [agent], [action])
        if not self._agent_selector.is_last():
            return super().step(action)
        try:                                    # the last agent: the parallel step runs
            return super().step(action)
        except BaseException as exc:
            # the stored actions would be handed over again at every later step: drop them
            self._actions = dict.fromkeys(self._actions)
            self.agent_selection = first = self._agent_selector.reset()
            if not isinstance(exc, Exception):  # e.g. KeyboardInterrupt: as it is
                raise
            raise RuntimeError(
                f"the parallel step (run at {agent}'s step()) failed: {type(exc).__name__}: {exc}; "
                f"this round's actions were discarded and agent_selection is back at {first}: "
                "call reset() (or step every agent again if the error allows it)") from exc


def aec_env(parallel_env: Any) -> OrderEnforcingWrapper:
    """``parallel_to_aec(parallel_env)`` with :class:`CheckedParallelToAEC`."""
    return OrderEnforcingWrapper(CheckedParallelToAEC(parallel_env))
