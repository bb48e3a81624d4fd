"""The script sandbox: limits, statuses, PNG checks, and the next script always starts clean.

These run with bubblewrap where it works and with the process-level sandbox elsewhere (what they
check holds for both); the kernel-isolation escapes are in test_sandbox_escapes.py.
"""
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sandbox_fixtures import ISOLATION

from data_recipes.external import isolation
from data_recipes.external.sandbox import STATUSES, Sandbox, SandboxConfig, check_png

GOOD = """
import sys
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=({w}, 2), dpi=40)
ax.plot([0, 1], [0, 1], "k-")
ax.axis("off")
plt.savefig(sys.argv[1])
"""


def good(width: float = 2) -> str:
    return GOOD.format(w=width)


def png_shape(data: bytes) -> tuple[int, ...]:
    return np.asarray(Image.open(io.BytesIO(data))).shape


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=1, timeout=4, memory_mb=200, cpu_seconds=1.5, max_file_mb=4, isolation=ISOLATION) as box:
        yield box


def test_good_script_returns_png_and_worker_is_reused(sandbox):
    first, second = sandbox.run(good()), sandbox.run(good(3))
    assert first.ok and second.ok and first.status == "ok"
    assert png_shape(first.image_png)[:2] == (80, 80) and png_shape(second.image_png)[:2] == (80, 120)
    assert first.worker_pid == second.worker_pid  # no interpreter start per script
    assert sandbox.isolation == ("bubblewrap" if ISOLATION else sandbox.isolation)


ESCAPES = {
    "wall_clock_hang": ("import time\ntime.sleep(60)", "timeout"),
    "cpu_hang": ("while True:\n    pass", "timeout"),
    "huge_bytearray": ("x = bytearray(10**10)", "memory"),
    "growing_list": ("x = []\nwhile True:\n    x.append(' ' * 10**6)", "memory"),
    "fork": ("import os\nos.fork()", "forbidden"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])", "forbidden"),
    "os_system": ("import os\nos.system('true')", "forbidden"),
    "os_exec": ("import os\nos.execv('/bin/true', ['true'])", "forbidden"),
    "read_shadow": ("print(open('/etc/shadow').read())", "forbidden"),
    "socket_connect": ("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))", "forbidden"),
    "swallowed_violation": (
        "import socket\ntry:\n    socket.socket()\nexcept Exception:\n    pass\n"
        "import matplotlib.pyplot as plt\nplt.plot([0, 1])",
        "forbidden",
    ),
    "huge_file": ("with open('big.bin', 'wb') as f:\n    f.write(b'x' * (64 * 2**20))", "error"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).getpid()", "forbidden"),
    "segfault": ("import faulthandler\nfaulthandler._read_null()", "error"),
    "exit_without_answer": ("import os\nos._exit(0)", "error"),
    "no_output": ("x = 1", "error"),
}
MESSAGES = {"huge_file": "file-size limit", "segfault": "crashed (SIGSEGV)", "exit_without_answer": "without an answer",
            "no_output": "saved no PNG", "read_shadow": "/etc/shadow"}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_failure_is_stopped_reported_and_next_script_runs(sandbox, name):
    script, expected = ESCAPES[name]
    before = sandbox.run(good())
    result = sandbox.run(script)
    assert result.status == expected, result
    assert not result.ok and result.image_png is None and result.message
    assert MESSAGES.get(name, "") in result.message
    after = sandbox.run(good())
    assert after.ok, after
    if expected != "timeout":  # a fresh process per script: the worker itself lives on
        assert after.worker_pid == before.worker_pid


def test_cpu_limit_is_told_from_the_wall_clock():
    with Sandbox(workers=1, timeout=60, cpu_seconds=1, isolation=ISOLATION) as box:
        result = box.run("while True:\n    pass")
        assert result.status == "timeout" and "CPU-time limit of 1 s" in result.message
        assert box.run(good()).ok


def test_leftover_thread_does_not_reach_the_next_script(sandbox):
    script = ("import threading, time\nimport matplotlib.pyplot as plt\n"
              "def stamp():\n    while True:\n        plt.rcParams['lines.linewidth'] = 20\n        time.sleep(0.001)\n"
              "threading.Thread(target=stamp, daemon=True).start()\n" + good())
    assert sandbox.run(script).ok
    solo = sandbox.run(good())
    assert sandbox.run("import matplotlib\nassert matplotlib.rcParams['lines.linewidth'] != 20\n" + good()).ok
    assert solo.ok


