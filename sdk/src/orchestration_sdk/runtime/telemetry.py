"""Tracing for every service: one OpenTelemetry trace per request, carried
as W3C ``traceparent`` in gRPC metadata, NATS headers and operations.

Spans are recorded and exported only when OTEL_EXPORTER_OTLP_ENDPOINT (or
the traces-specific variable) is set. Without it no exporter, thread or
connection exists, and the hot paths make no spans of their own (see
hot_span and child_span): trace and span ids still reach logs, task records
and every traceparent sent on."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_provider: TracerProvider | None = None
_recording = False  # spans are recorded (an exporter is configured)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def exporting() -> bool:
    """True when an OTLP endpoint is configured."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def setup(service: str) -> None:
    """Install the tracer provider of this process (once, at start)."""
    global _provider, _recording
    _recording = exporting()
    # Without an exporter nobody reads the spans: they keep their ids (for
    # logs, task records and the traceparent sent on) but record nothing,
    # which makes them several times cheaper in the dispatcher's hot path.
    sampler = ParentBased(ALWAYS_ON) if exporting() else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    if exporting():
        # Imported only when needed: the exporter pulls in its gRPC client
        # (the engine always has it; the SDK installed alone with its extra `otlp`).
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as err:
            raise RuntimeError(f"{' or '.join(ENDPOINT_VARIABLES)} is set but the OTLP exporter is not installed: "
                               "pip install 'orchestration-controller-sdk[otlp]'") from err
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown() -> None:
    """Flush and stop the exporter (at clean exit)."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def traceparent(span: Span | None = None) -> str:
    """The W3C traceparent of a span (the current one by default; "" when it has no valid ids)."""
    context = (span if span is not None else trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def context_of(traceparent_value: str) -> otel_context.Context | None:
    """The context a traceparent names (None when empty or malformed).

    Parsed here rather than by the propagator (a regular expression and a
    carrier per call): every controller operation carries one."""
    parts = traceparent_value.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))
    return trace.set_span_in_context(NonRecordingSpan(context)) if context.is_valid else None


def hot_span(tracer: trace.Tracer, name: str, context: otel_context.Context | None, kind: SpanKind,
             attributes: dict[str, str] | None = None) -> AbstractContextManager[Span]:
    """The current span for one unit of hot-path work (a controller operation,
    on both sides): a new child span where spans are recorded, else the
    parent itself, whose ids reach the logs and the next hop just as well,
    at a fraction of the cost."""
    parent = trace.get_current_span(context)
    if _worth_a_span(parent):
        return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)
    return trace.use_span(parent, end_on_exit=False)


def child_span(tracer: trace.Tracer, name: str, context: otel_context.Context | None,
               attributes: dict[str, str] | None = None) -> Span:
    """A started span for a long-lived unit of work (a task), or, under the
    same rule as hot_span, its parent standing in for it (ending it then does nothing)."""
    parent = trace.get_current_span(context)
    if _worth_a_span(parent):
        return tracer.start_span(name, context=context, attributes=attributes)
    return parent


def _worth_a_span(parent: Span) -> bool:
    """A new span is made where spans are recorded (unless the parent was
    sampled out), and wherever there are no ids to reuse yet."""
    context = parent.get_span_context()
    if not context.is_valid:
        return True
    return _recording and bool(context.trace_flags.sampled)


def trace_id_of(traceparent_value: str) -> str:
    """The trace id (32 hex digits) of a traceparent, or ""."""
    parts = traceparent_value.split("-")
    return parts[1] if len(parts) == 4 else ""


def fail(span: Span, message: str) -> None:
    """Mark a span as failed with a message."""
    span.set_status(Status(StatusCode.ERROR, message))
