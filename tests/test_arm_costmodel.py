"""The Cortex-A9 cost model: one table (Python + COSTMODEL.md agree), projection arithmetic,
profiles, calibration files overriding the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecufl.kernels.arm import costmodel, profiles
from ecufl.kernels.arm.costmodel import CostModel

DOC = Path(costmodel.__file__).with_name("COSTMODEL.md")


def test_markdown_table_is_the_python_table():
    text = DOC.read_text()
    assert costmodel.markdown_table() in text


def test_quadword_float_costs_two_cycles_and_neon_peak_is_four_flop_per_cycle():
    t = costmodel.TABLE
    for op in ("fadd", "fmul", "fmla"):
        assert t[f"neon.{op}.q"][0] == 2 * t[f"neon.{op}.d"][0]
    # 1000 vmla.f32 q = 8000 FLOP in 2000 cycles: exactly the peak
    p = CostModel.trm().project({"neon.fmla.q": 1000})
    assert p.cycles == 2000 and p.neon_peak_fraction(8000) == pytest.approx(1.0)
    assert costmodel.NEON_PEAK_FLOP_PER_CYCLE == 4.0
    # the A9 has no fused multiply-add: it is not priced, it is reported
    assert "neon.fma.q" not in t and "vfp.fma" not in t


def test_projection_is_counts_times_cycles_over_clock():
    counts = {"int.alu": 1000, "vfp.div": 10, "neon.fmla.q": 50, "neon.fma.q": 3}
    p = CostModel.trm().project(counts, profiles.get("imx6-792"))
    assert p.cycles == 1000 * 1 + 10 * 10 + 50 * 2 + 3 * costmodel.UNPRICED_CYCLES
    assert p.seconds == pytest.approx(p.cycles / 792e6)
    assert p.unpriced == {"neon.fma.q": 3}
    assert CostModel.trm().project(counts, profiles.get("host")).seconds is None


def test_profiles():
    assert profiles.get("imx6").clock_hz == 1e9 and profiles.get("imx6").memory_bytes == 1024 * 2**20
    assert profiles.get("imx6-792").memory_bytes == 512 * 2**20
    assert profiles.get("imx6-1200").clock_hz == 1.2e9
    assert not profiles.get("host").emulated
    with pytest.raises(profiles.UnknownProfile, match=r"unknown device profile 'imx7'; profiles: imx6, imx6-792"):
        profiles.get("imx7")


def test_calibration_file_overrides_only_what_it_measured(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"cycles": {"int.alu": 0.5}}))
    model = CostModel.from_calibration(path)
    assert model.cycles["int.alu"] == 0.5 and model.cycles["neon.fmla.q"] == 2
    assert model.project({"int.alu": 10}).cycles == 5 and "calibration" in model.name
    assert CostModel.load(path).cycles["int.alu"] == 0.5


@pytest.mark.parametrize("content", ["not json", json.dumps({"cycles": {"int.alu": -1}}), json.dumps({"x": 1})])
def test_bad_calibration_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(costmodel.CalibrationError, match="cal.json"):
        CostModel.from_calibration(path)


def test_default_model_uses_the_env_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("ECUFL_A9_CALIBRATION", raising=False)
    assert CostModel.load().name == "TRM"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"cycles": {"int.alu": 0.25}}))
    monkeypatch.setenv("ECUFL_A9_CALIBRATION", str(path))
    assert CostModel.load().cycles["int.alu"] == 0.25


def test_executed_flops_count_a_multiply_accumulate_as_two():
    assert costmodel.executed_flops({"neon.fmla.q": 10, "neon.fmul.d": 1, "vfp.mla": 3, "int.alu": 99}) == 80 + 2 + 6
