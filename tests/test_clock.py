"""Clock honesty: whether the kernel's clock is synchronised, and this boot's id."""

import os
import re
import shutil
import subprocess

import pytest

from edgecam.clock import boot_id, time_synced

ADJTIMEX = shutil.which("adjtimex", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def test_boot_id_is_the_kernels() -> None:
    assert re.fullmatch(r"[0-9a-f-]{36}", boot_id())
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
        assert boot_id() == fh.read().strip()


@pytest.mark.skipif(
    ADJTIMEX is None, reason="the adjtimex tool (Debian package adjtimex, installed by scripts/test) is missing"
)
def test_time_synced_agrees_with_the_adjtimex_tool() -> None:
    status = subprocess.run([str(ADJTIMEX), "--print"], capture_output=True, text=True, check=True).stdout
    unsync = int(re.search(r"status:\s*(\d+)", status).group(1)) & 0x40  # type: ignore[union-attr]
    assert time_synced() == (not unsync)
