"""The CAN workload (issue 17): bus description, generator (bit-exact with cantools), attacks and
their labels, log readers and writers, features, detectors, and the autoencoder on the kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecufl.can import attacks, bus as busmod, codec, dbc as dbcmod, detect, features, logs
from ecufl.can.codec import FAMILIES, STEALTHY, Frames
from ecufl.can.generate import Vehicle
from ecufl.kernels.base import check_data
from ecufl.kernels.prng import EpochOrder, init_params
from ecufl.kernels.reference import NumpyKernel, TextbookKernel

# cantools and opendbc (the `can` extra, part of `test`) are needed only where a DBC is read
needs_dbc = pytest.mark.skipif(dbcmod.cantools is None or dbcmod.opendbc is None,
                               reason="the `can` extra (cantools, opendbc) is not installed")


@pytest.fixture(scope="module")
def bus():
    return busmod.default_bus()


@pytest.fixture(scope="module")
def dbc():
    return dbcmod.load_dbc(dbcmod.opendbc_path())


@pytest.fixture(scope="module")
def attacked(bus):
    return attacks.trace(bus, 7, 1, 480.0, attacks.parse_families("all"))


@pytest.fixture(scope="module")
def short_attacked(bus):
    return attacks.trace(bus, 7, 3, 100.0, ("dos", "fuzzing", "spoofing", "masquerade", "suspension"))


# -- bus description ---------------------------------------------------------------------------------
@needs_dbc
def test_shipped_bus_is_the_conversion_of_opendbcs_ford_dbc(bus, tmp_path):
    fresh = dbcmod.convert(dbcmod.opendbc_path())
    busmod.write_bus(fresh, tmp_path / "bus.json")
    assert (tmp_path / "bus.json").read_text() == busmod.DEFAULT_BUS.read_text()
    assert len(bus.messages) == 150 and round(bus.frames_per_second()) == 2750
    roles = {s.role for m in bus.messages for s in m.signals}
    assert {"counter", "checksum", "speed", "rpm", "pedal", "gear"} <= roles


@needs_dbc
def test_a_dbc_cantools_cannot_parse_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.dbc"
    bad.write_text('VERSION ""\nBO_ 12 X: 8 Y\n SG_ broken : 0|8@1+ (1,0) [0|0] "" Z\nnonsense here\n')
    with pytest.raises(busmod.BusError) as e:
        dbcmod.convert(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "bus.json").write_text('{"format": "ecufl-canbus/1", "messages": [{"name": 1}]}')
    with pytest.raises(busmod.BusError, match="malformed bus description"):
        busmod.load_bus(tmp_path / "bus.json")


# -- generator ------------------------------------------------------------------------------------------
@needs_dbc
def test_frames_are_bit_exact_with_cantools_encoder(bus, dbc, attacked):
    """Every message, normal and attacked frames: our payload == cantools.encode(our raw values), and
    cantools.decode(our payload) == our raw values."""
    rng = np.random.default_rng(3)
    picked = []
    legit = attacked.label != FAMILIES.index("fuzzing")  # fuzzed payloads set bits no signal covers
    for m in bus.messages:
        idx = np.flatnonzero((attacked.id == m.id) & legit)
        picked += list(rng.choice(idx, min(3, len(idx)), replace=False))
    picked += list(rng.choice(np.flatnonzero((attacked.label > 0) & legit & np.isin(attacked.id, bus.ids)), 100))
    for i in picked:
        m = bus.by_id(int(attacked.id[i]))
        data = bytes(attacked.data[i][: m.dlc])
        raw = {s.name: int(codec.get_raw(attacked.word[i : i + 1], s)[0]) for s in m.signals}
        assert dbc.encode_message(m.id, raw, scaling=False, strict=False) == data, m.name
        assert dbc.decode_message(m.id, data, scaling=False, decode_choices=False) == raw, m.name


def test_generator_is_repeatable_and_seeded(bus):
    a, b = Vehicle(bus, 5).traffic(20.0), Vehicle(bus, 5).traffic(20.0)
    for f in ("t", "id", "dlc", "word", "label"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    c = Vehicle(bus, 6).traffic(20.0)
    d = Vehicle(bus, 5).traffic(20.0, trace=1)
    assert not np.array_equal(a.t[:1000], c.t[:1000])  # another vehicle: other clocks and phases
    assert np.array_equal(np.unique(a.id), np.unique(d.id)) and not np.array_equal(a.word, d.word)


def test_traffic_has_the_dbc_periods_counters_checksums_and_a_correlated_drive(bus):
    v = Vehicle(bus, 2)
    f = v.traffic(120.0)
    assert np.all(np.diff(f.t) >= 0) and f.t.min() >= 0 and f.t.max() < 120
    assert abs(len(f) / 120.0 - bus.frames_per_second()) < 0.01 * bus.frames_per_second()
    for m in bus.messages:
        if m.cycle_ms > 1000:
            continue
        sel = f.id == m.id
        gaps = np.diff(f.t[sel])
        assert abs(np.median(gaps) / (m.cycle_ms / 1000) - 1) < 2e-3, m.name  # drift < 200 ppm + jitter
        for s in m.signals:
            if s.role == "counter":
                c = codec.get(f.word[sel], s)
                assert np.all((np.diff(c) - 1) % (1 << s.length) == 0), s.name
            if s.role == "checksum":
                assert np.array_equal(codec.get(f.word[sel], s), codec.checksum_of(f.word[sel], m, s)), s.name
    d = v.drive(600.0)
    moving = d.speed > 5
    assert d.speed.max() > 40 and moving.mean() > 0.5
    assert np.corrcoef(d.speed[moving] / (d.rpm[moving] / 1000), v.kmh_per_krpm[d.gear[moving] - 1])[0, 1] > 0.95
    assert np.abs(np.diff(d.speed)).max() * 100 / 3.6 < 4.0  # m/s^2: no jumps


# -- attacks ---------------------------------------------------------------------------------------------
def test_attacks_are_labelled_and_stealthy_ones_keep_timing_counters_checksums(bus, attacked):
    normal = Vehicle(bus, 7).traffic(480.0, 1)
    plan = attacked.meta["attacks"]
    assert {a["family"] for a in plan} == set(FAMILIES[1:])
    code = {f: i for i, f in enumerate(FAMILIES)}
    for fam in FAMILIES[1:]:
        within = np.zeros(len(attacked), bool)
        for a in plan:
            if a["family"] == fam:
                within |= (attacked.t >= a["t0"]) & (attacked.t < a["t1"])
        assert not np.any((attacked.label == code[fam]) & ~within), fam
    for a in plan:
        inside = (attacked.t >= a["t0"]) & (attacked.t < a["t1"])
        lab = attacked.label == code[a["family"]]
        if a["family"] == "dos":
            assert np.all(attacked.id[lab] == 0) and lab.sum() > 3 / 0.3e-3 * 0.99
        if a["family"] == "suspension":
            assert not np.any(inside & (attacked.id == a["target"]))
            assert np.any((normal.t >= a["t0"]) & (normal.t < a["t1"]) & (normal.id == a["target"]))
        if a["family"] in STEALTHY and a["family"] != "suspension":
            m = bus.by_id(a["target"])
            att = inside & (attacked.id == a["target"])
            nor = (normal.t >= a["t0"]) & (normal.t < a["t1"]) & (normal.id == a["target"])
            assert np.array_equal(attacked.t[att], normal.t[nor]) and np.all(attacked.label[att] == code[a["family"]])
            for s in m.signals:
                if s.role == "counter":
                    assert np.array_equal(codec.get(attacked.word[att], s), codec.get(normal.word[nor], s))
                if s.role == "checksum":
                    assert np.array_equal(codec.get(attacked.word[att], s), codec.checksum_of(attacked.word[att], m, s))
            if a["family"] in ("masquerade", "plateau", "drift", "inconsistency"):
                assert not np.array_equal(attacked.word[att], normal.word[nor])


def test_unknown_attack_family_is_named():
    with pytest.raises(ValueError, match="'teleport'"):
        attacks.parse_families("dos,teleport")


# -- logs ----------------------------------------------------------------------------------------------------
def test_logs_round_trip_with_labels(bus, short_attacked, tmp_path):
    attacked = short_attacked
    assert len({a["family"] for a in attacked.meta["attacks"]}) == 5
    logs.write_candump(attacked, tmp_path / "traffic.log")
    logs.write_hcrl(attacked, tmp_path / "traffic.csv")
    logs.write_attacks(attacked, tmp_path / "attacks.json")
    first = (tmp_path / "traffic.log").read_text().splitlines()[0]
    assert first.startswith("(1700000000.") and " can0 " in first and "#" in first
    for name in ("traffic.log", "traffic.csv"):
        back = logs.read_log(tmp_path / name, bus.ids)
        assert np.array_equal(back.id, attacked.id) and np.array_equal(back.word, attacked.word)
        assert np.abs(back.t - attacked.t).max() <= 5e-7 + 1e-12  # whole microseconds
        assert back.meta["attacks"] == attacked.meta["attacks"]
        if name == "traffic.csv":  # flags: exact per-frame labels
            assert np.array_equal(back.label, attacked.label)
        else:  # candump, no flags: guessed from the intervals (logs._label_from_intervals)
            agree = back.label == attacked.label
            fuzz = attacked.label == FAMILIES.index("fuzzing")
            spoof = (back.label == FAMILIES.index("spoofing"))  # the target's own frames in the interval too
            assert agree[~fuzz & ~spoof].all() and agree[fuzz].mean() > 0.9
            assert np.all(back.label[attacked.label == FAMILIES.index("spoofing")] == FAMILIES.index("spoofing"))


def test_logs_of_any_dlc_and_hand_written_lines(tmp_path):
    f = Frames.from_bytes([0.0, 0.5, 1.25], [0x316, 0x43F, 0x12345678], [8, 3, 0],
                          [[5, 0x21, 0x68, 9, 0x21, 0x21, 0, 0x6F], [1, 2, 3, 0, 0, 0, 0, 0], [0] * 8], [0, 3, 0])
    logs.write_candump(f, tmp_path / "a.log")
    logs.write_hcrl(f, tmp_path / "a.csv")
    assert (tmp_path / "a.log").read_text().splitlines()[1] == "(1700000000.500000) can0 43f#010203"
    assert (tmp_path / "a.csv").read_text().splitlines()[1] == "1700000000.500000,043f,3,01,02,03,T"
    for name in ("a.log", "a.csv"):
        back = logs.read_log(tmp_path / name)
        assert list(back.dlc) == [8, 3, 0] and list(back.id) == [0x316, 0x43F, 0x12345678]
        assert np.array_equal(back.word, f.word) and list(back.t) == [0.0, 0.5, 1.25]
    (tmp_path / "h.csv").write_text("Timestamp,CAN ID,DLC,DATA,Flag\n1478198376.389427,0316,2,05,21,R\n")
    assert logs.read_log(tmp_path / "h.csv").id[0] == 0x316


@pytest.mark.parametrize("name,text,where,what", [
    ("bad.log", "(1.000000) can0 316#0521\n(2.0) can0 31G#00\n", ":2:", "3- or 8-digit hex ID"),
    ("bad.log", "(1.000000) can0 316#052\n", ":1:", "whole bytes"),
    ("bad.log", "(1.000000) can0 316##0521\n", ":1:", "CAN FD"),
    ("bad.log", "(1.000000) can0 316#0521\n\xff\xfe\n", ":2:", "not ASCII"),
    ("bad.csv", "1.0,0316,2,05,21,R\n1.1,0316,3,05,21,R\n", ":2:", "DLC 3 needs 3 data bytes"),
    ("bad.csv", "1.0,0316,2,05,21,X\n", ":1:", "flag 'X'"),
    ("bad.csv", "1.0,0316,9,05,21,R\n", ":1:", "DLC 9 is not 0-8"),
    ("bad.csv", "1.0,0316,1,1ff,R\n", ":1:", "larger than ff"),
    ("bad.csv", "abc,0316,1,1f,R\n", ":1:", "time 'abc'"),
])
def test_malformed_lines_are_named_by_file_and_line(tmp_path, name, text, where, what):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(logs.LogError) as e:
        logs.read_log(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}{where}") and what in msg and "\n" not in msg


def test_the_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from ecufl.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("1.0,0316,2,05,21,R\n1.1,0316,2,05,R\n")
    cases = [(["can", "inspect", str(bad)], 1, f"{bad}:2:"),
             (["can", "detect", "--window", "120"], 2, "--window 120"),
             (["can", "generate", "--seed", "1", "--seconds", "5", "--attacks", "nope", "--out", str(tmp_path)], 2,
              "unknown attack family 'nope'"),
             (["can", "bus", "--dbc", str(tmp_path / "missing.dbc"), "--out", str(tmp_path / "b.json")], 1, "missing.dbc")]
    for argv, code, text in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == code and text in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err


# -- features and detectors ------------------------------------------------------------------------------------
def test_features_are_in_unit_range_and_see_the_easy_attacks(bus, attacked):
    feat = features.Featurizer(bus, 0.5)
    win = feat(attacked)
    assert win.x.shape == (960, feat.size) == (960, len(feat.names)) and len(set(feat.names)) == feat.size
    assert win.x.min() >= 0 and win.x.max() <= 1 and np.isfinite(win.x).all()
    col = {n: i for i, n in enumerate(feat.names)}
    dos = win.label == FAMILIES.index("dos")
    assert win.x[dos, col["below"]].min() > 0 and np.median(win.x[dos, col["below"]]) > 0.5  # partial windows at the ends
    assert win.x[win.label == 0, col["below"]].max() == 0
    for a in attacked.meta["attacks"]:
        if a["family"] == "suspension":
            inside = [w for w in range(int(np.ceil(a["t0"] / 0.5)), int(a["t1"] / 0.5))]
            assert win.x[inside, col[f"count:{a['target']:03X}"]].max() == 0
    with pytest.raises(ValueError, match="--window"):
        features.Featurizer(bus, 100)


def test_detectors_on_a_fixed_seed(bus):
    """Autoencoder (normal traffic only, threshold from another normal drive) and classifier, on
    vehicle 3: the easy families are caught; the numbers are what they are for the stealthy ones."""
    feat = features.Featurizer(bus, 0.5)
    normal = feat(attacks.trace(bus, 3, 100, 180.0, ()))
    held = feat(attacks.trace(bus, 3, 101, 90.0, ()))
    test = feat(attacks.trace(bus, 3, 2, 240.0, attacks.parse_families("easy")))
    cfg = detect.TrainSettings(hidden=16, epochs=10)
    ae = detect.Autoencoder(feat.size, cfg).fit(normal.x, held.x)
    assert ae.score(held.x).max() == ae.threshold
    fams, fa_h, hours = detect.metrics(test, ae.alarms(test.x))
    by = {m.family: m for m in fams}
    assert set(by) == {"dos", "fuzzing", "spoofing"} and hours > 0
    assert by["dos"].recall > 0.8 and by["fuzzing"].recall > 0.8
    assert all(m.latency <= 1.0 for m in fams if m.detected)


def test_metrics_arithmetic():
    win = features.Windows(np.zeros((10, 1), np.float32), np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0], np.uint8),
                           np.arange(10) * 0.5, 0.5, [{"family": "dos", "t0": 2.1, "t1": 3.4, "windows": [4, 5, 6]}])
    alarm = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    (m,), fa_h, hours = detect.metrics(win, alarm)
    assert (m.windows, m.attacks, m.detected) == (3, 1, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    assert m.latency == pytest.approx(3.0 - 2.1) and hours == pytest.approx(3.5 / 3600) and fa_h == pytest.approx(3600 / 3.5)


# -- the kernels take the autoencoder's data ----------------------------------------------------------------------
def test_reference_kernels_train_an_autoencoder_alike():
    """Float inputs in [0, 1] and real-valued targets (target = input): the vectorised reference and
    network.py's per-sample loop agree to 1e-10 in float64 (the MNIST tolerance)."""
    rng = np.random.default_rng(0)
    x = rng.random((300, 40))
    sizes = [40, 12, 40]
    p = init_params(sizes, 4, scaled=True)
    a, b = NumpyKernel(p, dtype="float64"), TextbookKernel(p, dtype="float64")
    order = EpochOrder(len(x), 4)
    for _ in range(2):
        o = order.next()
        a.train(x, x, o, 0.5, 10)
        b.train(x, x, o, 0.5, 10)
    for u, v in zip(a.get_params().flat(), b.get_params().flat()):
        assert np.abs(u - v).max() < 1e-10
    ea, eb = a.evaluate(x, x), b.evaluate(x, x)
    assert ea.loss == pytest.approx(eb.loss, abs=1e-12) and ea.correct == eb.correct
    assert ea.loss < NumpyKernel(p, dtype="float64").evaluate(x, x).loss  # it learnt


