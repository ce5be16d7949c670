"""Up-front checks and safe writes shared by the command lines (``demo.py``,
``evaluate.py``, ``python -m train``).

A command line refuses bad input in one line *before* its long work, and does not
lose its results when a write still fails at the end:

* :func:`check_output_file`, :func:`check_output_dir`: a path can be written. The
  check creates and removes a probe file, because ``os.access`` answers yes to
  everything for root and knows nothing of read-only or virtual file systems;
* :func:`write_or_rescue`: write an output; when that fails, write it to a file in
  the temporary directory instead and return a one-line message saying so;
* :func:`check_limits_agents`, :func:`read_limits_agents`: a kernel limits file is a
  file and names only agents the fleet has (and the SHA-256 of the bytes read);
  :class:`LimitsFile` hands a file read once on to the run, so it is not read again;
* :func:`env_config_file_from_args`: the run's ``EnvConfig`` from ``--config FILE`` and
  the flags; :class:`EnvConfigFile` hands it on with the file's
  path and SHA-256, so the run records them without reading the file again;
* :func:`int_range_text`, :func:`int_flag_type`, :func:`check_crypto_threads`: one
  wording of what an integer option allows, the argparse type of every integer flag
  (one message naming the flag, the value and the range), and one
  rule for ``--crypto-threads`` (1 to :func:`max_crypto_threads`); :func:`check_contract_keys` and
  :func:`add_contract_keys_argument`: one rule and one flag for ``--contract-keys``;
* :func:`comma_items`: one rule for every comma-separated option (``evaluate.py --policies``,
  ``--scenarios``; ``python -m train --net-arch``): items stripped, an empty item refused;
* :class:`OneLineParser`: argparse whose errors are one line (no usage block), exit 2;
* :func:`one_line_warnings`: Python warnings (e.g. a fleet too small for every DER kind)
  as one ``prog: warning: ...`` line each, once, instead of a file:line and a source line;
* :func:`sigterm_as_interrupt`: SIGTERM (``kill``, ``timeout``, a cancelled job) raises
  :class:`Terminated`, a ``KeyboardInterrupt``, so a command line saves what Ctrl-C saves
  and exits 143 (128 + SIGTERM) instead of 130.

Importing this module loads no torch; it loads the ``gridswarm_env`` package (for
:class:`OneLineParser`, from :mod:`gridswarm_env.audit`), not an environment.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from gridswarm_env.audit import OneLineParser  # noqa: F401  (re-exported for the CLIs)

PROBE_PREFIX = ".gridswarm-write-probe-"


class OutputError(Exception):
    """An output could not be written where asked (the message is one line).

    :param message: what failed and where the output went instead.
    :param path: where the output was saved instead (None: it was lost).
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_path_names(path: str | Path, what: str) -> None:
    """Refuse a path with a name (or a whole length) longer than the file system allows:
    ``Path.exists()`` and ``is_dir()`` raise ``OSError`` (ENAMETOOLONG) for it, or a
    missing parent hides it until a directory is created, and it escaped the command
    lines as a traceback.

    :param what: how the message names the path (e.g. ``"--json"``).
    :raises ValueError: ``"--json 'aaa…': File name too long (at most 255 bytes per name
        and 4,096 per path here)"``.
    """
    anchor = Path(path).parent   # the nearest existing directory: its file system's limits
    while not os.path.isdir(anchor) and anchor != anchor.parent:   # (False for too long)
        anchor = anchor.parent
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
        path_max = os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    too_long = (len(os.fsencode(os.fspath(path))) >= path_max
                or any(len(os.fsencode(part)) > name_max for part in Path(path).parts))
    if not too_long:
        try:
            os.stat(path)
        except OSError as exc:
            too_long = exc.errno == errno.ENAMETOOLONG
    if too_long:
        raise ValueError(f"{what} {str(path)!r}: {os.strerror(errno.ENAMETOOLONG)} (at most "
                         f"{name_max:,} bytes per name and {path_max:,} per path here)")


