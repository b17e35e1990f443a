"""The mutation corpus (issue 15): mutated copies of the bundled and zoo models, each class of
``mutants.CORE`` (truncation, byte flips, a weight set to NaN/±inf/a huge finite value, an op
renamed, a node input renamed to a missing tensor, a dim made symbolic) on every model, a fixed
seed; every run ends with exit 0/1/2 (or 4, partial) within its time limit, never with an
internal error or a traceback. ``make fuzz`` runs the wider set (tests/fuzz.py)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MODELS
from mutants import CORE, failure, mutate, run

#: Small models (an analysis takes well under a second), so that the corpus fits in a minute.
CORPUS = ["mlp", "affine", "concat", "spectral", "anchor_lipsdp", "unsupported", "zoo/sklearn_mlp_digits",
          "zoo/mlp_mish_elu_dynamo", "zoo/bigru_dynamo", "zoo/lstm_dynamo", "zoo/vit_block_dynamo"]
PER_MODEL = 4 * len(CORE)          # 32 × 11 models = 352, + 16 of LeNet (a convolutional net)
LENET = 2 * len(CORE)
TIME_LIMIT = 5.0


@pytest.mark.parametrize("name", CORPUS + ["lenet"])
def test_mutants_end_cleanly(tmp_path, name):
    data = (MODELS / f"{name}.onnx").read_bytes()
    rng = np.random.default_rng([15, CORPUS.index(name) if name in CORPUS else 99])
    per_model = LENET if name == "lenet" else PER_MODEL
    problems, analysed = [], 0
    for k in range(per_model):
        kind = CORE[k % len(CORE)]
        mutant, argv = mutate(data, kind, rng)
        path = tmp_path / f"{k}.onnx"
        path.write_bytes(mutant)
        code, out, err, seconds = run(path, argv, TIME_LIMIT)
        why = failure(code, out, err, seconds, TIME_LIMIT)
        if why:
            problems.append(f"{name} #{k} {kind} {argv}: {why}")
        analysed += code in (0, 1)
    assert not problems, "\n".join(problems)
    assert analysed > 0, "no mutant was analysed: the corpus only exercises refusals"


def test_corpus_covers_every_class_and_300_mutants():
    assert len(CORPUS) * PER_MODEL + LENET >= 300
    assert set(CORE) >= {"truncate", "byte-flip", "weight-nan", "weight-inf", "weight-huge", "op-renamed",
                         "input-dangling", "dim-symbolic"}


def _saved(tmp_path, model) -> str:
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_regression_fusion_check_that_onnxruntime_cannot_run(tmp_path):
    """Found by make fuzz: opset 1 on a model with a decomposed GELU made onnxruntime refuse the
    fusion's check subgraph (an internal error); now the fusion is rejected and the model is bad
    input (onnxruntime cannot run it)."""
    import onnx
    model = onnx.load(MODELS / "zoo" / "flax_mlp_gelu.onnx")
    model.opset_import[0].version = 1
    code, _, err, _ = run(_saved(tmp_path, model), [], 20.0)
    assert code == 2 and "internal error" not in err


def test_regression_float32_overflow_is_not_a_semantic_mismatch():
    """Found by the corpus: a weight near 3e38 made onnxruntime's float32 output ∞ where torch's
    stayed finite (another summation order); the cross-check reports [overflow] for such a
    difference instead of an internal error — and still refuses a real mismatch."""
    from types import SimpleNamespace

    from lipgraph.errors import SemanticMismatch
    from lipgraph.ir.differential import _compare
    graph = SimpleNamespace(diagnostics=[])
    _compare(graph, "node 'g' (Gemm)", "y", np.array([np.inf, 1.0], np.float32),
             np.array([3.3e38, 1.0], np.float32), "output")
    assert [d.code for d in graph.diagnostics] == ["overflow"]
    with pytest.raises(SemanticMismatch):
        _compare(graph, "node 'g' (Gemm)", "y", np.array([2.0, 1.0], np.float32), np.array([3.0, 1.0], np.float32),
                 "output")


def test_a_huge_size_attribute_is_refused_in_one_line(tmp_path):
    """Found by ``make fuzz``: an LSTM whose hidden_size is 2⁴⁰ makes shape inference promise a
    32 TiB tensor that a Shape node reads; folding that node allocated zeros of that shape and
    died with a MemoryError (exit 3). Now the fold refuses it against the memory limit: exit 2."""
    import onnx
    model = onnx.load(MODELS / "zoo/lstm_ts.onnx")
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    next(a for a in lstm.attribute if a.name == "hidden_size").i = 2 ** 40
    path = tmp_path / "huge.onnx"
    onnx.save(model, path)
    code, out, err, seconds = run(path, [], TIME_LIMIT)
    assert code == 2 and failure(code, out, err, seconds, TIME_LIMIT) is None, (code, err)
    assert "over the memory limit" in err and len(err.strip().splitlines()) == 1, err


def test_huge_weights_inside_a_bounded_node_are_overflow_not_a_mismatch(tmp_path):
    """Found by ``make fuzz``: a GRU whose recurrence weights were scaled by 10³⁶ overflows float32 inside its
    gates while its output stays in [−1, 1]; onnxruntime and lipgraph round to ±∞ at different
    places and their outputs differ by 2. That is overflow of the huge weights, not a semantic
    mismatch (exit 3): the guard notes it ([overflow]) and the analysis goes on."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(MODELS / "zoo/bigru_dynamo.onnx")
    gru = next(n for n in model.graph.node if n.op_type == "GRU")
    for init in model.graph.initializer:
        if init.name == gru.input[2]:       # R, the recurrence weights
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1e36) + np.float32(1e25),
                                                  init.name))
    path = tmp_path / "huge.onnx"
    onnx.save(model, path)
    code, out, err, seconds = run(path, ["--format", "json"], TIME_LIMIT)
    assert failure(code, out, err, seconds, TIME_LIMIT) is None and code in (0, 1), (code, err)
    import json
    assert any(d["code"] == "overflow" for d in json.loads(out)["diagnostics"])
