"""Client threads for the hot-reload tests: start them, wait (bounded) for a condition, stop them."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def clients(send_one: Callable[[], None], count: int) -> Iterator[threading.Event]:
    """`count` threads calling `send_one` until the block ends; yields the stop event."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            send_one()

    threads = [threading.Thread(target=loop) for _ in range(count)]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join()


def wait_until(condition: Callable[[], bool], stop: threading.Event, seconds: float, interval: float) -> bool:
    """Poll `condition` for at most `seconds`; True once it holds."""
    for _ in range(max(1, int(seconds / interval))):
        if condition():
            return True
        stop.wait(interval)
    return condition()
