"""The ``npe`` command: theory (``check``, ``priors``, ``figures``, ``ufm``), measurement (``report``)
and training (``train``, ``sweep``, ``compare``).

Each package registers its own sub-commands; the theory ones work without torch. Bad arguments
print one line and exit with code 2; ``npe check`` exits 1 when a claim fails, ``npe train`` when
a run diverges.
"""
from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints the whole usage block first
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    from npe_theory import cli as theory_cli
    from npe_theory import report_cli

    parser = _Parser(prog="npe", description="Neural Prior Estimation toolkit: theory checks, predicted priors, PEM reports, training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    theory_cli.register(sub)
    report_cli.register(sub)
    try:
        from npe_train import cli as train_cli
    except ImportError as exc:  # the training extra (torch) is not installed: theory commands only
        parser.set_defaults(missing_extra=exc.name)
        for name in TRAIN_COMMANDS:
            sub.add_parser(name, help=f"(needs the training extra: {exc.name} is not installed)")
        return parser
    train_cli.register(sub)
    return parser


TRAIN_COMMANDS = ("train", "sweep", "compare")


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        missing = parser.get_default("missing_extra")
        if missing and argv and argv[0] in TRAIN_COMMANDS:
            raise UsageError(f"npe {argv[0]}: needs the training extra ({missing} is not installed): pip install 'npe-toolkit[train]'")
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:  # the API's argument checks name the offending argument
        print(f"npe: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path that cannot be written or read: unwritable, a folder, under a file, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"npe: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)  # our own OSErrors name the path in strerror
        return 2
    except KeyboardInterrupt:
        print("npe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line here, the whole traceback in a log file
        log = _crash_log()
        print(f"npe: internal error: {type(exc).__name__}: {_one_line(exc)} (full traceback in {log})", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _crash_log() -> str:
    """Write the current traceback to a fresh file in the temporary folder; returns its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="npe-crash-", suffix=".log")
    with open(fd, "w") as fh:
        fh.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
