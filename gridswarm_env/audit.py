"""Command line verifier for gridswarm audit chains (JSONL files written by ``AuditLog``).

Usage::

    python -m gridswarm_env.audit verify FILE [--public-key HEX]

Prints ``OK: <n> entries, head <hash>`` and exits 0 when the chain is intact;
prints ``BROKEN at entry <i>: <problem> (<detail>)`` and exits 1 on the first
altered, removed, inserted, reordered, truncated or malformed entry; prints
``error: ...`` and exits 2 when the file is missing or unreadable or the command
line is wrong. With ``--public-key`` (the operator's raw Ed25519 public key, 64 hex
digits), every signed head is checked and the file must end with a valid signed
head, so a cut tail is reported as ``truncated``.

Importing this module has no side effects; :func:`main` is the entry point.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gridswarm_env.trust import AuditVerification, verify_audit_file

__all__ = ["EXIT_BROKEN", "EXIT_ERROR", "EXIT_OK", "format_verdict", "main"]

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_ERROR = 2


def format_verdict(result: AuditVerification) -> str:
    """One-line human-readable verdict.

    :param result: a verification result.
    :return: ``"OK: <n> entries, head <hash>"`` or ``"BROKEN at entry <i>: <problem> (<detail>)"``.
    """
    if result.ok:
        return f"OK: {result.n_entries} entries, head {result.head_hash or '(empty chain)'}"
    detail = result.message.split(": ", 1)[1] if ": " in result.message else result.message
    where = "" if result.index is None else f" at entry {result.index}"
    return f"BROKEN{where}: {result.problem} ({detail})"


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
    :return: 0 for an intact chain, 1 for a broken one, 2 for an error.
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
                f"error: --public-key must be 64 hex digits (32 bytes); got {args.public_key!r}",
                file=sys.stderr,
            )
            return EXIT_ERROR
    try:
        result = verify_audit_file(args.file, public_key=public_key)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot read audit file {args.file!r}: {reason}", file=sys.stderr)
        return EXIT_ERROR
    print(format_verdict(result))
    return EXIT_OK if result.ok else EXIT_BROKEN


if __name__ == "__main__":
    sys.exit(main())
