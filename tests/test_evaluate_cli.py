"""``evaluate.py`` as a user meets it when something is off: bad limits and unwritable
outputs refused before any output, an empty ``--out``, re-runs into the same
directory, Ctrl-C, a write failing at the end rescued, the defaults in ``--help``;
and counts printed as integers, no cost-vs-oracle plot without an oracle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import evaluate
from tests.command_lines import EVAL_SMALL, _evaluate, _one_line_error, counted_scenario_file


@pytest.mark.parametrize("soc_min, n_agents, expected", [
    # an agent the fleet does not have: the message lists the fleet's names
    (0.3, 3, "solar_000, battery_000, ev_000"),
    # soc_min 0.99 merged on the battery default soc_max 0.95 (was found only at reset)
    (0.99, 10, "soc_min (0.99) must be <= soc_max (0.95)"),
], ids=["missing-agent", "conflicts-with-kind"])
def test_evaluate_bad_limits_fail_before_any_output(tmp_path, capsys, soc_min, n_agents,
                                                    expected):
    limits = tmp_path / "limits.toml"
    limits.write_text(f"[agents.battery_003]\nsoc_min = {soc_min}\n")
    out = tmp_path / "out"
    status, err = _evaluate(["--agents", str(n_agents), "--limits", str(limits),
                             "--episodes", "1", "--policies", "heuristic", "--out", str(out)],
                            capsys)
    assert status == 2
    line = _one_line_error(err, "evaluate.py")
    assert "battery_003" in line and expected in line
    assert not out.exists()


def test_evaluate_unwritable_outputs_fail_before_any_output(tmp_path, capsys):
    for blocker, words in (("results.json", "is a directory"),
                           ("tensorboard", "is a file, not a directory")):
        out = tmp_path / blocker.replace(".", "_")
        out.mkdir()
        if blocker == "tensorboard":
            (out / blocker).write_text("")
        else:
            (out / blocker).mkdir()
        status, err = _evaluate(["--agents", "3", "--episodes", "1", "--policies", "random",
                                 "--scenarios", "emergency", "--out", str(out)], capsys)
        assert status == 2 and words in _one_line_error(err, "evaluate.py")
        assert [p.name for p in out.iterdir()] == [blocker]


def test_evaluate_refuses_an_empty_out_instead_of_writing_to_the_cwd(tmp_path, capsys,
                                                                    monkeypatch):
    """Review: --out '' (an unset "$VAR") wrote results.json, results.md and the plots
    into the current directory, and a later run would clean up freq_*.png there."""
    monkeypatch.chdir(tmp_path)
    status, err = _evaluate(["--agents", "3", "--episodes", "1", "--policies", "random",
                             "--scenarios", "emergency", "--out", ""], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == ("evaluate.py: error: --out: empty path; "
                                                   "expected a directory")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_rerun_replaces_its_own_outputs_only(tmp_path, capsys):
    out = tmp_path / "out"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency,price_spike",
                             "--out", str(out)], capsys)
    assert status == 0, err
    (out / "notes.txt").write_text("mine")
    (out / "freq_mine.png").write_text("mine")   # not a scenario's: not evaluate's own
    first_events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(first_events) == 1
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 0, err
    # no oracle ran: no cost_vs_oracle.png (a cost relative to the oracle's)
    assert sorted(p.name for p in out.glob("*.png")) == ["freq_emergency.png", "freq_mine.png"]
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events != first_events
    assert (out / "notes.txt").read_text() == "mine"
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["config"]["scenarios"] == ["emergency"]


def test_evaluate_interrupted_rerun_leaves_the_directory_as_it_was(tmp_path, capsys,
                                                                   monkeypatch):
    import policies.rollout

    out = tmp_path / "out"
    assert _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                     capsys)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    real = policies.rollout.run_episode
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", interrupt_second)
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 130 and "interrupted" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_evaluate_ctrl_c_before_any_episode_says_nothing_was_lost(tmp_path, capsys,
                                                                  monkeypatch):
    """New-user review (session 27): Ctrl-C while the policies were built (a model
    loading, seconds with torch's import) printed only 'evaluate.py: interrupted', where
    one during the episodes says how far it got and that --out was left as it was."""
    import policies

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(policies, "make_policy", interrupt)
    out = tmp_path / "out"
    status, err = _evaluate(["--agents", "5", "--episodes", "1", "--policies", "random",
                             "--trust", "hmac", "--out", str(out)], capsys)
    assert status == 130 and "Traceback" not in err
    assert err.strip() == (f"evaluate.py: interrupted after 0 of 3 episodes; --out "
                           f"{str(out)!r} was left as it was")
    assert not out.exists()


def _saved_stopped_run(err: str, out: Path, start: str) -> dict:
    """The results a stopped run saved, read from the file its one stderr line names
    (``start``, then where they are saved; --out left as it was), and removed."""
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in err, err
    assert line.startswith(f"{start}; its results are saved in '"), line
    assert line.endswith(f"--out {str(out)!r} was left as it was"), line
    saved = Path(line.split("saved in '")[1].split("'")[0])
    data = json.loads(saved.read_text())
    saved.unlink()
    return data


def test_evaluate_ctrl_c_keeps_the_finished_episodes_and_creates_nothing(tmp_path, capsys,
                                                                        monkeypatch):
    """Review: Ctrl-C after some episodes printed 'interrupted' and threw their results
    away (and left an empty DIR/tensorboard/ behind). Now they go to a file in the
    temporary directory, named in the one-line message; --out is not created."""
    import policies.rollout

    real = policies.rollout.run_episode
    calls = []

    def interrupt_third(*args, **kwargs):   # no-DER baseline, episode seed 0, Ctrl-C
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(policies.rollout, "run_episode", interrupt_third)
    out = tmp_path / "new" / "out"
    status, err = _evaluate(["--agents", "5", "--episodes", "2", "--policies", "random",
                             "--trust", "hmac", "--scenarios", "emergency,price_spike",
                             "--out", str(out)], capsys)
    assert status == 130
    data = _saved_stopped_run(err, out, "evaluate.py: interrupted after 1 of 4 episodes")
    assert [(r["policy"], r["scenario"], r["seed"]) for r in data["runs"]] == [
        ("random", "emergency", 0)]
    assert data["summary"]["interrupted"] is True
    assert data["summary"]["interrupted_by"] == "Ctrl-C"
    assert data["summary"]["scenarios"]["emergency"]["random"]["episodes"] == 1
    assert "emergency" in data["summary"]["no_der_counterfactual"]
    assert not (tmp_path / "new").exists()


class _SigtermReachedTheTest(Exception):
    """What the test's own SIGTERM handler raises: evaluate.py left SIGTERM to it."""


def test_evaluate_sigterm_keeps_the_finished_episodes_as_ctrl_c_does(tmp_path, capsys,
                                                                    monkeypatch):
    """Session 28: SIGTERM (``timeout``, ``kill``, a cancelled CI job) ended evaluate.py
    at once: the finished episodes' results were lost and a partial tensorboard event
    file (and the directories created for it) stayed in --out. Now it stops as Ctrl-C
    does (results saved to the temporary directory, --out left as it was), says it was
    SIGTERM, and exits 143 (128 + SIGTERM) as ``python -m train`` does; the previous
    handler is restored."""
    import os
    import signal

    import policies.rollout

    real = policies.rollout.run_episode
    calls = []

    def terminate_third(*args, **kwargs):   # no-DER baseline, episode seed 0, SIGTERM
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM was not delivered")
        return real(*args, **kwargs)

    def test_handler(signum, frame):
        raise _SigtermReachedTheTest

    monkeypatch.setattr(policies.rollout, "run_episode", terminate_third)
    out = tmp_path / "new" / "out"
    previous = signal.signal(signal.SIGTERM, test_handler)
    try:
        status, err = _evaluate(["--agents", "5", "--episodes", "2", "--policies", "random",
                                 "--trust", "hmac", "--scenarios", "emergency,price_spike",
                                 "--out", str(out)], capsys)
        assert signal.getsignal(signal.SIGTERM) is test_handler   # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 143
    data = _saved_stopped_run(err, out,
                              "evaluate.py: interrupted by SIGTERM after 1 of 4 episodes")
    assert [r["seed"] for r in data["runs"]] == [0]
    assert data["summary"]["interrupted"] is True
    assert data["summary"]["interrupted_by"] == "SIGTERM"
    assert not (tmp_path / "new").exists()


def test_evaluate_output_failing_at_the_end_is_rescued(tmp_path, capsys, monkeypatch):
    """An output that cannot be written to DIR goes to the temporary directory and the
    earlier run's outputs are left in place; this run's tensorboard event file is not
    moved into DIR/tensorboard beside the earlier run's (their curves would be mixed at
    the same steps): it stays in its temporary directory, which the line names. Before:
    it was moved there, two runs' event files in DIR/tensorboard, and the line did not
    say so."""
    out = tmp_path / "out"
    assert _evaluate([*EVAL_SMALL, "--scenarios", "emergency,price_spike", "--out", str(out)],
                     capsys)[0] == 0
    earlier_events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(earlier_events) == 1
    real = evaluate.summarize

    def summarize_then_block(*args, **kwargs):   # results.md becomes a directory
        result = real(*args, **kwargs)
        (out / "results.md").unlink()
        (out / "results.md").mkdir()
        return result

    monkeypatch.setattr(evaluate, "summarize", summarize_then_block)
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out)],
                            capsys)
    assert status == 1
    line = _one_line_error(err, "evaluate.py")
    rescued = Path(line.split("saved it to '")[1].split("'")[0])
    assert "## emergency" in rescued.read_text()
    rescued.unlink()
    data = json.loads((out / "results.json").read_text())   # the rest was written
    assert data["summary"]["config"]["scenarios"] == ["emergency"]
    assert (out / "freq_price_spike.png").exists()   # earlier outputs left in place
    assert sorted((out / "tensorboard").glob("events.out.tfevents.*")) == earlier_events
    assert "this run's tensorboard scalars are in '" in line, line
    staging = Path(line.split("this run's tensorboard scalars are in '")[1].split("'")[0])
    try:
        assert len(list(staging.glob("events.out.tfevents.*"))) == 1
        assert line.endswith(f"not in {str(out / 'tensorboard')!r}; earlier outputs in "
                             f"{str(out)!r} were left in place"), line
    finally:
        shutil.rmtree(staging)


