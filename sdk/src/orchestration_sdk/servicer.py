"""ControllerService over a `Controller`: the book's unary API, batch Status,
and the batched Execute stream the dispatcher drives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from orchestration_sdk.controller import Controller, InstanceState
from orchestration_sdk.convert import TRANSITION_NAMES, Views, instance_ref, instance_status, operation_context
from orchestration_sdk.dedup import DEFAULT_CACHE_SIZE, OperationDeduplicator
from orchestration_sdk.errors import Permanent, Retryable
from orchestration_sdk.executor import MESSAGE_LIMIT, execute, permanent
from orchestration_sdk.runtime.batching import let_others_join
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import FailedPrecondition, InvalidArgument, Unavailable
from orchestration_sdk.v1 import controller_pb2 as pb
from orchestration_sdk.v1 import controller_pb2_grpc as pb_grpc
from orchestration_sdk.v1.model_pb2 import Transition

DEFAULT_CONCURRENCY = 1024
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ControllerService"].full_name


@dataclass
class _Stream:
    """Results of one Execute stream waiting for its single sender."""

    results: list[pb.OperationResult] = field(default_factory=list)
    inflight: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class ControllerServicer(pb_grpc.ControllerServiceServicer):
    """Serves one `Controller` over gRPC.

    At most `concurrency` operations run at once (across all streams and unary
    calls); Execute stops reading its stream while all slots are taken, which
    is the back-pressure the dispatcher sees. Each operation id runs once per
    process (see `OperationDeduplicator`).

    Example::

        server = Server("127.0.0.1:0", credential, [SERVICE_NAME])
        add_ControllerServiceServicer_to_server(ControllerServicer(MyController()), server.grpc)
    """

    def __init__(
        self,
        controller: Controller,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        cache_size: int = DEFAULT_CACHE_SIZE,
        logger: logging.Logger | None = None,
    ) -> None:
        self.controller = controller
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._dedup = OperationDeduplicator(cache_size)
        self._log = logger or logging.getLogger(f"controllers.{type(controller).__name__}")
        # Runs outlive the stream that started them: their results land in the
        # cache, where a re-delivery on the next stream finds them.
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, operation: pb.Operation, views: Views | None = None) -> pb.OperationResult:
        """The result of one operation, through de-duplication and the executor
        (`views`: the member lists of its stream message, see Views)."""
        if not operation.operation_id:
            return permanent("", "operation_id is required")
        if not operation.instance.uuid:
            return permanent(operation.operation_id, "instance.uuid is required")
        return await self._dedup.run(operation, lambda: execute(self.controller, operation, self._log, views))

    async def _unary(self, operation: pb.Operation, expected: Transition) -> pb.OperationResult:
        if operation.transition != expected:
            given = TRANSITION_NAMES.get(operation.transition, "unspecified")
            raise InvalidArgument(
                f"{TRANSITION_NAMES[expected]} called with an operation whose transition is {given}"
            )
        if not operation.operation_id:
            raise InvalidArgument("operation.operation_id is required (any id unique to this step)")
        if not operation.instance.uuid:
            raise InvalidArgument("operation.instance.uuid is required")
        async with self._slots:
            result = await self.run(operation)
        await self.controller.sync()
        return result

    async def Create(self, request: pb.CreateRequest, context: grpc.aio.ServicerContext) -> pb.CreateResponse:
        return pb.CreateResponse(result=await self._unary(request.operation, Transition.TRANSITION_CREATE))

    async def Configure(self, request: pb.ConfigureRequest, context: grpc.aio.ServicerContext) -> pb.ConfigureResponse:
        return pb.ConfigureResponse(result=await self._unary(request.operation, Transition.TRANSITION_CONFIGURE))

    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartResponse:
        return pb.StartResponse(result=await self._unary(request.operation, Transition.TRANSITION_START))

    async def Reconfigure(
        self, request: pb.ReconfigureRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconfigureResponse:
        return pb.ReconfigureResponse(result=await self._unary(request.operation, Transition.TRANSITION_RECONFIGURE))

    async def Stop(self, request: pb.StopRequest, context: grpc.aio.ServicerContext) -> pb.StopResponse:
        return pb.StopResponse(result=await self._unary(request.operation, Transition.TRANSITION_STOP))

    async def Destroy(self, request: pb.DestroyRequest, context: grpc.aio.ServicerContext) -> pb.DestroyResponse:
        return pb.DestroyResponse(result=await self._unary(request.operation, Transition.TRANSITION_DESTROY))

    async def Reset(self, request: pb.ResetRequest, context: grpc.aio.ServicerContext) -> pb.ResetResponse:
        return pb.ResetResponse(result=await self._unary(request.operation, Transition.TRANSITION_RESET))

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        """All statuses in one answer; fails as a whole rather than report a
        guess, since "unknown" would make the monitor recreate the instance."""
        async def one(ref: pb.InstanceReference) -> InstanceState:
            try:
                return await self.controller.status(instance_ref(ref))
            except Permanent as err:
                raise FailedPrecondition(f"status of instance {ref.uuid}: {err.message}") from err
            except Exception as err:  # noqa: BLE001 - reported as a status code
                raise Unavailable(f"status of instance {ref.uuid} failed: {type(err).__name__}: {err}") from err

        states = await gather_bounded((one(ref) for ref in request.instances), self._concurrency)
        return pb.StatusResponse(
            statuses=[instance_status(ref.uuid, s) for ref, s in zip(request.instances, states, strict=True)]
        )

    async def Preview(self, request: pb.PreviewRequest, context: grpc.aio.ServicerContext) -> pb.PreviewResponse:
        """What one operation would change (the controller's dry run), within its deadline."""
        operation = request.operation
        if operation.transition not in TRANSITION_NAMES:
            raise InvalidArgument("operation.transition is required: the operation to preview")
        if not operation.instance.uuid:
            raise InvalidArgument("operation.instance.uuid is required")
        ctx = operation_context(operation, self._log)
        try:
            async with self._slots, asyncio.timeout(max(0.0, ctx.deadline - time.time())):
                text = await self.controller.preview(ctx)
        except TimeoutError as err:
            raise Unavailable(f"preview of {ctx.transition} {ctx.uuid} ran past its deadline") from err
        except Retryable as err:
            raise Unavailable(f"preview of {ctx.transition} {ctx.uuid}: {err.message}") from err
        except Permanent as err:
            raise FailedPrecondition(f"preview of {ctx.transition} {ctx.uuid}: {err.message}") from err
        except Exception as err:  # noqa: BLE001 - reported as a status code
            raise Unavailable(f"preview of {ctx.transition} {ctx.uuid} failed: {type(err).__name__}: {err}") from err
        return pb.PreviewResponse(text=text[:MESSAGE_LIMIT * 8])

    async def Execute(
        self, request_iterator: AsyncIterator[pb.ExecuteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteResponse]:
        """Operations of every incoming batch run concurrently; one sender
        sends everything finished since its last message in one response."""
        stream = _Stream()
        reader = asyncio.create_task(self._read(request_iterator, stream))
        reader.add_done_callback(lambda _: stream.ready.set())
        try:
            while True:
                if stream.results:
                    await let_others_join(len(stream.results), stream.inflight)
                    results, stream.results = stream.results, []
                    await self.controller.sync()  # what they changed is durable before they are reported
                    yield pb.ExecuteResponse(results=results)
                    continue
                if reader.done():
                    error = reader.exception()
                    if error is not None:
                        raise error
                    if not stream.inflight:
                        return
                stream.ready.clear()
                await stream.ready.wait()
        finally:
            reader.cancel()

    async def _read(self, requests: AsyncIterator[pb.ExecuteRequest], stream: _Stream) -> None:
        async for request in requests:
            # One copy of each member list per message, shared by its operations.
            views = {m.key: tuple(m.endpoints) for m in request.members}
            for operation in request.operations:
                await self._slots.acquire()
                stream.inflight += 1
                task = asyncio.create_task(self._execute_one(operation, stream, views))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _execute_one(self, operation: pb.Operation, stream: _Stream, views: Views) -> None:
        try:
            result = await self.run(operation, views)
        except Exception as err:  # noqa: BLE001 - the executor should not raise; never lose an answer
            self._log.exception("operation %s failed in the SDK", operation.operation_id)
            result = permanent(operation.operation_id, f"controller SDK error: {type(err).__name__}: {err}")
        finally:
            self._slots.release()
            stream.inflight -= 1
            stream.ready.set()
        stream.results.append(result)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` s for running operations, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
