"""Virtual time, in the manner of FedScale: how long a round would last on the boards and the link
the scenario targets, not on this (shared, noisy) machine.

A client's virtual round = its projected training time + the rest of its client on the board +
the transfer of the global weights down and of its new weights up over the scenario's link:

    projected   board_seconds_projected from the RoundReport (emulated i.MX6: exact ARM
                instruction counts x the Cortex-A9 cost model / the profile's clock), or, for a
                host-profile client (no board to project onto), its measured train_seconds
    board       (emulated i.MX6 only) the client's other parts on its board, by the board's mode
                (``kernels/arm/clientstack.py``, the committed table of counted ARM instructions):
                a supernode board (every kernel but ``remote``) pays its Python ClientApp's start
                (interpreter + imports) when the host's ClientApp was a fresh process
                (client_process "fresh", not forked from a warm parent), the MNIST load when the
                host's loaded it (data_load_seconds > 0; other workloads' data is not projected),
                and the npy decode
                + encode of the weights every round; an agent board (kernel ``remote``) starts and
                loads once per boot, and its per-round I/O and TLS are priced only when the table has
                an ``agent`` section. Both modes' figures are written (board_supernode_*,
                board_agent_*); the clock adds the node's own mode's (board_*_seconds).
    transfer    bytes_received * 8 / down_bps + latency  +  bytes_sent * 8 / up_bps + latency

A round lasts as long as its slowest accepted client (the aggregate waits for it); a round in which
no client was accepted lasts 0 s. The virtual time of a run is the sum of its rounds. Not modelled:
the server's aggregation and evaluation, queueing on a shared link, packet loss, protocol overhead
beyond the weight payloads (npy headers included), the SuperNode's own polling, the kernel's
system-call time on the board (file and socket I/O run on the host under qemu-user).

The links are ecufl.links.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecufl.links import DEFAULT_LINK, LINKS, Link, UnknownLink, get_link  # noqa: F401 - the clock's links


BOARD_PARTS = ("start", "data", "serialise", "io")
CLOCK_COLUMNS = (["projected_seconds", "board_mode"] + [f"board_{p}_seconds" for p in BOARD_PARTS]
                 + [f"board_supernode_{p}_seconds" for p in BOARD_PARTS[:3]]
                 + [f"board_agent_{p}_seconds" for p in BOARD_PARTS]
                 + ["transfer_seconds", "client_virtual_seconds"])


def board_mode(report: Any) -> str:
    """``agent`` when the board's native agent trained (kernel ``remote``), else ``supernode``."""
    return "agent" if str(report.kernel).startswith("remote") else "supernode"


def board_parts(report: Any) -> dict[str, Any]:
    """The client's projected board seconds besides training, both modes and the node's own; {}
    for a host-profile client or when the client-stack table is missing (one-line note kept)."""
    from ecufl.kernels.arm import clientstack, profiles

    name = report.profile if report.HasField("profile") else "host"
    try:
        profile = profiles.get(name)
    except profiles.UnknownProfile:
        return {}
    if not profile.emulated:
        return {}
    try:
        table = clientstack.table()
    except clientstack.ClientStackError:
        return {}
    # the counted data phase is MNIST's load; another workload's data (CAN windows: layers not
    # 784 -> ... -> 10) is not projected
    mnist = not report.layers or (report.layers[0] == 784 and report.layers[-1] == 10)
    # a fresh ClientApp process pays the interpreter and its imports; a forked one (warm node) or a
    # reused one (simulation actor) does not. Reports of older clients: any start-up counts.
    if report.HasField("client_process"):
        fresh = report.client_process == "fresh"
    else:
        fresh = float(report.startup_seconds) > 0
    if report.HasField("data_load_seconds"):
        loaded = float(report.data_load_seconds) > 0 and mnist
    else:
        loaded = float(report.data_seconds) > 0 and mnist
    weight_bytes = int(report.bytes_sent) or int(report.bytes_received)
    row: dict[str, Any] = {}
    own = board_mode(report)
    for mode in ("supernode", "agent"):
        parts = clientstack.board_overhead(profile, mode, fresh_process=fresh, loaded_data=loaded,
                                           weight_bytes=weight_bytes, t=table)
        for part, secs in parts.items():
            row[f"board_{mode}_{part}_seconds"] = secs
        if mode == own:
            row["board_mode"] = mode
            row |= {f"board_{part}_seconds": secs for part, secs in parts.items()}
    return row


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
        board = board_parts(report)
        rest = sum(board.get(f"board_{p}_seconds", 0.0) for p in BOARD_PARTS)
        return {"projected_seconds": proj, **board, "transfer_seconds": transfer,
                "client_virtual_seconds": proj + rest + transfer}

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
