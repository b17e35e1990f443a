"""The built-in rule pack, shipped as ``lipgraph.rules``.

One module per op family; importing a module registers its rules. The list is explicit
(no scanning), so the set of reviewed ops is visible here.
"""
from lipgraph.rules import (activations, arithmetic, constant, conv, fused, linear, normalization, pooling,  # noqa: F401
                            logical, recurrent, reduce, resize, shape, softmax, unbounded)
