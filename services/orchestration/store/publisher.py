"""Publishing to JetStream and awaiting the acknowledgement, many publishes
(and JetStream API requests, such as reading a key) in flight on one connection.

nats-py's ``JetStreamContext.publish`` is a request per message (a fresh
inbox token, a timeout task, a parsed acknowledgement object): at thousands
of writes a second it is most of the dispatcher's time. Here every publish
shares one wildcard reply subscription, a future keyed by a counter, and a
check of the acknowledgement that parses JSON only for errors. Errors are
raised as nats-py raises them, so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from orchestration.store.natsconn import connection_of

# How long a publish waits for its acknowledgement (nats-py's default).
ACK_TIMEOUT = 5.0
_NO_RESPONDERS = "503"
_SEQ = re.compile(rb'"seq":\s*(\d+)')
# Granularity of acknowledgement time-outs (seconds).
_SWEEP_SECONDS = 0.25


class Publisher:
    """Acknowledged JetStream publishes over one connection (see publisher_for)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        # Token -> (the publish's future, when it times out in loop time).
        self._pending: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._counter = itertools.count(1)
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()
        # One timer for all pending publishes (a timer each costs more than the
        # publish), running only while some are pending.
        self._sweeper: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        async with self._lock:
            if self._subscription is None:
                self._prefix = self._nc.new_inbox() + "."
                # No limit on pending replies: every one of them has a waiting publish.
                self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply, pending_msgs_limit=0,
                                                              pending_bytes_limit=0)

    async def _on_reply(self, msg: Msg) -> None:
        pending = self._pending.pop(msg.subject[len(self._prefix):], None)
        if pending is not None and not pending[0].done():
            pending[0].set_result(msg)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = loop.time()
            for token, (future, deadline) in list(self._pending.items()):
                if deadline <= now:
                    del self._pending[token]
                    if not future.done():
                        future.set_exception(nats.errors.TimeoutError())

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      timeout: float = ACK_TIMEOUT) -> int:
        """Publish and wait for the stream to store it; the stream sequence.

        Raises nats.errors.TimeoutError without an acknowledgement in time,
        nats.js.errors.NoStreamResponseError when no stream takes the subject,
        and the nats.js.errors.APIError subclass of a refusal (for example
        KeyWrongLastSequenceError when an expected sequence header failed)."""
        try:
            reply = await self.request(subject, payload, headers, timeout)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        data = reply.data
        found = _SEQ.search(data)
        if found is not None and b'"error"' not in data:
            return int(found.group(1))
        response = json.loads(data)
        if "error" in response:
            nats.js.errors.APIError.from_error(response["error"])  # raises
        raise nats.js.errors.APIError(description=f"unexpected acknowledgement {data[:200]!r}")

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      timeout: float = ACK_TIMEOUT) -> Msg:
        """Send a message and wait for its one reply (nats.errors.TimeoutError
        without one in time, nats.errors.NoRespondersError when nobody listens)."""
        if self._subscription is None:
            await self._start()
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = (future, loop.time() + timeout)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            reply = await future
        finally:
            self._pending.pop(token, None)
            if not self._pending and self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
        if not reply.data and reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return reply


def publisher_for(js: JetStreamContext) -> Publisher:
    """The publisher of a JetStream context's connection (one per connection,
    kept on the connection so that it lives and goes with it)."""
    nc = connection_of(js)
    publisher = getattr(nc, "_orch_publisher", None)
    if publisher is None:
        publisher = Publisher(nc)
        nc._orch_publisher = publisher  # type: ignore[attr-defined]
    return publisher
