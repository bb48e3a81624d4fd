"""Hostile scripts against the kernel sandbox: none can read, write, connect or outlive its run.

Each case was reproduced as an escape (status ``ok``) against the audit-hook sandbox these tests
replaced. Every test checks the effect on the host, not the status alone: the file outside does not
exist, no secret is in the answer, no connection arrived, no process is left. Several scripts start
a fresh Python through ``_posixsubprocess.fork_exec``, which raises no audit event, so that the
audit hook (the second layer) cannot be what stops them: the kernel must.
"""
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sandbox_fixtures import alive, descendants, kill_all, requires_bubblewrap, with_marker

from data_recipes.external.sandbox import Sandbox

pytestmark = requires_bubblewrap

GOOD = """
import sys
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
ax.plot([0, 1], [0, 1], "k-")
ax.text(0.2, 0.7, "AB = 4")
ax.axis("off")
plt.savefig(sys.argv[1])
"""


def _fork_exec_template() -> list:
    """The positional arguments this Python's subprocess passes to ``_posixsubprocess.fork_exec``."""
    import _posixsubprocess

    captured = []

    def spy(*args):
        captured.extend(args)
        raise OSError("captured")

    saved = getattr(subprocess, "_fork_exec", None), _posixsubprocess.fork_exec
    subprocess._fork_exec = _posixsubprocess.fork_exec = spy
    try:
        subprocess.Popen(["/bin/true"])
    except OSError:
        pass
    finally:
        if saved[0] is not None:
            subprocess._fork_exec = saved[0]
        _posixsubprocess.fork_exec = saved[1]
    return captured


FORK_EXEC_ARGS = _fork_exec_template()


def spawn(argv: list[str], setsid: bool = False, wait: bool = False, indent: str = "") -> str:
    """Source that starts ``argv`` with no audit event (errpipe and setsid at their CPython positions)."""
    lines = [
        "import os, _posixsubprocess",
        "r, w = os.pipe()",
        f"args = {FORK_EXEC_ARGS!r}",
        f"args[0] = {[a.encode() for a in argv]!r}",
        f"args[1] = ({argv[0].encode()!r},)",
        "args[3], args[12], args[13], args[15] = (w,), r, w, " + repr(setsid),
        "pid = _posixsubprocess.fork_exec(*args)",
    ]
    if wait:
        lines.append("os.waitpid(pid, 0)")
    return "\n".join(indent + line for line in lines) + "\n"


def unhooked_python(code: str) -> str:
    """Source that runs ``code`` in a fresh interpreter without the sandbox's audit hook, and waits."""
    return spawn([sys.executable, "-c", code], wait=True)


def in_draw(body: str) -> str:
    """Source of a figure with an artist whose draw() runs ``body`` during the sandbox's own savefig."""
    indented = "".join(f"        {line}\n" for line in body.splitlines())
    return (
        "import matplotlib.pyplot as plt\nfrom matplotlib.artist import Artist\n"
        "class Sneaky(Artist):\n    def draw(self, renderer):\n" + indented +
        "fig = plt.figure(figsize=(1, 1), dpi=20)\nfig.add_artist(Sneaky())\n"
    )


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=1, timeout=10, memory_mb=300, cpu_seconds=5) as sandbox:
        yield sandbox


@pytest.fixture()
def host(box):
    """A host folder the scripts aim at, and the check that the worker's process tree is back to normal."""
    folder = Path(tempfile.mkdtemp(prefix="escape-", dir="/tmp"))
    before = descendants(box.worker_pids[0])
    yield folder
    left = {pid: start for pid, start in descendants(box.worker_pids[0]).items() if pid not in before}
    kill_all(left)
    assert not alive(left), f"processes left below the worker: {sorted(left)}"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


def test_write_through_dir_fd(box, host):
    target = host / "escaped.txt"
    script = (
        "import os, sys\nfd = os.open(sys.prefix, os.O_RDONLY)\n"
        "os.makedirs('a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p'); os.chdir('a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p')\n"
        f"out = os.open('../' * 16 + {str(target)[1:]!r}, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)\n"
        "os.write(out, b'escaped')\n" + GOOD
    )
    result = box.run(script)
    assert not target.exists()
    assert not result.ok