def check_output_dir(path: str | Path, what: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable directory.

    A missing directory is not created; its nearest existing ancestor must be a
    writable directory.

    :param what: how the message names the path (e.g. ``"--out"``).
    :raises ValueError: a file is in the way or the directory cannot be written.
    """
    p = Path(path)
    label = f"{what} {str(path)!r}"
    if not str(path):
        raise ValueError(f"{what}: empty path; expected a directory")
    check_path_names(p, what)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{label} is a file, not a directory; expected a directory to write "
                         "into (a new one is created)")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{label}: {str(existing)!r} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if existing == p else f" (in {str(existing)!r})"
        raise ValueError(f"{label} cannot be written{where}: {_reason(exc)}") from None
    return p


def directory_syntax_problem(text: str) -> str | None:
    """Why the file path ``text`` names a directory by its spelling (a trailing ``/``,
    which pathlib drops, so ``out/`` would write a file ``out``), or None."""
    if not text.endswith(("/", os.sep)):
        return None
    return ("ends with '/', which names a directory; expected a file path (e.g. "
            f"{text.rstrip('/' + os.sep) + '/FILE'!r})")


def check_output_file(path: str | Path, what: str, *, create_dirs: bool = False,
                      overwrite: bool = True) -> Path:
    """Check that a file can be written at ``path`` (nothing is left behind).

    An existing regular file is opened for appending (its content is not changed);
    a missing one is created and removed again. Devices and pipes are accepted as they
    are.

    :param what: how the message names the path (e.g. ``"--json"``).
    :param create_dirs: the caller creates missing parent directories (they are
        then checked with :func:`check_output_dir`); else the parent must exist.
    :param overwrite: an existing file may be replaced; False refuses an existing
        regular file that is not empty (an empty one, e.g. made by ``touch``, is fine),
        with a message naming ``--overwrite``. The caller's final write must refuse too
        if such a file appears meanwhile.
    :raises ValueError: the path is a directory, its directory is missing, the file
        cannot be written, or it exists (not empty) and ``overwrite`` is False.
    """
    p = Path(path)
    label = f"{what} {str(path)!r}"
    if not str(path):
        raise ValueError(f"{what}: empty path; expected a file path")
    check_path_names(p, what)
    if p.is_dir():
        raise ValueError(f"{label} is a directory; expected a file path")
    problem = directory_syntax_problem(str(path))
    if problem:
        raise ValueError(f"{label} {problem}")
    if p.exists():
        if p.is_file():
            if not overwrite and (size := p.stat().st_size) > 0:
                raise ValueError(f"{label} already exists ({size:,} bytes): pass --overwrite "
                                 "to replace it, or choose a new path")
            try:
                with open(p, "ab"):
                    pass
            except OSError as exc:
                raise ValueError(f"{label} cannot be written: {_reason(exc)}") from None
        return p
    parent = p.parent
    if not parent.is_dir():
        if create_dirs:
            check_output_dir(parent, f"{label}: directory")
            return p
        if parent.exists():
            raise ValueError(f"{label}: {str(parent)!r} is a file, not a directory")
        raise ValueError(f"{label}: directory {str(parent.resolve())!r} does not exist")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:   # created meanwhile by someone else: the final write
        return p              # decides whether to replace it
    except OSError as exc:
        raise ValueError(f"{label} cannot be written: {_reason(exc)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(p)
    return p


def rescue_path(path: str | Path) -> Path:
    """A fresh file name in the temporary directory for an output meant for ``path``."""
    p = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"{p.stem}-{stamp}-", suffix=p.suffix)
    os.close(fd)
    return Path(name)


def read_earlier_json(path: str | Path, max_bytes: int | None = None) -> Any:
    """The JSON an earlier run left at ``path`` (to recognize or read its own output), or
    None: not a regular file (missing, a directory, a FIFO reading would block on), larger
    than ``max_bytes``, unreadable, or not JSON (bad UTF-8, syntax, nesting too deep)."""
    p = Path(path)
    try:
        if not p.is_file() or (max_bytes is not None and p.stat().st_size > max_bytes):
            return None
        return json.loads(p.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def write_output_text(path: str | Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to ``path``; without ``overwrite`` never destroy what is there.

    With ``overwrite`` the file is replaced. Without it a missing file is created and an
    existing one is used only when the handle that writes shows it empty or not a
    regular file (a device, a pipe): a file that appeared after the command's up-front
    check (:func:`check_output_file` with ``overwrite=False``) is never truncated.

    :raises FileExistsError: a regular file that is not empty is at ``path`` and
        ``overwrite`` is False (closed untouched; :func:`write_or_rescue` then saves the
        output elsewhere).
    """
    if overwrite:
        Path(path).write_text(text)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)   # no O_TRUNC
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_size > 0:
        os.close(fd)
        raise FileExistsError(errno.EEXIST, f"a file of {info.st_size:,} bytes appeared there "
                              "during the run and is kept; --overwrite replaces it", str(path))
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def write_or_rescue(path: str | Path, write: Callable[[Path], Any],
                    what: str) -> tuple[Path | None, str | None]:
    """``write(path)``; if it raises ``OSError``, ``write`` to :func:`rescue_path` instead.

    :param write: writes the output to the path it is given; it may return the path it
        wrote instead (another name beside it, e.g. the next free one).
    :param what: how the message names the output (e.g. ``"the results"``).
    :returns: (where it was written or None, a one-line message or None when it was
        written where asked or where ``write`` returned).
    """
    target = Path(path)
    try:
        written = write(target)
        return (written if isinstance(written, Path) else target), None
    except OSError as exc:
        failed = f"could not write {what} to {str(target)!r} ({_reason(exc)})"
    try:
        spare = rescue_path(target)
        write(spare)
    except OSError as exc:
        return None, f"{failed}; saving it elsewhere failed too ({_reason(exc)})"
    return spare, f"{failed}; saved it to {str(spare)!r} instead"


