"""Requests on the internal channel carry one typed change; a request stored
by a version before typed requests (a lease it left queued or running) is
read as the same change."""

from __future__ import annotations

import pytest

from orchestration.store.leases import read_lease, read_request
from orchestration.store.requests import new_request, root_task
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

pytestmark = pytest.mark.unit


def _legacy(kind: int, **fields: object) -> bytes:
    """A request as an earlier version wrote it: the common fields, and the
    change in the loose fields the contract now reserves."""
    common = rpb.Request(uuid="u", domain="d", solution="s", task="t", actor="alice").SerializeToString()
    return common + rpb.LegacyRequest(kind=kind, **fields).SerializeToString()  # type: ignore[arg-type]


def test_each_kind_of_change_is_one_field_of_the_request() -> None:
    changes = [rpb.Request.Deploy(architecture="app", version="V1", sizes={"web/V1": 3}),
               rpb.Request.SetCluster(element="web", cluster="V1", size=0, state=pb.STATE_INACTIVE),
               rpb.Request.SetInstance(element="web", cluster="V1", instance="i", state=pb.STATE_ACTIVE),
               rpb.Request.SetSolution(state=pb.STATE_INACTIVE), rpb.Request.Remove(), rpb.Request.Reconcile(),
               rpb.Request.Resume()]
    kinds = []
    for change in changes:
        request = new_request(change, "d", "s", "test", reason="because")
        kinds.append(request.WhichOneof("change"))
        assert getattr(request, kinds[-1]) == change
        assert read_request(request.SerializeToString()) == request
    assert kinds == ["deploy", "set_cluster", "set_instance", "set_solution", "remove", "reconcile", "resume"]
    cluster = new_request(changes[1], "d", "s", "test").set_cluster
    assert cluster.HasField("size") and cluster.size == 0  # a size of 0 is a size, not its absence


def test_the_root_task_of_a_deploy_names_its_version_and_other_changes_none() -> None:
    assert root_task(new_request(rpb.Request.Deploy(architecture="app", version="V2"), "d", "s", "t")).version == "V2"
    assert root_task(new_request(rpb.Request.Resume(), "d", "s", "t")).version == ""


@pytest.mark.parametrize("kind, fields, expected", [
    (1, {"architecture": "app", "version": "V1", "sizes": {"web/V1": 2}},
     rpb.Request(deploy=rpb.Request.Deploy(architecture="app", version="V1", sizes={"web/V1": 2}))),
    (2, {"element": "web", "cluster": "V1", "size": 0},
     rpb.Request(set_cluster=rpb.Request.SetCluster(element="web", cluster="V1", size=0))),
    (2, {"element": "web", "cluster": "V1", "state": pb.STATE_INACTIVE},
     rpb.Request(set_cluster=rpb.Request.SetCluster(element="web", cluster="V1", state=pb.STATE_INACTIVE))),
    (3, {"element": "web", "cluster": "V1", "instance": "i", "state": pb.STATE_ACTIVE},
     rpb.Request(set_instance=rpb.Request.SetInstance(element="web", cluster="V1", instance="i", state=pb.STATE_ACTIVE))),
    (4, {}, rpb.Request(remove=rpb.Request.Remove())),
    (5, {}, rpb.Request(reconcile=rpb.Request.Reconcile())),
    (6, {"state": pb.STATE_INACTIVE}, rpb.Request(set_solution=rpb.Request.SetSolution(state=pb.STATE_INACTIVE))),
    (7, {}, rpb.Request(resume=rpb.Request.Resume())),
])
def test_a_request_stored_before_typed_requests_is_read_as_the_same_change(
        kind: int, fields: dict[str, object], expected: rpb.Request) -> None:
    expected.MergeFrom(rpb.Request(uuid="u", domain="d", solution="s", task="t", actor="alice"))
    assert read_request(_legacy(kind, **fields)) == expected
    lease = rpb.SolutionLease(task="t", owner="replica-1").SerializeToString()
    lease += rpb.SolutionLease(request=rpb.Request.FromString(_legacy(kind, **fields))).SerializeToString()
    read = read_lease("key", lease, 7)
    assert (read.key, read.revision, read.record.owner) == ("key", 7, "replica-1")
    assert read.record.request == expected
    # Nothing of the old layout is carried on (it would be written back with the lease).
    assert read.record.request.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_a_request_of_no_kind_known_stays_without_a_change() -> None:
    assert read_request(_legacy(99)).WhichOneof("change") is None
