"""The media probe: reads one uploaded object in a separate, limited process.

Untrusted bytes are hashed, sniffed and (for images) decoded here, never in a service:
`probe(...)` starts `python -m infra.media_probe`, hands it a presigned GET URL and the
limits on its standard input, and reads one JSON line back. The child caps its own
address space (`media_probe_memory_mib`) and CPU time (`media_probe_cpu_s`) before it
touches the bytes, refuses images of more than `media_max_pixels` pixels before decoding
them, and the parent kills it after `media_probe_timeout_s`. What it makes (a WebP
thumbnail) is written fresh, so it carries no EXIF or GPS data.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import resource
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

from domain.media import MediaBomb, MediaError, MediaUnreadable, sniff
from domain.messages import MAX_THUMBNAIL_CHARS

CHUNK = 1 << 20
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


@dataclass(frozen=True)
class Probed:
    """What the probe found in a stored object."""

    size: int
    sha256: str
    sniffed: str | None
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None  # base64 WebP


async def probe(
    url: str,
    max_bytes: int,
    *,
    max_pixels: int,
    thumbnail_px: int,
    memory_mib: int,
    cpu_s: int,
    timeout_s: float,
) -> Probed:
    """Probe the object behind `url` in a child process; raise a `MediaError` if it fails."""
    job = {
        "url": url,
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "thumbnail_px": thumbnail_px,
        "memory_mib": memory_mib,
        "cpu_s": cpu_s,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.media_probe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
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
        raise MediaUnreadable(
            f"the file could not be read (probe exit {child.returncode})"
        ) from None
    if "error" in answer:
        raise {MediaBomb.code: MediaBomb}.get(answer["error"], MediaUnreadable)(answer["message"])
    return Probed(**answer)


# The child's side.


def _limit_self(memory_mib: int, cpu_s: int) -> None:
    limit = memory_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _read(url: str, max_bytes: int) -> tuple[int, str, bytes, bytearray]:
    """Stream the object: its size, sha256, first bytes and, for an image, all of it."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    kept = bytearray()
    with urllib.request.urlopen(url, timeout=30) as response:
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise MediaUnreadable("the object is larger than declared")
            digest.update(chunk)
            if len(head) < 64:
                head = (head + chunk)[:64]
            if sniff(head) in IMAGE_TYPES:
                kept.extend(chunk)
    return size, digest.hexdigest(), head, kept


def _thumbnail(data: bytes, max_pixels: int, side: int) -> tuple[int, int, str]:
    """An image's width, height and base64 WebP thumbnail (upright, no metadata)."""
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise MediaBomb(f"{width}x{height} is more than {max_pixels} pixels")
            image.draft("RGB", (side, side))  # JPEG: decode at a fraction of full size
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((side, side))
            small = upright.convert("RGBA" if upright.mode in ("RGBA", "LA", "P") else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaBomb(str(exc)) from None
    except MemoryError:
        raise MediaBomb("decoding the image needs more memory than allowed") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaUnreadable(f"not a readable image: {type(exc).__name__}") from None
    for quality in (60, 40, 20):
        out = io.BytesIO()
        small.save(out, "WEBP", quality=quality)
        encoded = base64.b64encode(out.getvalue()).decode("ascii")
        if len(encoded) <= MAX_THUMBNAIL_CHARS:
            return width, height, encoded
    raise MediaUnreadable("no thumbnail small enough")


def _probe(job: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from PIL import Image

    warnings.simplefilter("error", Image.DecompressionBombWarning)
    size, sha256, head, data = _read(job["url"], job["max_bytes"])
    sniffed = sniff(head)
    found: dict[str, Any] = {"size": size, "sha256": sha256, "sniffed": sniffed}
    if sniffed in IMAGE_TYPES:
        width, height, thumbnail = _thumbnail(bytes(data), job["max_pixels"], job["thumbnail_px"])
        found.update(width=width, height=height, thumbnail=thumbnail)
    return found


def main() -> None:
    job = json.loads(sys.stdin.read())
    _limit_self(job["memory_mib"], job["cpu_s"])
    try:
        answer = _probe(job)
    except MediaError as exc:
        answer = {"error": exc.code, "message": exc.message}
    except MemoryError:
        answer = {"error": MediaBomb.code, "message": "more memory than allowed"}
    except OSError as exc:
        answer = {"error": MediaUnreadable.code, "message": f"reading failed: {exc}"}
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
