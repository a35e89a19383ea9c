"""Pack a face-set `.npz` (FER2013's training.npz) small enough to carry to a training machine,
and unpack it there into the very same bytes.

    python tools/pack-faces.py pack ../shared/datasets/fer2013/training.npz training.facepack
    python tools/pack-faces.py unpack training.facepack training.npz

Why: the GPU machines this project trains on take at most 64 MiB of files a call, and
training.npz is 63 MB of already-deflated pixels that general compressors cannot shrink. The
faces' pixels are predicted from their left, upper and upper-left neighbours (the median edge
detector of LOCO-I / JPEG-LS) and only the residuals are compressed with xz, which takes the
pixels to about 76% of their size. Everything else in the file (its zip headers, the other
arrays) is kept verbatim, and unpacking deflates the pixels again as numpy's `savez_compressed`
did (zlib level 6), so the unpacked file has the original's sha256 and a training run records
the same data hash. Unpacking checks that hash and fails if it differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"FACEPACK1\n"
PIXELS = "x.npy"


def _neighbours(x: np.ndarray, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, up and up-left pixels of row r, column c (zeros off the image), as int16."""
    zero = np.zeros(x.shape[0], np.int16)
    a = x[:, r, c - 1].astype(np.int16) if c else zero
    b = x[:, r - 1, c].astype(np.int16) if r else zero
    d = x[:, r - 1, c - 1].astype(np.int16) if r and c else zero
    return a, b, d


def _predict(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(d >= hi, lo, np.where(d <= lo, hi, a + b - d))


def residuals(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) faces to uint8 residuals of the median edge predictor (mod 256)."""
    xi = x.astype(np.int16)
    a, b, d = np.zeros_like(xi), np.zeros_like(xi), np.zeros_like(xi)
    a[:, :, 1:] = xi[:, :, :-1]
    b[:, 1:, :] = xi[:, :-1, :]
    d[:, 1:, 1:] = xi[:, :-1, :-1]
    return ((xi - _predict(a, b, d)) % 256).astype(np.uint8)


def reconstruct(res: np.ndarray) -> np.ndarray:
    """Inverse of `residuals`: pixel by pixel in raster order, all faces at once."""
    x = np.zeros_like(res)
    for r in range(res.shape[1]):
        for c in range(res.shape[2]):
            pred = _predict(*_neighbours(x, r, c))
            x[:, r, c] = ((pred + res[:, r, c].astype(np.int16)) % 256).astype(np.uint8)
    return x


def _payload_span(blob: bytes, info: zipfile.ZipInfo) -> tuple[int, int]:
    """Where an entry's compressed bytes lie in the zip file."""
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


def _deflate(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def pack(src: Path, dst: Path) -> dict:
    blob = src.read_bytes()
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        info = zf.getinfo(PIXELS)
        raw = zf.read(PIXELS)
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise SystemExit(f"{src}: {PIXELS} is not deflated; nothing to gain")
    start, end = _payload_span(blob, info)
    if _deflate(raw) != blob[start:end]:
        raise SystemExit(f"{src}: this zlib does not deflate {PIXELS} to the same bytes; "
                         "the packed file could not be restored exactly")
    x = np.load(io.BytesIO(raw))
    if x.dtype != np.uint8 or x.ndim != 3:
        raise SystemExit(f"{src}: {PIXELS} is {x.dtype} {x.shape}, expected uint8 (N, H, W)")
    npy_header = raw[:len(raw) - x.nbytes]
    head = {"sha256": hashlib.sha256(blob).hexdigest(), "shape": list(x.shape),
            "start": start, "end": end, "npy_header": npy_header.hex(), "size": len(blob),
            "zlib": zlib.ZLIB_RUNTIME_VERSION}
    body = lzma.compress(blob[:start] + blob[end:] + residuals(x).tobytes(), preset=9)
    header = json.dumps(head).encode()
    dst.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + body)
    return {"packed": str(dst), "bytes": dst.stat().st_size, "of": len(blob),
            "zlib": zlib.ZLIB_RUNTIME_VERSION}


def unpack(src: Path, dst: Path) -> dict:
    blob = src.read_bytes()
    if not blob.startswith(MAGIC):
        raise SystemExit(f"{src}: not a face pack")
    try:
        (n,) = struct.unpack("<I", blob[len(MAGIC):len(MAGIC) + 4])
        head = json.loads(blob[len(MAGIC) + 4:len(MAGIC) + 4 + n])
        body = lzma.decompress(blob[len(MAGIC) + 4 + n:])
        shape = tuple(head["shape"])
        rest_len = head["size"] - (head["end"] - head["start"])
        res = np.frombuffer(body[rest_len:], np.uint8).reshape(shape)
        npy_header = bytes.fromhex(head["npy_header"])
    except (struct.error, ValueError, KeyError, TypeError, lzma.LZMAError) as exc:
        raise SystemExit(f"{src}: damaged face pack ({exc})") from exc
    x = reconstruct(res)
    payload = _deflate(npy_header + x.tobytes())
    out = body[:head["start"]] + payload + body[head["start"]:rest_len]
    digest = hashlib.sha256(out).hexdigest()
    if digest != head["sha256"]:
        raise SystemExit(f"{src}: unpacked sha256 {digest[:16]}... is not the original's "
                         f"{head['sha256'][:16]}... (zlib {zlib.ZLIB_RUNTIME_VERSION} here; "
                         f"packed with {head.get('zlib', 'unknown')})")
    dst.write_bytes(out)
    return {"unpacked": str(dst), "sha256": digest, "zlib": zlib.ZLIB_RUNTIME_VERSION}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("verb", choices=["pack", "unpack"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    print(json.dumps((pack if args.verb == "pack" else unpack)(args.src, args.dst)))


if __name__ == "__main__":
    main(sys.argv[1:])
