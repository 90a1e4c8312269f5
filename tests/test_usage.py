"""What a step used (pipelines/usage.py): measured, not estimated."""

from __future__ import annotations

import os
import time

from pipelines import usage


def test_the_meter_sees_cpu_memory_and_bytes_of_what_ran_inside_it(tmp_path):
    ballast = bytearray(50_000_000)  # resident before: the peak is reset, this does not count twice
    ballast[::4096] = b"x" * len(ballast[::4096])
    with usage.Meter() as idle:
        time.sleep(0.2)
    with usage.Meter() as busy:
        block = bytearray(120_000_000)
        block[::4096] = b"y" * len(block[::4096])  # touched: resident
        total = 0
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            total += 1
        (tmp_path / "out.bin").write_bytes(b"z" * 3_000_000)
        (tmp_path / "out.bin").read_bytes()
        del block
    used, rested = busy.usage, idle.usage
    assert used.cpu_seconds >= 0.3 > rested.cpu_seconds
    assert rested.wall_seconds >= 0.2
    assert used.peak_mb - rested.peak_mb >= 100  # its own peak, the 120 MB block in it
    assert used.written_mb >= 3.0 and used.read_mb >= 3.0
    assert set(used.as_dict()) == {"cpu_seconds", "wall_seconds", "peak_mb", "read_mb", "written_mb"}
    del ballast


def test_a_child_is_measured_from_its_own_rusage():
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
        os._exit(0)
    _, status, rusage = os.wait4(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    measured = usage.of_child(rusage, 1.0)
    assert measured.cpu_seconds >= 0.3 and measured.peak_mb > 1 and measured.wall_seconds == 1.0
