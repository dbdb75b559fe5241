"""Rebuilding projections from the log (`parley replay`, docs/replay.md).

`rebuild` drives a rebuild beside the live projections: `logreader` reads the log,
`shadow` and `cache_shadow` hold the copies, `verify` compares them with the live ones
before the swap; `locks` keeps a replay and the live workers apart, `listing` says what
is live or rebuilding, `errors` are what a replay refuses or fails with.
"""
