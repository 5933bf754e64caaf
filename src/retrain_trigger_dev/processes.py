"""What the development tools read about processes, through psutil (Linux and macOS alike).

The local stack's supervisor (which children are still alive, what they left behind), the local
ledger (is a run's process still the one running that run) and the benchmarks (memory, CPU,
children) read processes only through these functions.

A process is identified by its pid *and* its creation time: a pid can be reused once its process
has exited, and a zombie (exited, not yet reaped) counts as gone.
"""

from __future__ import annotations

import psutil

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _process(pid: int | None) -> psutil.Process | None:
    if not pid or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() in _GONE:
            return None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # another user's process: it exists
        return psutil.Process(pid)
    return process


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this host and has not exited."""
    return _process(pid) is not None


def process_alive(pid: int | None, argument: str = "") -> bool:
    """Whether ``pid`` is alive and, given ``argument``, has it among its command-line arguments
    (a run's process carries its job id: a reused pid is not that run). Where the command line
    cannot be read (another user's process), a live pid is taken at its word."""
    process = _process(pid)
    if process is None:
        return False
    if not argument:
        return True
    try:
        return argument in process.cmdline()
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def descendants(pid: int) -> list[tuple[int, float]]:
    """``(pid, creation time)`` of every live descendant of ``pid``, including those that moved
    to a session of their own; empty when ``pid`` is gone."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []
    out = []
    for child in children:
        try:
            if child.status() not in _GONE:
                out.append((child.pid, child.create_time()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return out


def same_process_alive(pid: int, created: float) -> bool:
    """Whether ``pid`` is still the process created at ``created`` and has not exited."""
    process = _process(pid)
    if process is None:
        return False
    try:
        return process.create_time() == created
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid``, sorted."""
    try:
        return sorted(child.pid for child in psutil.Process(pid).children())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def memory_mib(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak, in MiB (the peak where the platform keeps one:
    Linux's VmHWM; elsewhere the current size)."""
    try:
        info = psutil.Process(pid).memory_info()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return {"rss_mib": 0.0, "hwm_mib": 0.0}
    rss = info.rss / (1 << 20)
    peak = getattr(info, "peak_wset", 0) / (1 << 20)  # Windows
    try:
        with open(f"/proc/{pid}/status") as fh:  # Linux only: psutil does not expose VmHWM
            for line in fh:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"rss_mib": rss, "hwm_mib": peak or rss}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, in seconds."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0.0
    return float(times.user + times.system)
