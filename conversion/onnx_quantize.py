"""Weight quantization of an exported fp32 graph with onnxruntime's tools (inputs and outputs stay fp32).

* int8: ``quantize_dynamic`` - int8 weights per output channel (lower max logit error than per tensor on
  the 3.9M-parameter student measured: 0.045 vs 0.052), activations quantized on the fly
  (MatMul -> DynamicQuantizeLinear + MatMulInteger; the embedding Gather is quantized too).
* int4: ``MatMulNBitsQuantizer`` - blockwise symmetric int4 weights (32 per block) for every MatMul
  (``com.microsoft.MatMulNBits``, ``accuracy_level=4``: int8 compute, ~20% faster decode than fp32 compute
  at the same error) and for the embedding (``GatherBlockQuantized``). Quantized Gather needs the int4
  type of opset 21, so a graph exported at a lower opset is first converted with
  ``onnx.version_converter``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
from onnx import version_converter
from onnxruntime.quantization import QuantType, quantize_dynamic

from conversion.onnx_graph import graph_size_bytes

VARIANTS = ("int8", "int4")
QUANTIZE_CHOICES = ("none", "int8", "int4", "all")
INT4_BLOCK_SIZE = 32
INT4_ACCURACY_LEVEL = 4
INT4_MIN_OPSET = 21
# Above this many bytes of weights the quantized graph is written with external data (protobuf's 2 GB cap).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def requested_variants(choice: str) -> tuple[str, ...]:
    """``--quantize`` value -> the variants to build (``all`` = int8 and int4)."""
    if choice not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {choice!r}")
    return VARIANTS if choice == "all" else () if choice == "none" else (choice,)


def variant_path(fp32_path: Path, variant: str) -> Path:
    """model.onnx -> model_int8.onnx / model_int4.onnx beside it."""
    return fp32_path.with_name(f"{fp32_path.stem}_{variant}{fp32_path.suffix}")


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizers log every node at INFO and suggest pre-processing on the root logger at
    WARNING; the symbolic shape inference that pre-processing needs cannot follow the attention-mask
    broadcast of this graph, so the advice does not apply."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _nbits_quantizer_class() -> Any:
    """``MatMulNBitsQuantizer``, imported lazily: its module calls ``logging.basicConfig(level=INFO)`` at
    import, which would flood the whole process with INFO logs; the root logger is restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    return MatMulNBitsQuantizer


def quantize_int8(src: Path, dst: Path, *, per_channel: bool = True) -> Path:
    """Dynamic int8 quantization of every MatMul/Gather weight in ``src``; writes ``dst``."""
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         use_external_data_format=graph_size_bytes(src) > EXTERNAL_DATA_THRESHOLD)
    return dst


def quantize_int4(src: Path, dst: Path, *, block_size: int = INT4_BLOCK_SIZE) -> Path:
    """Blockwise symmetric int4 MatMul and embedding weights; writes ``dst`` (opset >= 21)."""
    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < INT4_MIN_OPSET:
        model = version_converter.convert_version(model, INT4_MIN_OPSET)
    with _quiet():
        quantizer = _nbits_quantizer_class()(
            model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=INT4_ACCURACY_LEVEL,
            op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        quantizer.process()
        quantizer.model.save_model_to_file(
            str(dst), use_external_data_format=graph_size_bytes(src) > EXTERNAL_DATA_THRESHOLD
        )
    return dst


def quantize(src: Path, variant: str) -> Path:
    """Build one variant beside ``src`` and return its path."""
    dst = variant_path(src, variant)
    if variant == "int8":
        return quantize_int8(src, dst)
    if variant == "int4":
        return quantize_int4(src, dst)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
