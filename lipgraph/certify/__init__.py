"""Certified numerics on arrays: proofs (``margins``) and the bounds built on them (``lipsdp``).

Modules here take arrays and return ``Bound``s or proofs; they know nothing of graphs or rules.
"""
