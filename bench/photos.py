"""A photo to send: drawn here, so that the demo and `parley bench media` need no files."""

from __future__ import annotations

import io

from PIL import Image


def holiday_photo(width: int = 1600, height: int = 1200) -> bytes:
    """A JPEG drawn here: a sky-to-sea gradient, with EXIF saying where it was taken."""
    sky = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (sky.point(lambda v: v // 3), sky.point(lambda v: v // 2), sky))
    exif = Image.Exif()
    exif[0x010F] = "ParleyCam"
    exif[0x8825] = {1: "N", 2: (43.0, 33.0, 0.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()
