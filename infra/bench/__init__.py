"""`parley bench`: load generators, baselines and a peer server, measured on this machine.

The scenarios (`oneone`, `group`, `connections`, `ramp`, the baselines and the ejabberd
peer) are orchestrated by `infra.bench.scenarios` in the `parley bench` process; the
traffic itself comes from `python -m infra.bench.loadgen` processes driven over a
line protocol (`infra.bench.driver`). Only `infra.cli` imports this package.
"""
