"""A supernode board's Python client stack on the A9 (kernels/arm/clientstack.py).

The committed table (kernels/arm/measured/client-stack-a9.json, `ecufl calibrate --client-stack`)
regenerates: the interpreter start and `import numpy`, counted again on Debian's armhf python3.11
under qemu-arm -cpu cortex-a9, land within clientstack.TOLERANCE (2%) of the table's instructions
(about 10 s here). And the virtual clock adds the table's figures to an emulated board's round, by
mode, without running qemu (fast)."""

from __future__ import annotations

import pytest

from ecufl.kernels.arm import clientstack as cs
from ecufl.kernels.arm import profiles
from ecufl.proto import RoundReport
from ecufl.server.virtual_clock import VirtualClock, get_link


def _have_stack() -> bool:
    try:
        cs._python()
        from ecufl.kernels.arm import count

        count.qemu_path(), count.plugin_path()
        return True
    except Exception:  # noqa: BLE001 - any missing piece: skip with the reason below
        return False


@pytest.mark.arm
@pytest.mark.skipif(not _have_stack(), reason="needs `make build/armhf-python/PACKAGES qemu-plugin` and qemu-arm")
def test_counted_phases_regenerate_within_tolerance():
    table = cs.table()
    # as `ecufl calibrate --client-stack` does: one uncounted pass compiles the .pyc files (a fresh
    # sysroot from dpkg -x has none; a board's packages do), so the counted runs read bytecode
    cs.run_probe("numpy", counted=False)
    start = cs.run_probe("start")
    numpy = cs.run_probe("numpy")
    new = {"phases": {"interpreter_start": {"instructions": start.total},
                      "import_numpy": {"instructions": numpy.total - start.total}}}
    old = {"phases": {k: table["phases"][k] for k in ("interpreter_start", "import_numpy")}}
    assert cs.compare(new, old) == []
    assert cs.compare({"phases": {"import_numpy": {"instructions": 2 * new["phases"]["import_numpy"]["instructions"]}}},
                      {"phases": {"import_numpy": table["phases"]["import_numpy"]}})  # the check can fail


def test_table_says_what_is_counted_and_what_is_extrapolated():
    p = cs.table()["phases"]
    for name in ("interpreter_start", "import_numpy", "data", "serialise"):
        assert p[name]["counted"] is True, name
    assert p["import_client"]["counted"] is False and "extrapolated" in p["import_client"]
    a = cs.table()["agent"]
    assert a["counted"] is True and a["tls_handshake_cycles"] > 0 and a["io_cycles_per_byte"] > 0
    assert p["import_client"]["cycles"] == pytest.approx(p["import_numpy"]["cycles"] * p["import_client"]["host_ratio"],
                                                         rel=1e-3)  # the ratio is stored rounded


def _report(**kw) -> RoundReport:
    base = dict(kernel="c", profile="imx6", board_seconds_projected=0.04, bytes_sent=95696, bytes_received=95696)
    return RoundReport(**(base | kw))


