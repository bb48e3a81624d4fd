"""Kernel isolation of the sandbox workers with bubblewrap (``bwrap``, the tool Flatpak uses).

Every worker of :class:`data_recipes.external.sandbox.Sandbox` runs inside ``bwrap`` with new user,
mount, PID, IPC, UTS, cgroup and network namespaces. Its file system is a read-only view of what a
worker needs, nothing else:

- ``/usr`` (system libraries, fonts) and the ``/bin``, ``/lib*``, ``/sbin`` links to it;
- the Python installation: ``sys.prefix`` and ``sys.base_prefix`` (a virtual environment and the
  interpreter it was made from), the site-packages holding numpy, matplotlib and Pillow;
- ``/etc/fonts`` and ``/etc/ld.so.cache``; matplotlib's font list (one file);
- the worker program itself (``sandbox_worker.py`` and ``sandbox_script.py``, in ``/sandbox``);
- a fresh ``/proc`` of the new PID namespace, a minimal read-only ``/dev``, and a small private
  ``/tmp`` (the worker then mounts a new one for every script).

No home directory, no host ``/tmp``, no ``/etc/shadow``, no host sockets (not even ``AF_UNIX``
ones: their paths do not exist inside), no network device but loopback. ``--die-with-parent``
kills the worker and, with the PID namespace, every process in it when the process that started it
dies, even by ``kill -9``. The worker keeps ``CAP_SYS_ADMIN`` and ``CAP_SETPCAP`` inside its own user
namespace only (``--disable-userns`` forbids nesting another one): it needs them to give each script
private mount, PID and IPC namespaces, and the script's process drops them (bounding set included)
before any script code runs. See docs/scripts.md.
"""
from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from mmgeolm_core.errors import InputError

SANDBOX_DIR = "/sandbox"
MPLCONFIG_DIR = "/tmp/mplconfig"
WORKER_TMP_BYTES = 16 << 20
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`, "
    "Arch: `pacman -S bubblewrap`; `make venv` does it when run as root)"
)


class IsolationUnavailable(InputError):
    """bubblewrap is missing or cannot create its namespaces here; the message says why and what to do."""


def find_bubblewrap() -> str | None:
    """The ``bwrap`` executable on PATH, or None."""
    return shutil.which("bwrap")


def _prefixes() -> list[str]:
    """Directories of the Python installation a worker imports from (interpreter, stdlib, packages)."""
    import matplotlib
    import numpy
    import PIL

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()}
    paths |= {str(Path(m.__file__).parent.parent) for m in (matplotlib, numpy, PIL)}
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    existing = sorted({os.path.abspath(p) for p in paths if p and os.path.isdir(p)})
    under_tmp = [p for p in existing if p == "/tmp" or p.startswith("/tmp/")]
    if under_tmp:
        raise IsolationUnavailable(
            f"the Python installation is under /tmp ({under_tmp[0]}), which the sandbox replaces by each "
            f"script's private /tmp: create the environment elsewhere, or pass --no-isolation"
        )
    # Keep the outermost: binding a folder already inside a bound one is redundant.
    return [p for p in existing if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in existing)]


def _root_links() -> list[str]:
    """``/bin``, ``/lib``, ``/lib64``, ``/sbin``: a symbolic link on merged-/usr systems, else a folder."""
    args = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _font_lists(cache_dir: str) -> list[str]:
    """matplotlib's font list files in its cache folder, bound into a writable config folder."""
    args = []
    for path in sorted(Path(cache_dir).glob("fontlist-*.json")):
        args += ["--ro-bind", str(path), f"{MPLCONFIG_DIR}/{path.name}"]
    return args


def bubblewrap_args(bwrap: str, program_files: list[str], cache_dir: str) -> list[str]:
    """The ``bwrap`` command line (up to ``--``) for one worker; ``program_files`` appear in /sandbox."""
    args = [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", "0", "--gid", "0",
        "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP",
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr", *_root_links(),
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/fonts", "/etc/fonts",
    ]
    for prefix in _prefixes():
        if prefix != "/usr" and not prefix.startswith("/usr/"):
            args += ["--ro-bind", prefix, prefix]
    args += [
        *[arg for path in program_files for arg in ("--ro-bind", path, f"{SANDBOX_DIR}/{Path(path).name}")],
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(WORKER_TMP_BYTES), "--tmpfs", "/tmp", "--dir", MPLCONFIG_DIR, *_font_lists(cache_dir),
        "--remount-ro", "/", "--chdir", "/tmp",
    ]
    return args


@functools.lru_cache(maxsize=1)
def _probe(bwrap: str) -> str:
    """Empty when ``bwrap`` can build a worker's sandbox here, else bwrap's complaint."""
    import matplotlib

    command = bubblewrap_args(bwrap, [__file__], matplotlib.get_cachedir())
    command += ["--", sys.executable, "-I", "-S", "-c", f"import os; os.stat('{SANDBOX_DIR}/{Path(__file__).name}')"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


def check_isolation() -> str:
    """The path of a working ``bwrap``; raises IsolationUnavailable saying why not and what to do."""
    bwrap = find_bubblewrap()
    if bwrap is None:
        raise IsolationUnavailable(
            f"bubblewrap (bwrap) is not installed, so untrusted scripts cannot be isolated by the kernel: "
            f"{INSTALL_HINT}, or pass --no-isolation to run them with process limits only (unsafe for hostile input)"
        )
    error = _probe(bwrap)
    if error:
        raise IsolationUnavailable(
            f"{bwrap} cannot create the sandbox's namespaces here: {error}. Unprivileged user namespaces may be "
            f"disabled (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu 24.04+ "
            f"kernel.apparmor_restrict_unprivileged_userns=0) or blocked by a container's seccomp profile; "
            f"fix that, or pass --no-isolation to run scripts with process limits only (unsafe for hostile input)"
        )
    return bwrap


def isolation_available() -> bool:
    """Whether :func:`check_isolation` succeeds (tests use it to skip with a visible reason)."""
    try:
        check_isolation()
    except IsolationUnavailable:
        return False
    return True
