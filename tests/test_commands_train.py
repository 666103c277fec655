"""`srtrain [train]` and `srtrain/main.py`, the training command: its arguments are checked before anything
trains. (What a training run does is in test_train.py.)"""

from helpers import MAIN, python


def test_command_line_error_exits_before_training(tmp_path):
    proc = python([MAIN, "--lerning_rate=0.1"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "did you mean 'lr'" in proc.stderr
    assert not (tmp_path / "runs").exists()
