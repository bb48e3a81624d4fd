"""What runs in a script's own process: the script, the rendering of its figure, the audit hook.

Loaded by ``sandbox_worker.py`` from its own folder, after the worker has isolated the process; like
the worker it never imports the project. :func:`run_script` runs the script and collects its PNG.

The audit hook (PEP 578) is a second layer that names a forbidden call. It is installed just before
the script runs and never removed, so it also covers our rendering after the script (an artist's
``draw`` is script code). It is not what keeps a script in: PEP 578 hooks are not a security
boundary (``_posixsubprocess.fork_exec`` raises no event, ``os.open(..., dir_fd=...)`` is checked
against the wrong folder, introspection reaches the hook's state), and under bubblewrap the kernel
enforces the limits whatever the hook sees. What the hook adds is a clear status: a script that
tries to open a socket, start a process or touch files outside its folder is reported
``forbidden``, naming the call, even when it catches the error.
"""
from __future__ import annotations

import io
import os
import sys
import traceback

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
    "shutil.move": 2, "os.setxattr": 1, "os.removexattr": 1, "sqlite3.connect": 1,
}
READ_EVENTS = {"os.listdir": 1, "os.scandir": 1, "os.chdir": 1, "glob.glob": 1, "os.listxattr": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
IN_MEMORY = frozenset({":memory:", "", b":memory:", b""})


class SandboxViolation(PermissionError):
    """Raised inside the script when it attempts a forbidden operation."""


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def read_roots(cache_dir: str) -> tuple[str, ...]:
    """Where a script may read: the Python installation, matplotlib's data and fonts, a few devices."""
    import site

    import matplotlib

    candidates = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        *site.getsitepackages(), *sys.path, matplotlib.get_data_path(), cache_dir,
        "/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/fontconfig", "/etc/fonts",
        "/usr/share/zoneinfo", "/dev/null", "/dev/urandom",
    ]
    return tuple(sorted({os.path.realpath(c) for c in candidates if c and os.path.exists(c)}))


class AuditPolicy:
    """The hook: denies the events above; records the first violation in ``violation``."""

    def __init__(self, roots: tuple[str, ...], workdir: str):
        self.workdir = os.path.realpath(workdir)
        self.read_roots = roots
        self.violation = ""

    def _resolve(self, path) -> str | None:
        if isinstance(path, int) or (isinstance(path, str | bytes) and path in IN_MEMORY):
            return None  # an already-open descriptor (checked when it was opened), or no file at all
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
        if event in IGNORED_EVENTS:
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


# --------------------------------------------------------------------------- running a script


def warm_up():
    """Import matplotlib and draw what diagram scripts draw, once, in the worker; returns pyplot.

    Every script's process starts as a copy of the worker, so what is loaded and cached here (fonts
    at common sizes, text layout, patch paths, the PNG writer) is not paid again per script: it
    halves the time of a typical diagram script compared with a single-line warm-up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy  # noqa: F401 - pre-imported for the scripts
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.patches import Arc, Circle, Polygon

    # Headless: pyplot.savefig's trailing draw_idle only refreshes a screen there is none of
    # (every savefig draws the figure itself), so it is skipped; it doubled the cost of a script.
    FigureCanvasBase.draw_idle = lambda self, *args, **kwargs: None
    for dpi in (72, 100):
        fig, ax = plt.subplots(figsize=(3, 3), dpi=dpi)
        ax.plot([0, 1, 2], [0, 1, 0], "k-", lw=1.5)
        ax.plot([0, 2], [0.5, 0.5], "b--", lw=1)
        ax.plot([0.5], [0.5], "ro", markersize=3)
        ax.add_patch(Circle((1, 0.3), 0.3, fill=False))
        ax.add_patch(Polygon([[0, 0], [1, 1], [2, 0]], closed=True, alpha=0.2))
        ax.add_patch(Arc((0, 0), 0.5, 0.5, theta1=0, theta2=45))
        for size in (8, 10, 12, 14, 16):
            ax.text(0.1 * size, 0.8, "ABC 60° 5 cm", fontsize=size)
        ax.annotate("D", xy=(1, 1), xytext=(1.5, 1.2), arrowprops={"arrowstyle": "->"})
        ax.text(1, 0.1, r"$\angle A = 60^\circ$", fontsize=12)
        ax.set_title("title")
        ax.set_aspect("equal")
        ax.axis("off")
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
    return plt


def _execute(source: str) -> None:
    # Kept apart so that the script's calling frame holds nothing of the sandbox.
    exec(compile(source, "script.py", "exec"), {"__name__": "__main__", "__file__": "script.py", "__builtins__": __builtins__})


def _collect_png(workdir: str, output_name: str, plt) -> tuple[bytes | None, str]:
    """The requested file, else any PNG saved in the working directory, else the current figure."""
    target = os.path.join(workdir, output_name)
    candidates = [output_name] if os.path.isfile(target) else []
    candidates += sorted(
        os.path.relpath(os.path.join(d, f), workdir)
        for d, _, files in os.walk(workdir) for f in files if f.lower().endswith(".png")
    )
    for name in candidates:
        with open(os.path.join(workdir, name), "rb") as handle:
            data = handle.read()
        if data.startswith(b"\x89PNG"):
            return data, name
    if plt.get_fignums():
        buffer = io.BytesIO()
        plt.gcf().savefig(buffer, format="png")
        return buffer.getvalue(), "<current figure>"
    return None, ""


def _classify(exc: BaseException, policy: AuditPolicy, max_file_mb: float) -> tuple[str, str]:
    if policy.violation:
        return "forbidden", policy.violation
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError: the memory limit was reached"
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG
        return "error", f"file-size limit of {max_file_mb:g} MB reached: {exc}"
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return "error", f"the script's private temporary folder is full: {exc}"
    tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "error", tail[-2000:]


def run_script(request: dict, roots: tuple[str, ...], workdir: str, max_file_mb: float, plt) -> tuple[dict, bytes]:
    """Run the script under the audit hook, then render; the answer for the worker (untrusted there)."""
    output_name = request.get("output_name", "diagram.png")
    policy = AuditPolicy(roots, workdir)
    stderr = io.StringIO()
    sys.argv, sys.stdout, sys.stderr, sys.stdin = ["script.py", output_name], io.StringIO(), stderr, io.StringIO()
    plt.show = lambda *a, **k: None
    status, message, png = "ok", "", None
    sys.addaudithook(policy)  # never removed: armed for the script and for our rendering after it
    try:
        _execute(request["script"])
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, message = "error", f"script exited with status {exc.code!r}"
    except BaseException as exc:  # noqa: BLE001 - the sandbox boundary: every failure is reported
        status, message = _classify(exc, policy, max_file_mb)
    if status == "ok" and not policy.violation:
        try:
            png, source = _collect_png(workdir, output_name, plt)
            message = f"image from {source}" if png else "the script saved no PNG and left no open figure"
            status = "ok" if png else "error"
        except BaseException as exc:  # noqa: BLE001 - drawing the script's figure runs script code too
            status, message = _classify(exc, policy, max_file_mb)
    if policy.violation:
        status, message, png = "forbidden", policy.violation, None
    if status == "error" and stderr.getvalue():
        message = f"{message}\nstderr: {stderr.getvalue()[-1000:]}"
    return {"status": status, "message": message, "png_len": len(png or b"")}, png or b""
