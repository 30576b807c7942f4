"""What runs on a board: needs only numpy, onnxruntime and pyzmq, never the compiler side.

`python -m edgec.runtime serve|run|keys` is its command line (edgec.runtime.cli).
"""

from edgec.runtime import clocks as _clocks

_clocks.install()  # time.thread_time on Python 3.6
