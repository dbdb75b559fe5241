"""The gateway process's side of the commands service: WebSocket connections.

`gateway` (the connections' lifecycle, read and write loops, dispatch, fan-out of what
is routed here, presence), `connection` (one connection's state), `typing_indicator`,
`protocol` (client frames), `wsprotocol` (the lean WebSocket transport), `sync` (from the
read model), `bus` and `outbox` (commands to the processors over Kafka).
"""
