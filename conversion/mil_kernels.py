"""Numpy semantics for MIL operations: hand-written kernels plus a bridge to coremltools' value_inference.

:func:`evaluate_op` computes one operation's outputs from numpy input values. Ops listed in
:data:`KERNELS` use the kernels below: ops without a ``value_inference`` in coremltools (``conv``,
``silu``, ``read_state``, ``coreml_update_state``), ops whose ``value_inference`` serves shape
propagation rather than evaluation (``concat`` gives up on tensors over 10 elements, ``reshape`` and
``cast`` read compile-time types, ``split`` and ``slice_by_index`` reject runtime shapes), and
products, softmax, layer_norm, fused attention and mean/sum reductions, which accumulate in fp32 for fp16 tensors (Core ML's GPU
and Neural Engine accumulate wider than fp16; numpy's fp16 einsum would not). Every other op runs
its own ``value_inference`` on a view of the op whose inputs carry the runtime values
(:class:`_RuntimeOp`); the program itself is never modified.
"""

from __future__ import annotations

import inspect
import types as pytypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.operation import Operation
from coremltools.converters.mil.mil.ops.defs._utils import get_squeeze_axes, solve_slice_by_index_slice
from coremltools.converters.mil.mil.types.type_mapping import (
    nptype_from_builtin,
    numpy_type_to_builtin_type,
    string_to_nptype,
)
from coremltools.converters.mil.mil.var import Var
from numpy.lib.stride_tricks import sliding_window_view

Value = Any  # np.ndarray, a numpy scalar, a str/bool parameter, or a tuple of those (tuple inputs)
Kernel = Callable[[Operation, Mapping[str, Value], dict[str, np.ndarray]], Any]


class UnsupportedOpError(NotImplementedError):
    """The executor has no way to evaluate an op (no kernel and no usable value_inference)."""


def _acc(x: Value) -> np.ndarray:
    """The array in at least fp32 (products and reductions accumulate wide)."""
    arr = np.asarray(x)
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def _ints(x: Value | None, default: list[int]) -> list[int]:
    return default if x is None else [int(v) for v in np.asarray(x).reshape(-1)]


# ---- kernels --------------------------------------------------------------------------------------

def _conv_pads(pad_type: str, pad: list[int], size: tuple[int, ...], kernel: tuple[int, ...],
               strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis for MIL's pad_type valid / custom / same / same_lower."""
    if pad_type == "valid":
        return [(0, 0)] * len(size)
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(size))]
    if pad_type not in ("same", "same_lower"):
        raise UnsupportedOpError(f"conv pad_type {pad_type!r}")
    pads = []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        before = total // 2 if pad_type == "same" else total - total // 2
        pads.append((before, total - before))
    return pads


def conv(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    """N-d convolution. x: (N, C_in, *spatial), weight: (C_out, C_in / groups, *kernel)."""
    x, w = _acc(a["x"]), _acc(a["weight"])
    nd = x.ndim - 2
    strides, dilations = _ints(a.get("strides"), [1] * nd), _ints(a.get("dilations"), [1] * nd)
    groups = int(a.get("groups", 1))
    bias = None if a.get("bias") is None else _acc(a["bias"]).reshape(1, -1, *([1] * nd))
    pointwise = all(k == 1 for k in w.shape[2:]) and strides == [1] * nd and groups == 1
    if pointwise and str(a.get("pad_type", "valid")) in ("valid", "same", "same_lower"):
        out = np.matmul(w.reshape(w.shape[0], -1), x.reshape(x.shape[0], x.shape[1], -1))
        out = out.reshape(x.shape[0], w.shape[0], *x.shape[2:])
        return out if bias is None else out + bias
    pads = _conv_pads(str(a.get("pad_type", "valid")), _ints(a.get("pad"), [0] * 2 * nd), x.shape[2:],
                      w.shape[2:], strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    spatial = tuple(range(2, 2 + nd))
    span = tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dilations, strict=True))
    windows = sliding_window_view(x, span, axis=spatial)  # (N, C_in, *out_full, *span)
    index = (slice(None), slice(None), *(slice(None, None, s) for s in strides),
             *(slice(None, None, d) for d in dilations))
    windows = windows[index]  # (N, C_in, *out, *kernel)
    n, c_in = x.shape[:2]
    out_sp = windows.shape[2:2 + nd]
    cg, og = c_in // groups, w.shape[0] // groups
    windows = windows.reshape(n, groups, cg, *out_sp, *w.shape[2:])
    wg = w.reshape(groups, og, cg, *w.shape[2:])
    letters = "abcdefgh"[:nd]
    kern = "pqrstuvw"[:nd]
    out = np.einsum(f"ngc{letters}{kern},goc{kern}->ngo{letters}", windows, wg)
    out = out.reshape(n, groups * og, *out_sp)
    return out if bias is None else out + bias