def test_evaluate_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("episodes per policy and scenario (default: 5)", "(default: 0)",
                  "number of DER agents, 1 to 1,000,000 (default: 100, or --config's n_agents)", "(default: eval_out)",
                  "(default: ed25519", "heuristic,random,oracle,learned"):
        assert words in text, words


# --------------------------------------------------------------------------- results.md
def test_evaluate_counts_as_integers_no_oracle_no_cost_plot_baselines_named(tmp_path,
                                                                             capsys):
    """Review: results.md printed counts as 0.000 ± 0.000, cost_vs_oracle.png was
    written without an oracle, and the progress bar's 15 episodes (the shadow baselines
    included) met a summary saying 12."""
    out = tmp_path / "o"
    (out).mkdir()
    (out / "cost_vs_oracle.png").write_bytes(b"an earlier run's")
    status = evaluate.main(["--policies", "heuristic,random", "--scenarios", "emergency",
                            "--agents", "5", "--episodes", "2", "--trust", "hmac",
                            "--out", str(out), "--no-progress"])
    said = capsys.readouterr().out
    assert status == 0
    assert not (out / "cost_vs_oracle.png").exists()   # not written, the earlier removed
    assert "4 episodes + 1 no-DER baseline (shadow mode)" in said
    md = (out / "results.md").read_text()
    assert "note: no cost_vs_oracle.png" in md and "add it to --policies" in md
    row = next(line for line in md.splitlines() if line.startswith("| heuristic |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in md.splitlines() if line.startswith("| policy |"))
    cols = [evaluate.column_kpi(c) or c.strip() for c in header.strip("|").split("|")]
    table = dict(zip(cols, cells, strict=True))
    assert table["blocked_attempts"] == "0 ± 0" and table["executed_violations"] == "0 ± 0"
    assert table["episodes"] == "2" and "." in table["system_cost"]


def test_count_formatting():
    fmt = evaluate._fmt
    assert fmt({"mean": 2.0, "std": None, "n": 1, "n_null": 0, "integer": True}) == "2"
    assert fmt({"mean": 2.5, "std": 0.7071, "n": 2, "n_null": 0,
                "integer": True}) == "2.5 ± 0.7"
    assert fmt({"mean": 2.0, "std": 0.0, "n": 2, "n_null": 0, "integer": False}) == (
        "2.000 ± 0.000")


def test_seeds_beyond_the_evaluation_seeds_get_a_note(tmp_path, capsys):
    """Seeds 0..99 999 are never training episodes (policies.rollout.EVAL_SEEDS); a run
    that goes beyond them says so, on stderr and in results.md, and the defaults do not."""
    assert evaluate.seeds_note(0, 5) is None and evaluate.seeds_note(99_995, 5) is None
    assert evaluate.seeds_note(99_999, 3) == (
        "seeds 100,000…100,001 are not among the evaluation seeds (0…99,999, which "
        "training never plays): a trained model may have played these episodes")
    out = tmp_path / "o"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--seed", "99999",
                             "--episodes", "2", "--out", str(out)], capsys)
    assert status == 0
    said = "seed 100,000 is not among the evaluation seeds (0…99,999, which training"
    assert f"note: {said}" in err
    assert said in (out / "results.md").read_text()


