"""Protocol clients the checks use from the client namespace (standard library only)."""

from __future__ import annotations

import base64
import os
import random
import socket
import ssl
import struct
from urllib.parse import quote_from_bytes

from tests.realtools import BufferedSocket, Response, connect, http_request, parse_head, ws_accept, ws_frame

# The doctor's decoder (tools/doctor.py): one bencode parser for what ships and what proves it.


def bind_source(family: socket.AddressFamily, source: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((source, 0))
    return sock


def https(
    address: str,
    port: int,
    host: str,
    target: str,
    ca: ssl.SSLContext,
    source: str | None = None,
    timeout: float = 10,
) -> Response:
    """One HTTP/1.1 request over TLS to address:port with SNI + Host = host, optionally from `source`."""
    if source is None:
        return http_request(
            address,
            port,
            target,
            {"Host": host, "User-Agent": "e2e"},
            tls=ca,
            server_hostname=host.split(":")[0],
            timeout=timeout,
        )
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = bind_source(family, source)
    raw.settimeout(timeout)
    raw.connect((address, port))
    sock = ca.wrap_socket(raw, server_hostname=host.split(":")[0])
    with sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: e2e\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        import http.client

        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        return Response(response.status, response.getheaders(), response.read())


def plain_http(address: str, port: int, host: str, target: str, timeout: float = 10) -> Response:
    return http_request(address, port, target, {"Host": host, "User-Agent": "e2e"}, timeout=timeout)


def tls_version(address: str, port: int, host: str, ca: ssl.SSLContext) -> str | None:
    with connect(address, port, ca, host, timeout=10) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        return sock.version()


def peer_cert_der(address: str, port: int, host: str, ca: ssl.SSLContext) -> bytes:
    with connect(address, port, ca, host, timeout=10) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der
        return der


def announce_query(
    info_hash: bytes, peer_id: bytes, port: int, event: str = "started", left: int = 1000
) -> str:
    return (
        f"/announce?info_hash={quote_from_bytes(info_hash)}&peer_id={quote_from_bytes(peer_id)}&port={port}"
        f"&uploaded=0&downloaded=0&left={left}&event={event}&compact=0"
    )


def websocket_echo(
    address: str, port: int, host: str, origin: str, ca: ssl.SSLContext, message: bytes
) -> tuple[str, bytes]:
    """Upgrade on /api/live/ws; returns (status line, echoed payload or b"")."""
    key = base64.b64encode(os.urandom(16)).decode()
    with connect(address, port, ca, host.split(":")[0], timeout=10) as sock:
        sock.sendall(
            (
                f"GET /api/live/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
            ).encode()
        )
        reader = BufferedSocket(sock)
        status, headers = parse_head(reader.read_until(b"\r\n\r\n"))
        if " 101 " not in status:
            return status, b""
        accept = dict((k.lower(), v) for k, v in headers).get("sec-websocket-accept")
        assert accept == ws_accept(key), f"bad Sec-WebSocket-Accept {accept!r}"
        sock.sendall(ws_frame(0x1, message, mask=True))
        opcode, payload = reader.read_frame()
        assert opcode == 0x1, f"opcode {opcode}"
        sock.sendall(ws_frame(0x8, b"\x03\xe8", mask=True))
        return status, payload


# --- UDP tracker, BEP 15 ----------------------------------------------------------------------------

PROTOCOL_ID = 0x41727101980


def udp_announce(
    address: str,
    port: int,
    source: str,
    info_hash: bytes,
    peer_id: bytes,
    peer_port: int,
    event: int = 2,
    left: int = 1000,
) -> tuple[int, int, int, list[tuple[str, int]], int]:
    """connect + announce from `source`; (interval, leechers, seeders, peers, bytes per peer)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        tid = random.getrandbits(32)
        sock.sendto(struct.pack(">QII", PROTOCOL_ID, 0, tid), (address, port))
        data, _ = sock.recvfrom(2048)
        action, rtid, connection_id = struct.unpack(">IIQ", data[:16])
        assert (action, rtid) == (0, tid), f"bad connect reply {data!r}"
        tid = random.getrandbits(32)
        sock.sendto(
            struct.pack(
                ">QII20s20sQQQIIIiH",
                connection_id,
                1,
                tid,
                info_hash,
                peer_id,
                0,
                left,
                0,
                event,
                0,
                0,
                -1,
                peer_port,
            ),
            (address, port),
        )
        data, _ = sock.recvfrom(4096)
        action, rtid, interval, leechers, seeders = struct.unpack(">IIIII", data[:20])
        assert (action, rtid) == (1, tid), f"bad announce reply {data!r}"
        body = data[20:]
        size = 18 if family == socket.AF_INET6 else 6
        assert len(body) % size == 0, f"peer list of {len(body)} bytes is not a multiple of {size} (BEP 15)"
        peers = []
        for i in range(0, len(body), size):
            raw_ip, raw_port = body[i : i + size - 2], body[i + size - 2 : i + size]
            peers.append((socket.inet_ntop(family, raw_ip), struct.unpack(">H", raw_port)[0]))
        return interval, leechers, seeders, peers, size


def udp_scrape(address: str, port: int, source: str, info_hash: bytes) -> tuple[int, int, int]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        tid = random.getrandbits(32)
        sock.sendto(struct.pack(">QII", PROTOCOL_ID, 0, tid), (address, port))
        data, _ = sock.recvfrom(2048)
        _action, _tid, connection_id = struct.unpack(">IIQ", data[:16])
        tid = random.getrandbits(32)
        sock.sendto(struct.pack(">QII20s", connection_id, 2, tid, info_hash), (address, port))
        data, _ = sock.recvfrom(2048)
        action, rtid, seeders, completed, leechers = struct.unpack(">IIIII", data[:20])
        assert (action, rtid) == (2, tid), f"bad scrape reply {data!r}"
        return seeders, completed, leechers
