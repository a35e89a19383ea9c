"""tools/pack-faces.py: a face set packed for a training machine unpacks to the same bytes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np

from tests.support.tools import run_tool


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return run_tool("pack-faces.py", *args)


def _faces(path: Path, *, compressed: bool = True) -> Path:
    rng = np.random.default_rng(4)
    # Smooth faces with noise, like photographs: what the predictor is for.
    base = np.linspace(0, 200, 48)[None, :, None] + np.linspace(0, 50, 48)[None, None, :]
    x = np.clip(base + rng.normal(0, 6, (40, 48, 48)), 0, 255).astype(np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(path, x=x, y=rng.integers(0, 7, 40).astype(np.uint8), ids=np.arange(40))
    return path


def test_a_pack_unpacks_to_the_original_bytes(tmp_path: Path) -> None:
    src = _faces(tmp_path / "faces.npz")
    assert _run("pack", src, tmp_path / "faces.pack").returncode == 0
    assert (tmp_path / "faces.pack").stat().st_size < src.stat().st_size
    res = _run("unpack", tmp_path / "faces.pack", tmp_path / "back.npz")
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256((tmp_path / "back.npz").read_bytes()).hexdigest() == \
        hashlib.sha256(src.read_bytes()).hexdigest()


def test_damaged_or_unsuitable_files_are_refused_clearly(tmp_path: Path) -> None:
    src = _faces(tmp_path / "faces.npz")
    _run("pack", src, tmp_path / "faces.pack")
    blob = bytearray((tmp_path / "faces.pack").read_bytes())
    blob[-20] ^= 0xFF
    (tmp_path / "bad.pack").write_bytes(bytes(blob))
    res = _run("unpack", tmp_path / "bad.pack", tmp_path / "out.npz")
    assert res.returncode != 0 and "damaged face pack" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out.npz").exists()
    # A header whose npy bytes are not hex: refused by name too.
    good = (tmp_path / "faces.pack").read_bytes()
    (tmp_path / "hex.pack").write_bytes(good.replace(b'"npy_header": "', b'"npy_header": "zz', 1))
    res = _run("unpack", tmp_path / "hex.pack", tmp_path / "out.npz")
    assert res.returncode != 0 and "damaged face pack" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    (tmp_path / "junk.pack").write_bytes(b"not a pack")
    res = _run("unpack", tmp_path / "junk.pack", tmp_path / "out.npz")
    assert res.returncode != 0 and "not a face pack" in res.stderr
    res = _run("pack", _faces(tmp_path / "plain.npz", compressed=False), tmp_path / "p.pack")
    assert res.returncode != 0 and "not deflated" in res.stderr
