"""HTTP routes `/v1/me/*`: the caller changes their own profile, privacy, contacts, blocks
and devices (docs/auth.md). Each needs `Authorization: Bearer <access token>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import Access, access_of, authenticated
from commands.accounts.key_routes import forget_device_keys
from commands.accounts.push_routes import forget_device_targets
from domain.account_errors import UnknownUser
from domain.handles import normalise_phone, normalise_username
from domain.user import User
from domain.visibility import LastSeenPrivacy
from infra.web import BadRequest, choice_field, optional_text, read_json, text_field, uuid_field


async def _change(
    access: Access, user_id: UUID, decide: Callable[[User], bool], announce: str | None = None
) -> JSONResponse:
    """Change the user; tell the gateways if `announce` names what changed and it did."""
    changed = await run_in_threadpool(access.accounts.update, user_id, decide)
    if changed and announce is not None:
        await access.announce_account_change(user_id, announce)
    return JSONResponse({"changed": changed})


async def profile(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    display_name, about = optional_text(body, "display_name"), optional_text(body, "about")
    if display_name is None and about is None:
        raise BadRequest("give 'display_name' and/or 'about'")
    return await _change(
        access, identity.user_id, lambda user: user.change_profile(display_name, about)
    )


async def privacy(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    last_seen = LastSeenPrivacy(
        choice_field(body, "last_seen", tuple(p.value for p in LastSeenPrivacy))
    )
    return await _change(
        access, identity.user_id, lambda user: user.set_last_seen_privacy(last_seen), "privacy"
    )


async def _about_a_user(
    request: Request, actions: Mapping[str, Callable[[User, UUID], bool]], announce: str
) -> JSONResponse:
    """A change of the caller about another user the body names (`_target_user`): the
    body's `action` picks one of `actions`; the gateways are told as `announce`."""
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    act = actions[choice_field(body, "action", tuple(actions))]
    target = await run_in_threadpool(_target_user, access, body)
    return await _change(access, identity.user_id, lambda user: act(user, target), announce)


async def contacts(request: Request) -> JSONResponse:
    actions = {"add": User.add_contact, "remove": User.remove_contact}
    return await _about_a_user(request, actions, "contacts")


async def blocks(request: Request) -> JSONResponse:
    return await _about_a_user(request, {"block": User.block, "unblock": User.unblock}, "blocks")


async def devices(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    action = choice_field(body, "action", ("register", "remove"))
    device_id = text_field(body, "device_id")
    if action == "register":
        name = text_field(body, "name")
        return await _change(
            access, identity.user_id, lambda user: user.register_device(device_id, name)
        )
    response = await _change(access, identity.user_id, lambda user: user.remove_device(device_id))
    await access.tokens.logout_device(identity.user_id, device_id)
    await forget_device_targets(access.settings, identity.user_id, device_id)
    await forget_device_keys(request.app.state.gateway.pool, identity.user_id, device_id)
    return response


def me_routes() -> list[Route]:
    return [
        Route("/v1/me/profile", profile, methods=["POST"]),
        Route("/v1/me/privacy", privacy, methods=["POST"]),
        Route("/v1/me/contacts", contacts, methods=["POST"]),
        Route("/v1/me/blocks", blocks, methods=["POST"]),
        Route("/v1/me/devices", devices, methods=["POST"]),
    ]


def _target_user(access: Access, body: dict[str, Any]) -> UUID:
    """The existing user a body names by exactly one of `user_id`, `username`, `phone`."""
    given = [name for name in ("user_id", "username", "phone") if body.get(name) is not None]
    if len(given) != 1:
        raise BadRequest("name the user by one of 'user_id', 'username' or 'phone'")
    if given[0] == "user_id":
        user_id = uuid_field(body, "user_id")
        access.accounts.user(user_id)  # unknown_user if there is none
        return user_id
    raw = text_field(body, given[0])
    handle = normalise_username(raw) if given[0] == "username" else normalise_phone(raw)
    found = access.accounts.user_id_for(handle)
    if found is None:
        raise UnknownUser()
    return found
