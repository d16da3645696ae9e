"""Stand-in for Grafana 12 (no registry here, and Grafana is not in Debian).

Reproduces only what nginx and our checks meet, each from grafana/grafana (summarised in
/work/shared/research/nginx_certbot.md §1.2):
- listens on :3000 (conf/defaults.ini `http_port = 3000`), `GET /api/health` answers JSON 200
  (pkg/api/health.go);
- `GET /api/live/ws` upgrades to a WebSocket after the Live origin check of
  pkg/services/live/live.go (`getCheckOriginFunc`/`checkAllowedOrigin`): no Origin -> allowed;
  Origin host (with port) equal to the request Host -> allowed; else scheme + host[:port] equal to
  GF_SERVER_ROOT_URL's -> allowed; else GF_LIVE_ALLOWED_ORIGINS (comma-separated, `*` = any) ->
  allowed; otherwise 403. After 101 it echoes every data frame (the stand-in's own behaviour, so the
  check can prove the frames cross nginx both ways).
Standard library only (Debian's python3 inside the container).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 65536:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


def origin_allowed(origin: str | None, host: str) -> bool:
    if not origin:
        return True
    parsed = urlsplit(origin.lower())
    if not parsed.scheme or not parsed.netloc:
        return False
    if parsed.netloc == host.lower():
        return True
    root = urlsplit(os.environ.get("GF_SERVER_ROOT_URL", "http://localhost:3000/").lower())
    if parsed.port is not None:
        if parsed.scheme == root.scheme and parsed.netloc == root.netloc:
            return True
    elif parsed.scheme == root.scheme and parsed.hostname == root.hostname:
        return True
    allowed = [
        o.strip().lower() for o in os.environ.get("GF_LIVE_ALLOWED_ORIGINS", "").split(",") if o.strip()
    ]
    return "*" in allowed or f"{parsed.scheme}://{parsed.netloc}" in allowed


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            _method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            if target.split("?")[0] == "/api/live/ws":
                await websocket(headers, reader, writer)
                return
            content_type = "application/json"
            if target.split("?")[0] == "/api/health":
                body = json.dumps({"database": "ok", "version": "stand-in"}).encode()
            elif target.split("?")[0] == "/login":
                # Grafana serves its single-page app for /login: public/views/index.html, whose
                # <title>[[.AppTitle]]</title> is "Grafana" by default (what `make doctor` looks for).
                body = b"<!DOCTYPE html><html><head><title>Grafana</title></head><body></body></html>"
                content_type = "text/html; charset=UTF-8"
            else:
                body = json.dumps({"target": target, "headers": headers}).encode()
            response_head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(response_head.encode() + body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return
    finally:
        writer.close()


async def websocket(
    headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    key = headers.get("sec-websocket-key")
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection or not key:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return
    if not origin_allowed(headers.get("origin"), headers.get("host", "")):
        body = b"Request Origin is not authorized\n"
        writer.write(
            b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        return
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    writer.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    await writer.drain()
    while True:
        first, second = await asyncio.wait_for(reader.readexactly(2), 60)
        opcode, n = first & 0x0F, second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        mask = await reader.readexactly(4) if second & 0x80 else b""
        payload = await reader.readexactly(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        writer.write(frame(0xA if opcode == 0x9 else opcode, payload))
        await writer.drain()


async def main() -> None:
    server = await asyncio.start_server(handle, "0.0.0.0", 3000)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
