"""Backup and restore of a suite's store, as the operator guide says: stop
`orch up`, copy $ORCH_HOME, start again; later, stop, put the copy back,
start: what was stored at the copy is back (a solution removed since
included), the instances as they were, the same tokens valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from orchestration.v1 import model_pb2 as pb
from suite import running_suite

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop" / "shop.yaml"


def test_a_cold_copy_of_orch_home_restores_the_store(tmp_path: Path) -> None:
    home, backup = tmp_path / "orch", tmp_path / "backup"
    home.mkdir()
    with running_suite(home) as suite:
        suite.ok("apply", "-f", str(SHOP))
        suite.ok("solution", "deploy", "shop", "shop", "V1.0.0", "--wait")
        token = (home / "token").read_text()
    shutil.copytree(home, backup, symlinks=True)  # the suite is stopped: the copy is consistent

    with running_suite(home) as suite:
        suite.ok("solution", "delete", "shop", "shop", "--wait")
        with pytest.raises(grpc.RpcError) as gone:
            suite.solution("shop", "shop")
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    shutil.rmtree(home)
    shutil.copytree(backup, home, symlinks=True)
    with running_suite(home) as suite:
        restored = suite.solution("shop", "shop")
        instances = [i for e in restored.elements for c in e.clusters for i in c.instances]
        assert (restored.version, len(instances)) == ("V1.0.0", 3)
        assert all(i.state == pb.STATE_ACTIVE for i in instances)
        assert (home / "token").read_text() == token
        status = suite.ok("solution", "status", "shop", "shop")
        assert "(solution)" in status and " active " in status.splitlines()[-1]
