"""Trace a student into one ONNX graph with a KV cache, check it, and describe its inputs and outputs.

Two exporters are supported; both give correct dynamic batch, sequence and past dimensions (past 0
included) and the same numerics:

* ``dynamo`` (default): ``torch.onnx.export(..., dynamo=True)``, i.e. ``torch.export`` plus onnxscript.
  The maintained exporter, the same tracer as the ``.pt2`` programs, and it names the symbolic
  dimensions from ``dynamic_shapes``.
* ``torchscript``: the legacy TorchScript exporter (deprecated in PyTorch since 2.9), kept as a fallback
  because it exports in well under a second.

The graph is :class:`conversion.onnx_wrapper.CachedCausalLM`; tracing uses batch 2, 3 new tokens and a
past of 5 so that no dynamic size is 0 or 1 (which torch.export would specialize) and no two coincide.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor

from conversion.onnx_wrapper import (
    ATTENTION_MASK,
    BATCH,
    INPUT_IDS,
    LOGITS,
    PAST_SEQUENCE,
    SEQUENCE,
    TOTAL_SEQUENCE,
    CachedCausalLM,
    input_names,
    output_names,
    past_names,
    present_names,
)
from training.model import Student

EXPORTERS = ("dynamo", "torchscript")
OPSET_RANGES = {"dynamo": (18, 23), "torchscript": (14, 20)}
DEFAULT_OPSET = 18
TRACE_BATCH, TRACE_SEQUENCE, TRACE_PAST = 2, 3, 5


def example_inputs(student: Student) -> tuple[Tensor, ...]:
    """Tracing inputs: input_ids (2, 3), attention_mask (2, 8) with one left pad, past (2, n_kv, 5, D)."""
    cfg = student.config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (TRACE_BATCH, TRACE_SEQUENCE), generator=generator)
    mask = torch.ones(TRACE_BATCH, TRACE_PAST + TRACE_SEQUENCE, dtype=torch.long)
    mask[1, 0] = 0
    assert cfg.head_dim is not None
    shape = (TRACE_BATCH, cfg.num_key_value_heads, TRACE_PAST, cfg.head_dim)
    past = [torch.randn(shape, generator=generator) for _ in range(2 * cfg.num_hidden_layers)]
    return (ids, mask, *past)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress lines, optional-dependency notices and deprecation chatter."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*The axis name.*will not be used")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_graph(student: Student, path: Path, *, exporter: str = "dynamo",
                 opset: int = DEFAULT_OPSET) -> None:
    """Write ``path`` (model.onnx; weights go to external data only beyond protobuf's 2 GB limit)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    low, high = OPSET_RANGES[exporter]
    if not low <= opset <= high:
        raise ValueError(f"the {exporter} exporter supports opset {low}..{high}, got {opset}")
    layers = student.config.num_hidden_layers
    module = CachedCausalLM(student).eval()
    args = example_inputs(student)
    with _quiet_exporter(), torch.no_grad():
        if exporter == "dynamo":
            cache_dims = {0: BATCH, 2: PAST_SEQUENCE}
            program = torch.onnx.export(
                module, args, input_names=input_names(layers), output_names=output_names(layers),
                opset_version=opset, dynamo=True, verbose=False,
                dynamic_shapes={
                    "input_ids": {0: BATCH, 1: SEQUENCE},
                    "attention_mask": {0: BATCH, 1: TOTAL_SEQUENCE},
                    "past": tuple(dict(cache_dims) for _ in range(2 * layers)),
                },
            )
            assert program is not None
            program.save(str(path))
        else:
            axes: dict[str, dict[int, str]] = {
                INPUT_IDS: {0: BATCH, 1: SEQUENCE},
                ATTENTION_MASK: {0: BATCH, 1: TOTAL_SEQUENCE},
                LOGITS: {0: BATCH, 1: SEQUENCE},
            }
            axes.update({name: {0: BATCH, 2: PAST_SEQUENCE} for name in past_names(layers)})
            axes.update({name: {0: BATCH, 2: TOTAL_SEQUENCE} for name in present_names(layers)})
            torch.onnx.export(
                module, args, str(path), input_names=input_names(layers), output_names=output_names(layers),
                opset_version=opset, dynamo=False, dynamic_axes=axes,
            )
    name_output_dims(path, layers)


def name_output_dims(path: Path, num_layers: int) -> None:
    """Give the outputs Optimum's dimension names: logits (batch_size, sequence_length, V) and each
    present (batch_size, n_kv, total_sequence_length, head_dim); the dynamo exporter writes sums such as
    ``past_sequence_length + sequence_length`` instead."""
    model = onnx.load(str(path), load_external_data=False)
    wanted = {LOGITS: {0: BATCH, 1: SEQUENCE}}
    wanted.update({name: {0: BATCH, 2: TOTAL_SEQUENCE} for name in present_names(num_layers)})
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, name in wanted.get(output.name, {}).items():
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = name
    onnx.save(model, str(path))


def check_graph(path: Path) -> None:
    """``onnx.checker.check_model`` with full (strict shape inference) checking, by path so external
    data and models over 2 GB work too."""
    onnx.checker.check_model(str(path), full_check=True)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value.type.tensor_type.shape.dim]


def describe_io(path: Path) -> dict[str, Any]:
    """Graph inputs and outputs with element type and shape (symbolic names as strings), plus opset."""
    model = onnx.load(str(path), load_external_data=False)

    def entries(values: Any) -> list[dict[str, Any]]:
        return [
            {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
             "shape": _dims(v)}
            for v in values
        ]

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "inputs": entries(model.graph.input), "outputs": entries(model.graph.output)}


def graph_files(path: Path) -> list[Path]:
    """The model file and the external data files its initializers point to."""
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path, *(path.parent / loc for loc in sorted(locations))]


def graph_size_bytes(path: Path) -> int:
    """Bytes on disk of the model and its external data."""
    return sum(p.stat().st_size for p in graph_files(path))