def test_virtual_clock_adds_the_board_client_by_mode():
    clock = VirtualClock(get_link("ethernet-100"))
    hz = profiles.get("imx6").clock_hz
    c = cs.supernode_cycles(cs.table())
    cold = clock.client(_report(startup_seconds=3.5, data_seconds=0.8))
    assert cold["board_mode"] == "supernode"
    assert cold["board_start_seconds"] == pytest.approx(c["start"] / hz)
    assert cold["board_data_seconds"] == pytest.approx(c["data"] / hz)
    rest = cold["board_start_seconds"] + cold["board_data_seconds"] + cold["board_serialise_seconds"]
    assert cold["client_virtual_seconds"] == pytest.approx(0.04 + rest + cold["transfer_seconds"])
    warm = clock.client(_report())  # a ClientApp that had its data: serialisation only
    assert warm["board_start_seconds"] == warm["board_data_seconds"] == 0 < warm["board_serialise_seconds"]
    # a warm node's forked ClientApp reports its age since the fork as start-up and may cut its shard
    forked = clock.client(_report(client_process="forked", startup_seconds=0.4, data_seconds=0.02,
                                  data_load_seconds=0.0))
    assert forked["board_start_seconds"] == forked["board_data_seconds"] == 0
    fresh = clock.client(_report(client_process="fresh", startup_seconds=3.5, data_seconds=0.9, data_load_seconds=0.8))
    assert fresh["board_start_seconds"] == cold["board_start_seconds"] and fresh["board_data_seconds"] > 0
    slow = clock.client(_report(profile="imx6-792", startup_seconds=3.5))
    assert slow["board_start_seconds"] == pytest.approx(cold["board_start_seconds"] * 1e9 / 792e6)
    host = clock.client(RoundReport(kernel="c", profile="host", train_seconds=0.5, bytes_sent=95696))
    assert "board_mode" not in host and host["client_virtual_seconds"] == pytest.approx(0.5 + host["transfer_seconds"])
    agent = clock.client(_report(kernel="remote:b1", startup_seconds=3.5, data_seconds=0.8))
    assert agent["board_mode"] == "agent" and agent["board_start_seconds"] == agent["board_data_seconds"] == 0.0
    a = cs.table()["agent"]
    assert agent["board_io_seconds"] == pytest.approx(
        (a["tls_handshake_cycles"] + a["io_fixed_cycles"] + a["io_cycles_per_byte"] * 95696) / hz)
    assert agent["client_virtual_seconds"] == pytest.approx(
        0.04 + agent["board_serialise_seconds"] + agent["board_io_seconds"] + agent["transfer_seconds"])
    assert agent["board_supernode_start_seconds"] == pytest.approx(cold["board_start_seconds"])  # both modes shown


def test_agent_count_uses_the_fleet_pki_key_type():
    """The counted handshake is the deployed one's: the same curve and signature hash."""
    from ecufl.calibrate_cli import AGENT_CURVE
    from ecufl.fleet.deploy import certs

    assert certs.CURVE.name == AGENT_CURVE


def test_report_sets_host_and_board_split_side_by_side(tmp_path):
    """report.html of an emulated run: per kernel, the host's measured split and the board's
    projection in each mode (the run's own mode with its wait for the slowest client)."""
    from ecufl import report
    from ecufl.server.results import Results

    res = Results(tmp_path)
    clock = VirtualClock(get_link("ethernet-100"))
    rows = []
    for pid, startup in enumerate((3.5, 0.0)):
        r = _report(partition_id=pid, startup_seconds=startup, data_seconds=0.8 if startup else 0.0,
                    train_seconds=2.0, setup_seconds=0.01, serialise_seconds=0.002, samples=1000)
        rows.append({"round": 1, "accepted": 1, "reply_seconds": 7.0, "kernel": "c", "dtype": "float32",
                     "profile": "imx6", "startup_seconds": startup, "data_seconds": r.data_seconds,
                     "setup_seconds": 0.01, "train_seconds": 2.0, "serialise_seconds": 0.002, "samples": 1000,
                     "peak_rss_bytes": 2**28, "bytes_sent": r.bytes_sent} | clock.client(r))
    res.add_clients(rows)
    res.add_round({"round": 0, "test_accuracy": 0.1})
    res.add_round({"round": 1, "test_accuracy": 0.5, **clock.advance(rows)})
    split = report.board_split(report.collect(tmp_path))
    assert [r[1] for r in split] == ["this host (measured)", "A9 projected, supernode mode (this run's)",
                                     "A9 projected, agent mode"]
    host, supernode, agent = split
    assert host[3] == "1.750" and host[6] == "2.000"  # mean client start and train on this host
    assert float(supernode[3]) == pytest.approx(rows[0]["board_start_seconds"] / 2, abs=1e-3)
    assert float(supernode[6]) == pytest.approx(0.04) and float(agent[3]) == 0.0
    assert float(supernode[9]) > 0  # the warm client waits for the cold one
    assert "Round split on this host and on the board" in report.build(tmp_path).read_text()
