"""Redis, PostgreSQL and Kafka SIGKILLed under load, and restarted as `parley up` does.

Through the real services (tests/fullstack.py), senders each send to their own
receiver, one message after another, resending what got no ack with the same local id,
as a client written from docs/protocol.md does. The server is killed mid-stream and
restarted with its stack service's `up()`. Then: every acked message reaches its
receiver exactly once and in order; a send made once the server is back is acked within
10 s; after Redis, its projections equal a rebuild from the log. Each test prints its
figures (docs/reliability.md keeps them).

A kill test kills only a server this checkout's stack started (its pid file under the
state folder): against an external server it is skipped, with the reason in the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.stand_ins import stand_in_account
from client import ChatClient
from client.chat import CommandFailed
from infra.settings import Settings
from infra.stack import LocalService, services
from projections.replay.rebuild import RebuildOptions, rebuild
from tests.fullstack import FullStack, full_stack
from tests.services import Service

PAIRS = 20
PER_SENDER_PER_S = 4.0  # 80 messages/s in all
BEFORE_KILL_S = 2.0
AFTER_BACK_S = 3.0
ACKS_AGAIN_WITHIN_S = 10.0
DELAYED_S = 1.0
RETRYABLE = frozenset({"timeout", "unavailable", "rate_limited"})
"""The error codes docs/protocol.md tells a client to answer by sending again."""
"""A message whose ack took longer than this (resends included) counts as delayed."""


@pytest.fixture(scope="module")
def stack(
    topics: Settings, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FullStack]:
    if not any(s.managed and s.pid() is not None for s in services(base_settings)):
        pytest.skip(  # before starting anything for tests that would all skip
            f"no server here is run by this checkout's stack (under {base_settings.state_dir}):"
            " a kill test never kills a server it did not start"
        )
    with full_stack(topics, tmp_path_factory.mktemp("kills")) as running:
        yield running


def managed(base_settings: Settings, name: str) -> LocalService:
    """The stack service `name`, if this checkout's stack runs it; else skip."""
    service = next(s for s in services(base_settings) if s.name == name)
    pid = service.pid() if service.managed else None
    if pid is None or not runs(pid, service.command()[0]):
        pytest.skip(
            f"{name} at {service.address} is not run by this checkout's stack (no live "
            f"{name} with the pid in {service.pidfile}): a kill test never kills a server "
            "it did not start"
        )
    return service


def runs(pid: int, program: str) -> bool:
    """Whether `pid` runs `program` (a pid file outlives its process; the pid may be reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return os.path.basename(program).encode() in cmdline


@dataclass
class Sent:
    started: float
    acked: float
    chat: str
    seq: int


@dataclass
class Load:
    """Senders that send until `stop` is set, and what each got acked."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    acked: dict[str, list[Sent]] = field(default_factory=dict)
    chats: dict[str, str] = field(default_factory=dict)

    def all(self) -> list[Sent]:
        return [s for sent in self.acked.values() for s in sent]


async def send_until_acked(client: ChatClient, local_id: str, chat: str | None, to: str) -> Sent:
    """Send, and resend with the same local id until acked (a reconnect if the socket
    died), as docs/protocol.md tells a client to."""
    started = time.monotonic()
    while True:
        try:
            if chat is None:
                ack = await client.send_text(local_id, to=to, local_id=local_id)
            else:
                ack = await client.send_text(local_id, chat_id=chat, local_id=local_id)
            return Sent(started, time.monotonic(), ack.chat_id, ack.seq)
        except CommandFailed as exc:
            if exc.code not in RETRYABLE:  # a refusal: resending cannot help
                raise
            await asyncio.sleep(0.2)
        except Exception:  # a timeout or a dropped socket: reconnect and resend
            await asyncio.sleep(0.2)
            try:
                await client.reconnect()
            except Exception:
                await asyncio.sleep(0.5)


