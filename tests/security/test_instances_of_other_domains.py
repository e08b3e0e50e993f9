"""Weakness: every instance ran as the same uid (`nobody`), so an instance
of one domain could signal another domain's processes and read its files.
Now each domain's instances run as a uid of the domain's own, taken from a
configured range and kept in the work dir's ledger across restarts; each
work dir is 0700 and its TMPDIR points into it. Real processes, a root
controller, no engine."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.process import ProcessController
from controllers.sdk import OperationContext, Permanent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="instances run as other users only under a root controller")

UIDS = "1900000000-1900000001"  # room for two domains


def context(domain: str, uuid: str, transition: str, parameters: dict[str, str]) -> OperationContext:
    return OperationContext(
        domain=domain, solution="s", element="e", cluster="V1", uuid=uuid, component="c", component_version="V1",
        operation_id=f"{uuid}-{transition}", transition=transition, attempt=1, deadline=time.time() + 10,
        configuration="", parameters=parameters, providers=(), siblings=(),
        logger=logging.LoggerAdapter(logging.getLogger("test.domains"), {}),
    )


@pytest.fixture
def work() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="orch-domains-"))
    base.chmod(0o755)
    try:
        yield base / "work"
    finally:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/cwd").startswith(str(base)):
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    continue
        shutil.rmtree(base, ignore_errors=True)


async def run(controller: ProcessController, domain: str, uuid: str, script: str, ready: str) -> int:
    params = {"command": "sh", "args": json.dumps(["-c", script]), "ready_command": ready}
    await controller.create(context(domain, uuid, "create", params))
    await controller.start(context(domain, uuid, "start", params))
    record = controller.dirs.read_process(uuid)
    assert record is not None
    return record.pid


async def test_an_instance_can_neither_signal_nor_read_another_domains(work: Path) -> None:
    controller = ProcessController(work, work.parent, uids=UIDS)
    await controller.open()
    victim = await run(controller, "beta", "b-1", "echo beta-secret > secret.txt; chmod 644 secret.txt; "
                       "echo tmp-secret > \"$TMPDIR/tmp.txt\"; exec sleep 60", "test -s secret.txt")
    beta_dir = work / "b-1"
    attack = (f"kill -TERM {victim} 2> kill.err; echo $? > kill.rc; "
              f"cat {beta_dir}/secret.txt {beta_dir}/tmp.txt > stolen.txt 2> cat.err; "
              f"ls {beta_dir} > listing.txt 2> ls.err; echo $TMPDIR > tmpdir.txt; "
              "echo done > done.txt; exec sleep 60")
    attacker = await run(controller, "alpha", "a-1", attack, "test -s done.txt")
    alpha_dir = work / "a-1"

    owners = {os.stat(f"/proc/{pid}").st_uid for pid in (victim, attacker)}
    assert len(owners) == 2 and owners <= {1900000000, 1900000001}, owners
    assert (alpha_dir / "kill.rc").read_text().strip() != "0", "the signal was refused"
    assert "not permitted" in (alpha_dir / "kill.err").read_text()
    os.kill(victim, 0)  # beta's process still runs
    assert (alpha_dir / "stolen.txt").read_text() == ""
    assert (alpha_dir / "cat.err").read_text().count("Permission denied") == 2
    assert (alpha_dir / "listing.txt").read_text() == ""
    assert (alpha_dir / "tmpdir.txt").read_text().strip() == str(alpha_dir)
    assert (beta_dir / "tmp.txt").read_text().strip() == "tmp-secret"  # beta's temporary files stay in its dir
    for directory, uid in ((alpha_dir, os.stat(f"/proc/{attacker}").st_uid), (beta_dir, os.stat(f"/proc/{victim}").st_uid)):
        info = directory.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (uid, uid, 0o700)


async def test_a_domain_keeps_its_uid_across_restarts_and_the_range_runs_out_cleanly(work: Path) -> None:
    first = ProcessController(work, work.parent, uids=UIDS)
    await first.open()
    pid = await run(first, "alpha", "a-1", "exec sleep 60", "true")
    uid = os.stat(f"/proc/{pid}").st_uid
    await run(first, "beta", "b-1", "exec sleep 60", "true")

    again = ProcessController(work, work.parent, uids=UIDS)  # a restarted controller reads the ledger
    await again.open()
    assert again.users.of("alpha").uid == uid
    assert json.loads((work / "domains.json").read_text())["alpha"] == uid
    assert (work / "domains.json").stat().st_uid == 0
    with pytest.raises(Permanent, match="no uid left for domain 'gamma'"):
        await again.create(context("gamma", "g-1", "create", {"command": "true"}))
    assert not (work / "g-1").exists()


async def test_an_instance_dir_of_a_former_shared_user_is_handed_to_its_domain(work: Path) -> None:
    shared = ProcessController(work, work.parent, run_as="nobody")
    await shared.open()
    params = {"command": "sh", "args": json.dumps(["-c", "mkdir -p data; echo x > data/f; exec sleep 60"]),
              "ready_command": "test -s data/f"}
    await shared.create(context("alpha", "a-1", "create", params))
    await shared.start(context("alpha", "a-1", "start", params))
    await shared.stop(context("alpha", "a-1", "stop", params))

    own = ProcessController(work, work.parent, uids=UIDS)
    await own.open()
    await own.start(context("alpha", "a-1", "start", params))
    uid = own.users.of("alpha").uid
    assert {(work / "a-1" / name).stat().st_uid for name in ("", "data", "data/f", "stdout.log")} == {uid}
    assert (work / "a-1" / "instance.json").stat().st_uid == 0  # the controller's records stay its own
