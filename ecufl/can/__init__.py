"""The CAN-bus anomaly-detection workload (issue 17), core layer: numpy and the kernels only
(cantools and opendbc, the `can` extra, only to convert a DBC).

- ``bus``: the bus description (JSON converted once from a DBC; the Ford bus is shipped);
- ``codec``: frames as arrays, signals packed and read as cantools does;
- ``generate``: a vehicle's normal traffic from a seed (drive cycles, ECU clocks);
- ``attacks``: nine attack families, labelled per frame and per interval;
- ``logs``: candump ``-l`` and HCRL CSV writers and readers (``FILE:LINE`` errors);
- ``features``: fixed windows as feature vectors in [0, 1];
- ``detect``: the autoencoder and the classifier (HDRNN, numpy kernel), metrics per family;
- ``run`` / ``federated``: one detection experiment; federated vs local-only vs centralised;
- ``cli``: ``ecufl can ...``.
"""
