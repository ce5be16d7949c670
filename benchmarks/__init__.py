"""Throughput and memory benchmarks of gridswarm (DESIGN §10); not part of the test run.

``python -m benchmarks [--quick] [--json FILE]`` runs them all and prints one table:

* :mod:`benchmarks.bench_env` — environment agent-steps/s from 100 to 10 000 agents in
  both trust modes (policy time separate), the cryptography share in Ed25519 mode, the
  emergency response latency at 10 000 agents, and memory (peak RSS of a 10 000-agent
  episode, RSS growth over a long 100-agent run);
* :mod:`benchmarks.bench_bus` — Agent Message Bus messages/s;
* :mod:`benchmarks.bench_trust` — IATP sign+verify pipeline against the raw signature bound;
* :mod:`benchmarks.bench_train` — MaskablePPO agent-steps/s through ``train.adapter``;
* :mod:`benchmarks.bench_policy` — each policy's ``act`` time over the fleet (the learned
  model's direct greedy path against ``model.predict``);
* :mod:`benchmarks.bench_learning` — the time MaskablePPO takes to beat the heuristic on
  ``system_cost`` (training as ``python -m train`` does, evaluated on held-out seeds);
* :mod:`benchmarks.profile_step` — cProfile and a per-phase breakdown of one step.

Every module exposes ``run(quick: bool) -> dict`` and a command line. Timings are noisy
on a shared machine: each figure is a median over repeats and the 1-minute load average
is recorded with it.
"""

import argparse as _argparse
import json as _json
from pathlib import Path as _Path
from typing import Any as _Any


def _json_path(text: str) -> _Path:
    """``--json``'s value as a path, refusing one spelled as a directory (``out/``: the
    ``Path`` would drop the slash and write a file ``out``)."""
    from policies.cli_checks import directory_syntax_problem

    problem = directory_syntax_problem(text)
    if problem:
        raise _argparse.ArgumentTypeError(f"{text!r} {problem}")
    return _Path(text)


def add_json_arguments(parser: _argparse.ArgumentParser, what: str) -> None:
    """``--json FILE`` (writes ``what``) and ``--overwrite``: an existing non-empty file is
    refused unless ``--overwrite`` is given or it is an earlier figures file, as
    ``demo.py --json`` does."""
    parser.add_argument("--json", type=_json_path, metavar="FILE",
                        help=f"write {what} to this file (an existing file that is not "
                             "empty is refused unless --overwrite, except an earlier "
                             "--json output of these benchmarks, which is replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --json replace an existing file")


#: the key every figures file carries (:func:`write_json`): a re-run may replace a file
#: that has it without ``--overwrite``
MARKER = "gridswarm_benchmarks"
#: the largest earlier figures file :func:`is_figures_file` reads to recognize it
_MAX_FIGURES_BYTES = 256 * 2**20


def is_figures_file(path: _Path) -> bool:
    """Whether ``path`` holds an earlier ``--json`` output of these benchmarks (a JSON
    object with :data:`MARKER`), which a re-run replaces without ``--overwrite``."""
    from policies.cli_checks import read_earlier_json

    doc = read_earlier_json(path, _MAX_FIGURES_BYTES)
    return isinstance(doc, dict) and MARKER in doc


def check_json_path(parser: _argparse.ArgumentParser, path: _Path | None,
                    overwrite: bool = False) -> None:
    """Refuse an unwritable ``--json`` path, or an existing non-empty file without
    ``--overwrite`` (an earlier figures file excepted), in one line before any benchmark
    runs."""
    from policies.cli_checks import check_output_file

    if overwrite and path is None:
        parser.error("--overwrite: only with --json FILE (it lets --json replace an "
                     "existing file)")
    if path is not None:
        try:
            check_output_file(path, "--json", overwrite=overwrite or is_figures_file(path))
        except ValueError as exc:
            parser.error(str(exc))


def write_json(path: _Path, result: dict[str, _Any], overwrite: bool = False) -> None:
    """Write the figures; if that fails now (unwritable, or a file appeared there during
    the run and ``overwrite`` is off), to a file in the temporary directory instead (a
    long run's results are never lost), and say where."""
    from policies.cli_checks import write_or_rescue, write_output_text

    text = _json.dumps({MARKER: 1, **result}, indent=2, default=str)
    saved, note = write_or_rescue(
        path, lambda p: write_output_text(p, text, overwrite=overwrite or is_figures_file(p)),
        "the figures")
    print(note or f"wrote {saved}")
