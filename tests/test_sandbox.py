"""The script sandbox: every escape attempt is stopped and reported, and the next script still runs."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_recipes.external.sandbox import STATUSES, Sandbox, SandboxConfig

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
    with Sandbox(workers=1, timeout=4, memory_mb=200, cpu_seconds=1.5, max_file_mb=4) as box:
        yield box


def test_good_script_returns_png_and_worker_is_reused(sandbox):
    first, second = sandbox.run(good()), sandbox.run(good(3))
    assert first.ok and second.ok and first.status == "ok"
    assert png_shape(first.image_png)[:2] == (80, 80) and png_shape(second.image_png)[:2] == (80, 120)
    assert first.worker_pid == second.worker_pid  # no interpreter start per script


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
    "huge_file": ("with open('big.bin', 'wb') as f:\n    f.write(b'x' * (64 * 2**20))", "file_size"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).getpid()", "forbidden"),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_is_stopped_reported_and_worker_recycled(sandbox, name):
    script, expected = ESCAPES[name]
    before = sandbox.run(good())
    result = sandbox.run(script)
    assert result.status == expected, result
    assert not result.ok and result.image_png is None and result.message
    after = sandbox.run(good())
    assert after.ok, after
    assert after.worker_pid != before.worker_pid  # recycled after the failure


def test_worker_with_leftover_thread_is_recycled(sandbox):
    script = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n" + good()
    result = sandbox.run(script)
    assert result.ok  # threads are not forbidden, but the worker is tainted
    assert sandbox.run(good()).worker_pid != result.worker_pid


def test_read_of_home_ssh_is_forbidden(sandbox):
    key = Path(os.path.expanduser("~")) / ".ssh" / "id_rsa"
    result = sandbox.run(f"open({str(key)!r}).read()")
    assert result.status == "forbidden" and ".ssh" in result.message


def test_write_outside_working_dir_is_forbidden_and_not_written(sandbox, tmp_path):
    target = tmp_path / "outside.txt"
    result = sandbox.run(f"open({str(target)!r}, 'w').write('escaped')")
    assert result.status == "forbidden" and str(target) in result.message
    assert not target.exists()
    for call in (f"import os\nos.remove({str(tmp_path)!r})", f"import os\nos.rename('a', {str(target)!r})"):
        assert sandbox.run(call).status == "forbidden"


def test_environment_is_scrubbed(sandbox, monkeypatch):
    monkeypatch.setenv("MMGEOLM_TEST_SECRET", "hunter2")
    sandbox.run("1/0")  # recycles the worker: the new one starts with the current environment
    result = sandbox.run("import os\nassert 'MMGEOLM_TEST_SECRET' not in os.environ\n" + good())
    assert result.ok, result


def test_writes_inside_working_dir_and_other_names_are_captured(sandbox):
    other_name = good().replace("sys.argv[1]", "'figure_out.png'")
    result = sandbox.run("open('notes.txt', 'w').write('fine')\n" + other_name)
    assert result.ok and "figure_out.png" in result.message


def test_show_only_script_is_captured_from_current_figure(sandbox):
    result = sandbox.run("import matplotlib.pyplot as plt\nplt.figure(figsize=(1, 1), dpi=50)\nplt.plot([0, 1])\nplt.show()")
    assert result.ok and png_shape(result.image_png)[:2] == (50, 50)


@pytest.mark.parametrize("script, status", [("x = 1", "no_output"), ("1 / 0", "error"), ("def f(:", "error")])
def test_plain_failures_are_reported(sandbox, script, status):
    result = sandbox.run(script)
    assert result.status == status and result.status in STATUSES
    if status == "error":
        assert "Error" in result.message


def test_argv_and_exit_zero(sandbox):
    script = "import sys\nassert sys.argv == ['script.py', 'custom.png']\n" + good() + "\nsys.exit(0)"
    result = sandbox.run(script, output_name="custom.png")
    assert result.ok and "custom.png" in result.message


def test_map_runs_in_parallel_and_keeps_order():
    widths = [1, 2, 3, 4, 5]
    with Sandbox(workers=2, timeout=10) as box:
        results = list(box.map([good(w) for w in widths] + ["1/0"]))
        pids = set(box.worker_pids)
    assert [png_shape(r.image_png)[1] for r in results[:-1]] == [40 * w for w in widths]
    assert results[-1].status == "error"
    assert len(pids) == 2


@pytest.mark.parametrize("bad", [{"workers": 0}, {"timeout": -1}, {"memory_mb": 0}, {"workers": 1.5}])
def test_config_validation(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SandboxConfig(**bad)


def test_run_requires_started_sandbox():
    with pytest.raises(RuntimeError, match="not started"):
        Sandbox(workers=1).run(good())
