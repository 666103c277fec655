"""What `accelerate launch` does with a stop signal and with a worker's exit 75: the table in docs/faults.md.

For each launch (1 process; 2 processes; 2 with PET_SIGNALS_TO_HANDLE) and signal, a stand-in worker that stops
the way the trainer does (`srtrain.stopping.Stopper`, then a 2 s "checkpoint", then exit 75) is launched, the
signal is sent to the launcher's pid, and the launcher's exit status, the signal each worker heard, whether it
finished its save and whether any worker is left running are printed.

    PYTHONPATH=$PWD python benchmarks/launcher_signals.py
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import os, sys, time
from pathlib import Path
from srtrain.stopping import EXIT_RESUMABLE, Stopper
stopper = Stopper(0)
stopper.install()
rank = os.environ.get("RANK", "0")
Path(f"ready{rank}").write_text(str(os.getpid()))
while not stopper.signal_name:
    time.sleep(0.05)
Path(f"heard{rank}").write_text(stopper.signal_name)
time.sleep(2)  # the checkpoint write
Path(f"saved{rank}").write_text("")
sys.exit(EXIT_RESUMABLE)
"""
PET = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def launch(folder: Path, processes: int, pet: bool) -> subprocess.Popen:
    world = ["--num_processes", "1"] if processes == 1 else ["--multi_gpu", "--num_processes", "2"]
    quiet = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    port = ["--main_process_port", str(29700 + random.randrange(300))]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"} | ({"PET_SIGNALS_TO_HANDLE": PET} if pet else {})
    cmd = ["accelerate", "launch", *world, *quiet, *port, "worker.py"]
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one(processes: int, sig: signal.Signals | None, pet: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "worker.py").write_text(WORKER if sig else "import sys; sys.exit(75)\n")
        launcher = launch(folder, processes, pet)
        if sig is None:
            return f"{processes} process(es), worker exits 75: launcher status {launcher.wait(timeout=120)}"
        while len(list(folder.glob("ready*"))) < processes:
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in folder.glob("ready*")]
        launcher.send_signal(sig)
        status = launcher.wait(timeout=120)
        deadline = time.monotonic() + 60
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        heard = sorted(p.read_text() for p in folder.glob("heard*"))
        saved = len(list(folder.glob("saved*")))
        left = sum(Path(f"/proc/{pid}").exists() for pid in pids)
        return (
            f"{processes} process(es), {sig.name} to the launcher{', PET_SIGNALS_TO_HANDLE' if pet else ''}: "
            f"launcher status {status}, workers heard {heard}, saved {saved}/{processes}, left running {left}"
        )


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    for processes in (1, 2):
        print(one(processes, None, False))
    for processes, pet in ((1, False), (2, False), (2, True)):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            print(one(processes, sig, pet), flush=True)


if __name__ == "__main__":
    main()
