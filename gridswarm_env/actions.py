"""Action decoding: the ``MultiDiscrete`` action space and the one check of actions.

:func:`decode_actions` turns the actions of the parallel ``step()`` (and of the AEC API's
single actions, :mod:`gridswarm_env.aec`) into (power level, price level) arrays, with an
error naming the first bad agent and the allowed values; :class:`MaskedMultiDiscrete` is
the action space whose ``sample`` takes the flat concatenated mask.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces


class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """``MultiDiscrete`` whose :meth:`sample` also takes the flat concatenated mask
    (``infos[a]["action_mask"]``, length ``sum(nvec)``), as PettingZoo's harnesses pass it."""

    def sample(self, mask=None, probability=None):
        if isinstance(mask, np.ndarray) and mask.ndim == 1 and mask.size == int(self.nvec.sum()):
            mask = tuple(np.split(mask.astype(np.int8), np.cumsum(self.nvec)[:-1]))
        if probability is None:
            return super().sample(mask)
        return super().sample(mask, probability)


_DTYPE_OF = operator.attrgetter("dtype")
_SEQUENCE_ROWS = frozenset({list, tuple})
#: element types of a list or tuple action that need the per-agent check
_NOT_PLAIN_NUMBERS = frozenset({bool, np.bool_, np.ndarray, np.ma.MaskedArray})


def _is_bool(x: Any) -> bool:
    return isinstance(x, bool | np.bool_) or (isinstance(x, np.ndarray) and x.dtype.kind == "b")


def _coerced_action(values: Sequence[Any]) -> tuple[int, str] | None:
    """The first action numpy would turn into numbers without a word, as ``(index, what is
    wrong)``: one holding a bool (``np.array([[True, 3], [1, 2]])`` is ``[[1, 3], [1, 2]]``,
    while an all-bool batch is refused as bool) or a masked (missing) entry of a masked
    array, whose hidden data would be bid; None when there is none. An int or float
    array row, the usual action, passes the fast path (~6 µs at 100 agents), as do list or
    tuple rows of plain numbers (one pass over their element types)."""
    row_types = set(map(type, values))
    if row_types == {np.ndarray} and not any(
            dtype.kind == "b" for dtype in set(map(_DTYPE_OF, values))):
        return None
    if row_types <= _SEQUENCE_ROWS and _NOT_PLAIN_NUMBERS.isdisjoint(
            map(type, itertools.chain.from_iterable(values))):
        return None
    for i, value in enumerate(values):
        if type(value) is np.ndarray:
            if value.dtype.kind == "b":
                return i, "a bool is not a level"
            continue
        if np.ma.isMaskedArray(value) and np.ma.is_masked(value):
            return i, "it has a masked (missing) entry"
        if _is_bool(value):
            return i, "a bool is not a level"
        if isinstance(value, list | tuple) and any(_is_bool(x) for x in value):
            return i, "a bool is not a level"
    return None


def decode_actions(nvec: np.ndarray, names: Sequence[str], values: Sequence[Any]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``values[i]`` (the action of ``names[i]``) → (power level, price level) int64 arrays,
    for the ``MultiDiscrete(nvec)`` action space: the one action check, of the parallel
    ``step()`` and of the AEC API's single actions (:mod:`gridswarm_env.aec`).

    Raises ValueError naming the first bad agent and the allowed values when an action is
    not two integer-valued numbers inside ``[0, nvec)`` (NaN, ±inf, strings, bools, masked
    entries, wrong shapes).
    """
    allowed = (f"expected 2 integers [power level 0..{nvec[0] - 1}, "
               f"price level 0..{nvec[1] - 1}]")
    try:   # numbers only: strings and objects are refused, not converted
        arr = np.array(values)
        if arr.dtype.kind in "iuf":
            arr = arr.astype(float, copy=False)
        else:
            arr = None
    except (TypeError, ValueError):
        arr = None
    coerced = _coerced_action(values)
    if coerced is not None:
        i, what = coerced
        raise ValueError(f"action of {names[i]} = {values[i]!r}: {what}; {allowed}")
    if arr is None or arr.shape != (len(names), 2):
        for a, value in zip(names, values, strict=True):
            try:
                one = np.asarray(value)
                ok = one.shape == (2,) and one.dtype.kind in "iuf"
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"action of {a} = {value!r}: {allowed}")
        raise ValueError(f"actions could not be read: {allowed}")
    # in range and integer-valued (NaN and ±inf fail the comparisons)
    ok = arr >= 0
    ok &= arr < nvec
    ok &= arr == np.floor(arr)
    if not ok.all():
        bad = ~ok.all(axis=1)
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"action of {names[i]} = {values[i]!r} is outside the action space: "
                         f"{allowed} ({int(bad.sum())} agent(s) affected)")
    ints = arr.astype(np.int64)
    return ints[:, 0], ints[:, 1]
