"""Running a coroutine to completion from synchronous code, whether or not the calling thread
already runs an event loop (then on a private loop in another thread)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from herd.platform.errors import HerdTimeoutError

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return asyncio.run(bounded())
        except asyncio.TimeoutError:
            raise HerdTimeoutError(f"no result within {timeout} s") from None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: run_sync(coroutine, timeout)).result(timeout + 5)
