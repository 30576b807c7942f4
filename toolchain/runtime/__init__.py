"""What runs on a board: needs only numpy, onnxruntime and pyzmq, never the compiler side.

`python -m edgec.runtime serve|run|keys` is its command line (edgec.runtime.cli).
"""
