"""Run untrusted matplotlib scripts in a pool of persistent, resource-limited worker processes.

The reference renders every LLM-written script in a fresh ``python script.py`` subprocess (about
0.7 s each, almost all interpreter start and ``import matplotlib``). Here each worker starts once,
pre-imports and warms up matplotlib, and then runs scripts one after another under limits:

- wall-clock timeout: enforced by this (parent) process, which kills the worker;
- CPU time (``RLIMIT_CPU`` soft limit, re-armed per script), address space (``RLIMIT_AS``, the warm
  worker's size plus ``memory_mb``) and file size (``RLIMIT_FSIZE``), set inside the worker;
- a fresh temporary working directory per script, a scrubbed environment (no secrets in
  ``os.environ``), a new network namespace when the kernel allows unprivileged ones;
- an audit hook (PEP 578) rejecting sockets, process creation, ctypes, writes outside the working
  directory and reads outside an allow-list (Python installation, matplotlib data, fonts).

A worker is recycled (killed and restarted) after any failure and after ``max_scripts_per_worker``
scripts. See docs/scripts.md for the threat model: what is and is not protected against.

Example::

    with Sandbox(workers=2, timeout=10) as sandbox:
        result = sandbox.run(open("triangle.py").read())
        if result.ok:
            Path("triangle.png").write_bytes(result.image_png)
"""
from __future__ import annotations

import collections
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
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("ok", "timeout", "memory", "file_size", "forbidden", "error", "no_output")
WORKER_FILE = Path(__file__).with_name("sandbox_worker.py")
MAX_HEADER_BYTES = 1 << 20
STARTUP_TIMEOUT = 60.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (a worker could not start), as opposed to a script failing."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one script.

    Attributes:
        ok: True when the script ran and produced a PNG.
        image_png: the PNG bytes (None unless ``ok``). Treat as untrusted data.
        status: one of ``STATUSES``.
        message: why it failed, or where the image came from.
        seconds: wall-clock seconds, as seen by the parent.
        worker_pid: the process that ran the script.
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
    isolate_network: bool = True
    max_scripts_per_worker: int = 500

    def __post_init__(self) -> None:
        for name in ("workers", "timeout", "memory_mb", "cpu_seconds", "max_file_mb", "max_scripts_per_worker"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.workers, int) or not isinstance(self.max_scripts_per_worker, int):
            raise ValueError(
                f"SandboxConfig.workers and max_scripts_per_worker must be integers, "
                f"got {self.workers!r} and {self.max_scripts_per_worker!r}"
            )


def _matplotlib_cache_dir() -> str:
    import matplotlib

    return matplotlib.get_cachedir()


