"""Close codes and the SDK's reconnects (issue 25, item 3): the official SDK reconnects, up to
five times, after 1001, 1005, 1006, 1011-1013 and 1015, and only when given `on_reconnecting`.
A fatal refusal (1008, 4000) must not be retried; a server restarted under a live session
(uvicorn closes its sockets with 1012) must let the SDK open a fresh session on its own."""

from __future__ import annotations

import asyncio

import pytest
from conftest import LiveServer, free_port
from openai import AsyncOpenAI
from openai.types import ReconnectingEvent


async def _events_until_closed(conn, code: int, limit: float) -> list:
    """Every event until the SDK gives up on the connection (it reconnects, when it does, while
    iterating)."""
    events = []

    async def follow() -> None:
        async for event in conn:
            events.append(event)

    with pytest.raises(Exception, match=rf"\b{code}\b"):  # closed with that code
        await asyncio.wait_for(follow(), limit)
    return events


@pytest.mark.parametrize("headers, code", [
    ({"Authorization": "Bearer wrong-key-123456"}, 1008),
    ({"OpenAI-Beta": "realtime=v1"}, 4000),
])
async def test_a_fatal_refusal_is_not_retried(headers, code):
    reconnects: list[ReconnectingEvent] = []
    with LiveServer(api_keys=["right-key"]) as live:
        async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="right-key",
                               max_retries=0) as client:
            async with client.realtime.connect(
                extra_query={"intent": "transcription"}, extra_headers=headers,
                on_reconnecting=reconnects.append,
            ) as conn:
                events = await _events_until_closed(conn, code, 30)
    assert [e.type for e in events] == ["error"]
    assert reconnects == []  # never retried


async def test_a_server_restart_lets_the_sdk_open_a_fresh_session():
    port = free_port()
    reconnects: list[ReconnectingEvent] = []
    servers = [LiveServer(port=port).__enter__()]
    created = []
    try:
        async with AsyncOpenAI(base_url=f"{servers[0].base_url}/v1", api_key="none",
                               max_retries=0) as client:
            async with client.realtime.connect(extra_query={"intent": "transcription"},
                                               on_reconnecting=reconnects.append) as conn:

                async def follow() -> None:
                    # The SDK reconnects while it iterates the connection's events.
                    async for event in conn:
                        if event.type != "session.created":
                            continue
                        created.append(event.session.id)
                        if len(created) == 2:
                            return
                        # The server goes away under the live session, and comes back on
                        # its port.
                        await asyncio.to_thread(servers[0].__exit__, None, None, None)
                        servers.append(LiveServer(port=port).__enter__())

                await asyncio.wait_for(follow(), 90)
                await conn.session.update(session={"type": "transcription"})
                assert (await asyncio.wait_for(conn.recv(), 30)).type == "session.updated"
    finally:
        for server in servers:
            await asyncio.to_thread(server.__exit__, None, None, None)
    assert len(created) == 2 and created[0] != created[1]  # a fresh session
    assert reconnects and reconnects[0].close_code == 1012