# --------------------------------------------------------------------------- --contract-keys
def test_evaluate_contract_keys_are_recorded_and_change_no_result(tmp_path, capsys):
    """Security review: evaluate.py always used seeded contract keys (anyone who knows
    --seed can derive every key). ``--contract-keys random`` draws them from os.urandom;
    the choice is recorded, and the episodes are the same (no decision depends on the
    key bytes)."""
    results = {}
    for keys in ("seeded", "random"):
        out = tmp_path / keys
        status, err = _evaluate([*EVAL_SMALL, "--scenarios", "emergency", "--out", str(out),
                                 "--contract-keys", keys], capsys)
        assert status == 0, err
        results[keys] = json.loads((out / "results.json").read_text())
        assert results[keys]["summary"]["config"]["contract_keys"] == keys
        assert f"contract keys: {keys}" in (out / "results.md").read_text().replace("*", "")
    assert results["random"]["runs"] == results["seeded"]["runs"]
    assert results["random"]["summary"]["no_der_counterfactual"] == \
        results["seeded"]["summary"]["no_der_counterfactual"]
    default = evaluate.config_file_of_args(evaluate.build_parser().parse_args([]))   # no file
    assert default.contract_keys == "random"   # unforgeable unless asked (crypto review)


def test_evaluate_refuses_a_bad_contract_keys_value_naming_the_flag(tmp_path, capsys):
    status, err = _evaluate([*EVAL_SMALL, "--out", str(tmp_path / "o"),
                             "--contract-keys", "secret"], capsys)
    line = _one_line_error(err, "evaluate.py")
    assert status == 2 and "--contract-keys" in line and "'seeded', 'random'" in line
    # a library call names the keyword and its flag (tests/test_evaluate_library.py)
    with pytest.raises(evaluate.UsageError, match=r"^contract_keys \(--contract-keys\) = "
                                                  r"'Random': expected one of seeded, random$"):
        evaluate.evaluate(["random"], ["emergency"], 1, 0, 5, tmp_path / "o2", trust="hmac",
                          progress=False, contract_keys="Random")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("args, hint", [
    (["--policy", "heuristic"], "--policies"),   # demo.py's flag name
    (["--policy=heuristic"], "--policies"),
    (["--seeds", "3"], "--seed"),
])
def test_evaluate_unknown_option_close_to_one_gets_a_hint(tmp_path, capsys, args, hint):
    """Review: `python evaluate.py --policy heuristic` (demo.py's flag) gave a bare
    'unrecognized arguments'."""
    status, err = _evaluate([*args, "--out", str(tmp_path / "o")], capsys)
    line = _one_line_error(err, "evaluate.py")
    assert status == 2
    assert line == (f"evaluate.py: error: unrecognized arguments: {' '.join(args)}; "
                    f"did you mean {hint}? (see evaluate.py --help)")
    assert not (tmp_path / "o").exists()


