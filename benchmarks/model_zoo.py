"""Train every job of the comparison, score each best checkpoint with `srtrain eval`, print a results table.

    SRTRAIN_DATA=../shared/data python benchmarks/model_zoo.py jobs/lab/*.yaml jobs/zoo/edsr_x4.yaml \
        --extra resnet50_x4=--model.pretrained=false --out runs/zoo

Runs one job after another (each `accelerate launch srtrain/main.py --config JOB`), then
`srtrain eval --checkpoint RUN --data Set5 --data Set14 --scale 4`, and writes `results.md` and
`results.json` under `--out`. A finished job (its eval JSON exists) is not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from srtrain.checkpoint import read_state
from srtrain.config import saved_config
from srtrain.rundir import RunDir, read_metrics


def run_job(job: Path, out: Path, extra: list[str]) -> float:
    """Train one job into `out`; return the wall seconds (training + validation + start-up)."""
    launch = ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    cmd = [*launch, "--dynamo_backend", "no", "srtrain/main.py", "--config", str(job), f"--output_dir={out}"]
    start = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run([*cmd, *extra], check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def evaluate(run: Path, report: Path) -> dict:
    cmd = ["srtrain", "eval", "--checkpoint", str(run), "--data", "Set5", "--data", "Set14", "--scale", "4"]
    subprocess.run([*cmd, "--json", str(report)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--extra", action="append", default=[], help="JOB_STEM=--key=value, repeatable")
    args = parser.parse_args()
    extras: dict[str, list[str]] = {}
    for item in args.extra:
        stem, _, override = item.partition("=")
        extras.setdefault(stem, []).append(override)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for job in args.jobs:
        run, report = args.out / job.stem, args.out / f"{job.stem}.eval.json"
        if not report.exists():
            wall = run_job(job, run, extras.get(job.stem, []))
            evaluate(run, report)
            (args.out / f"{job.stem}.wall").write_text(f"{wall:.1f}")
        results = {r["dataset"]: r for r in json.loads(report.read_text())["results"]}
        metrics, _ = read_metrics(RunDir(run).metrics)
        cfg = saved_config(RunDir(run).config)
        state = read_state(RunDir(run).last)
        rows.append(
            {
                "job": str(job),
                "model": cfg.model.name,
                "extra": " ".join(extras.get(job.stem, [])),
                "train_minutes": metrics[-1]["train_minutes"],
                "wall_minutes": float((args.out / f"{job.stem}.wall").read_text()) / 60,
                "patches": state.step * cfg.batch_size * cfg.grad_accum,
                **{f"{k}_{s.lower()}": results[s][k] for s in ("Set5", "Set14") for k in ("psnr_y", "ssim_y")},
                "eval_seconds": sum(r["seconds"] for r in results.values()),
            }
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| job | Set5 PSNR-Y / SSIM-Y | Set14 PSNR-Y / SSIM-Y | train min (wall) | patches | eval s (Set5+Set14) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['job']}` {r['extra']} | {r['psnr_y_set5']:.2f} / {r['ssim_y_set5']:.4f} | "
            f"{r['psnr_y_set14']:.2f} / {r['ssim_y_set14']:.4f} | {r['train_minutes']:.1f} ({r['wall_minutes']:.1f}) | "
            f"{r['patches']:,} | {r['eval_seconds']:.1f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
