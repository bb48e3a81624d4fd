"""A resumable sequence of named stages, each a subprocess with its own folder and log.

A stage that finished writes ``<out>/<stage>/DONE.json`` (atomically, with its command); a re-run
skips it. An interrupted stage is simply run again: every command the pipeline calls resumes its own
work (the data builder skips finished samples, ``mmclip-train`` takes ``--resume latest``). Ctrl-C is
handed on to the running command, which stops cleanly (``mmclip-train`` saves a checkpoint first).
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mmgeolm_core.errors import InputError, Interrupted, JobError
from mmgeolm_core.io import atomic_write_json, read_json

DONE = "DONE.json"
LOG = "stage.log"


class StageError(JobError):
    """A stage's command failed; the message carries its last output lines and the log path."""


@dataclass
class Stage:
    """One step of the pipeline.

    Attributes:
        name: folder name under the run directory, and the name ``--from``/``--until`` take.
        commands: builds the argv list(s) to run, given the stage folder.
        enabled: a stage whose recipe section is off is skipped (and not marked done).
        env: extra environment variables for the subprocesses.
    """

    name: str
    commands: Callable[[Path], Sequence[Sequence[str]]]
    enabled: bool = True
    env: dict[str, str] = field(default_factory=dict)


def select(stages: Sequence[Stage], start: str | None = None, until: str | None = None) -> list[Stage]:
    """The stages from ``start`` to ``until`` inclusive, by name."""
    names = [s.name for s in stages]
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise InputError(f"{flag} {value!r} is not a stage; stages: {', '.join(names)}")
    lo = names.index(start) if start else 0
    hi = names.index(until) if until else len(names) - 1
    if lo > hi:
        raise InputError(f"--from {start} comes after --until {until}; order: {', '.join(names)}")
    return list(stages[lo : hi + 1])


def missing_before(run_dir: Path, stages: Sequence[Stage], start: str | None) -> list[str]:
    """Enabled stages before ``start`` that have not finished: a ``--from`` run would read their outputs."""
    if start is None:
        return []
    names = [s.name for s in stages]
    before = stages[: names.index(start)] if start in names else []
    return [s.name for s in before if s.enabled and not is_done(run_dir, s)]


def is_done(run_dir: Path, stage: Stage) -> bool:
    return (run_dir / stage.name / DONE).is_file()


# Options that do not change what a stage produces: ``--resume latest`` (added when a stage resumes) and the
# data builder's ``--workers`` (its output does not depend on it).
_NEUTRAL = {("--resume", "latest"), ("--workers", None)}


def _settings(commands: Sequence[Sequence[str]]) -> list[list[str]]:
    """What a stage's commands say about its settings: each argv without its program (another environment
    gives another path) and without the options that do not change the stage's outputs."""
    out = []
    for argv in commands:
        args, kept, i = [str(a) for a in argv[1:]], [], 0
        while i < len(args):
            if i + 1 < len(args) and ((args[i], args[i + 1]) in _NEUTRAL or (args[i], None) in _NEUTRAL):
                i += 2
                continue
            kept.append(args[i])
            i += 1
        out.append(kept)
    return out


def changed_settings(run_dir: Path, stages: Sequence[Stage]) -> list[str]:
    """Finished stages whose commands (their settings) differ from the ones they ran with, each with the first
    difference: a re-run would skip them and silently keep results made with other settings."""
    changed = []
    for stage in stages:
        if not stage.enabled or not is_done(run_dir, stage):
            continue
        done = read_json(run_dir / stage.name / DONE)
        before = _settings(done.get("commands", [])) if isinstance(done, dict) else []
        now = _settings(stage.commands(run_dir / stage.name))
        if before != now:
            flat_before, flat_now = [a for c in before for a in c], [a for c in now for a in c]
            i = next((i for i, (a, b) in enumerate(zip(flat_before, flat_now)) if a != b),
                     min(len(flat_before), len(flat_now)))
            changed.append(f"{stage.name} ({' '.join(flat_before[max(0, i - 1): i + 1]) or '-'} -> "
                           f"{' '.join(flat_now[max(0, i - 1): i + 1]) or '-'})")
    return changed