def test_evaluate_unknown_option_far_from_ours_gets_no_hint(tmp_path, capsys):
    status, err = _evaluate(["--foo", "--out", str(tmp_path / "o")], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py") == ("evaluate.py: error: unrecognized "
                                                   "arguments: --foo (see evaluate.py --help)")


@pytest.mark.parametrize("kind", ["corrupt", "directory"])
def test_evaluate_bad_model_path_names_the_flag(tmp_path, capsys, kind):
    """Review: a directory given as --policies got '--policies: model file … is a
    directory', a corrupt file 'model file … is corrupt' without the flag."""
    model = tmp_path / "bad.zip"
    if kind == "corrupt":
        model.write_bytes(b"not a model")
    else:
        model.mkdir()
    out = tmp_path / "o"
    status, err = _evaluate([*EVAL_SMALL, "--policies", str(model), "--scenarios",
                             "emergency", "--out", str(out)], capsys)
    line = _one_line_error(err, "evaluate.py")
    assert status == 2
    assert line.startswith(f"evaluate.py: error: --policies: model file {str(model)!r} is ")
    assert not out.exists()


def test_a_reader_closing_the_pipe_early_gets_no_traceback(tmp_path):
    """Walkthrough review: ``python evaluate.py ... | head -1`` printed a BrokenPipeError
    traceback and exited 1 although every result file was written."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, str(root / "evaluate.py"), "--policies", "heuristic", "--scenarios",
         "emergency", "--episodes", "1", "--agents", "5", "--trust", "hmac", "--out", str(out),
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()   # the reader is gone before anything is printed (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (out / "results.json").is_file() and (out / "results.md").is_file()


def test_small_kpis_keep_their_spread_and_ties_print_no_minus_sign():
    """Eval review: results.md printed the emergency's unserved energy as
    ``0.001 ± 0.000`` (0.00098 ± 0.00012 MWh in results.json), hiding the spread README
    reports, and an exact tie's float noise (-4.5e-14 $) as ``-0.000``."""
    fmt = evaluate._fmt

    def stat(mean, std):
        return {"mean": mean, "std": std, "n": 5, "n_null": 0, "integer": False}

    assert fmt(stat(0.00098, 0.00012)) == "0.00098 ± 0.00012"
    assert fmt(stat(59.98, 0.0021)) == "59.9800 ± 0.0021"
    assert fmt(stat(0.001, None)) == "0.00100"
    assert fmt(stat(262.2, 1.5)) == "262.200 ± 1.500"       # 3 decimals suffice
    assert fmt(stat(-1e-14, None)) == "0.000"                # noise: no minus, no 14 decimals
    assert fmt(stat(1e-9, 2e-9)) == "0.000 ± 0.000"          # below 1e-6: capped
    diff = {"heuristic": {}, "learned": {"system_cost_vs_heuristic": {
        "mean_diff": -4.5e-14, "std_diff": 1e-14, "ci95": 2e-14, "n_pairs": 5,
        "relative": -1.7e-16, "unpaired_seeds": []}}}
    text = evaluate._paired_text(diff)
    assert "learned +0.000 $ [+0.000, +0.000] (+0.00 %)" in text, text


