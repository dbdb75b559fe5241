"""The whole stack for the end-to-end encryption tests, and devices with key stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bench.stand_ins import stand_in_account
from client import Account, ChatClient
from client.e2e import SecureChat
from infra.auth import Tokens
from infra.settings import Settings
from tests.fullstack import FullStack, full_stack

PASSPHRASE = "a passphrase only this device knows"


@dataclass
class E2EStack:
    stack: FullStack
    stores: Path

    @property
    def base(self) -> str:
        return self.stack.base

    async def account(self, name: str = "") -> Account:
        return await stand_in_account(self.stack.settings, name)

    async def other_device(self, account: Account, device: str) -> Account:
        """The same user logged in on another device."""
        redis = aioredis.Redis.from_url(self.stack.settings.redis_url)
        try:
            pair = await Tokens(self.stack.settings, redis).issue(
                uuid.UUID(account.user_id), device
            )
        finally:
            await redis.aclose()
        return Account(
            account.user_id, account.username, device, pair.access_token, pair.refresh_token
        )

    async def device(self, account: Account, connect: bool = True) -> SecureChat:
        """A device with its key store (keys published), connected unless told not to."""
        chat = ChatClient(self.base, account, timeout_s=20.0)
        if connect:
            await chat.connect()
        store = self.stores / f"{account.user_id}-{account.device_id}.keys"
        secure = SecureChat(chat, store, PASSPHRASE)
        secure.publish_keys()
        return secure


@pytest.fixture(scope="package")
def e2e_stack(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    env = {
        "PARLEY_RATE_KEY_BUNDLE_BURST": "1000",
        "PARLEY_RATE_KEY_BUNDLE_PER_S": "1000",
        # The canary's plaintext control is in Kafka only as its command, which the
        # truncator erases within seconds (tests/commands/test_truncate.py tests that):
        # kept here, it proves the scan reads every topic of the run.
        "PARLEY_COMMANDS_TRUNCATE_INTERVAL_S": "0",
    }
    with full_stack(topics, tmp_path_factory.mktemp("e2e"), **env) as stack:
        yield E2EStack(stack, tmp_path_factory.mktemp("stores"))
