"""The i.MX6 target on this machine: exact ARM instruction counts and projected Cortex-A9 time.

One module per idea:
- ``plugin/insncount.c``  qemu TCG plugin: executed instructions per class inside a region
- ``symbols.py``          where a function starts and where its calls return (the region gates)
- ``count.py``            run a static ARM binary under ``qemu-arm -cpu cortex-a9`` with the plugin
- ``costmodel.py``        Cortex-A9 cycles per instruction class (COSTMODEL.md documents it)
- ``profiles.py``         device profiles: clock and memory of each board
- ``calibrate.py``        time the known-count loops on a real board and fit the cycle table
- ``emulate.py``          train with a static ARM trainer under emulation (weights, counts, time)
- ``bench.py``            projected A9 rows for ``ecufl bench kernels --target imx6``
- ``microbench.py``       the known-count loops (``loops/``), built for the board
- ``memtest.py``          memwalk (``loops/memwalk.c``): known cache misses, the streaming read
- ``published.py``        the model against OpenSSL's published Cortex-A9 cycles/byte
                          (``published_a9.json``, harness ``published/opensslbench.c``)
- ``ecufl/calibrate_cli.py`` ``ecufl calibrate`` (``--board``, ``--qemu``, ``--published``)
"""
