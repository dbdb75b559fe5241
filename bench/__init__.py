"""`parley bench SCENARIO`: every benchmark, measured on this machine (`bench.runner`).

The components (`processor`, `relay`, `projection`, `queries`, `replay`, `media`) each
measure one part against private databases and topics. The end-to-end scenarios
(`oneone`, `group`, `connections`, `ramp`, the baselines and the ejabberd peer) are
orchestrated by `bench.scenarios` in the `parley bench` process; the traffic itself comes from
`python -m bench.loadgen` processes driven over a line protocol (`bench.driver`).
Only `parley.cli` imports this package; it imports the server's layers and `client/`,
and nothing of the server imports it.
"""
