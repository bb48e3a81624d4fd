"""The sandbox worker: a fork server that runs every untrusted script in a fresh child process.

Started by :class:`data_recipes.external.sandbox.Sandbox` as ``python -I sandbox_worker.py CONFIG``,
inside bubblewrap (see :mod:`data_recipes.external.isolation`) unless isolation was turned off. This
file is self-contained (standard library, numpy, matplotlib) and never imports the project.

The worker (the "zygote") imports and warms up matplotlib once and never runs a script itself. For
each request it forks a child that inherits that clean, warm state; no state survives from one script
to the next. Under bubblewrap the child first enters new mount, IPC and PID namespaces and forks once
more, so that the script runs as PID 1 of its own PID namespace (every process it starts dies with
it), with a new empty ``/tmp`` as its only writable place, no capabilities, and limits on memory
(``RLIMIT_AS``), CPU time, file size and process count. The script's process also renders the
figure (our code runs after the script, in the same isolated process) and answers the worker on a
private pipe; the worker enforces the wall-clock limit, kills and reaps whatever is left (it is a
child subreaper), and forwards a checked answer to the parent.

Protocol (both ways): ``>I`` big-endian length, then that many bytes of JSON; an answer's JSON
``{"status", "message", "png_len", "cpu"}`` is followed by ``png_len`` bytes of PNG.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

STATUSES = ("ok", "timeout", "memory", "forbidden", "error")
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 36, 38
MAX_HEADER_BYTES = 1 << 16
MAX_PROCESSES = 64
EXIT_CPU_LIMIT = 128 + signal.SIGXCPU  # the script's process past its CPU time (see _set_limits)


def _load_sibling(name: str):
    # Loaded by path: this program runs with `python -I`, without the project on sys.path.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_script = _load_sibling("sandbox_script")


def _send(fd: int, header: dict, payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    view = memoryview(struct.pack(">I", len(data)) + data + payload)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            raise EOFError("parent closed the request pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Libc:
    """The few system calls the standard library lacks (Linux)."""

    def __init__(self):
        self.lib = ctypes.CDLL(None, use_errno=True)

    def call(self, name: str, *args) -> None:
        if getattr(self.lib, name)(*args) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{name}{args}: {os.strerror(errno)}")

    def drop_capabilities(self) -> None:
        """Empty bounding, effective, permitted and inheritable sets; no_new_privs (exec gains nothing)."""

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

        for cap in range(64):
            self.lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails past the kernel's last capability
        self.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        self.call("capset", ctypes.byref(Header(0x20080522, 0)), (Data * 2)())
        with open("/proc/self/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
        if int(status["CapEff"], 16) or int(status["CapPrm"], 16):
            raise OSError(f"capabilities still held after capset: {status['CapEff'].strip()}")


# --------------------------------------------------------------------------- the script's process


def _enter_private_tmp(libc: _Libc, size_bytes: int) -> None:
    """A new empty tmpfs on /tmp, in this process's own mount namespace (hides the worker's /tmp)."""
    options = f"size={size_bytes},mode=0700".encode()
    libc.call("mount", b"tmpfs", b"/tmp", b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), options)


def _set_limits(config: dict) -> None:
    cpu = max(1, math.ceil(config["cpu_seconds"]))
    # SIGXCPU at the soft limit: its default action would be ignored by a PID 1, so a handler exits
    # with a code the worker recognises; the hard limit (SIGKILL) one second later catches a script
    # that replaces the handler or runs C code that long.
    signal.signal(signal.SIGXCPU, lambda signum, frame: os._exit(EXIT_CPU_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (config["limit_as"], config["limit_as"]))
    fsize = int(config["max_file_mb"] * 2**20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if config["isolated"]:
        # Counted per user namespace (so only this sandbox's processes); not enforced for host root.
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))


def _script_process(request: dict, config: dict, answer_fd: int, workdir: str, libc: _Libc, plt) -> None:
    """Body of the process that runs one script; never returns."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(config["response_fd"])  # the worker's channel to the parent stays out of reach
        if config["isolated"]:
            _enter_private_tmp(libc, config["tmp_bytes"])
            libc.drop_capabilities()
        os.chdir(workdir)
        _set_limits(config)
    except BaseException:  # noqa: BLE001 - reported as a sandbox failure, the script never runs
        _send(answer_fd, {"status": "error", "message": f"sandbox setup failed: {traceback.format_exc()[-1500:]}"})
        os._exit(0)
    if request.get("probe"):
        _send(answer_fd, {"status": "ok", "message": "isolation ready", "png_len": 0})
        os._exit(0)
    header, png = _script.run_script(request, config["read_roots"], workdir, config["max_file_mb"], plt)
    _send(answer_fd, header, png)
    os._exit(0)


