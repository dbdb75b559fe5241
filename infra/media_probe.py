"""The media probe: one uploaded object read in a separate, limited process.

Untrusted bytes are hashed and (images, video, sound) decoded there, never in a
service: `probe(...)` takes a child running `infra/probe_child.py` as a script
(`python -I`, standard library, Pillow and PyAV only; started ahead by
`ProbeChildren`), hands it a presigned GET URL and the limits on its standard input,
and reads one JSON line back. The child caps its own address space
(`media_probe_memory_mib`) and CPU time (`media_probe_cpu_s`) before it touches the
bytes and refuses images of more than `media_max_pixels` pixels before decoding them;
the parent kills it after `media_probe_timeout_s`. The parent sniffs the type from the
first bytes the child saw (`domain.media.sniff`). What the child makes (a WebP
thumbnail) is written fresh, so it carries no EXIF or GPS data.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.media import MediaBomb, MediaError, MediaKind, MediaTooLong, MediaUnreadable, sniff
from domain.messages import MAX_THUMBNAIL_CHARS

CHILD = Path(__file__).resolve().parent / "probe_child.py"
IMAGE_ERRORS: dict[str, type[MediaError]] = {
    MediaBomb.code: MediaBomb,
    MediaUnreadable.code: MediaUnreadable,
    MediaTooLong.code: MediaTooLong,
}


@dataclass(frozen=True)
class Probed:
    """What the probe found in a stored object."""

    size: int
    sha256: str
    sniffed: str | None
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None  # base64 WebP: an image's, or a video's poster frame
    duration_ms: int | None = None  # video and sound
    image_error: MediaError | None = None  # the image did not decode into a thumbnail


async def _start_child() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        str(CHILD),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


class ProbeChildren:
    """Probe processes started one ahead: a confirm takes the child already waiting for
    its job (interpreter up, urllib and Pillow imported) and starts the next one.

    Each child still probes exactly one object and exits, so uploads share nothing; the
    start-up (measured in docs/media.md: about 130 ms of CPU and, on a loaded machine,
    300 ms of wall time) leaves the confirm's path. One idle child costs about 30 MB.
    """

    def __init__(self) -> None:
        self._spare: asyncio.Task[asyncio.subprocess.Process] | None = None

    async def take(self) -> asyncio.subprocess.Process:
        """A started child, waiting on its standard input for one job."""
        spare = self._spare or asyncio.create_task(_start_child())
        self._spare = asyncio.create_task(_start_child())
        child = await spare
        if child.returncode is not None:  # it died waiting: start a fresh one
            child = await _start_child()
        return child

    async def close(self) -> None:
        """Stop the child kept waiting (it would exit on its own once its stdin closes)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            child = await spare
            if child.returncode is None:
                child.kill()
            await child.wait()


async def probe(
    url: str,
    max_bytes: int,
    children: ProbeChildren,
    *,
    kind: MediaKind,
    max_pixels: int,
    max_duration_s: float,
    thumbnail_px: int,
    memory_mib: int,
    cpu_s: int,
    timeout_s: float,
) -> Probed:
    """Probe the object behind `url` in a child process (an image, video or sound is
    decoded too); raise `media_unreadable` if the child fails or runs out of time."""
    job = {
        "url": url,
        "max_bytes": max_bytes,
        "image": kind is MediaKind.IMAGE,
        "video": kind is MediaKind.VIDEO,
        "audio": kind is MediaKind.AUDIO,
        "max_pixels": max_pixels,
        "max_duration_s": max_duration_s,
        "thumbnail_px": thumbnail_px,
        "max_thumbnail_chars": MAX_THUMBNAIL_CHARS,
        "memory_mib": memory_mib,
        "cpu_s": cpu_s,
    }
    child = await children.take()
    try:
        out, _ = await asyncio.wait_for(child.communicate(json.dumps(job).encode()), timeout_s)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise MediaUnreadable(f"the file was not read within {timeout_s:.0f}s") from None
    try:
        answer: dict[str, Any] = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        # Killed by its own limits (SIGXCPU, SIGKILL) or crashed inside a decoder.
        status = child.returncode
        raise MediaUnreadable(f"the file could not be read (probe exit {status})") from None
    if "error" in answer:
        raise IMAGE_ERRORS.get(answer["error"], MediaUnreadable)(answer["message"])
    image_error = None
    if "image_error" in answer:
        image_error = IMAGE_ERRORS.get(answer["image_error"], MediaUnreadable)(answer["message"])
    return Probed(
        answer["size"],
        answer["sha256"],
        sniff(bytes.fromhex(answer["head"])),
        answer.get("width"),
        answer.get("height"),
        answer.get("thumbnail"),
        answer.get("duration_ms"),
        image_error,
    )
