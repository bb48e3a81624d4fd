"""What the sandbox tests share: whether bubblewrap works here, and how to look at host processes.

Tests that need the kernel isolation use ``requires_bubblewrap`` (skipped with bwrap's own reason where
it is missing or cannot create namespaces); tests of behaviour that does not depend on it run with
``ISOLATION`` (bubblewrap where it works, else the process-level sandbox) and pass ``CLI_FLAGS`` to the
command line for the same reason.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from data_recipes.external.isolation import IsolationUnavailable, check_isolation


def _isolation_problem() -> str:
    try:
        check_isolation()
    except IsolationUnavailable as exc:
        return str(exc)
    return ""


ISOLATION_PROBLEM = _isolation_problem()
ISOLATION = not ISOLATION_PROBLEM
CLI_FLAGS = [] if ISOLATION else ["--no-isolation"]
requires_bubblewrap = pytest.mark.skipif(
    not ISOLATION, reason=f"kernel sandbox unavailable here: {ISOLATION_PROBLEM}"
)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``: pid -> start time (so a recycled pid is not confused)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))):
            parents[int(entry)] = stat
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def alive(processes: dict[int, int]) -> dict[int, int]:
    """The processes of ``processes`` (pid -> start time) that still run (zombies count as gone)."""
    left = {}
    for pid, start in processes.items():
        stat = _stat(pid)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if stat is not None and stat[1] == start and state != "Z":
            left[pid] = start
    return left


def with_marker(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def kill_all(pids) -> None:
    """Clean-up after a failed test: the escaped processes must not outlive the test run either."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
