"""What travels between server and clients, besides the RoundReport: names, keys and weights.

Both ``ecufl.server`` and ``ecufl.client`` import this module (and never each other), so the two
sides cannot disagree about a key. Weights travel as one ``ArrayRecord`` with the weight file's
names ``w1, b1, w2, b2, ...`` in the transport dtype (float32: what the ECU kernels compute in).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from ecufl.kernels import Params

TRANSPORT_DTYPE = "float32"

# Record keys of a train message and its reply.
ARRAYS = "arrays"  # ArrayRecord: the weights
CONFIG = "config"  # ConfigRecord: hyper-parameters and the fleet's layout, server -> client
METRICS = "metrics"  # MetricRecord: num-examples, loss, accuracy and timings, client -> server
REPORT = "report"  # ConfigRecord holding the serialised RoundReport, client -> server
REPORT_BYTES = "round-report"
NUM_EXAMPLES = "num-examples"  # the FedAvg weight


def params_to_record(params: Params, dtype: str | None = TRANSPORT_DTYPE) -> ArrayRecord:
    arrays = params.arrays()
    if dtype is not None:
        arrays = {k: np.ascontiguousarray(a, dtype=dtype) for k, a in arrays.items()}
    return ArrayRecord({k: Array(a) for k, a in arrays.items()})


def record_to_params(record: ArrayRecord) -> Params:
    """Weights from an ArrayRecord named w1, b1, ...; raises ValueError if a name is missing."""
    layers = len(record) // 2
    names = [f"{p}{l}" for l in range(1, layers + 1) for p in ("w", "b")]
    if len(record) % 2 or sorted(record.keys()) != sorted(names):
        raise ValueError(f"expected arrays {', '.join(names) or 'w1, b1, ...'}; got {', '.join(record.keys())}")
    return Params([record[f"w{l}"].numpy() for l in range(1, layers + 1)],
                  [record[f"b{l}"].numpy() for l in range(1, layers + 1)])


def shape_of(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """Expected shape of every array for layer sizes ``sizes``."""
    out: dict[str, tuple[int, ...]] = {}
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        out[f"w{l}"] = (n_out, n_in)
        out[f"b{l}"] = (n_out,)
    return out
