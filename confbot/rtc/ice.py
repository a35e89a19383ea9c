"""Which local addresses the bot's WebRTC connections gather ICE host candidates on.

aiortc offers no setting for this: it asks aioice, which lists every non-loopback
interface. `restrict_host_candidates` narrows that list for the whole process, which is
what a deployment that must keep media on one interface (or on loopback) needs.

Loopback works only between aiortc peers (both pinned to 127.0.0.1). Janus (libnice) never
gathers a candidate on the loopback interface, so a bot talking to a Janus on the same machine
needs a non-loopback local address on both sides (the tests use a veth address, see
tests/support/ice.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


def restrict_host_candidates(addresses: Sequence[str]) -> None:
    """Gather host candidates only on `addresses` from now on, in this process.

    An empty sequence leaves aiortc's default (all non-loopback interfaces) in place.
    """
    if not addresses:
        return
    import aioice.ice

    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses  # type: ignore[assignment]
    log.info("ICE host candidates restricted to %s", ", ".join(chosen))
