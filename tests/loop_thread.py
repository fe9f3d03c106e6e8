"""Run an async world (servers, the bridge, an adapter) on its own event loop in a thread, so
synchronous hypothesis tests can drive it over real sockets and inspect it afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class LoopThread:
    """`with LoopThread(factory) as world:` — `factory()` is an async context manager whose
    value is the world; `world.call(coro_fn)` runs `coro_fn(value)` on the world's loop."""

    def __init__(self, factory: Callable[[], contextlib.AbstractAsyncContextManager[Any]]) -> None:
        self.factory = factory
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.value: Any = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the test by __enter__
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.factory() as value:
            self.value = value
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> LoopThread:
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            raise AssertionError(f"the world did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._failure is not None:
            raise self._failure

    def call(self, fn: Callable[[Any], Awaitable[Any]], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(self.value), self.loop).result(timeout)
