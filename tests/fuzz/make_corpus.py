"""Write the committed seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/<harness>/).

    .venv/bin/python tests/fuzz/make_corpus.py

Seeds are small valid inputs plus the crafted files of issue 15 (tests/test_hostile_readers.py),
so each run starts from the formats' interesting corners. Deterministic: rerunning rewrites the same
bytes.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_hostile_readers import CRAFTED, good_members, make_zip, npy, zip64_extra  # noqa: E402


def idx(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + body


def agent_requests() -> dict[str, bytes]:
    from ecufl.proto import round_report_pb2

    sys.modules.setdefault("round_report_pb2", round_report_pb2)  # agent_pb2's flat import (kernels/remote.py)
    from ecufl.proto import agent_pb2

    rng = np.random.default_rng(1)
    out = {}
    for name, layers in {"784-1-10": [784, 1, 10], "784-2-3-10": [784, 2, 3, 10]}.items():
        params = []
        for n_in, n_out in zip(layers[:-1], layers[1:]):
            params += [rng.standard_normal((n_out, n_in)).astype("<f4").tobytes(),
                       rng.standard_normal(n_out).astype("<f4").tobytes()]
        req = agent_pb2.TrainRequest(layers=layers, params=params, order=[0, 5, 9, 63], lr=3.0, batch_size=2,
                                     server_round=1, partition_id=0, num_partitions=1, eval_order=[1, 2, 3])
        out[name] = req.SerializeToString()
    bad = agent_pb2.TrainRequest(layers=[784, 1, 10], params=[], order=[70], lr=-1, batch_size=0, eval_order=[0] * 100)
    out["bad"] = bad.SerializeToString()
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    seeds: dict[str, dict[str, bytes]] = {"idx": {}, "npz": {}, "agent": agent_requests()}
    # fuzz_idx: first byte odd = images (3 dims), even = labels (1 dim); then the file
    images = idx(0x803, (2, 28, 28), rng.integers(0, 256, 2 * 784, dtype=np.uint8).tobytes())
    labels = idx(0x801, (5,), bytes([0, 1, 2, 9, 7]))
    seeds["idx"] = {"images": b"\x01" + images, "labels": b"\x00" + labels,
                    "images-gz": b"\x01" + gzip.compress(images, mtime=0),
                    "labels-gz": b"\x00" + gzip.compress(labels, mtime=0),
                    "wrap-32bit": b"\x01" + idx(0x803, (5_478_275, 28, 28), bytes(304)),
                    "empty-labels": b"\x00" + idx(0x801, (0,), b"")}
    m = good_members()
    w2_at = sum(30 + len(k) + len(v) for k, v in list(m.items())[:2])
    seeds["npz"] = {"stored": make_zip(m),
                    "float64": make_zip({k: npy(np.load(io.BytesIO(v)).astype("<f8")) for k, v in m.items()}),
                    "npy-v2": make_zip({**m, "w1.npy": npy(np.ones((3, 4), np.float32), (2, 0))}),
                    "zip64-offset": make_zip(m, cd={"w2.npy": {"offset": 0xFFFFFFFF, "extra": zip64_extra(w2_at)}}),
                    **{k: v(m) for k, v in CRAFTED.items()}}
    # the Python harnesses (tests/fuzz/py_fuzz.py)
    from test_hostile_files import TOML_CASES, WEIGHT_CASES

    root = HERE.parent.parent
    seeds["py-weights"] = {"good": make_zip(m), **{k: v for k, v in WEIGHT_CASES.items() if len(v) < 4096}}
    seeds["py-idx"] = dict(seeds["idx"])
    # fuzz_idx, first byte with bit 1 set: ecufl_idx_read_any (any data: float32 type 0x0D, 1-3 dims)
    seeds["idx"].update({
        "any-f32": b"\x02" + idx(0xD02, (3, 4), rng.random((3, 4)).astype(">f4").tobytes()),
        "any-u8-2d": b"\x02" + idx(0x802, (2, 5), bytes(range(10))),
        "any-f32-labels": b"\x02" + idx(0xD01, (2,), np.array([0.5, 1.0], ">f4").tobytes()),
        "any-f32-nan": b"\x02" + idx(0xD02, (1, 2), np.array([0.5, np.nan], ">f4").tobytes())})
    seeds["py-scenario"] = {p.stem: p.read_bytes() for p in sorted((root / "scenarios").glob("*.toml"))}
    seeds["py-scenario"].update({k: v for k, v in TOML_CASES.items() if len(v) < 4096})
    seeds["py-inventory"] = {"example": (root / "fleet" / "inventory.toml").read_bytes()}
    seeds["py-reply"] = {"empty": b"", "ones": b"\x01" * 64, "mixed": bytes(range(256))}
    for harness, files in seeds.items():
        d = HERE / "corpus" / harness
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        print(f"{d}: {len(files)} seeds")


if __name__ == "__main__":
    main()