class LimitsFile(NamedTuple):
    """A kernel limits file read once (:func:`read_limits_agents`): the path as given,
    the :class:`~gridswarm_env.kernel.Limits` parsed from it and the SHA-256 (hex) of the
    bytes parsed. A command line that checks its arguments before the run hands this on
    instead of the path: the run then uses, and records the hash of, the bytes that were
    checked, and the file is read once per command (a second read would get other bytes
    if the file were rewritten in between)."""

    path: str
    limits: Any
    sha256: str


def limits_path(limits: Any) -> str | None:
    """The file a limits argument names (a path, or a :class:`LimitsFile`'s), as a
    string; None for anything else (None, a dict, a ``Limits``)."""
    if isinstance(limits, LimitsFile):
        return limits.path
    return str(limits) if isinstance(limits, str | Path) else None


def check_limits_agents(limits: Any, n_agents: int) -> Any:
    """Load kernel limits (dict, TOML path, :class:`LimitsFile`, ``Limits`` or None) and
    check that every per-agent override names an agent of an ``n_agents`` fleet and
    merges consistently on its kind's limits
    (:func:`~gridswarm_env.kernel.check_limits_names`, as the environment does when it
    is built), before any output exists.

    :returns: the :class:`~gridswarm_env.kernel.Limits` (:func:`read_limits_agents`
        without the hash).
    :raises ValueError: as :func:`read_limits_agents`.
    """
    return read_limits_agents(limits, n_agents)[0]


def read_limits_agents(limits: Any, n_agents: int, fleet: Any = None
                       ) -> tuple[Any, str | None]:
    """:func:`check_limits_agents`, and the SHA-256 (hex) of the bytes the limits were
    parsed from when ``limits`` is a file path (None otherwise). The file is read once
    (:meth:`~gridswarm_env.kernel.Limits.read_toml`): hashing it again would name other
    bytes than those used if it were rewritten in between. A :class:`LimitsFile` (a
    file already read) is not read again: its limits are checked and returned with its
    hash.

    :param fleet: the :class:`~gridswarm_env.config.FleetConfig` whose agents the limits
        may name (its kind shares set the names); None: the default fleet's.
    :returns: (the :class:`~gridswarm_env.kernel.Limits`, the SHA-256 or None).
    :raises ValueError: unreadable limits, or agents the fleet does not have (the
        message lists the fleet's names). When ``limits`` is a file path every message
        names the file (:func:`limits_error`).
    """
    import hashlib

    from gridswarm_env.config import EnvConfig
    from gridswarm_env.fleet import agent_names
    from gridswarm_env.kernel import Limits, as_limits, check_limits_names

    path = limits_path(limits)
    if path is not None and not isinstance(limits, LimitsFile):
        check_limits_file(path)
    sha = None
    try:
        if isinstance(limits, LimitsFile):
            lim, sha = limits.limits, limits.sha256
        elif path is not None:
            lim, raw = Limits.read_toml(limits)
            sha = hashlib.sha256(raw).hexdigest()
        else:
            lim = as_limits(limits)
        fleet = EnvConfig().fleet if fleet is None else fleet
        check_limits_names(lim, agent_names(n_agents, fleet), fleet.ev_departure_soc)
    except ValueError as exc:
        if path is not None:
            raise ValueError(limits_error(path, exc)) from None
        raise
    return lim, sha


