"""`srtrain check-data SOURCE`: the scan training runs before it starts, on its own, as a summary table."""

import json

import numpy as np
import PIL.Image
from helpers import needs_data, png_bytes, python

from srtrain.data.prepared import MANIFEST

pytestmark = needs_data


def test_check_data_command_prints_the_summary(photo_copy):
    (photo_copy / "truncated.png").write_bytes(png_bytes()[:-200])
    PIL.Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(photo_copy / "gray16.png")
    proc = python(["-m", "srtrain", "check-data", str(photo_copy), "--patch_size", "48"], check=False)
    assert proc.returncode == 1, proc.stderr
    assert "truncated.png" in proc.stdout and "I;16 1" in proc.stdout and "RGB 4" in proc.stdout


def test_check_data_scans_a_prepared_source(prepared):
    """`srtrain check-data` takes a prepared folder like any source: its tiles, all RGB, none too small for 96 px."""
    proc = python(["-m", "srtrain", "check-data", str(prepared), "--patch_size", "96"])
    tiles = sum(e["tiles"] for e in json.loads((prepared / MANIFEST).read_text())["shards"].values())
    assert f"RGB {tiles}" in proc.stdout
