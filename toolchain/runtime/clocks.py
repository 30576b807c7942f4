"""time.thread_time on Python 3.6, where the time module lacks it (it came in 3.7).

The runtime measures each loop's own CPU time with time.thread_time. On 3.6
(JetPack 4.6's Python) importing edgec.runtime adds it to the time module,
read from the same clock 3.7 reads (CLOCK_THREAD_CPUTIME_ID), so every runtime
module keeps calling time.thread_time() whatever the Python. The syntax-floor
check (vermin) is told that this member is backported here.
"""

import time


def _thread_time() -> float:
    """CPU seconds of the calling thread."""
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


def install() -> None:
    if not hasattr(time, "thread_time"):
        if hasattr(time, "CLOCK_THREAD_CPUTIME_ID"):
            time.thread_time = _thread_time  # type: ignore[attr-defined]
        else:  # no per-thread clock: the process's CPU time, an upper bound
            time.thread_time = time.process_time  # type: ignore[attr-defined]
