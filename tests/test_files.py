"""Files people keep are written whole or not at all."""

import pytest

from srtrain.files import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_previous_file_and_no_partial(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("the previous report")

    def fails_half_way(tmp):
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fails_half_way)
    assert target.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    write_text_atomically(target, "the new report")
    assert target.read_text() == "the new report" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_the_temporary_file_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    seen = []
    write_atomically(tmp_path / "crops.png", lambda tmp: seen.append(tmp.suffix) or tmp.write_bytes(b"x"))
    assert seen == [".png"]
