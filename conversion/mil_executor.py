"""A reference executor for Core ML ML Programs: walks a MIL function and evaluates it in numpy.

Core ML's runtime exists only on Apple platforms; this runs a converted program anywhere, so a
conversion can be verified numerically on Linux. :func:`load_program` reads the MIL program back
from a saved ``.mlpackage`` (what ships is what runs); :class:`MilFunction` evaluates one function of
it. Values live in an environment keyed by Var name; each op's outputs are computed by
:func:`conversion.mil_kernels.evaluate_op`; ``cond`` and ``while_loop`` evaluate their nested blocks;
states are numpy arrays the caller owns and the function updates.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coremltools as ct
import numpy as np
from coremltools.converters.mil.frontend.milproto import load as milproto_load
from coremltools.converters.mil.mil import Block, Program, types
from coremltools.converters.mil.mil.operation import Operation
from coremltools.converters.mil.mil.types.type_mapping import nptype_from_builtin
from coremltools.converters.mil.mil.var import Var

from conversion.criteria import kl_divergences, relative_error
from conversion.mil_kernels import OutputType, UnsupportedOpError, evaluate_op, output_types

WIDENING_OPS = frozenset({"conv", "linear", "matmul", "einsum", "layer_norm", "scaled_dot_product_attention"})
"""Ops whose kernels widen every fp16 tensor input to fp32 before computing
(:func:`conversion.mil_kernels._acc`): their fp16 constant inputs (weights) are handed over already
widened, converted once per function instead of on every call (on a 135M model the per-call conversion
was 60% of the verification time)."""


def load_program(package: str | Path) -> Program:
    """The MIL program stored in an ``.mlpackage`` (all functions of a multifunction package)."""
    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{package} is not an ML Program (found {spec.WhichOneof('Type')})")
    return milproto_load.load(spec, spec.specificationVersion, model.weights_dir)


def _constant_value(op: Operation) -> Any:
    """Value of a ``const`` or ``constexpr_*`` op: an array of its output dtype for a tensor; a Python
    scalar for a numeric scalar (numpy treats it as weakly typed, and value_inference passes parameters
    such as ``keep_dims`` straight to numpy, which refuses numpy bools there); strings as stored."""
    var = op.outputs[0]
    if op.op_type != "const":
        return np.asarray(op.materialized_val_inference(), dtype=nptype_from_builtin(var.dtype))
    value = var.val if var.val is not None else var.sym_val
    if types.is_tensor(var.sym_type):
        return np.asarray(value, dtype=nptype_from_builtin(var.dtype))
    return value.item() if isinstance(value, np.generic) else value


def is_constant_op(op: Operation) -> bool:
    """``const`` and the compile-time decompression ops (``constexpr_*``)."""
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


_MISSING = object()


@dataclass
class _Step:
    """One op ready to run: inputs as (name, "var" | "tuple" | "state" | "wide", Var / Vars / state name /
    constant name); "wide" is an fp16 constant of a :data:`WIDENING_OPS` op, passed as its fp32 copy."""

    op: Operation
    inputs: list[tuple[str, str, Any]]
    outputs: list[str]
    out_types: list[OutputType]


class MilFunction:
    """One function of a MIL program, callable on numpy inputs.

    ``inputs`` lists the tensor inputs, ``state_shapes`` the states (name -> (shape, dtype)) and
    ``outputs`` the output names. Constants are materialized once, at construction.
    """

    def __init__(self, program: Program, name: str = "main") -> None:
        if name not in program.functions:
            raise KeyError(f"function {name!r} not in the program (has {sorted(program.functions)})")
        self.program = program
        self.name = name
        self.function = program.functions[name]
        self.inputs: list[str] = []
        self.state_shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for input_name, var in self.function.inputs.items():
            if types.is_state(var.sym_type):
                wrapped = var.sym_type.wrapped_type()
                self.state_shapes[input_name] = (tuple(int(d) for d in wrapped.get_shape()),
                                                 np.dtype(nptype_from_builtin(wrapped.get_primitive())))
            else:
                self.inputs.append(input_name)
        self.outputs = [v.name for v in self.function.outputs]
        self._constants: dict[str, Any] = {}
        self._wide: dict[str, np.ndarray] = {}  # fp32 copies of fp16 constants, made on first use
        self._plans: dict[int, list[_Step]] = {}
        self._collect_constants(self.function)

    def _collect_constants(self, block: Block) -> None:
        for op in block.operations:
            if is_constant_op(op):
                self._constants[op.outputs[0].name] = _constant_value(op)
            for inner in op.blocks:
                self._collect_constants(inner)

    def new_states(self) -> dict[str, np.ndarray]:
        """Zero-initialized states (a fresh KV cache)."""
        return {n: np.zeros(shape, dtype) for n, (shape, dtype) in self.state_shapes.items()}

    def __call__(self, inputs: Mapping[str, np.ndarray], states: dict[str, np.ndarray] | None = None,
                 ) -> dict[str, np.ndarray]:
        """Run the function; ``states`` (required when the function has states) is updated in place."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise KeyError(f"function {self.name!r} needs inputs {missing}")
        if self.state_shapes and states is None:
            raise ValueError(f"function {self.name!r} is stateful: pass states (see new_states())")
        states = {} if states is None else states
        env: dict[str, Any] = dict(self._constants)
        for n in self.inputs:
            var = self.function.inputs[n]
            env[n] = np.asarray(inputs[n], dtype=nptype_from_builtin(var.dtype))
        results = self._run_block(self.function, env, states)
        return dict(zip(self.outputs, results, strict=True))

    def _value(self, var: Var, env: Mapping[str, Any]) -> Any:
        value = env.get(var.name, _MISSING)
        if value is not _MISSING:
            return value
        if var.val is not None:
            return var.val
        raise KeyError(f"no value for {var.name} in function {self.name!r}")

    def _widened(self, name: str) -> np.ndarray:
        """The fp32 copy of the fp16 constant ``name`` (read-only; made once)."""
        wide = self._wide.get(name)
        if wide is None:
            wide = self._constants[name].astype(np.float32)
            wide.flags.writeable = False
            self._wide[name] = wide
        return wide

    def _is_fp16_constant(self, var: Var) -> bool:
        value = self._constants.get(var.name)
        return isinstance(value, np.ndarray) and value.dtype == np.float16

    def _plan(self, block: Block) -> list[_Step]:
        """The block's non-constant ops with their inputs and output types resolved once."""
        plan = self._plans.get(id(block))
        if plan is None:
            plan = []
            for op in block.operations:
                if is_constant_op(op):
                    continue
                inputs: list[tuple[str, str, Any]] = []
                for name, var in op.inputs.items():
                    if isinstance(var, (list, tuple)):
                        inputs.append((name, "tuple", tuple(var)))
                    elif types.is_state(var.sym_type):
                        inputs.append((name, "state", var.name))
                    elif op.op_type in WIDENING_OPS and self._is_fp16_constant(var):
                        inputs.append((name, "wide", var.name))
                    else:
                        inputs.append((name, "var", var))
                out_types = output_types(op) if op.op_type not in ("cond", "while_loop") else []
                plan.append(_Step(op, inputs, [v.name for v in op.outputs], out_types))
            self._plans[id(block)] = plan
        return plan

    def _run_block(self, block: Block, env: dict[str, Any], states: dict[str, np.ndarray]) -> list[Any]:
        for step in self._plan(block):
            op = step.op
            if op.op_type == "cond":
                outputs = self._run_cond(op, env, states)
            elif op.op_type == "while_loop":
                outputs = self._run_while(op, env, states)
            else:
                values: dict[str, Any] = {}
                for name, kind, payload in step.inputs:
                    if kind == "var":
                        values[name] = self._value(payload, env)
                    elif kind == "tuple":
                        values[name] = tuple(self._value(v, env) for v in payload)
                    elif kind == "wide":
                        values[name] = self._widened(payload)
                    else:
                        values[name] = payload
                try:
                    outputs = evaluate_op(op, values, states, step.out_types)
                except UnsupportedOpError:
                    raise
                except Exception as exc:  # the op, its shapes and the cause, for debugging programs
                    raise RuntimeError(f"evaluating {op.op_type} {op.name!r} failed: {exc}") from exc
            for name, value in zip(step.outputs, outputs, strict=True):
                env[name] = value
        return [self._value(v, env) for v in block.outputs]

    def _run_cond(self, op: Operation, env: dict[str, Any], states: dict[str, np.ndarray]) -> list[Any]:
        pred = bool(np.asarray(self._value(op.inputs["pred"], env)))
        branch = op.blocks[0] if pred else op.blocks[1]
        return self._run_block(branch, dict(env), states)

    def _run_while(self, op: Operation, env: dict[str, Any], states: dict[str, np.ndarray]) -> list[Any]:
        cond_block, body_block = op.blocks
        values = [self._value(v, env) for v in op.inputs["loop_vars"]]
        while True:
            scope = dict(env)
            scope.update({v.name: x for v, x in zip(cond_block.inputs, values, strict=True)})
            if not bool(np.asarray(self._run_block(cond_block, scope, states)[0])):
                return values
            scope = dict(env)
            scope.update({v.name: x for v, x in zip(body_block.inputs, values, strict=True)})
            values = self._run_block(body_block, scope, states)


