"""The networks between an ECU and the server, for the virtual clock (``ecufl.server.virtual_clock``)
and the scenario schema.

Link profiles (bandwidth in bit/s, latency one way, in seconds):

    name             down bit/s   up bit/s   latency   what it stands for
    ethernet-100     100 M        100 M      0.5 ms    100BASE-TX automotive Ethernet to the backend
    can-fd-gateway   2 M          2 M        5 ms      CAN FD at 2 Mbit/s data phase via a gateway ECU
    lte-uplink       20 M         5 M        50 ms     a telematics unit on LTE (uplink-limited)

Figures are nominal line rates (no framing overhead): a lower bound on the transfer time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecufl.kernels.arm.profiles import lookup


@dataclass(frozen=True)
class Link:
    name: str
    down_bps: float  # server -> client
    up_bps: float  # client -> server
    latency_s: float  # one way
    summary: str

    def transfer_seconds(self, bytes_down: int, bytes_up: int) -> float:
        return (bytes_down * 8 / self.down_bps + self.latency_s) + (bytes_up * 8 / self.up_bps + self.latency_s)


LINKS: dict[str, Link] = {link.name: link for link in [
    Link("ethernet-100", 100e6, 100e6, 0.5e-3, "100 Mbit/s Ethernet, 0.5 ms"),
    Link("can-fd-gateway", 2e6, 2e6, 5e-3, "CAN FD gateway, 2 Mbit/s, 5 ms"),
    Link("lte-uplink", 20e6, 5e6, 50e-3, "LTE, 20 Mbit/s down, 5 Mbit/s up, 50 ms"),
]}
DEFAULT_LINK = "ethernet-100"


class UnknownLink(ValueError):
    pass


def get_link(name: str) -> Link:
    return lookup(LINKS, name, UnknownLink, "link profile", "links")
