"""The rest-hook HTTP client against real loopback servers: keep-alive, a peer closing idle connections,
chunked and close-delimited answers, errors, timeouts and TLS."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from samverka.events.hooks import HookClient, HookError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, int]], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (Content-Length), or None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def _serve(handler: Handler, tls: ssl.SSLContext | None = None
           ) -> Callable[[Callable[[int, dict[str, int]], Awaitable[None]]], None]:
    """Run `body(port, stats)` with a loopback server whose connections `handler` answers."""
    def run(body: Callable[[int, dict[str, int]], Awaitable[None]]) -> None:
        async def main() -> None:
            stats = {"connections": 0, "requests": 0}

            async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                stats["connections"] += 1
                try:
                    await handler(reader, writer, stats)
                finally:
                    writer.close()

            server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
            port = server.sockets[0].getsockname()[1]
            async with server:
                await body(port, stats)
        asyncio.run(main())
    return run


async def _keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
    while (req := await _request(reader)) is not None:
        stats["requests"] += 1
        status = b"500 Boom" if b"fail" in req[1] else b"200 OK"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


def _answer_once(seen: list[tuple[bytes, bytes]], answer: bytes, linger: float = 0) -> Handler:
    """A handler that keeps one request (head, body) in `seen`, sends `answer` and holds the connection
    open for `linger` seconds."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        req = await _request(reader)
        assert req is not None
        seen.append(req)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(linger)
    return handler


def test_posts_reuse_one_connection_and_report_the_status() -> None:
    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        url = f"http://127.0.0.1:{port}/hook?x=1"
        codes = [await client.post(url, b"{}", {"Content-Type": "application/fhir+json"}, 5) for _ in range(5)]
        codes.append(await client.post(url, b"fail", {}, 5))
        await client.aclose()
        assert codes == [200] * 5 + [500]
        assert stats == {"connections": 1, "requests": 6}
    _serve(_keep_alive)(body)


def test_the_request_carries_target_host_headers_and_body() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        code = await client.post(f"http://127.0.0.1:{port}/a/b?c=d", b'{"resourceType":"Bundle"}',
                                 {"Content-Type": "application/fhir+json", "X-Module-Key": "k1"}, 5)
        await client.aclose()
        assert code == 204
    _serve(_answer_once(seen, b"HTTP/1.1 204 No Content\r\n\r\n"))(body)
    head, sent = seen[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a/b?c=d HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    assert headers["host"].startswith("127.0.0.1:")
    assert headers["x-module-key"] == "k1"
    assert headers["content-type"] == "application/fhir+json"
    assert sent == b'{"resourceType":"Bundle"}'


def test_a_connection_the_peer_closed_while_idle_is_replaced() -> None:
    """The server answers each request and then closes without saying so: the next POST finds the kept
    connection at its end and opens a new one."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        if await _request(reader) is not None:
            stats["requests"] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        url = f"http://127.0.0.1:{port}/"
        for _ in range(3):
            assert await client.post(url, b"{}", {}, 5) == 200
            await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        await client.aclose()
        assert stats == {"connections": 3, "requests": 3}
    _serve(handler)(body)


def test_a_kept_connection_dropped_mid_request_is_retried_on_a_new_one() -> None:
    """The server answers the first request, reads the second on the same connection and drops it without
    an answer (an idle timeout racing the request): the POST is sent again on a new connection."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        first = stats["connections"] == 1
        while await _request(reader) is not None:
            stats["requests"] += 1
            if first and stats["requests"] == 2:
                return  # read, never answered: the connection closes
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        url = f"http://127.0.0.1:{port}/"
        assert await client.post(url, b"{}", {}, 5) == 200
        assert await client.post(url, b"{}", {}, 5) == 200
        await client.aclose()
        assert stats == {"connections": 2, "requests": 3}
    _serve(handler)(body)


def test_a_protocol_switch_or_reserved_headers_never_hang_the_client() -> None:
    """A subscription's headers cannot steer the connection (Upgrade, Connection, Host, framing), and an
    endpoint answering 101 Switching Protocols is an error, not an endless wait."""
    seen: list[tuple[bytes, bytes]] = []
    switch = _answer_once(seen, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
                                b"\r\n\r\n", linger=5)

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Host": "evil.example", "Content-Length": "1",
                   "X-Module-Key": "k"}
        with pytest.raises(HookError):
            await asyncio.wait_for(client.post(f"http://127.0.0.1:{port}/", b"{}", headers, 2), 4)
        await client.aclose()
    _serve(switch)(body)
    head = seen[0][0].decode().lower()
    assert "upgrade" not in head and "evil.example" not in head and "x-module-key: k" in head
    assert "content-length: 2" in head


