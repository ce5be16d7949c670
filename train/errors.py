"""Errors of a training run that are not the caller's input, and
:func:`sigterm_as_interrupt`, which turns SIGTERM into :class:`Terminated` for ``python -m
train``, ``python -m train.dagger`` and the learning benchmark (both live in
:mod:`policies.cli_checks`, shared with ``demo.py`` and ``evaluate.py``, and are
re-exported here; importing this loads no torch)."""

from __future__ import annotations

from pathlib import Path

from policies.cli_checks import Terminated, sigterm_as_interrupt

__all__ = ["Terminated", "TrainingError", "sigterm_as_interrupt"]


class TrainingError(Exception):
    """Training stopped on an error after it had started (not a bad argument: it is
    deliberately not a ``ValueError``, which :func:`train.train` raises only before any
    work).

    The message is one line: where training stopped, the error, whether the model was
    saved, the last checkpoint and the training record. The record (``<model>.json``)
    holds the same under ``"error"``, with the traceback.

    :param message: the one-line message.
    :param num_timesteps: agent-steps (SB3's ``num_timesteps``) when it failed.
    :param stage: ``"behaviour cloning"``, ``"PPO"`` or ``"evaluation"``.
    :param model: where the model was saved, or None (not saved: its weights were not
        finite, or the write failed).
    :param checkpoint: the last checkpoint written by this run, or None.
    :param record: where the training record was written, or None.
    """

    def __init__(self, message: str, *, num_timesteps: int, stage: str,
                 model: Path | None = None, checkpoint: Path | None = None,
                 record: Path | None = None) -> None:
        super().__init__(message)
        self.num_timesteps = num_timesteps
        self.stage = stage
        self.model = model
        self.checkpoint = checkpoint
        self.record = record
