"""What the system clock can be trusted for: is it synchronised, which boot is this, how long since it began."""

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from functools import cache

logger = logging.getLogger(__name__)

_TIME_ERROR = 5
"""adjtimex(2) returns this while the kernel's clock is not synchronised (STA_UNSYNC)."""
_TIMEX_SIZE = 512
"""More than sizeof(struct timex) on any Linux ABI; with modes 0 the call only reads."""


@cache
def _adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    try:
        adjtimex: Callable[[ctypes.Array[ctypes.c_char]], int] = ctypes.CDLL(ctypes.util.find_library("c")).adjtimex
    except (OSError, AttributeError):
        logger.warning("clock: adjtimex is not available; events will say time_synced=false")
        return None
    return adjtimex


def time_synced() -> bool:
    """The kernel says NTP (systemd-timesyncd, chrony) has synchronised the clock since boot."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return False
    buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes 0 reads without changing anything
    state = adjtimex(buf)
    return bool(state >= 0 and state != _TIME_ERROR)


@cache
def boot_id() -> str:
    """This boot's random id from the kernel; tells events of different boots apart when the clock cannot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def since_boot() -> float:
    """Seconds since this boot, counting suspend (CLOCK_BOOTTIME, clock_gettime(2)); never set by NTP or a person."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
