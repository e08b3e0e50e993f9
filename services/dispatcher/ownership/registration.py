"""DispatcherService: controllers register (and renew) here; registrations
go to the KV bucket so that every dispatcher replica sees every controller."""

from __future__ import annotations

import logging

import grpc

from orchestration.model.names import check_name
from orchestration.store.leases import Registrations
from orchestration.store.leases import now_ms
from orchestration.v1 import dispatcher_pb2 as dpb
from orchestration.v1 import dispatcher_pb2_grpc as dpb_grpc
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import InvalidArgument

log = logging.getLogger("dispatcher.ownership.registration")

REGISTRATION_SECONDS = 15


class RegistrationServicer(dpb_grpc.DispatcherServiceServicer):
    def __init__(self, registrations: Registrations) -> None:
        self.registrations = registrations

    async def RegisterController(
        self, request: dpb.RegisterControllerRequest, context: grpc.aio.ServicerContext
    ) -> dpb.RegisterControllerResponse:
        check_name(request.name, "name")
        check_name(request.replica, "replica")
        if request.version:
            check_name(request.version, "version")
        for alias in request.aliases:
            check_name(alias, "aliases")
        if not request.address or ":" not in request.address:
            raise InvalidArgument(f"address: {request.address!r} is not host:port of the controller's gRPC server")
        record = rpb.ControllerRegistration(
            name=request.name, version=request.version, aliases=request.aliases, replica=request.replica,
            address=request.address, expires_unix_ms=now_ms() + REGISTRATION_SECONDS * 1000,
        )
        # A heartbeat: the latest registration of a replica is the truth.
        await self.registrations.put(record)
        return dpb.RegisterControllerResponse(lease_seconds=REGISTRATION_SECONDS)

    async def UnregisterController(
        self, request: dpb.UnregisterControllerRequest, context: grpc.aio.ServicerContext
    ) -> dpb.UnregisterControllerResponse:
        check_name(request.name, "name")
        check_name(request.replica, "replica")
        await self.registrations.remove(request.name, request.replica)
        log.info("controller %s replica %s unregistered", request.name, request.replica)
        return dpb.UnregisterControllerResponse()
