"""The allocator setting the node applies at start (memory.py)."""

import platform

import pytest

from drive_mllm_ros.memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_glibc_accepts_the_thresholds():
    assert keep_freed_memory() is True
