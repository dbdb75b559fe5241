"""The whole stack with the object store, for the media tests (docs/media.md).

Download URLs live a few seconds here (so their expiry can be watched), uploads are
collected after 8 s unconfirmed or confirmed and never sent, a user may ask for five
uploads at once, and a video or sound may last a minute. A multipart upload has at most
four parts of 5 to 6 MiB and 10 s to be completed. The tests that watch an upload
expire wait about that long: each grace is a few times what its test needs (a confirmed
upload is sent, or four parts are put, within 1.5 s here), no more.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image

from bench.stand_ins import stand_in_account
from client import Account, ChatClient
from infra.objectstore import ObjectStore
from infra.settings import Settings
from tests.fullstack import FullStack, full_stack

DOWNLOAD_TTL_S = 3
GC_GRACE_S = 8
UNSENT_GRACE_S = 8
UPLOAD_BURST = 5
MAX_DURATION_S = 60
PART_MIN = 5 * 1024 * 1024  # S3's own floor for every part but the last
PART_MAX = 6 * 1024 * 1024
MAX_PARTS = 4
MULTIPART_TTL_S = 10


@dataclass
class MediaStack:
    stack: FullStack
    objects: ObjectStore

    @property
    def base(self) -> str:
        return self.stack.base

    @property
    def queries(self) -> str:
        assert self.stack.queries is not None
        return self.stack.queries

    async def account(self) -> Account:
        """A user in the directory, logged in with a session issued directly."""
        return await stand_in_account(self.stack.settings)

    async def client(self, account: Account) -> ChatClient:
        chat = ChatClient(self.base, account)
        await chat.connect()
        return chat


@pytest.fixture(scope="package")
def media_stack(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaStack]:
    env = {
        "PARLEY_MEDIA_DOWNLOAD_URL_TTL_S": str(DOWNLOAD_TTL_S),
        "PARLEY_MEDIA_GC_GRACE_S": str(GC_GRACE_S),
        "PARLEY_MEDIA_GC_INTERVAL_S": "0.5",
        "PARLEY_MEDIA_UNSENT_GRACE_S": str(UNSENT_GRACE_S),
        "PARLEY_RATE_MEDIA_UPLOAD_USER_BURST": str(UPLOAD_BURST),
        "PARLEY_RATE_MEDIA_UPLOAD_USER_PER_S": "0.01",
        "PARLEY_MEDIA_MAX_DURATION_S": str(MAX_DURATION_S),
        "PARLEY_MEDIA_PART_MIN_BYTES": str(PART_MIN),
        "PARLEY_MEDIA_PART_MAX_BYTES": str(PART_MAX),
        "PARLEY_MEDIA_MAX_PARTS": str(MAX_PARTS),
        "PARLEY_MEDIA_MULTIPART_TTL_S": str(MULTIPART_TTL_S),
    }
    with full_stack(topics, tmp_path_factory.mktemp("media"), **env) as stack:
        yield MediaStack(stack, ObjectStore(topics))


def photo(width: int = 800, height: int = 600, exif_make: str = "ParleyCam") -> bytes:
    """A JPEG with a gradient and an EXIF camera make (and GPS block) in it."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = exif_make
    exif[0x8825] = {1: "N", 2: (59.0, 20.0, 0.0)}  # GPS: where it was taken
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def video(seconds: float = 2.0, width: int = 320, height: int = 240) -> bytes:
    """An MP4 (MPEG-4 part 2, made with PyAV's own FFmpeg): a grey ramp, 10 frames a second."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * 10)):
            pixels = np.full((height, width, 3), (i * 12) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def voice_note(seconds: float) -> bytes:
    """An Ogg Opus voice note of silence, 48 kHz mono."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        samples = np.zeros((1, int(seconds * 48000)), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
