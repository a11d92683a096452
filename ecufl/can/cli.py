"""``ecufl can``: CAN-bus traffic from a real DBC, attacks, log files and two anomaly detectors."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import click
import numpy as np

from ecufl.ui import Failure, console, err_console

from ecufl.kernels.weights import WeightFileError

from . import attacks, bus as busmod, dbc as dbcmod, detect as detectmod, features, federated, logs, run
from .codec import FAMILIES
from .detect import TrainSettings
from .generate import Vehicle


def _bus(path: str | None) -> busmod.Bus:
    try:
        return busmod.load_bus(path)
    except busmod.BusError as e:
        raise Failure(str(e))


def _families(spec: str) -> tuple[str, ...]:
    try:
        return attacks.parse_families(spec)
    except ValueError as e:
        raise click.UsageError(f"--attacks: {e}")


MAX_SECONDS = 3 * 3600  # 30 M frames of the Ford bus, about 2 GB while generating


def _positive(value: float, flag: str) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise click.UsageError(f"{flag} must be a positive number of seconds, got {value}")
    if value > MAX_SECONDS:
        raise click.UsageError(f"{flag} {value:g}: at most {MAX_SECONDS} s of bus time")
    return value


def _seed(value: int, flag: str = "--seed") -> int:
    if not 0 <= value <= 2**32 - 1:
        raise click.UsageError(f"{flag} must be between 0 and {2**32 - 1}, got {value}")
    return value


BUS_OPTION = click.option("--bus", "bus_path", type=click.Path(dir_okay=False),
                          help="Bus description (JSON written by `ecufl can bus --out ford.json`; default: the shipped Ford bus).")


@click.group()
def can():
    """CAN-bus anomaly detection: traffic from a real DBC, attacks, logs, detectors.

    \b
    ecufl can generate --seed 1 --seconds 30 --attacks all --out can-out
    ecufl can inspect can-out/traffic.csv
    ecufl can detect --seed 1 --train-seconds 120 --test-seconds 120 --epochs 5
    """


@can.command("bus")
@click.option("--dbc", type=click.Path(dir_okay=False),
              help="DBC file (default: ford_lincoln_base_pt.dbc from the opendbc package).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Bus description to write (JSON).")
@click.option("--bitrate", default=500_000, show_default=True, type=int, help="Bus bit rate (bit/s).")
@click.option("--assume-period", type=float,
              help="Period (ms) for messages without a cycle time (most DBCs have none); default: leave them out.")
def bus_cmd(dbc, out, bitrate, assume_period):
    """Convert a DBC once into the compact bus description the generator uses (needs `ecufl[can]`).

    Keeps the periodic 11-bit messages (GenMsgCycleTime): IDs, DLC, cycle times, signal layouts,
    and which signals are counters, checksums, speed, RPM, pedal and gear.

    \b
    ecufl can bus --out ford.json
    """
    try:
        path = Path(dbc) if dbc else dbcmod.opendbc_path()
        if assume_period is not None and not 1 <= assume_period <= 100_000:
            raise click.UsageError(f"--assume-period {assume_period:g}: must be 1-100000 ms")
        obj = dbcmod.convert(path, bitrate, assume_period)
        busmod.write_bus(obj, out)
    except busmod.BusError as e:
        raise Failure(str(e))
    except OSError as e:
        raise Failure(f"{out}: cannot write ({e.strerror or e})")
    b = busmod.from_json(obj)
    roles = Counter(s.role for m in b.messages for s in m.signals if s.role)
    console.print(f"{out}: {len(b.messages)} periodic messages of {obj['source']}, "
                  f"{b.frames_per_second():,.0f} frames/s, "
                  + ", ".join(f"{n} {r}" for r, n in sorted(roles.items())))


@can.command()
@click.option("--seed", required=True, type=int, help="Vehicle seed (its ECU clocks, phases, signal behaviour).")
@click.option("--seconds", required=True, type=float, help="Length of the drive (bus time).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--attacks", "attack_spec", default="none", show_default=True,
              help="Attack families: all, none, easy, stealthy, or a list (dos,fuzzing,spoofing,masquerade,"
                   "plateau,drift,replay,suspension,inconsistency).")
@click.option("--trace", default=0, show_default=True, type=int, help="Drive number of this vehicle (its own drive cycle).")
@click.option("--format", "fmt", type=click.Choice(["both", "candump", "hcrl"]), default="both", show_default=True,
              help="traffic.log (candump -l), traffic.csv (HCRL CSV, with T/R flags), or both.")
@click.option("--arbitration", is_flag=True,
              help="Send the frames through one bus: busy bus delays, lowest ID wins, a pending frame is "
                   "overwritten by its ID's next (a Python loop: 0.2-0.5 s per minute of traffic).")
@BUS_OPTION
def generate(seed, seconds, out, attack_spec, trace, fmt, arbitration, bus_path):
    """Generate a vehicle's traffic (and attacks) as log files plus attacks.json (the labels).

    \b
    ecufl can generate --seed 1 --seconds 30 --out can-normal
    ecufl can generate --seed 2 --seconds 60 --attacks stealthy --format hcrl --out can-stealthy
    ecufl can generate --seed 3 --seconds 20 --attacks dos --arbitration --out can-arbitrated
    """
    _seed(seed)
    _positive(seconds, "--seconds")
    if seconds > MAX_SECONDS:
        raise click.UsageError(f"--seconds {seconds:g}: at most {MAX_SECONDS} s per drive (about 70 bytes of memory "
                               "per frame while generating; longer recordings: several drives, --trace N)")
    fams = _families(attack_spec)
    b = _bus(bus_path)
    t0 = time.perf_counter()
    c0 = time.process_time()
    frames = attacks.trace(b, seed, trace, seconds, fams, arbitration=arbitration)
    gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    outdir = Path(out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        written = []
        if fmt in ("both", "candump"):
            logs.write_candump(frames, outdir / "traffic.log")
            written.append(outdir / "traffic.log")
        if fmt in ("both", "hcrl"):
            logs.write_hcrl(frames, outdir / "traffic.csv")
            written.append(outdir / "traffic.csv")
        logs.write_attacks(frames, outdir / "attacks.json")
    except OSError as e:
        raise Failure(f"{out}: cannot write ({e.strerror or e})")
    labels = np.bincount(frames.label, minlength=len(FAMILIES))
    console.print(f"{len(frames):,} frames, {seconds:g} s of vehicle {seed} drive {trace} "
                  f"({len(frames) / seconds:,.0f} frames/s), generated in {gen_s:.2f} s ({gen_cpu:.2f} s CPU)")
    if fams:
        planned = Counter(a["family"] for a in frames.meta["attacks"])
        console.print(f"{sum(planned.values())} attacks: " + ", ".join(
            f"{fam} x{planned[fam]} ({labels[FAMILIES.index(fam)]:,} frames)" if fam != "suspension"
            else f"suspension x{planned[fam]} (frames removed)" for fam in FAMILIES if fam in planned))
    if arbitration:
        m = frames.meta
        console.print(f"arbitration at {b.bitrate:,} bit/s: {m['delayed']:,} frames delayed (at most "
                      f"{m['max_delay'] * 1000:.2f} ms), {m['overwritten']:,} overwritten")
    console.print("wrote " + ", ".join(str(p) for p in [*written, outdir / "attacks.json"]))


@can.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--top", default=10, show_default=True, type=int, help="How many IDs to list by rate.")
@BUS_OPTION
def inspect(file, top, bus_path):
    """Frames, IDs, rates and labels of a candump -l log or an HCRL CSV.

    \b
    ecufl can generate --seed 1 --seconds 10 --attacks easy --out can-inspect
    ecufl can inspect can-inspect/traffic.log
    """
    b = _bus(bus_path)
    try:
        frames = logs.read_log(file, b.ids)
    except logs.LogError as e:
        raise Failure(str(e))
    n = len(frames)
    span = float(frames.t[-1] - frames.t[0]) if n > 1 else 0.0
    ids, counts = np.unique(frames.id, return_counts=True)
    known = np.isin(ids, b.ids)
    kind = "HCRL CSV" if frames.meta.get("flags") else "candump log"
    console.print(f"{file}: {kind}, {n:,} frames over {span:.3f} s ({n / span if span else 0:,.0f} frames/s), "
                  f"{len(ids)} IDs ({int(known.sum())} on the {b.source} bus, {int((~known).sum())} not)")
    names = logs.label_names()
    found = {names[i]: int(c) for i, c in enumerate(np.bincount(frames.label, minlength=len(names))) if i and c}
    if found:
        console.print("labels: " + ", ".join(f"{k} {v:,} frames" for k, v in found.items()))
    elif frames.meta.get("flags"):
        console.print("labels: every frame flagged R (regular)")
    else:
        console.print("labels: none (a candump log has no flags; attacks.json beside it would give them)")
    if frames.meta.get("attacks"):
        fams = Counter(a["family"] for a in frames.meta["attacks"])
        console.print("attacks.json: " + ", ".join(f"{n} {f}" for f, n in fams.items()))
    order = np.argsort(-counts)[:max(top, 0)]
    rows = []
    for i in order:
        can_id = int(ids[i])
        try:
            m = b.by_id(can_id)
            what = f"{m.name}, nominal {1000 / m.cycle_ms:g}/s"
        except KeyError:
            what = "not on the bus"
        rows.append(f"  {can_id:03X}  {counts[i] / span if span else counts[i]:10,.1f}/s  {what}")
    if rows:
        console.print("busiest IDs (frames/s):\n" + "\n".join(rows))


@can.command()
@click.option("--seed", default=1, show_default=True, type=int, help="Vehicle seed of the training drives.")
@click.option("--test-seed", type=int, help="Vehicle scored (default: --seed): another seed is an unseen vehicle.")
@click.option("--train-seconds", default=600.0, show_default=True, type=float,
              help="Normal drive for the autoencoder and labelled drive for the classifier, each.")
@click.option("--test-seconds", default=600.0, show_default=True, type=float, help="Test drive with attacks.")
@click.option("--attacks", "attack_spec", default="all", show_default=True, help="Families in the test drive.")
@click.option("--trace", "test_file", type=click.Path(dir_okay=False),
              help="Score this candump log or HCRL CSV instead of a generated test drive.")
@click.option("--window", default=0.5, show_default=True, type=float, help="Window length (s).")
@click.option("--hidden", default=32, show_default=True, type=int, help="Hidden units of both detectors.")
@click.option("--epochs", default=60, show_default=True, type=int, help="Epochs of both detectors.")
@click.option("--lr", default=1.0, show_default=True, type=float)
@click.option("--batch-size", default=10, show_default=True, type=int)
@click.option("--quantile", default=1.0, show_default=True, type=float,
              help="Autoencoder threshold: this quantile of the held-out normal windows' scores.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the results (JSON) here.")
@click.option("--save-model", type=click.Path(dir_okay=False),
              help="Write the trained autoencoder (ecufl weight file with its threshold) to score traces with later (ecufl can score FILE --model FILE).")
@BUS_OPTION
def detect(seed, test_seed, train_seconds, test_seconds, attack_spec, test_file, window, hidden, epochs, lr,
           batch_size, quantile, as_json, out, save_model, bus_path):
    """Train both detectors on a vehicle's drives, score a test drive, print metrics per family.

    \b
    ecufl can detect --seed 1 --train-seconds 120 --test-seconds 120 --epochs 5
    ecufl can detect --seed 1 --train-seconds 60 --test-seconds 60 --epochs 5 --save-model can-ae.npz
    """
    _seed(seed)
    if test_seed is not None:
        _seed(test_seed, "--test-seed")
    _positive(train_seconds, "--train-seconds")
    _positive(test_seconds, "--test-seconds")
    if not 0.05 <= window <= 60:
        raise click.UsageError(f"--window {window}: must be between 0.05 and 60 seconds")
    if train_seconds < 10 * window:
        raise click.UsageError(f"--train-seconds {train_seconds:g}: need at least 10 windows of {window:g} s")
    if hidden < 1 or epochs < 1 or batch_size < 1 or not lr > 0:
        raise click.UsageError("--hidden, --epochs, --batch-size and --lr must be positive")
    if not 0 < quantile <= 1:
        raise click.UsageError(f"--quantile must be in (0, 1], got {quantile}")
    b = _bus(bus_path)
    ex = run.Experiment(seed=seed, test_seed=test_seed, train_seconds=train_seconds, test_seconds=test_seconds,
                        window=window, families=_families(attack_spec), quantile=quantile, test_file=test_file,
                        save_model=save_model,
                        train=TrainSettings(hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed))
    try:
        res = run.run(b, ex, progress=(lambda m: None) if as_json else (lambda m: err_console.print(m)))
    except logs.LogError as e:
        raise Failure(str(e))
    except OSError as e:
        raise Failure(f"{e.filename or save_model}: cannot write ({e.strerror or e})")
    if out:
        try:
            Path(out).write_text(_json(res) + "\n")
        except OSError as e:
            raise Failure(f"{out}: cannot write ({e.strerror or e})")
    if as_json:
        click.echo(_json(res))
        return
    console.print(markdown_table(res))


@can.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="Autoencoder saved by ecufl can detect ... --save-model FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@BUS_OPTION
def score(file, model, as_json, bus_path):
    """Score a candump log or HCRL CSV with a saved autoencoder: alarms, and metrics if labelled.

    \b
    ecufl can detect --seed 1 --train-seconds 60 --test-seconds 60 --epochs 5 --save-model can-ae.npz
    ecufl can generate --seed 1 --seconds 60 --trace 7 --attacks easy --out can-score
    ecufl can score can-score/traffic.csv --model can-ae.npz
    """
    b = _bus(bus_path)
    try:
        meta_window = _model_window(model)
        feat = features.Featurizer(b, meta_window)
        ae = detectmod.Autoencoder.load(model, feat.names, meta_window)
        frames = logs.read_log(file, b.ids)
    except (WeightFileError, logs.LogError, ValueError) as e:
        raise Failure(str(e))
    win = feat(frames, float(frames.meta.get("seconds", frames.t[-1])))
    alarm = ae.alarms(win.x)
    res = {"file": file, "model": model, "windows": len(win.x), "window": win.window, "threshold": ae.threshold,
           "alarms": int(alarm.sum()), "alarm_starts": [round(float(t), 3) for t in win.start[alarm]]}
    if np.any(win.label > 0):
        fams, fa_h, hours = detectmod.metrics(win, alarm)
        res.update(false_alarms_per_hour=fa_h, normal_hours=hours,
                   families={m.family: {k: v for k, v in m.__dict__.items() if k != "family"} for m in fams})
    if as_json:
        click.echo(_json(res))
        return
    first = ", ".join(f"{t:g}" for t in res["alarm_starts"][:8]) + (" ..." if res["alarms"] > 8 else "")
    console.print(f"{file}: {len(win.x)} windows of {win.window:g} s, {res['alarms']} alarms"
                  + (f" (windows starting at {first} s)" if res["alarms"] else ""))
    if "families" in res:
        lines = ["| family | windows | attacks | precision | recall | F1 | latency |", "|---|---|---|---|---|---|---|"]
        for fam, m in res["families"].items():
            lat = f"{m['latency']:.2f} s ({m['detected']}/{m['attacks']})" if m["detected"] else f"- (0/{m['attacks']})"
            lines.append(f"| {fam} | {m['windows']} | {m['attacks']} | {m['precision']:.2f} | {m['recall']:.2f} | "
                         f"{m['f1']:.2f} | {lat} |")
        lines.append(f"| false alarms per hour of normal windows | | | | | {res['false_alarms_per_hour']:.1f} | |")
        console.print("\n".join(lines))


def _model_window(path: str) -> float:
    """The window length a saved autoencoder was trained on."""
    _, meta = detectmod.weights.load(path)
    info = meta.get("can")
    if not isinstance(info, dict) or info.get("format") != detectmod.MODEL_FORMAT:
        raise WeightFileError(f"{path}: not a CAN autoencoder (written by ecufl can detect --save-model)")
    try:
        window = float(info["window"])
    except (KeyError, TypeError, ValueError):
        raise WeightFileError(f"{path}: malformed CAN metadata (window)") from None
    if not 0.05 <= window <= 60:
        raise WeightFileError(f"{path}: window {window:g} s out of range")
    return window


def _json(res: dict) -> str:
    """Strict JSON: NaN (no attack detected, no latency) as null."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, np.integer):
            return int(v)
        return v
    return json.dumps(clean(res), indent=1, allow_nan=False)


