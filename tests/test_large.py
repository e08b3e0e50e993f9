"""A solution of 100,000 instances can be read and waited on from the shell:
`orch solution get` reads it over the ReadSolution stream (one gRPC message
is limited to 8 MiB, some 50,000 instances) and `--wait` follows a task on it
with summaries, never the whole solution. The records are stored directly
(deploying 100,000 instances would take minutes here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import nats
import pytest

import models
from orchestration.model.planner import cluster_digest
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, running_suite

SIZE = 100_000


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("large")) as running:
        yield running


def _store_big_solution(suite: Suite) -> None:
    """Solution big/app: one cluster of SIZE active instances, as a finished deploy leaves it."""
    solution = pb.Solution(name="app", architecture="app", version="V1", target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE)
    element = solution.elements.add(name="e0", component="c0", target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE)
    cluster = element.clusters.add(version="V1", target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE, min=1, max=SIZE, size=SIZE,
                                   configuration="c0 e0 V1", controller="sim", parameters={"orch_siblings": "ignore"})
    applied = cluster_digest(cluster)
    cluster.instances.extend(
        pb.Instance(uuid=f"{n:08d}-0000-4000-8000-000000000000", target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE,
                    endpoint=f"sim://{n}", sequence=3, applied=applied)
        for n in range(SIZE)
    )
    connection = json.loads((suite.home / "connection.json").read_text())

    async def store() -> None:
        nc = await nats.connect(connection["nats_url"])
        try:
            repo = Repository(nc.jetstream(), Subjects(connection["subject_prefix"]))
            await repo.open()
            await repo.solutions.store_solution("big", solution)
        finally:
            await nc.close()

    asyncio.run(store())


def test_a_solution_of_100000_instances_is_read_and_waited_on(suite: Suite) -> None:
    suite.apply(models.flat("big", 1))
    _store_big_solution(suite)

    read = json.loads(suite.ok("solution", "get", "big", "app", "-o", "json", timeout=300))
    instances = read["Elements"]["e0"]["Clusters"]["V1"]["Instances"]
    assert len(instances) == SIZE and {i["State"] for i in instances.values()} == {"active"}

    summary = suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain="big", solution="app"),
                                                metadata=suite.metadata, timeout=60)
    assert [(c.element, c.instances, c.at_target) for c in summary.clusters] == [("e0", SIZE, SIZE)]

    waited = suite.orch("solution", "set", "big", "app", "--state", "active", "--wait", timeout=300)
    assert waited.returncode == 0, waited.stderr
    assert f"e0 {SIZE}/{SIZE}" in waited.stderr and "completed" in waited.stderr
