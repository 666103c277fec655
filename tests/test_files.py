"""Files people keep are written whole or not at all."""

import subprocess
import sys

import pytest

from srtrain.files import append_line, write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_previous_file_and_no_partial(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("the previous report")

    def fails_half_way(tmp):
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as raised:
        write_atomically(target, fails_half_way)
    assert raised.value.filename == str(target)  # named after the file people know, whatever the writer said
    assert target.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    write_text_atomically(target, "the new report")
    assert target.read_text() == "the new report" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_the_temporary_file_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    seen = []
    write_atomically(tmp_path / "crops.png", lambda tmp: seen.append(tmp.suffix) or tmp.write_bytes(b"x"))
    assert seen == [".png"]


def test_a_failed_append_leaves_no_half_line(tmp_path):
    """A real write error half-way through a line (the file size limit, as a full disk would): the file is as it
    was, so readers never meet half a row; the error names the file."""
    rows = tmp_path / "metrics.jsonl"
    rows.write_text('{"epoch": 1}\n')
    code = (
        "import resource, signal, sys\n"
        "from srtrain.files import append_line\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "row = '{\"epoch\": 2, \"x\": \"' + 'y' * 8000 + '\"}'\n"
        "try:\n"
        f"    append_line(__import__('pathlib').Path({str(rows)!r}), row)\n"
        "except OSError as err:\n"
        "    print(err.filename, err.strerror)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith(str(rows)) and "too large" in proc.stdout, proc.stderr
    assert rows.read_text() == '{"epoch": 1}\n'
    append_line(rows, '{"epoch": 2}')
    assert rows.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
