"""The gateway process's side of the commands service: WebSocket connections.

The connection and its read/write loops, frame parsing and dispatch, typing, fan-out of
pushes, presence, sync from the read model, and the command bus to the processors.
"""
