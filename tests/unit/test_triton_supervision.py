"""Triton supervision without Triton: the restart policy on a fake server, and the cleanup of
a dead server's process group and shared memory on real processes and files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from triton_host.launcher import group_members, kill_group, remove_shm_regions
from triton_host.supervisor import RestartPolicy, TritonSupervisor


class FakeServer:
    """Dies when told; restarts fail ``failing_restarts`` times first."""

    def __init__(self, failing_restarts: int = 0) -> None:
        self.running = True
        self.failing_restarts = failing_restarts
        self.cleanups = 0
        self.restart_calls = 0

    @property
    def returncode(self) -> int | None:
        return None if self.running else -9

    def is_running(self) -> bool:
        return self.running

    def cleanup(self) -> list[str]:
        self.cleanups += 1
        return []

    def restart(self, ready_timeout: float = 120.0) -> None:
        self.restart_calls += 1
        if self.failing_restarts > 0:
            self.failing_restarts -= 1
            raise RuntimeError("port busy")
        self.running = True

    def log_tail(self) -> str:
        return "last line\n"


def fast(**overrides: float) -> RestartPolicy:
    values = {
        "max_restarts": 3,
        "window_s": 60.0,
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.04,
        "poll_interval_s": 0.01,
        **overrides,
    }
    return RestartPolicy(**values)  # type: ignore[arg-type]


def eventually(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_supervisor_restarts_a_dead_server_and_cleans_up_after_it() -> None:
    server = FakeServer()
    with TritonSupervisor(server, fast()) as supervisor:
        server.running = False
        eventually(lambda: supervisor.restarts == 1 and server.running)
        server.running = False
        eventually(lambda: supervisor.restarts == 2)
    assert server.cleanups == 2 and supervisor.gave_up is None


def test_supervisor_gives_up_loudly_after_repeated_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer(failing_restarts=100)
    reasons: list[str] = []
    with TritonSupervisor(server, fast(), on_give_up=reasons.append) as supervisor:
        server.running = False
        eventually(lambda: bool(reasons))
    assert server.restart_calls == 3  # max_restarts tries, then no more
    assert supervisor.gave_up == reasons[0] and "failed 3 times" in reasons[0]
    assert any(r.levelname == "CRITICAL" and "last line" in r.getMessage() for r in caplog.records)


def test_a_restart_that_fails_once_is_retried_with_back_off() -> None:
    server = FakeServer(failing_restarts=1)
    with TritonSupervisor(server, fast()) as supervisor:
        server.running = False
        eventually(lambda: supervisor.restarts == 1)
    assert server.restart_calls == 2 and supervisor.gave_up is None


def test_killing_a_group_leader_leaves_children_that_kill_group_removes() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        eventually(lambda: len(group_members(leader.pid)) == 3)
        leader.send_signal(signal.SIGKILL)  # like a SIGKILLed tritonserver
        leader.wait()
        orphans = group_members(leader.pid)
        assert len(orphans) == 2  # the "stubs" outlive their parent
        assert sorted(kill_group(leader.pid)) == sorted(orphans)
        assert group_members(leader.pid) == []
    finally:
        if group_members(leader.pid):
            os.killpg(leader.pid, signal.SIGKILL)


def test_only_the_servers_own_shared_memory_regions_are_removed(tmp_path: Path) -> None:
    for name in ("lmforge_abc_stub_1", "lmforge_abc_ipc", "lmforge_other_1", "unrelated"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_shm_regions("lmforge_abc", tmp_path)
    assert sorted(removed) == ["lmforge_abc_ipc", "lmforge_abc_stub_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lmforge_other_1", "unrelated"]
    with pytest.raises(ValueError):
        remove_shm_regions("", tmp_path)