# ---- running a converted language model -----------------------------------------------------------

PREFILL_FUNCTION = "prefill"
DECODE_FUNCTION = "decode"


@dataclass(frozen=True)
class LengthChoices:
    """Sequence lengths a function accepts: an enumerated set, or every length in [low, high]."""

    low: int
    high: int
    enumerated: tuple[int, ...] | None = None

    def allows(self, n: int) -> bool:
        return n in self.enumerated if self.enumerated is not None else self.low <= n <= self.high

    def fit(self, n: int) -> int:
        """The smallest accepted length >= n (inputs are right-padded up to it)."""
        fits = [m for m in (self.enumerated or (max(n, self.low),)) if m >= n and m <= self.high]
        if not fits:
            raise ValueError(f"length {n} exceeds the largest accepted length {self.high}")
        return min(fits)

    def chunks(self, n: int) -> list[int]:
        """n split into accepted chunk lengths, largest first (needs length 1 or an exact fit)."""
        parts: list[int] = []
        while n > 0:
            fitting = [m for m in (self.enumerated or (min(n, self.high),)) if m <= n and self.allows(m)]
            if not fitting:
                raise ValueError(f"cannot split {n} tokens into accepted chunk lengths {self}")
            parts.append(max(fitting))
            n -= parts[-1]
        return parts


