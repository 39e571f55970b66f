"""The ``npe`` command: ``npe check``, ``npe priors``, ``npe figures``, ``npe train``, ``npe compare``.

Bad arguments print one line and exit with code 2; ``npe check`` exits 1 when a claim fails.
"""
from __future__ import annotations

import argparse
import sys

from .io import write_json


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints the whole usage block first
        raise UsageError(f"{self.prog}: error: {message}")


def cmd_check(args) -> int:
    from .checks import format_table, run_checks

    rows = run_checks(progress=not args.quiet)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        write_json(args.json, [r.as_dict() for r in rows], indent=2)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npe", description="Neural Prior Estimation toolkit: theory checks, predicted priors, training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("check", help="verify every claim of Proposition 1 against mpmath, scipy and sympy")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    for register in _registrars():
        register(sub)
    return parser


def _registrars():
    from . import cli_priors

    out = [cli_priors.register]
    try:
        from npe_train import cli as train_cli
    except ImportError:  # npe_train is optional at the theory level
        return out
    return [*out, train_cli.register]


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:  # the API's argument checks name the offending argument
        print(f"npe: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("npe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
