"""The server's virtual clock (server/virtual_clock.py) against hand computations, and the
scenario keys that feed it (link, device profiles)."""

from __future__ import annotations

import csv

import pytest

from ecufl.proto import RoundReport
from ecufl.scenarios import schema
from ecufl.server import virtual_clock as vc


def report(train: float, down: int, up: int, projected: float | None = None) -> RoundReport:
    r = RoundReport(train_seconds=train, bytes_received=down, bytes_sent=up)
    if projected is not None:
        r.board_seconds_projected = projected
    return r


def test_transfer_is_bytes_over_bandwidth_plus_latency_each_way():
    lte = vc.get_link("lte-uplink")
    # 1 MB down at 20 Mbit/s = 0.4 s, 0.5 MB up at 5 Mbit/s = 0.8 s, + 2 x 50 ms
    assert lte.transfer_seconds(1_000_000, 500_000) == pytest.approx(0.4 + 0.05 + 0.8 + 0.05)
    can = vc.get_link("can-fd-gateway")
    assert can.transfer_seconds(100_000, 100_000) == pytest.approx(2 * (0.4 + 0.005))
    eth = vc.get_link("ethernet-100")
    assert eth.transfer_seconds(0, 0) == pytest.approx(0.001)


def test_board_clients_use_the_projection_host_clients_their_train_seconds():
    clock = vc.VirtualClock(vc.get_link("ethernet-100"))
    board = clock.client(report(train=9.0, down=125_000, up=250_000, projected=0.2))
    assert board["projected_seconds"] == 0.2  # emulated wall time (9 s) says nothing about the board
    assert board["transfer_seconds"] == pytest.approx(0.01 + 0.0005 + 0.02 + 0.0005)
    assert board["client_virtual_seconds"] == pytest.approx(0.2 + 0.031)
    host = clock.client(report(train=1.5, down=0, up=0))
    assert host["projected_seconds"] == 1.5


def test_a_round_lasts_as_long_as_its_slowest_client_and_time_adds_up():
    clock = vc.VirtualClock(vc.get_link("can-fd-gateway"))
    a = clock.client(report(1.0, 50_000, 50_000, projected=0.5))
    b = clock.client(report(1.0, 50_000, 50_000, projected=2.0))
    r1 = clock.advance([a, b])
    assert r1["virtual_seconds"] == pytest.approx(2.0 + 2 * (0.2 + 0.005))
    r2 = clock.advance([a])
    assert r2["virtual_time"] == pytest.approx(r1["virtual_seconds"] + 0.5 + 0.41)
    assert clock.advance([]) == {"virtual_seconds": 0.0, "virtual_time": pytest.approx(r2["virtual_time"])}


def test_resume_continues_from_the_last_round(tmp_path):
    path = tmp_path / "rounds.csv"
    assert vc.resumed_total(path) == 0.0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["round", "virtual_seconds", "virtual_time"])
        w.writeheader()
        w.writerows([{"round": 0}, {"round": 1, "virtual_seconds": 1.5, "virtual_time": 1.5},
                     {"round": 2, "virtual_seconds": 2.0, "virtual_time": 3.5}])
    assert vc.resumed_total(path) == 3.5


def test_unknown_link_is_one_line():
    with pytest.raises(vc.UnknownLink, match="unknown link profile 'wifi'; links: ethernet-100, can-fd-gateway"):
        vc.get_link("wifi")


@pytest.mark.parametrize("text,message", [
    ('link = "wifi"', "link: unknown link profile 'wifi'; links: ethernet-100"),
    ('link = 100', "link: Input should be a valid string"),
    ('profile = "imx9"', "profile: unknown device profile 'imx9'; profiles: imx6, imx6-792, imx6-1200, host"),
    ('profiles = ["imx6", "imx6", "host", "imx7"]', "profiles: unknown device profile 'imx7'"),
])
def test_scenario_link_and_profiles_are_validated(tmp_path, text, message):
    p = tmp_path / "s.toml"
    p.write_text(f"nodes = 4\nrounds = 1\n{text}\n")
    with pytest.raises(schema.ScenarioError, match=message.replace("(", r"\(")) as e:
        schema.load(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_imx6_fleet_scenario_reaches_the_server():
    cfg = schema.load(schema.Path(__file__).resolve().parents[1] / "scenarios" / "imx6-fleet.toml").config()
    assert cfg.profiles == ["imx6"] and cfg.link == "ethernet-100" and cfg.rounds == 3
    assert cfg.kernels == ["c"]  # one for all nodes


def test_a_host_clients_projected_time_is_its_measured_train_time(mnist_dir):
    from test_fleet_client import NODE, call, config

    _, r = call(NODE, config())
    assert r.profile == "host" and not r.HasField("board_seconds_projected")
    row = vc.VirtualClock(vc.get_link("ethernet-100")).client(r)
    assert row["projected_seconds"] == r.train_seconds > 0
