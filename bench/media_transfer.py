"""`parley bench media`: uploads and downloads through Parley against the store itself.

On private copies of Parley's services (`bench.stack`: own database, topics,
Redis db, and here a bucket of its own) it measures, for 100 KiB and 5 MiB objects:

- Parley's upload: ask (`POST /v1/media/uploads`), PUT to the presigned URL, confirm
  (the object is copied and probed); Parley's download: ask the query API for a URL,
  GET it. Objects/s and MB/s with `CONCURRENCY` clients at once.
- The same store driven directly by the S3 client (obstore PUT and GET), same sizes and
  concurrency; the ratio Parley / direct.
- The CPU that Parley's processes spent per MB moved: the commands and queries services
  themselves (they must not carry the bytes), and the probe processes (which read each
  object once to hash it) counted apart.
- Thumbnail time per image: the confirm of a 1600x1200 JPEG (a probe process started,
  the image decoded and thumbnailed) against that of a 100 KiB document.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.servers import free_port, spawned
from bench.stack import environment, private_resources
from bench.stand_ins import stand_in_account
from client import Account, ChatClient
from client.media import confirm_upload, download_url, put_object, request_upload, upload_media
from infra.objectstore import ObjectStore
from infra.settings import Settings

SIZES = {"100KiB": 100 * 1024, "5MiB": 5 * 1024 * 1024}
COUNTS = {"100KiB": 100, "5MiB": 16}
CONCURRENCY = 4
MB = 1_000_000
READY = {
    "processor": r"partitions_assigned partitions=\[\d",
    "relay": r"event=relay_active",
    "workers": r"Worker ready",
    "commands": r"event=commands_listening",
    "queries": r"event=queries_listening",
}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / TICKS
    children = (int(fields[13]) + int(fields[14])) / TICKS
    return own, children


@contextmanager
def media_services(settings: Settings, workdir: Path) -> Iterator[tuple[Settings, dict[str, int]]]:
    """Parley's five services on private resources, with a bucket and no upload limit."""
    with private_resources(settings) as resources:
        bench = resources.replace(
            queries_port=free_port(settings.queries_host),
            s3_bucket=f"parley-bench-{uuid.uuid4().hex[:8]}",
        )
        store = ObjectStore(bench)
        store.ensure_bucket()
        env = {
            **environment(bench),
            "PARLEY_QUERIES_PORT": str(bench.queries_port),
            "PARLEY_S3_BUCKET": bench.s3_bucket,
            "PARLEY_RATE_MEDIA_UPLOAD_USER_BURST": "1000000",
            "PARLEY_RATE_MEDIA_UPLOAD_USER_PER_S": "1000000",
            "PARLEY_MEDIA_PROBE_CONCURRENCY": str(CONCURRENCY),
        }
        try:
            with ExitStack() as stack:
                pids = {}
                for name, ready in READY.items():
                    argv = [sys.executable, "-m", "parley.cli", "serve", name]
                    server = stack.enter_context(
                        spawned(argv, workdir / f"{name}.log", ready, env, "", start_s=90)
                    )
                    pids[name] = server.pid
                yield bench, pids
        finally:
            store.delete_bucket()


