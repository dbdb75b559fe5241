"""The gateway process's side of the commands service: WebSocket connections.

`gateway` (the connections' lifecycle, read and write loops, dispatch of frames and
commands), `connection` (one connection's state), `typing_indicator`, `presence` (who is
online here, last seen, the gateway's lease), `fanout` (what is routed here, pushed to
the sockets), `sync` (pages from the read model), `protocol` (client frames),
`wsprotocol` (the lean WebSocket transport), `bus` and `outbox` (commands to the
processors over Kafka).
"""
