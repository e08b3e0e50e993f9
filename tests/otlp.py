"""An in-process OTLP trace receiver (opentelemetry-proto's TraceService on
real gRPC) for the tests that follow spans across processes: every span
exported to it, and the raw export requests (to grep for secrets)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    error: bool
    attributes: dict[str, str]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        self.port = 0

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        with self.lock:
            self.raw.append(request.SerializeToString())
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(ReceivedSpan(
                            service, span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                            span.status.code == 2, {a.key: a.value.string_value for a in span.attributes},
                        ))
        return trace_service_pb2.ExportTraceServiceResponse()

    def all(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to export its spans here, at once."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}", "OTEL_BSP_SCHEDULE_DELAY": "100"}


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1 until the block ends."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    found = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    found.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield found
    finally:
        server.stop(0)
