"""Run untrusted matplotlib scripts in a pool of kernel-isolated, warm worker processes.

The reference renders every LLM-written script in a fresh ``python script.py`` subprocess (about
0.7 s each, almost all interpreter start and ``import matplotlib``). Here each worker starts once,
inside bubblewrap (new user, mount, PID, IPC, UTS and network namespaces, a read-only minimal file
system; see :mod:`data_recipes.external.isolation`), imports and warms up matplotlib, and then forks
one fresh child per script (see ``sandbox_worker.py``):

- no state survives from one script to the next (each child is a copy of the clean worker);
- the script has its own PID namespace (every process it starts dies with it), an empty private
  ``/tmp`` as its only writable place, no capabilities, limits on memory, CPU time, file size and
  processes, and the wall-clock timeout; the audit hook of ``sandbox_script.py`` names forbidden calls;
- only a small JSON status and the PNG bytes come back, and the PNG is checked here (a real PNG of
  bounded size and dimensions) before anyone can write it.

Without bubblewrap, ``Sandbox(isolation=False)`` (``--no-isolation`` on the command line) keeps the
fork-per-script workers, the limits and the audit hook but not the kernel isolation. See
docs/scripts.md for the threat model.

Example::

    with Sandbox(workers=2, timeout=10) as sandbox:
        result = sandbox.run(open("triangle.py").read())
        if result.ok:
            Path("triangle.png").write_bytes(result.image_png)
"""
from __future__ import annotations

import collections
import io
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from data_recipes.external.isolation import MPLCONFIG_DIR, SANDBOX_DIR, bubblewrap_args, check_isolation

STATUSES = ("ok", "timeout", "memory", "forbidden", "error")
PROGRAM_FILES = tuple(Path(__file__).with_name(name) for name in ("sandbox_worker.py", "sandbox_script.py"))
MAX_HEADER_BYTES = 1 << 16
MAX_PIXELS_PER_SIDE = 16384
STARTUP_TIMEOUT = 60.0
# The worker enforces the timeout itself; the parent kills the whole worker only past this grace.
GRACE_SECONDS = 10.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (a worker could not start), as opposed to a script failing."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one script.

    Attributes:
        ok: True when the script ran and produced a valid PNG.
        image_png: the PNG bytes (None unless ``ok``); checked to be a PNG, still untrusted content.
        status: one of ``STATUSES``: ``ok``, ``timeout``, ``memory``, ``forbidden``, ``error``.
        message: why it failed, or where the image came from.
        seconds: wall-clock seconds, as seen by the parent.
        worker_pid: the worker (``bwrap`` or worker process) whose fresh child ran the script.
    """

    ok: bool
    image_png: bytes | None = field(repr=False)
    status: str
    message: str
    seconds: float
    worker_pid: int | None = None


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of a :class:`Sandbox` (see its docstring)."""

    workers: int = 2
    timeout: float = 20.0
    memory_mb: int = 1024
    cpu_seconds: float = 20.0
    max_file_mb: float = 32.0
    isolation: bool = True

    def __post_init__(self) -> None:
        for name in ("workers", "timeout", "memory_mb", "cpu_seconds", "max_file_mb"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.workers, int):
            raise ValueError(f"SandboxConfig.workers must be an integer, got {self.workers!r}")
        if not isinstance(self.isolation, bool):
            raise ValueError(f"SandboxConfig.isolation must be True or False, got {self.isolation!r}")


