"""scenarios/imx6-fleet.toml end to end on real Flower processes: four emulated i.MX6 ECUs train
with the ARM build of the C kernel (NEON path) under qemu-arm, and the results carry projected
board seconds per client per round (clients.csv), the rest of the client projected for the board (board_*_seconds: a supernode board's
Python ClientApp start, MNIST load and serialisation) and the server's virtual time (rounds.csv).
About 2.5 minutes here: each round is ~30 s of four qemu trainers and fresh ClientApp processes
sharing two cores."""

from __future__ import annotations

import pytest

from conftest import ROOT
from test_fleet import ecufl, fleet, results_of, rows  # noqa: F401 - fleet: the 4-node fleet fixture

pytestmark = [pytest.mark.slow, pytest.mark.arm]


def test_imx6_fleet_end_to_end(fleet, tmp_path):  # noqa: F811
    from ecufl.server.virtual_clock import get_link

    proc = ecufl("fleet", "run", str(ROOT / "scenarios" / "imx6-fleet.toml"), "--state", str(fleet),
                 "--results", str(tmp_path), timeout=600)
    res = results_of(proc)
    rounds = rows(res / "rounds.csv")
    clients = rows(res / "clients.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2, 3]
    assert float(rounds[-1]["test_accuracy"]) > float(rounds[0]["test_accuracy"]) + 0.2  # the boards learned
    link = get_link("ethernet-100")
    assert float(rounds[0]["virtual_time"]) == 0.0  # the initial weights: no time has passed
    total = 0.0
    for rnd in (1, 2, 3):
        mine = sorted((c for c in clients if int(c["round"]) == rnd), key=lambda c: int(c["partition_id"]))
        assert [int(c["partition_id"]) for c in mine] == [0, 1, 2, 3], f"round {rnd}: a row per client"
        for c in mine:
            where = f"round {rnd} partition {c['partition_id']}"
            assert (c["accepted"], c["error"], c["profile"], c["kernel"]) == ("1", "", "imx6", "c"), where
            assert c["trainer"].startswith("qemu-arm -cpu cortex-a9") and int(c["arm_instructions"]) > 0, where
            projected = float(c["projected_seconds"])
            assert projected == float(c["board_seconds_projected"]) > 0, where  # the board's, not the host's
            assert projected < float(c["train_seconds"]), where  # ~40 ms on the A9 vs seconds under qemu
            transfer = link.transfer_seconds(int(c["bytes_received"]), int(c["bytes_sent"]))
            assert float(c["transfer_seconds"]) == pytest.approx(transfer), where
            # the rest of the client on its board (a supernode board: the Python ClientApp), from the
            # committed table of counted ARM instructions (kernels/arm/measured/client-stack-a9.json)
            assert c["board_mode"] == "supernode", where
            board = [float(c[f"board_{p}_seconds"]) for p in ("start", "data", "serialise")]
            assert [float(c[f"board_supernode_{p}_seconds"]) for p in ("start", "data", "serialise")] == board, where
            assert board[2] > 0, where  # npy decode + encode, every round
            assert c["client_process"] in ("fresh", "forked"), where
            assert (board[0] > 0) == (c["client_process"] == "fresh"), where  # interpreter + imports
            assert (board[1] > 0) == (float(c["data_load_seconds"]) > 0), where  # this process loaded MNIST
            assert float(c["client_virtual_seconds"]) == pytest.approx(projected + sum(board) + transfer), where
            assert 0 < int(c["trainer_peak_rss_bytes"]) < 1024 * 2**20 < int(c["peak_rss_bytes"]) + 1024 * 2**20
        row = rounds[rnd]
        slowest = max(float(c["client_virtual_seconds"]) for c in mine)
        assert float(row["virtual_seconds"]) == pytest.approx(slowest), f"round {rnd}"
        total += slowest
        assert float(row["virtual_time"]) == pytest.approx(total), f"round {rnd}"
    page = (res / "report.html").read_text()
    assert "Accuracy against projected board time" in page
    assert "Round split on this host and on the board" in page and "A9 projected, supernode mode (this run&#x27;s)" in page
