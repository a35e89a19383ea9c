"""Offers the bot answers are trimmed of receiver-side bandwidth estimation.

aiortc estimates the bandwidth of every incoming video stream that carries the abs-send-time
header extension, in Python, on the event loop, for every packet, and sends REMB reports back.
With 16 publishers (`confbot bench call`, py-spy for 30 s) that was nearly half of the event
loop's busy time, for nothing the bot needs: it samples a few frames a second and asks for the
smallest simulcast layer that holds a face. Without the extension in the offer, aiortc's answer
leaves it out, publishers stop stamping packets with it, and the estimator never runs. Senders
still get the bot's RTCP receiver reports (loss and jitter), NACKs and PLIs; Janus estimates
bandwidth toward its publishers itself.
"""

from __future__ import annotations

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def without_receiver_estimation(sdp: str) -> str:
    """`sdp` without the abs-send-time extension and the goog-remb feedback it drives."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=extmap:") and line.split()[1:2] == [ABS_SEND_TIME]:
            continue
        if line.startswith("a=rtcp-fb:") and line.split()[1:2] == ["goog-remb"]:
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n" if kept else sdp
