"""The `srtrain` entry points: how a command starts, whichever way it is launched."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

from conftest import accelerate_launch

AFTER_A_COMMAND = """
import gc, weakref
from srtrain.__main__ import run
assert run(["check-config"]) == 0
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
print("RESULT", gc.isenabled(), gc.get_freeze_count(), alive() is None)
"""


def test_a_command_freezes_what_its_imports_made_and_still_collects_garbage() -> None:
    proc = subprocess.run([sys.executable, "-c", AFTER_A_COMMAND], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    enabled, frozen, collected = proc.stdout.rsplit("RESULT", 1)[1].split()
    assert enabled == "True" and collected == "True"
    assert int(frozen) > 100_000  # torch's and datasets' objects, out of every collection


def test_the_console_script_starts_through_the_frozen_imports() -> None:
    (entry,) = entry_points(group="console_scripts", name="srtrain")
    assert entry.value == "srtrain.__main__:run"


def test_a_mistyped_command_is_named_with_the_nearest_one(capsys) -> None:
    from srtrain.cli import main

    assert main(["evl", "--model", "espcn"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: unknown command 'evl': did you mean 'eval'? commands: train, eval,")


END_PROCESS = """
import atexit, sys
from srtrain.launch import end_process
atexit.register(print, "exit handler")
sys.stdout.write("buffered, ")
end_process(3)
"""

# Two gloo ranks end with collectives of Python-made tensors still on gloo's worker threads (the group not even
# destroyed: the worst case of a collective's late release, which tore down a 2-process training about once in 60
# runs). With sys.exit in place of end_process, 7 launches of 8 aborted here (SIGABRT, "terminate called without
# an active exception": a worker thread wanting the GIL while the interpreter finalizes); with end_process, none.
GLOO_WORKER = """
import os, torch, torch.distributed as dist
from srtrain.launch import end_process
dist.init_process_group("gloo")
works = [dist.all_reduce(torch.ones(64), async_op=True) for _ in range(2000)]
works[100].wait()
os.write(1, f"rank {dist.get_rank()} leaves\\n".encode())  # one write: the ranks share the pipe
del works
end_process(0)
"""


def test_end_process_runs_the_exit_handlers_flushes_and_exits_with_the_status() -> None:
    proc = subprocess.run([sys.executable, "-c", END_PROCESS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, exit handler\n"  # once: the interpreter's own exit never ran them again


def test_gloo_workers_with_collectives_in_flight_exit_cleanly(tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(GLOO_WORKER)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [*accelerate_launch(2), str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.splitlines()) == ["rank 0 leaves", "rank 1 leaves"]
    assert "terminate called" not in proc.stderr


def test_output_into_a_closed_pipe_ends_quietly():
    """`srtrain --help | head` with the reader gone: status 1 and nothing on stderr, not a BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)
    try:
        cmd = [sys.executable, "-m", "srtrain", "train", "--help"]
        proc = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == ""
