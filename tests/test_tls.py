"""TLS on the gateway (and mutual TLS), with certificates the test makes."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from certs import make_pki

from gateway.server import Gateway, GatewaySettings
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration_sdk.runtime.tls import TlsConfig, channel
from orchestration_sdk.runtime.wire import bearer_metadata

TOKEN = "tls-token"


async def list_domains(address: str, tls: TlsConfig | None) -> list[str]:
    async with channel(address, tls) as ch:
        reply = await gw_grpc.AdministrationServiceStub(ch).ListDomains(
            gw.ListDomainsRequest(), metadata=bearer_metadata(TOKEN), timeout=5)
        return list(reply.domains)


@pytest.mark.parametrize("mutual", [False, True])
async def test_gateway_over_tls(nats_server, subjects: Subjects, tmp_path: Path, mutual: bool) -> None:
    ca, server, client = make_pki(tmp_path)
    tls = TlsConfig(server.cert, server.key, ca, client_auth=mutual)
    gateway = Gateway(GatewaySettings(address="127.0.0.1:0", nats_url=nats_server.url, prefix=subjects.prefix,
                                      token=TOKEN, tls=tls))
    await gateway.start()
    address = f"127.0.0.1:{gateway.port}"
    try:
        trusted = TlsConfig(client.cert, client.key, ca) if mutual else TlsConfig(ca=ca)
        assert await list_domains(address, trusted) == []
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await list_domains(address, None)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await list_domains(address, TlsConfig(ca=client.cert))  # not the CA that signed the server
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
        if mutual:
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await list_domains(address, TlsConfig(ca=ca))
            assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gateway.stop()
