"""The real first hop of a neutron-like metadata path: Debian's haproxy, configured as neutron's
metadata proxy configures it, one process per guest network.

neutron starts one haproxy per router or network (``neutron/agent/metadata/driver.py``, the
template in ``neutron/common/metadata.py``). It listens on 169.254.169.254:80 inside the
namespace, deletes any ``X-Neutron-Network-ID`` the guest sent and sets the real one, appends
the guest's address to ``X-Forwarded-For`` (``option forwardfor``), and forwards over a unix
socket to neutron-metadata-agent. :func:`metadata_proxy_config` renders that template with the
same global settings, options and timeouts; what differs, and why:

- no ``daemon``, ``user``/``group``, ``pidfile`` or syslog ``log`` lines: the process runs in
  the foreground under :class:`MetadataProxy`, which stops it, and logs nowhere;
- ``bind`` is a loopback port, which the guest reaches through a QEMU ``guestfwd`` rule
  instead of an iptables redirect in a namespace;
- one line more, ``http-request set-src``: QEMU's user network delivers every guest
  connection from 127.0.0.1, where neutron's haproxy sees the guest's own address; setting the
  source to the guest's fixed address restores what ``option forwardfor`` appends.

The agent behind it reads the last ``X-Forwarded-For`` entry, as neutron's does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import subprocess
import time
import uuid
from pathlib import Path

from configdrive.errors import ConfigDriveError
from configdrive.run import find_tool, run

__all__ = ["MetadataProxy", "haproxy_version", "metadata_proxy_config"]

log = logging.getLogger("configdrive.service.haproxy")

# neutron's defaults: metadata_proxy maxconn 1024; [agent] timeouts (haproxy_* options)
MAXCONN = 1024
START_TIMEOUT = 10.0


def metadata_proxy_config(
    *, bind: tuple[str, int], upstream: Path, guest_address: str, network_id: str
) -> str:
    """haproxy.cfg for one guest network: neutron's template (see the module docstring).

    ``upstream`` is the agent's unix socket; ``guest_address`` the address the guest's requests
    are stamped with; ``network_id`` the ``X-Neutron-Network-ID`` haproxy sets.
    """
    address = ipaddress.ip_address(guest_address)
    uuid.UUID(network_id)  # raises on anything but a UUID: it is pasted into the config
    if "\n" in str(upstream) or " " in str(upstream):
        raise ConfigDriveError(f"haproxy: unusable socket path {str(upstream)!r}")
    host, port = bind
    ipaddress.ip_address(host)
    return (
        "# Written by configdrive: neutron's metadata proxy template (neutron/common/metadata.py)\n"
        "global\n"
        f"    maxconn     {MAXCONN}\n"
        "    nbthread    2\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    option http-server-close\n"
        "    option forwardfor\n"
        "    retries                 3\n"
        "    timeout http-request    30s\n"
        "    timeout connect         30s\n"
        "    timeout client          32s\n"
        "    timeout server          32s\n"
        "    timeout http-keep-alive 30s\n"
        "\n"
        "listen listener\n"
        f"    bind {host}:{port}\n"
        f"    server metadata {upstream}\n"
        # QEMU's user network NATs the guest to 127.0.0.1: give haproxy the guest's address
        f"    http-request set-src str({address.compressed})\n"
        "    http-request del-header X-Neutron-Network-ID\n"
        f"    http-request set-header X-Neutron-Network-ID {network_id}\n"
    )


def haproxy_version() -> str:
    """``haproxy -v``'s first line."""
    out = run([find_tool("haproxy"), "-v"]).stdout.decode("utf-8", "replace")
    return out.splitlines()[0].strip() if out.strip() else "haproxy (unknown version)"


def _free_port(host: str, port: int = 0) -> int:
    """``port`` (0: any) on ``host`` if nothing holds it now; haproxy binds with SO_REUSEPORT
    and would otherwise share a port another listener holds, its readiness then unprovable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigDriveError(f"haproxy: {host}:{port} is in use ({exc.strerror})") from None
        return int(s.getsockname()[1])


class MetadataProxy:
    """One haproxy process for one guest network, in front of the agent's unix socket.

    Started on construction (a free loopback port unless ``port`` is given), ready once its
    port accepts connections; :meth:`stop` (or leaving the ``with`` block) ends it.
    """

    def __init__(
        self,
        workdir: Path,
        upstream: Path,
        guest_address: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        network_id: str | None = None,
    ) -> None:
        self.host = host
        self.port = _free_port(host, port)
        self.network_id = network_id or str(uuid.uuid4())
        self.config = workdir / f"haproxy-{self.port}.cfg"
        self.config.write_text(
            metadata_proxy_config(bind=(host, self.port), upstream=upstream,
                                  guest_address=guest_address, network_id=self.network_id)
        )  # fmt: skip
        binary = find_tool("haproxy")
        run([binary, "-c", "-q", "-f", self.config])  # a bad config fails here, with its reason
        self._log = (workdir / f"haproxy-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = Path(self._log.name).read_text(errors="replace").strip()
                raise ConfigDriveError(
                    f"haproxy exited ({self.process.returncode}) on start: {output[-500:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(self.address, 0.5):
                return
            time.sleep(0.05)
        raise ConfigDriveError(f"haproxy did not listen on {self.host}:{self.port} in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> MetadataProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