async def _timed(count: int, one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    """Run `one(i)` for i < count, CONCURRENCY at a time; objects/s and latencies."""
    pending = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for i in pending:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    return {
        "objects": count,
        "seconds": round(elapsed, 3),
        "per_s": round(count / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def _with_mb(figures: dict[str, float], size: int) -> dict[str, float]:
    return {**figures, "mb_per_s": round(figures["per_s"] * size / MB, 1)}


async def _direct(store: ObjectStore, size: int, count: int) -> dict[str, Any]:
    data = os.urandom(size)
    prefix = f"direct/{uuid.uuid4().hex}"

    async def put(i: int) -> None:
        await store.put(f"{prefix}/{i}", data)

    async def get(i: int) -> None:
        await store.get(f"{prefix}/{i}")

    upload = _with_mb(await _timed(count, put), size)
    download = _with_mb(await _timed(count, get), size)
    return {"upload": upload, "download": download}


async def _through_parley(
    bench: Settings, base: str, queries: str, size: int, count: int
) -> dict[str, Any]:
    owner, peer = await stand_in_account(bench), await stand_in_account(bench)
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()

    async def upload(i: int) -> None:
        asked = await asyncio.to_thread(
            request_upload, base, owner, size, "application/octet-stream", digest, "document"
        )
        await asyncio.to_thread(put_object, asked["upload_url"], data, asked["headers"])
        await asyncio.to_thread(confirm_upload, base, owner, asked["media_id"])

    uploads = _with_mb(await _timed(count, upload), size)
    media = await asyncio.to_thread(
        upload_media, base, owner, data, "application/octet-stream", "document"
    )
    client = ChatClient(base, owner)
    await client.connect()
    try:
        ack = await client.send_media(media, to=peer.user_id)
    finally:
        await client.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.to_thread(download_url, queries, peer, ack.chat_id, media["media_id"])
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)

    async def download(i: int) -> None:
        found = await asyncio.to_thread(download_url, queries, peer, ack.chat_id, media["media_id"])
        got = await asyncio.to_thread(_get, found["url"])
        assert len(got) == size

    downloads = _with_mb(await _timed(count, download), size)
    return {"upload": uploads, "download": downloads}


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
    return data


async def _thumbnails(base: str, owner: Account, count: int = 10) -> dict[str, Any]:
    from bench.photos import holiday_photo

    photo = holiday_photo(1600, 1200)
    document = os.urandom(100 * 1024)

    async def confirm_ms(data: bytes, mime: str, kind: str) -> float:
        asked = await asyncio.to_thread(
            request_upload, base, owner, len(data), mime, hashlib.sha256(data).hexdigest(), kind
        )
        await asyncio.to_thread(put_object, asked["upload_url"], data, asked["headers"])
        started = time.perf_counter()
        await asyncio.to_thread(confirm_upload, base, owner, asked["media_id"])
        return 1000 * (time.perf_counter() - started)

    images = [await confirm_ms(photo, "image/jpeg", "image") for _ in range(count)]
    documents = [await confirm_ms(document, "text/plain", "document") for _ in range(count)]
    image_ms, document_ms = statistics.median(images), statistics.median(documents)
    return {
        "image": "1600x1200 JPEG",
        "image_bytes": len(photo),
        "confirm_image_ms_p50": round(image_ms, 1),
        "confirm_document_100KiB_ms_p50": round(document_ms, 1),
        "thumbnail_ms": round(image_ms - document_ms, 1),
    }


async def _measure(
    bench: Settings, pids: dict[str, int], counts: dict[str, int], images: int
) -> dict[str, Any]:
    base = f"http://{bench.commands_host}:{bench.commands_port}"
    queries = f"http://127.0.0.1:{bench.queries_port}"
    store = ObjectStore(bench)
    sizes: dict[str, Any] = {}
    for label, size in SIZES.items():
        count = counts[label]
        direct = await _direct(store, size, count)
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        parley = await _through_parley(bench, base, queries, size, count)
        after = {name: cpu_s(pid) for name, pid in pids.items()}
        moved_mb = 2 * (count + 1) * size / MB  # up and down
        sizes[label] = {
            "direct": direct,
            "parley": parley,
            "ratio": {
                way: round(parley[way]["per_s"] / direct[way]["per_s"], 2)
                for way in ("upload", "download")
            },
            "cpu_ms_per_mb": {
                "commands": _per_mb(before, after, "commands", 0, moved_mb),
                "queries": _per_mb(before, after, "queries", 0, moved_mb),
                "probes": _per_mb(before, after, "commands", 1, moved_mb / 2),
            },
        }
    owner = await stand_in_account(bench)
    return {"sizes": sizes, "thumbnails": await _thumbnails(base, owner, images)}


def _per_mb(
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
    name: str,
    which: int,
    mb: float,
) -> float:
    return round(1000 * (after[name][which] - before[name][which]) / mb, 2)


def run(
    settings: Settings, workdir: Path, counts: dict[str, int] | None = None, images: int = 10
) -> dict[str, Any]:
    """Start private services, measure, stop them; the figures (see the docstring)."""
    counts = counts or COUNTS
    with media_services(settings, workdir) as (bench, pids):
        figures = asyncio.run(_measure(bench, pids, counts, images))
    return {"scenario": "media", "concurrency": CONCURRENCY, "counts": counts, **figures}
