"""Bidding policies: a registry by name (``heuristic``, ``random``, ``oracle``, ``learned``)
or a path to a saved model.

>>> from policies import make_policy
>>> policy = make_policy("heuristic")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from policies.base import Policy

_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register(name: str, factory: Callable[..., Policy]) -> None:
    """Register a policy factory under ``name``."""
    _REGISTRY[name] = factory


def policy_names() -> tuple[str, ...]:
    """Known policy names."""
    _load_builtin()
    return tuple(_REGISTRY)


def make_policy(name_or_path: str, **kwargs: Any) -> Policy:
    """Build a policy by registered name, or load a learned model from a file path.

    A path without ``.zip`` that does not exist loads its ``.zip`` sibling (``m2`` →
    ``m2.zip``, as ``python -m train --out m2`` writes it and SB3 appends it).

    :raises ValueError: an empty or unknown name (the message lists the known ones), or
        a path that does not exist (nor its ``.zip`` sibling), is a directory or is not
        a model.
    """
    _load_builtin()
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path](**kwargs)
    choices = f"known policies: {', '.join(_REGISTRY)}, or a path to a saved model (.zip)"
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"policy name {name_or_path!r}: an empty name is not allowed; "
                         f"{choices}")
    if looks_like_model_path(name_or_path):
        from policies.learned import check_model_file

        check_model_file(name_or_path)
        return _REGISTRY["learned"](path=name_or_path, **kwargs)
    raise ValueError(f"unknown policy {name_or_path!r}; {choices}")


def looks_like_model_path(name: str) -> bool:
    """Whether a policy name that is no registered policy is meant as a saved model: it
    has a path character (``/``, ``\\``, ``.``) or names an existing file, or ``name.zip``
    is one (``python -m train --out m2`` writes ``m2.zip``)."""
    return (any(ch in name for ch in "/\\.") or Path(name).exists()
            or Path(name + ".zip").is_file())


def _lazy(module: str, cls: str) -> Callable[..., Policy]:
    """A factory importing its module on first use (torch only loads for ``learned``)."""

    def factory(**kwargs: Any) -> Policy:
        import importlib

        return getattr(importlib.import_module(module), cls)(**kwargs)

    return factory


def _load_builtin() -> None:
    if _REGISTRY:
        return
    register("heuristic", _lazy("policies.heuristic", "HeuristicPolicy"))
    register("random", _lazy("policies.random", "RandomPolicy"))
    register("oracle", _lazy("policies.oracle", "OraclePolicy"))
    register("learned", _lazy("policies.learned", "LearnedPolicy"))


__all__ = ["Policy", "make_policy", "policy_names", "register"]
