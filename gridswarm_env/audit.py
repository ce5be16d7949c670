"""Command line verifier for gridswarm audit chains (JSONL files written by ``AuditLog``).

Usage::

    python -m gridswarm_env.audit verify FILE [--public-key HEX]

Prints ``OK: <n> entries, head <hash>; <what was and was not checked>`` and exits 0
when the chain is intact; prints ``BROKEN at entry <i>: <problem> (<detail>)`` and
exits 1 on the first altered, removed, inserted, reordered, truncated or malformed
entry, and ``BROKEN: no entries (...)`` for an empty file; prints ``error: ...`` and
exits 2 when the file is missing or unreadable or the command line is wrong. With
``--public-key`` (the operator's raw Ed25519 public key, 64 hex digits), every signed
head is checked and the file must end with a valid signed head, so a cut tail is
reported as ``truncated``. Without it a hash chain cannot show that its end was cut
off: the OK line says so and counts the file's signed heads per scheme: for Ed25519
heads it says to pass the key (from whoever wrote the file, not the ``public_key``
field inside it); HMAC-signed heads (``AuditLog.sign_head`` with an hmac-mode
registry) are checkable only with the HMAC key, in the process that wrote the file.

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

from gridswarm_env.trust import EMPTY_AUDIT_FILE, AuditVerification, verify_audit_file

__all__ = ["EXIT_BROKEN", "EXIT_ERROR", "EXIT_OK", "KEY_SOURCE", "exit_status", "format_verdict",
           "main"]

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_ERROR = 2


#: where the operator's audit key comes from (it must come from the writer: the
#: ``public_key`` field inside a signed head proves nothing, anyone can re-sign a file)
KEY_SOURCE = ("printed by `demo.py --audit` and returned by "
              "env.unwrapped.operator_public_key_hex() in the process that wrote the file; "
              "not the public_key written in the file")


def format_verdict(result: AuditVerification, public_key_given: bool = False) -> str:
    """One-line human-readable verdict.

    :param result: a verification result.
    :param public_key_given: the result was checked with ``--public-key``.
    :return: ``"OK: <n> entries, head <hash>; <scope>"`` (what an intact chain does and
        does not show, and how many signed heads of each scheme the file has: Ed25519
        heads are checkable with ``--public-key``, HMAC heads only with the HMAC key in
        process), ``"BROKEN: no entries (...)"`` for an empty file (problem ``empty``) or
        ``"BROKEN at entry <i>: <problem> (<detail>)"``.
    """
    if result.problem == "empty" or (result.ok and result.n_entries == 0):
        return f"BROKEN: {EMPTY_AUDIT_FILE}"
    if result.ok:
        ok = f"OK: {result.n_entries} entries, head {result.head_hash}; hash chain intact"
        hmac = (f"{result.hmac_heads} HMAC-signed head(s), checkable only with the HMAC "
                "key in the process that wrote the file (AuditLog.verify(registry=...))")
        if public_key_given:
            ok = f"{ok}, ending with a head signed by the given key"
            return f"{ok}; the file also has {hmac}" if result.hmac_heads else ok
        if result.ed25519_heads:
            return (f"{ok}, but a cut tail cannot be detected without --public-key HEX (the "
                    f"file has {result.ed25519_heads} signed Ed25519 head(s); HEX is the "
                    f"operator's audit key, {KEY_SOURCE})"
                    + (f"; it also has {hmac}" if result.hmac_heads else ""))
        if result.hmac_heads:
            return (f"{ok}, but a cut tail cannot be detected here: the file has no "
                    f"Ed25519-signed head, only {hmac}")
        return (f"{ok}, but a cut tail cannot be detected: the file has no signed head (an "
                "ed25519-mode file whose last head was cut off looks like this; "
                f"--public-key HEX reveals that, HEX being the operator's audit key, "
                f"{KEY_SOURCE}; an hmac-mode environment signs no heads, and only the "
                "process that wrote the file can detect a cut tail)")
    detail = result.message.split(": ", 1)[1] if ": " in result.message else result.message
    where = "" if result.index is None else f" at entry {result.index}"
    return f"BROKEN{where}: {result.problem} ({detail})"


def exit_status(result: AuditVerification) -> int:
    """:data:`EXIT_OK` for an intact, non-empty chain, else :data:`EXIT_BROKEN`."""
    return EXIT_OK if result.ok and result.n_entries > 0 else EXIT_BROKEN


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        help="operator's raw Ed25519 public key (64 hex digits); checks signed heads and a cut tail",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    :param argv: arguments without the program name (default ``sys.argv[1:]``).
    :return: 0 for an intact chain, 1 for a broken one or an empty file, 2 for an error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error
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
    try:
        result = verify_audit_file(args.file, public_key=public_key)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"{parser.prog}: error: cannot read audit file {args.file!r}: {reason}",
              file=sys.stderr)
        return EXIT_ERROR
    print(format_verdict(result, public_key_given=public_key is not None))
    return exit_status(result)


if __name__ == "__main__":
    sys.exit(main())