@pytest.mark.parametrize("what", ["canary", "shadow"])
def test_read_through_dir_fd_brings_no_secret_back(box, host, what):
    if what == "canary":
        path, secret = host / "canary.txt", secrets.token_hex(16)
        path.write_text(secret)
    else:
        path = Path("/etc/shadow")
        try:
            secret = path.read_text().splitlines()[0]
        except (OSError, IndexError):
            pytest.skip("/etc/shadow is not readable by this user")
    script = (
        "import os, sys\nstart = os.getcwd()\nfd = os.open(sys.prefix, os.O_RDONLY)\n"
        "os.makedirs('a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p'); os.chdir('a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p')\n"
        f"secret = os.read(os.open('../' * 16 + {str(path)[1:]!r}, os.O_RDONLY, dir_fd=fd), 4096).decode()\n"
        + GOOD.replace("plt.savefig(sys.argv[1])",
                       "plt.savefig(os.path.join(start, sys.argv[1]), metadata={'Description': secret})")
    )
    result = box.run(script)
    assert secret.encode() not in (result.image_png or b"") and secret not in result.message
    assert not result.ok


def test_sqlite_writes_nothing_outside(box, host):
    target = host / "escaped.db"
    result = box.run(f"import sqlite3\ndb = sqlite3.connect({str(target)!r})\ndb.execute('create table t(x)')\n"
                     "db.commit()\n" + GOOD)
    assert not target.exists()
    assert not result.ok


def test_unhooked_interpreter_writes_nothing_outside(box, host):
    target = host / "escaped.txt"
    result = box.run(unhooked_python(f"open({str(target)!r}, 'w').write('escaped')") + GOOD)
    assert not target.exists()
    assert result.worker_pid == box.worker_pids[0]


def test_thread_running_after_the_script_writes_nothing(box, host):
    target = host / "escaped.txt"
    thread = (
        "import sys, threading, time\nmain = threading.main_thread().ident\n"
        "def in_script():\n    frame = sys._current_frames().get(main)\n"
        "    while frame is not None:\n        if frame.f_code.co_filename == 'script.py':\n            return True\n"
        "        frame = frame.f_back\n    return False\n"
        "def later():\n    while in_script():\n        time.sleep(0.0005)\n"
        "    for _ in range(3000):\n        try:\n"
        f"            open({str(target)!r}, 'w').write('escaped'); return\n"
        "        except OSError:\n            time.sleep(0.001)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
    )
    box.run(thread + GOOD)
    time.sleep(0.5)  # the thread, had it survived, retries for 3 s
    assert not target.exists()


def test_artist_drawn_during_our_savefig_writes_nothing(box, host):
    target = host / "escaped.txt"
    result = box.run(in_draw(f"open({str(target)!r}, 'w').write('escaped')"))
    assert not target.exists()
    assert not result.ok


def test_fork_exec_process_does_not_outlive_the_run(box, host):
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}"
    box.run(spawn(["/usr/bin/sleep", marker]) + GOOD)
    left = with_marker(marker)
    kill_all(left)
    assert left == []


def test_fork_inside_draw_does_not_outlive_the_run(box, host):
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}"
    box.run(in_draw(f"import os\nif os.fork() == 0:\n    os.execv('/usr/bin/sleep', ['sleep', {marker!r}])"))
    left = with_marker(marker)
    kill_all(left)
    assert left == []


def test_new_session_does_not_outlive_the_run_or_the_pool():
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}"
    with Sandbox(workers=1, timeout=10) as sandbox:
        sandbox.run(in_draw(spawn(["/usr/bin/sleep", marker], setsid=True)))
        after_run = with_marker(marker)
    after_close = with_marker(marker)
    kill_all(after_run + after_close)
    assert after_run == [] and after_close == []


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_no_connection_to_a_host_socket(box, host, family):
    if family == "unix":
        listener, address = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), str(host / "host.sock")
        listener.bind(address)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        address = listener.getsockname()
    listener.listen(8)
    listener.setblocking(False)
    connect = (f"import socket\ns = socket.socket(socket.AF_{'UNIX' if family == 'unix' else 'INET'})\n"
               f"s.connect({address!r})\ns.sendall(b'escaped')\n")
    try:
        box.run(unhooked_python(connect) + GOOD)
        box.run(in_draw(connect))
        box.run(connect)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_what_a_script_process_sees(box, host):
    """Checked by an interpreter without the audit hook, so that only the kernel answers."""
    (host / "canary.txt").write_text("host file")
    checks = f"""
import errno, os, sys
status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
problems = [key for key in ('CapEff', 'CapPrm', 'CapBnd', 'CapAmb') if int(status[key], 16)]
problems += [] if status['NoNewPrivs'].strip() == '1' else ['NoNewPrivs']
problems += [p for p in ('/etc/shadow', '/etc/passwd', '/home', {str(host)!r}, '/root/.ssh', '/var', '/run')
             if os.path.exists(p)]
for path in ('/x', '/usr/x', '/dev/x', '/dev/shm/x', '/proc/x', sys.prefix + '/x'):
    try:
        open(path, 'w')
        problems.append('wrote ' + path)
    except OSError:
        pass
open('/tmp/mine', 'w').write('ok')
open('/tmp/problems', 'w').write('unfinished')
problems += [] if os.getppid() == 1 else ['not inside its own PID namespace']
problems += [] if sorted(os.listdir('/tmp')) == ['mine', 'problems'] else ['/tmp not private: ' + str(os.listdir('/tmp'))]
import ctypes
if ctypes.CDLL(None).unshare(0x10000000) == 0:  # CLONE_NEWUSER (last: it would change what we may see)
    problems.append('created a user namespace')
open('/tmp/problems', 'w').write(', '.join(problems))
"""
    script = (spawn([sys.executable, "-c", checks]) +
              "os.waitpid(pid, 0)\nassert os.getpid() == 1, 'not PID 1 of its own namespace'\n"
              "problems = open('/tmp/problems').read()\nassert not problems, problems\n" + GOOD)
    result = box.run(script)
    assert result.ok, result


