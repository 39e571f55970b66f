"""The ``npe`` command: theory (``check``, ``priors``, ``figures``, ``ufm``), measurement (``report``)
and training (``train``, ``sweep``, ``compare``).

Each package registers its own sub-commands; the theory ones work without torch. Input the code
checked and refused (``InputError``, argparse's own errors) prints one line and exits with code 2;
a path that cannot be read or written, one line and code 2 as well. Any other exception is a bug of
ours: one line saying so, exit code 1, and the traceback in a crash log (in the run folder when
there is one). ``npe check`` exits 1 when a claim fails, ``npe train`` when a run diverges.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import sys

from npe_theory.errors import InputError


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


def _given_text(text: str) -> str:
    """The type of every string-valued argument: an empty value is refused, never read as "the current folder" or
    "the default" (a path, a name, a device)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value (give a path, a name or a number)")
    return text


class _Parser(argparse.ArgumentParser):
    def add_argument(self, *args, **kwargs):
        """Every argument that takes a string (no type, or ``str``) refuses an empty one (``_given_text``)."""
        action = kwargs.get("action")
        takes_value = action in (None, "store", "append", "extend") and kwargs.get("nargs") != 0
        if takes_value and kwargs.get("type") in (None, str):
            kwargs["type"] = _given_text
        return super().add_argument(*args, **kwargs)

    def error(self, message):  # argparse's default prints the whole usage block first
        raise UsageError(f"{self.prog}: error: {message}{self._did_you_mean(message)}")

    def parse_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def _did_you_mean(self, message: str) -> str:
        """For an unknown option, the closest known ones (Python 3.11's argparse suggests none)."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        actions = list(self._actions)
        words = [w for w in getattr(self, "_given", []) if not w.startswith("-")]
        for a in self._actions:  # the options of the command given, which the top parser reports as unknown
            if isinstance(a, argparse._SubParsersAction) and words and words[0] in a.choices:
                actions += a.choices[words[0]]._actions
        known = [o for a in actions for o in a.option_strings if o.startswith("--")]
        for word in message.split(":", 1)[1].split():
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=2, cutoff=0.7)
            if word.startswith("-") and close:
                return f" (did you mean {' or '.join(close)}?)"
        return ""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, the training package (torch) is imported only when its first word is a
    command that needs it, so ``npe --help`` and the theory commands start without torch."""
    from npe_theory import __version__, report_cli
    from npe_theory import cli as theory_cli
    from npe_theory.plugins import load_plugins

    load_plugins()  # before the parser: a plugin's losses, data sets, models and methods are choices

    parser = _Parser(
        prog="npe",
        description="Neural Prior Estimation toolkit: theory checks, predicted priors, PEM reports, training.",
    )
    parser.add_argument("--version", action="version", version=f"npe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    theory_cli.register(sub)
    report_cli.register(sub)
    if argv is not None and (not argv or argv[0] not in (*TRAIN_COMMANDS, "figures")):
        for name, text in TRAIN_COMMANDS.items():
            sub.add_parser(name, help=text)
        return parser
    try:
        from npe_train import cli as train_cli
    except ImportError as exc:  # the training extra (torch) is not installed: theory commands only
        parser.set_defaults(missing_extra=exc.name)
        for name in TRAIN_COMMANDS:
            sub.add_parser(name, help=f"(needs the training extra: {exc.name} is not installed)")
        return parser
    train_cli.register(sub, TRAIN_COMMANDS)
    return parser


TRAIN_COMMANDS = {
    "train": "train a network with PEMs on long-tailed data and report its learned priors",
    "sweep": "run seeds x methods x imbalances and write one mean/std table (CSV and Markdown)",
    "compare": "print finished runs side by side",
    "reproduce": "run a results table (a TOML file or a shipped one) and write table.md and table.csv",
    "eval": "score a finished run on another test set or another test label distribution",
    "plot": "draw a finished run's figures (a lean run leaves them to this)",
}  # npe_train.cli registers them


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a run the way Ctrl-C does: the last checkpoint is kept


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line: one line saying it is a warning, without the source line that made it
    look like a crash."""
    return f"npe: warning: {_one_line(message)}\n"


def main(argv=None) -> int:
    import signal
    import threading
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    shown = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        if (
            threading.current_thread() is not threading.main_thread()
        ):  # signal handlers belong to the main thread
            return _main(argv)
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return _main(argv)
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        warnings.formatwarning = shown


def _main(argv: list[str]) -> int:
    runfolder = sys.modules.get("npe_train.run.runfolder")
    if runfolder is not None:  # a folder held by an earlier command of this process is not this command's
        runfolder.last_claimed = None
    try:
        from npe_theory.validate import env_threads

        env_threads()  # a malformed OMP_NUM_THREADS is one line here, before torch's OpenMP reads and warns about it
        parser = build_parser(argv)  # inside: a plugin that fails to import is one line too
        if not argv:  # bare ``npe``: the commands, not a complaint that one is missing
            parser.print_help()
            return 0
        missing = parser.get_default("missing_extra")
        if missing and argv and argv[0] in TRAIN_COMMANDS:
            raise UsageError(
                f"npe {argv[0]}: needs the training extra ({missing} is not installed): pip install 'npe-toolkit[train]'"
            )
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except InputError as exc:  # the API's argument checks name the offending argument
        print(f"npe: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except (
        OSError
    ) as exc:  # a path that cannot be written or read: unwritable, a folder, under a file, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        full = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        print(
            f"npe: error: {where}{exc.strerror or _one_line(exc)}{full}", file=sys.stderr
        )  # our own OSErrors name the path in strerror
        return 2
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (main turns it into the same for every command)
        print("npe: interrupted" + _resume_hint(argv), file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line here, the whole traceback in a log file
        log = _crash_log()
        print(
            f"npe: internal error: {type(exc).__name__}: {_one_line(exc)} (full traceback in {log})",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _resume_hint(argv: list[str]) -> str:
    """For an interrupted ``npe train``: the command that continues the run from its last checkpoint."""
    folder = _run_folder()
    if not argv or argv[0] != "train" or folder is None:
        return ""
    import shlex

    again = ["npe", *argv] + ([] if "--resume" in argv else ["--resume"])
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        again += ["--out", str(folder)]
    return f"; continue the run with: {shlex.join(again)}"


def _run_folder():
    """The run folder this process last held (``npe_train.run.runfolder``), or None."""
    runfolder = sys.modules.get("npe_train.run.runfolder")
    return getattr(runfolder, "last_claimed", None)


CRASH_LOGS_KEPT = 5  # in the temporary folder; older ones are removed so they do not pile up


def _crash_log() -> str:
    """Write the current traceback to the run folder's crash.log, or else to a fresh file in the temporary
    folder (keeping the newest few); returns its path."""
    import tempfile
    import traceback
    from pathlib import Path

    text = " ".join(sys.argv) + "\n\n" + traceback.format_exc()
    folder = _run_folder()
    if folder is not None:
        try:
            path = Path(folder) / "crash.log"
            path.write_text(text)
            return str(path)
        except OSError:
            pass
    fd, path = tempfile.mkstemp(prefix="npe-crash-", suffix=".log")
    with open(fd, "w") as fh:
        fh.write(text)
    logs = sorted(Path(path).parent.glob("npe-crash-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in logs[CRASH_LOGS_KEPT:]:
        old.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
