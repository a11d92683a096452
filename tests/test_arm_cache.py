"""The cache model of the counting plugin (kernels/arm/plugin/insncount.c) on a synthetic access
pattern with known misses (kernels/arm/loops/memwalk.c: one word read per 32-byte line), and the
pricing of the memory term (costmodel.memory_cycles). The walk's own push/pop touch one or two
stack lines, hence the small allowances."""

from __future__ import annotations

import pytest

from ecufl.kernels.arm import costmodel, memtest, profiles

LINE = 32


def test_memory_term_prices_l2_hits_dram_lines_and_scattered_reads():
    mem = profiles.MemorySystem(l2="1048576:16:32", l2_hit_cycles=(10, 20, 30), dram_latency_ns=(50, 100, 200),
                                dram_bandwidth=(3.2e9, 1.6e9, 0.8e9))
    cache = {"l1d": {"misses": 1000}, "l1i": {"misses": 100}, "dram_line_reads": 100,
             "dram_sequential_line_reads": 90, "dram_line_writes": 0}
    m = costmodel.memory_cycles(cache, mem, 1e9)
    assert m["l2_hits"] == 1000
    assert m["low"] == pytest.approx(1000 * 10 + 3200 / 3.2e9 * 1e9)        # 10,000 + 1,000
    assert m["nominal"] == pytest.approx(1000 * 20 + 3200 / 1.6e9 * 1e9)    # 20,000 + 2,000
    assert m["high"] == pytest.approx(1000 * 30 + 3200 / 0.8e9 * 1e9 + 10 * 200)
    s = costmodel.seconds_range(1e6, m, 1e9)
    lo, hi = costmodel.VALIDATION_RATIO_RANGE
    assert s["core"] == pytest.approx(1e-3) and s["with_memory"] == pytest.approx((1e6 + 22_000) / 1e9)
    assert s["low"] == pytest.approx((1e6 / hi + 11_000) / 1e9) and s["high"] == pytest.approx((1e6 / lo + 36_000) / 1e9)


def test_profiles_carry_their_l2():
    assert profiles.get("imx6").memory.l2_bytes == 1 << 20
    assert profiles.get("imx6-792").memory.l2 == "524288:8:32"
    assert profiles.get("host").memory is None


@pytest.mark.arm
def test_array_that_fits_l1_misses_once_per_line():
    c = memtest.walk(16384, LINE, 4).cache      # 512 lines, 4 passes, default A9 geometry
    assert 512 <= c["l1d"]["misses"] <= 514
    assert c["l1d"]["accesses"] >= 4 * 512
    assert 512 <= c["dram_line_reads"] <= 520   # cold misses only, the first pass
    assert c["dram_sequential_line_reads"] >= 500


@pytest.mark.arm
def test_array_past_l1_misses_every_access_but_stays_in_l2():
    c = memtest.walk(65536, LINE, 4).cache      # 2048 lines > 1024-line 4-way LRU L1: thrash
    assert 4 * 2048 <= c["l1d"]["misses"] <= 4 * 2048 + 3
    assert 2048 <= c["l2"]["misses"] <= 2048 + 8


@pytest.mark.arm
def test_geometry_arguments_and_associativity():
    # 4 sets x 2 ways: a stride of 128 bytes maps every read to set 0
    two = memtest.walk(256, 128, 10, {"l1d": "256:2:32", "l2": "65536:4:32"}).cache   # 2 lines: fit 2 ways
    three = memtest.walk(384, 128, 10, {"l1d": "256:2:32", "l2": "65536:4:32"}).cache  # 3 lines: LRU thrash
    assert two["l1d"]["bytes"] == 256 and two["l1d"]["ways"] == 2
    assert 2 <= two["l1d"]["misses"] <= 4
    assert 30 <= three["l1d"]["misses"] <= 33
    small_l2 = memtest.walk(65536, LINE, 3, {"l2": "32768:4:32"}).cache    # the L2 thrashes too
    assert small_l2["l2"]["misses"] >= 3 * 2048


@pytest.mark.arm
def test_cache_model_is_off_unless_asked():
    from ecufl.kernels.arm import count

    assert count.run(memtest.build(), ["4096", "32", "1"], ["mw_walk"]).counts.cache is None


@pytest.mark.arm
def test_streaming_read_projects_the_published_i_mx6_bandwidth_range():
    # An 8 MB sweep: all lines from DRAM, nearly all sequential. The nominal bandwidth term is the
    # published CPU copy range's middle (profiles.MemorySystem), so this checks the plumbing: core
    # cycles and miss counts do not pull it out of the 0.8-1.7 GB/s measured on i.MX boards.
    r = memtest.stream("imx6")
    bw = r["bandwidth_bytes_per_second"]
    assert 0.8e9 <= bw["nominal"] <= 1.7e9
    assert bw["slow"] <= bw["nominal"] <= bw["fast"]
    assert r["cache"]["dram_line_reads"] >= (8 << 20) // LINE


@pytest.mark.arm
def test_bench_rows_carry_the_memory_term(mnist_train):
    from ecufl.kernels.arm.bench import arm_bench_rows
    from ecufl.kernels.arm.costmodel import CostModel

    (row,) = arm_bench_rows(["c"], ["784-8-10"], "imx6", batch_sizes=(10,), samples=200,
                            images=mnist_train.images, labels=mnist_train.labels, model=CostModel.trm())
    assert row["error"] is None
    miss = row["cache_misses_per_epoch"]
    # 25 KB of weights fit the 1 MB L2: DRAM serves the epoch's images (60,000 x 784 bytes) once
    assert miss["dram_line_reads"] == pytest.approx(60000 * 784 / LINE, rel=0.1)
    lo, hi = row["projected_seconds_per_epoch_range"]
    core, with_mem = row["projected_seconds_per_epoch"], row["projected_seconds_per_epoch_with_memory"]
    assert core < with_mem < hi and lo < core
    assert with_mem == pytest.approx(core + row["memory_cycles_per_epoch"]["nominal"] / 1e9)
