"""Finding and calling the gateway from the CLI."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.backoff import Backoff, Jitter
from orchestration_sdk.runtime.tls import TlsConfig, channel
from orchestration_sdk.runtime.wire import MAX_MESSAGE_BYTES, bearer_metadata

T = TypeVar("T")
# Sends of one submitted request when the gateway does not answer, and the waits between them.
SUBMIT_ATTEMPTS = 4
SUBMIT_BACKOFF = Backoff(first=0.5, maximum=4.0, jitter=Jitter.HALF)
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Gateway:
    """Stubs of every gateway service on one channel."""

    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]

    @property
    def admin(self) -> gw_grpc.AdministrationServiceStub:
        return gw_grpc.AdministrationServiceStub(self.channel)

    @property
    def catalog(self) -> gw_grpc.CatalogServiceStub:
        return gw_grpc.CatalogServiceStub(self.channel)

    @property
    def architectures(self) -> gw_grpc.ArchitectureServiceStub:
        return gw_grpc.ArchitectureServiceStub(self.channel)

    @property
    def solutions(self) -> gw_grpc.SolutionServiceStub:
        return gw_grpc.SolutionServiceStub(self.channel)

    @property
    def access(self) -> gw_grpc.AccessServiceStub:
        return gw_grpc.AccessServiceStub(self.channel)

    @property
    def automation(self) -> gw_grpc.AutomationServiceStub:
        return gw_grpc.AutomationServiceStub(self.channel)

    def call(self, method: Callable[..., T], request: Any, timeout: float = 30.0) -> T:
        """Call one unary RPC with the token."""
        return method(request, metadata=self.metadata, timeout=timeout)

    def read_solution(self, domain: str, name: str, timeout: float = 300.0) -> pb.Solution:
        """A whole solution of any size, read over the ReadSolution stream."""
        responses = self.solutions.ReadSolution(gw.ReadSolutionRequest(domain=domain, solution=name),
                                                metadata=self.metadata, timeout=timeout)
        solution = pb.Solution()
        clusters: dict[tuple[str, str], pb.Cluster] = {}
        for response in responses:
            if response.HasField("solution"):
                solution.CopyFrom(response.solution)
                clusters = {(e.name, c.version): c for e in solution.elements for c in e.clusters}
            elif (response.element, response.cluster) in clusters:
                clusters[(response.element, response.cluster)].instances.extend(response.instances)
        return solution

    def submit(self, method: Callable[..., T], request: Any, timeout: float = 30.0) -> T:
        """Call an RPC that submits a request, named with a fresh request id:
        when the gateway could not answer (UNAVAILABLE, a deadline), the very
        same request is sent again, which is safe (the same id returns the
        same task instead of a second one or a "busy" refusal)."""
        if not request.request_id:
            request.request_id = str(uuid.uuid4())
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return method(request, metadata=self.metadata, timeout=timeout)
            except grpc.RpcError as err:
                if attempt == SUBMIT_ATTEMPTS or err.code() not in RETRIED:  # type: ignore[attr-defined]
                    raise
            time.sleep(SUBMIT_BACKOFF.delay(attempt))
        raise AssertionError("unreachable")


def connect(address: str, token: str, tls: TlsConfig) -> Gateway:
    """Stubs of the gateway at `address`, calling with `token`."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    return Gateway(channel(address, tls, options, aio=False), bearer_metadata(token))
