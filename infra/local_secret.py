"""Secrets made on this machine at first start and kept under the state folder.

A secret that no one set (the JWT signing key when `PARLEY_JWT_SECRET` is empty) is
drawn at random the first time a process needs it and written to
`<state_dir>/secrets/<name>` with mode 0600. Every process of the same stack reads the
same file, so the commands and queries services check each other's tokens. Processes
starting together may race to create it: each writes its candidate to a private file
and links it into place, so exactly one candidate wins and no process ever reads a
half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SECRET_BYTES = 48
"""384 random bits, written as 64 URL-safe characters."""


def local_secret(state_dir: str, name: str) -> str:
    """The secret `name` of this stack, created at random on first use."""
    folder = Path(state_dir) / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    if not path.exists():
        candidate = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(SECRET_BYTES))
        try:
            os.link(candidate, path)  # fails if another process linked its own first
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
    value = path.read_text().strip()
    if not value:
        msg = f"{path} is empty: delete it and a new secret is made at the next start"
        raise ValueError(msg)
    return value