# --------------------------------------------------------------------------- the worker (fork server)


class Worker:
    """The fork server; ``serve`` runs one request in a fresh child and returns the checked answer."""

    def __init__(self, config: dict, libc: _Libc, plt):
        self.config, self.libc, self.plt = config, libc, plt
        self.max_answer = int(config["max_file_mb"] * 2**20) + MAX_HEADER_BYTES

    def _fork_script_process(self, request: dict, workdir: str) -> tuple[int | None, int]:
        """(pid of the script's process, read end of its answer pipe)."""
        answer_r, answer_w = os.pipe()
        pid_r, pid_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(answer_r)
                os.close(pid_r)
                if self.config["isolated"]:
                    self.libc.call("unshare", CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID)
                    self.libc.call("mount", None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)
                    grandchild = os.fork()  # PID 1 of the new PID namespace
                    if grandchild:
                        os.write(pid_w, struct.pack(">i", grandchild))
                        os._exit(0)  # the script's process is adopted by the worker, a subreaper
                else:
                    os.write(pid_w, struct.pack(">i", os.getpid()))
                os.close(pid_w)
                _script_process(request, self.config, answer_w, workdir, self.libc, self.plt)
            except BaseException:  # noqa: BLE001 - never let a forked child return into the server loop
                _send(answer_w, {"status": "error", "message": f"sandbox setup failed: {traceback.format_exc()[-1500:]}"})
            finally:
                os._exit(0)
        os.close(answer_w)
        os.close(pid_w)
        data = b""
        while len(data) < 4:
            chunk = os.read(pid_r, 4 - len(data))
            if not chunk:
                break
            data += chunk
        os.close(pid_r)
        if self.config["isolated"]:
            os.waitpid(child, 0)  # once reaped, its child has been re-parented to us
        return (struct.unpack(">i", data)[0] if len(data) == 4 else None), answer_r

    def _read_answer(self, fd: int, deadline: float) -> tuple[bytes, str]:
        """Bytes of one answer and how reading ended: complete, eof, timeout or oversized."""
        data, need = b"", None
        while need is None or len(data) < need:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return data, "timeout"
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return data, "eof"
            data += chunk
            if need is None and len(data) >= 4:
                (length,) = struct.unpack(">I", data[:4])
                if length > MAX_HEADER_BYTES:
                    return data, "oversized"
                if len(data) >= 4 + length:
                    header = _parse_header(data[4: 4 + length])
                    png_len = header.get("png_len", 0) if header else 0
                    if not isinstance(png_len, int) or not 0 <= png_len <= self.max_answer:
                        return data, "oversized"
                    need = 4 + length + png_len
            if len(data) > self.max_answer + MAX_HEADER_BYTES:
                return data, "oversized"
        return data, "complete"

    def _reap(self, pid: int | None, deadline: float, ended: str) -> tuple[int, float, bool]:
        """Wait for the script's process, killed if it outlives the deadline: (wait status, CPU s, killed)."""
        if pid is None:
            return 0, 0.0, False
        killed = ended in ("timeout", "oversized")
        if killed:
            _kill(pid)
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None  # readable once it has exited
        try:
            while True:
                done, wstatus, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    return wstatus, usage.ru_utime + usage.ru_stime, killed
                if time.monotonic() > deadline and not killed:
                    _kill(pid)  # it answered but does not exit (a script can patch os._exit)
                    killed = True
                if pidfd is None:
                    time.sleep(0.001)
                else:
                    select.select([pidfd], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _sweep(self) -> None:
        """Kill and reap every other process left below the worker (orphans come to us: subreaper)."""
        while True:
            children = _children()
            if not children:
                return
            for pid in children:
                _kill(pid)
            for pid in children:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def serve(self, request: dict) -> tuple[dict, bytes]:
        start = time.monotonic()
        deadline = start + float(self.config["timeout"])
        workdir = "/tmp" if self.config["isolated"] else tempfile.mkdtemp(prefix="run-", dir=self.config["root"])
        try:
            pid, answer_r = self._fork_script_process(request, workdir)
            try:
                data, ended = self._read_answer(answer_r, deadline)
            finally:
                os.close(answer_r)
            wstatus, cpu, killed = self._reap(pid, deadline + 1.0, ended)
            self._sweep()
        finally:
            if not self.config["isolated"]:
                shutil.rmtree(workdir, ignore_errors=True)
        header, png = self._verdict(data, ended, wstatus, cpu, killed)
        header.update(cpu=cpu, seconds=time.monotonic() - start, png_len=len(png))
        return header, png

    def _verdict(self, data: bytes, ended: str, wstatus: int, cpu: float, killed: bool) -> tuple[dict, bytes]:
        """What happened, from what the worker saw itself first and the child's own answer second."""
        config = self.config
        if ended == "timeout" or (killed and ended != "oversized"):
            return {"status": "timeout", "message": f"wall-clock timeout of {config['timeout']:g} s exceeded"}, b""
        if ended == "oversized":
            return {"status": "error", "message": "the answer exceeded the size limit"}, b""
        cpu_limit = {"status": "timeout", "message": f"CPU-time limit of {config['cpu_seconds']:g} s exceeded"}
        if os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == EXIT_CPU_LIMIT:
            return cpu_limit, b""
        if os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
            # rusage undercounts the time RLIMIT_CPU counts (by up to ~15 % here): half the limit tells
            # the hard CPU limit from the out-of-memory killer, the only other sender of SIGKILL.
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= 0.5 * math.ceil(config["cpu_seconds"])):
                return cpu_limit, b""
            if sig == signal.SIGKILL:
                return {"status": "memory", "message": "the script's process was killed (out of memory)"}, b""
            return {"status": "error", "message": f"the script's process crashed ({signal.Signals(sig).name})"}, b""
        header = _parse_header(data[4: 4 + struct.unpack(">I", data[:4])[0]]) if ended == "complete" else None
        if header is None:
            code = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else wstatus
            return {"status": "error", "message": f"the script's process exited (status {code}) without an answer"}, b""
        status, message = header.get("status"), header.get("message")
        if status not in STATUSES or not isinstance(message, str):
            return {"status": "error", "message": f"malformed answer from the script's process: {status!r}"}, b""
        start = 4 + struct.unpack(">I", data[:4])[0]
        png = data[start: start + header.get("png_len", 0)] if status == "ok" else b""
        return {"status": status, "message": message[:4000]}, png


