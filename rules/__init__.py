"""The built-in rule pack, shipped as ``lipgraph.rules``."""
