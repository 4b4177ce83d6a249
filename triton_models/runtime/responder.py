"""A thread that delivers responses in order, so the decode loop never waits on delivery.

Sending a response from a python-backend model is a round trip to the server process; done
inline, the decode loop would wait for every sequence's delivery before its next step. The
loop hands each delivery (a callable) to :class:`Responder` instead and goes on computing;
deliveries run on one thread in the order they were handed over, so every stream keeps its
order and its last response stays last.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

Delivery = Callable[[], None]


class Responder:
    def __init__(self, name: str = "lmforge-respond") -> None:
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, delivery: Delivery) -> None:
        self._queue.put(delivery)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                delivery()
            except Exception:  # one failed delivery must not stop the others
                logger.exception("delivering a response failed")
