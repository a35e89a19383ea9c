"""`confbot bench call`: a whole call on loopback, measured from outside the server.

It starts a real `confbot serve` (temporary SQLite database), invites the bot to a built-in room,
and starts N WHIP publishers in one other process that replay a pre-encoded VP8 video of a real
face (so they cost almost no CPU). A websocket client follows the call's feed. Over the measured
window it reports:

- samples per second on the feed, against the N x sample_fps expected;
- latency from the bot receiving a frame (`wall_time_ms` of the sample) to the feed message
  arriving at the host: p50, p95, max;
- the server's CPU seconds per participant-second (from /proc: user + system);
- the server's RSS: at the start and the end of the window, its peak, and its slope in MB/min.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from confbot.errors import InputError
from confbot.media_synth import compose_frames, encode_vp8, fer2013_faces_bgr

HAPPY = 3
# Detectors a bench can ask the server for (YuNet would need its model file's path).
BENCH_DETECTORS = ("auto", "haar", "blazeface")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    samples: int = 0
    participants: set[str] = field(default_factory=set)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path,
                  timeout_s: float = 90.0) -> dict[str, Any]:
    """The server's /healthz answer once it is healthy; if it exits first, an error with the
    end of its log (which says why: a bad setting, a model that does not load)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise InputError(f"confbot serve exited with status {proc.returncode}:\n"
                             + "\n".join(tail))
        try:
            answer = httpx.get(f"{url}/healthz", timeout=2)
            if answer.status_code == 200:
                return dict(answer.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise InputError(f"confbot serve did not become healthy within {timeout_s} s")


def bench_call(*, participants: int, seconds: float, sample_fps: float, faces: Path,
               warmup_s: float = 30.0, workdir: Path | None = None,
               detector: str = "auto", model: str = "auto") -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module docstring). `model` is the
    server's `[model] manifest`: "auto" or a manifest's path."""
    if participants < 1 or seconds <= 0 or sample_fps <= 0:
        raise InputError("--participants, --seconds and --sample-fps must be positive")
    if detector not in BENCH_DETECTORS:
        raise InputError(f"--detector must be one of {', '.join(BENCH_DETECTORS)}, got {detector!r}")
    if not faces.is_file():
        raise InputError(f"{faces}: FER2013 faces not found (pass --faces PATH.npz)")
    if model != "auto":
        from confbot.vision import resolve_manifest

        manifest = resolve_manifest(model)  # as the server would: here, then in the repo
        if not manifest.is_file():
            raise InputError(f"--model {model}: model manifest not found (\"auto\" or a .json path)")
        model = str(manifest.resolve())
    with tempfile.TemporaryDirectory(prefix="confbot-bench-") as tmp:
        work = workdir or Path(tmp)
        video = encode_vp8(work / "face.ivf",
                           compose_frames(fer2013_faces_bgr(faces, [HAPPY]), n_frames=60))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        config = work / "bench.toml"
        config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n[database]\n'
                          f'url = "sqlite:///{work / "bench.db"}"\n[pipeline]\nsample_fps = {sample_fps}\n'
                          '[rtc]\nice_host_addresses = ["127.0.0.1"]\n'
                          f'[detector]\nkind = "{detector}"\n'
                          f'[model]\nmanifest = {json.dumps(model)}\n')
        log_path = work / "server.log"
        log = log_path.open("wb")
        server = subprocess.Popen([sys.executable, "-m", "confbot", "serve", "--config", str(config)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        publishers: subprocess.Popen[str] | None = None
        try:
            health = _wait_healthy(url, server, log_path)
            call = httpx.post(f"{url}/api/calls", json={"title": "bench", "sample_fps": sample_fps},
                              timeout=30).json()
            publishers = subprocess.Popen(
                [sys.executable, "-m", "confbot.rtc.replay", "--whip", f"{url}/whip/{call['id']}",
                 "--count", str(participants), "--ice-address", "127.0.0.1", str(video)],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            assert publishers.stdout is not None
            line = publishers.stdout.readline().strip()
            if not line.startswith("READY"):
                raise InputError(f"the publishers did not connect (got {line!r})")
            window = asyncio.run(_follow(call["feed_url"], call["host_token"], server.pid,
                                         participants=participants, warmup_s=warmup_s, seconds=seconds))
        finally:
            if publishers is not None:
                publishers.send_signal(signal.SIGTERM)
                try:
                    publishers.wait(20)
                except subprocess.TimeoutExpired:
                    publishers.kill()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    return {"detector": str(health["detector"]), "model": str(health["model"]),
            **_figures(window, participants=participants, seconds=seconds, sample_fps=sample_fps)}


async def _follow(feed_url: str, token: str, pid: int, *, participants: int, warmup_s: float,
                  seconds: float) -> Window:
    from websockets.asyncio.client import connect

    window = Window()
    async with connect(f"{feed_url}?token={token}", max_size=None) as ws:
        seen: set[str] = set()
        deadline = time.monotonic() + warmup_s
        # Warm-up: until every participant has samples (or the warm-up time is over).
        while time.monotonic() < deadline and len(seen) < participants:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0))
            except TimeoutError:
                continue
            if message.get("type") == "sample":
                seen.add(message["participant_id"])
        cpu0 = _cpu_seconds(pid)
        start = time.monotonic()
        end = start + seconds
        next_rss = start
        while (now := time.monotonic()) < end:
            if now >= next_rss:
                window.rss_mb.append((now - start, _rss_mb(pid)))
                next_rss += 1.0
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=min(1.0, max(0.01, end - now)))
            except TimeoutError:
                continue
            arrived_ms = time.time() * 1000
            message = json.loads(raw)
            if message.get("type") == "sample":
                window.samples += 1
                window.participants.add(message["participant_id"])
                window.latencies_ms.append(arrived_ms - message["wall_time_ms"])
        window.cpu_s = _cpu_seconds(pid) - cpu0
        window.rss_mb.append((time.monotonic() - start, _rss_mb(pid)))
    return window


def _rounded(value: float) -> float:
    return round(float(value), 1)


def _slope_mb_per_min(t_s: np.ndarray, rss_mb: np.ndarray) -> float:
    if len(rss_mb) < 3 or float(t_s[-1] - t_s[0]) <= 0:
        return float("nan")
    return float(np.polyfit(t_s / 60.0, rss_mb, 1)[0])


def _figures(window: Window, *, participants: int, seconds: float,
             sample_fps: float) -> dict[str, Any]:
    cpu_s = window.cpu_s
    lat = np.array(window.latencies_ms, dtype=float)
    t = np.array([p[0] for p in window.rss_mb])
    rss = np.array([p[1] for p in window.rss_mb])
    tenth = max(1, len(rss) // 10)
    slope = _slope_mb_per_min(t, rss)
    # Growth while caches and allocator arenas fill up shows in the first half only; a leak
    # keeps the second half rising too.
    half = t >= (t[-1] / 2 if len(t) else 0.0)
    slope_second_half = _slope_mb_per_min(t[half], rss[half])
    return {
        "participants": participants,
        "participants_with_samples": len(window.participants),
        "seconds": seconds,
        "sample_fps": sample_fps,
        "samples_per_s": round(window.samples / seconds, 2),
        "expected_samples_per_s": round(participants * sample_fps, 2),
        "latency_ms_p50": _rounded(np.percentile(lat, 50) if lat.size else math.nan),
        "latency_ms_p95": _rounded(np.percentile(lat, 95) if lat.size else math.nan),
        "latency_ms_max": _rounded(lat.max() if lat.size else math.nan),
        "cpu_s_per_participant_s": round(cpu_s / (participants * seconds), 4),
        "server_cpu_cores": round(cpu_s / seconds, 2),
        "rss_mb_start": round(float(rss[:tenth].mean()), 1),
        "rss_mb_end": round(float(rss[-tenth:].mean()), 1),
        "rss_mb_peak": round(float(rss.max()), 1),
        "rss_slope_mb_per_min": round(slope, 2),
        "rss_slope_second_half_mb_per_min": round(slope_second_half, 2),
    }
