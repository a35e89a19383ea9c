"""confbot's exceptions.

    ConfbotError                 root: every error confbot raises on purpose
    +-- ConfigError              a setting is missing or has a wrong value
    +-- InputError               a file given on the command line is missing or unreadable
    +-- DataError                a data set is not in the expected format
    +-- ModelError               a model artifact is missing, corrupt or inconsistent
    +-- StoreError               the database refused or is unreachable
    +-- ConnectorError           joining a call failed (bad SDP, SFU unreachable, ...)
    +-- AuthError                a token or API key is missing or wrong
"""

from __future__ import annotations


class ConfbotError(Exception):
    """Root of confbot's own errors; its message is meant for the user."""


class ConfigError(ConfbotError):
    pass


class InputError(ConfbotError):
    pass


class DataError(ConfbotError):
    pass


class ModelError(ConfbotError):
    pass


class StoreError(ConfbotError):
    pass


class ConnectorError(ConfbotError):
    pass


class AuthError(ConfbotError):
    pass
