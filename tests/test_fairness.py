"""Fairness between domains: the order the dispatcher's link sends queued
operations in (the domains take turns), the per-domain quota of operations
out at once, and, end to end, a small deploy of one domain during another
domain's storm."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dispatcher.controllers import DomainQuota, Link, fair_order
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import records_pb2 as rpb


def op(domain: str, n: int) -> tuple[cpb.Operation, dict[str, tuple[str, ...]]]:
    return cpb.Operation(operation_id=f"{domain}{n}", instance=cpb.InstanceReference(domain=domain, uuid=f"{domain}{n}")), {}


def ids(queued: list[tuple[cpb.Operation, dict[str, tuple[str, ...]]]]) -> list[str]:
    return [o.operation_id for o, _ in queued]


def test_one_domain_keeps_its_order() -> None:
    queued = [op("a", i) for i in range(5)]
    assert fair_order(queued) is queued


def test_domains_take_turns_each_in_its_own_order() -> None:
    queued = [op("a", i) for i in range(1000)] + [op("b", i) for i in range(3)] + [op("c", 0)]
    ordered = ids(fair_order(queued))
    # The few of b and c come in the first turns, not behind a's thousand.
    assert ordered[:8] == ["a0", "b0", "c0", "a1", "b1", "a2", "b2", "a3"]
    assert [i for i in ordered if i.startswith("a")] == [f"a{i}" for i in range(1000)]
    assert sorted(ordered) == sorted(ids(queued))


def test_quota_bounds_a_domain_and_leaves_the_others_alone() -> None:
    async def scenario() -> None:
        quota = DomainQuota(2)
        out = {"a": 0, "b": 0}
        peak = {"a": 0, "b": 0}
        release = asyncio.Event()

        async def one(domain: str) -> None:
            async with quota.held(domain):
                out[domain] += 1
                peak[domain] = max(peak[domain], out[domain])
                await release.wait()
                out[domain] -= 1

        tasks = [asyncio.create_task(one("a")) for _ in range(10)]
        await asyncio.sleep(0)
        assert quota.waiting("a") and not quota.waiting("b")
        b = asyncio.create_task(one("b"))
        await asyncio.sleep(0)
        assert out == {"a": 2, "b": 1}  # b got a place at once, a waits with 8 more
        release.set()
        await asyncio.gather(*tasks, b)
        assert peak == {"a": 2, "b": 1}

    asyncio.run(scenario())


def test_the_priority_lane_goes_first_and_never_waits_for_its_domains_quota() -> None:
    """A rollback's operations (urgent) take no place of their domain's
    quota and go into the next message ahead of every queued operation,
    other domains' turns included."""
    async def scenario() -> None:
        quota = DomainQuota(1)
        async with quota.held("a"):
            assert quota.waiting("a")
            async with asyncio.timeout(1), quota.held("a", urgent=True):
                pass  # no wait behind the storm's place

        link = Link(rpb.ControllerRegistration(replica="r1", name="sim"), "credential")
        for i in range(500):
            link.submit(*op("a", i))
        link.submit(*op("b", 0))
        link.submit(*op("a", 900), urgent=True)
        first = await anext(link._requests())
        assert [o.operation_id for o in first.operations][:4] == ["a900", "a0", "b0", "a1"]
        assert len(first.operations) == 500  # MAX_BATCH_OPERATIONS: the rest in the next message

    asyncio.run(scenario())


def test_no_quota_means_no_limit() -> None:
    async def scenario() -> None:
        quota = DomainQuota(0)
        async with quota.held("a"), quota.held("a"), quota.held("a"):
            assert not quota.waiting("a")

    asyncio.run(scenario())


def test_a_domain_waits_in_the_order_it_came() -> None:
    async def scenario() -> None:
        quota = DomainQuota(1)
        order: list[int] = []

        async def one(n: int) -> None:
            async with quota.held("a"):
                order.append(n)
                await asyncio.sleep(0)

        await asyncio.gather(*(one(n) for n in range(5)))
        assert order == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


# ---- end to end -------------------------------------------------------------------

STORM = 5000


def test_a_small_deploy_is_not_held_up_by_another_domains_storm(tmp_path: Path) -> None:
    """Domain alpha deploys 5,000 instances; 1 s later beta deploys 10: beta's
    first operation starts within 0.5 s of its request (alone: about 10 ms)
    and beta completes while alpha still runs (on 2 shared cores). A rollback
    of another solution of alpha's, asked for during the storm, takes the
    priority lane: it does not queue behind the storm's thousands for its
    domain's quota."""
    from models import architecture_only, flat
    from suite import running_suite

    from orchestration.v1 import gateway_pb2 as gw
    from orchestration.v1 import model_pb2 as pb

    parameters: dict[str, object] = {"orch_siblings": "ignore"}

    def deploy(domain: str, architecture: str, solution: str) -> str:
        request = gw.DeploySolutionRequest(domain=domain, architecture=architecture, version="V1", solution=solution)
        return suite.solutions.DeploySolution(request, metadata=suite.metadata, timeout=60).task

    with running_suite(tmp_path) as suite:
        suite.apply(flat("alpha", 100, parameters=parameters, elements=STORM // 100, architecture="storm"))
        suite.apply(flat("beta", 10, parameters=parameters, architecture="quick"))
        suite.apply(architecture_only(flat("alpha", 10, parameters=parameters, architecture="small")))
        suite.ok("solution", "deploy", "alpha", "small", "V1", "--wait")
        suite.ok("cluster", "set", "alpha", "small", "e0", "V1", "--size", "4", "--wait")
        # Alone first (and the suite is up and its controllers registered after it).
        assert suite.wait_task("beta", deploy("beta", "quick", "quick"), timeout=60).status == pb.TASK_STATUS_COMPLETED
        time.sleep(0.5)
        storm = deploy("alpha", "storm", "storm")
        time.sleep(1.0)
        quick = deploy("beta", "quick", "quick2")
        accepted = time.time()
        assert suite.wait_task("beta", quick, timeout=60).status == pb.TASK_STATUS_COMPLETED
        took = time.time() - accepted
        asked = time.time()
        rollback = suite.ok("solution", "rollback", "alpha", "small", "--to", "1").strip()
        assert suite.wait_task("alpha", rollback, timeout=60).status == pb.TASK_STATUS_COMPLETED
        rolled_back = time.time() - asked
        storm_status = suite.task("alpha", storm).task.status
        deadline = time.monotonic() + 10
        while len(suite.ops("quick2")) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)  # the sim writes its op log in batches
        first = min(o["started"] for o in suite.ops("quick2")) - accepted
        assert first < 0.5, f"beta's first operation started {first:.2f} s after its request"
        while len([o for o in suite.ops("small") if o["started"] >= asked]) < 18 and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        first_back = min(o["started"] for o in suite.ops("small") if o["started"] >= asked) - asked
        assert first_back < 1.0, f"the rollback's first operation started {first_back:.2f} s after it was asked for"
        assert storm_status == pb.TASK_STATUS_EXECUTING, \
            f"alpha was over before beta and the rollback ({took:.2f} s, {rolled_back:.2f} s): too small a storm to tell"
        assert suite.wait_task("alpha", storm, timeout=120).status == pb.TASK_STATUS_COMPLETED
