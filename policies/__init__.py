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
#: what a registered policy's name may hold: ``evaluate.py --policies A,B`` splits the list
#: on commas and strips each name, so a name with a comma or with whitespace at either end
#: could never be chosen there
POLICY_NAME_RULE = ("any characters but ',' and no whitespace at either end (evaluate.py "
                    "--policies A,B splits on commas and strips each name)")


def register(name: str, factory: Callable[..., Policy]) -> None:
    """Register a policy factory under ``name`` (beside the built-in ``heuristic``,
    ``random``, ``oracle`` and ``learned``; a built-in's name replaces it).

    :param factory: called with ``make_policy``'s keyword arguments, returns a
        :class:`~policies.base.Policy` (a policy class itself will do).
    :raises ValueError: an empty or non-string name, a name the command lines cannot
        select (:data:`POLICY_NAME_RULE`), or a factory that is not callable.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"policy name {name!r}: expected a non-empty string")
    if "," in name or name != name.strip():
        # evaluate.py --policies A,B splits on commas and strips each name
        raise ValueError(f"policy name {name!r}: {POLICY_NAME_RULE}")
    if not callable(factory):
        raise ValueError(f"policy {name!r}: the factory must be callable (a Policy class or "
                         f"a function returning one), got {type(factory).__name__}")
    _load_builtin()     # a first registration must not stand in for the built-ins
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
        return _lazy(*_BUILTIN["learned"])(path=name_or_path, **kwargs)
    raise ValueError(f"unknown policy {name_or_path!r}; {choices}")


def looks_like_model_path(name: str) -> bool:
    """Whether a policy name that is no registered policy is meant as a saved model: it
    has a path character (``/``, ``\\``, ``.``) or names an existing file, or ``name.zip``
    is one (``python -m train --out m2`` writes ``m2.zip``), or is too long for a file name
    (then :func:`~policies.learned.check_model_file` says so)."""
    if any(ch in name for ch in "/\\."):
        return True
    try:
        return Path(name).exists() or Path(name + ".zip").is_file()
    except OSError:   # ENAMETOOLONG: Path.exists() raises it (Python 3.11)
        return True


def _lazy(module: str, cls: str) -> Callable[..., Policy]:
    """A factory importing its module on first use (torch only loads for ``learned``)."""

    def factory(**kwargs: Any) -> Policy:
        import importlib

        return getattr(importlib.import_module(module), cls)(**kwargs)

    return factory


_BUILTIN = {"heuristic": ("policies.heuristic", "HeuristicPolicy"),
            "random": ("policies.random", "RandomPolicy"),
            "oracle": ("policies.oracle", "OraclePolicy"),
            "learned": ("policies.learned", "LearnedPolicy")}
_builtin_loaded = False


def _load_builtin() -> None:
    """Register the built-in policies once (before any user registration, so a user's
    policy of a built-in's name replaces it rather than being replaced)."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    _builtin_loaded = True
    for name, (module, cls) in _BUILTIN.items():
        _REGISTRY.setdefault(name, _lazy(module, cls))


__all__ = ["Policy", "make_policy", "policy_names", "register"]
