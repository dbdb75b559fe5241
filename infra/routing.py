"""Where users are connected: the Redis keys the gateways write and the delivery reads.

- `parley:gateway:<gateway>`: a live gateway (string, TTL; renewed while it runs).
- `parley:presence:<user>`: hash connection id -> gateway id of the user's live
  connections (TTL; renewed by the gateway's heartbeat). A user is online while it exists.
- `parley:user:<user>:last_seen`: unix milliseconds of the user's last heartbeat.
- channel `parley:deliver:<gateway>`: what a gateway must push to some of its users,
  as JSON `{"items": [{"users": [...], "frame": {...}, "except": [user, device]}, ...]}`
  (messages, receipts, chat changes from the delivery agent; typing straight from other
  gateways). `except`, when present, names the one device not to push to: the one a
  message came from, which has it from its `ack`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis

PRESENCE_TTL_S = 60
GATEWAY_TTL_S = 15


def gateway_key(gateway_id: str) -> str:
    return f"parley:gateway:{gateway_id}"


def presence_key(user_id: UUID | str) -> str:
    return f"parley:presence:{user_id}"


def last_seen_key(user_id: UUID | str) -> str:
    return f"parley:user:{user_id}:last_seen"


def deliver_channel(gateway_id: str) -> str:
    return f"parley:deliver:{gateway_id}"


# ARGV: the presence key prefix, then user ids. Returns (user, gateway) pairs, flat, for
# the users online: one command for a whole batch instead of one HVALS per user.
_GATEWAYS_OF = """
local out = {}
for i = 2, #ARGV do
  local seen = {}
  for _, gateway in ipairs(redis.call('HVALS', ARGV[1] .. ARGV[i])) do
    if not seen[gateway] then
      seen[gateway] = true
      out[#out + 1] = ARGV[i]
      out[#out + 1] = gateway
    end
  end
end
return out
"""


async def gateways_of(redis: aioredis.Redis, users: Iterable[UUID | str]) -> dict[str, list[str]]:
    """gateway id -> the users (as text) with a live connection on it."""
    names = list(dict.fromkeys(str(u) for u in users))
    by_gateway: dict[str, list[str]] = defaultdict(list)
    if not names:
        return by_gateway
    pairs = await redis.register_script(_GATEWAYS_OF)(args=[presence_key(""), *names])
    for i in range(0, len(pairs), 2):
        user, gateway = pairs[i], pairs[i + 1]
        by_gateway[gateway.decode() if isinstance(gateway, bytes) else gateway].append(
            user.decode() if isinstance(user, bytes) else user
        )
    return by_gateway


Item = tuple[list[str], dict[str, Any], tuple[str, str] | None]
"""(users, frame, the (user, device) not to push it to, if any)."""


async def route_many(redis: aioredis.Redis, items: list[Item]) -> int:
    """Hand each (users, frame, except) to their users' gateways, one publish per gateway."""
    every = {u for users, _, _ in items for u in users}
    by_gateway = await gateways_of(redis, every)
    if not by_gateway:
        return 0
    per_gateway: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for gateway, online in by_gateway.items():
        online_set = set(online)
        for users, frame, skip in items:
            here = [u for u in users if u in online_set]
            if here:
                item: dict[str, Any] = {"users": here, "frame": frame}
                if skip is not None:
                    item["except"] = skip
                per_gateway[gateway].append(item)
    pipe = redis.pipeline(transaction=False)
    for gateway, batch in per_gateway.items():
        pipe.publish(deliver_channel(gateway), orjson.dumps({"items": batch}))
    await pipe.execute()
    return len(per_gateway)


async def route(redis: aioredis.Redis, users: Iterable[UUID | str], frame: dict[str, Any]) -> int:
    """Hand `frame` to the gateways of those of `users` who are online; count gateways."""
    by_gateway = await gateways_of(redis, users)
    if not by_gateway:
        return 0
    pipe = redis.pipeline(transaction=False)
    for gateway, members in by_gateway.items():
        item = {"users": members, "frame": frame}
        pipe.publish(deliver_channel(gateway), orjson.dumps({"items": [item]}))
    await pipe.execute()
    return len(by_gateway)
