"""Whose containers a process sees (runtime/state.py): JupyterHub's user, or nbcontainer's
own variable over it, or nobody's."""

from __future__ import annotations

import pytest

from nbcontainer.errors import ContainerNotFoundError, UsageError
from nbcontainer.runtime import state


@pytest.mark.parametrize("env, user", [
    ({}, None),
    ({"JUPYTERHUB_USER": "alice"}, "alice"),
    ({"JUPYTERHUB_USER": "alice", "NBCONTAINER_USER": "bob"}, "bob"),
    ({"JUPYTERHUB_USER": "alice", "NBCONTAINER_USER": ""}, None),  # empty: no user
    ({"JUPYTERHUB_USER": ""}, None),
])
def test_current_user(monkeypatch, env, user):
    for name in ("JUPYTERHUB_USER", "NBCONTAINER_USER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert state.current_user() == user


def test_records_names_and_find_are_per_user(tmp_path, monkeypatch):
    monkeypatch.delenv("NBCONTAINER_USER", raising=False)
    made = {}
    for user in ("alice", "bob"):
        monkeypatch.setenv("JUPYTERHUB_USER", user)
        made[user] = state.reserve(tmp_path, "web", "busybox", ["sleep", "1"], True)
        assert made[user].user == user
        with pytest.raises(UsageError, match="already in use"):
            state.reserve(tmp_path, "web", "busybox", ["true"], True)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert [st.id for st in state.all_states(tmp_path)] == [made["alice"].id]
    assert state.find(tmp_path, "web").id == made["alice"].id
    with pytest.raises(ContainerNotFoundError, match="no such container"):
        state.find(tmp_path, made["bob"].id)
    assert {st.user for st in state.all_states(tmp_path, every_user=True)} == {"alice", "bob"}
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert state.all_states(tmp_path) == []