def _children_cpu() -> float:
    """User + system CPU seconds of all finished child processes (theirs and their own children's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stage(run_dir: Path, stage: Stage, echo: Callable[[str], None] = print) -> float:
    """Run one stage's commands in order, teeing their output to the stage log; returns seconds."""
    folder = run_dir / stage.name
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG
    env = {**os.environ, **stage.env}
    start = time.time()
    cpu_start = _children_cpu()
    commands = [list(map(str, c)) for c in stage.commands(folder)]
    with open(log_path, "a", encoding="utf-8") as log:
        for argv in commands:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            tail: list[str] = []
            # Its own session: the terminal's Ctrl-C reaches only the pipeline, which hands it on exactly once
            # (a command that stops cleanly on the first Ctrl-C stops at once on a second one).
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, start_new_session=True)
            assert proc.stdout is not None
            try:
                with _forward_termination(proc):
                    for line in proc.stdout:
                        log.write(line)
                        tail = (tail + [line.rstrip()])[-25:]
                    code = proc.wait()
            except KeyboardInterrupt:
                _interrupt(proc, log)
                raise Interrupted(f"stage {stage.name!r} stopped (its log: {log_path}); run the same command again "
                                  f"to resume: finished stages are skipped and this one resumes its own work") from None
            if code != 0:
                raise StageError(
                    f"stage {stage.name!r} failed (exit code {code}) running: {' '.join(argv)}\n"
                    + "\n".join(tail)
                    + f"\nfull log: {log_path}"
                )
    seconds = time.time() - start
    cpu = _children_cpu() - cpu_start
    atomic_write_json(folder / DONE, {"stage": stage.name, "commands": commands, "seconds": round(seconds, 1),
                                       "cpu_seconds": round(cpu, 1)})
    echo(f"[mmgeolm] {stage.name}: done in {seconds:.0f}s (CPU {cpu:.0f}s)")
    return seconds


def _interrupt(proc: subprocess.Popen, log: TextIO) -> None:
    """Hand Ctrl-C on to a stage's command and let it stop cleanly (saving what it can), its output still logged;
    each further Ctrl-C hands on another one, the third kills it."""
    for attempt in range(3):
        try:
            os.killpg(proc.pid, signal.SIGKILL if attempt == 2 else signal.SIGINT)
        except ProcessLookupError:
            pass  # it has already exited
        try:
            for line in proc.stdout or ():
                log.write(line)
            proc.wait()
            log.write(f"[mmgeolm] interrupted (Ctrl-C); the command exited with code {proc.returncode}\n")
            return
        except KeyboardInterrupt:
            continue


@contextlib.contextmanager
def _forward_termination(proc: subprocess.Popen) -> Iterator[None]:
    """SIGTERM or SIGHUP to the pipeline (a scheduler's stop, a closed terminal) reaches the stage's command too,
    which runs in its own session."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_stages(run_dir: Path, stages: Sequence[Stage], echo: Callable[[str], None] = print) -> dict[str, str]:
    """Run the enabled stages not yet done; returns stage name -> 'done' | 'skipped (done)' | 'off'."""
    status: dict[str, str] = {}
    for stage in stages:
        if not stage.enabled:
            status[stage.name] = "off"
            continue
        if is_done(run_dir, stage):
            echo(f"[mmgeolm] {stage.name}: already done, skipping")
            status[stage.name] = "skipped (done)"
            continue
        echo(f"[mmgeolm] {stage.name}: running (log: {run_dir / stage.name / LOG})")
        run_stage(run_dir, stage, echo)
        status[stage.name] = "done"
    return status


def python_module(module: str, *args: object) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]
