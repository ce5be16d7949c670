"""Training of the shared bidding policy: ``python -m train`` (see :mod:`train.trainer`).

* :mod:`train.adapter`: PettingZoo-to-SB3 ``VecEnv`` (one slot per agent);
* :mod:`train.callbacks`: grid KPIs to tensorboard;
* :mod:`train.bc`: behaviour-cloning pre-training from a teacher policy;
* :mod:`train.config`: :class:`TrainConfig` (no torch import);
* :mod:`train.trainer`: :func:`train`, :func:`load_model`;
* :mod:`train.errors`: :class:`TrainingError` (training failed once started),
  :class:`Terminated` and :func:`~train.errors.sigterm_as_interrupt` (SIGTERM as Ctrl-C;
  re-exported from :mod:`policies.cli_checks`, which ``demo.py`` and ``evaluate.py`` share).

Importing this package does not import torch; the names below load lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GridSwarmVecEnv", "TrainConfig", "TrainingError", "load_model", "train"]


def __getattr__(name: str) -> Any:
    if name == "GridSwarmVecEnv":
        from train.adapter import GridSwarmVecEnv

        return GridSwarmVecEnv
    if name == "TrainConfig":
        from train.config import TrainConfig

        return TrainConfig
    if name == "TrainingError":
        from train.errors import TrainingError

        return TrainingError
    if name in ("train", "load_model"):
        import importlib

        return getattr(importlib.import_module("train.trainer"), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