def test_read_of_home_ssh_is_forbidden(sandbox):
    key = Path(os.path.expanduser("~")) / ".ssh" / "id_rsa"
    result = sandbox.run(f"open({str(key)!r}).read()")
    assert result.status == "forbidden" and ".ssh" in result.message


def test_write_outside_working_dir_is_forbidden_and_not_written(sandbox, tmp_path):
    # A host path outside /tmp: the audit hook names it (forbidden); the kernel would not find it anyway.
    target = Path.home() / f"mmgeolm-sandbox-{os.getpid()}.txt"
    result = sandbox.run(f"open({str(target)!r}, 'w').write('escaped')")
    assert result.status == "forbidden" and str(target) in result.message
    assert not target.exists()
    for call in (f"import os\nos.remove({str(Path.home())!r})", f"import os\nos.rename('a', {str(target)!r})"):
        assert sandbox.run(call).status == "forbidden"
    # Under bubblewrap /tmp is the script's own: the host's tmp_path is simply not there.
    result = sandbox.run(f"open({str(tmp_path / 'outside.txt')!r}, 'w').write('escaped')")
    assert result.status in ("forbidden", "error") and not (tmp_path / "outside.txt").exists()


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("MMGEOLM_TEST_SECRET", "hunter2")
    with Sandbox(workers=1, timeout=10, isolation=ISOLATION) as box:
        result = box.run("import os\nassert 'MMGEOLM_TEST_SECRET' not in os.environ\n" + good())
    assert result.ok, result


def test_writes_inside_working_dir_and_other_names_are_captured(sandbox):
    other_name = good().replace("sys.argv[1]", "'figure_out.png'")
    result = sandbox.run("open('notes.txt', 'w').write('fine')\n" + other_name)
    assert result.ok and "figure_out.png" in result.message


def test_show_only_script_is_captured_from_current_figure(sandbox):
    result = sandbox.run("import matplotlib.pyplot as plt\nplt.figure(figsize=(1, 1), dpi=50)\nplt.plot([0, 1])\nplt.show()")
    assert result.ok and png_shape(result.image_png)[:2] == (50, 50)


@pytest.mark.parametrize("script", ["1 / 0", "def f(:", "import sys\nsys.exit(3)"])
def test_plain_failures_are_reported(sandbox, script):
    result = sandbox.run(script)
    assert result.status == "error" and result.status in STATUSES
    assert "Error" in result.message or "status 3" in result.message


def test_argv_and_exit_zero(sandbox):
    script = "import sys\nassert sys.argv == ['script.py', 'custom.png']\n" + good() + "\nsys.exit(0)"
    result = sandbox.run(script, output_name="custom.png")
    assert result.ok and "custom.png" in result.message


def test_map_runs_in_parallel_and_keeps_order():
    widths = [1, 2, 3, 4, 5]
    with Sandbox(workers=2, timeout=10, isolation=ISOLATION) as box:
        results = list(box.map([good(w) for w in widths] + ["1/0"]))
        pids = set(box.worker_pids)
    assert [png_shape(r.image_png)[1] for r in results[:-1]] == [40 * w for w in widths]
    assert results[-1].status == "error"
    assert len(pids) == 2


def test_statuses_are_the_documented_five():
    assert STATUSES == ("ok", "timeout", "memory", "forbidden", "error")


def test_png_check():
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "white").save(buffer, format="PNG")
    png = buffer.getvalue()
    assert check_png(png, 10**6) == ""
    assert "limit" in check_png(png, 10)
    assert "not a PNG" in check_png(b"GIF89a" + png[6:], 10**6)
    assert "invalid PNG" in check_png(png[:40] + bytes(len(png) - 40), 10**6)  # corrupt chunks
    big = io.BytesIO()
    Image.new("1", (20000, 1)).save(big, format="PNG")
    assert "per side" in check_png(big.getvalue(), 10**6)


def test_forged_image_is_rejected(sandbox):
    forged = "import sys\nopen(sys.argv[1], 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + b'not really a png' * 10)"
    result = sandbox.run(forged)
    assert result.status == "error" and "rejected" in result.message and result.image_png is None


def test_missing_bubblewrap_is_refused_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(isolation.IsolationUnavailable, match="bubblewrap.*apt-get install bubblewrap.*--no-isolation"):
        Sandbox(workers=1).start()


@pytest.mark.parametrize("bad", [{"workers": 0}, {"timeout": -1}, {"memory_mb": 0}, {"workers": 1.5},
                                 {"isolation": "yes"}])
def test_config_validation(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SandboxConfig(**bad)


def test_run_requires_started_sandbox():
    with pytest.raises(RuntimeError, match="not started"):
        Sandbox(workers=1).run(good())
