"""Subtask ids are uuid5 of their names under the root task: a resumed run
(or a newer dispatcher) finds the tree an earlier one stored."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.run.tasks import child_id


@given(st.uuids(), st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_child_ids_are_the_uuid5_of_the_names(root: uuid.UUID, names: list[str]) -> None:
    assert child_id(str(root), *names) == str(uuid.uuid5(root, "/".join(names)))


def test_child_ids_differ_by_root_and_by_name() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert child_id(a, "instance", "x") != child_id(b, "instance", "x")
    assert child_id(a, "instance", "x") != child_id(a, "instance", "y")
    assert child_id(a, "instance", "x") == child_id(a, "instance", "x")