def check_limits_file(path: str | Path) -> None:
    """Refuse an empty ``--limits`` path with the command-line hint (the library's
    :meth:`~gridswarm_env.kernel.Limits.from_toml` refuses it, and a directory, too).

    :raises ValueError: naming the path and what is expected.
    """
    if not str(path):
        raise ValueError("limits file '': empty path; expected a TOML file (leave out "
                         "--limits for the default limits)")


def comma_items(text: str, what: str, allowed: str, sep: str = " ") -> list[str]:
    """The items of a comma-separated option value (``evaluate.py --policies a,b`` and
    ``--scenarios``, ``python -m train --net-arch 64,64``), each stripped of the
    whitespace around it: one rule for every command line. A value of whitespace alone
    gives ``[]`` (the caller says what an empty value means); an empty item (``a,,b``,
    ``a,``, ``,a``: a typo, or an unset ``$VAR`` between two commas) is refused, where it
    used to be dropped without a word.

    :param what: how the message names the option (``"--scenarios"``).
    :param allowed: what an item may be, for the message (``"scenario names or 'all'"``).
    :param sep: between ``what`` and the value in the message (``" = "`` for a keyword).
    :raises ValueError: ``"--scenarios 'price_spike,,emergency': item 2 of 3 is empty (two
        commas in a row, or one at an end); expected ..., separated by single commas"``.
    """
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    for k, item in enumerate(items, 1):
        if not item:
            raise ValueError(f"{what}{sep}{text!r}: item {k} of {len(items)} is empty (two "
                             f"commas in a row, or one at an end); expected {allowed}, "
                             "separated by single commas")
    return items


#: how to install what ``python -m train`` and the ``learned`` policy need (README, Set-up)
TRAIN_EXTRA_INSTALL = 'pip install -e ".[train]", see README "Set-up" for torch\'s CPU build'


def missing_package_message(policy: str, exc: ModuleNotFoundError) -> str:
    """One line for a policy whose packages are not installed (``learned`` or a model
    path without stable-baselines3 / sb3-contrib / torch): which package, and how to
    install it."""
    package = exc.name or str(exc)
    return (f"policy {policy!r} needs the package {package!r}, which is not installed: "
            f"install the training extra ({TRAIN_EXTRA_INSTALL})")


def limits_error(path: str | Path, exc: ValueError) -> str:
    """The message of an error in the limits file ``path``, naming the file: errors
    found after merging the per-agent overrides (or about agents the fleet lacks) do not
    name it themselves; those found when the file is read already do."""
    text = str(exc)
    return text if str(path) in text else f"limits file {str(path)!r}: {text}"


def int_range_text(minimum: int, maximum: int | None = None, why: str = "") -> str:
    """What an integer option allows, for its error message: ``"an integer >= 1"`` or
    ``"an integer from 1 to 10,000 (why)"`` (``why`` is appended as given)."""
    if maximum is None:
        return f"an integer >= {minimum}"
    return f"an integer from {minimum} to {maximum:,}{why}"