def test_patched_savefig_does_not_reach_the_next_script(box):
    def pixels(result):
        assert result.ok, result
        return np.asarray(Image.open(io.BytesIO(result.image_png)).convert("RGB"))

    solo = pixels(box.run(GOOD))
    patcher = (
        "import builtins, matplotlib.figure, matplotlib.pyplot as plt\nbuiltins.LEFTOVER = 1\n"
        "original = matplotlib.figure.Figure.savefig\n"
        "def stamped(self, *args, **kwargs):\n"
        "    self.patches.append(plt.Rectangle((0, 0), 0.5, 0.5, color='red', transform=self.transFigure, figure=self))\n"
        "    return original(self, *args, **kwargs)\n"
        "matplotlib.figure.Figure.savefig = stamped\nplt.rcParams['lines.linewidth'] = 9\n"
        "open('/tmp/leftover.txt', 'w').write('x')\n" + GOOD
    )
    stamped = pixels(box.run(patcher))
    assert not np.array_equal(stamped, solo)  # the patch works within its own script
    assert np.array_equal(pixels(box.run(GOOD)), solo)
    assert box.run("import builtins, matplotlib\nassert not hasattr(builtins, 'LEFTOVER')\n"
                   "assert matplotlib.rcParams['lines.linewidth'] != 9\n"
                   "import os\nassert not os.path.exists('/tmp/leftover.txt')\n" + GOOD).ok


@pytest.mark.parametrize("action", ["write", "read"])
def test_documented_hook_switch_off_changes_nothing(box, host, action):
    off = "import sys\ntry:\n    sys._getframe(1).f_locals['policy'].armed = False\nexcept Exception:\n    pass\n"
    target, canary, secret = host / "escaped.txt", host / "canary.txt", secrets.token_hex(16)
    canary.write_text(secret)
    if action == "write":
        result = box.run(off + f"open({str(target)!r}, 'w').write('escaped')\n" + GOOD)
    else:
        result = box.run(off + f"secret = open({str(canary)!r}).read()\n" +
                         GOOD.replace("plt.savefig(sys.argv[1])", "plt.savefig(sys.argv[1], metadata={'Description': secret})"))
    assert not target.exists()
    assert secret.encode() not in (result.image_png or b"") and secret not in result.message
    assert not result.ok


def test_kill_9_of_perturb_batch_leaves_no_worker(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hang.py").write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    batch = subprocess.Popen(
        [sys.executable, "-m", "data_recipes.cli", "perturb-batch", "--scripts-dir", str(scripts), "--num", "1",
         "--out", str(tmp_path / "out"), "--workers", "1", "--timeout", "300", "--cpu-seconds", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the script runs: a process below ignores SIGTERM
            tree = descendants(batch.pid)
            if any(_ignores_sigterm(pid) for pid in tree):
                break
            assert batch.poll() is None, "perturb-batch ended before the script ran"
            time.sleep(0.1)
        else:
            pytest.fail("the hanging script never started")
        os.kill(batch.pid, signal.SIGKILL)
        batch.wait()
        deadline = time.monotonic() + 20
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(tree)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
    kill_all(left)
    assert not left, f"worker processes alive after kill -9 of perturb-batch: {sorted(left)}"


def _ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(status.split("SigIgn:")[1].split()[0], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))
