"""The websocket endpoint of the subscription websocket channel: https://hl7.org/fhir/uv/subscriptions-backport/channels.html#websockets

`GET /fhir/ws` (upgraded). The client sends `bind-with-token <token>` (a token from
`Subscription/{id}/$get-ws-binding-token`); `samverka.events.websocket` checks it, answers the
handshake and then sends the subscription's numbered notifications. Any other text is answered with an
OperationOutcome; the socket stays open, so a client may bind again with a fresh token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..events.websocket import Channel


def endpoint(channel: Channel) -> Callable[[WebSocket], Awaitable[None]]:
    async def serve(ws: WebSocket) -> None:
        await ws.accept()
        hub = channel.hub
        conn = hub.connect(ws.send_text)
        try:
            while True:
                text = await ws.receive_text()
                await hub.command(conn, text)
        except WebSocketDisconnect:
            pass
        finally:
            hub.disconnect(conn)

    return serve
