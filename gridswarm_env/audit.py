"""Command line verifier for gridswarm audit chains (JSONL files written by ``AuditLog``).

Usage::

    python -m gridswarm_env.audit verify FILE [--public-key HEX [--allow-open]]

Prints ``OK: <n> entries, head <hash>; <what was and was not checked>`` and exits 0 when
the chain is intact (without ``--public-key``: self-consistent, see below); prints
``BROKEN at entry <i>: <problem> (<detail>)`` and exits 1 on the first altered, removed,
inserted, reordered, truncated or malformed entry it can detect, and ``BROKEN: no
entries (...)`` for an empty file; prints ``error: ...`` and exits 2 when the file is
missing or unreadable, is no regular file (a FIFO, a device such as ``/dev/zero``, a
directory: refused before anything is read), the verifier runs out of memory, or the
command line is wrong. A line longer
than 256 MiB, nesting JSON more than 64 levels deep or holding more than 4 194 304 JSON
values (counted before decoding), which the log never writes, is
``malformed`` (not read further). With ``--public-key`` (the
operator's raw Ed25519 public key, 64 hex digits), every signed head is checked and the
file must end with the writer's *closing* head (the one ``env.close()`` signs, marked
``final`` inside the signed bytes), so a cut tail is reported as ``truncated``, also
when the cut falls right after an earlier episode's head; the OK line then says the file
is closed. ``--allow-open`` accepts a file that ends with a valid head that is not the
closing one (a writer still running between episodes), exit 0 with an OK line saying
``not closed``. A file whose last head is in the v2 format (written before closing heads
existed) verifies as before; its OK line says it predates closing heads, so its episode
count must be checked by hand. Without the key the chain is only self-consistent (its
entry hashes are unkeyed: anyone can edit an entry and recompute the hashes and head
fields after it, or cut the tail, and it still reads OK): the OK line says so and counts
the file's heads per scheme as present, unchecked: for Ed25519 heads it says to pass the
key (from whoever wrote the file, through a channel the file's holder cannot write: not
the ``public_key`` field inside it, nor a copy stored with it, as demo's ``--json``, which
whoever re-signs the file can replace too); HMAC-signed
heads (``AuditLog.sign_head`` with an hmac-mode registry) are checkable only with the
HMAC key, in the process that wrote the file.

The file must be the exact bytes the log wrote: every entry ends with a newline, so
a last line without one is ``truncated`` (the file was cut inside it), and a blank
line, which the log never writes, is ``malformed``.

An empty file is no verified chain (a file cut to 0 bytes looks the same), so
:func:`~gridswarm_env.trust.verify_audit_file` reports it as not ok (problem
``empty``) and the command line as ``BROKEN: no entries``; an environment leaves one
only when it is closed before its first ``reset`` (nothing to audit yet).

Importing this module has no side effects; :func:`main` is the entry point.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from gridswarm_env.trust import (
    EMPTY_AUDIT_FILE,
    AuditVerification,
    open_file_reason,
    verify_audit_file,
    weak_public_key_problem,
)

__all__ = ["EXIT_BROKEN", "EXIT_ERROR", "EXIT_OK", "KEY_SOURCE", "NO_KEY_SCOPE", "exit_status",
           "format_verdict", "main"]

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_ERROR = 2


#: where the operator's audit key comes from (it must come from the writer, through a
#: channel the file's holder cannot write: the ``public_key`` field inside a signed head
#: proves nothing, anyone can re-sign a file, and a copy stored beside the file, as
#: demo's ``--json``, can be replaced with it)
KEY_SOURCE = ("printed by `demo.py --audit` and returned by "
              "env.unwrapped.operator_public_key_hex() in the process that wrote the file, "
              "reaching you by a channel the file's holder cannot write; not the public_key "
              "written in the file, nor a copy stored with it")


#: what an intact chain checked without a key shows (the entry hashes are unkeyed)
NO_KEY_SCOPE = ("without a key anyone can edit an entry and recompute the hashes after it, "
                "or cut the tail, and the file still reads OK")


def format_verdict(result: AuditVerification, public_key_given: bool = False) -> str:
    """One-line human-readable verdict.

    :param result: a verification result.
    :param public_key_given: the result was checked with ``--public-key``.
    :return: ``"OK: <n> entries, head <hash>; <scope>"``: what an intact chain does and
        does not show. Without the key the chain is only self-consistent
        (:data:`NO_KEY_SCOPE`: the entry hashes are unkeyed) and the heads of each scheme
        are counted as present, unchecked (Ed25519 heads are checkable with
        ``--public-key``, HMAC heads only with the HMAC key in process); with the key,
        whether the file ends with the writer's closing head, is not closed
        (``--allow-open``) or predates closing heads (v2),
        ``"BROKEN: no entries (...)"`` for an empty file (problem ``empty``) or
        ``"BROKEN at entry <i>: <problem> (<detail>)"``.
    """
    if result.problem == "empty" or (result.ok and result.n_entries == 0):
        return f"BROKEN: {EMPTY_AUDIT_FILE}"
    if result.ok:
        hmac = (f"{result.hmac_heads} HMAC head(s), present but unchecked (checkable only "
                "with the HMAC key in the process that wrote the file: "
                "AuditLog.verify(registry=...))")
        if public_key_given:
            ok = (f"OK: {result.n_entries} entries, head {result.head_hash}; hash chain intact, "
                  f"ending with {_closing_scope(result)}")
            return f"{ok}; the file also has {hmac}" if result.hmac_heads else ok
        ok = (f"OK: {result.n_entries} entries, head {result.head_hash}; hash chain "
              f"self-consistent only: {NO_KEY_SCOPE}")
        if result.ed25519_heads:
            return (f"{ok}; the file has {result.ed25519_heads} Ed25519 head(s), present but "
                    "unchecked: --public-key HEX checks them and the file's end (HEX is the "
                    f"operator's audit key, {KEY_SOURCE})"
                    + (f"; it also has {hmac}" if result.hmac_heads else ""))
        if result.hmac_heads:
            return f"{ok}; the file has no Ed25519 head, only {hmac}"
        return (f"{ok}; the file has no signed head (an ed25519-mode file whose heads were "
                "cut off or removed looks like this; --public-key HEX reveals that, HEX being "
                f"the operator's audit key, {KEY_SOURCE}; an hmac-mode environment signs no "
                "heads, and only the process that wrote the file can detect such edits)")
    detail = result.message.split(": ", 1)[1] if ": " in result.message else result.message
    where = "" if result.index is None else f" at entry {result.index}"
    return f"BROKEN{where}: {result.problem} ({detail})"


def _closing_scope(result: AuditVerification) -> str:
    """What the head a key-checked file ends with shows about the file being whole."""
    if result.closed:
        episodes = f", {result.episodes} episode(s)" if result.episodes else ""
        return (f"the writer's closing head signed by the given key (closed: the file is "
                f"whole as its writer finished it{episodes})")
    if result.closed is False:
        return f"a head signed by the given key, but {open_file_reason(result.episodes)}"
    return ("a head signed by the given key in the v2 format (gridswarm-audit-head-v2), "
            "which predates closing heads: a file cut right after an earlier episode's head "
            "looks the same, so check the episode count too (episode_start entries: "
            f"{result.episodes})")


def exit_status(result: AuditVerification) -> int:
    """:data:`EXIT_OK` for an intact, non-empty chain, else :data:`EXIT_BROKEN`."""
    return EXIT_OK if result.ok and result.n_entries > 0 else EXIT_BROKEN


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``PROG: error: MESSAGE (see PROG
    --help)``, with exit status 2 (no usage block), and an unknown option close to one
    of its own gets a hint (``--policies``, evaluate.py's flag, to demo.py:
    ``unrecognized arguments: --policies heuristic; did you mean --policy?``): this
    command's, and the project's other command lines' (``policies.cli_checks``
    re-exports it; the library imports nothing from ``policies``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,   # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self.hint(extras)}")
        return parsed

    def hint(self, extras: Sequence[str]) -> str:
        """``"; did you mean --policy?"`` for the first of ``extras`` that is an option
        close to one of this parser's (difflib: a ratio of 0.75 or more for the whole
        option, and 0.6 for its first word: ``--policy`` is ``--policies`` misspelt, but
        ``--crypto-threads``, demo.py's, is no ``--torch-threads``), else ``""``."""
        import difflib

        ours = [o for o in self._option_string_actions if o.startswith("--")]
        for arg in extras:
            if arg.startswith("--"):
                given = arg.split("=", 1)[0]
                for match in difflib.get_close_matches(given, ours, n=3, cutoff=0.75):
                    first = (given[2:].split("-")[0], match[2:].split("-")[0])
                    if difflib.SequenceMatcher(None, *first).ratio() >= 0.6:
                        return f"; did you mean {match}?"
        return ""


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m gridswarm_env.audit",
        description="Verify a gridswarm audit hash chain (JSONL).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser("verify", help="verify an audit file and report the first problem")
    verify.add_argument("file", metavar="FILE", help="JSONL audit file written by AuditLog")
    verify.add_argument(
        "--public-key",
        metavar="HEX",
        default=None,
        help="operator's raw Ed25519 public key (64 hex digits); checks signed heads and a cut "
             "tail: the file must end with the writer's closing head",
    )
    verify.add_argument(
        "--allow-open",
        action="store_true",
        help="with --public-key: accept a file ending with a signed head that is not the "
             "closing one (a writer still running), reported as 'not closed'",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    :param argv: arguments without the program name (default ``sys.argv[1:]``).
    :return: 0 for an intact chain (with ``--public-key``: ending with the writer's
        closing head, or any valid head with ``--allow-open``), 1 for a broken one or an
        empty file, 2 for an error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the error (one line)
        return EXIT_OK if exc.code == 0 else EXIT_ERROR
    public_key = None
    if args.public_key is not None:
        try:
            public_key = bytes.fromhex(args.public_key)
        except ValueError:
            public_key = b""
        if len(public_key) != 32:
            print(
                f"{parser.prog}: error: --public-key must be 64 hex digits (32 bytes); got "
                f"{args.public_key!r}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        weak = weak_public_key_problem(public_key)
        if weak is not None:
            print(f"{parser.prog}: error: --public-key {args.public_key}: {weak}",
                  file=sys.stderr)
            return EXIT_ERROR
    if args.allow_open and public_key is None:
        print(f"{parser.prog}: error: --allow-open needs --public-key HEX (without the key "
              "the file's end is not checked at all)", file=sys.stderr)
        return EXIT_ERROR
    if not args.file:   # Path("") is the current directory: "Is a directory"
        print(f"{parser.prog}: error: empty audit file path; expected a JSONL audit file",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        result = verify_audit_file(args.file, public_key=public_key, allow_open=args.allow_open)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"{parser.prog}: error: cannot read audit file {args.file!r}: {reason}",
              file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:   # no verdict on the file: not exit 1 (BROKEN), nor a traceback
        print(f"{parser.prog}: error: out of memory verifying audit file {args.file!r} (a "
              "line within the verifier's bounds may take ~1.4 GB to decode); no verdict",
              file=sys.stderr)
        return EXIT_ERROR
    print(format_verdict(result, public_key_given=public_key is not None))
    return exit_status(result)


if __name__ == "__main__":
    sys.exit(main())
