"""The rest-hook channel's HTTP client: one POST per notification Bundle over kept-alive connections.

https://hl7.org/fhir/uv/subscriptions-backport/channels.html#rest-hook: the server POSTs each notification
Bundle to the subscription's endpoint with its configured headers, and a 2xx answer acknowledges it.

The delivery worker sends every notification through here, so this client does only what that needs. It
runs HTTP/1.1 with h11 (the protocol state machine under httpx) over asyncio streams, keeps idle
connections per origin, and verifies TLS with the system's trust store (`SSL_CERT_FILE` and
`SSL_CERT_DIR` are honoured; httpx used certifi's bundle). A general client such as httpx spends about
a millisecond of CPU per POST on redirects, auth hooks, cookies and pool bookkeeping, which limited one
delivery worker to about 450 POSTs per second. Credentials in the endpoint URL become Basic auth.
Proxy variables are not read: rest-hook endpoints are reached directly. Headers that steer the
connection (`RESERVED`) are set here and never taken from a subscription.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import h11

# idle connections kept per origin: one per subscription in flight is enough, a few more absorb bursts
IDLE_PER_ORIGIN = 16
USER_AGENT = b"samverka-rest-hook"
# headers that steer the connection or the message framing: this client sets them, a subscription may not
# (an `Upgrade` answered by 101 would switch the connection away from HTTP)
RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "keep-alive",
                      "proxy-connection", "trailer"})


class HookError(Exception):
    """A POST that got no HTTP answer: connection refused, reset, timed out, or an unusable endpoint."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: bytes
    authority: bytes
    authorization: bytes | None = None  # Basic, from credentials in the URL

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def target(url: str) -> Target:
    """An endpoint URL split for the request line and the connection (http and https only)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise HookError(f"not a usable URL: {url} ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookError(f"not an http(s) URL: {url}")
    # characters a request line may not carry are percent-encoded; escapes already there are kept
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._") + (
        f"?{quote(parts.query, safe='/%:@!$&()*+,;=?~-._')}" if parts.query else "")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Basic " + base64.b64encode(pair)
    try:
        authority = parts.netloc.rpartition("@")[2].encode("idna" if not parts.netloc.isascii() else "ascii")
    except UnicodeError as exc:
        raise HookError(f"not a usable host name: {url}") from exc
    return Target(parts.scheme, parts.hostname, port, path.encode(), authority, auth)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.used = False  # has answered a request before: a failure may be the peer closing it while idle

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def post(self, t: Target, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
        """Send one request and read its whole answer; the status code."""
        conn = self.h11
        head = [(b"Host", t.authority), (b"User-Agent", USER_AGENT), (b"Content-Length", str(len(body)).encode()),
                *headers]
        self.writer.write(conn.send(h11.Request(method=b"POST", target=t.path, headers=head))
                          + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data | h11.InformationalResponse) and getattr(event, "status_code", 0) != 101:
                continue  # the body (read to the end: the connection is reused), or a 1xx before the answer
            elif isinstance(event, h11.EndOfMessage):
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the endpoint closed the connection before answering")
            else:  # PAUSED after a protocol switch (101), or anything else an HTTP answer cannot be
                raise h11.RemoteProtocolError(f"not an HTTP answer to a POST: {event!r}")

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.used = True
            return not self.reader.at_eof()
        return False


class HookClient:
    """POSTs to rest-hook endpoints, keeping idle connections per origin."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """The answer's status code; HookError when there is none within `timeout` seconds."""
        t = self._targets.get(url)
        if t is None:
            t = self._targets[url] = target(url)
        raw = [(k.encode(), v.encode()) for k, v in headers.items() if k.strip().lower() not in RESERVED]
        if t.authorization is not None and not any(k.lower() == "authorization" for k in headers):
            raw.append((b"Authorization", t.authorization))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    conn = await self._connection(t)
                    try:
                        status = await conn.post(t, body, raw)
                    except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError) as exc:
                        conn.close()
                        if conn.used:  # an idle connection the peer had closed: retry on another one
                            continue
                        raise HookError(f"{type(exc).__name__}: {exc}") from exc
                    except BaseException:
                        conn.close()
                        raise
                    if conn.reusable():
                        idle = self._idle.setdefault(t.origin, [])
                        if len(idle) < IDLE_PER_ORIGIN:
                            idle.append(conn)
                        else:
                            conn.close()
                    else:
                        conn.close()
                    return status
        except TimeoutError:
            raise HookError(f"no answer within {timeout:g} s") from None
        except (OSError, ssl.SSLError, h11.ProtocolError, ValueError) as exc:  # ValueError: a host getaddrinfo refuses
            raise HookError(f"{type(exc).__name__}: {exc}") from exc

    async def _connection(self, t: Target) -> _Connection:
        idle = self._idle.get(t.origin)
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof():
                return conn
            conn.close()
        tls = None
        if t.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        reader, writer = await asyncio.open_connection(t.host, t.port, ssl=tls, limit=1 << 20)
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