# --------------------------------------------------------------------------- comma lists
@pytest.mark.parametrize("flag, value, item", [
    ("--scenarios", "price_spike,,emergency", "item 2 of 3 is empty"),
    ("--scenarios", "emergency,", "item 2 of 2 is empty"),
    ("--policies", ",heuristic", "item 1 of 2 is empty"),
    ("--policies", "heuristic, ,random", "item 2 of 3 is empty"),
])
def test_an_empty_item_in_a_comma_list_is_refused_naming_the_flag(tmp_path, capsys, flag,
                                                                    value, item):
    """Fresh-user review: ``--scenarios price_spike,,emergency`` (a typo, or an unset
    ``$VAR`` between two commas) was silently played as ``price_spike,emergency``."""
    out = tmp_path / "o"
    args = {"--policies": "random", "--scenarios": "emergency", flag: value}
    status, err = _evaluate([*EVAL_SMALL[:4], "--trust", "hmac", "--policies",
                             args["--policies"], "--scenarios", args["--scenarios"],
                             "--out", str(out)], capsys)
    assert status == 2
    line = _one_line_error(err, "evaluate.py")
    assert line.startswith(f"evaluate.py: error: {flag} {value!r}: {item} (two commas in a "
                           "row, or one at an end); expected ")
    assert line.endswith(", separated by single commas")
    assert not out.exists()