def _function_description(spec: Any, function: str) -> Any:
    for description in spec.description.functions:
        if description.name == function:
            return description
    if function == "main" and not spec.description.functions:
        return spec.description
    raise KeyError(f"no function {function!r} in the model description")


def input_shape_choices(spec: Any, function: str, input_name: str, axis: int) -> LengthChoices:
    """Accepted sizes of one axis of an input, read from the model description (fixed, enumerated or
    ranged)."""
    for item in _function_description(spec, function).input:
        if item.name != input_name:
            continue
        array = item.type.multiArrayType
        flex = array.WhichOneof("ShapeFlexibility")
        if flex == "enumeratedShapes":
            sizes = tuple(sorted({int(s.shape[axis]) for s in array.enumeratedShapes.shapes}))
            return LengthChoices(sizes[0], sizes[-1], sizes)
        if flex == "shapeRange":
            bounds = array.shapeRange.sizeRanges[axis]
            high = int(bounds.upperBound) if bounds.upperBound > 0 else int(bounds.lowerBound)
            return LengthChoices(int(bounds.lowerBound), high)
        size = int(array.shape[axis])
        return LengthChoices(size, size, (size,))
    raise KeyError(f"function {function!r} has no input {input_name!r}")


class LanguageModelRunner(ABC):
    """Runs a converted student: ``prefill`` (stateless, whole sequence) and, when the package has one,
    the stateful ``decode`` function (chunks of new tokens at a position). Logits come back as fp32
    (T, V) arrays. Subclasses supply the calls (the numpy executor, or Core ML's ``predict`` on macOS).
    """

    def __init__(self, spec: Any, pad_id: int) -> None:
        names = {f.name for f in spec.description.functions}
        self.prefill_name = PREFILL_FUNCTION if PREFILL_FUNCTION in names else "main"
        self.decode_name = DECODE_FUNCTION if DECODE_FUNCTION in names else None
        self.prefill_lengths = input_shape_choices(spec, self.prefill_name, "input_ids", 1)
        self.decode_lengths = None
        self.cache_len = 0
        if self.decode_name is not None:
            self.decode_lengths = input_shape_choices(spec, self.decode_name, "input_ids", 1)
            self.cache_len = input_shape_choices(spec, self.decode_name, "mask", 1).high
        self.pad_id = pad_id

    @property
    def stateful(self) -> bool:
        return self.decode_name is not None

    @property
    def max_length(self) -> int:
        """Longest sequence both functions handle."""
        return min(self.prefill_lengths.high, self.cache_len) if self.stateful else self.prefill_lengths.high

    @abstractmethod
    def _call_prefill(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """input_ids (1, S) int32, mask (1, S, 1, S) -> logits (1, S, V)."""

    @abstractmethod
    def _new_state(self) -> Any:
        """Fresh (zero) decode state."""

    @abstractmethod
    def _call_decode(self, input_ids: np.ndarray, position: np.ndarray, mask: np.ndarray, state: Any) -> np.ndarray:
        """input_ids (1, S), position (1,), mask (1, cache_len, 1, S) -> logits (1, S, V); updates state."""

    def prefill(self, tokens: list[int]) -> np.ndarray:
        """Logits (T, V) for a sequence, right-padded to an accepted length (causal: padding after the
        sequence does not change it)."""
        from conversion.ane_model import prefill_mask

        length = self.prefill_lengths.fit(len(tokens))
        ids = np.full((1, length), self.pad_id, dtype=np.int32)
        ids[0, : len(tokens)] = tokens
        logits = self._call_prefill(ids, prefill_mask(length).numpy())
        return np.asarray(logits, dtype=np.float32)[0, : len(tokens)]

    def decode_session(self) -> DecodeSession:
        if not self.stateful:
            raise ValueError("this package has no stateful decode function")
        return DecodeSession(self)


class DecodeSession:
    """One sequence through the stateful decode function: ``feed`` appends tokens, returns their logits."""

    def __init__(self, runner: LanguageModelRunner) -> None:
        self.runner = runner
        self.state = runner._new_state()
        self.position = 0

    def feed(self, tokens: list[int]) -> np.ndarray:
        """Logits (len(tokens), V) of the new tokens, fed in accepted chunk lengths."""
        from conversion.ane_model import decode_mask

        runner = self.runner
        assert runner.decode_lengths is not None
        if self.position + len(tokens) > runner.cache_len:
            raise ValueError(f"{self.position + len(tokens)} tokens exceed the cache length {runner.cache_len}")
        out, start = [], 0
        for size in runner.decode_lengths.chunks(len(tokens)):
            ids = np.asarray([tokens[start:start + size]], dtype=np.int32)
            mask = decode_mask(self.position, size, runner.cache_len).numpy()
            logits = runner._call_decode(ids, np.asarray([self.position], dtype=np.int32), mask, self.state)
            out.append(np.asarray(logits, dtype=np.float32)[0])
            self.position += size
            start += size
        return np.concatenate(out, axis=0)


class ExecutorRunner(LanguageModelRunner):
    """Runs a saved package with the numpy reference executor (any platform). ``program`` overrides the
    package's program (e.g. an edited copy); the package still supplies the input descriptions.

    ``decode_package`` (a package whose default function is a stateful decode, e.g. the same decoder
    converted with a shorter cache for verification) replaces the package's own decode function:
    prefill runs from ``package``, decode and the cache length come from ``decode_package``.
    """

    def __init__(self, package: str | Path, pad_id: int, program: Program | None = None,
                 decode_package: str | Path | None = None) -> None:
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
        super().__init__(spec, pad_id)
        program = load_program(package) if program is None else program
        self.prefill_fn = MilFunction(program, self.prefill_name)
        if decode_package is not None:
            decode_spec = ct.models.MLModel(str(decode_package), skip_model_load=True).get_spec()
            names = {f.name for f in decode_spec.description.functions}
            name = DECODE_FUNCTION if DECODE_FUNCTION in names else "main"
            self.decode_name = name
            self.decode_lengths = input_shape_choices(decode_spec, name, "input_ids", 1)
            self.cache_len = input_shape_choices(decode_spec, name, "mask", 1).high
            self.decode_fn: MilFunction | None = MilFunction(load_program(decode_package), name)
        else:
            self.decode_fn = MilFunction(program, self.decode_name) if self.decode_name else None

    def _call_prefill(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.prefill_fn({"input_ids": input_ids, "mask": mask})["logits"]

    def _new_state(self) -> dict[str, np.ndarray]:
        assert self.decode_fn is not None
        return self.decode_fn.new_states()

    def _call_decode(self, input_ids: np.ndarray, position: np.ndarray, mask: np.ndarray, state: Any) -> np.ndarray:
        assert self.decode_fn is not None
        return self.decode_fn({"input_ids": input_ids, "position": position, "mask": mask}, state)["logits"]


class PredictRunner(LanguageModelRunner):
    """Runs a saved package with Core ML itself (``MLModel.predict``; macOS only)."""

    def __init__(self, package: str | Path, pad_id: int) -> None:
        if sys.platform != "darwin":
            raise RuntimeError("MLModel.predict needs Core ML, which exists only on macOS")
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
        super().__init__(spec, pad_id)
        multi = bool(spec.description.functions)
        self.prefill_model = ct.models.MLModel(str(package), function_name=self.prefill_name if multi else None)
        self.decode_model = ct.models.MLModel(str(package), function_name=self.decode_name) if self.decode_name else None

    def _call_prefill(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.prefill_model.predict({"input_ids": input_ids, "mask": mask.astype(np.float16)})["logits"]

    def _new_state(self) -> Any:
        assert self.decode_model is not None
        return self.decode_model.make_state()

    def _call_decode(self, input_ids: np.ndarray, position: np.ndarray, mask: np.ndarray, state: Any) -> np.ndarray:
        assert self.decode_model is not None
        inputs = {"input_ids": input_ids, "position": position, "mask": mask.astype(np.float16)}
        return self.decode_model.predict(inputs, state=state)["logits"]


# ---- verification against PyTorch ----------------------------------------------------------------

Reference = Callable[[list[int]], np.ndarray]
"""PyTorch logits (T, V) in fp32 for a token sequence."""


def rel_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """max |candidate - reference| / max |reference| (one number for the whole tensor;
    :func:`conversion.criteria.relative_error`)."""
    return relative_error(candidate, reference)


def greedy_reference(reference: Reference, prompt: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    """Greedy continuation under the reference (recomputed each step), stopping after ``eos_id``."""
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        tokens.append(int(reference(tokens)[-1].argmax()))
        if tokens[-1] == eos_id:
            break
    return tokens[len(prompt):]


def greedy_candidate(runner: LanguageModelRunner, prompt: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    """Greedy continuation by the converted program: stateful decode when the package has it, else
    the prefill function over the growing sequence."""
    new: list[int] = []
    session = runner.decode_session() if runner.stateful else None
    logits = session.feed(prompt) if session else runner.prefill(prompt)
    for _ in range(max_new_tokens):
        new.append(int(logits[-1].argmax()))
        if new[-1] == eos_id or len(new) == max_new_tokens:
            break
        logits = session.feed(new[-1:]) if session else runner.prefill(prompt + new)
    return new


@dataclass
class Verification:
    """Numbers from comparing a converted program with its PyTorch reference on fixed prompts.

    ``greedy_tokens_identical`` is strict. ``greedy_divergences`` describes each prompt's first differing
    token: the reference's margin between its token and the program's, and whether that margin is a
    near tie (within twice the logits tolerance, where fp16 cannot decide the argmax);
    ``greedy_consistent`` holds when every divergence is a near tie. ``prefill_kl_per_token`` and
    ``decode_kl_per_token`` are the mean KL(reference || program) in nats over every compared position
    (:func:`conversion.criteria.kl_per_token`); ``kl_per_token`` is the larger.
    """

    prefill_rel_error: float
    decode_rel_error: float | None
    greedy_tokens_identical: bool
    prompts_checked: int
    greedy: list[dict[str, list[int]]]
    greedy_divergences: list[dict[str, Any]]
    prefill_kl_per_token: float = 0.0
    decode_kl_per_token: float | None = None

    @property
    def kl_per_token(self) -> float:
        return max(self.prefill_kl_per_token, self.decode_kl_per_token or 0.0)

    @property
    def greedy_consistent(self) -> bool:
        return all(d["near_tie"] for d in self.greedy_divergences)


def fit_prompt(prompt: list[int], max_new_tokens: int, max_length: int) -> tuple[list[int], int]:
    """Keep the prompt's last tokens and cap new tokens so prompt + continuation fit ``max_length``."""
    new = max(0, min(max_new_tokens, max_length - 1))
    return prompt[-(max_length - new):], new


def first_divergence(reference: Reference, prompt: list[int], expected: list[int], got: list[int],
                     tolerance: float) -> dict[str, Any] | None:
    """Where two greedy continuations first differ, with the reference's logit margin there."""
    step = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    if step is None:
        if len(expected) == len(got):
            return None
        raise ValueError("greedy continuations differ in length without differing in a token")
    logits = reference(prompt + expected[:step])[-1]
    margin = float(logits[expected[step]] - logits[got[step]])
    threshold = 2.0 * tolerance * float(np.abs(logits).max())
    return {"step": step, "reference_token": expected[step], "coreml_token": got[step], "margin": margin,
            "threshold": threshold, "near_tie": margin <= threshold}


def verify_runner(runner: LanguageModelRunner, reference: Reference, prompts: list[list[int]],
                  max_new_tokens: int, eos_id: int, tolerance: float) -> Verification:
    """Prefill logits, stateful decode logits (prompt as chunks, then one token at a time, along the
    reference's greedy continuation) and greedy tokens, all against ``reference``. ``tolerance`` is the
    relative logits tolerance, used to tell near ties from real greedy divergences."""
    prefill_err, decode_err = 0.0, None if not runner.stateful else 0.0
    prefill_kl: list[np.ndarray] = []
    decode_kl: list[np.ndarray] = []
    records: list[dict[str, list[int]]] = []
    divergences: list[dict[str, Any]] = []
    for index, raw in enumerate(prompts):
        prompt, new = fit_prompt(raw, max_new_tokens, runner.max_length)
        expected = greedy_reference(reference, prompt, new, eos_id)
        sequence = prompt + expected[:-1] if expected else prompt
        ref_logits = reference(sequence)
        prefilled = runner.prefill(sequence)
        prefill_err = max(prefill_err, rel_error(prefilled, ref_logits))
        prefill_kl.append(kl_divergences(ref_logits, prefilled))
        if runner.stateful:
            session = runner.decode_session()
            stepped = np.concatenate([session.feed(prompt)] + [session.feed([t]) for t in sequence[len(prompt):]])
            decode_err = max(decode_err or 0.0, rel_error(stepped, ref_logits))
            decode_kl.append(kl_divergences(ref_logits, stepped))
        got = greedy_candidate(runner, prompt, new, eos_id)
        records.append({"prompt": prompt, "reference": expected, "coreml": got})
        divergence = first_divergence(reference, prompt, expected, got, tolerance)
        if divergence is not None:
            divergences.append({"prompt": index, **divergence})
    identical = not divergences
    return Verification(prefill_err, decode_err, identical, len(prompts), records, divergences,
                        prefill_kl_per_token=_mean(prefill_kl),
                        decode_kl_per_token=_mean(decode_kl) if runner.stateful else None)


def _mean(parts: list[np.ndarray]) -> float:
    """Mean over every element of the arrays (0.0 when there are none)."""
    values = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0)
    return float(values.mean()) if values.size else 0.0
