"""Trimming receiver-side bandwidth estimation out of offers."""

from __future__ import annotations

from confbot.rtc.sdp import without_receiver_estimation

OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
]) + "\r\n"


def test_abs_send_time_and_remb_go_everything_else_stays() -> None:
    trimmed = without_receiver_estimation(OFFER)
    assert "abs-send-time" not in trimmed and "goog-remb" not in trimmed
    kept = [line for line in OFFER.split("\r\n")
            if "abs-send-time" not in line and "goog-remb" not in line]
    assert trimmed.split("\r\n") == kept
    assert trimmed.endswith("\r\n")


def test_offers_without_them_and_empty_text_are_unchanged() -> None:
    plain = without_receiver_estimation(OFFER)
    assert without_receiver_estimation(plain) == plain
    assert without_receiver_estimation("") == ""
