"""Static Apple Neural Engine lint over a MIL program: what would keep ops off the ANE or break it.

Levels: ``error`` means the Neural Engine cannot run the op as converted (a tensor dimension over
16384 in a compute op); ``warning`` means it runs, but off the Neural Engine or slower (fp32 compute,
ops the ANE does not implement, state axes not multiples of 32, more transposes/reshapes than the
layout needs, einsum forms that lower to extra transposes); ``info`` notes what is expected off the
ANE (table lookups such as the embedding, integer shape/position arithmetic, assembling the
concatenated logits on the CPU). Symbolic (flexible) dimensions are not checked against the limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from coremltools.converters.mil.mil import Block, Function, Program, types
from coremltools.converters.mil.mil.operation import Operation
from coremltools.converters.mil.mil.var import Var

from conversion.ane_model import ANE_MAX_DIM, STATE_ALIGNMENT

Level = Literal["info", "warning", "error"]

ANE_EINSUM_FORMS = frozenset({"bchq,bkhc->bkhq", "bkhc,bchq->bkhq", "bkhq,bchk->bchq", "bchk,bkhq->bchq"})
"""The einsum forms of ml-ane-transformers (either operand order); others add transposes/reshapes."""

OFF_ANE_OPS = frozenset({
    "gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "scatter_along_axis",
    "non_zero", "topk", "argsort", "cumsum", "reduce_argmax", "reduce_argmin", "while_loop", "cond",
    "random_bernoulli", "random_categorical", "random_normal", "random_uniform", "non_maximum_suppression",
    "band_part", "one_hot", "range_1d", "shape", "fill", "fill_like",
})
"""Ops the Neural Engine does not run (Core ML places them on the CPU or GPU)."""

LAYOUT_OPS = frozenset({"concat", "squeeze", "expand_dims", "transpose", "reshape", "cast"})
"""Data-movement ops; at the end of a function they assemble outputs (e.g. chunked logits)."""


@dataclass(frozen=True)
class Finding:
    """One lint result. ``ops`` names up to five example ops."""

    level: Level
    code: str
    message: str
    function: str
    ops: tuple[str, ...] = ()


@dataclass
class LintReport:
    """Findings over all functions and an op histogram per function (constants excluded)."""

    findings: list[Finding] = field(default_factory=list)
    op_histogram: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``errors`` and ``warnings`` counts, ``findings`` and ``op_histogram``."""
        return {
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) | {"ops": list(f.ops)} for f in self.findings],
            "op_histogram": self.op_histogram,
        }


def _operations(block: Block) -> Iterable[Operation]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _operations(inner)


def _is_constant(op: Operation) -> bool:
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def _tensor_vars(op: Operation) -> list[Var]:
    inputs: list[Var] = []
    for value in op.inputs.values():
        inputs.extend(value if isinstance(value, (list, tuple)) else [value])
    return [v for v in [*inputs, *op.outputs] if types.is_tensor(v.sym_type)]


def _is_float(var: Var) -> bool:
    return types.is_float(var.dtype)


def _computes_floats(op: Operation) -> bool:
    return any(types.is_tensor(v.sym_type) and _is_float(v) for v in op.outputs)


def _reads_constant_table(op: Operation) -> bool:
    x = op.inputs.get("x")
    return x is not None and x.op is not None and _is_constant(x.op)


def _max_static_dim(var: Var) -> int:
    dims = [int(d) for d in var.shape if not types.symbolic.is_symbolic(d)]
    return max(dims, default=0)


def _assembly_ops(function: Function) -> set[str]:
    """Layout ops whose results reach only other such ops or the function's outputs."""
    outputs = {v.name for v in function.outputs}
    assembly: set[str] = set()
    for op in reversed(list(function.operations)):
        if op.op_type not in LAYOUT_OPS:
            continue
        consumers = [child for v in op.outputs for child in v.child_ops]
        if all(c.name in assembly for c in consumers) and (
                consumers or any(v.name in outputs for v in op.outputs)):
            assembly.add(op.name)
    return assembly


def _group(level: Level, code: str, ops: list[Operation], message: str, function: str) -> Finding:
    return Finding(level, code, message, function, tuple(op.name for op in ops[:5]))


