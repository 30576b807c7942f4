"""edgec: split one ONNX model across a cluster of heterogeneous edge boards."""
