"""Request and response bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from face_core.emotions import EMOTIONS


class RoomConnectorSpec(BaseModel):
    """The built-in room: participants publish to the bot over WHIP from the room page."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["room"]


class JanusConnectorSpec(BaseModel):
    """A Janus VideoRoom the bot joins through Janus's HTTP API."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["janus"]
    url: AnyHttpUrl = Field(description="Janus HTTP API root, e.g. http://janus.example:8088/janus")
    room: int = Field(gt=0, description="VideoRoom id")
    pin: str | None = Field(default=None, max_length=256, description="room PIN, if it has one")


ConnectorSpec = Annotated[RoomConnectorSpec | JanusConnectorSpec, Field(discriminator="type")]


class CallCreate(BaseModel):
    """Invite the bot to a call."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    connector: ConnectorSpec = Field(default_factory=lambda: RoomConnectorSpec(type="room"))
    sample_fps: float | None = Field(default=None, gt=0, le=30,
                                     description="samples per second per track; default from config")
    consent: Literal["all", "opt-in"] = Field(
        default="all",
        description="'opt-in': a participant is analyzed only after their consent is recorded")


class CallCreated(BaseModel):
    id: str
    status: str
    host_token: str = Field(description="secret; send as 'Authorization: Bearer <token>'. Shown once.")
    feed_url: str
    dashboard_url: str
    room_url: str | None = None
    report_url: str


class CallOut(BaseModel):
    id: str
    title: str
    status: Literal["connecting", "live", "failed", "ended"]
    failure_reason: str | None
    connector: dict[str, Any]
    sample_fps: float
    consent: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    room_url: str | None = None


class ParticipantOut(BaseModel):
    id: str
    display_name: str
    source: str
    consent_given: bool
    joined_at: datetime
    left_at: datetime | None
    analyzed: bool = Field(description="whether the bot classifies this participant's frames now")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    given: bool


class SampleOut(BaseModel):
    id: int
    participant_id: str
    face_index: int
    t_ms: int
    wall_time_ms: int
    top_emotion: str
    scores: dict[str, float]
    valence: float
    arousal: float
    attention: float
    box: list[int]


class SamplePageOut(BaseModel):
    samples: list[SampleOut]
    next_after_id: int | None = Field(description="pass as after_id for the next page; null on the last")


class FaceOut(BaseModel):
    face_index: int
    box: list[int] = Field(description="x, y, w, h in the photo's pixels")
    top_emotion: str
    scores: dict[str, float]
    valence: float
    arousal: float
    attention: float


class AnalyzeOut(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    active_calls: int
    writer: dict[str, Any]
    detector: str  # the face detector in use ("auto" resolved)
    model: str  # the emotion model's file ("auto" resolved)
    emotions: list[str] = Field(default_factory=lambda: list(EMOTIONS))