def _parse_header(raw: bytes) -> dict | None:
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children() -> list[int]:
    """Our direct children (zombies included)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:  # kernel without CONFIG_PROC_CHILDREN: scan the process table
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
        return found


def _detach_network(libc: _Libc) -> str:
    """Without bubblewrap: a new user + network namespace where the kernel allows it."""
    try:
        libc.call("unshare", CLONE_NEWUSER | CLONE_NEWNET)
        return "network namespace"
    except (OSError, AttributeError):
        return "no namespace"


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    response_fd = config["response_fd"]
    libc = _Libc()
    try:
        if not config["isolated"]:
            libc.call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # bubblewrap does this otherwise
            config["network"] = _detach_network(libc)
        libc.call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)  # scripts cannot ptrace or read our memory
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write raises OSError(EFBIG) instead
        plt = _script.warm_up()
        config["read_roots"] = _script.read_roots(config["cache_dir"])
        # The memory budget is on top of what the warm worker uses (a child starts as its copy).
        config["limit_as"] = _address_space_bytes() + int(config["memory_mb"]) * 2**20
        worker = Worker(config, libc, plt)
        header, _ = worker.serve({"probe": True})
        if header["status"] != "ok":
            raise RuntimeError(header["message"])
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        _send(response_fd, {"status": "startup_error", "message": traceback.format_exc()[-3000:]})
        return 1
    _send(response_fd, {"status": "ready", "message": "bubblewrap" if config["isolated"] else config["network"]})
    while True:
        try:
            (length,) = struct.unpack(">I", _read_exact(0, 4))
            request = json.loads(_read_exact(0, length))
        except EOFError:
            return 0
        header, png = worker.serve(request)
        _send(response_fd, header, png)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