async def sender(load: Load, client: ChatClient, receiver: str) -> None:
    name = client.user_id
    sent = load.acked.setdefault(name, [])
    chat: str | None = None
    next_at = time.monotonic()
    while not load.stop.is_set():
        result = await send_until_acked(client, f"{name[:8]}-{len(sent)}", chat, receiver)
        sent.append(result)
        chat = load.chats[name] = result.chat
        next_at += 1 / PER_SENDER_PER_S
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def readyz(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass
class Outcome:
    down_s: float  # kill -> the server healthy again
    probe_ack_s: float  # server back -> a new send acked
    messages: int
    delayed: int
    worst_ack_s: float


def kill_under_load(stack: FullStack, server: LocalService) -> Outcome:
    """Run the load, kill `server` mid-stream, restart it; check and measure."""

    async def scenario() -> Outcome:
        settings = stack.settings
        people = [await stand_in_account(settings) for _ in range(2 * PAIRS + 2)]
        senders = [ChatClient(stack.base, a, timeout_s=12.0) for a in people[:PAIRS]]
        receivers = [ChatClient(stack.base, a) for a in people[PAIRS : 2 * PAIRS]]
        for client in senders + receivers:
            await client.connect()
        load = Load()
        tasks = [
            asyncio.create_task(sender(load, s, r.user_id))
            for s, r in zip(senders, receivers, strict=True)
        ]
        await asyncio.sleep(BEFORE_KILL_S)
        pid = server.pid()
        assert pid is not None
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(gone, pid)
        await asyncio.to_thread(server.up)  # as `parley up` does
        back_at = time.monotonic()

        # A send made now, by a new pair, is acked within 10 s.
        probe, probe_to = ChatClient(stack.base, people[-2], timeout_s=12.0), people[-1]
        await _connect_until(probe, ACKS_AGAIN_WITHIN_S)
        try:
            probe_sent = await asyncio.wait_for(
                send_until_acked(probe, "probe", None, probe_to.user_id), ACKS_AGAIN_WITHIN_S
            )
        finally:  # no process may have ended while the server was away
            ended = [n for n, s in stack.services.items() if not alive(s)]
            assert not ended, f"ended while {server.name} was away: {ended}"
        probe_ack_s = probe_sent.acked - back_at
        await asyncio.sleep(AFTER_BACK_S)
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await _all_delivered(load, senders, receivers)
        for client in [*senders, *receivers, probe]:
            await client.close()
        everything = load.all()
        return Outcome(
            down_s=back_at - killed_at,
            probe_ack_s=probe_ack_s,
            messages=len(everything),
            delayed=sum(1 for s in everything if s.acked - s.started > DELAYED_S),
            worst_ack_s=max(s.acked - s.started for s in everything),
        )

    return asyncio.run(scenario())


def alive(service: Service) -> bool:
    return service.proc is not None and service.proc.poll() is None


def gone(pid: int, deadline_s: float = 30.0) -> None:
    """Wait until `pid` is reaped, not only dead: PostgreSQL refuses to start while the
    pid in its lock file exists, and a zombie does. (A server an earlier kill test
    restarted is this process's child: reaped here.)"""
    end = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < end, f"pid {pid} was not reaped"
        time.sleep(0.01)


async def _connect_until(client: ChatClient, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            await client.connect()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


async def _all_delivered(
    load: Load, senders: list[ChatClient], receivers: list[ChatClient]
) -> None:
    """Each receiver holds its sender's acked messages, each once, in the order sent."""
    for s, r in zip(senders, receivers, strict=True):
        acked = load.acked[s.user_id]
        state = r.chats[load.chats[s.user_id]]
        assert [a.seq for a in acked] == list(range(1, len(acked) + 1))  # one seq each
        await sync_until_done(r)  # what a push lost while a server was away
        await r.wait_until(lambda: state.contiguous >= len(acked), 30)  # noqa: B023
        assert max(state.messages) == len(acked)  # nothing beyond: no duplicate
        got = [state.messages[seq]["local_id"] for seq in range(1, len(acked) + 1)]
        assert got == [f"{s.user_id[:8]}-{i}" for i in range(len(acked))]


async def sync_until_done(client: ChatClient, deadline_s: float = 30.0) -> None:
    """`sync`, again while it is answered `unavailable` (docs/protocol.md: retry)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            await client.sync()
            return
        except CommandFailed as exc:
            if exc.code != "unavailable" or time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


def report(name: str, outcome: Outcome) -> None:
    print(
        f"\n{name} kill: down {outcome.down_s:.1f} s; a new send acked "
        f"{outcome.probe_ack_s:.2f} s after the server was back; {outcome.messages} messages, "
        f"{outcome.delayed} delayed over {DELAYED_S:.0f} s, slowest ack {outcome.worst_ack_s:.1f} s"
    )


def test_redis_killed_under_load(stack: FullStack, base_settings: Settings) -> None:
    server = managed(base_settings, "redis")
    workers = stack.services["workers"]
    offset = len(workers.text())
    outcome = kill_under_load(stack, server)
    report("redis", outcome)
    assert outcome.probe_ack_s <= ACKS_AGAIN_WITHIN_S
    end = time.monotonic() + ACKS_AGAIN_WITHIN_S
    while readyz(stack.base) != 200:  # the listeners said degraded, and now ready again
        assert time.monotonic() < end, "the commands service did not get ready again"
        time.sleep(0.2)
    # The Redis projections healed themselves: they equal a rebuild from the log.
    workers.wait_for_log(r"event=cache_healed", 60, offset)
    summary = asyncio.run(
        rebuild(stack.settings, RebuildOptions(("cache",), verify=True, dry_run=True))
    )
    assert summary.verify is not None
    assert summary.verify.cache is not None
    assert summary.verify.cache.keys_differing == 0, summary.verify.cache.examples


def test_postgres_killed_under_load(stack: FullStack, base_settings: Settings) -> None:
    server = managed(base_settings, "postgres")
    outcome = kill_under_load(stack, server)
    report("postgres", outcome)
    assert outcome.probe_ack_s <= ACKS_AGAIN_WITHIN_S


def test_kafka_killed_under_load(stack: FullStack, base_settings: Settings) -> None:
    server = managed(base_settings, "kafka")
    outcome = kill_under_load(stack, server)
    report("kafka", outcome)
    assert outcome.probe_ack_s <= ACKS_AGAIN_WITHIN_S