def test_uint8_and_float_inputs_are_the_same_network():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 20), dtype=np.uint8)
    labels = rng.integers(0, 3, 50).astype(np.uint8)
    p = init_params([20, 5, 3], 2)
    a, b = NumpyKernel(p, dtype="float64"), NumpyKernel(p, dtype="float64")
    a.train(img, labels, np.arange(50), 3.0, 10)
    b.train(img / 255.0, np.eye(3)[labels], np.arange(50), 3.0, 10)  # same inputs, one-hot as real targets
    for u, v in zip(a.get_params().flat(), b.get_params().flat()):
        assert np.array_equal(u, v)


def test_data_that_does_not_fit_the_network_is_one_line():
    with pytest.raises(ValueError, match="take[s]? 334 values per sample"):
        check_data([334, 32, 334], np.zeros((5, 262), np.float32), np.zeros((5, 334), np.float32))
    with pytest.raises(ValueError, match="targets have 3 columns"):
        check_data([4, 2, 5], np.zeros((5, 4), np.float32), np.zeros((5, 3), np.float32))


# -- federated vs local vs centralised ----------------------------------------------------------------------------
def test_fedavg_is_the_sample_weighted_mean():
    from ecufl.can.federated import fedavg
    from ecufl.kernels.params import Params

    a = Params([np.ones((2, 3), np.float32)], [np.zeros(2, np.float32)])
    b = Params([np.full((2, 3), 4.0, np.float32)], [np.full(2, 2.0, np.float32)])
    avg = fedavg([a, b], [1, 3])
    assert np.allclose(avg.weights[0], 3.25) and np.allclose(avg.biases[0], 1.5) and avg.dtype == np.float32


