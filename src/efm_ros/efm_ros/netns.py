"""A simulated robot LAN on one Linux machine: the learner machine and each station in its
own network namespace, joined only by veth links to a bridge (issue 16, item 6).

    with SimulatedLan(["station_0", "station_1"]) as lan:
        Graph(specs, params, logs, env=lan.environment(domain), prefix=lan.prefix, ...)

Each namespace has only its loopback and one veth end, with an address in a private
subnet that exists nowhere but inside these namespaces; the host's interfaces are not in
them, so nothing outside can be reached or reached from them. DDS runs over UDP only
(``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``: processes on one machine would otherwise take
Fast DDS's shared-memory path and never touch the network) with discovery over the
subnet (``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``), as on a robot LAN. Needs root (or
CAP_NET_ADMIN) and iproute2; everything is removed on exit, processes first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence


class LanUnavailableError(RuntimeError):
    """Network namespaces cannot be created here (not root, no iproute2)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise LanUnavailableError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class SimulatedLan:
    """A hub namespace (learner, coordinator: ``10.<a>.<b>.1``) with a bridge, and one
    namespace per station (``.2``, ``.3``, ...) on a veth link to it."""

    def __init__(self, stations: Sequence[str], subnet: str = "10.213.77") -> None:
        if len(stations) > 250:
            raise ValueError("at most 250 stations on one /24")
        self.tag = uuid.uuid4().hex[:6]
        self.hub = f"efm-{self.tag}-hub"
        self.namespaces = {s: f"efm-{self.tag}-s{i}" for i, s in enumerate(stations)}
        self.addresses = {self.hub: f"{subnet}.1",
                          **{ns: f"{subnet}.{i + 2}"
                             for i, ns in enumerate(self.namespaces.values())}}
        self.created: list[str] = []

    # -- set-up and teardown -------------------------------------------------------------
    def __enter__(self) -> SimulatedLan:
        if shutil.which("ip") is None:
            raise LanUnavailableError("iproute2 (ip) is not installed")
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _create(self) -> None:
        hub, address = self.hub, self.addresses[self.hub]
        _ip("netns", "add", hub)
        self.created.append(hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", hub, "addr", "add", f"{address}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        _ip("-n", hub, "route", "add", "224.0.0.0/4", "dev", "br0")  # DDS discovery
        for i, ns in enumerate(self.namespaces.values()):
            _ip("netns", "add", ns)
            self.created.append(ns)
            # both ends are created inside the namespaces: nothing appears in the host's
            _ip("-n", hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", hub, "link", "set", f"h{i}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[ns]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def pids(self) -> list[int]:
        """Processes still running in any of the namespaces."""
        out = []
        for ns in self.created:
            result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            out += [int(p) for p in result.stdout.split()]
        return out

    def close(self) -> None:
        """Kill what still runs inside, then delete the namespaces (links go with them)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created.clear()

    # -- running nodes inside ------------------------------------------------------------
    def namespace_of(self, process: str) -> str:
        """The namespace of a bring-up process: a station's (``/station_0`` or a node in
        it) or, for the global nodes (learner, coordinator), the hub."""
        return self.namespaces.get(process.strip("/").split("/")[0], self.hub)

    def prefix(self, process: str) -> list[str]:
        """Command prefix that runs ``process`` in its namespace."""
        return ["ip", "netns", "exec", self.namespace_of(process)]

    @staticmethod
    def environment(domain: int, base: dict[str, str] | None = None) -> dict[str, str]:
        """ROS environment inside the LAN: UDP only, discovery over the subnet."""
        env = dict(os.environ if base is None else base)
        env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET",
                   FASTDDS_BUILTIN_TRANSPORTS="UDPv4", PYTHONUNBUFFERED="1")
        env.pop("ROS_STATIC_PEERS", None)
        env.pop("ROS_LOCALHOST_ONLY", None)
        return env
