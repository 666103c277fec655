"""Fixtures the test files share: small real-photo folders and the runs several files read. Plain functions are in
helpers.py."""

import os

# Before torch loads its OpenMP runtime, here and in every process a test starts: idle OpenMP threads sleep
# instead of spinning. On 2 cores shared with other processes, spinning threads made the compute-heavy tests 3 to
# 4 times slower (IMDN's x3 table: 41-44 s against 13 s beside one busy process); alone, both take the same time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import PIL.Image  # noqa: E402
import pytest  # noqa: E402
from helpers import DATA, MAIN, ROOT, checkpointed_job, launch, python, srtrain, tiny_job  # noqa: E402

# Tests never reach W&B servers: offline runs are real files we read back.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("SRTRAIN_DATA", str(DATA))  # jobs name data sets relative to this root
os.environ.pop("WANDB_API_KEY", None)
# The commands tests start by name (accelerate, wandb) are this interpreter's, also from a virtual environment
# that was not activated,
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# and the srtrain they import is this checkout's, also where it is not installed (`PYTHONPATH=. python -m pytest`).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(autouse=True)
def no_environment_leaks():
    """W&B used in-process (the sweep agent test, the report's W&B Table) exports its service's socket as
    WANDB_SERVICE; once that service is gone, every later training subprocess would fail to start W&B."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real photographs (Set5 crops), a small HR folder that trains in seconds (read-only)."""
    folder = tmp_path_factory.mktemp("hr")
    for name in ("baby", "bird", "head", "woman"):
        img = PIL.Image.open(DATA / "Set5" / f"{name}.png").convert("RGB")
        img.crop((0, 0, 120, 120)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def reference(tmp_path_factory, photo_folder) -> Path:
    """`checkpointed_job` straight through, never interrupted (`python -m srtrain`, W&B offline): what the stopped,
    killed and damaged runs of test_rundir, test_checkpoint, test_stopping and test_tracking must end as, and the
    finished run they copy (read-only)."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    srtrain(checkpointed_job(photo_folder, out), root, check=True)
    return out


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, photo_folder):
    """`tiny_job` for two epochs straight through, one process under `accelerate launch`, W&B offline: (its run
    directory, the finished process). On the CPU also where there is a GPU, as the runs it is compared with: the
    reference of test_train, test_tracking, test_precision and test_launch (read-only)."""
    out = tmp_path_factory.mktemp("full") / "run"
    proc = launch([MAIN, *tiny_job(photo_folder, out, "--epochs=2")], out.parent, ACCELERATE_USE_CPU="1")
    return out, proc


@pytest.fixture()
def photo_copy(tmp_path, photo_folder) -> Path:
    """A copy of `photo_folder` of this test's own, to which it may add bad files."""
    return Path(shutil.copytree(photo_folder, tmp_path / "hr"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """Set14 (14 images: two shards) cut by `srtrain prepare` with two processes, 96 px tiles with x2 and x4 LR
    tiles (read-only)."""
    out = tmp_path_factory.mktemp("prepared") / "set14"
    args = ["--tile", "96", "--stride", "96", "--scales", "2,4", "--num_proc", "2"]
    proc = python(["-m", "srtrain", "prepare", str(DATA / "Set14"), str(out), *args])
    assert "counts and SHA-256 checksums verified" in proc.stdout
    return out
