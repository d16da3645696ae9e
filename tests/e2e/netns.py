"""Two network namespaces joined by a veth pair: "server" (where our dockerd runs) and "client".

The server side of the veth carries the very addresses the plan's `serverIpv4`/`serverIpv6` outputs
(and so its `dnsRecords`) advertise, so a check connects to the address a real client would resolve.
The client side gets the next addresses of the same prefixes. Traffic from the client reaches the
published ports through Docker's DNAT (PREROUTING), never through docker-proxy, so containers see
the client's real address (what the internet does to the real server).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@dataclass
class NetnsPair:
    server: str
    client: str
    server_v4: str
    server_v6: str
    client_v4: str
    client_v6: str
    client_v4_alt: str
    client_v6_alt: str

    @classmethod
    def create(cls, tag: str, server_v4: str, server_v6: str) -> NetnsPair:
        v4 = ipaddress.IPv4Address(server_v4)
        v6 = ipaddress.IPv6Address(server_v6)
        pair = cls(
            server=f"te2e-srv-{tag}",
            client=f"te2e-cli-{tag}",
            server_v4=str(v4),
            server_v6=str(v6),
            client_v4=str(v4 + 10),
            client_v6=str(v6 + 0x10),
            client_v4_alt=str(v4 + 11),
            client_v6_alt=str(v6 + 0x11),
        )
        pair._setup()
        return pair

    def _setup(self) -> None:
        try:
            ip("netns", "add", self.server)
            ip("netns", "add", self.client)
            veth_s, veth_c = f"ve-{self.server[-8:]}", f"vc-{self.client[-8:]}"
            ip(
                "link",
                "add",
                veth_s,
                "netns",
                self.server,
                "type",
                "veth",
                "peer",
                "name",
                veth_c,
                "netns",
                self.client,
            )
            for ns in (self.server, self.client):
                self.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"])
                ip("-n", ns, "link", "set", "lo", "up")
            srv = ("-n", self.server)
            cli = ("-n", self.client)
            ip(*srv, "addr", "add", f"{self.server_v4}/24", "dev", veth_s)
            ip(*srv, "addr", "add", f"{self.server_v6}/64", "dev", veth_s, "nodad")
            ip(*cli, "addr", "add", f"{self.client_v4}/24", "dev", veth_c)
            ip(*cli, "addr", "add", f"{self.client_v4_alt}/24", "dev", veth_c)
            ip(*cli, "addr", "add", f"{self.client_v6}/64", "dev", veth_c, "nodad")
            ip(*cli, "addr", "add", f"{self.client_v6_alt}/64", "dev", veth_c, "nodad")
            ip(*srv, "link", "set", veth_s, "up")
            ip(*cli, "link", "set", veth_c, "up")
            # The client is "the internet": everything it sends goes to the server.
            ip(*cli, "route", "add", "default", "via", self.server_v4)
            ip(*cli, "-6", "route", "add", "default", "via", self.server_v6)
            # The server's default route points at the client, standing for the upstream router:
            # Docker's outbound NAT (and pebble, which the tier runs on the client side) need one.
            ip(*srv, "route", "add", "default", "via", self.client_v4)
            ip(*srv, "-6", "route", "add", "default", "via", self.client_v6)
            self.run(self.server, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            self.run(self.server, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        except BaseException:
            self.destroy()
            raise

    @staticmethod
    def run(ns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True, timeout=timeout
        )

    def destroy(self) -> None:
        # Deleting a namespace removes its links, addresses, routes and iptables rules with it.
        for ns in (self.client, self.server):
            ip("netns", "delete", ns, check=False)
            etc = Path("/etc/netns") / ns
            if etc.is_dir():
                for item in etc.iterdir():
                    item.unlink()
                etc.rmdir()


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that joined netns `name`: sockets it creates belong to that namespace.

    setns(2) with CLONE_NEWNET changes only the calling thread, so the test process stays where it is.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns({name}): {os.strerror(errno)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout=300)
    if thread.is_alive():
        raise TimeoutError(f"work in netns {name} did not finish within 300 s")
    if error:
        raise error[0]
    return result[0]
