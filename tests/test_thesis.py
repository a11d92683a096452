"""`ecufl thesis`: verdicts computed from the data, and a page whose every number comes from the run's CSV.

The unit tests feed ``analyse`` synthetic cells for which each verdict is known and check the
page checker catches a number that is not the CSV's. The slow tests run ``ecufl thesis --quick``
once and check its output: all five claims, derived.csv and claims.json recomputed from
cells.csv, every number on the page re-read from its source line, and the page opened in
headless Chromium (every plot decoded, every table filled, no console error).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ecufl_cmd
from ecufl import thesis, thesis_page

VERDICTS = {"holds", "does-not-hold", "conditional"}


# --- the checker the slow tests use ------------------------------------------------------------------
def page_mismatches(out: Path) -> tuple[int, list[str]]:
    """(numbers checked, mismatches): every data-src number of index.html re-read and re-formatted."""
    text = (out / "index.html").read_text()
    cells = {r["row"]: r for r in thesis.read_csv(out / "cells.csv")}
    derived = thesis.read_derived(out / "derived.csv")
    meta = json.loads((out / "meta.json").read_text())
    bad, n = [], 0
    for src, kind, shown in thesis_page.sources(text):
        n += 1
        where, _, key = src.partition(":")
        if where == "cells":
            row, _, col = key.partition(":")
            value = cells[int(row)][col]
        elif where == "derived":
            value = derived.get(key)
        elif where == "meta":
            value = meta.get(key)
        else:
            bad.append(f"{src}: unknown source")
            continue
        import html as _html

        if thesis_page.fmt(value, kind) != _html.unescape(shown):
            bad.append(f"{src}: page shows {shown!r}, the file gives {thesis_page.fmt(value, kind)!r}")
    # no number outside those spans: every table cell is a label or holds sourced numbers only
    for td in re.findall(r"<td(?![^>]*class=\"label\")[^>]*>(.*?)</td>", text, flags=re.S):
        rest = re.sub(r"<span data-src=[^>]*>[^<]*</span>|<span class=\"label\"[^>]*>[^<]*</span>", "", td)
        if re.search(r"\d", rest):
            bad.append(f"unsourced number in a table cell: {td[:80]!r}")
    return n, bad


# --- synthetic cells ---------------------------------------------------------------------------------
def _timing(kernel, config, seconds, own=1 << 20, proc=150 << 20):
    sizes = [int(v) for v in config.split("-")]
    return {"experiment": "timing", "kernel": kernel, "config": config, "params": thesis.n_params(sizes),
            "hidden": sizes[1], "depth": len(sizes) - 2, "seed": 1, "epoch": 2, "samples": 60000,
            "host_cpu_seconds_per_epoch": seconds, "kernel_train_footprint_bytes": own,
            "kernel_eval_footprint_bytes": 0, "process_peak_rss_bytes": proc, "baseline_rss_bytes": proc - own,
            "test_accuracy": 0.9, "weight_bytes": 4 * thesis.n_params(sizes), "update_bytes": 4 * thesis.n_params(sizes),
            "partial": 0, "error": None}


def _acc(config, seed, epoch, test, train):
    sizes = [int(v) for v in config.split("-")]
    return {"experiment": "accuracy", "kernel": "c", "config": config, "params": thesis.n_params(sizes),
            "hidden": sizes[1], "depth": len(sizes) - 2, "seed": seed, "epoch": epoch, "samples": 60000,
            "test_accuracy": test, "train_accuracy": train, "test_loss": 0.1, "train_loss": 0.1, "partial": 0,
            "error": None}


def _grid(time_of, acc_of, own_of=lambda k, p: 1 << 20):
    rows = []
    for config in thesis.CONFIGS:
        p = thesis.n_params([int(v) for v in config.split("-")])
        for kernel in ("numpy", "c", "c-plain"):
            rows.append(_timing(kernel, config, time_of(kernel, p), own=own_of(kernel, p)))
        for seed in (1, 2):
            for epoch in (1, 2, 3):
                test, train = acc_of(config, seed, epoch)
                rows.append(_acc(config, seed, epoch, test, train))
    for i, r in enumerate(rows):
        r["row"] = i
    return rows


def _linear(kernel, p):
    return {"numpy": 3.0, "c": 1.0, "c-plain": 2.0}[kernel] * (1e-5 * p + 0.01)


def _wider_better(config, seed, epoch):
    h = int(config.split("-")[1])
    test = 0.80 + 0.01 * math.log2(h) + 0.01 * epoch + 0.001 * seed
    return test, test + 0.002 * h / 32


def verdicts(rows):
    return {c["id"]: c["verdict"] for c in thesis.analyse(rows)[1]}


def test_linear_time_is_not_exponential_and_exponential_time_is():
    assert verdicts(_grid(_linear, _wider_better))[1] == "does-not-hold"
    assert verdicts(_grid(lambda k, p: 0.01 * math.exp(p / 15000), _wider_better))[1] == "holds"


def test_claim2_follows_the_accuracy_data():
    assert verdicts(_grid(_linear, _wider_better))[2] == "does-not-hold"

    def overfits(config, seed, epoch):  # 128 wide: lower test, higher train, every epoch and seed
        h = int(config.split("-")[1])
        test = 0.95 - (0.05 if h == 128 else 0.0) + 0.001 * seed
        return test, (0.999 if h == 128 else 0.96)

    assert verdicts(_grid(_linear, overfits))[2] == "holds"


def test_claim5_follows_time_and_memory():
    assert verdicts(_grid(_linear, _wider_better, lambda k, p: (8 if k == "numpy" else 1) << 20))[5] == "holds"
    assert verdicts(_grid(lambda k, p: {"numpy": 1.0, "c": 3.0, "c-plain": 2.0}[k], _wider_better))[5] == "does-not-hold"


def test_claim4_kernel_footprint_growing_with_params_makes_it_conditional():
    flat = verdicts(_grid(_linear, _wider_better, lambda k, p: 1 << 20))[4]
    growing = verdicts(_grid(_linear, _wider_better, lambda k, p: (1 << 20) + 16 * p))[4]
    assert (flat, growing) == ("holds", "conditional")


def test_page_checker_catches_a_number_not_from_the_csv(tmp_path):
    rows = _grid(_linear, _wider_better)
    thesis.write_outputs(tmp_path, rows, {"command": "test", "started": "now", "minutes": 0.1, "cpus": 2,
                                          "host": "x86_64", "load0": 1.0, "plan": {"timing_epochs": 2}})
    n, bad = page_mismatches(tmp_path)
    assert n > 50 and bad == []
    page = (tmp_path / "index.html").read_text()
    span = re.search(r'<span data-src="cells:[^"]*" data-kind="s">([^<]*)</span>', page)
    (tmp_path / "index.html").write_text(page.replace(span.group(0), span.group(0).replace(span.group(1), "0.123 s"), 1))
    assert page_mismatches(tmp_path)[1]
    (tmp_path / "index.html").write_text(page.replace("</table>", "<tr><td>42</td></tr></table>", 1))
    assert any("unsourced" in b for b in page_mismatches(tmp_path)[1])


# --- the real run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("thesis") / "run"
    proc = subprocess.run(ecufl_cmd() + ["thesis", "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


@pytest.mark.slow
def test_quick_run_has_five_claims_computed_from_its_csv(quick_run):
    out, stdout = quick_run
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == [1, 2, 3, 4, 5]
    for c in claims:
        assert c["statement"] == thesis.STATEMENTS[c["id"]]
        assert c["verdict"] in VERDICTS and c["cause"] and c["evidence"], c
        assert "{{" not in c["cause"], c["cause"]
        assert f"{c['id']}. {c['verdict']}" in stdout
    cells = thesis.read_csv(out / "cells.csv")
    assert {r["experiment"] for r in cells if not r["error"]} == {"init", "accuracy", "timing", "projection"}
    derived, again = thesis.analyse(cells)
    on_file = thesis.read_derived(out / "derived.csv")
    assert set(derived) == set(on_file)
    assert all(math.isclose(derived[k], on_file[k], rel_tol=1e-12, abs_tol=1e-15) for k in derived)
    assert [c["verdict"] for c in again] == [c["verdict"] for c in claims]
    # every kernel timed in its own process, with its own footprint measured
    timed = [r for r in cells if r["experiment"] == "timing" and not r["error"]]
    assert {"numpy", "c", "textbook"} <= {r["kernel"] for r in timed}
    assert all(r["kernel_train_footprint_bytes"] is not None and r["process_peak_rss_bytes"] > 0 for r in timed)


@pytest.mark.slow
def test_quick_run_page_numbers_come_from_the_csv(quick_run):
    out, _ = quick_run
    n, bad = page_mismatches(out)
    assert bad == [], bad[:5]
    assert n > 200
    for name in ("time", "accuracy", "memory", "board"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in (out / "index.html").read_text()  # self-contained


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium not found: `make setup` installs Debian's chromium (DEB_PACKAGES)")


@pytest.mark.slow
def test_quick_run_page_renders_in_headless_chromium(quick_run, tmp_path):
    out, _ = quick_run
    page = (out / "index.html").resolve()
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-render="([^"]*)"', proc.stdout)
    assert m, "the page's render check did not run: " + proc.stderr[-1000:]
    tables = len(re.findall(r"<table>", page.read_text()))
    assert m.group(1) == f"ok images=4 tables={tables} broken-images=0 empty-tables=0", m.group(1)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    assert console == [], console


def test_thesis_scenario_is_four_emulated_imx6_ecus_with_board_trainers():
    from ecufl.kernels.arm.emulate import TRAINERS
    from ecufl.scenarios import schema

    s = schema.load(Path(__file__).resolve().parent.parent / "scenarios" / "thesis.toml")
    assert (s.nodes, s.profile, s.lr, s.batch_size) == (4, "imx6", 3.0, 10)
    assert s.shootout and all(k in TRAINERS for k in s.shootout.kernels)  # every kernel has an ARM build
