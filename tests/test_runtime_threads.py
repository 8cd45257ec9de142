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
