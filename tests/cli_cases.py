"""Table-driven command-line error tests: one :class:`Case` per bad input, run through the command's ``main``.

Each case builds its inputs in a fresh folder, runs the real entry point in-process and checks the contract
of the one error path (:mod:`mmgeolm_core.cli`): the exit status (2 bad input, 1 failed job, 130
interrupted), one last stderr line ``<prog>: ...`` holding the words that locate the problem (file, record,
key, what was expected), no traceback, and, through ``check``, that nothing partial was written and no
earlier result was lost.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Case:
    """One bad input of one command.

    Attributes:
        id: what is wrong, as the test id.
        argv: builds the inputs under the workspace and returns the command line (without the program).
        code: the expected exit status.
        words: regular expressions the message must match: the last stderr line for an error, else the
            whole output (a skip must be reported, not silent).
        check: asserts on the workspace after the run: nothing partial written, nothing earlier lost.
        summary: the command reports in its summary (a batch with some records rejected: exit 1 and the
            rejects listed) rather than failing with one line; ``words`` are then searched in all its output.
    """

    id: str
    argv: Callable[[Workspace], list[str]]
    code: int
    words: Sequence[str] = ()
    check: Callable[[Workspace], None] | None = None
    summary: bool = False


@dataclass
class Workspace:
    """A case's own folder, the module's shared (read-only) fixtures, and what the case set up."""

    root: Path
    shared: dict[str, Path] = field(default_factory=dict)
    saved: dict[str, Any] = field(default_factory=dict)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def dir(self, name: str) -> Path:
        """An empty folder of the workspace."""
        (self.root / name).mkdir(parents=True)
        return self.root / name

    def copy(self, name: str, as_name: str | None = None) -> Path:
        """A private copy of a shared fixture (a case may damage it)."""
        source = self.shared[name]
        target = self.root / (as_name or source.name)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
        return target

    def remember(self, path: Path) -> Path:
        """Snapshot ``path`` (file or folder) so that :meth:`unchanged` can check it was left alone."""
        self.saved[str(path)] = snapshot(path)
        return path

    def unchanged(self, path: Path) -> None:
        assert snapshot(path) == self.saved[str(path)], f"{path} was changed or lost"


def absent(name: str) -> Callable[[Workspace], None]:
    """A check: the command left nothing (not even an empty folder) at ``name``."""
    def check(ws: Workspace) -> None:
        assert not (ws / name).exists(), f"{ws / name} was left behind"
    return check


def snapshot(path: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def run_case(main: Callable[[list[str]], int], prog: str, case: Case, ws: Workspace,
             capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run ``case`` through ``main`` and check the exit status, the message and ``case.check``."""
    argv = case.argv(ws)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, err
    if case.code != 0 and not case.summary:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines, "no message on stderr"
        last = lines[-1]
        assert last.startswith(f"{prog}: "), f"the last stderr line is not the command's one-line message: {last!r}"
        text = last
    else:
        text = out + err
    for word in case.words:
        assert re.search(word, text), f"{word!r} not in {text[-2000:]!r}"
    if case.check is not None:
        case.check(ws)
    return out, err


def cases(table: Sequence[Case]) -> Any:
    """``pytest.mark.parametrize`` over a table, with the case ids as test ids."""
    return pytest.mark.parametrize("case", table, ids=[c.id for c in table])


def read_only_dir(root: Path) -> Path:
    """A directory in which nothing can be created, also for root (who ignores permission bits)."""
    folder = root / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / ".probe").touch()
    except PermissionError:
        return folder
    (folder / ".probe").unlink()
    for candidate in (Path("/sys/kernel"), Path("/proc/sys")):  # read-only for everyone, root included
        try:
            (candidate / ".mmgeolm-probe").touch()
        except OSError:
            return candidate
    pytest.skip("no read-only directory available here")


@contextlib.contextmanager
def interrupt_when(ready: Callable[[], bool], timeout: float = 120.0) -> Iterator[threading.Event]:
    """Within the block, send this process Ctrl-C (SIGINT) as soon as ``ready()`` holds, as a user would
    press it in the middle of a job; the signal reaches the main thread, where the command under test runs.
    Choose a ``ready`` that holds long before the job would end. Yields an event set once the signal was sent.
    """
    done, sent = threading.Event(), threading.Event()

    def wait_and_interrupt() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if ready():
                os.kill(os.getpid(), signal.SIGINT)
                sent.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=wait_and_interrupt, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        done.set()
        thread.join()


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def edit_samples(data: Path, line: int, edit: Callable[[dict], Any]) -> None:
    """Apply ``edit`` to record ``line`` (0-based) of ``data``'s samples.jsonl, in place."""
    lines = (data / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[line])
    edit(record)
    lines[line] = json.dumps(record)
    (data / "samples.jsonl").write_text("\n".join(lines) + "\n")
