"""lipgraph's benchmark: ``python -m bench [--quick]`` (``make bench [QUICK=1]``).

Bounds, gaps and time ratios for every method on a fixed set of ONNX networks, all measured
in one run; writes ``bench/results.md`` and ``bench/results.json``.

Modules: ``networks`` (the deterministic builders), ``onnxutil`` / ``torchnets`` (ONNX by
hand and by torch export), ``worker`` (one network's analysis in its own process), ``exact``
(SeqLip exact-factor timing), ``lipsdp`` (section (f): LipSDP's routes, its cases and worker),
``memory`` (peak RSS), ``report`` (the tables), ``run`` (all of it). ``--sections`` runs a subset
(``a``, ``networks``, ``e``, ``f``).
"""
