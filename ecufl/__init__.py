"""ecufl: a federated-learning testbed for embedded ECUs.

Sub-packages (data flows one way, top to bottom):
  ecufl.scenarios  scenario files and their schema
  ecufl.fleet      local fleets of Flower processes, simulation, deployment to boards
  ecufl.server     the Flower ServerApp (FedAvg, reports, checkpoints)
  ecufl.client     the Flower ClientApp (an ECU training with one kernel)
  ecufl.kernels    HDRNN kernels (numpy reference, C, Eigen, TFLite, int8); never import Flower
  ecufl.proto      the RoundReport schema
Core modules: ecufl.data (MNIST), ecufl.kernels.weights (weight files), ecufl.train, ecufl.cli.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecufl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
