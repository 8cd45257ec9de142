"""runtime.threads.one_thread: one CPU thread inside the block, torch's count restored after it."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.runtime.threads import one_thread


def test_one_thread_on_the_cpu_and_restored_after_an_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError), one_thread("cpu"):
            raise ValueError
        assert torch.get_num_threads() == 2
        with one_thread("meta"):  # not the CPU: nothing changes
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.fixture()
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_threads_uses_the_physical_cores(monkeypatch, threads_restored):
    from p2p_cli.runtime import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "physical_cores", lambda: 2)
    torch.set_num_threads(1)
    note = threads.configure_threads()
    assert torch.get_num_threads() == 2
    assert note == threads.threads_note() == "torch threads: 2 (2 physical cores; set OMP_NUM_THREADS to change)"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun, 2 processes on this node: one core each
    assert "shared by 2 processes" in threads.configure_threads()
    assert torch.get_num_threads() == 1


def test_configure_threads_leaves_an_explicit_omp_num_threads(monkeypatch, threads_restored):
    from p2p_cli.runtime import threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "physical_cores", lambda: 8)
    torch.set_num_threads(1)
    assert threads.configure_threads() == "torch threads: 1 (OMP_NUM_THREADS=1)"
    assert torch.get_num_threads() == 1


def test_physical_cores_counts_smt_siblings_once(monkeypatch):
    from p2p_cli.runtime import hardware, threads

    monkeypatch.setattr(hardware, "cpu_capabilities", lambda: {"num_physical_cores": 4, "num_logical_cores": 8})
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.physical_cores() == 4
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # taskset: 2 CPUs
    assert threads.physical_cores() == 1
