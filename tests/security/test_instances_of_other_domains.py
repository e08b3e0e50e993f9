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
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.process import ProcessController
from orchestration_sdk import OperationContext, Permanent

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
    nobody = pwd.getpwnam("nobody")
    # Another's file the old shared user could reach, and hard-link into its own dir.
    elsewhere = work.parent / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    (elsewhere / "theirs.txt").write_text("not alpha's")
    os.chown(elsewhere / "theirs.txt", nobody.pw_uid, nobody.pw_gid)
    shared = ProcessController(work, work.parent, run_as="nobody")
    await shared.open()
    script = f"mkdir -p data; echo x > data/f; ln {elsewhere}/theirs.txt data/link; exec sleep 60"
    params = {"command": "sh", "args": json.dumps(["-c", script]), "ready_command": "test -e data/link"}
    await shared.create(context("alpha", "a-1", "create", params))
    await shared.start(context("alpha", "a-1", "start", params))
    old = shared.dirs.read_process("a-1")
    assert old is not None

    # Upgraded to a uid per domain while the process runs: it is still ready, probed as the user it runs as.
    own = ProcessController(work, work.parent, uids=UIDS)
    await own.open()
    assert (await own.status(context("alpha", "a-1", "status", params).instance)).state == "active"
    # Its next start restarts it as the domain's user and hands the dir over, but not the hard-linked file.
    await own.start(context("alpha", "a-1", "start", params))
    uid = own.users.of("alpha").uid
    new = own.dirs.read_process("a-1")
    assert new is not None and new.pid != old.pid and os.stat(f"/proc/{new.pid}").st_uid == uid
    assert {(work / "a-1" / name).stat().st_uid for name in ("", "data", "data/f", "stdout.log")} == {uid}
    assert (elsewhere / "theirs.txt").stat().st_uid == nobody.pw_uid
    assert (work / "a-1" / "instance.json").stat().st_uid == 0  # the controller's records stay its own


async def test_a_lost_ledger_is_rebuilt_and_one_not_the_controllers_stops_it(work: Path) -> None:
    first = ProcessController(work, work.parent, uids=UIDS)
    await first.open()
    await run(first, "alpha", "a-1", "exec sleep 60", "true")
    await run(first, "beta", "b-1", "exec sleep 60", "true")
    ledger = json.loads((work / "domains.json").read_text())
    assert (work / "domains.json").stat().st_mode & 0o777 == 0o600  # no instance reads the domains' names
    (work / "domains.json").unlink()
    rebuilt = ProcessController(work, work.parent, uids=UIDS)
    await rebuilt.open()
    assert {d: rebuilt.users.of(d).uid for d in ("alpha", "beta")} == ledger
    os.chown(work / "domains.json", 65534, 65534)  # not the controller's any more
    refused = ProcessController(work, work.parent, uids=UIDS)
    with pytest.raises(ValueError, match="not a ledger of uids this controller wrote"):
        await refused.open()
