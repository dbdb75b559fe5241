"""The gateway process's side of the commands service: WebSocket connections.

`gateway` (the connections' lifecycle, their read loop, dispatch of frames and
commands), `connection` (one connection's state), `typing_indicator`, `presence` (who is
online here, last seen, the gateway's lease), `fanout` (what is routed here, pushed to
the sockets), `sync` (pages from the read model), `protocol` (client frames), `wire`
(the WebSocket: uvicorn's upgrade, then picows), `bus` and `outbox` (commands to the
processors over Kafka).
"""
