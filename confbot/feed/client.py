"""`confbot feed CALL_ID --token T`: follow a call's live feed in a terminal.

    run_feed_client("http://127.0.0.1:8000", call_id, token, since_ms=None, json_lines=False)

Prints one line per message (the message's JSON with `json_lines`, else a readable line).
When the connection drops it reconnects with backoff and resumes from the newest `t_ms` it
has seen (less a margin, with the overlap removed), so no message is lost or printed twice.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Hashable
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from confbot.errors import InputError
from confbot.feed.messages import message_key
from face_core.emotions import EMOTIONS

log = logging.getLogger(__name__)

EXIT_CALL_ENDED = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Close codes after which reconnecting cannot help (docs/feed.md).
REFUSAL_CODES = frozenset({1008, 4400, 4401, 4403, 4404})
# Samples of different tracks interleave: resume a little before the newest t_ms seen.
RESUME_MARGIN_MS = 2000
BACKOFF_FIRST_S = 0.5


def feed_url(base_url: str, call_id: str) -> str:
    """The websocket URL of the call's feed under a server's base URL (http(s) or ws(s)).

    A URL that already ends in /feed is used as it is. Raises `InputError` for another scheme.
    """
    parts = urlsplit(base_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise InputError(f"feed server URL {base_url!r}: expected http(s)://HOST:PORT or ws(s)://HOST:PORT")
    path = parts.path.rstrip("/")
    if not path.endswith("/feed"):
        path = f"{path}/api/calls/{quote(call_id, safe='')}/feed"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def run_feed_client(url: str, call_id: str, token: str, *, since_ms: int | None = None,
                    output: TextIO | None = None, json_lines: bool = False, errors: TextIO | None = None,
                    max_backoff_s: float = 10.0) -> int:
    """Print the call's feed until the call ends; return the exit status.

    0: the call ended. 1: the server refused (wrong token, no such call, bad since_ms), or the
    first connection failed; the reason goes to `errors` (default stderr). 2: a bad `url`.
    130: interrupted (Ctrl-C). Without `since_ms` the server replays from the call's start.
    """
    out = output if output is not None else sys.stdout
    err = errors if errors is not None else sys.stderr
    try:
        base = feed_url(url, call_id)
    except InputError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    seen = _SeenMessages()
    resume_ms = since_ms
    failures = 0
    connected = False
    try:
        while True:
            target = base if resume_ms is None else f"{base}?since_ms={max(0, resume_ms)}"
            code, reason = 1006, ""
            try:
                with connect(target, additional_headers={"Authorization": f"Bearer {token}"},
                             open_timeout=10, max_size=2**20) as websocket:
                    connected = True
                    log.debug("call %s: feed connected to %s", call_id, target)
                    for frame in websocket:
                        failures = 0  # only a connection that delivers resets the backoff
                        _show(frame, seen, out, err, json_lines=json_lines)
                    code, reason = websocket.close_code or 1005, websocket.close_reason or ""
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    code, reason = exc.rcvd.code, exc.rcvd.reason
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                if not connected:
                    print(f"error: cannot connect to the feed at {base}: {exc}", file=err)
                    return EXIT_REFUSED
                reason = str(exc)
            if code == 1000:
                print("the call has ended", file=err)
                return EXIT_CALL_ENDED
            if code in REFUSAL_CODES:
                print(f"error: the server refused the feed of call {call_id}: {reason or 'no reason given'} "
                      f"(close code {code})", file=err)
                return EXIT_REFUSED
            if seen.newest_t_ms is not None:
                resume_ms = seen.newest_t_ms - RESUME_MARGIN_MS
            delay = min(max_backoff_s, BACKOFF_FIRST_S * 2**failures)
            failures += 1
            print(f"feed connection lost ({code}{': ' + reason if reason else ''}); "
                  f"reconnecting in {delay:.1f} s", file=err)
            time.sleep(delay)
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the output was closed (`| head`): nothing left to do
        return EXIT_CALL_ENDED


class _SeenMessages:
    """Keys of the messages seen within RESUME_MARGIN_MS of the newest, to drop replayed repeats."""

    def __init__(self) -> None:
        self.newest_t_ms: int | None = None
        self._keys: dict[Hashable, int] = {}

    def is_new(self, message: dict[str, Any]) -> bool:
        t_ms = message.get("t_ms")
        if isinstance(t_ms, int) and (self.newest_t_ms is None or t_ms > self.newest_t_ms):
            self.newest_t_ms = t_ms
        key = message_key(message)
        if key is None or not isinstance(t_ms, int):
            return True
        if key in self._keys:
            return False
        self._keys[key] = t_ms
        if len(self._keys) > 4096:
            self._forget_old()
        return True

    def _forget_old(self) -> None:
        horizon = (self.newest_t_ms or 0) - 2 * RESUME_MARGIN_MS
        self._keys = {k: t for k, t in self._keys.items() if t >= horizon}


def _show(frame: str | bytes, seen: _SeenMessages, out: TextIO, err: TextIO, *, json_lines: bool) -> None:
    try:
        message = json.loads(frame)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        print(f"warning: skipped a feed frame that is not a JSON object: {exc}", file=err)
        return
    if not seen.is_new(message):
        return
    line = frame if isinstance(frame, str) and json_lines else (
        json.dumps(message) if json_lines else format_message(message))
    print(line, file=out, flush=True)


def format_message(message: dict[str, Any]) -> str:
    """One readable line for a feed message."""
    kind = message.get("type")
    when = _clock(message.get("t_ms"))
    if kind == "sample":
        scores = message.get("scores") or {}
        top = message.get("top_emotion", "?")
        return (f"{when}  sample       {message.get('participant_id')}#{message.get('face_index')}  "
                f"{top:<8} {_num(scores.get(top), '.2f')}  valence {_num(message.get('valence'), '+.2f')}  "
                f"arousal {_num(message.get('arousal'), '+.2f')}  "
                f"attention {_num(message.get('attention'), '.2f')}")
    if kind == "participant":
        name = message.get("display_name")
        who = f"{message.get('participant_id')}" + (f" ({name})" if name else "")
        return f"{when}  participant  {who} {str(message.get('event', '?')).replace('_', ' ')}"
    if kind == "call":
        reason = message.get("reason")
        return f"{when}  call         {message.get('status')}" + (f": {reason}" if reason else "")
    if kind == "audience":
        shares = message.get("shares") or {}
        mix = ", ".join(f"{e} {round(100 * shares[e])}%" for e in sorted(
            (e for e in EMOTIONS if _is_number(shares.get(e)) and shares[e] > 0), key=lambda e: -shares[e]))
        return (f"{when}  audience     {message.get('faces')} faces, {message.get('participants')} "
                f"participants  valence {_num(message.get('mean_valence'), '+.2f')}  "
                f"arousal {_num(message.get('mean_arousal'), '+.2f')}  {mix}")
    return f"{when}  {kind}  {json.dumps(message)}"


def _clock(t_ms: Any) -> str:
    if not isinstance(t_ms, int):
        return "--:--.-"
    tenths = max(0, t_ms) // 100
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    seconds = f"{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{minutes:02d}:{seconds}" if hours else f"{minutes:02d}:{seconds}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if _is_number(value) else "?"
