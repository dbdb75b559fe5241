"""`parley media sweep`: collect stale uploads and run the retention sweep now (docs/media.md)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from infra.settings import Settings
from projections.schema import migrate


def add_parser(sub: Any) -> None:
    media = sub.add_parser("media", help="media uploads: collect and sweep now")
    actions = media.add_subparsers(dest="action", required=True)
    sweep = actions.add_parser(
        "sweep",
        help="delete stale uploads and undelivered media past the inbox's retention",
    )
    sweep.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="stop after this many batches of PARLEY_MEDIA_SWEEP_BATCH (default: all due)",
    )
    sweep.set_defaults(run=_sweep)


def _sweep(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings)
    return asyncio.run(_run_sweep(settings, args.max_batches))


async def _run_sweep(settings: Settings, max_batches: int | None) -> int:
    from parley.wiring import open_media

    async with open_media(settings) as media:
        collected = await media.collect(settings.media_gc_grace_s, settings.media_unsent_grace_s)
        done = await media.retention.sweep(max_batches)
    print(
        f"uploads collected (unconfirmed or never sent): {collected}\n"
        f"sent media kept (delivered): {done.kept}\n"
        f"sent media expired (never delivered, objects deleted): {done.expired}\n"
        f"sent media dropped (carried by no message): {done.dropped}"
    )
    return 0