def silu(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    x = _acc(a["x"])
    return x / (1.0 + np.exp(-x))


def softmax(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    x = _acc(a["x"])
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta`` over ``axes`` (all axes when absent), computed
    in fp32 and rounded once (a fused op). gamma and beta have the shape of x on ``axes``."""
    x = _acc(a["x"])
    axes = tuple(range(x.ndim)) if a.get("axes") is None else tuple(
        int(v) % x.ndim for v in np.asarray(a["axes"]).reshape(-1))
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=axes, keepdims=True)
    eps = np.float32(1e-5) if a.get("epsilon") is None else _acc(a["epsilon"])
    out = centered / np.sqrt(variance + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.get("gamma") is not None:
        out = out * _acc(a["gamma"]).reshape(shape)
    if a.get("beta") is not None:
        out = out + _acc(a["beta"]).reshape(shape)
    return out


def scaled_dot_product_attention(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]
                                 ) -> np.ndarray:
    """iOS18 fused attention ``softmax(Q K^T / sqrt(E) + mask) V`` over the last two axes, batch axes
    broadcast, computed in fp32 and rounded once (a fused op). A bool mask marks the allowed keys."""
    q, k, v = _acc(a["query"]), _acc(a["key"]), _acc(a["value"])
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(np.float32(q.shape[-1]))
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = scores + (np.where(mask, 0.0, -np.inf).astype(np.float32) if mask.dtype == bool else _acc(mask))
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


def _reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def kernel(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
        axes = a.get("axes")
        axis = None if axes is None else tuple(int(v) for v in np.asarray(axes).reshape(-1))
        return fn(_acc(a["x"]), axis=axis, keepdims=bool(a.get("keep_dims", False)))

    return kernel


def matmul(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    x, y = _acc(a["x"]), _acc(a["y"])
    if bool(a.get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(a.get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def linear(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    out = np.matmul(_acc(a["x"]), _acc(a["weight"]).T)
    return out if a.get("bias") is None else out + _acc(a["bias"])


def einsum(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    """MIL's einsum (rank 3 or 4): size-1 batch axes (-2 and -4 in rank 4) broadcast."""
    x, y = (_acc(v) for v in a["values"])
    if x.ndim == 4:
        b, h = max(x.shape[0], y.shape[0]), max(x.shape[2], y.shape[2])
        x = np.broadcast_to(x, (b, x.shape[1], h, x.shape[3]))
        y = np.broadcast_to(y, (b, y.shape[1], h, y.shape[3]))
    elif x.ndim == 3:
        h = max(x.shape[1], y.shape[1])
        x = np.broadcast_to(x, (x.shape[0], h, x.shape[2]))
        y = np.broadcast_to(y, (y.shape[0], h, y.shape[2]))
    else:
        raise UnsupportedOpError(f"einsum on rank {x.ndim} inputs")
    return np.einsum(str(a["equation"]), x, y)


def concat(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    values = [np.atleast_1d(np.asarray(v)) for v in a["values"]]  # scalars concatenate as 1-vectors
    axis = int(a["axis"])
    if not bool(a.get("interleave", False)):
        return np.concatenate(values, axis=axis)
    axis = axis % values[0].ndim
    stacked = np.stack(values, axis=axis + 1)  # interleave: x0[0], x1[0], ..., x0[1], x1[1], ...
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def split(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    x = np.asarray(a["x"])
    axis = int(a["axis"])
    if a.get("split_sizes") is not None:
        bounds = np.cumsum(_ints(a["split_sizes"], []))[:-1]
        return tuple(np.split(x, bounds, axis=axis))
    return tuple(np.split(x, int(a["num_splits"]), axis=axis))


def reshape(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    """MIL reshape: -1 is inferred, 0 copies the input's size on that axis."""
    x = np.asarray(a["x"])
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(_ints(a["shape"], []))]
    return x.reshape(shape)


def cast(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(a["x"]).astype(string_to_nptype(str(a["dtype"])))


def slice_by_index(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    x = np.asarray(a["x"])

    def opt(name: str) -> list[Any] | None:
        v = a.get(name)
        return None if v is None else list(np.asarray(v).reshape(-1))

    slices = solve_slice_by_index_slice(x.shape, opt("begin"), opt("end"), opt("stride"),
                                        opt("begin_mask"), opt("end_mask"), opt("squeeze_mask"))
    out = x[slices]
    axes = get_squeeze_axes(opt("squeeze_mask"), x.ndim)
    return np.squeeze(out, axis=tuple(axes)) if axes else out


def identity(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(a["x"])


def read_state(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    return states[op.inputs["input"].name].copy()


def coreml_update_state(op: Operation, a: Mapping[str, Value], states: dict[str, np.ndarray]) -> np.ndarray:
    name = op.inputs["state"].name
    value = np.asarray(a["value"])
    if value.shape != states[name].shape:
        raise ValueError(f"{op.name}: state {name} has shape {states[name].shape}, update has {value.shape}")
    states[name] = value.astype(states[name].dtype)
    return states[name].copy()


KERNELS: dict[str, Kernel] = {
    "conv": conv,
    "silu": silu,
    "softmax": softmax,
    "layer_norm": layer_norm,
    "scaled_dot_product_attention": scaled_dot_product_attention,
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "matmul": matmul,
    "linear": linear,
    "einsum": einsum,
    "concat": concat,
    "split": split,
    "reshape": reshape,
    "cast": cast,
    "slice_by_index": slice_by_index,
    "identity": identity,
    "read_state": read_state,
    "coreml_update_state": coreml_update_state,
}


# ---- value_inference bridge -----------------------------------------------------------------------

class _RuntimeVar:
    """Stands in for an input Var during ``value_inference``: val/sym_val/shape/dtype from the runtime
    value; anything else (name, op, ...) from the program's Var."""

    def __init__(self, value: Value, var: Var) -> None:
        self.val = value
        self.sym_val = value
        self._var = var

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.val))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> type:
        return numpy_type_to_builtin_type(np.asarray(self.val).dtype)

    @property
    def sym_type(self) -> type:
        return types.tensor(self.dtype, self.shape) if self.shape else self.dtype

    def __getattr__(self, name: str) -> Any:
        return getattr(self._var, name)


class _RuntimeOp:
    """A view of an Operation whose inputs are :class:`_RuntimeVar` s; the op's class methods run bound
    to this view, so ``value_inference`` computes on runtime values."""

    def __init__(self, op: Operation, inputs: dict[str, Any]) -> None:
        self._op = op
        self._input_vars = inputs

    _functions: dict[tuple[type, str], pytypes.FunctionType | None] = {}

    def __getattr__(self, name: str) -> Any:
        if name in self._input_vars:
            return self._input_vars[name]
        key = (type(self._op), name)
        if key not in self._functions:
            static = inspect.getattr_static(key[0], name, None)
            self._functions[key] = static if isinstance(static, pytypes.FunctionType) else None
        function = self._functions[key]
        return function.__get__(self) if function is not None else getattr(self._op, name)


def _via_value_inference(op: Operation, a: Mapping[str, Value]) -> Any:
    if type(op).value_inference is Operation.value_inference:
        raise UnsupportedOpError(f"op {op.op_type} ({op.name}) has no kernel and no value_inference")
    bound: dict[str, Any] = {}
    for name, var in op._input_vars.items():
        if var is None or name not in a:
            bound[name] = None
        elif isinstance(var, (list, tuple)):
            bound[name] = tuple(_RuntimeVar(v, sub) for v, sub in zip(a[name], var, strict=True))
        else:
            bound[name] = _RuntimeVar(a[name], var)
    result = type(op).value_inference(_RuntimeOp(op, bound))
    if result is None or (isinstance(result, tuple) and any(r is None for r in result)):
        raise UnsupportedOpError(f"value_inference of {op.op_type} ({op.name}) gave no value")
    return result


@dataclass(frozen=True)
class OutputType:
    """How an output Var's value is stored: numpy dtype, and whether it is a scalar."""

    dtype: np.dtype
    scalar: bool


def output_types(op: Operation) -> list[OutputType]:
    """The storage type of each output of ``op`` (tensors and scalars only)."""
    result = []
    for var in op.outputs:
        if not (types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type)):
            raise UnsupportedOpError(f"output {var.name} has type {var.sym_type}, not a tensor or scalar")
        result.append(OutputType(np.dtype(nptype_from_builtin(var.dtype)), types.is_scalar(var.sym_type)))
    return result


def _conform(value: Any, kind: OutputType) -> Any:
    """A computed value in its output dtype (fp16 programs round here): an array for a tensor, a numpy
    scalar for a scalar."""
    arr = np.asarray(value, dtype=kind.dtype)
    return arr.reshape(())[()] if kind.scalar else arr


def evaluate_op(op: Operation, inputs: Mapping[str, Value], states: dict[str, np.ndarray],
                out_types: list[OutputType] | None = None) -> list[Any]:
    """Outputs of ``op`` (one value per output Var) given its input values by input name.

    ``states`` maps state names to their current arrays; state ops read and replace entries.
    ``out_types`` (from :func:`output_types`) saves recomputing the output types on every call.
    """
    kinds = output_types(op) if out_types is None else out_types
    kernel = KERNELS.get(op.op_type)
    result = kernel(op, inputs, states) if kernel is not None else _via_value_inference(op, inputs)
    outputs = list(result) if isinstance(result, (tuple, list)) and len(kinds) > 1 else [result]
    if len(outputs) != len(kinds):
        raise UnsupportedOpError(f"{op.op_type} ({op.name}) produced {len(outputs)} values for "
                                 f"{len(kinds)} outputs")
    return [_conform(v, k) for v, k in zip(outputs, kinds, strict=True)]
