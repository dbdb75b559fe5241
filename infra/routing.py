"""Where users are connected: the Redis keys the gateways write and the delivery reads.

- `parley:gateway:<gateway>`: a live gateway's record in the Redis registry (JSON, TTL;
  `infra.registry`).
- `parley:presence:<user>`: hash connection id -> gateway id of the user's live
  connections (TTL; renewed by the gateway's heartbeat). A user is online while it exists.
- `parley:user:<user>:last_seen`: unix milliseconds of the user's last heartbeat.
- `parley:joined:<user>`: hash chat id -> log position of the event that made the user
  a member, for chats joined in the last `JOINED_TTL_S` (written by the processor; a
  sync waits until they are projected: `commands/gateway/sync.py`).
- channel `parley:deliver:<gateway>`: what a gateway must push to some of its users,
  as JSON `{"items": [{"users": [...], "frame": {...}, "except": [user, device]}, ...]}`
  (messages, receipts, chat changes from the command processor; typing straight from
  other gateways). `except`, when present, names the one device not to push to: the one a
  message came from, which has it from its `ack`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis

from infra.lua import Lua

PRESENCE_TTL_S = 60
GATEWAY_TTL_S = 15
JOINED_TTL_S = 600


def gateway_key(gateway_id: str) -> str:
    return f"parley:gateway:{gateway_id}"


def presence_key(user_id: UUID | str) -> str:
    return f"parley:presence:{user_id}"


def last_seen_key(user_id: UUID | str) -> str:
    return f"parley:user:{user_id}:last_seen"


def joined_key(user_id: UUID | str) -> str:
    return f"parley:joined:{user_id}"


def queue_joined(pipe: Any, joins: Iterable[tuple[str, UUID, int]]) -> None:
    """Queue in `pipe`, for each (user, chat, position), that the user joined the chat."""
    for user, chat_id, position in joins:
        key = joined_key(user)
        pipe.hset(key, str(chat_id), position)
        pipe.expire(key, JOINED_TTL_S)


def deliver_channel(gateway_id: str) -> str:
    return f"parley:deliver:{gateway_id}"


# One call routes a batch. ARGV: the presence key prefix, the channel prefix, JSON
# {"lists": [[user, ...], ...], "items": [[list, except], ...]}, then each item's frame
# (JSON text, passed on byte for byte). An item names its users' list by its index (from
# 1): items share lists (every receipt in a group goes to the same members), so a batch
# sends each list once; `except` is null or [user, device]. The small values go as one
# JSON argument: thousands of separate arguments cost redis-py more to pack than the
# rest of the call. Each user's gateways are read once (HVALS of its presence hash),
# each gateway gets one PUBLISH with the items for its users, and the call returns how
# many gateways it published to. User ids are UUIDs: quoted as they are.
_ROUTE = Lua("""
local presence, channel = ARGV[1], ARGV[2]
local batch = cjson.decode(ARGV[3])
local gateways_of, lists = {}, {}
for l, users in ipairs(batch.lists) do
  local here, reached = {}, {}
  for _, user in ipairs(users) do
    local gateways = gateways_of[user]
    if gateways == nil then
      gateways = {}
      local seen = {}
      for _, gateway in ipairs(redis.call('HVALS', presence .. user)) do
        if not seen[gateway] then
          seen[gateway] = true
          gateways[#gateways + 1] = gateway
        end
      end
      gateways_of[user] = gateways
    end
    for _, gateway in ipairs(gateways) do
      if here[gateway] == nil then
        here[gateway] = {}
        reached[#reached + 1] = gateway
      end
      local listed = here[gateway]
      listed[#listed + 1] = '"' .. user .. '"'
    end
  end
  for _, gateway in ipairs(reached) do
    here[gateway] = '{"users":[' .. table.concat(here[gateway], ',') .. ']'
  end
  lists[l] = {reached, here}
end
local per_gateway, order = {}, {}
for i, item in ipairs(batch.items) do
  local list = lists[item[1]]
  local tail = ',"frame":' .. ARGV[3 + i]
  if item[2] ~= cjson.null then tail = tail .. ',"except":' .. cjson.encode(item[2]) end
  tail = tail .. '}'
  for _, gateway in ipairs(list[1]) do
    if per_gateway[gateway] == nil then
      per_gateway[gateway] = {}
      order[#order + 1] = gateway
    end
    local items = per_gateway[gateway]
    items[#items + 1] = list[2][gateway] .. tail
  end
end
for _, gateway in ipairs(order) do
  local items = table.concat(per_gateway[gateway], ',')
  redis.call('PUBLISH', channel .. gateway, '{"items":[' .. items .. ']}')
end
return #order
""")


Item = tuple[list[str], dict[str, Any], tuple[str, str] | None]
"""(users, frame, the (user, device) not to push it to, if any)."""


def route_args(items: Iterable[Item]) -> list[Any]:
    """`_ROUTE`'s arguments for `items`, or [] when they reach no one. Each frame is
    encoded once, whatever its fan-out, and each distinct list of users sent once."""
    lists: dict[tuple[str, ...], int] = {}
    refs: list[tuple[int, tuple[str, str] | None]] = []
    frames: list[bytes] = []
    for users, frame, skip in items:
        if not users:
            continue
        refs.append((lists.setdefault(tuple(users), len(lists) + 1), skip))
        frames.append(orjson.dumps(frame))
    if not refs:
        return []
    batch = orjson.dumps({"lists": list(lists), "items": refs})
    return [presence_key(""), deliver_channel(""), batch, *frames]


def queue_route(pipe: Any, items: Iterable[Item]) -> None:
    """Queue the routing of `items` in `pipe`: one script call, nothing if no one to reach."""
    args = route_args(items)
    if args:
        _ROUTE.queue(pipe, *args)


async def route_many(redis: aioredis.Redis, items: list[Item]) -> int:
    """Hand each (users, frame, except) to their users' gateways, one publish per gateway;
    count the gateways reached."""
    args = route_args(items)
    return int(await _ROUTE(redis, *args)) if args else 0


async def route(redis: aioredis.Redis, users: Iterable[UUID | str], frame: dict[str, Any]) -> int:
    """Hand `frame` to the gateways of those of `users` who are online; count gateways."""
    return await route_many(redis, [([str(u) for u in users], frame, None)])
