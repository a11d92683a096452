"""Atheris harnesses for ecufl's Python loaders (run by tests/test_fuzz.py, marker `fuzz`).

    .venv/bin/python tests/fuzz/py_fuzz.py TARGET [libFuzzer flags] [CORPUS_DIR ...]

TARGET: weights (kernels/weights.py load), idx (ecufl/data.py IDX parsing, gzip included),
scenario (scenarios/schema.py load), inventory (fleet/deploy/inventory.py load), reply (the
server's strategy on a train reply whose RoundReport bytes, weight payloads and num-examples
come from the input). Each loader may only fail with its own one-line error; anything else
(a traceback) is a crash that atheris reports and exits non-zero on.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

from ecufl import data as mnist  # noqa: E402
from ecufl import wire  # noqa: E402
from ecufl.fleet.deploy import inventory  # noqa: E402
from ecufl.kernels import weights  # noqa: E402
from ecufl.proto import RoundReport  # noqa: E402
from ecufl.scenarios import schema  # noqa: E402
from ecufl.server import strategy  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="ecufl-pyfuzz-"))


def _file(data: bytes, name: str) -> Path:
    p = TMP / name
    p.write_bytes(data)
    return p


def one_line(msg: str) -> None:
    if "\n" in msg or not msg:
        raise AssertionError(f"error is not one line: {msg!r}")


def fuzz_weights(data: bytes) -> None:
    try:
        weights.load(_file(data, "w.npz"))
    except weights.WeightFileError as e:
        one_line(str(e))


def fuzz_idx(data: bytes) -> None:
    if not data:
        return
    images = data[0] & 1
    path = _file(data[1:], "train-images-idx3-ubyte" if images else "train-labels-idx1-ubyte")
    try:
        (mnist.read_images if images else mnist.read_labels)(path)
    except mnist.DataError as e:
        one_line(str(e))


def fuzz_scenario(data: bytes) -> None:
    try:
        schema.load(_file(data, "s.toml"))
    except schema.ScenarioError as e:
        one_line(str(e))


def fuzz_inventory(data: bytes) -> None:
    try:
        inventory.load(_file(data, "inv.toml"), check_keys=False)
    except inventory.InventoryError as e:
        one_line(str(e))


SIZES = [3, 2, 1]
_STRATEGY = None


def fuzz_reply(data: bytes) -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Metadata, MetricRecord, RecordDict
    from flwr.app.message import make_message

    global _STRATEGY
    if _STRATEGY is None:
        import numpy as np

        from ecufl.kernels import Params

        import logging

        logging.getLogger("ecufl.server").setLevel(logging.ERROR)  # one warning per rejected input otherwise
        _STRATEGY = strategy.ReportingFedAvg(sizes=SIZES, seed=1, shard_sizes=[10, 10, 10, 10])
        g = Params([np.ones((2, 3), np.float32), np.ones((1, 2), np.float32)],
                   [np.ones(2, np.float32), np.ones(1, np.float32)])
        _STRATEGY.expect(1, wire.params_to_record(g))
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.PickValueInList([1, 8, 10, 11, 0, -1, 2**40, float("inf"), float("nan"), 8.5, [8.0], []])
    arrays = {}
    for name, shape in wire.shape_of(SIZES).items():
        if fdp.ConsumeBool():  # a well-formed npy payload with fuzzed values
            import numpy as np

            vals = np.frombuffer(fdp.ConsumeBytes(4 * int(np.prod(shape))).ljust(4 * int(np.prod(shape)), b"\0"),
                                 "<f4").reshape(shape).copy()
            arrays[name] = Array(vals)
        else:  # raw bytes claiming to be that array
            arrays[name] = Array(dtype=fdp.PickValueInList(["float32", "float64", "int8"]),
                                 shape=tuple(shape), stype="numpy.ndarray", data=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    report = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    if fdp.ConsumeBool():  # or a real report with fuzzed fields
        r = RoundReport(partition_id=fdp.ConsumeIntInRange(0, 6), samples=fdp.ConsumeIntInRange(0, 20),
                        ecufl_version="fuzz", error=fdp.PickValueInList(["", "failed"]))
        report = r.SerializeToString()
    content = RecordDict({wire.METRICS: MetricRecord({wire.NUM_EXAMPLES: n}), wire.ARRAYS: ArrayRecord(arrays),
                          wire.REPORT: ConfigRecord({wire.REPORT_BYTES: report})})
    meta = Metadata(run_id=1, message_id="m", src_node_id=7, dst_node_id=0, reply_to_message_id="q", group_id="1",
                    created_at=0.0, ttl=60.0, message_type="train")
    out, _ = _STRATEGY.aggregate_train(1, [make_message(meta, content=content)])
    if out is not None:
        import numpy as np

        assert all(np.all(np.isfinite(out[k].numpy())) for k in out.keys())
    for r in _STRATEGY.replies[1]:
        one_line(r.reason) if r.reason else None


TARGETS = {"weights": fuzz_weights, "idx": fuzz_idx, "scenario": fuzz_scenario, "inventory": fuzz_inventory,
           "reply": fuzz_reply}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: py_fuzz.py {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    target = TARGETS[sys.argv[1]]
    os.environ.setdefault("ECUFL_DATA", str(TMP))  # nothing here may download MNIST
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    # ecufl is installed editable (a custom import finder, which atheris.instrument_imports does not
    # see): instrument the loaded code of ecufl's modules directly, so coverage guides the search
    for name, module in list(sys.modules.items()):
        if name == "ecufl" or name.startswith("ecufl."):
            for obj in list(vars(module).values()):
                if getattr(obj, "__module__", None) == name and (callable(obj) or isinstance(obj, type)):
                    try:
                        atheris.instrument_func(obj) if not isinstance(obj, type) else None
                    except Exception:  # noqa: BLE001 - builtins and the like cannot be instrumented
                        pass
                if isinstance(obj, type) and getattr(obj, "__module__", None) == name:
                    for attr in list(vars(obj).values()):
                        fn = getattr(attr, "__func__", attr)
                        if callable(fn) and hasattr(fn, "__code__"):
                            try:
                                atheris.instrument_func(fn)
                            except Exception:  # noqa: BLE001
                                pass
    atheris.Fuzz()


if __name__ == "__main__":
    main()
