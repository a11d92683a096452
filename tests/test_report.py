"""report.html and the terminal table, from a results folder written by the real server code."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from flwr.app import ConfigRecord, Context, Metadata, RecordDict
from flwr.app.message import make_message

from conftest import ecufl_cmd
from ecufl.client.client_app import train
from ecufl.kernels import init_params
from ecufl import wire
from ecufl.proto import report_fields, report_to_row
from ecufl import report
from faults import damage
from ecufl.server.results import Results
from ecufl.server.strategy import ReportingFedAvg

SIZES = [784, 16, 10]
KERNELS = ["numpy", "numpy:float32", "numpy:float32"]


def client_reply(partition: int, rnd: int, params, fault: str = ""):
    cfg = ConfigRecord({"layers": "784-16-10", "lr": 3.0, "batch-size": 10, "local-epochs": 1, "seed": 1,
                        "split-alpha": 0.0, "train-limit": 300, "num-partitions": 3, "kernel": ",".join(KERNELS),
                        "profile": "", "server-round": rnd})
    meta = Metadata(run_id=1, message_id=f"m{partition}", src_node_id=0, dst_node_id=100 + partition,
                    reply_to_message_id="", group_id=str(rnd), created_at=0.0, ttl=600.0, message_type="train")
    msg = make_message(meta, RecordDict({wire.ARRAYS: wire.params_to_record(params), wire.CONFIG: cfg}))
    reply = train(msg, Context(run_id=1, node_id=100 + partition, node_config={"partition-id": partition},
                               state=RecordDict(), run_config={}))
    reply.metadata.__dict__["_src_node_id"] = 100 + partition
    return damage(reply, fault) if fault else reply


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, mnist_dir):
    """Two rounds through the real client and strategy, written by the real results writer."""
    folder = tmp_path_factory.mktemp("run")
    results = Results(folder)
    params = init_params(SIZES, 1, dtype="float32")
    results.add_round({"round": 0, "test_accuracy": 0.1, "test_loss": 2.0})
    for rnd in (1, 2):
        strategy = ReportingFedAvg(sizes=SIZES, seed=1)
        replies = [client_reply(p, rnd, params, "nan" if rnd == 2 and p == 2 else "") for p in range(3)]
        arrays, _ = strategy.aggregate_train(rnd, replies)
        params = wire.record_to_params(arrays)
        rows = [report_to_row(r.report) | {"round": rnd, "accepted": int(r.accepted), "reject_reason": r.reason,
                                          "reply_seconds": 1.5} for r in strategy.replies[rnd]]
        results.add_clients(rows)
        results.add_round({"round": rnd, "clients_asked": 3, "clients_replied": 3,
                           "clients_accepted": sum(r.accepted for r in strategy.replies[rnd]),
                           "test_accuracy": 0.5 + rnd / 10, "test_loss": 0.3, "wall_seconds": 2.0,
                           "slowest_train_seconds": 0.1, "overhead_seconds": 1.9})
    return folder


def test_clients_csv_has_every_report_field(results_dir):
    header = (results_dir / "clients.csv").read_text().splitlines()[0].split(",")
    assert set(report_fields()) <= set(header)
    assert len((results_dir / "clients.csv").read_text().splitlines()) == 1 + 6  # 3 clients x 2 rounds


def test_report_html_is_self_contained(results_dir):
    out = report.build(results_dir)
    doc = out.read_text()
    assert out == results_dir / "report.html"
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", doc)) == 4
    assert not re.search(r"(src|href)=['\"]https?:", doc)  # nothing fetched from elsewhere
    for title in ("Accuracy per round", "Round time per kernel", "Peak memory per kernel"):
        assert title in doc
    assert "numpy:float64" in doc and "numpy:float32" in doc  # "numpy" runs in float64 by default
    assert "NaN/Inf in w1" in doc  # the rejected reply of round 2 is listed
    assert "per node: node 102: 1</p>" in doc  # and counted for its node


def test_per_kernel_figures(results_dir):
    kernels = report.per_kernel(report.collect(results_dir))
    assert kernels["numpy:float64"]["replies"] == 2
    assert kernels["numpy:float32"]["replies"] == 3 and kernels["numpy:float32"]["errors"] == 1
    assert kernels["numpy:float32"]["train_seconds"] > 0 and kernels["numpy:float32"]["peak_rss_bytes"] > 0


def test_cli_report_prints_table_and_path(results_dir):
    proc = subprocess.run([*ecufl_cmd(), "report", str(results_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "numpy:float32" in proc.stdout and f"report: {results_dir / 'report.html'}" in proc.stdout


def test_cli_report_on_a_folder_without_results(tmp_path):
    proc = subprocess.run([*ecufl_cmd(), "report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ecufl: error: {tmp_path}: no rounds.csv here or in its sub-folders (not a results folder)"


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory, mnist_dir):
    """A real `ecufl bench kernels --json` run for the config and batch of `results_dir`."""
    proc = subprocess.run([*ecufl_cmd(), "bench", "kernels", "--kernels", "numpy", "--configs", "784-16-10",
                           "--batch-sizes", "10", "--repeats", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    path.write_text(proc.stdout)
    return path


def test_report_compares_each_kernel_with_the_bench(results_dir, bench_json):
    bench = report.load_bench(bench_json)
    kernels = report.per_kernel(report.collect(results_dir))
    report.add_bench(kernels, bench)
    f32 = kernels["numpy:float32"]
    assert f32["bench_samples_per_second"] == bench[("numpy", "784-16-10", 10)] > 0
    assert bench[("numpy", "784-16-10", 10)] == json.loads(bench_json.read_text())["rows"][0]["samples_per_cpu_second"]
    assert f32["cpu_rate_over_bench"] == pytest.approx(f32["samples_per_cpu_second"] / f32["bench_samples_per_second"])
    # the bench runs numpy in float32: a float64 client has nothing to be held against
    assert kernels["numpy:float64"]["bench_samples_per_second"] is None
    proc = subprocess.run([*ecufl_cmd(), "report", str(results_dir), "--bench", str(bench_json)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{f32['cpu_rate_over_bench']:.2f}" in proc.stdout
    assert "<th>CPU-s rate / bench</th>" in (results_dir / "report.html").read_text()


def test_report_bench_file_that_is_not_bench_json(results_dir, tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text('{"rows": [{"kernel": "c"}]}')
    proc = subprocess.run([*ecufl_cmd(), "report", str(results_dir), "--bench", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"ecufl: error: --bench {bad}: not the JSON of `ecufl bench kernels --json`")
    assert (results_dir / "report.html").exists()  # the earlier report is still there


def test_bench_json_rows(bench_json):
    """`ecufl bench kernels --json`: one row per kernel/config/batch with wall and CPU rates."""
    doc = json.loads(bench_json.read_text())
    (row,) = doc["rows"]
    assert (row["kernel"], row["config"], row["batch_size"], row["samples"]) == ("numpy", "784-16-10", 10, 60000)
    assert row["error"] is None and row["ratio_to_numpy"] == 1.0
    assert row["samples_per_second"] > 0 and row["samples_per_cpu_second"] > 0
    assert 0 < row["percent_of_gemm_peak"] and doc["gemm_peak_gflops"] > 0  # measured figures, no speed required
    assert 0.8 < row["test_accuracy"] <= 1.0  # one epoch of 784-16-10 at lr 3


def test_report_shows_the_can_tables_of_a_can_run(results_dir, tmp_path):
    import shutil

    run = tmp_path / "can-run"
    shutil.copytree(results_dir, run)
    (run / "can-table.md").write_text(
        "Each unseen vehicle calibrates a model on its own held-out normal drive:\n\n"
        "| family | local-only F1 | federated F1 |\n|---|---|---|\n| dos | 0.92 | 0.98 |\n"
        "| false alarms per hour | 16.9 | 4.2 |\n")
    doc = report.build(run).read_text()
    assert "<h3>CAN anomaly detection: federated vs local-only vs centralised</h3>" in doc
    assert "<th>federated F1</th>" in doc and "<td>dos</td><td>0.92</td><td>0.98</td>" in doc
    assert "<td>---</td>" not in doc and "calibrates a model on its own held-out normal drive:</p>" in doc
    assert "CAN anomaly detection" not in report.build(results_dir).read_text()  # MNIST runs: no such section