def test_credentials_in_the_url_become_basic_auth_and_paths_are_encoded() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        assert await client.post(f"http://mod%40a:s3cr%C3%A9t@127.0.0.1:{port}/hook/å b?x=ä", b"{}", {}, 5) == 200
        await client.aclose()
    _serve(_answer_once(seen, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))(body)
    lines = seen[0][0].decode().split("\r\n")
    assert lines[0] == "POST /hook/%C3%A5%20b?x=%C3%A4 HTTP/1.1"
    expected = "Basic " + base64.b64encode("mod@a:s3crét".encode()).decode()
    assert f"Authorization: {expected}" in lines
    host = next(line for line in lines if line.startswith("Host:"))
    assert host.startswith("Host: 127.0.0.1:") and "@" not in host  # no credentials in Host


def test_unusable_urls_are_hook_errors() -> None:
    async def body() -> None:
        client = HookClient()
        for url in ("http://[::1/", "http://a..b/", "http://127.0.0.1:99999/"):
            with pytest.raises(HookError):
                await client.post(url, b"{}", {}, 2)
    asyncio.run(body())


def test_chunked_and_close_delimited_answers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        req = await _request(reader)
        if req is not None and b"chunked" in req[1]:
            writer.write(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            await writer.drain()
            await _keep_alive(reader, writer, stats)
        elif req is not None:
            writer.write(b"HTTP/1.0 201 Created\r\n\r\nbody until close")
            await writer.drain()

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        url = f"http://127.0.0.1:{port}/"
        assert await client.post(url, b"chunked", {}, 5) == 202
        assert await client.post(url, b"{}", {}, 5) == 200  # same connection after a chunked body
        assert stats["connections"] == 1
        await client.aclose()
        other = HookClient()
        assert await other.post(url, b"close", {}, 5) == 201  # an HTTP/1.0 answer read until the close
        assert await other.post(url, b"chunked", {}, 5) == 202  # so the next POST opens a new connection
        assert stats["connections"] == 3
        await other.aclose()
    _serve(handler)(body)


def test_refused_silent_and_malformed_endpoints_raise_hook_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        await asyncio.sleep(5)

    async def body(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        with pytest.raises(HookError, match=r"no answer within 0.3 s"):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 0.3)
        with pytest.raises(HookError, match="ConnectionRefused"):
            await client.post("http://127.0.0.1:1/", b"{}", {}, 5)
        with pytest.raises(HookError, match="not an http"):
            await client.post("ftp://127.0.0.1/x", b"{}", {}, 5)
        await client.aclose()
    _serve(silent)(body)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: dict[str, int]) -> None:
        await _request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def body2(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        with pytest.raises(HookError):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5)
    _serve(garbage)(body2)


def test_https_verifies_the_endpoint_against_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def untrusted(port: int, stats: dict[str, int]) -> None:
        with pytest.raises(HookError, match="CERTIFICATE_VERIFY_FAILED"):
            await HookClient().post(f"https://127.0.0.1:{port}/", b"{}", {}, 5)
    _serve(_keep_alive, tls)(untrusted)

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read when the client builds its TLS context

    async def trusted(port: int, stats: dict[str, int]) -> None:
        client = HookClient()
        assert await client.post(f"https://127.0.0.1:{port}/", b"{}", {}, 5) == 200
        assert await client.post(f"https://127.0.0.1:{port}/", b"{}", {}, 5) == 200
        await client.aclose()
        assert stats == {"connections": 1, "requests": 2}
    _serve(_keep_alive, tls)(trusted)
