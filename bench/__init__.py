"""`parley bench`: load generators, baselines and a peer server, measured on this machine.

The scenarios (`oneone`, `group`, `connections`, `ramp`, the baselines and the ejabberd
peer) are orchestrated by `bench.scenarios` in the `parley bench` process; the
traffic itself comes from `python -m bench.loadgen` processes driven over a
line protocol (`bench.driver`). Only `parley.cli` imports this package.
"""
