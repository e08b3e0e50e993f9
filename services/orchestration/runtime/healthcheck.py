"""python -m orchestration.runtime.healthcheck [HOST:PORT]: exit 0 when the gRPC server
there reports SERVING (grpc.health.v1), 1 otherwise.

The container image's HEALTHCHECK and the Helm chart's exec probes (when the
gateway serves TLS, which Kubernetes' own ``grpc:`` probes cannot speak) run
it. The address defaults to ``$ORCH_HEALTH_ADDR``, else ``127.0.0.1:50051``
(the gateway); ``none`` checks nothing and succeeds, for a process without a
gRPC server (the monitor).

Options: ``--service NAME`` (default "", the server as a whole),
``--timeout SECONDS`` (default 3), ``--tls`` with optional ``--ca FILE``,
``--cert FILE --key FILE`` (mutual TLS) and ``--server-name NAME`` (the name
the certificate carries when it is not the host dialled). One line on stderr
says why a check failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def check(address: str, service: str = "", timeout: float = 3.0, tls: bool = False, ca: str | None = None,
          cert: str | None = None, key: str | None = None, server_name: str | None = None) -> str:
    """The serving status name of `service` at `address` (e.g. "SERVING")."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if tls:
        credentials = grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.runtime.healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("address", nargs="?", default=os.environ.get("ORCH_HEALTH_ADDR") or DEFAULT_ADDRESS)
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--server-name")
    args = parser.parse_args(argv)
    if args.address == "none":
        return 0
    try:
        status = check(args.address, args.service, args.timeout, args.tls, args.ca, args.cert, args.key, args.server_name)
    except grpc.RpcError as err:
        print(f"{args.address}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{args.address}: {err}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"{args.address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
