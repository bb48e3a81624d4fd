"""The sandbox worker process: runs untrusted matplotlib scripts one after another.

Started by :class:`data_recipes.external.sandbox.Sandbox` as ``python -I sandbox_worker.py CONFIG_JSON``; this
file is self-contained (standard library, numpy and matplotlib only) so that it never imports the
project. Life of a worker:

1. detach from the network (a new user + network namespace, when the kernel allows it), set the
   hard address-space and file-size limits, pre-import and warm up matplotlib;
2. install an audit hook (PEP 578) that, while a script runs, rejects network, process creation,
   ctypes, writes outside the script's temporary directory and reads outside an allow-list;
3. loop: read a request (4-byte length + JSON) on stdin, run the script in a fresh temporary
   directory with a per-script CPU limit, answer on the private response pipe with a JSON header
   followed by the PNG bytes.

Protocol (both directions): ``>I`` big-endian length, then that many bytes. Worker -> parent: a JSON
header ``{"status", "message", "seconds", "png_len", "pid", "cpu"}`` followed by ``png_len`` bytes.
"""
from __future__ import annotations

import _thread
import ctypes
import io
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

# Audit events a script may never raise: exact names, and prefixes (ending with ".").
FORBIDDEN_EXACT = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
    "os.startfile", "os.kill", "os.killpg", "os.symlink", "os.link", "resource.setrlimit",
    "resource.prlimit", "gc.get_referrers", "gc.get_referents", "gc.get_objects", "webbrowser.open",
    "urllib.Request", "sys.addaudithook", "os.register_at_fork",
})
FORBIDDEN_PREFIXES = (
    "socket.", "ctypes.", "pty.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "telnetlib.", "http.client.",
)
# Frequent harmless events, answered first (matplotlib raises thousands of builtins.id per figure).
IGNORED_EVENTS = frozenset({"builtins.id", "object.__getattr__", "compile", "exec", "import", "sys._getframe"})
# Events whose first argument(s) are paths being written / changed.
WRITE_EVENTS = {
    "os.remove": 1, "os.rename": 2, "os.replace": 2, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1,
    "os.chown": 1, "os.truncate": 1, "os.utime": 1, "os.chflags": 1, "os.lchmod": 1, "os.lchown": 1,
    "os.mkfifo": 1, "os.mknod": 1, "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.copytree": 2,
    "shutil.move": 2, "os.setxattr": 1, "os.removexattr": 1,
}
READ_EVENTS = {"os.listdir": 1, "os.scandir": 1, "os.chdir": 1, "glob.glob": 1, "os.listxattr": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """Raised inside the script when it attempts a forbidden operation."""


def _send(fd: int, header: dict, payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    message = struct.pack(">I", len(data)) + data + payload
    view = memoryview(message)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            raise EOFError("parent closed the request pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _detach_network() -> str:
    """New user + network namespace: no interface but a down loopback. Must run single-threaded."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            return "namespace"
    except (OSError, AttributeError):
        pass
    return "audit-hook"


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


class _Policy:
    """What a running script may touch. Lives only in the closure of the audit hook."""

    def __init__(self, read_roots: tuple[str, ...]):
        self.read_roots = read_roots
        self.armed = False
        self.workdir = ""
        self.violation = ""

    def _resolve(self, path) -> str | None:
        if isinstance(path, int):
            return None  # an already-open descriptor: checked when it was opened
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            path = os.fspath(path)
        return os.path.realpath(os.path.abspath(path))

    def _deny(self, event: str, detail: str) -> None:
        message = f"{event} {detail}".strip()
        if not self.violation:
            self.violation = message
        raise SandboxViolation(f"sandbox: {message} is not allowed")

    def _check_write(self, event: str, path) -> None:
        resolved = self._resolve(path)
        if resolved is not None and not _under(resolved, (self.workdir,)):
            self._deny(event, f"(write to {resolved!r} outside the working directory)")

    def _check_read(self, event: str, path) -> None:
        resolved = self._resolve(path)
        if resolved is not None and not _under(resolved, (self.workdir, *self.read_roots)):
            self._deny(event, f"(read of {resolved!r} outside the allow-list)")

    def __call__(self, event: str, args: tuple) -> None:
        if not self.armed or event in IGNORED_EVENTS:
            return
        if event in FORBIDDEN_EXACT or event.startswith(FORBIDDEN_PREFIXES):
            self._deny(event, "")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            (self._check_write if writing else self._check_read)(event, path)
        elif event in WRITE_EVENTS:
            for path in args[: WRITE_EVENTS[event]]:
                self._check_write(event, path)
        elif event in READ_EVENTS and args:
            self._check_read(event, args[0])


def _read_roots(cache_dir: str) -> tuple[str, ...]:
    import site

    import matplotlib

    candidates = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        *site.getsitepackages(), *sys.path, matplotlib.get_data_path(), cache_dir,
        "/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/fontconfig", "/etc/fonts",
        "/usr/share/zoneinfo", "/dev/null", "/dev/urandom",
    ]
    return tuple(sorted({os.path.realpath(c) for c in candidates if c and os.path.exists(c)}))


def _address_space_bytes() -> int:
    """Current virtual size (Linux /proc); elsewhere a 1 GiB guess (RLIMIT_AS is Linux-only anyway)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * resource.getpagesize()
    except OSError:
        return 1 << 30


def _collect_png(workdir: str, output_name: str, plt) -> tuple[bytes | None, str]:
    """The requested file, else any PNG saved in the working directory, else the current figure."""
    target = os.path.join(workdir, output_name)
    if os.path.isfile(target):
        with open(target, "rb") as handle:
            data = handle.read()
        if data.startswith(b"\x89PNG"):
            return data, output_name
    pngs = sorted(
        os.path.relpath(os.path.join(d, f), workdir)
        for d, _, files in os.walk(workdir) for f in files if f.lower().endswith(".png")
    )
    for name in pngs:
        with open(os.path.join(workdir, name), "rb") as handle:
            data = handle.read()
        if data.startswith(b"\x89PNG"):
            return data, name
    if plt.get_fignums():
        buffer = io.BytesIO()
        plt.gcf().savefig(buffer, format="png")
        return buffer.getvalue(), "<current figure>"
    return None, ""


def _classify(exc: BaseException, policy: _Policy) -> tuple[str, str]:
    if policy.violation:
        return "forbidden", policy.violation
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError: the address-space limit was reached"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG
        return "file_size", f"file-size limit reached: {exc}"
    tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "error", tail[-2000:]


def _run_one(request: dict, policy: _Policy, root: str, cpu_seconds: float, plt, matplotlib, rc) -> tuple[dict, bytes]:
    start = time.perf_counter()
    threads_before = _thread._count()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="run-", dir=root))
    output_name = request.get("output_name", "diagram.png")
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_now = used.ru_utime + used.ru_stime
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(cpu_now + cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdout, sys.stderr, sys.stdin
    sys.argv, sys.stdout, sys.stderr, sys.stdin = ["script.py", output_name], stdout, stderr, io.StringIO()
    os.chdir(workdir)
    plt.close("all")
    matplotlib.rcParams.update(rc)
    plt.show = lambda *a, **k: None
    status, message, png = "ok", "", None
    policy.workdir, policy.violation, policy.armed = workdir, "", True
    try:
        code = compile(request["script"], "script.py", "exec")
        exec(code, {"__name__": "__main__", "__file__": "script.py", "__builtins__": __builtins__})
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, message = "error", f"script exited with status {exc.code!r}"
    except BaseException as exc:  # noqa: BLE001 - the sandbox boundary: every failure is reported
        status, message = _classify(exc, policy)
    finally:
        policy.armed = False
        sys.argv, sys.stdout, sys.stderr, sys.stdin = saved
    if policy.violation:
        status, message = "forbidden", policy.violation
    if status == "ok":
        try:
            png, source = _collect_png(workdir, output_name, plt)
            if png is None:
                status, message = "no_output", "the script saved no PNG and left no open figure"
            else:
                message = f"image from {source}"
        except BaseException as exc:  # noqa: BLE001 - rendering the script's figure is script code too
            status, message = _classify(exc, policy)
    if status == "error" and stderr.getvalue():
        message = f"{message}\nstderr: {stderr.getvalue()[-1000:]}"
    os.chdir(root)
    plt.close("all")
    shutil.rmtree(workdir, ignore_errors=True)
    used = resource.getrusage(resource.RUSAGE_SELF)
    # Threads have no audit event before Python 3.13: one the script left running taints the worker.
    leftover_threads = _thread._count() > threads_before
    header = {
        "status": status, "message": message, "seconds": time.perf_counter() - start,
        "png_len": len(png) if png is not None else 0, "pid": os.getpid(),
        "cpu": used.ru_utime + used.ru_stime, "recycle": leftover_threads,
    }
    return header, png or b""


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    response_fd, root = config["response_fd"], config["root"]
    isolation = _detach_network() if config.get("isolate_network", True) else "none"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write raises OSError(EFBIG) instead
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy  # noqa: F401 - pre-imported for the scripts
        from matplotlib.backend_bases import FigureCanvasBase

        # Headless: pyplot.savefig's trailing draw_idle only refreshes a screen there is none of
        # (every savefig draws the figure itself), so it is skipped; it doubled the cost of a script.
        FigureCanvasBase.draw_idle = lambda self, *args, **kwargs: None

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], "k--")
        ax.text(0.5, 0.5, "A 60° 5 cm")
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
        rc = dict(matplotlib.rcParams)
        policy = _Policy(_read_roots(config["cache_dir"]))
        # Limits are set once the warm-up is done: the budget is on top of what the warm worker uses.
        vm_bytes = _address_space_bytes()
        limit_as = vm_bytes + int(config["memory_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
        fsize = int(config["max_file_mb"] * 2**20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        sys.addaudithook(policy)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        _send(response_fd, {"status": "startup_error", "message": traceback.format_exc(), "pid": os.getpid()})
        return 1
    os.chdir(root)
    _send(response_fd, {"status": "ready", "message": isolation, "pid": os.getpid(), "png_len": 0})
    while True:
        try:
            (length,) = struct.unpack(">I", _read_exact(0, 4))
            request = json.loads(_read_exact(0, length))
        except EOFError:
            return 0
        header, payload = _run_one(request, policy, root, float(config["cpu_seconds"]), plt, matplotlib, rc)
        _send(response_fd, header, payload)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
