"""The ecufl command line, end to end in subprocesses, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ecufl_cmd
from ecufl.kernels import weights as weightfile
from ecufl.kernels.reference import TextbookKernel


def ecufl(*args, check=True):
    proc = subprocess.run(ecufl_cmd() + [str(a) for a in args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"ecufl {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_json_reaches_90_percent():
    out = ecufl("train", "--kernel", "numpy", "--layers", "784,30,10", "--epochs", 1, "--batch-size", 10,
                "--lr", 3.0, "--seed", 1, "--json")
    r = json.loads(out.stdout)
    assert r["test_accuracy"] >= 0.90
    assert r["train_seconds"] > 0 and r["peak_rss_bytes"] > 47_000_000  # holds the data set at least
    assert r["samples"] == 60000 and r["dtype"] == "float64"


def test_init_train_equals_network_py_update_rule(tmp_path, mnist_train):
    init = tmp_path / "init.npz"
    out = tmp_path / "out.npz"
    ecufl("init", "--layers", "784,30,10", "--seed", 1, "--out", init)
    trained = ecufl("train", "--no-shuffle", "--init", init, "--train-limit", 1000, "--epochs", 1, "--lr", 3.0,
                    "--batch-size", 10, "--out", out, "--json")
    params, meta = weightfile.load(out)
    assert meta["kernel"] == "numpy" and meta["sizes"] == [784, 30, 10]
    book = TextbookKernel(weightfile.load(init)[0])
    book.train(mnist_train.images, mnist_train.labels, np.arange(1000), 3.0, 10)
    for a, b in zip(params.flat(), book.get_params().flat()):
        assert np.max(np.abs(a - b)) < 1e-10
    ev = json.loads(ecufl("eval", "--weights", out, "--json").stdout)
    assert ev["accuracy"] == json.loads(trained.stdout)["test_accuracy"]


def test_compare_exit_codes(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ecufl("init", "--seed", 1, "--out", a)
    ecufl("init", "--seed", 1, "--out", b, "--dtype", "float32")
    same = ecufl("compare", a, b, "--atol", "1e-6", "--json")
    assert json.loads(same.stdout)["ok"] is True
    c = tmp_path / "c.npz"
    ecufl("init", "--seed", 2, "--out", c)
    diff = ecufl("compare", a, c, check=False)
    assert diff.returncode == 1 and "differ beyond the tolerance" in diff.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--layers", "784"], "--layers: need at least an input and an output layer"),
    (["train", "--layers", "100,30,10"], "--layers: the first layer must be 784"),
    (["train", "--layers", "784,x,10"], "--layers: expected comma-separated integers"),
    (["train", "--lr", "-1"], "--lr must be a positive finite number"),
    (["train", "--lr", "nan"], "--lr must be a positive finite number"),
    (["train", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["train", "--epochs", "-2"], "--epochs must be >= 0"),
    (["train", "--kernel", "nope"], "unknown kernel 'nope'"),
    (["train", "--dtype", "float64", "--kernel", "numpy", "--prune", "0.5"], "takes no option"),
    (["train", "--bogus"], "No such option '--bogus'"),
    (["init", "--out", "x.npz", "--seed", "-3"], "--seed must be in"),
])
def test_bad_flags_one_line_exit_2(args, message):
    proc = ecufl(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecufl: error:") and message in lines[0], proc.stderr


def test_bad_files_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    proc = ecufl("eval", "--weights", bad, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr
    proc = ecufl("train", "--data-dir", tmp_path, check=False)
    assert proc.returncode == 1 and "--data-dir" in proc.stderr and proc.stderr.count("\n") == 1


def test_weight_file_round_trip_and_errors(tmp_path):
    from ecufl.kernels import init_params

    p = init_params([784, 16, 10], 3, dtype="float32")
    path = weightfile.save(tmp_path / "w.npz", p, seed=3, kernel="numpy")
    q, meta = weightfile.load(path)
    assert meta["format"] == "ecufl-weights/1" and meta["seed"] == 3
    assert all(np.array_equal(a, b) for a, b in zip(p.flat(), q.flat()))
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["b1", "b2", "meta", "w1", "w2"]
    arrays = p.arrays()
    arrays["w2"] = arrays["w2"][:, :3]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(weightfile.WeightFileError, match="shape"):
        weightfile.load(tmp_path / "shape.npz")
    arrays = p.arrays()
    arrays["b1"] = arrays["b1"].copy()
    arrays["b1"][0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(weightfile.WeightFileError, match="b1 holds NaN"):
        weightfile.load(tmp_path / "nan.npz")
    arrays = p.arrays()
    del arrays["b2"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(weightfile.WeightFileError, match="b2 is missing"):
        weightfile.load(tmp_path / "missing.npz")


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_a_log(tmp_path, monkeypatch, capsys):
    """A bug is still one line for the user: what happened and where the traceback is."""
    import ecufl.kernels
    from ecufl import cli

    def broken():
        raise RuntimeError("the registry fell over")

    monkeypatch.setattr(ecufl.kernels, "available", broken)
    monkeypatch.setenv("ECUFL_LOG_DIR", str(tmp_path / "logs"))
    with pytest.raises(SystemExit) as e:
        cli.main(["kernels"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("ecufl: error: RuntimeError: the registry fell over (a bug in ecufl; traceback in ")
    log = Path(err.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs" and "Traceback (most recent call last)" in log.read_text()


def test_peak_rss_is_the_process_own_not_its_parents():
    """A bench worker is a subprocess of a big parent: its peak must be its own (VmHWM), not the
    parent's carried across fork + exec (ru_maxrss does that: it read 635 MiB here for a 35 MiB child)."""
    ballast = np.ones(60_000_000)  # 480 MB resident in this (parent) process
    assert ballast.sum() > 0
    out = subprocess.run([sys.executable, "-c", "from ecufl.train import peak_rss_bytes; print(peak_rss_bytes())"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert 10 * 2**20 < int(out.stdout) < 200 * 2**20, out.stdout


def test_record_keeps_output_with_its_context_and_never_a_failed_run(tmp_path):
    out = tmp_path / "logs" / "compare.md"
    a = tmp_path / "a.npz"
    ecufl("init", "--layers", "784,8,10", "--seed", 1, "--out", a)
    proc = ecufl("--record", out, "compare", a, a)
    text = out.read_text()
    assert text.startswith(f"# `ecufl compare {a} {a}`")
    for part in ("- ran: ", " UTC (", "commit ", "- machine: ", "cores", "load average (1 min): "):
        assert part in text, part
    assert proc.stdout.strip() and proc.stdout.strip() in text  # the output, passed through and kept
    # a failing command keeps the earlier record as it was, and says so in one line
    bad = ecufl("--record", out, "compare", a, tmp_path / "missing.npz", check=False)
    assert bad.returncode == 1 and out.read_text() == text
    assert bad.stderr.strip().splitlines()[-1] == f"ecufl: --record {out}: not written, the command failed (exit 1)"
    late = ecufl("kernels", "--record", out, check=False)
    assert late.returncode == 2 and "No such option '--record'" in late.stderr
