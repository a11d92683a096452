"""What a supernode board's Python client does besides training, in steps that can be counted apart.

Runs on Debian's armhf python3.11 under ``qemu-arm -cpu cortex-a9`` (``clientstack.py`` starts it,
one step set per run, and differences the counted instructions of two runs). Only the standard
library and numpy may be imported at the top: this file runs on the board's interpreter, not in
ecufl's virtual environment.

    python3 clientstack_probe.py STEP[,STEP...]

Steps (in the order given):
    start           nothing: the interpreter's start and exit (with ``site``), as every process pays
    numpy           ``import numpy``
    protobuf        ``import google.protobuf`` and a message round trip of Debian's protobuf (3.21:
                    ecufl's round report is generated for protobuf 6.31 and cannot load there)
    data:PATH:DIR:N:P  MNIST's training set through ecufl.data (PATH: its data.py, DIR: the MNIST
                    folder), then the IID split of the first N samples into P shards, as a client does
    weights:L1-L2-..  the global weights of those layer sizes (float32) decoded from npy bytes and the
                    trained weights encoded to npy bytes, as Flower's ArrayRecord does (np.save /
                    np.load, allow_pickle=False); the bytes to decode are made before the step
"""

import sys


def _numpy():
    import numpy  # noqa: F401


def _protobuf():
    from google.protobuf import descriptor_pb2

    msg = descriptor_pb2.FileDescriptorProto(name="round_report.proto", package="ecufl")
    descriptor_pb2.FileDescriptorProto.FromString(msg.SerializeToString())


def _data(arg):
    import importlib.util

    path, folder, n, parts = arg.split(":")
    spec = importlib.util.spec_from_file_location("ecufl_data", path)
    mnist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mnist)
    train = mnist.load("train", folder)
    shards = mnist.partition(train.labels[: int(n)], int(parts), 1)
    return len(shards[0])


def _weights(arg, prepared):
    import io

    import numpy as np

    received = []
    for blob in prepared:
        received.append(np.load(io.BytesIO(blob), allow_pickle=False))
    sent = []
    for a in received:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        sent.append(buf.getvalue())
    return sum(len(b) for b in sent)


def _prepare_weights(arg):
    import io

    import numpy as np

    sizes = [int(v) for v in arg.split("-")]
    blobs = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        for shape in ((fan_out, fan_in), (fan_out,)):
            buf = io.BytesIO()
            np.save(buf, np.full(shape, 0.25, dtype=np.float32), allow_pickle=False)
            blobs.append(buf.getvalue())
    return blobs


def main(argv):
    steps = argv[1].split(",") if len(argv) > 1 else ["start"]
    for step in steps:
        name, _, arg = step.partition(":")
        if name == "start":
            pass
        elif name == "numpy":
            _numpy()
        elif name == "protobuf":
            _protobuf()
        elif name == "data":
            _data(arg)
        elif name == "weights":
            _weights(arg, _prepare_weights(arg))
        elif name == "prepare":  # the weights step's input alone (its baseline)
            _prepare_weights(arg)
        else:
            sys.exit(f"clientstack_probe: unknown step {name!r}")


if __name__ == "__main__":
    main(sys.argv)