def check_png(data: bytes, max_bytes: int) -> str:
    """Empty when ``data`` is a well-formed PNG of at most ``max_bytes`` and sane dimensions, else why not."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        return f"{len(data)} bytes of image, more than the {max_bytes}-byte limit"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "the image is not a PNG file"
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            width, height = image.size
            if not (0 < width <= MAX_PIXELS_PER_SIDE and 0 < height <= MAX_PIXELS_PER_SIDE):
                return f"PNG of {width}x{height} pixels, more than {MAX_PIXELS_PER_SIDE} per side"
            image.verify()  # chunk structure and checksums
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"invalid PNG: {exc}"
    return ""


def _worker_env(home: str, mplconfig: str) -> dict[str, str]:
    """Only what matplotlib needs: a script that dumps ``os.environ`` finds no secrets."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": mplconfig, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def _recv_exact(fd: int, n: int, deadline: float) -> bytes:
    """Read exactly ``n`` bytes before ``deadline`` (raises TimeoutError / EOFError)."""
    chunks, remaining = [], n
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Worker:
    """One worker process and its pipes. Not thread-safe: the pool hands it to one thread at a time."""

    def __init__(self, config: SandboxConfig, bwrap: str | None, cache_dir: str):
        self.config, self.bwrap, self.cache_dir = config, bwrap, cache_dir
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.root: str | None = None
        self.isolation = "unknown"
        self._ready = False

    def _command(self, response_fd: int) -> tuple[list[str], dict[str, str], str]:
        worker_config = {
            "response_fd": response_fd, "isolated": self.bwrap is not None, "timeout": self.config.timeout,
            "memory_mb": self.config.memory_mb, "max_file_mb": self.config.max_file_mb,
            "cpu_seconds": self.config.cpu_seconds, "tmp_bytes": int(4 * self.config.max_file_mb * 2**20),
        }
        if self.bwrap is not None:
            worker_config.update(root="/tmp", cache_dir=MPLCONFIG_DIR)
            prefix = [*bubblewrap_args(self.bwrap, [str(p) for p in PROGRAM_FILES], self.cache_dir), "--"]
            program, env, cwd = f"{SANDBOX_DIR}/{PROGRAM_FILES[0].name}", _worker_env("/tmp", MPLCONFIG_DIR), "/"
        else:
            self.root = tempfile.mkdtemp(prefix="mmgeolm-sandbox-")
            worker_config.update(root=self.root, cache_dir=self.cache_dir)
            prefix, program, env, cwd = [], str(PROGRAM_FILES[0]), _worker_env(self.root, self.cache_dir), self.root
        return [*prefix, sys.executable, "-I", program, json.dumps(worker_config)], env, cwd

    def start(self) -> None:
        """Launch the process; readiness is awaited lazily by the first ``run``.

        Call it from the pool's launcher thread: the worker dies with the thread that started it
        (``PR_SET_PDEATHSIG``, bubblewrap's ``--die-with-parent``), so that thread must live as long as the pool.
        """
        read_fd, write_fd = os.pipe()
        try:
            command, env, cwd = self._command(write_fd)
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_fd,), env=env, cwd=cwd, start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.response_fd, self._ready, self.pid = read_fd, False, self.proc.pid

    def await_ready(self) -> None:
        try:
            header, _ = self._receive(time.monotonic() + max(STARTUP_TIMEOUT, self.config.timeout))
        except (TimeoutError, EOFError, ValueError) as exc:
            self.stop()
            raise SandboxError(f"sandbox worker {self.pid} did not start ({type(exc).__name__})") from exc
        if header.get("status") != "ready":
            self.stop()
            raise SandboxError(f"sandbox worker failed to start: {header.get('message', header)}")
        self.isolation, self._ready = str(header.get("message")), True

    def _receive(self, deadline: float) -> tuple[dict, bytes]:
        (length,) = struct.unpack(">I", _recv_exact(self.response_fd, 4, deadline))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"worker response header of {length} bytes")
        header = json.loads(_recv_exact(self.response_fd, length, deadline))
        png_len = header.get("png_len", 0) if isinstance(header, dict) else None
        if not isinstance(png_len, int) or not 0 <= png_len <= self.config.max_file_mb * 2**20:
            raise ValueError(f"worker announced {png_len!r} bytes of image")
        return header, _recv_exact(self.response_fd, png_len, deadline) if png_len else b""

    def run(self, script: str, output_name: str) -> SandboxResult:
        if not self._ready:
            self.await_ready()
        start = time.monotonic()
        request = json.dumps({"script": script, "output_name": output_name}).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(request)) + request)
            self.proc.stdin.flush()
            header, png = self._receive(start + self.config.timeout + GRACE_SECONDS)
        except TimeoutError:
            return self._failed("timeout", f"wall-clock timeout of {self.config.timeout:g} s exceeded", start)
        except (EOFError, BrokenPipeError):
            return self._failed("error", f"the sandbox worker died (exit status {self._exit_code()})", start)
        except ValueError as exc:  # json.JSONDecodeError included
            return self._failed("error", f"malformed worker response: {exc}", start)
        status, message = header.get("status"), str(header.get("message", ""))
        if status not in STATUSES:
            return self._failed("error", f"worker answered unknown status {status!r}", start)
        if status == "ok":
            problem = check_png(png, int(self.config.max_file_mb * 2**20))
            if problem:
                status, message = "error", f"the script's image was rejected: {problem}"
        ok = status == "ok"
        return SandboxResult(ok, png if ok else None, status, message, time.monotonic() - start, self.pid)

    def _exit_code(self) -> int | None:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _failed(self, status: str, message: str, start: float) -> SandboxResult:
        pid = self.pid
        self.stop()
        return SandboxResult(False, None, status, message, time.monotonic() - start, pid)

    def stop(self) -> None:
        """Kill the worker (with bubblewrap, its whole PID namespace dies with it) and clean up."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            if self.proc.stdin:
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            os.close(self.response_fd)
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._ready = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Sandbox:
    """A pool of sandbox workers; use as a context manager.

    Args:
        workers: number of worker processes (scripts run in parallel in ``map``).
        timeout: wall-clock seconds per script.
        memory_mb: address space a script may add on top of the warm worker.
        cpu_seconds: CPU seconds per script (``RLIMIT_CPU``).
        max_file_mb: largest file a script may write (``RLIMIT_FSIZE``), and largest image.
        isolation: run the workers inside bubblewrap (default). ``start`` raises
            :class:`~data_recipes.external.isolation.IsolationUnavailable` where that is impossible;
            False keeps only the process-level limits (for trusted scripts or a machine without bwrap).
    """

    def __init__(self, workers: int = 2, timeout: float = 20.0, memory_mb: int = 1024,
                 cpu_seconds: float = 20.0, max_file_mb: float = 32.0, isolation: bool = True):
        self.config = SandboxConfig(workers, timeout, memory_mb, cpu_seconds, max_file_mb, isolation)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._executor: ThreadPoolExecutor | None = None
        self._launcher: ThreadPoolExecutor | None = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start every worker and wait until all are warm (raises SandboxError if one cannot start)."""
        if self._workers:
            return
        import matplotlib.font_manager  # noqa: F401 - builds the font list the workers read, once

        bwrap = check_isolation() if self.config.isolation else None
        cache_dir = matplotlib.get_cachedir()
        self._workers = [_Worker(self.config, bwrap, cache_dir) for _ in range(self.config.workers)]
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="sandbox-launcher")
        try:
            for worker in self._workers:
                self._launcher.submit(worker.start).result()
            for worker in self._workers:
                worker.await_ready()
        except BaseException:
            self.close()
            raise
        for worker in self._workers:
            self._idle.put(worker)
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="sandbox")

    def close(self) -> None:
        """Kill every worker and remove their directories."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for worker in self._workers:
            worker.stop()
        if self._launcher is not None:
            self._launcher.shutdown(wait=True)
            self._launcher = None
        self._workers = []
        self._idle = queue.Queue()

    @property
    def isolation(self) -> str:
        """``"bubblewrap"``, or without it what the workers got: ``"network namespace"`` or ``"no namespace"``."""
        return self._workers[0].isolation if self._workers else "unknown"

    @property
    def worker_pids(self) -> list[int | None]:
        return [worker.pid for worker in self._workers]

    def run(self, script_text: str, output_name: str = "diagram.png") -> SandboxResult:
        """Run one script in a fresh process and return its outcome; never raises for a failing script.

        Args:
            script_text: Python source; it sees ``sys.argv == ["script.py", output_name]``.
            output_name: relative file name the script is expected to save (PNG).
        """
        if not self._workers:
            raise SandboxError("the sandbox is not started: use `with Sandbox(...) as sandbox:`")
        if not isinstance(script_text, str):
            raise TypeError(f"script_text must be str, got {type(script_text).__name__}")
        if not output_name or os.path.isabs(output_name) or ".." in Path(output_name).parts:
            raise ValueError(f"output_name must be a relative file name, got {output_name!r}")
        worker = self._idle.get()
        try:
            if not worker.alive:
                worker.stop()
                self._launcher.submit(worker.start).result()
            result = worker.run(script_text, output_name)
            if not worker.alive:
                worker.stop()
                self._launcher.submit(worker.start).result()  # warm-up overlaps with the other workers
        finally:
            self._idle.put(worker)
        return result

    def map(self, scripts: Iterable[str], output_name: str = "diagram.png") -> Iterator[SandboxResult]:
        """Run scripts on all workers in parallel; yields results in input order."""
        if self._executor is None:
            raise SandboxError("the sandbox is not started: use `with Sandbox(...) as sandbox:`")
        pending: collections.deque[Future] = collections.deque()
        for script in scripts:
            pending.append(self._executor.submit(self.run, script, output_name))
            if len(pending) >= 2 * self.config.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
