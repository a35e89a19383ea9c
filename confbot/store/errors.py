"""Errors of the store's queries, beyond `StoreError` (the database refused or is unreachable).

    ConfbotError
    +-- StoreError               confbot.errors: the database refused or is unreachable
    +-- NotFoundError            a call or participant named by id does not exist
        +-- CallNotFoundError
        +-- ParticipantNotFoundError
"""

from __future__ import annotations

from confbot.errors import ConfbotError


class NotFoundError(ConfbotError):
    """A row named by its id does not exist (an HTTP API answers 404)."""


class CallNotFoundError(NotFoundError):
    def __init__(self, call_id: str) -> None:
        super().__init__(f"no call with id {call_id!r}")
        self.call_id = call_id


class ParticipantNotFoundError(NotFoundError):
    def __init__(self, call_id: str, participant_id: str) -> None:
        super().__init__(f"call {call_id!r} has no participant {participant_id!r}")
        self.call_id = call_id
        self.participant_id = participant_id
