"""HAProxy's gateways from the registry (`parley serve balancer`), not from a fixed list.

HAProxy's configuration holds `balancer_slots` empty server slots (`gw1`…, in
maintenance: `infra/stack/haproxy.py`). This process watches the registry of live
gateways (`infra.registry.GatewayWatch`: ZooKeeper's watches, or Redis listed every
`registry_report_s`) and, on each change, fills the slots over HAProxy's runtime API
(its admin socket; `balancer_api` names several, comma-separated, when several HAProxy
processes share the front port, each told the same):

- a gateway that joined takes a free slot: `set server gateways/gwN addr H port P`, then
  `state ready`; HAProxy health-checks it from then on;
- a gateway that left the registry (it drains, or its lease or session ran out) has its
  slot set to `drain`: no new connections, the open ones stay until the gateway closes
  them, and health checks go on; its slot is given to the next gateway that needs one
  (a gateway back at the same address gets its old slot back);
- every `RESYNC_S` the whole plan is sent again, so a restarted HAProxy is filled anew.

The slot of a gateway is logged (`event=balancer_slot`), so an operator can match
HAProxy's server names to gateways.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from infra.registry import GatewayRecord, GatewayWatch, RegistryUnavailable
from infra.settings import Settings

log = logging.getLogger("parley.balancer")

BACKEND = "gateways"
SLOT_PREFIX = "gw"
RESYNC_S = 5.0
API_TIMEOUT_S = 5.0


def slot_names(count: int) -> list[str]:
    return [f"{SLOT_PREFIX}{i}" for i in range(1, count + 1)]


def address_of(record: GatewayRecord) -> str | None:
    """`host:port` of the gateway's own socket, from the URL it registered."""
    parts = urlsplit(record.url)
    if not parts.hostname or not parts.port:
        return None
    return f"{parts.hostname}:{parts.port}"


@dataclass(frozen=True)
class Slot:
    """What one server slot holds: a gateway's address (or none) and whether it is
    routed to (`ready`) or only lets its open connections finish (`drain`)."""

    address: str | None = None
    ready: bool = False


def plan(
    slots: dict[str, Slot], live: list[GatewayRecord]
) -> tuple[dict[str, Slot], list[str], list[str]]:
    """The slots after this list of live gateways, HAProxy's commands to get there, and
    the addresses that found no free slot."""
    wanted = sorted({a for a in (address_of(r) for r in live) if a is not None})
    after = dict(slots)
    commands: list[str] = []
    holding = {slot.address: name for name, slot in slots.items() if slot.address}
    for name, slot in slots.items():
        if slot.address and slot.address not in wanted and slot.ready:
            after[name] = Slot(slot.address, ready=False)
            commands.append(f"set server {BACKEND}/{name} state drain")
    for address in wanted:
        back = holding.get(address)  # a gateway at an address a slot still holds
        if back is not None and not slots[back].ready:
            after[back] = Slot(address, ready=True)
            commands.append(f"set server {BACKEND}/{back} state ready")
    unplaced = []
    # Free slots: never used first, then those of gateways gone longest ago (by name).
    free = [n for n, s in after.items() if s.address is None]
    free += [n for n, s in after.items() if s.address is not None and not s.ready]
    for address in wanted:
        if address in holding:
            continue
        if not free:
            unplaced.append(address)
            continue
        name = free.pop(0)
        host, port = address.rsplit(":", 1)
        after[name] = Slot(address, ready=True)
        commands.append(f"set server {BACKEND}/{name} addr {host} port {port}")
        commands.append(f"set server {BACKEND}/{name} state ready")
    return after, commands, unplaced


def resync(slots: dict[str, Slot]) -> list[str]:
    """Every slot's commands again, from nothing (HAProxy may have restarted)."""
    commands = []
    for name, slot in slots.items():
        if slot.address is None:
            commands.append(f"set server {BACKEND}/{name} state maint")
            continue
        host, port = slot.address.rsplit(":", 1)
        commands.append(f"set server {BACKEND}/{name} addr {host} port {port}")
        commands.append(f"set server {BACKEND}/{name} state {'ready' if slot.ready else 'drain'}")
    return commands


