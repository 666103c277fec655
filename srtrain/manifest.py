"""Checksum manifests: each file's size and SHA-256, recorded once a folder is complete and checked before its
files are trusted. A checkpoint's `manifest.json` lists every file of its folder; a prepared dataset's manifest
(`srtrain.data.prepared`) holds one such entry per shard among its other fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srtrain.files import fsync


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest records of one file: its size in bytes and its SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def file_problem(path: Path, entry: Mapping[str, Any]) -> str:
    """What differs between file `path` and its manifest entry ('' when it matches). The size is compared only
    where it was recorded: prepared datasets made before sizes were recorded hold only the checksum."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        return f"{path} has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
    if sha256(path) != entry["sha256"]:
        return f"{path} does not match its checksum (corrupt)"
    return ""


def write_manifest(folder: Path, name: str) -> None:
    """Flush every file of `folder` to disk, then record them in `folder/name`, itself flushed: written last, so
    that a folder whose files match its manifest is complete."""
    files = {}
    for f in sorted(folder.iterdir()):
        fsync(f)
        files[f.name] = file_entry(f)
    manifest = folder / name
    manifest.write_text(json.dumps(files, indent=1))
    fsync(manifest)


def manifest_problem(folder: Path, name: str) -> str:
    """What is wrong with `folder` against its manifest `folder/name` ('' when every file in it matches)."""
    manifest = folder / name
    if not manifest.is_file():
        return f"{folder} has no {name} (missing, or its write did not finish)"
    try:
        files = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return f"{manifest} is not valid JSON"
    shape = {"bytes": int, "sha256": str}
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in shape.items()) for e in files.values()
    ):
        return f"{manifest} is not a manifest (file names, each with its bytes and sha256)"
    for file, entry in files.items():
        if problem := file_problem(folder / file, entry):
            return problem
    return ""
