"""One trace per request across every service, exported over OTLP to an
in-process receiver (opentelemetry-proto's TraceService on real gRPC)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from otlp import ReceivedSpan, Receiver, receiving
from suite import DATA, Suite, running_suite


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Suite]:
    env = receiver.environment
    with running_suite(tmp_path_factory.mktemp("tracing"), env=env) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running


def wait_for_spans(receiver: Receiver, trace_id: str, predicate, timeout: float = 15) -> list[ReceivedSpan]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = receiver.of_trace(trace_id)
        if predicate(spans):
            return spans
        time.sleep(0.2)
    return receiver.of_trace(trace_id)


def test_a_deploy_is_one_trace_from_gateway_to_every_controller_operation(suite: Suite, receiver: Receiver) -> None:
    task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--wait", "-o", "json"))["task"]
    trace_id = suite.ok("task", "trace", task).strip()
    assert len(trace_id) == 32
    solution = suite.solution("demo", "app")
    instances = {i.uuid for e in solution.elements for c in e.clusters for i in c.instances}

    def complete(spans: list[ReceivedSpan]) -> bool:
        done = {s.attributes.get("orch.instance") for s in spans if s.service == "Internal"}
        return instances <= done and any(s.name.startswith("solution ") for s in spans)

    spans = wait_for_spans(receiver, trace_id, complete)
    services = {s.service for s in spans}
    assert {"gateway", "dispatcher", "Internal"} <= services, services
    by_id = {s.span_id: s for s in spans}
    gateway_roots = {s.span_id for s in spans if s.service == "gateway"}
    for uuid in instances:
        operations = [s for s in spans if s.service == "Internal" and s.attributes.get("orch.instance") == uuid]
        names = {s.name.split()[0] for s in operations}
        assert {"create", "configure", "start"} <= names, (uuid, names)
        for span in operations:
            chain = span
            while chain.parent_id and chain.parent_id in by_id and chain.span_id not in gateway_roots:
                chain = by_id[chain.parent_id]
            assert chain.span_id in gateway_roots, f"{span.name} does not lead back to the gateway"


def test_a_failing_operation_span_is_an_error(suite: Suite, receiver: Receiver) -> None:
    broken = (DATA / "demo2.yaml").read_text()
    start = broken.index("    Architectures:")
    end = broken.index("    Solutions:")
    architecture = broken[start:end].replace("app - V0.0.0", "app - V0.0.1").replace("Version: V0.0.0", "Version: V0.0.1", 1)
    architecture = architecture.replace("""                  'cidr':         '10.0.1.0/24'
                  'gateway':      '10.0.1.1'
""", """                  'cidr':         '10.0.1.0/24'
                  'gateway':      '10.0.1.1'
                  'sim_fail':     'reconfigure,start'
""", 1)
    header = "Name: demo\n"
    suite.apply(header + "\n".join(line[4:] for line in architecture.splitlines()))
    result = suite.orch("solution", "deploy", "demo", "app", "V0.0.1", "--solution", "broken", "--wait", "-o", "json")
    assert result.returncode == 1
    task = json.loads(result.stdout)["task"]
    trace_id = suite.ok("task", "trace", task).strip()
    spans = wait_for_spans(receiver, trace_id, lambda found: any(s.error and s.service == "Internal" for s in found))
    failed = [s for s in spans if s.error]
    assert any(s.service == "Internal" and s.name.startswith("start ") for s in failed), [s.name for s in failed]
    assert any(s.service == "dispatcher" and s.name.startswith("solution ") for s in failed)


def test_no_exporter_without_an_endpoint(receiver: Receiver) -> None:
    probe = """
import os, sys, threading
from orchestration_sdk.runtime import telemetry
telemetry.setup("probe")
with telemetry.tracer("probe").start_as_current_span("x"):
    pass
print(sorted(t.name for t in threading.enumerate()), "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in sys.modules)
"""
    env_without = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env_without, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "['MainThread'] False"
    # An endpoint that answers: one that does not would hold the probe's exit for 8 s of export retries.
    exporting = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                               env={**env_without, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}"})
    assert exporting.returncode == 0, exporting.stderr
    assert exporting.stdout.strip().endswith("True") and "MainThread" in exporting.stdout
    assert exporting.stdout.count("'") > 2, "an exporter thread runs when an endpoint is set"
    assert any(s.service == "probe" and s.name == "x" for s in receiver.spans), "and it exports there"


@pytest.mark.parametrize("value", [
    "", "garbage", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
])
def test_a_malformed_traceparent_names_no_context(value: str) -> None:
    from orchestration_sdk.runtime import telemetry

    assert telemetry.context_of(value) is None


def test_a_traceparent_names_its_remote_parent_as_the_propagator_reads_it() -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from orchestration_sdk.runtime import telemetry

    for value in ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"):
        ours = trace.get_current_span(telemetry.context_of(value)).get_span_context()
        theirs = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": value})).get_span_context()
        assert (ours.trace_id, ours.span_id, ours.trace_flags, ours.is_remote) == \
            (theirs.trace_id, theirs.span_id, theirs.trace_flags, theirs.is_remote)


def test_a_spans_traceparent_is_what_the_propagator_writes() -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from orchestration_sdk.runtime import telemetry

    for flags in (0, 1):
        span = NonRecordingSpan(SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, is_remote=False,
                                            trace_flags=TraceFlags(flags)))
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        assert telemetry.traceparent(span) == carrier["traceparent"]
    assert telemetry.traceparent(trace.INVALID_SPAN) == ""
