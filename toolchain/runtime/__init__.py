"""What runs on a board: needs only numpy, onnxruntime and pyzmq."""
