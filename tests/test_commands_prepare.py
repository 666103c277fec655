"""`srtrain prepare SOURCE OUT`: the command around srtrain/data/prepare.py. (The `prepared` fixture in
conftest.py runs it with two processes and asserts its verified counts; what it writes is in test_data_prepare.py.)"""

from helpers import DATA, needs_data, python

pytestmark = needs_data


def test_a_folder_the_command_did_not_make_is_refused_and_left_as_it_is(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    proc = python(["-m", "srtrain", "prepare", str(DATA / "Set5"), str(foreign)], check=False)
    assert proc.returncode == 2 and "was not made by srtrain prepare" in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
