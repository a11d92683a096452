"""How steady this machine is: several kernels trained turn by turn in ONE process.

``python -m ecufl.bench_drift --kernels c,eigen --samples 15000 --rounds 8``

Each round trains every kernel on the same samples from the same weights (best of ``--repeats``
calls, samples per CPU-second of this thread) and prints one line. Kernels measured in the same
round share the host's state of the moment; a row of ``ecufl bench kernels`` or a fleet run
minutes later does not. On the shared VM this project was built on, both c and eigen moved from
about 450k to about 620k samples per CPU-second between two rounds a few seconds apart, together:
the host's speed drifts, so compare kernels measured side by side, not runs made at other times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ecufl.bench_drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="c,eigen")
    ap.add_argument("--config", default="784-30-10")
    ap.add_argument("--samples", type=int, default=15000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=10)
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from ecufl import data as mnist
    from ecufl.kernels import create, init_params

    train = mnist.load("train")
    sizes = [int(v) for v in args.config.split("-")]
    params = init_params(sizes, 1, dtype="float32")
    order = np.random.RandomState(1).permutation(len(train))[: args.samples]
    kernels = args.kernels.split(",")
    with threadpool_limits(1):
        for rnd in range(args.rounds):
            rates = {}
            for name in kernels:
                kernel = create(name, params, dtype="float32")
                best = 0.0
                for _ in range(args.repeats):
                    kernel.set_params(params)
                    c0 = time.thread_time()
                    kernel.train(train.images, train.labels, order, 3.0, args.batch_size)
                    best = max(best, len(order) / max(time.thread_time() - c0, 1e-9))
                kernel.close()
                rates[name] = round(best)
            print(json.dumps({"round": rnd, "samples_per_cpu_second": rates}), flush=True)


if __name__ == "__main__":
    main()
