"""A resumable sequence of named stages, each a subprocess with its own folder and log.

A stage that finished writes ``<out>/<stage>/DONE.json`` (atomically, with its command); a re-run
skips it. An interrupted stage is simply run again: every command the pipeline calls resumes its own
work (the data builder skips finished samples, ``mmclip-train`` takes ``--resume latest``).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmgeolm_core.errors import InputError, JobError
from mmgeolm_core.io import atomic_write_json

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
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line.rstrip()])[-25:]
            code = proc.wait()
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