class RuntimeApi:
    """HAProxy's runtime API on its admin socket: one connection per batch of commands."""

    def __init__(self, path: str) -> None:
        self.path = path

    def run(self, commands: list[str]) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(API_TIMEOUT_S)
            sock.connect(self.path)
            sock.sendall(("; ".join(commands) + "\n").encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")


def servers_state(api: RuntimeApi) -> dict[str, dict[str, str]]:
    """HAProxy's own view of the gateways' slots (`show servers state`): slot -> field ->
    value (`srv_addr`, `srv_port`, `srv_op_state` 2 = up, `srv_admin_state` 1 = maint,
    8 = drain…), for operators and tests."""
    lines = api.run([f"show servers state {BACKEND}"]).splitlines()
    header = next((line[2:].split() for line in lines if line.startswith("# be_id")), [])
    servers = {}
    for line in lines:
        fields = line.split()
        if header and len(fields) >= len(header) - 1 and fields[0].isdigit():
            row = dict(zip(header, fields, strict=False))
            servers[row["srv_name"]] = row
    return servers


def api_path(settings: Settings) -> str:
    """Where the HAProxy of these settings puts its admin socket: its state folder."""
    return f"{settings.state_dir}/haproxy/admin.sock"


def api_paths(settings: Settings) -> list[str]:
    """The admin sockets to keep filled: `balancer_api`'s, or the stack's HAProxy's."""
    named = [path.strip() for path in settings.balancer_api.split(",") if path.strip()]
    return named or [api_path(settings)]


class BalancerSync:
    """Keeps HAProxy's slots equal to the live gateways until stopped."""

    def __init__(self, settings: Settings, watch: GatewayWatch, apis: list[RuntimeApi]) -> None:
        self.watch = watch
        self.apis = apis
        self.slots = {name: Slot() for name in slot_names(settings.balancer_slots)}
        self._changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.watch.on_change = self._changed.set
        await self.watch.start()
        log.info("event=balancer_watching slots=%d", len(self.slots))
        everything = True  # HAProxy's slots are not known to hold this plan yet
        while not stop.is_set():
            try:
                await self._apply(everything)
                everything = False
            except (OSError, RegistryUnavailable) as exc:  # HAProxy or the registry away
                log.warning("event=balancer_sync_failed error=%s", type(exc).__name__)
                everything = True
            if not await self._changed_within(stop, RESYNC_S):
                everything = True  # a quiet interval: send the whole plan again
        await self.watch.close()

    async def _changed_within(self, stop: asyncio.Event, seconds: float) -> bool:
        changed = asyncio.create_task(self._changed.wait())
        stopped = asyncio.create_task(stop.wait())
        done, pending = await asyncio.wait(
            {changed, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        self._changed.clear()
        return changed in done

    async def _apply(self, everything: bool) -> None:
        slots, commands, unplaced = plan(self.slots, self.watch.gateways())
        if everything:
            commands = resync(slots)
        for api in self.apis if commands else []:
            answer = await asyncio.to_thread(api.run, commands)
            refused = [line for line in answer.splitlines() if _refusal(line)]
            if refused:
                raise OSError(f"HAProxy refused: {refused[0][:200]}")
        for name, slot in slots.items():
            if slot != self.slots[name]:
                log.info(
                    "event=balancer_slot slot=%s address=%s state=%s",
                    name,
                    slot.address,
                    "ready" if slot.ready else "drain",
                )
        for address in unplaced:
            log.warning("event=balancer_no_free_slot address=%s", address)
        ready = sum(1 for s in slots.values() if s.ready)
        if slots != self.slots or everything:
            log.info("event=balancer_synced gateways=%d", ready)
        self.slots = slots


def _refusal(line: str) -> bool:
    """A runtime API answer that is an error (its successes are empty or say so)."""
    lowered = line.lower()
    return any(w in lowered for w in ("unknown", "no such", "require", "invalid", "not found"))
