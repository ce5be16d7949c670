"""Errors of a training run that are not the caller's input (importing this loads no torch)."""

from __future__ import annotations

from pathlib import Path


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler's stop) while :func:`train.train`
    runs: handled as Ctrl-C is (the model as far as it got and its record are saved as
    ``<run dir>/<name>_interrupted.zip``), and ``python -m train`` exits with status 143
    (128 + SIGTERM) instead of 130. Python's default for SIGTERM ends the process at
    once, with nothing saved since the last checkpoint and no record. ``python -m
    train.dagger`` turns SIGTERM into it too (nothing written, as for its Ctrl-C; 143)."""
