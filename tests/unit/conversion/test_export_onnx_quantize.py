"""int8 and int4 variants of an exported graph: they run, stay close to fp32 PyTorch, and are smaller."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx
import pytest

from conversion.onnx_graph import export_graph, graph_size_bytes
from conversion.onnx_quantize import quantize, requested_variants, variant_path
from conversion.onnx_verify import variant_metrics
from training.model import Student


@pytest.fixture(scope="module")
def fp32_graph(tiny_student: Student, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny student through the (fast) TorchScript exporter; quantization does not depend on it."""
    path = tmp_path_factory.mktemp("quant") / "model.onnx"
    export_graph(tiny_student, path, exporter="torchscript", opset=17)
    return path


def test_requested_variants() -> None:
    assert requested_variants("none") == ()
    assert requested_variants("int8") == ("int8",)
    assert requested_variants("all") == ("int8", "int4")
    with pytest.raises(ValueError, match="quantize"):
        requested_variants("fp8")
    assert variant_path(Path("d/model.onnx"), "int4") == Path("d/model_int4.onnx")


@pytest.mark.parametrize(("variant", "op"), [("int8", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_variant_is_quantized_smaller_and_close(fp32_graph: Path, tiny_student: Student, variant: str,
                                               op: str) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    path = quantize(fp32_graph, variant)
    assert (list(root.handlers), root.level) == (handlers, level)  # no logging.basicConfig side effect
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = Counter(node.op_type for node in model.graph.node)
    layers = tiny_student.config.num_hidden_layers
    assert ops[op] == 7 * layers + 1  # q, k, v, o, gate, up, down per layer + lm_head
    assert ops["MatMul"] == 2 * layers  # attention scores and weighted values stay fp32
    # the embedding table is stored quantized too: int8 as a uint8/int8 Gather table, int4 in a
    # GatherBlockQuantized node
    cfg = tiny_student.config
    table = [cfg.vocab_size, cfg.hidden_size]
    assert not [t.name for t in model.graph.initializer
                if t.data_type == onnx.TensorProto.FLOAT and list(t.dims) == table]
    if variant == "int4":
        assert ops["GatherBlockQuantized"] == 1
    metrics = variant_metrics(tiny_student, path, [5, 6, 7, 8], timing_tokens=4, decode_steps=1)
    assert metrics.size_bytes == graph_size_bytes(path) < graph_size_bytes(fp32_graph)
    assert 1e-4 < metrics.max_abs_error < 1.0
    assert 0.5 < metrics.argmax_agreement <= 1.0
    assert metrics.ms_per_token > 0 and metrics.file == path.name


def test_unknown_variant_is_refused(fp32_graph: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        quantize(fp32_graph, "int2")
