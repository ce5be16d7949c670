"""Tests of policies/cli_checks.py: the output-path checks and the safe write shared by
the command lines (refused before the work, rescued after it)."""

from __future__ import annotations

import pytest

from policies.cli_checks import (
    check_output_dir,
    check_output_file,
    check_path_names,
    write_or_rescue,
)
from tests.command_lines import UNWRITABLE, _unwritable_here


def test_output_checks_name_the_problem_and_leave_nothing_behind(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a directory; expected a file path"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_file(tmp_path / "file" / "x.json", "--json")
    with pytest.raises(ValueError, match="does not exist"):
        check_output_file(tmp_path / "no" / "x.json", "--json")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "file" / "run", "--logdir")
    # new-user review: evaluate.py --out f1/results.json said what was wrong, not what to give
    with pytest.raises(ValueError, match="is a file, not a directory; expected a directory "
                                         "to write into"):
        check_output_dir(tmp_path / "file", "--out")
    check_output_file(tmp_path / "new.json", "--json")
    check_output_file(tmp_path / "a" / "b" / "m.zip", "--out", create_dirs=True)
    check_output_dir(tmp_path / "c" / "d", "--out")
    check_output_file(tmp_path / "file", "--json")          # existing: content kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "x"
    if _unwritable_here():
        with pytest.raises(ValueError, match="cannot be written"):
            check_output_file(UNWRITABLE, "--out")


def test_a_name_longer_than_the_file_system_allows_is_refused_in_words(tmp_path):
    """Fuzzing review (session 23): a 300-byte file or directory name made
    ``Path.exists()`` raise ``OSError: [Errno 36] File name too long``, a traceback out
    of every command line's output check."""
    long = "a" * 300
    says = r"File name too long \(at most [\d,]+ bytes per name and [\d,]+ per path here\)$"
    for path in (tmp_path / f"{long}.json", tmp_path / long / "x.json"):
        with pytest.raises(ValueError, match=rf"^--json '{path}': {says}"):
            check_output_file(path, "--json")
        with pytest.raises(ValueError, match=rf"^--json '{path}': {says}"):
            check_path_names(path, "--json")
    with pytest.raises(ValueError, match=rf"^--out '{tmp_path / long}': {says}"):
        check_output_dir(tmp_path / long, "--out")
    check_path_names(tmp_path / "missing" / "x.json", "--json")   # short: not its business
    assert list(tmp_path.iterdir()) == []


def test_write_or_rescue_keeps_the_output_elsewhere(tmp_path):
    target = tmp_path / "results.json"
    target.mkdir()
    written, problem = write_or_rescue(target, lambda p: p.write_text("{}"), "the results")
    assert written is not None and written != target and written.read_text() == "{}"
    assert written.suffix == ".json" and "results" in written.name
    assert str(target) in problem and str(written) in problem and "\n" not in problem
    written.unlink()


def test_read_limits_agents_hashes_the_bytes_it_parsed(tmp_path):
    """The limits and the hash come from one read (evaluate.py records the hash); the
    errors are check_limits_agents' (naming the file), and a non-path has no hash."""
    import hashlib

    from gridswarm_env.kernel import Limits
    from policies.cli_checks import check_limits_agents, read_limits_agents

    path = tmp_path / "limits.toml"
    path.write_bytes(b"[battery]\nsoc_min = 0.25\n")
    limits, sha = read_limits_agents(str(path), 10)
    assert limits == check_limits_agents(path, 10) == Limits.from_toml(path)
    assert limits.per_kind["battery"].soc_min == 0.25
    assert sha == hashlib.sha256(b"[battery]\nsoc_min = 0.25\n").hexdigest()
    assert read_limits_agents(None, 10) == (Limits(), None)
    assert read_limits_agents({"battery": {"soc_min": 0.25}}, 10) == (limits, None)
    for text, says in (("[battery\n", "is not valid TOML"),
                       ("[agents.battery_099]\nsoc_min = 0.3\n", "battery_099")):
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^limits file {str(path)!r}.*{says}"):
            read_limits_agents(path, 10)
    with pytest.raises(ValueError, match="empty path; expected a TOML file"):
        read_limits_agents("", 10)


