"""Real-socket test doubles for the agent client: a raw TCP server, a scripted aiohttp agent.

Nothing here mocks the client's own functions: httpx always talks to a listening socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.agent import AgentClient
from bridge.config import Settings
from bridge.events import AgentEvent, TextDelta

API_KEY = "sk-so-TESTKEY0123456789abcdef"
SO_AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
SO_OLD_AGENT = "00000000-e5f6-7890-abcd-ef1234567890"
THIN_AGENT = "ag_c47e7c97_b2f2"


def settings_for(url: str, dialect: str = "sentientone", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "agent_api_url": url,
        "agent_api_key": API_KEY,
        "agent_api_dialect": dialect,
        "agent_idle_timeout": 5.0,
        "agent_connect_timeout": 2.0,
        "agent_max_retries": 3,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class RecordingSleep:
    """An injectable `sleep` that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def collect(
    client: AgentClient, agent_id: str, message: str, conversation_id: str | None = None
) -> list[AgentEvent]:
    async with aclosing(client.stream(agent_id, message, conversation_id)) as events:
        return [event async for event in events]


def text_of(events: Iterable[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --- raw TCP server: full control over every byte and every write boundary -------------------


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawConnection:
    """One accepted connection; `disconnected` is set when the client goes away."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request: RawRequest
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, data: bytes, pause: float = 0.0) -> None:
        self.writer.write(data)
        await self.writer.drain()
        await asyncio.sleep(pause)

    async def head(
        self, status: int = 200, headers: dict[str, str] | None = None, *, chunked: bool = True
    ) -> None:
        lines = [f"HTTP/1.1 {status} X"]
        all_headers = {"Content-Type": "text/event-stream"} | (headers or {})
        all_headers["Transfer-Encoding" if chunked else "Connection"] = "chunked" if chunked else "close"
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def chunk(self, data: bytes, pause: float = 0.0) -> None:
        """One HTTP/1.1 chunk (chunked transfer encoding)."""
        await self.write(f"{len(data):x}\r\n".encode() + data + b"\r\n", pause)

    async def end_chunks(self) -> None:
        await self.write(b"0\r\n\r\n")

    async def body(self, parts: Sequence[bytes], *, chunked: bool, pause: float = 0.0) -> None:
        """Sends `parts` as separate writes, then ends the body (last chunk, or closing)."""
        for part in parts:
            await (self.chunk(part, pause) if chunked else self.write(part, pause))
        if chunked:
            await self.end_chunks()
        else:
            self.writer.close()

    async def wait_disconnect(self) -> None:
        """Reads until EOF: the client closed its side."""
        try:
            while await self.reader.read(1024):
                pass
        except ConnectionError:
            pass
        self.disconnected.set()


RawHandler = Callable[[RawConnection], Awaitable[None]]


@dataclass
class RawServer:
    url: str
    connections: list[RawConnection]


async def _read_request(reader: asyncio.StreamReader) -> RawRequest:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, path, headers, body)


@asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[RawServer]:
    """A TCP server that answers each request by running `handler` on the raw connection."""
    connections: list[RawConnection] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            connection = RawConnection(reader, writer, request)
            connections.append(connection)
            await handler(connection)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield RawServer(f"http://{host}:{port}", connections)
    finally:
        server.close()
        for connection in connections:
            connection.writer.close()


def sse_frame(payload: dict[str, Any] | str, eol: str = "\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}{eol}{eol}".encode()


# --- scripted aiohttp agent: a queue of canned answers, every request recorded ----------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedAgent:
    url: str
    requests: list[Recorded]


@asynccontextmanager
async def scripted_agent(answers: Sequence[Answer]) -> AsyncIterator[ScriptedAgent]:
    """Each request gets the next answer (the last one repeats); all requests are recorded."""
    recorded: list[Recorded] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded.append(Recorded(request.path, dict(request.headers), json.loads(body) if body else None))
        answer = answers[min(len(recorded), len(answers)) - 1]
        return await answer(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield ScriptedAgent(f"http://{host}:{port}", recorded)
    finally:
        await runner.cleanup()


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=code, text=body, headers=headers)
        return web.json_response(body or {}, status=code, headers=headers)

    return answer


def sse(*events: dict[str, Any] | str, headers: dict[str, str] | None = None, finish: bool = True) -> Answer:
    """A 200 event stream of `events`; with `finish=False` the connection is cut afterwards."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await response.prepare(request)
        for event in events:
            await response.write(sse_frame(event))
        if finish:
            await response.write_eof()
        elif request.transport is not None:
            request.transport.abort()
        return response

    return answer
