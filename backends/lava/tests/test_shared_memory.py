"""Lava's shared memory: what a run maps in /dev/shm is computed before any process starts, equals
what the runtime really maps, and a run that does not fit is refused in one line instead of hanging
(Lava does not check: a process writing past a full /dev/shm dies of SIGBUS and the runtime waits
for it forever; a container's default /dev/shm is 64 MB)."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch
from test_lower import one_layer

import snncc_lava.lower as lower
from snncc.errors import TargetError
from snncc_lava.lower import CHANNEL_SIZE, SHM_PAGE, simulate

X = torch.tensor([[0.7, 2.2, 9.0], [1.6, 0.0, -1.0]], dtype=torch.float64)


def test_computed_bytes_equal_what_the_runtime_maps(monkeypatch):
    """Every segment this run's runtime creates (recorded by name as Lava asks for it, so another
    process's Lava run beside this one does not count), measured in /dev/shm itself."""
    from lava.magma.runtime.message_infrastructure.shared_memory_manager import SharedMemoryManager

    seen = {"names": []}
    check = lower.check_shared_memory
    create = SharedMemoryManager.create_shared_memory

    def record_need(exe, samples, where="/dev/shm"):
        seen["need"] = lower.shared_memory_bytes(exe)
        seen["sizes"] = {int((getattr(b, "src_port_initializer", None) or b.port_initializer).size)
                         for b in exe.channel_builders + exe.sync_channel_builders}
        return check(exe, samples, where)

    def record_segment(self, size):
        handle = create(self, size)
        seen["names"].append(handle.name.lstrip("/"))
        return handle

    def record_mapped(**kw):  # called after create_runtime mapped every channel, before the run
        seen["mapped"] = [os.stat(os.path.join("/dev/shm", n)).st_size for n in seen["names"]]
        return run_steps(**kw)

    run_steps = lower.RunSteps
    monkeypatch.setattr(lower, "check_shared_memory", record_need)
    monkeypatch.setattr(SharedMemoryManager, "create_shared_memory", record_segment)
    monkeypatch.setattr(lower, "RunSteps", record_mapped)
    res = simulate(one_layer(), X)
    assert res.counts["a"].tolist() == [[1, 2, 4], [2, 0, 0]]  # the run itself is unchanged
    assert seen["sizes"] == {CHANNEL_SIZE}  # every channel buffers CHANNEL_SIZE messages, not Lava's 64
    mapped = sum(-(-n // SHM_PAGE) * SHM_PAGE for n in seen["mapped"])
    assert len(seen["mapped"]) > 10 and seen["need"] == mapped


def test_a_run_that_does_not_fit_is_refused_before_any_process_starts(monkeypatch):
    need = {}
    real = lower.shared_memory_bytes

    def bytes_(exe):
        need["n"] = real(exe)
        return need["n"]

    class Usage:
        total = used = 0
        free = 1000  # less than one page per channel

    monkeypatch.setattr(lower, "shared_memory_bytes", bytes_)
    monkeypatch.setattr(lower.shutil, "disk_usage", lambda path: Usage if path == "/dev/shm" else None)
    before = set(multiprocessing.active_children())
    with pytest.raises(TargetError) as e:
        simulate(one_layer(), X)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("/dev/shm: this Lava run maps ")
    assert f"{need['n'] / 2**20:.1f} MiB of shared memory" in msg and "(2 samples); /dev/shm has 0.0 MiB free" in msg
    assert "--shm-size" in msg
    assert set(multiprocessing.active_children()) == before  # no Lava process was started