def test_a_fleet_of_one_vehicle_is_local_training(bus):
    """FedAvg over one vehicle is that vehicle's own SGD (same order, same epochs): same threshold."""
    from ecufl.can import federated

    fl = federated.Fleet(vehicles=1, unseen=1, train_seconds=30.0, test_seconds=60.0, rounds=2, local_epochs=2, hidden=8)
    res = federated.run(bus, fl)
    assert res["local"]["thresholds"] == res["federated"]["thresholds"] == res["centralised"]["thresholds"]
    assert res["local"]["alarms"] == res["federated"]["alarms"]
    assert set(res["federated"]["families"]) <= set(FAMILIES[1:]) and res["features"] == features.Featurizer(bus).size


@needs_dbc
def test_another_dbc_intel_byte_order_and_assumed_periods(tmp_path):
    """opendbc's Hyundai C-CAN: no cycle times (refused, then --assume-period), Intel signals, a
    64-bit field; the frames are still cantools' bit for bit."""
    path = dbcmod.opendbc_path("hyundai_2015_ccan.dbc")
    with pytest.raises(busmod.BusError, match="--assume-period"):
        dbcmod.convert(path)
    obj = dbcmod.convert(path, assume_period_ms=20)
    hy = busmod.from_json(obj)
    assert all(m["assumed"] for m in obj["messages"]) and {s.order for m in hy.messages for s in m.signals} == {"le"}
    db = dbcmod.load_dbc(path)
    f = Vehicle(hy, 1).traffic(2.0)
    for m in hy.messages:
        for i in np.flatnonzero(f.id == m.id)[:2]:
            raw = {s.name: int(codec.get_raw(f.word[i : i + 1], s)[0]) for s in m.signals}
            assert db.encode_message(m.id, raw, scaling=False, strict=False) == bytes(f.data[i][: m.dlc]), m.name


