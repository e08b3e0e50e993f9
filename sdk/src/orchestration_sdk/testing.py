"""Helpers for testing a controller against real gRPC on loopback: serve it
in-process, and a DispatcherService peer that records registrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from orchestration_sdk.controller import Controller
from orchestration_sdk.runtime.credentials import DigestGate, secret_sha256
from orchestration_sdk.runtime.grpcserver import Server
from orchestration_sdk.runtime.wire import bearer_metadata
from orchestration_sdk.servicer import DEFAULT_CONCURRENCY, SERVICE_NAME, ControllerServicer
from orchestration_sdk.v1 import controller_pb2_grpc as pb_grpc
from orchestration_sdk.v1 import dispatcher_pb2 as dpb
from orchestration_sdk.v1 import dispatcher_pb2_grpc as dpb_grpc


@dataclass
class Served:
    """A controller served on loopback, and a stub that authenticates."""

    address: str
    stub: pb_grpc.ControllerServiceStub
    servicer: ControllerServicer
    metadata: tuple[tuple[str, str], ...]


@asynccontextmanager
async def serve_in_process(
    controller: Controller, credential: str, *, concurrency: int = DEFAULT_CONCURRENCY
) -> AsyncIterator[Served]:
    """Serve `controller` on 127.0.0.1 (a free port) for the duration of the block.

    Example::

        async with serve_in_process(MyController(), "secret") as served:
            reply = await served.stub.Status(request, metadata=served.metadata)
    """
    await controller.open()
    servicer = ControllerServicer(controller, concurrency=concurrency)
    server = Server("127.0.0.1:0", DigestGate(secret_sha256(credential)), [SERVICE_NAME])
    pb_grpc.add_ControllerServiceServicer_to_server(servicer, server.grpc)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Served(address, pb_grpc.ControllerServiceStub(channel), servicer, bearer_metadata(credential))
    finally:
        await channel.close()
        await server.stop(grace=0.5)
        await servicer.drain(timeout=1.0)
        await controller.close()


@dataclass
class RecordingDispatcher(dpb_grpc.DispatcherServiceServicer):
    """A DispatcherService that grants `lease_seconds` and records every call."""

    lease_seconds: int = 30
    registrations: list[tuple[float, dpb.RegisterControllerRequest]] = field(default_factory=list)
    unregistrations: list[dpb.UnregisterControllerRequest] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def RegisterController(
        self, request: dpb.RegisterControllerRequest, context: grpc.aio.ServicerContext
    ) -> dpb.RegisterControllerResponse:
        self.registrations.append((time.monotonic(), request))
        self.changed.set()
        return dpb.RegisterControllerResponse(lease_seconds=self.lease_seconds)

    async def UnregisterController(
        self, request: dpb.UnregisterControllerRequest, context: grpc.aio.ServicerContext
    ) -> dpb.UnregisterControllerResponse:
        self.unregistrations.append(request)
        self.changed.set()
        return dpb.UnregisterControllerResponse()

    async def wait_for(self, registrations: int = 1, unregistrations: int = 0, timeout: float = 5.0) -> None:
        """Wait until at least this many calls arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout):
            while len(self.registrations) < registrations or len(self.unregistrations) < unregistrations:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def recording_dispatcher(
    credential: str, lease_seconds: int = 30, address: str = "127.0.0.1:0"
) -> AsyncIterator[tuple[str, RecordingDispatcher]]:
    """A RecordingDispatcher served on real gRPC, requiring `credential`."""
    dispatcher = RecordingDispatcher(lease_seconds=lease_seconds)
    name = dpb.DESCRIPTOR.services_by_name["DispatcherService"].full_name
    server = Server(address, credential, [name])
    dpb_grpc.add_DispatcherServiceServicer_to_server(dispatcher, server.grpc)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}", dispatcher
    finally:
        await server.stop(grace=0.2)
