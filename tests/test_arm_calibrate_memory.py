"""`ecufl calibrate --memory`: memwalk's time per line at L1-, L2- and DRAM-sized arrays gives the
L2 hit cost and the DRAM streaming bandwidth; the calibration file carries them and the
projections' memory term uses them. A synthetic board with known costs stands in for the timing
(qemu has no caches: its times say nothing about them, and calibrate refuses them)."""

from __future__ import annotations

import pytest

from ecufl.kernels.arm import calibrate as cal
from ecufl.kernels.arm import costmodel, profiles
from ecufl.kernels.arm.costmodel import CostModel

pytestmark = pytest.mark.arm


class SyntheticBoard:
    """Loop time 5 ns per line; an L2 hit adds 20 ns, a DRAM line 32 bytes at 1 GB/s (32 ns)."""

    name = "synthetic"

    def __init__(self):
        self.walks = []

    def prepare_memwalk(self, binary):
        assert binary.is_file()

    def run_memwalk(self, nbytes, stride, passes):
        self.walks.append((nbytes, stride, passes))
        extra = 0.0 if nbytes <= 32768 else 20e-9 if nbytes <= 1 << 20 else 32e-9
        return (nbytes // stride) * passes * (5e-9 + extra)


def test_memory_costs_from_memwalk_times(tmp_path):
    board = SyntheticBoard()
    m = cal.measure_memory(board, 1e9, profiles.get("imx6"), repeats=2)
    assert m["l2_hit_cycles"] == pytest.approx(20.0)
    assert m["dram_bandwidth_bytes_per_second"] == pytest.approx(1e9)
    assert {w[0] for w in board.walks} == {b for b, _ in cal.MEMWALK.values()} and all(w[1] == 32 for w in board.walks)
    # into a calibration file, and back into the model the projections use
    c = cal.Calibration("synthetic", 1e9, "test", {"int.alu": 1.0}, 0.0, memory=m)
    path = c.write(tmp_path / "cal.json")
    model = CostModel.load(path)
    memsys = model.memory_system(profiles.get("imx6").memory)
    assert memsys.l2_hit_cycles == (pytest.approx(20.0),) * 3 and memsys.dram_bandwidth == (pytest.approx(1e9),) * 3
    assert memsys.l2 == profiles.get("imx6").memory.l2
    cache = {"l1d": {"misses": 10}, "l1i": {"misses": 0}, "dram_line_reads": 0, "dram_line_writes": 0}
    assert costmodel.memory_cycles(cache, memsys, 1e9)["nominal"] == pytest.approx(200.0)
    assert CostModel.trm().memory_system(profiles.get("imx6").memory) == profiles.get("imx6").memory


def test_times_that_do_not_grow_with_the_array_are_refused():
    class Flat(SyntheticBoard):
        def run_memwalk(self, nbytes, stride, passes):
            return (nbytes // stride) * passes * 5e-9

    with pytest.raises(cal.CalibrationFailed, match="does not grow"):
        cal.measure_memory(Flat(), 1e9, profiles.get("imx6"), repeats=1)
