"""The full stack for end-to-end tests: processor, relay, workers and the commands service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.servers import free_port
from bench.stand_ins import stand_in_account
from client import Account, ChatClient
from infra.settings import Settings
from tests.accounts.client import FAST_HASHING
from tests.services import Service, running

GENEROUS_LIMITS = {
    f"PARLEY_RATE_{name}": value
    for kind in ("SEND_USER", "SEND_CONNECTION", "GROUP_CHANGE_USER", "GROUP_CHANGE_CONNECTION")
    for name, value in ((f"{kind}_BURST", "100000"), (f"{kind}_PER_S", "100000"))
}

REGISTRATION_LIMITS = {
    **{
        f"PARLEY_RATE_{limit}_{knob}": "100000"
        for limit in ("REGISTER_ADDRESS", "LOGIN_ADDRESS", "LOGIN_ACCOUNT")
        for knob in ("BURST", "PER_S")
    },
    **{f"PARLEY_{name.upper()}": str(value) for name, value in FAST_HASHING.items()},
}
"""Limits that let a test register and log in as many users as it likes: the stack of a
package serves many tests from one address, and Redis is not emptied between them. And
cheap argon2 (tests/accounts' `FAST_HASHING`): at the defaults a registration and its
login cost 0.4 s of CPU here, and these stacks' tests register dozens of users."""


@dataclass
class Stack:
    settings: Settings
    base: str
    services: dict[str, Service]

    def account(self, name: str = "") -> Account:
        """A logged-in user without the cost of argon2: a session issued directly."""
        return asyncio.run(stand_in_account(self.settings, name))

    async def client(self, account: Account, **options: object) -> ChatClient:
        chat = ChatClient(self.base, account, **options)  # type: ignore[arg-type]
        await chat.connect()
        return chat


@pytest.fixture(scope="package")
def stack(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    env = {"PARLEY_COMMANDS_PORT": str(port), **GENEROUS_LIMITS, **REGISTRATION_LIMITS}
    settings = topics.replace(commands_port=port)
    logs = tmp_path_factory.mktemp("stack")
    with (
        running("processor", logs / "processor.log", env) as processor,
        running("relay", logs / "relay.log", env) as relay,
        running("workers", logs / "workers.log", env) as workers,
        running("commands", logs / "commands.log", env) as commands,
    ):
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        relay.wait_for_log(r"event=relay_active")
        workers.wait_for_log(r"Worker ready")
        commands.wait_for_log(r"event=commands_listening")
        yield Stack(
            settings,
            f"http://127.0.0.1:{port}",
            {"processor": processor, "relay": relay, "workers": workers, "commands": commands},
        )
