"""Reading what a run wrote to tensorboard, for the training tests."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def scalar_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> its ``(step, value)`` points in the order written, over every event file in
    ``run_dir`` (duplicates kept: the tests look for them)."""
    points: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                number = (value.simple_value if value.HasField("simple_value")
                          else value.tensor.float_val[0])
                points.setdefault(value.tag, []).append((event.step, number))
    return points


def scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    """Tag -> the steps of its points, in the order written (see :func:`scalar_points`)."""
    return {tag: [step for step, _ in pts] for tag, pts in scalar_points(run_dir).items()}
