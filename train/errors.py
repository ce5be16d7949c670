"""Errors of a training run that are not the caller's input, and
:func:`sigterm_as_interrupt`, which turns SIGTERM into one of them (:class:`Terminated`)
for ``python -m train``, ``python -m train.dagger`` and the learning benchmark
(importing this loads no torch)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``, so
    :func:`train.train` saves what it has, as for Ctrl-C); the previous handler is
    restored after it. Outside the main thread nothing changes (``signal.signal`` works
    only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