def test_a_repeated_name_is_played_once_with_a_note(tmp_path, capsys):
    """Fresh-user review: ``--policies random,random --scenarios emergency,emergency``
    was merged without a word; now each repeat gets a one-line note (on stderr and in
    results.md) and is played once, as before."""
    out = tmp_path / "o"
    status, err = _evaluate([*EVAL_SMALL[:4], "--trust", "hmac", "--policies",
                             "random,random", "--scenarios", "emergency,emergency",
                             "--out", str(out)], capsys)
    assert status == 0, err
    # prefixed as demo.py's and python -m train's notes are (session 30: "note: ...")
    assert err.splitlines() == [
        "evaluate.py: note: --policies: 'random' given twice; played once",
        "evaluate.py: note: --scenarios: 'emergency' given twice; played once"]
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["policy"], r["scenario"]) for r in runs] == [("random", "emergency")]
    assert "- note: --policies: 'random' given twice; played once" in (
        out / "results.md").read_text()


def test_a_scenario_named_besides_all_and_one_model_file_named_twice_get_a_note(tmp_path):
    """``--scenarios all,emergency`` plays every scenario once; two spellings of one
    model file (``m3``, ``m3.zip``, ``./m3.zip``; ``learned`` and the shipped model's
    path) are one policy, played under the first name."""
    from gridswarm_env.scenarios import scenario_names
    from policies.learned import DEFAULT_MODEL

    pols, scs, notes, _, _ = evaluate.check_arguments(
        "heuristic", "all,emergency,all", 1, 0, 5, "hmac", None)
    assert list(scs) == list(scenario_names())
    assert notes == ["scenarios (--scenarios): 'all' given twice; played once",
                     "scenarios (--scenarios): 'emergency' is in 'all' already; played once"]
    (tmp_path / "m3.zip").write_bytes(b"PK")   # resolve_policies does not load it
    spellings = [str(tmp_path / "m3"), str(tmp_path / "m3.zip"), f"{tmp_path}/./m3.zip"]
    names, notes = evaluate.resolve_policies(",".join(spellings))
    assert names == spellings[:1]
    assert notes == [f"policies (--policies): {spellings[1]!r} is the same model file as "
                     f"{spellings[0]!r}; played once, as {spellings[0]!r}",
                     f"policies (--policies): {spellings[2]!r} is the same model file as "
                     f"{spellings[0]!r}; played once, as {spellings[0]!r}"]
    if DEFAULT_MODEL.is_file():
        names, notes = evaluate.resolve_policies(["learned", str(DEFAULT_MODEL)])
        assert names == ["learned"] and "is the same model file as 'learned'" in notes[0]


