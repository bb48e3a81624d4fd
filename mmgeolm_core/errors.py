"""The error types that every command line maps to an exit status (see :mod:`mmgeolm_core.cli`).

- :class:`InputError` (exit 2): the user's input is wrong: a file, record, key or value. Its message
  names where and what was expected, so the command prints it as one line.
- :class:`JobError` (exit 1): the input was fine but the job failed (a stage, a training run).
- :class:`Interrupted` (exit 130): Ctrl-C, raised where a job can say what it kept and how to resume.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the file, record, key or value and what was expected."""


class JobError(RuntimeError):
    """A job failed for a reason other than its input; the message says which and where to look."""


class UnknownNameError(InputError, KeyError):
    """A name that no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted job kept and how to resume it (the one line the command prints)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
