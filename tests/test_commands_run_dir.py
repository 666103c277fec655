"""srtrain/commands/run_dir.py: the SLURM job's run directory, as the sbatch scripts ask for it."""

from srtrain.cli import main


def test_prints_the_run_directory_of_the_slurm_job(monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_NAME", "edsr")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert main(["run-dir", "slurm"]) == 0
    assert capsys.readouterr().out.strip() == "runs/edsr-4242"


def test_outside_a_slurm_job_it_says_so_with_status_2(monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(["run-dir", "slurm"]) == 2
    assert "SLURM_JOB_NAME and SLURM_JOB_ID not set" in capsys.readouterr().err
