"""Server-side commands of the `confbot` CLI: serve, join, feed, db, purge.

Registered on the app defined in `confbot.cli`.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the server commands to `app`."""