def test_an_empty_item_in_a_list_is_refused_from_python_too(tmp_path):
    with pytest.raises(evaluate.UsageError, match=r"^policies \(--policies\) = \['heuristic', "
                                                  r"''\]: item 2 of 2 is empty"):
        evaluate.resolve_policies(["heuristic", ""])
    with pytest.raises(evaluate.UsageError, match=r"^scenarios \(--scenarios\) = "
                                                  r"'emergency,,price_spike': item 2 of 3"):
        evaluate.resolve_scenarios("emergency,,price_spike")
    with pytest.raises(evaluate.UsageError, match=r"^policies \(--policies\) is empty"):
        evaluate.resolve_policies("  ")


def test_a_scenario_file_named_twice_is_read_once(tmp_path, capsys, monkeypatch):
    """``--scenarios trip.toml,trip.toml`` read the file twice (then played it once): the
    hash recorded was of the first read, and a file rewritten in between was refused as
    two different scenarios of one name. Now it is read once, with the same note."""
    trip, reads = counted_scenario_file(tmp_path, monkeypatch)
    notes = evaluate.scenarios_and_notes(f"{trip},{trip}")[1]
    assert reads == [str(trip)]
    assert notes == ["scenarios (--scenarios): 'trip_90' given twice; played once"]


def test_a_scenario_file_plays_on_the_command_line(tmp_path, capsys, monkeypatch):
    """Docs review: a scenario TOML file (``load_scenario_file``) played only from Python;
    ``--scenarios trip_90.toml`` was refused as an unknown scenario. It is played under its
    ``name``, recorded as a custom scenario, and read once."""
    from gridswarm_env.scenarios import load_scenario_file

    trip, reads = counted_scenario_file(tmp_path, monkeypatch)
    out = tmp_path / "o"
    status, err = _evaluate(["--agents", "5", "--episodes", "1", "--policies", "heuristic",
                             "--trust", "hmac", "--scenarios", f"{trip},emergency",
                             "--out", str(out)], capsys)
    assert status == 0, err
    assert reads == [str(trip)]   # checked and played from one reading
    result = json.loads((out / "results.json").read_text())
    config = result["summary"]["config"]
    assert config["scenarios"] == ["trip_90", "emergency"]
    assert evaluate.scenario_from_record(config["custom_scenarios"]["trip_90"]) == \
        load_scenario_file(trip)
    assert list(config["custom_scenarios"]) == ["trip_90"]
    assert "- scenario trip_90: custom, not a registered scenario" in \
        (out / "results.md").read_text()
    # the same as from Python
    alone = evaluate.evaluate(["heuristic"], [load_scenario_file(trip)], 1, 0, 5,
                              tmp_path / "py", trust="hmac", progress=False,
                              counterfactual=False)
    played = [r["metrics"]["system_cost"] for r in result["runs"] if r["scenario"] == "trip_90"]
    assert played == [alone["runs"][0]["metrics"]["system_cost"]]


@pytest.mark.parametrize("text, says", [
    (None, "--scenarios: scenario file '{path}' does not exist"),
    ('base = "nowhere"\n', "--scenarios: scenario file '{path}': needs base = one of "
                           "price_spike, solar_surplus, emergency (got base = 'nowhere')"),
    ('base = "emergency"\ncontingency = 90.0\n',
     "--scenarios: scenario file '{path}': unknown field 'contingency'"),
], ids=["missing", "bad-base", "unknown-field"])
def test_a_bad_scenario_file_is_refused_in_one_line(tmp_path, capsys, text, says):
    path = tmp_path / "s.toml"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "o"
    status, err = _evaluate([*EVAL_SMALL, "--scenarios", str(path), "--out", str(out)], capsys)
    assert status == 2
    assert _one_line_error(err, "evaluate.py").startswith(
        "evaluate.py: error: " + says.format(path=path))
    assert not out.exists()
