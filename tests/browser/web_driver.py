"""Browser windows driven from a Python test: `driver.mjs` run with Node, one JSON
command a line. Each window is its own browser context, so its own device."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from tests.browser.tools import CHROMIUM, HERE, node


class WebError(Exception):
    """A command the browser could not do (a selector that never showed, a failed script)."""


class Web:
    """The driver process; `await web.call(op, name=window, ...)`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = itertools.count(1)

    @classmethod
    async def start(cls) -> Web:
        process = await asyncio.create_subprocess_exec(
            node(),
            str(HERE / "driver.mjs"),
            cwd=HERE,
            env={**os.environ, "PARLEY_CHROMIUM": CHROMIUM},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        return cls(process)

    async def call(self, op: str, **args: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        request_id = next(self._ids)
        self.process.stdin.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if not line:
            raise WebError(f"{op}: the driver exited")
        answer = json.loads(line)
        assert answer["id"] == request_id
        if not answer["ok"]:
            raise WebError(answer["error"])
        return answer["value"]

    async def js(self, name: str, body: str, arg: Any = None) -> Any:
        """Run `body` (an async function's body, given `arg`) in the window's page."""
        return await self.call("eval", name=name, body=body, arg=arg)

    async def until(self, name: str, body: str, arg: Any = None, timeout_ms: int = 20_000) -> None:
        """Wait until `body` (a function body given `arg`) returns something true."""
        await self.call("wait", name=name, body=body, arg=arg, timeout=timeout_ms)

    async def close(self) -> None:
        assert self.process.stdin is not None
        if self.process.returncode is None:
            self.process.stdin.write(b'{"op": "quit"}\n')
            await self.process.stdin.drain()
            # Node exits once its stdin ends: left open, it waited out the 20 s below.
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