def int_flag_type(flag: str, minimum: int, maximum: int | None = None,
                  why: str = "") -> Callable[[str], int]:
    """An argparse ``type`` for the integer option ``flag`` from ``minimum`` (to
    ``maximum``): the one wording every command line gives a value that is not such an
    integer, naming the flag, the value given and what is allowed
    (:func:`int_range_text`): ``--agents 0: expected an integer from 1 to 1,000,000
    (~10 kB of state each; ...)``, ``--episodes 'nan': expected an integer >= 1``.

    The refusal is raised as an ``argparse.ArgumentError`` without an argument, so the
    parser prints it as it is (``PROG: error: --agents 0: ...``), not behind its own
    ``argument --agents:`` (which named the flag twice).

    :param flag: the option, as the message names it (``"--agents"``).
    :param why: appended to the range, as given (``" (the cores this process may use)"``).
    """
    allowed = int_range_text(minimum, maximum, why)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentError(None, f"{flag} {text!r}: expected {allowed}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentError(None, f"{flag} {value}: expected {allowed}")
        return value

    return parse


#: why ``--crypto-threads`` has the upper bound it has (appended to the allowed range)
CRYPTO_THREADS_WHY = " (the cores this process may use)"


def max_crypto_threads() -> int:
    """The most ``--crypto-threads`` the command lines accept: the cores this process may
    use (the environment never runs more signing threads than that, see
    :class:`~gridswarm_env.trust.IdentityRegistry`), and at most
    :data:`~gridswarm_env.config.MAX_CRYPTO_THREADS` (what ``EnvConfig`` accepts)."""
    from gridswarm_env.config import MAX_CRYPTO_THREADS
    from gridswarm_env.trust import _usable_cpus

    return min(_usable_cpus(), MAX_CRYPTO_THREADS)


def check_crypto_threads(value: Any, what: str = "--crypto-threads") -> int | None:
    """Check a ``--crypto-threads`` value: None (the default) or an integer from 1 to
    :func:`max_crypto_threads` (``demo.py`` and ``evaluate.py`` share this rule).

    :param what: how the message names the option.
    :returns: the value, as a Python int (a numpy integer is accepted).
    :raises ValueError: ``"--crypto-threads 300: expected an integer from 1 to 2 (the
        cores this process may use), or none for the default"``.
    """
    from gridswarm_env.config import is_int

    if value is None:
        return None
    top = max_crypto_threads()
    # numpy integers too, as EnvConfig(crypto_threads=) and evaluate()'s other counts
    # take them (np.int64(1) was refused as "expected an integer from 1 to 2")
    if not is_int(value) or not 1 <= value <= top:
        raise ValueError(f"{what} {value!r}: expected "
                         f"{int_range_text(1, top, CRYPTO_THREADS_WHY)}, or none for the default")
    return int(value)


def add_crypto_threads_argument(parser: argparse.ArgumentParser, same: str) -> None:
    """``--crypto-threads N`` (default None: :class:`~gridswarm_env.config.EnvConfig`'s,
    or ``--config``'s), 1 to :func:`max_crypto_threads`, worded once for every command
    line; ``same`` says what does not depend on N (``"the episode is the same"``)."""
    cores = max_crypto_threads()
    parser.add_argument(
        "--crypto-threads", default=None, metavar="N",
        type=int_flag_type("--crypto-threads", 1, cores, CRYPTO_THREADS_WHY),
        help=f"threads signing and verifying ed25519 contracts, 1 to {cores} (the cores "
             "this process may use; default: 2 on a machine with 2+ cores, else 1; "
             f"{same} for any N; use 1 when other work keeps the cores busy)")


def check_contract_keys(value: Any, what: str = "--contract-keys") -> str:
    """Check a ``--contract-keys`` value (``demo.py`` and ``evaluate.py`` share this rule):
    one of :data:`~gridswarm_env.config.CONTRACT_KEY_SOURCES`.

    :param what: how the message names the option.
    :returns: the value.
    :raises ValueError: ``"--contract-keys 'secret': expected one of seeded, random"``.
    """
    from gridswarm_env.config import CONTRACT_KEY_SOURCES

    if type(value) is not str or value not in CONTRACT_KEY_SOURCES:
        raise ValueError(f"{what} {value!r}: expected one of {', '.join(CONTRACT_KEY_SOURCES)}")
    return value


def add_contract_keys_argument(parser: argparse.ArgumentParser) -> None:
    """``--contract-keys seeded|random`` (default None, "not given": random, or
    ``--config``'s), worded once for every command line; the parser's own error names
    the flag and the choices."""
    from gridswarm_env.config import CONTRACT_KEY_SOURCES

    parser.add_argument(
        "--contract-keys", choices=CONTRACT_KEY_SOURCES, default=None,
        help="contract keys (EnvConfig.contract_keys): random (default, or --config's: "
             "os.urandom, unforgeable) or seeded (derived from the seed: reproducible signature bytes, "
             "but anyone who knows the seed can sign a valid contract); the episodes are "
             "the same either way")


def deadband_allowed_text() -> str:
    """What ``--governor-deadband-hz`` allows, in words."""
    from gridswarm_env.grid import MAX_GOVERNOR_DEADBAND_HZ

    return (f"a deadband in Hz from 0 (none, the default) to {MAX_GOVERNOR_DEADBAND_HZ:g} "
            "(real governors: at most 0.036)")


def check_governor_deadband(value: Any, what: str = "--governor-deadband-hz") -> float:
    """Check a ``--governor-deadband-hz`` value (``demo.py`` and ``evaluate.py`` share
    this rule): ``GridParams.governor_deadband_hz``'s range.

    :returns: it as a float (``-0.0`` as ``0.0``).
    :raises ValueError: ``"--governor-deadband-hz 0.6: expected a deadband in Hz from 0
        (none, the default) to 0.5 (real governors: at most 0.036)"``.
    """
    from gridswarm_env.config import is_real, wrong_type_text
    from gridswarm_env.grid import MAX_GOVERNOR_DEADBAND_HZ

    if not is_real(value):
        raise ValueError(f"{what} {value!r}: expected {deadband_allowed_text()}, "
                         f"{wrong_type_text(value)}")
    if not 0.0 <= value <= MAX_GOVERNOR_DEADBAND_HZ:   # NaN fails too
        raise ValueError(f"{what} {value!r}: expected {deadband_allowed_text()}")
    return float(value) + 0.0


def add_governor_deadband_argument(parser: argparse.ArgumentParser, runs: str,
                                   otherwise: str = "with --config: the file's") -> None:
    """``--governor-deadband-hz HZ`` (default None, "not given": 0, none, or what
    ``otherwise`` says), worded once for every command line; ``runs`` names what it
    applies to (``"the episode"``, ``"every episode"``)."""
    def deadband(text: str) -> float:
        try:
            return check_governor_deadband(float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {deadband_allowed_text()}, got {text!r}") from None

    parser.add_argument(
        "--governor-deadband-hz", type=deadband, default=None, metavar="HZ",
        help=f"governor deadband for {runs} (GridParams.governor_deadband_hz): the "
             f"governors ignore frequency deviations within +-HZ; default 0 (none; "
             f"{otherwise}), e.g. 0.036 (NERC's recommended maximum)")


#: (argparse destination, ``EnvConfig`` field) of the flags that set an ``EnvConfig``
#: field: given, they override ``--config FILE``'s value (:func:`env_config_file_from_args`)
CONFIG_FLAGS = (("agents", "n_agents"), ("trust", "trust"), ("shadow", "shadow"),
                ("crypto_threads", "crypto_threads"), ("contract_keys", "contract_keys"))


#: how ``--config``'s help ends by default: the flags that set a field override the file
CONFIG_OVERRIDES = ("flags that set one of them (--agents, --trust, --governor-deadband-hz...) "
                    "override the file")


def add_config_argument(parser: argparse.ArgumentParser, runs: str,
                        overrides: str = CONFIG_OVERRIDES) -> None:
    """``--config FILE``: the ``EnvConfig`` settings of ``runs`` from a TOML file
    (:mod:`gridswarm_env.config_file`), worded once for every command line; ``overrides``
    ends the help (what the flags do to the file's values)."""
    parser.add_argument(
        "--config", default=None, metavar="FILE",
        help=f"EnvConfig settings for {runs} from a TOML file: its fields at the top "
             "level (dt_s, ...) and tables [grid], [market], [bus], [fleet], [costs], "
             f"[reward] of their fields (docs/configuration.md); {overrides}")


#: the settings the flags set over an ``EnvConfig`` (:func:`env_config_with`): the fields
#: of :data:`CONFIG_FLAGS` and ``governor_deadband_hz`` (``GridParams``'s)
FLAG_SETTINGS = (*(name for _, name in CONFIG_FLAGS), "governor_deadband_hz")


def env_config_with(base: Any, settings: dict[str, Any]) -> Any:
    """``base`` (an :class:`~gridswarm_env.config.EnvConfig`) with ``settings`` applied
    over it, each as given (None included): keys of :data:`FLAG_SETTINGS`, i.e.
    ``EnvConfig`` fields and ``governor_deadband_hz`` (set in ``base.grid``). The one way
    a command line's options become the run's ``EnvConfig`` (:func:`env_config_file_from_args`,
    ``demo.episode_config``).

    :raises ValueError: a value the config refuses (``"EnvConfig.n_agents = 0: ..."``).
    """
    from dataclasses import replace

    changes = dict(settings)
    if "governor_deadband_hz" in changes:
        changes["grid"] = replace(base.grid,
                                  governor_deadband_hz=changes.pop("governor_deadband_hz"))
    return replace(base, **changes)


class EnvConfigFile(NamedTuple):
    """An :class:`~gridswarm_env.config.EnvConfig` read from a config file once
    (:func:`env_config_file_from_args`): the path as given, the ``EnvConfig`` to play (the
    file's settings, with the command line's flags that were given applied over them) and
    the SHA-256 (hex) of the bytes read
    (:func:`~gridswarm_env.config_file.load_env_config`). ``evaluate.evaluate(env_config=)``
    and ``demo.DemoOptions(env_config=)`` take one where they take an ``EnvConfig``: the
    run plays ``config`` and records ``path`` and ``sha256``, and the file is not read
    again (a second read would hash other bytes if the file were rewritten in between)."""

    path: str
    config: Any
    sha256: str

    @classmethod
    def read(cls, path: str | os.PathLike[str],
             refuse: dict[str, str] | None = None) -> EnvConfigFile:
        """The config file ``path``, read once
        (:func:`~gridswarm_env.config_file.load_env_config`, whose ``ValueError`` names the
        file)."""
        from gridswarm_env.config_file import load_env_config

        config, sha = load_env_config(path, refuse)
        return cls(os.fspath(path), config, sha)


def env_config_source(env_config: Any) -> tuple[Any, dict[str, str] | None]:
    """(the ``EnvConfig`` of ``env_config``, ``{"path", "sha256"}`` of the file it was
    read from or None): an :class:`EnvConfigFile` unwrapped, anything else (an
    ``EnvConfig``, None) as it is, for its receiver to check."""
    if isinstance(env_config, EnvConfigFile):
        return env_config.config, {"path": os.fspath(env_config.path),
                                   "sha256": env_config.sha256}
    return env_config, None


def env_config_file_from_args(args: argparse.Namespace,
                              refuse: dict[str, str] | None = None) -> Any:
    """The run's :class:`~gridswarm_env.config.EnvConfig`: ``--config FILE``'s (the
    defaults without it) with every flag of :data:`CONFIG_FLAGS` and
    ``--governor-deadband-hz`` that was given (not None) applied over it
    (:func:`env_config_with`); with ``--config FILE``, as an :class:`EnvConfigFile` naming
    the file and the SHA-256 of the bytes it was read from (the file is read once;
    :func:`env_config_source` unwraps it). ``refuse``: keys the file may not hold
    (:func:`~gridswarm_env.config_file.env_config_from_dict`).

    :raises ValueError: the file's refusal (:func:`~gridswarm_env.config_file.load_env_config`,
        naming the file), or a flag's value the config refuses (worded for the flag).
    """
    if args.config is None:
        return _env_config_over(None, args)
    file = EnvConfigFile.read(args.config, refuse)
    return file._replace(config=_env_config_over(file.config, args))


def _env_config_over(base: Any, args: argparse.Namespace) -> Any:
    """``base`` (None: the defaults) with the flags given in ``args`` applied over it
    (:func:`env_config_file_from_args`)."""
    from dataclasses import replace

    from gridswarm_env.config import EnvConfig

    base = EnvConfig() if base is None else base
    if base.crypto_threads is not None and base.crypto_threads > max_crypto_threads():
        # EnvConfig's rule (more acts as the cores): the command lines accept the cores
        base = replace(base, crypto_threads=max_crypto_threads())
    changes = {name: getattr(args, dest) for dest, name in CONFIG_FLAGS
               if getattr(args, dest, None) is not None}
    if "crypto_threads" in changes:   # worded for the flag, before EnvConfig sees it
        check_crypto_threads(changes["crypto_threads"])
    deadband = getattr(args, "governor_deadband_hz", None)
    if deadband is not None:
        changes["governor_deadband_hz"] = deadband
    try:
        return env_config_with(base, changes)
    except ValueError as exc:   # "EnvConfig.n_agents = 0: ..." -> "--agents 0: ..."
        head = re.match(r"EnvConfig\.(\w+) = ", str(exc))
        flags = {name: "--" + dest.replace("_", "-") for dest, name in CONFIG_FLAGS}
        if head is None or head.group(1) not in changes or head.group(1) not in flags:
            raise
        raise ValueError(f"{flags[head.group(1)]} {str(exc)[head.end():]}") from None


class Note(UserWarning):
    """A note, not a problem, from library code that a command line also runs (e.g.
    ``evaluate()`` and ``demo.open_session()`` of a model trained under other settings):
    a library caller gets it as a Python warning of this category (filter it with
    ``warnings.simplefilter("ignore", Note)``); :func:`one_line_warnings` shows it as
    ``prog: note: <message>``, the way the command lines word their notes."""


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Show the warnings raised inside the block as ``prog: warning: <message>`` on
    stderr (a :class:`Note` as ``prog: note: <message>``), each message once (Python's default shows the file and line of the call and
    that source line, and repeats a message raised from another line, as evaluate.py's
    environments for the baseline and for each policy did). Restored afterwards.

    :param prog: the command's name, e.g. ``"demo.py"``.
    """
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text not in shown:
            shown.add(text)
            kind = "note" if issubclass(category, Note) else "warning"
            print(f"{prog}: {kind}: {text}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


#: hex digits of a file's SHA-256 the command lines show (demo.py's summary and dashboard,
#: python -m train's first line; the JSON records hold all 64)
SHA_SHOWN = 12

#: the input files a run names: (what, its path's key in ``run``, its SHA-256's key)
INPUT_FILES = (("scenario file", "scenario_file", "scenario_file_sha256"),
               ("config file", "env_config_file", "env_config_sha256"),
               ("limits file", "limits_path", "limits_sha256"))


def input_files(run: Any) -> list[tuple[str, str]]:
    """The files a run was made from, as the command lines name them (demo.py's KPI
    summary and dashboard, python -m train's first line):
    ``(what, "<what> <path as given> (sha256 <first SHA_SHOWN hex digits>)")`` for its
    scenario file, ``--config`` file and ``--limits`` file, those it had (``run``: a
    mapping such as demo.py's ``--json`` run record, or the part of one holding these
    keys; the whole SHA-256 are its ``scenario_file_sha256``, ``env_config_sha256`` and
    ``limits_sha256``)."""
    return [(what, f"{what} {run[path]} (sha256 {(run.get(sha) or '?')[:SHA_SHOWN]})")
            for what, path, sha in INPUT_FILES if run.get(path)]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, hex (how the command lines name a model or a limits
    file they used).

    :raises OSError: the file cannot be read.
    """
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dirs_to_create(*paths: str | os.PathLike[str]) -> list[Path]:
    """``paths`` and their ancestors that do not exist yet: the directories creating
    them makes (for :func:`remove_unfinished_run`)."""
    made: dict[Path, None] = {}
    for path in map(Path, paths):
        for d in (path, *path.parents):
            if not d.exists():
                made[d] = None
    return list(made)


def remove_unfinished_run(event_files: Iterable[Path], created: Iterable[Path]) -> None:
    """Remove what a tensorboard run that did not finish wrote: its event files, then the
    directories it created, deepest first, where empty (another run's files stay)."""
    for events in event_files:
        events.unlink(missing_ok=True)
    for d in sorted(created, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


#: exit status after Ctrl-C (128 + SIGINT) and after SIGTERM (128 + SIGTERM)
EXIT_CTRL_C, EXIT_SIGTERM = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler's stop, a cancelled CI job) inside
    :func:`sigterm_as_interrupt`: handled as Ctrl-C is, and the command line exits with
    status 143 (128 + SIGTERM) instead of 130. Python's default for SIGTERM ends the
    process at once, with nothing saved. ``python -m train`` saves the model as far as it
    got (``<run dir>/<name>_interrupted.zip``) and its record; ``python -m train.dagger``
    writes nothing, as for its Ctrl-C; ``demo.py`` prints its summary and writes
    ``--json`` (``stop_reason`` ``"terminated"``); ``evaluate.py`` saves the finished
    episodes' results to the temporary directory."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``, so
    the code inside saves what it has, as for Ctrl-C); the previous handler is restored
    after it. Outside the main thread nothing changes (``signal.signal`` works only
    there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block and deliver them when it ends, to
    the handlers that were in place: a Ctrl-C or SIGTERM that comes while outputs are
    written takes effect after the last one, as it would have (Python's default for
    SIGTERM ends the process, a caller's own handler runs, :func:`sigterm_as_interrupt`'s
    raises). Inside the block a handler that notes the signal stands in (a blocked signal
    mask would not do: it holds the signal back from the calling thread only, and any
    other thread, such as a BLAS pool's, would take it); the handlers are put back when
    the block ends, and each signal noted is then raised again, once, SIGTERM before
    SIGINT (a Ctrl-C's ``KeyboardInterrupt`` would leave a SIGTERM after it undelivered).
    In another thread than
    the main one (where handlers cannot be set) and for a handler set outside Python
    nothing is held back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}
    for sig in previous:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # each once, SIGTERM first: the request to end is not lost to a Ctrl-C's
        # KeyboardInterrupt, after which nothing more is raised
        for sig in sorted(set(held), key=lambda sig: sig != signal.SIGTERM):
            signal.raise_signal(sig)


@contextlib.contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block (main thread only; restored
    afterwards): a second Ctrl-C or SIGTERM while a stopped run saves what it has does
    not lose it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
