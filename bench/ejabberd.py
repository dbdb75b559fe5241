"""The peer: ejabberd from Debian's packages, as an instance of its own on loopback.

`ejabberd_instance(settings)` installs Debian's package if it is missing (as root, with
service starts denied so that the system's own ejabberd never runs), writes the
configuration below under `.state/ejabberd/`, starts a node of its own
(`parley-bench@localhost`, never the system's default node), waits until it serves,
and stops it afterwards. It listens only on 127.0.0.1: XMPP over WebSocket (RFC 7395)
at `/ws` on `bench_ejabberd_port`.

What differs from Debian's `/etc/ejabberd/ejabberd.yml`, and why (a fair race):

- the `c2s_shaper` rule is `none` for everyone: Debian's gives every client the
  `normal` shaper, 3,000 bytes/s, which would throttle a load generator's users to a
  few messages a second each (Parley's own rate limits stay on);
- `max_user_offline_messages` is 1,000,000: Debian's caps offline storage at 100
  messages per user (5,000 for admins), and bounces the rest;
- in-band registration (XEP-0077) is open on loopback with no per-address timeout, so
  the benchmark can create its users; passwords are stored `plain` (no SCRAM hashing
  at registration, like Parley's bench users who skip argon2);
- it runs as the ejabberd user with its open-file soft limit raised to the hard one
  (20,000 here): `su` would leave it at 1,024, and a thousand users made it fail to
  accept connections and stop;
- only the modules the race uses: offline storage (`mod_offline`, on: receipts and
  messages to offline users are stored), stream management (`mod_stream_mgmt`, acks),
  `mod_register`; receipts (XEP-0184) and chat markers need no module, they are
  routed as messages. No TLS (loopback), no roster, no MAM: ejabberd does not store a
  message it hands to an online recipient, while Parley stores every message before it
  acks. Storage is ejabberd's default, Mnesia.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.procfs import children, cmdline
from infra.settings import Settings

DOMAIN = "bench.localhost"
NODE = "parley-bench@localhost"
USER = "ejabberd"

CONFIG = """\
hosts:
  - "{domain}"
loglevel: warning
log_rotate_count: 0
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 4096
    request_handlers:
      /ws: ejabberd_http_ws
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
shaper:
  normal:
    rate: 3000
    burst_size: 20000
  fast: 100000000
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 1000000
  c2s_shaper: none
  s2s_shaper: fast
acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
  register_from:
    allow: loopback
modules:
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_register:
    access: register
    ip_access: register_from
    welcome_message: {{}}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
"""

CTL_CONFIG = """\
POLL=true
ERL_MAX_PORTS=65536
ERL_PROCESSES=1000000
INET_DIST_INTERFACE=127.0.0.1
ERLANG_NODE={node}
"""


@dataclass(frozen=True)
class Ejabberd:
    url: str  # ws://127.0.0.1:port/ws
    domain: str
    pid: int
    version: str

    def processes(self) -> dict[str, list[int]]:
        return {"ejabberd": [self.pid, *children(self.pid)]}


def installed() -> bool:
    return shutil.which("ejabberdctl") is not None


def ensure_installed() -> None:
    """apt-get install ejabberd when missing (root), without letting the package start
    the system's own ejabberd: a policy-rc.d denies service starts meanwhile."""
    if installed():
        return
    from infra.stack.process import apt_install

    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        apt_install("ejabberd")
    finally:
        if ours:
            policy.unlink(missing_ok=True)


def _ctl(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """ejabberdctl as the ejabberd user, its open-file soft limit raised to the hard one."""
    options = [
        "--config", str(home / "ejabberd.yml"),
        "--ctl-config", str(home / "ejabberdctl.cfg"),
        "--logs", str(home / "logs"),
        "--spool", str(home / "spool"),
        "--node", NODE,
    ]  # fmt: skip
    script = 'ulimit -n "$(ulimit -Hn)"; cd "$0"; exec ejabberdctl "$@"'
    return subprocess.run(
        ["runuser", "-u", USER, "--", "sh", "-c", script, str(home), *options, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "HOME": str(Path("~" + USER).expanduser()),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        },
    )


def _processes_named(*words: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = cmdline(int(entry.name))
            if all(word in line for word in words):
                found.append(int(entry.name))
    return found


def _loopback_epmd() -> int | None:
    """Erlang's port mapper bound to loopback (it would listen on every address); its pid
    if this call started it, None if one was already running."""
    if _processes_named("epmd"):
        return None
    subprocess.run(["epmd", "-address", "127.0.0.1", "-daemon"], check=True)
    time.sleep(0.5)
    mine = _processes_named("epmd", "-address")
    return mine[0] if mine else None


@contextmanager
def ejabberd_instance(settings: Settings) -> Iterator[Ejabberd]:
    """A fresh ejabberd node (its spool wiped) for one run; stopped afterwards."""
    ensure_installed()
    home = Path(settings.state_dir) / "ejabberd"
    shutil.rmtree(home / "spool", ignore_errors=True)
    for sub in ("logs", "spool"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "ejabberd.yml").write_text(
        CONFIG.format(domain=DOMAIN, port=settings.bench_ejabberd_port)
    )
    (home / "ejabberdctl.cfg").write_text(CTL_CONFIG.format(node=NODE))
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(home)], check=True)
    home.parent.chmod(home.parent.stat().st_mode | 0o011)
    epmd = _loopback_epmd()
    if _ctl(home, "status", timeout=30).returncode == 0:  # a node left by a killed run
        _ctl(home, "stop", timeout=60)
        _ctl(home, "stopped", timeout=60)
    started = _ctl(home, "start")
    if started.returncode != 0:
        raise RuntimeError(f"ejabberd did not start: {started.stderr or started.stdout}")
    deadline = time.monotonic() + 120
    while _ctl(home, "status", timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ejabberd did not come up; see {home / 'logs'}")
        time.sleep(1.0)
    beams = _processes_named("beam", NODE)
    version = _ctl(home, "status", timeout=30).stdout.strip().splitlines()[-1]
    try:
        yield Ejabberd(
            f"ws://127.0.0.1:{settings.bench_ejabberd_port}/ws",
            DOMAIN,
            beams[0] if beams else 0,
            version,
        )
    finally:
        _ctl(home, "stop", timeout=60)
        _ctl(home, "stopped", timeout=60)
        if epmd is not None:
            os.kill(epmd, signal.SIGTERM)