def lint_function(function: Function, name: str, layout_budget: Mapping[str, int] | None = None,
                  ) -> tuple[list[Finding], dict[str, int]]:
    """Findings and op histogram of one function. ``layout_budget`` caps op types such as
    ``{"transpose": 3, "reshape": 0}`` (what the layout needs); counts above it are warnings."""
    ops = [op for op in _operations(function) if not _is_constant(op)]
    histogram = dict(sorted(Counter(op.op_type for op in ops).items()))
    findings: list[Finding] = []
    assembly = _assembly_ops(function)

    fp32 = [op for op in ops if any(_is_float(v) and v.dtype == types.fp32 for v in op.outputs
                                    if types.is_tensor(v.sym_type))]
    if fp32:
        kinds = ", ".join(sorted({op.op_type for op in fp32}))
        findings.append(_group("warning", "FP32_COMPUTE", fp32,
                               f"{len(fp32)} ops compute in fp32 ({kinds}); the Neural Engine runs fp16 only",
                               name))

    lookups = [op for op in ops if op.op_type == "gather" and _computes_floats(op) and _reads_constant_table(op)]
    if lookups:
        findings.append(_group("info", "TABLE_LOOKUP", lookups,
                               f"{len(lookups)} gathers from constant tables (embedding, RoPE) run on the CPU; "
                               "expected", name))
    integer = [op for op in ops if not _computes_floats(op) and op.op_type not in
               ("read_state", "coreml_update_state")]
    if integer:
        findings.append(_group("info", "INTEGER_ARITHMETIC", integer,
                               f"{len(integer)} integer/bool ops (shape and position arithmetic) run on the CPU",
                               name))
    off = [op for op in ops if op.op_type in OFF_ANE_OPS and _computes_floats(op) and op not in lookups]
    for op_type in sorted({op.op_type for op in off}):
        group = [op for op in off if op.op_type == op_type]
        findings.append(_group("warning", "OFF_ANE_OP", group,
                               f"{len(group)} {op_type} ops on float tensors run off the Neural Engine", name))

    too_big = [op for op in ops if _computes_floats(op) and op not in lookups
               and any(_max_static_dim(v) > ANE_MAX_DIM for v in _tensor_vars(op))]
    blocked = [op for op in too_big if op.name not in assembly]
    if blocked:
        findings.append(_group("error", "DIM_LIMIT", blocked,
                               f"{len(blocked)} ops have a tensor dimension > {ANE_MAX_DIM}; split them "
                               "(e.g. chunk the lm_head)", name))
    assembled = [op for op in too_big if op.name in assembly]
    if assembled:
        findings.append(_group("info", "OUTPUT_ASSEMBLY", assembled,
                               f"{len(assembled)} layout ops assemble outputs wider than {ANE_MAX_DIM} "
                               "(concatenated logits) on the CPU", name))

    for state_name, var in function.inputs.items():
        if not types.is_state(var.sym_type):
            continue
        wrapped = var.sym_type.wrapped_type()
        shape = [int(d) for d in wrapped.get_shape()]
        bad = [axis for axis, d in enumerate(shape) if axis > 0 and d > 1 and d % STATE_ALIGNMENT]
        if bad:
            findings.append(Finding("warning", "STATE_ALIGNMENT",
                                    f"state {state_name} {tuple(shape)}: axes {bad} are not multiples of "
                                    f"{STATE_ALIGNMENT}", name))
        if wrapped.get_primitive() != types.fp16:
            findings.append(Finding("warning", "STATE_DTYPE",
                                    f"state {state_name} is {types.builtin_to_string(wrapped.get_primitive())}, "
                                    "not fp16", name))

    for op_type, budget in sorted((layout_budget or {}).items()):
        count = histogram.get(op_type, 0)
        if count > budget:
            group = [op for op in ops if op.op_type == op_type]
            findings.append(_group("warning", "LAYOUT_OPS", group,
                                   f"{count} {op_type} ops, the layout needs {budget}", name))
    odd = [op for op in ops if op.op_type == "einsum" and str(op.inputs["equation"].val) not in ANE_EINSUM_FORMS]
    if odd:
        findings.append(_group("warning", "EINSUM_FORM", odd,
                               f"{len(odd)} einsums use forms other than bchq,bkhc->bkhq / bkhq,bchk->bchq", name))
    return findings, histogram


def lint_program(program: Program, layout_budget: Mapping[str, Mapping[str, int]] | None = None) -> LintReport:
    """Lint every function; ``layout_budget`` maps function name -> op type -> allowed count."""
    report = LintReport()
    for name, function in program.functions.items():
        findings, histogram = lint_function(function, name, (layout_budget or {}).get(name))
        report.findings.extend(findings)
        report.op_histogram[name] = histogram
    return report