def markdown_table(res: dict) -> str:
    ae, cl = res["autoencoder"], res["classifier"]
    lines = ["| family | windows | attacks | AE F1 | AE latency | CL F1 | CL latency |", "|---|---|---|---|---|---|---|"]

    def lat(m):
        return f"{m['latency']:.2f} s ({m['detected']}/{m['attacks']})" if m["detected"] else f"- (0/{m['attacks']})"

    for fam, m in ae["families"].items():
        c = cl["families"][fam]
        lines.append(f"| {fam} | {m['windows']} | {m['attacks']} | {m['f1']:.2f} | {lat(m)} | {c['f1']:.2f} | {lat(c)} |")
    lines.append(f"| false alarms per hour of normal windows | | | {ae['false_alarms_per_hour']:.1f} | | "
                 f"{cl['false_alarms_per_hour']:.1f} | |")
    return "\n".join(lines)


@can.command("fleet")
@click.option("--vehicles", default=8, show_default=True, type=int, help="Vehicles that train.")
@click.option("--seed", default=1, show_default=True, type=int, help="First vehicle's seed (the others follow).")
@click.option("--unseen", default=2, show_default=True, type=int, help="Test vehicles no model trained on.")
@click.option("--train-seconds", default=300.0, show_default=True, type=float, help="Normal drive per vehicle.")
@click.option("--test-seconds", default=600.0, show_default=True, type=float, help="Attacked drive per unseen vehicle.")
@click.option("--rounds", default=10, show_default=True, type=int, help="FedAvg rounds.")
@click.option("--local-epochs", default=2, show_default=True, type=int, help="Epochs per round on each vehicle.")
@click.option("--window", default=0.5, show_default=True, type=float, help="Window length (s).")
@click.option("--hidden", default=32, show_default=True, type=int)
@click.option("--lr", default=1.0, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the results (JSON) here.")
@BUS_OPTION
def fleet_cmd(vehicles, seed, unseen, train_seconds, test_seconds, rounds, local_epochs, window, hidden, lr, as_json,
              out, bus_path):
    """Autoencoder: federated vs local-only vs centralised, scored on unseen vehicles with attacks.

    In-process FedAvg with the numpy kernel (see ecufl/can/federated.py), not a Flower fleet.

    
    ecufl can fleet --vehicles 3 --unseen 1 --train-seconds 60 --test-seconds 120 --rounds 3
    """
    _seed(seed)
    for flag, v in (("--vehicles", vehicles), ("--unseen", unseen), ("--rounds", rounds),
                    ("--local-epochs", local_epochs), ("--hidden", hidden)):
        if v < 1:
            raise click.UsageError(f"{flag} must be at least 1, got {v}")
    _positive(train_seconds, "--train-seconds")
    _positive(test_seconds, "--test-seconds")
    if not 0.05 <= window <= 60 or train_seconds < 20 * window:
        raise click.UsageError(f"--window {window}: must be 0.05-60 s and fit 20 times in --train-seconds")
    if not lr > 0:
        raise click.UsageError("--lr must be positive")
    b = _bus(bus_path)
    fl = federated.Fleet(vehicles=vehicles, seed=seed, unseen=unseen, train_seconds=train_seconds,
                         test_seconds=test_seconds, rounds=rounds, local_epochs=local_epochs, window=window,
                         hidden=hidden, lr=lr)
    res = federated.run(b, fl, progress=(lambda m: None) if as_json else (lambda m: err_console.print(m)))
    if out:
        try:
            Path(out).write_text(_json(res) + "\n")
        except OSError as e:
            raise Failure(f"{out}: cannot write ({e.strerror or e})")
    if as_json:
        click.echo(_json(res))
        return
    console.print(federated.markdown_table(res))


@can.command()
@click.option("--seconds", default=3600.0, show_default=True, type=float, help="Bus time to generate.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--repeats", default=1, show_default=True, type=int, help="Runs; the fastest counts.")
@BUS_OPTION
def bench(seconds, seed, repeats, bus_path):
    """Time the generator: normal traffic of one vehicle, wall and CPU seconds, frames/s.

    \b
    ecufl can bench --seconds 60
    """
    _seed(seed)
    _positive(seconds, "--seconds")
    if repeats < 1:
        raise click.UsageError(f"--repeats must be at least 1, got {repeats}")
    b = _bus(bus_path)
    best = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        frames = Vehicle(b, seed).traffic(seconds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = (wall, cpu) if best is None or wall < best[0] else best
    wall, cpu = best
    digest = np.bitwise_xor.reduce(frames.word ^ frames.t.view(np.uint64) ^ frames.id.astype(np.uint64))
    console.print(f"{len(frames):,} frames for {seconds:g} s of bus time in {wall:.2f} s wall, {cpu:.2f} s CPU "
                  f"({len(frames) / wall:,.0f} frames/s wall); xor digest {int(digest):016x}")
