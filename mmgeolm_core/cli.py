"""One error path and one logging set-up for every command line of the project.

A command builds its ``argparse`` parser and a ``run(args) -> int`` function and hands both to
:func:`run_cli`, which adds ``--quiet`` / ``--verbose`` / ``--debug``, sets up logging and turns every
expected failure into one line on stderr and an exit status:

======  ==============================================================================
0       success
1       the job failed (:class:`~mmgeolm_core.errors.JobError`, a full disk)
2       bad input: a file, record, key or value (:class:`~mmgeolm_core.errors.InputError`,
        a missing, unreadable or unwritable path, a read-only file system), or a bad command line (argparse)
130     interrupted (Ctrl-C); what was written so far stays, and resumable jobs resume
        (:class:`~mmgeolm_core.errors.Interrupted` says what was kept and how to resume)
======  ==============================================================================

Anything else is a bug and keeps its traceback. ``--debug`` prints the traceback of expected failures too.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from mmgeolm_core.errors import InputError, Interrupted, JobError

PACKAGES = ("data_recipes", "mmclip_plugin", "llava_patches", "mmgeolm", "mmgeolm_core")
_BAD_PATH = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
_DISK = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS,)  # the user named a path where nothing can be written: bad input
INTERRUPTED = "interrupted; what was written so far is kept (re-run the command to resume)"


class _TqdmHandler(logging.Handler):
    """Writes records through ``tqdm.write`` so that messages and progress bars do not garble each other."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's own contract: a handler never raises)
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def setup_logging(verbosity: int = 0) -> None:
    """One stderr handler for the project's loggers: INFO by default, WARNING at -1, DEBUG at +1.

    Idempotent: a second call only changes the level.
    """
    level = logging.INFO if verbosity == 0 else logging.WARNING if verbosity < 0 else logging.DEBUG
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
            handler = _TqdmHandler()
            handler.setFormatter(_Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.propagate = False


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``, ``-v/--verbose`` and ``--debug`` (idempotent)."""
    if any("--debug" in a.option_strings for a in parser._actions):
        return
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    group.add_argument("-v", "--verbose", action="store_true", help="print debugging messages")
    group.add_argument("--debug", action="store_true", help="print the traceback of an error")


def guarded(prog: str, fn: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run ``fn`` and map its failures to an exit status with one line on stderr (see the module doc)."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt as exc:
        message = f"interrupted: {exc}" if isinstance(exc, Interrupted) and str(exc) else INTERRUPTED
        return _fail(prog, message, 130, debug)
    except InputError as exc:
        return _fail(prog, str(exc), 2, debug)
    except JobError as exc:
        return _fail(prog, str(exc), 1, debug)
    except _BAD_PATH as exc:
        return _fail(prog, _os_message(exc), 2, debug)
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            return _fail(prog, _os_message(exc), 2, debug)
        if exc.errno in _DISK:
            return _fail(prog, _os_message(exc), 1, debug)
        raise


def run_cli(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
            argv: Sequence[str] | None = None, *, intermixed: bool = False) -> int:
    """Parse ``argv`` (argparse exits 2 on a bad command line), set up logging, run ``run(args)`` guarded.

    ``intermixed``: options may come between positional arguments (``CONFIG --print-config key=value``).
    """
    add_output_arguments(parser)
    argv = None if argv is None else list(argv)
    args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    setup_logging(int(args.verbose) - int(args.quiet))
    return guarded(prog, lambda: run(args), debug=args.debug)


def _os_message(exc: OSError) -> str:
    """``path: what is wrong``; the path the user gave, not the temporary file an atomic write renames."""
    names = [os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None]
    if len(names) == 2 and ".tmp" in os.path.basename(names[0]):
        names = names[1:]  # os.replace(temporary sibling, target): the target is what the user named
    where = " -> ".join(names)
    reason = exc.strerror or str(exc)
    if isinstance(exc, IsADirectoryError):
        reason = "is a directory (expected a file)"
    elif isinstance(exc, NotADirectoryError):
        reason = "a part of this path is a file, not a directory"
    elif isinstance(exc, FileExistsError) and names and os.path.exists(names[-1]) and not os.path.isdir(names[-1]):
        reason = "is a file, not a directory"
    return f"{where}: {reason}" if where else reason


def _fail(prog: str, message: str, status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    return status
