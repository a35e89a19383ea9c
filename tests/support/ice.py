"""Keep the WebRTC media of the tests on a local virtual link, never on a real interface.

Measured here with Janus 1.1.2 (Debian, libnice) and aiortc 1.16 / aioice 0.13:
- Janus (libnice) never gathers a candidate on the loopback interface: with
  `ice_enforce_list = "lo"` or `"127.0.0.1"` it silently falls back to every other interface.
- aioice also skips 127.0.0.1 when it gathers host candidates.
- A 127.0.0.1 candidate on one side and a non-loopback one on the other do not connect.

So the tests give both sides a local, non-loopback address that is not on any real network: a
veth pair with both ends in this network namespace, `cbice0` holding 10.231.0.1/32 and its peer
`cbice1` holding nothing. Packets to an own address are delivered inside the kernel, so the
media never leaves the machine and never touches the host's real interfaces. Janus gets
`ice_enforce_list = "10.231.0.1"` and no STUN server; aiortc, in the test process
(`pinned_ice`) and in the publisher processes (`--ice-address 10.231.0.1`), gathers that one
address only and asks no STUN server. Every HTTP API in the tests still binds to 127.0.0.1.

Creating the link needs root and `ip` (iproute2). `ensure_ice_link()` reuses a link that is
already there (made by an earlier or a concurrent test session, or by CI beforehand as root:
`python -m tests.support.ice up`), so only the first session on a machine needs root. The
`ice_address` fixture skips, saying why, when there is no link and it cannot make one.

The link is left in place when a session ends, on purpose: test sessions on the same machine
share it (several pytest runs may use it at once), and deleting it under a running Janus would
break that session's calls. It holds one /32 address and routes nothing, so leaving it is
harmless; `python -m tests.support.ice down` removes it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

ICE_LINK = "cbice0"
ICE_PEER = "cbice1"
ICE_ADDRESS = "10.231.0.1"


class IceLinkError(RuntimeError):
    """The local ICE link is not there and could not be made; the message says why."""


def _ip_command() -> str:
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )
    if ip is None:
        raise IceLinkError("the `ip` command (Debian package iproute2) is not installed")
    return ip


def _run_ip(ip: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ip, *args], capture_output=True, text=True, timeout=10, check=False)


def _link_state(ip: str, link: str) -> tuple[bool, list[str], bool] | None:
    """(is a veth, IPv4 addresses, operationally up) of `link`; None when absent.

    A veth is operationally up only when both of its ends are set up.
    """
    result = _run_ip(ip, "-j", "-d", "addr", "show", "dev", link)
    if result.returncode != 0:
        return None
    try:
        (info,) = json.loads(result.stdout)
    except ValueError as exc:
        raise IceLinkError(f"cannot read `ip -j addr show dev {link}`: {result.stdout!r}") from exc
    is_veth = (info.get("linkinfo") or {}).get("info_kind") == "veth"
    addresses = [a["local"] for a in info.get("addr_info", []) if a.get("family") == "inet"]
    up = info.get("operstate") == "UP"
    return is_veth, addresses, up


def _must(ip: str, *args: str, exists_ok: bool = False) -> None:
    result = _run_ip(ip, *args)
    if result.returncode == 0 or (exists_ok and "File exists" in result.stderr):
        return
    hint = "" if os.geteuid() == 0 else " (creating the link needs root)"
    raise IceLinkError(f"`ip {' '.join(args)}` failed{hint}: {result.stderr.strip() or result.returncode}")


def ensure_ice_link(
    *, link: str = ICE_LINK, peer: str = ICE_PEER, address: str = ICE_ADDRESS
) -> str:
    """Make sure veth `link` (peer `peer`) exists, is up and holds `address`/32; return `address`.

    Reuses what is already there, and is safe to call from several processes at once. Raises
    IceLinkError, saying why, when the link is missing and cannot be made (not root, no `ip`),
    or when `link` exists but is not a veth.
    """
    ipaddress.IPv4Address(address)  # a bad address is a ValueError here, not an `ip` error
    ip = _ip_command()
    state = _link_state(ip, link)
    if state is not None and state[0] and address in state[1] and state[2]:
        return address  # the common case: made earlier; needs no privileges
    if state is None:
        _must(ip, "link", "add", link, "type", "veth", "peer", "name", peer, exists_ok=True)
        state = _link_state(ip, link)
        if state is None:
            raise IceLinkError(f"created veth {link}, but `ip addr show dev {link}` cannot see it")
    if not state[0]:
        raise IceLinkError(f"network link {link} exists but is not a veth; remove it or pick another name")
    if address not in state[1]:
        _must(ip, "addr", "add", f"{address}/32", "dev", link, exists_ok=True)
    # Both ends up: a veth whose peer is down has no carrier, and libnice skips it.
    _must(ip, "link", "set", link, "up")
    _must(ip, "link", "set", peer, "up")
    return address


def remove_ice_link(*, link: str = ICE_LINK) -> bool:
    """Delete the veth pair (both ends go together); False when it was not there."""
    ip = _ip_command()
    if _link_state(ip, link) is None:
        return False
    _must(ip, "link", "del", link)
    return True


def pin_ice_address(address: str) -> None:
    """For the rest of this process, aiortc gathers only a host candidate on `address`, and a
    PeerConnection made without `iceServers` asks no STUN server (aiortc's default would send
    a request to stun.l.google.com: traffic off the machine)."""
    from aiortc.rtcicetransport import RTCIceGatherer

    from confbot.rtc.ice import restrict_host_candidates

    restrict_host_candidates([address])
    RTCIceGatherer.getDefaultIceServers = classmethod(_no_ice_servers)  # type: ignore[method-assign,assignment]


def _no_ice_servers(cls: type) -> list[object]:
    return []


# --------------------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def ice_address() -> str:
    """The local address the tests' WebRTC media runs over: 10.231.0.1 on veth `cbice0`.

    Creates the link if it is missing (root only) and leaves it in place afterwards (see the
    module docstring). Skips, saying why, when it is missing and cannot be made.
    """
    try:
        return ensure_ice_link()
    except (IceLinkError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(
            f"no local ICE link {ICE_LINK} ({ICE_ADDRESS}): {exc}. Janus (libnice) gathers no "
            f"candidate on loopback; as root run `python -m tests.support.ice up` once"
        )


@pytest.fixture
def pinned_ice(ice_address: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """aiortc in this test process gathers only a host candidate on `ice_address` and asks no
    STUN server by default (see `pin_ice_address`); both are restored after the test."""
    import aioice.ice
    from aiortc.rtcicetransport import RTCIceGatherer

    # Recorded first, so that the monkeypatch puts aiortc's own functions back at teardown.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    monkeypatch.setattr(RTCIceGatherer, "getDefaultIceServers", RTCIceGatherer.getDefaultIceServers)
    pin_ice_address(ice_address)
    yield ice_address


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.ice",
        description=f"Create or remove the veth {ICE_LINK} ({ICE_ADDRESS}) the WebRTC tests use.",
    )
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            print(f"{ICE_LINK}: {ensure_ice_link()}")
        else:
            print(f"{ICE_LINK}: {'removed' if remove_ice_link() else 'not there'}")
    except IceLinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