def test_a_limits_file_read_once_is_not_read_again(tmp_path):
    """A LimitsFile (what a command line read when it checked its arguments) is checked
    against the fleet and returned with its hash, without reading its path again (here
    the path no longer exists); its errors name the file."""
    from gridswarm_env.kernel import Limits
    from policies.cli_checks import LimitsFile, read_limits_agents

    path = tmp_path / "limits.toml"
    path.write_bytes(b"[battery]\nsoc_min = 0.25\n")
    limits, sha = read_limits_agents(str(path), 10)
    path.unlink()
    assert read_limits_agents(LimitsFile(str(path), limits, sha), 10) == (limits, sha)
    stray = Limits(per_agent={"battery_099": {"soc_min": 0.3}})
    with pytest.raises(ValueError, match=f"^limits file {str(path)!r}.*battery_099"):
        read_limits_agents(LimitsFile(str(path), stray, sha), 10)


def test_env_config_file_from_args_words_a_flags_refusal_for_the_flag():
    """A programmatic Namespace gets the command lines' rules: --crypto-threads beyond
    the cores (EnvConfig itself takes up to 256), and EnvConfig's own refusal reworded
    for the flag that was given."""
    from argparse import Namespace

    from policies.cli_checks import env_config_file_from_args, max_crypto_threads

    too_many = max_crypto_threads() + 1
    with pytest.raises(ValueError, match=rf"^--crypto-threads {too_many}: expected an "
                                         "integer from 1"):
        env_config_file_from_args(Namespace(config=None, crypto_threads=too_many))
    with pytest.raises(ValueError, match=r"^--agents 0: must be an integer >= 1"):
        env_config_file_from_args(Namespace(config=None, agents=0))


@pytest.mark.parametrize("existing", [False, True])
def test_a_file_path_ending_in_a_slash_is_refused(tmp_path, existing):
    """New-user review (session 27): ``demo.py --json out/`` wrote a file named ``out``
    (pathlib drops the slash), and over an existing file ``out`` it wrote that file."""
    target = tmp_path / "out"
    if existing:
        target.write_text("")
    with pytest.raises(ValueError, match=r"--json '.*out/' ends with '/', which names a "
                                         r"directory; expected a file path \(e\.g\. "
                                         r"'.*out/FILE'\)"):
        check_output_file(f"{target}/", "--json")
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if existing else [])


def test_comma_items_strip_and_refuse_an_empty_item():
    """One rule for every comma list of the command lines (evaluate.py --policies,
    --scenarios; python -m train --net-arch): items stripped, an empty one refused."""
    from policies.cli_checks import comma_items

    assert comma_items(" a, b ,c", "--x", "names") == ["a", "b", "c"]
    assert comma_items("", "--x", "names") == [] and comma_items("  ", "--x", "names") == []
    with pytest.raises(ValueError) as refused:
        comma_items("a,,b", "--x", "names")
    assert str(refused.value) == ("--x 'a,,b': item 2 of 3 is empty (two commas in a row, or "
                                  "one at an end); expected names, separated by single commas")
    with pytest.raises(ValueError, match=r"^x = 'a,': item 2 of 2 is empty"):
        comma_items("a,", "x", "names", sep=" = ")


def test_a_sigterm_held_back_after_a_ctrl_c_is_not_lost():
    """stop_signals_deferred delivers a SIGTERM that came after a Ctrl-C in the block:
    the request to end goes first, then the Ctrl-C. Before: they were raised in the
    order they came, the Ctrl-C's KeyboardInterrupt left the loop, and the SIGTERM was
    dropped (under Python's default SIGTERM the process went on instead of ending)."""
    import os
    import signal

    from policies.cli_checks import stop_signals_deferred

    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt):
            with stop_signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                assert terms == []   # held back inside the block
        assert terms == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
