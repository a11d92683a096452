"""Virtual time, in the manner of FedScale: how long a round would last on the boards and the link
the scenario targets, not on this (shared, noisy) machine.

A client's virtual round = its projected training time + the transfer of the global weights down
and of its new weights up over the scenario's link:

    projected   board_seconds_projected from the RoundReport (emulated i.MX6: exact ARM
                instruction counts x the Cortex-A9 cost model / the profile's clock), or, for a
                host-profile client (no board to project onto), its measured train_seconds
    transfer    bytes_received * 8 / down_bps + latency  +  bytes_sent * 8 / up_bps + latency

A round lasts as long as its slowest accepted client (the aggregate waits for it); a round in which
no client was accepted lasts 0 s. The virtual time of a run is the sum of its rounds. Not modelled:
the server's aggregation and evaluation, queueing on a shared link, packet loss, protocol overhead
beyond the weight payloads (npy headers included), the client's start-up and data loading.

The links are ecufl.links.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecufl.links import DEFAULT_LINK, LINKS, Link, UnknownLink, get_link  # noqa: F401 - the clock's links


def projected_seconds(report: Any) -> float:
    """The client's training time on its board: the projection when there is one, else (host
    profile) the measured train seconds."""
    if report.HasField("board_seconds_projected"):
        return float(report.board_seconds_projected)
    return float(report.train_seconds)


@dataclass
class VirtualClock:
    """The run's virtual time; ``elapsed`` starts at the resumed run's total."""

    link: Link
    elapsed: float = 0.0

    def client(self, report: Any) -> dict[str, float]:
        """The clients.csv columns of one client's round."""
        proj = projected_seconds(report)
        transfer = self.link.transfer_seconds(int(report.bytes_received), int(report.bytes_sent))
        return {"projected_seconds": proj, "transfer_seconds": transfer, "client_virtual_seconds": proj + transfer}

    def advance(self, accepted: list[dict[str, float]]) -> dict[str, float]:
        """End a round whose accepted clients had the ``client`` rows given; the rounds.csv columns."""
        seconds = max((c["client_virtual_seconds"] for c in accepted), default=0.0)
        self.elapsed += seconds
        return {"virtual_seconds": seconds, "virtual_time": self.elapsed}


def resumed_total(rounds_csv: Path) -> float:
    """The virtual time at the last row of rounds.csv (0 if the run has none or predates the clock)."""
    if not rounds_csv.exists():
        return 0.0
    with open(rounds_csv, newline="") as f:
        rounds = list(csv.DictReader(f))
    for row in reversed(rounds):
        try:
            return float(row.get("virtual_time") or "")
        except ValueError:
            continue
    return 0.0
