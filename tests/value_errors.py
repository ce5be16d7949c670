"""A call must raise a ``ValueError`` whose message names every given part."""

from __future__ import annotations

import pytest


def _raises(make, *parts: str) -> str:
    """Call ``make``; it must raise ValueError whose message contains every part."""
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    for part in parts:
        assert part in message, message
    return message