def _worker_env(root: str, cache_dir: str) -> dict[str, str]:
    """Only what matplotlib needs: a script that dumps ``os.environ`` finds no secrets."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": root,
        "TMPDIR": root,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": cache_dir,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
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

    def __init__(self, config: SandboxConfig, cache_dir: str):
        self.config, self.cache_dir = config, cache_dir
        self.proc: subprocess.Popen | None = None
        self.isolation = "unknown"
        self.pid: int | None = None
        self.runs = 0
        self.tainted = False
        self._ready = False

    def start(self) -> None:
        """Launch the process; readiness is awaited lazily by the first ``run``."""
        self.root = tempfile.mkdtemp(prefix="mmgeolm-sandbox-")
        read_fd, write_fd = os.pipe()
        worker_config = {
            "response_fd": write_fd, "root": self.root, "cache_dir": self.cache_dir,
            "memory_mb": self.config.memory_mb, "max_file_mb": self.config.max_file_mb,
            "cpu_seconds": self.config.cpu_seconds, "isolate_network": self.config.isolate_network,
        }
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(WORKER_FILE), json.dumps(worker_config)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_fd,), env=_worker_env(self.root, self.cache_dir), cwd=self.root,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        self.response_fd, self.runs, self._ready, self.pid = read_fd, 0, False, self.proc.pid

    def _await_ready(self) -> None:
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
        png_len = header.get("png_len", 0)
        if not isinstance(png_len, int) or not 0 <= png_len <= (self.config.max_file_mb + 1) * 2**20:
            raise ValueError(f"worker announced {png_len!r} bytes of image")
        return header, _recv_exact(self.response_fd, png_len, deadline) if png_len else b""

    def run(self, script: str, output_name: str) -> SandboxResult:
        if self.proc is None:
            self.start()
        if not self._ready:
            self._await_ready()
        start = time.monotonic()
        request = json.dumps({"script": script, "output_name": output_name}).encode()
        self.runs += 1
        try:
            self.proc.stdin.write(struct.pack(">I", len(request)) + request)
            self.proc.stdin.flush()
            header, png = self._receive(start + self.config.timeout)
        except TimeoutError:
            return self._failed("timeout", f"wall-clock timeout of {self.config.timeout:g} s exceeded", start)
        except (EOFError, BrokenPipeError):
            return self._died(start)
        except (ValueError, json.JSONDecodeError) as exc:
            return self._failed("error", f"malformed worker response: {exc}", start)
        status = header.get("status")
        if status not in STATUSES:
            return self._failed("error", f"worker answered unknown status {status!r}", start)
        ok = status == "ok" and bool(png)
        self.tainted = bool(header.get("recycle"))
        return SandboxResult(ok, png if ok else None, status, str(header.get("message", "")),
                             time.monotonic() - start, self.pid)

    def _died(self, start: float) -> SandboxResult:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGXCPU:
            return self._failed("timeout", f"CPU-time limit of {self.config.cpu_seconds:g} s exceeded", start)
        if code == -signal.SIGKILL:
            return self._failed("memory", "worker killed by SIGKILL (out of memory?)", start)
        return self._failed("error", f"worker process exited unexpectedly (exit status {code})", start)

    def _failed(self, status: str, message: str, start: float) -> SandboxResult:
        pid = self.pid
        self.stop()
        return SandboxResult(False, None, status, message, time.monotonic() - start, pid)

    def stop(self) -> None:
        """Kill the process (its whole session) and remove its directory."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            if self.proc.stdin:
                self.proc.stdin.close()
            os.close(self.response_fd)
            self.proc = None
            shutil.rmtree(self.root, ignore_errors=True)
        self._ready = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Sandbox:
    """A pool of persistent sandbox workers; use as a context manager.

    Args:
        workers: number of worker processes (scripts run in parallel in ``map``).
        timeout: wall-clock seconds per script; the worker is killed past it.
        memory_mb: address space a script may add on top of the warm worker.
        cpu_seconds: CPU seconds per script (``RLIMIT_CPU``).
        max_file_mb: largest file a script may write (``RLIMIT_FSIZE``).
        isolate_network: also put workers in a new network namespace where possible.
        max_scripts_per_worker: recycle a worker after this many scripts even if all succeeded.
    """

    def __init__(self, workers: int = 2, timeout: float = 20.0, memory_mb: int = 1024,
                 cpu_seconds: float = 20.0, max_file_mb: float = 32.0, isolate_network: bool = True,
                 max_scripts_per_worker: int = 500):
        self.config = SandboxConfig(workers, timeout, memory_mb, cpu_seconds, max_file_mb,
                                    isolate_network, max_scripts_per_worker)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start every worker and wait until all are warm (raises SandboxError if one cannot start)."""
        if self._workers:
            return
        cache_dir = _matplotlib_cache_dir()
        self._workers = [_Worker(self.config, cache_dir) for _ in range(self.config.workers)]
        try:
            for worker in self._workers:
                worker.start()
            for worker in self._workers:
                worker._await_ready()
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
        self._workers = []
        self._idle = queue.Queue()

    @property
    def network_isolation(self) -> str:
        """``"namespace"`` (kernel-level, no network device) or ``"audit-hook"`` (Python-level only)."""
        return self._workers[0].isolation if self._workers else "unknown"

    @property
    def worker_pids(self) -> list[int | None]:
        return [worker.pid for worker in self._workers]

    def run(self, script_text: str, output_name: str = "diagram.png") -> SandboxResult:
        """Run one script and return its outcome; never raises for a failing script.

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
            result = worker.run(script_text, output_name)
            if (not result.ok or worker.tainted or not worker.alive
                    or worker.runs >= self.config.max_scripts_per_worker):
                worker.stop()
                worker.start()  # warm-up overlaps with the other workers' scripts
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
