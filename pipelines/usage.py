"""What a pipeline step used on this machine: CPU and wall seconds, peak resident memory, bytes
read and written. No orchestrator records this (a run's seconds per component is all TFX keeps);
it is what a price per vCPU-hour and GB-hour turns into a cost, and what a cluster job's resource
requests should be sized from.

- In process (the local runner runs every component in this process, one after another):
  `Meter` takes the deltas of getrusage (this process and its children), of /proc/self/io's
  `rchar`/`wchar` (every byte read or written through a system call: files, pipes, sockets), and
  the peak resident set, reset before each step (/proc/self/clear_refs), so a step's peak is its own.
- A forked or spawned task (`cd4ml submit --local`): `of_child` reads the rusage `os.wait4` gives;
  its peak includes the pages it shares with the warm parent it was forked from.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import time
from typing import Dict, Optional

from cd4ml.contract import USAGE_FIELDS



@dataclasses.dataclass
class Usage:
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_mb: float = 0.0
    read_mb: float = 0.0
    written_mb: float = 0.0

    def as_dict(self) -> Dict[str, float]:
        """Under the names an execution carries them in ML Metadata (contract.USAGE_FIELDS)."""
        return {name: round(getattr(self, name), 3) for name in USAGE_FIELDS}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _io() -> Dict[str, int]:
    try:
        with open("/proc/self/io") as fh:
            return {k: int(v) for k, v in (line.split(":") for line in fh if line.strip())}
    except OSError:  # not Linux, or not allowed: counted as nothing read or written
        return {}


def _peak_kb() -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            found = re.search(r"^VmHWM:\s+(\d+)", fh.read(), re.M)
        return int(found.group(1)) if found else None
    except OSError:
        return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
        return True
    except OSError:
        return False


class Meter:
    """`with Meter() as m: ...`, then `m.usage`."""

    def __enter__(self) -> "Meter":
        self.peak_is_own = _reset_peak()
        self._cpu, self._io, self._wall = _cpu(), _io(), time.monotonic()
        self.usage = Usage()
        return self

    def __exit__(self, *exc):
        io = _io()
        peak = _peak_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.usage = Usage(cpu_seconds=_cpu() - self._cpu, wall_seconds=time.monotonic() - self._wall,
                           peak_mb=peak / 1024,
                           read_mb=(io.get("rchar", 0) - self._io.get("rchar", 0)) / 1e6,
                           written_mb=(io.get("wchar", 0) - self._io.get("wchar", 0)) / 1e6)
        return False


def cost(steps, price_vcpu_hour: float, price_gb_hour: float) -> float:
    """The price of what `steps` (usage dicts) used: CPU seconds at the vCPU-hour price, and each
    step's peak resident memory held for its wall time at the GB-hour price."""
    cpu_hours = sum(s.get("cpu_seconds", 0.0) for s in steps) / 3600
    gb_hours = sum(s.get("peak_mb", 0.0) / 1024 * s.get("wall_seconds", 0.0) / 3600 for s in steps)
    return cpu_hours * price_vcpu_hour + gb_hours * price_gb_hour


def requests(measured: Dict[str, float], headroom: float = 1.25) -> Dict[str, float]:
    """A task's resource requests from what it used when it last ran: the CPUs it kept busy on
    average (at least a quarter), its peak memory with headroom, in GB."""
    busy = measured.get("cpu_seconds", 0.0) / max(measured.get("wall_seconds", 0.0), 1e-9)
    return {"cpuRequest": round(max(0.25, busy * headroom), 2),
            "memoryRequest": round(max(0.25, measured.get("peak_mb", 0.0) * headroom / 1024), 2)}


def of_child(rusage, wall_seconds: float) -> Usage:
    """A finished child's usage from the rusage `os.wait4` returned (no byte counts there)."""
    return Usage(cpu_seconds=rusage.ru_utime + rusage.ru_stime, wall_seconds=wall_seconds,
                 peak_mb=rusage.ru_maxrss / 1024)
