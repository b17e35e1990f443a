"""lipgraph: certified upper and realised lower bounds on the Lipschitz constant of ONNX models."""
__version__ = "0.1.0"
