"""The media probe's child: run as a script, one object per process, untrusted bytes.

`python -I infra/probe_child.py` is started ahead of its job and imports Pillow while
it waits; then it reads one JSON job on standard input (a presigned GET URL and
limits), caps its own address space and CPU time before it reads a byte, and writes
one JSON line: the object's size, sha256 and first 64 bytes (hex), and, when the job
says so, an image's dimensions and WebP thumbnail, a video's dimensions, duration and
poster frame, or a sound's duration; or an `image_error`. It imports only the standard
library, Pillow and (for video and sound) PyAV, never Parley's packages: it starts in
a fraction of the time, and the parent (`infra.media_probe`) applies Parley's rules to
what it reports.
"""

import base64
import hashlib
import io
import json
import resource
import sys
import urllib.request
from typing import Any

CHUNK = 1 << 20
HEAD = 64


def limit_self(memory_mib: int, cpu_s: int) -> None:
    limit = memory_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def read(url: str, max_bytes: int, keep: bool) -> tuple[int, str, bytes, bytearray]:
    """Stream the object: its size, sha256, first bytes and (if `keep`) all of it."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    kept = bytearray()
    with urllib.request.urlopen(url, timeout=30) as response:
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                break  # larger than declared: the size check refuses it
            digest.update(chunk)
            if len(head) < HEAD:
                head = (head + chunk)[:HEAD]
            if keep:
                kept.extend(chunk)
    return size, digest.hexdigest(), head, kept


def thumbnail(data: bytes, job: dict[str, Any]) -> dict[str, Any]:
    """An image's width, height and base64 WebP thumbnail (upright, no metadata)."""
    import warnings

    from PIL import Image, ImageOps

    warnings.simplefilter("error", Image.DecompressionBombWarning)
    max_pixels, side = job["max_pixels"], job["thumbnail_px"]
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                return {"image_error": "media_bomb", "message": f"{width}x{height} pixels"}
            image.draft("RGB", (side, side))  # JPEG: decode at a fraction of full size
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((side, side))
            small = upright.convert("RGBA" if upright.mode in ("RGBA", "LA", "P") else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        return {"image_error": "media_bomb", "message": str(exc) or "too much memory"}
    except (OSError, ValueError, SyntaxError) as exc:
        return {"image_error": "media_unreadable", "message": type(exc).__name__}
    return {"width": width, "height": height, **webp(small, job)}


def timed(url: str, job: dict[str, Any]) -> dict[str, Any]:
    """A video's or sound's duration (ms), and a video's size and poster frame (WebP),
    read by FFmpeg (PyAV) from the object's URL."""
    import av

    try:
        with av.open(url, timeout=20) as container:
            duration_ms = None
            if container.duration is not None:
                duration_ms = int(container.duration * 1000 // av.time_base)
            if duration_ms is not None and duration_ms > job["max_duration_s"] * 1000:
                return {"image_error": "media_too_long", "message": f"{duration_ms} ms"}
            found: dict[str, Any] = {"duration_ms": duration_ms}
            if not job["video"]:
                return found
            if not container.streams.video:
                return {"image_error": "media_unreadable", "message": "no video stream"}
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > job["max_pixels"]:
                return {"image_error": "media_bomb", "message": f"{width}x{height} pixels"}
            for frame in container.decode(stream):
                # A fresh RGB image: nothing of the file's metadata comes with it.
                poster = frame.to_image()  # type: ignore[no-untyped-call]
                poster.thumbnail((job["thumbnail_px"], job["thumbnail_px"]))
                return {**found, "width": width, "height": height, **webp(poster, job)}
    except MemoryError:
        return {"image_error": "media_bomb", "message": "more memory than allowed"}
    except (av.FFmpegError, OSError, ValueError) as exc:
        return {"image_error": "media_unreadable", "message": type(exc).__name__}
    return {"image_error": "media_unreadable", "message": "no frame"}


def webp(small: Any, job: dict[str, Any]) -> dict[str, Any]:
    """A small PIL image as base64 WebP, its quality lowered until it fits."""
    for quality in (60, 40, 20):
        out = io.BytesIO()
        small.save(out, "WEBP", quality=quality)
        encoded = base64.b64encode(out.getvalue()).decode("ascii")
        if len(encoded) <= job["max_thumbnail_chars"]:
            return {"thumbnail": encoded}
    return {"image_error": "media_unreadable", "message": "no thumbnail small enough"}


def main() -> None:
    # Started ahead of its job (infra.media_probe.ProbeChildren): import what every image
    # needs while waiting, so the confirm does not wait for it.
    from PIL import Image, ImageOps  # noqa: F401

    Image.init()  # Pillow's format plugins, which it would import at the first open or save

    raw = sys.stdin.read()
    if not raw:
        return  # the service stopped before it had a job for us
    job = json.loads(raw)
    limit_self(job["memory_mib"], job["cpu_s"])
    try:
        size, sha256, head, data = read(job["url"], job["max_bytes"], job["image"])
        answer = {"size": size, "sha256": sha256, "head": head.hex()}
        if size <= job["max_bytes"]:
            if job["image"]:
                answer.update(thumbnail(bytes(data), job))
            elif job["video"] or job["audio"]:
                answer.update(timed(job["url"], job))
    except MemoryError:
        answer = {"error": "media_bomb", "message": "more memory than allowed"}
    except OSError as exc:
        answer = {"error": "media_unreadable", "message": f"reading failed: {exc}"}
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
