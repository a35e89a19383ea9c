"""The Jinja2 environment of the server-rendered pages (report, error pages), autoescaping on."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared environment, built on first use (nothing happens at import time)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context: Any) -> str:
    """Render templates/`name` with `context`; every value is HTML-escaped unless marked safe."""
    return environment().get_template(name).render(**context)


def inline_css() -> str:
    """The pages' stylesheet, for pages that must stand alone (a report saved to a file)."""
    return (STATIC_DIR / "style.css").read_text()


def message_page(title: str, message: str, *, hint: str = "") -> str:
    """A plain page that explains what went wrong (a wrong token, an unknown call)."""
    return render("message.html", title=title, message=message, hint=hint, css=inline_css())
