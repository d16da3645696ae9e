"""Stand-in for Pingoo 0.14.7 (no registry here, and Pingoo is not packaged by Debian).

Reads the rendered /etc/pingoo/pingoo.yml and reproduces only what our design relies on, each from
pingooio/pingoo v0.14.7 (summarised in /work/shared/research/pingoo.md):
- binds exactly `listeners.<name>.address` (pingoo/config/config_file.rs, listeners/http_listener.rs);
- TLS 1.3 only (pingoo/tls/tls_manager.rs: `builder_with_protocol_versions(&[&rustls::version::TLS13])`);
- routes by `http_request.host == "..."` (the only route form our templates render; any other form
  stops the stand-in with an error, so a template change cannot silently pass);
- strips HOP_HEADERS from the request and appends the TCP peer to X-Forwarded-For, sets
  X-Forwarded-Proto/X-Forwarded-Host (pingoo/services/http_proxy_service.rs);
- answers `server: pingoo`; no matching service -> 404.
Not reproduced: ACME (TLS-ALPN-01); the certificate is the tier's locally generated one, read from
/etc/pingoo/tls/*.pem + *.key (the folder real Pingoo stores its certificates in).
Standard library only (runs on Debian's python3 inside the container).
"""

from __future__ import annotations

import asyncio
import glob
import re
import ssl
import sys
from typing import Any

HOP_HEADERS = {
    "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
}  # fmt: skip
RESPONSE_HEADERS_TO_REMOVE = {
    "x-accel-buffering",
    "x-accel-charset",
    "x-accel-limit-rate",
    "x-accel-redirect",
    "alt-svc",
}
ROUTE_TERM = re.compile(r'^http_request\.host == "([^"]+)"$')


def parse_config(text: str) -> tuple[str, int, list[tuple[set[str], str, int]]]:
    """(bind host, port, [(hosts, upstream host, upstream port)]) from the rendered pingoo.yml."""
    import yaml  # python3-yaml is a dependency of certbot in the base image

    doc: dict[str, Any] = yaml.safe_load(text)
    listeners = doc["listeners"]
    if len(listeners) != 1:
        raise SystemExit(f"stand-in supports one listener, config has {sorted(listeners)}")
    (listener,) = listeners.values()
    match = re.fullmatch(r"https://(\[[0-9a-fA-F:]+\]|[0-9.]+):(\d+)", listener["address"])
    if not match:
        raise SystemExit(f"unsupported listener address {listener['address']!r}")
    host = match.group(1).strip("[]")
    services = []
    for name in listener["services"]:
        service = doc["services"][name]
        hosts = set()
        for term in str(service["route"]).split("||"):
            term_match = ROUTE_TERM.match(term.strip())
            if not term_match:
                raise SystemExit(f"service {name}: unsupported route term {term.strip()!r}")
            hosts.add(term_match.group(1))
        (upstream,) = service["http_proxy"]
        up = re.fullmatch(r"http://([0-9.]+):(\d+)", upstream)
        if not up:
            raise SystemExit(f"service {name}: unsupported upstream {upstream!r}")
        services.append((hosts, up.group(1), int(up.group(2))))
    return host, int(match.group(2)), services


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def get(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, services: list[tuple[set[str], str, int]]
) -> None:
    peer_ip = writer.get_extra_info("peername")[0]
    if peer_ip.startswith("::ffff:"):
        peer_ip = peer_ip[7:]
    try:
        request_line, headers = await read_head(reader)
        length = int(get(headers, "content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        host = get(headers, "host") or ""
        # listeners/http_listener.rs: no User-Agent, or one of 256 bytes or more -> 403, before routing.
        agent = get(headers, "user-agent") or ""
        if not agent or len(agent) >= 256:
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nserver: pingoo\r\ncontent-length: 17\r\n\r\nPermission Denied"
            )
            return
        route = next(((h, p) for hosts, h, p in services if host in hosts), None)
        if route is None:
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nserver: pingoo\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            return
        named_in_connection = {t.strip().lower() for t in (get(headers, "connection") or "").split(",")}
        forwarded = [
            (k, v)
            for k, v in headers
            if k.lower() not in HOP_HEADERS | named_in_connection
            and k.lower()
            not in {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "content-length"}
        ]
        xff = get(headers, "x-forwarded-for")
        forwarded.append(("X-Forwarded-For", f"{xff}, {peer_ip}" if xff else peer_ip))
        forwarded += [
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", host),
            ("Pingoo-Client-Ip", peer_ip),
        ]
        if body:
            forwarded.append(("Content-Length", str(len(body))))
        # One upstream connection per request (Connection: close is ours, hop-by-hop, not the client's).
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*route), 10)
        method, target, _ = request_line.split(" ", 2)
        up_writer.write(
            f"{method} {target} HTTP/1.1\r\n".encode()
            + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in forwarded)
            + b"Connection: close\r\n\r\n"
            + body
        )
        await up_writer.drain()
        status_line, response_headers = await read_head(up_reader)
        response_body = await asyncio.wait_for(up_reader.read(), 30)
        up_writer.close()
        if (get(response_headers, "transfer-encoding") or "").lower() == "chunked":
            response_body = dechunk(response_body)
        kept = [
            (k, v)
            for k, v in response_headers
            if k.lower() not in HOP_HEADERS | RESPONSE_HEADERS_TO_REMOVE | {"content-length", "server"}
        ]
        kept += [("server", "pingoo"), ("content-length", str(len(response_body))), ("connection", "close")]
        writer.write(
            status_line.encode("latin-1")
            + b"\r\n"
            + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in kept)
            + b"\r\n"
            + response_body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as error:
        print(f"stand-in pingoo: {peer_ip}: {error!r}", file=sys.stderr, flush=True)
    finally:
        writer.close()


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def main() -> None:
    with open("/etc/pingoo/pingoo.yml") as config:
        host, port, services = parse_config(config.read())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    for cert in sorted(glob.glob("/etc/pingoo/tls/*.pem")):
        context.load_cert_chain(cert, cert[: -len(".pem")] + ".key")
    server = await asyncio.start_server(lambda r, w: handle(r, w, services), host, port, ssl=context)
    print(f"stand-in pingoo listening on {host}:{port} for {services}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
