"""Jars from Maven Central for the JVM servers of the stack (Kafka, ZooKeeper)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra.stack.process import StackError, require_binary, say


def resolve_jars(name: str, pom: Path, placeholder: str, version: str, lib: Path) -> None:
    """Copy the runtime jars of `pom` (with `placeholder` replaced by `version`) into
    `lib`, once: a `.complete` marker in `lib` says it was done."""
    require_binary("java", "install a JDK 17+, e.g. `apt-get install default-jre-headless`")
    marker = lib / ".complete"
    if marker.exists():
        return
    mvn = require_binary("mvn", "install Maven, e.g. `apt-get install maven`")
    say(f"{name}: resolving the {name} {version} jars from Maven Central")
    build = lib.parent / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "pom.xml").write_text(pom.read_text().replace(placeholder, version))
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(build / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-400:]
        raise StackError(f"{name}: Maven could not resolve the {name} jars: {tail}")
    marker.write_text(version + "\n")