def test_a_flagged_recording_without_attacks_json_is_scored_by_its_flags(bus, short_attacked, tmp_path):
    """An HCRL CSV from elsewhere: T flags only. Windows take intervals from runs of flagged frames
    (family "injected"), and the metrics report that family."""
    logs.write_hcrl(short_attacked, tmp_path / "rec.csv")
    rec = logs.read_log(tmp_path / "rec.csv", bus.ids)
    assert "attacks" not in rec.meta and set(np.unique(rec.label)) == {0, codec.INJECTED}
    win = features.Featurizer(bus, 0.5)(rec)
    inj = [i for i in win.instances if i["family"] == "injected"]
    # suspension has no frames to flag; the others are found (back-to-back ones may merge)
    flagged = [a for a in short_attacked.meta["attacks"] if a["family"] != "suspension"]
    assert 1 <= len(inj) <= len(flagged) and np.any(win.label == codec.INJECTED)
    for a in flagged:
        assert any(i["t0"] <= a["t1"] and a["t0"] <= i["t1"] for i in inj), a
    fams, _, _ = detect.metrics(win, win.label > 0)
    assert [m.family for m in fams] == ["injected"] and fams[0].f1 == 1.0


def test_a_saved_autoencoder_scores_the_same_and_refuses_other_features(bus, short_attacked, tmp_path, capsys):
    from ecufl.cli import main

    feat = features.Featurizer(bus, 0.5)
    normal = feat(attacks.trace(bus, 4, 100, 40.0, ()))
    ae = detect.Autoencoder(feat.size, detect.TrainSettings(hidden=4, epochs=1)).fit(normal.x, normal.x)
    ae.save(tmp_path / "ae.npz", feat.names, 0.5, bus.source)
    back = detect.Autoencoder.load(tmp_path / "ae.npz", feat.names, 0.5)
    win = feat(short_attacked)
    assert np.array_equal(back.score(win.x), ae.score(win.x)) and back.threshold == ae.threshold
    with pytest.raises(ValueError, match=r"ae\.npz: the network takes 339 features, this bus gives 338"):
        detect.Autoencoder.load(tmp_path / "ae.npz", feat.names[:-1], 0.5)
    with pytest.raises(ValueError, match="trained on 0.5 s windows, not 1 s"):
        detect.Autoencoder.load(tmp_path / "ae.npz", feat.names, 1.0)
    logs.write_hcrl(short_attacked, tmp_path / "t.csv")
    logs.write_attacks(short_attacked, tmp_path / "attacks.json")
    with pytest.raises(SystemExit) as e:
        main(["can", "score", str(tmp_path / "t.csv"), "--model", str(tmp_path / "ae.npz"), "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["windows"] == len(win.x) and out["alarms"] == int(ae.alarms(win.x).sum()) and "families" in out
    with pytest.raises(SystemExit) as e:
        main(["can", "score", str(tmp_path / "t.csv"), "--model", str(tmp_path / "attacks.json")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "attacks.json: not an ecufl weight file" in err and len(err.strip().splitlines()) == 1


def test_arbitration_serialises_the_bus_lowest_id_first_and_overwrites_mailboxes(bus):
    from ecufl.can.generate import arbitrate, frame_bits

    # three frames ready together: lowest ID first, back to back; then the bus is idle again
    f = Frames.from_bytes([0.0, 0.0, 0.0, 1.0], [0x300, 0x100, 0x200, 0x300], [8, 8, 8, 2], np.zeros((4, 8)))
    g = arbitrate(f, 500_000)
    assert list(g.id) == [0x100, 0x200, 0x300, 0x300]
    assert np.allclose(g.t, [0, 111 / 5e5, 222 / 5e5, 1.0]) and g.meta["delayed"] == 2
    # a frame pending when its ID's next one is queued is overwritten by it
    f = Frames.from_bytes([0.0, 1e-5, 2e-5, 3e-5], [0x001, 0x400, 0x400, 0x002], [8, 8, 8, 8], np.arange(32).reshape(4, 8))
    g = arbitrate(f, 500_000)
    assert list(g.id) == [0x001, 0x002, 0x400] and g.meta["overwritten"] == 1 and g.data[2][0] == 16
    # a DoS trace: nothing overlaps on the wire, labels travel with their frames
    h = attacks.trace(bus, 5, 0, 30.0, ("dos",), arbitration=True)
    end = h.t[:-1] + frame_bits(h.dlc[:-1]) / bus.bitrate
    assert np.all(h.t[1:] >= end - 1e-12) and h.meta["overwritten"] > 0
    assert np.all(h.id[h.label == FAMILIES.index("dos")] == 0)
