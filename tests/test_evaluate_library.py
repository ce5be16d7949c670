"""evaluate.py as a library user calls it: ``evaluate.evaluate(...)`` with custom
scenarios and policies, errors that name the keyword, readable exceptions."""

from __future__ import annotations

from pathlib import Path

import evaluate


def test_a_stopped_run_reads_as_one_line_not_a_tuple(tmp_path):
    """Library review: ``str(EvaluationFailed(...))`` was the tuple repr
    ``('bad / emergency / seed 0', ValueError(...))``; ``message(out_dir)`` stays the
    command line's line."""
    saved = tmp_path / "results-failed.json"
    exc = evaluate.EvaluationFailed("bad / emergency / seed 0", ValueError("policy\nbug"),
                                    0, 2, saved)
    assert str(exc) == ("failed during bad / emergency / seed 0 (ValueError: policy bug) "
                        f"after 0 of 2 episodes; the traceback is saved in {str(saved)!r}")
    assert exc.message("eval_out") == f"{exc}; --out 'eval_out' was left as it was"
    stopped = evaluate.EvaluationInterrupted(3, 12, saved)
    assert str(stopped) == ("interrupted after 3 of 12 episodes; their results are saved in "
                            f"{str(saved)!r}")
    assert stopped.message(Path("o")) == f"{stopped}; --out 'o' was left as it was"
    assert isinstance(stopped, KeyboardInterrupt) and isinstance(exc, RuntimeError)
