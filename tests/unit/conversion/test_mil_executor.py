"""The numpy reference executor against PyTorch on tiny converted students, and on hand-built programs."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from coremltools.converters.mil.mil import Builder as mb
from coremltools.converters.mil.mil import types as mil_types

from conversion.ane_model import prefill_mask
from conversion.convert_coreml import (
    CoreMLOptions,
    build_modules,
    convert_module,
    save_package,
    student_reference,
)
from conversion.mil_executor import (
    ExecutorRunner,
    LengthChoices,
    MilFunction,
    PredictRunner,
    greedy_candidate,
    greedy_reference,
    load_program,
    rel_error,
    verify_runner,
)
from conversion.mil_kernels import UnsupportedOpError
from training.model import Student
from training.tokenizer import DistilleryTokenizer

PROMPTS = ("Q: 5-1+8=?\n", "Set a timer for", "The quick brown fox")
OPTIONS = CoreMLOptions(seq_lens="4,8,32", cache_len=32, lm_head_chunk=100)


@pytest.fixture(scope="module")
def package(tiny_student: Student, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp16 multifunction package: prefill + stateful decode, lm_head in 4 chunks."""
    prefill, decoder = build_modules(tiny_student, OPTIONS, OPTIONS.cache_len or 32)
    prefill_ml = convert_module(prefill, OPTIONS.lengths, OPTIONS, stateful=False)
    decode_ml = convert_module(decoder, OPTIONS.lengths.with_one(), OPTIONS, stateful=True)
    out = tmp_path_factory.mktemp("coreml") / "tiny.mlpackage"
    assert save_package(prefill_ml, decode_ml, out) == ["prefill", "decode"]
    return out


@pytest.fixture(scope="module")
def runner(package: Path, tiny_student: Student) -> ExecutorRunner:
    return ExecutorRunner(package, pad_id=tiny_student.config.pad_token_id)


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer: DistilleryTokenizer) -> list[list[int]]:
    return [tiny_tokenizer.encode(p, add_bos=True) for p in PROMPTS]


def test_fp32_program_matches_pytorch_to_1e5(tiny_student: Student) -> None:
    options = OPTIONS.model_copy(update={"precision": "fp32", "stateful": False})
    prefill, _ = build_modules(tiny_student, options, 32)
    mlmodel = convert_module(prefill, options.lengths, options, stateful=False)
    function = MilFunction(mlmodel._mil_program, "main")
    ids = np.arange(2, 18, dtype=np.int32)[None]
    out = function({"input_ids": ids, "mask": prefill_mask(16).numpy()})["logits"]
    assert out.dtype == np.float32 and out.shape == (1, 16, tiny_student.config.vocab_size)
    with torch.no_grad():
        ref = tiny_student(torch.from_numpy(ids).long()).numpy()
    assert rel_error(out, ref) < 1e-5


def test_fp16_prefill_matches_pytorch(runner: ExecutorRunner, tiny_student: Student,
                                      prompts: list[list[int]]) -> None:
    reference = student_reference(tiny_student)
    for tokens in prompts:
        got = runner.prefill(tokens)  # right-padded to an enumerated length, trimmed back
        assert got.shape == (len(tokens), tiny_student.config.vocab_size)
        assert rel_error(got, reference(tokens)) <= 3e-3


def test_stateful_decode_equals_prefill_position_by_position(runner: ExecutorRunner, tiny_student: Student,
                                                             prompts: list[list[int]]) -> None:
    tokens = prompts[0] + prompts[1]
    assert runner.stateful and runner.cache_len == 32
    full = runner.prefill(tokens)
    session = runner.decode_session()
    stepped = [session.feed(tokens[:7])] + [session.feed([t]) for t in tokens[7:]]  # 7 = chunks 4 + 1+1+1
    decoded = np.concatenate(stepped)
    assert session.position == len(tokens)
    for position in range(len(tokens)):
        assert rel_error(decoded[position], full[position]) <= 3e-3, position
    assert rel_error(decoded, student_reference(tiny_student)(tokens)) <= 3e-3


def test_greedy_tokens_identical_and_verification_passes(runner: ExecutorRunner, tiny_student: Student,
                                                         prompts: list[list[int]]) -> None:
    reference = student_reference(tiny_student)
    eos = tiny_student.config.eos_token_id
    for tokens in prompts:
        assert greedy_candidate(runner, tokens, 6, eos) == greedy_reference(reference, tokens, 6, eos)
    result = verify_runner(runner, reference, prompts, 6, eos, tolerance=3e-3)
    assert result.greedy_tokens_identical and result.greedy_consistent
    assert result.prompts_checked == len(prompts)
    assert result.prefill_rel_error <= 3e-3 and result.decode_rel_error is not None
    assert result.decode_rel_error <= 3e-3


def test_a_perturbed_mil_weight_is_caught(package: Path, tiny_student: Student, prompts: list[list[int]]) -> None:
    program = load_program(package)
    for name in ("prefill", "decode"):
        op = next(op for op in program.functions[name].operations
                  if op.op_type == "const" and "layers_1_mlp_down_proj" in op.outputs[0].name)
        var = op.outputs[0]
        var._sym_val.val = (var.val * 1.1).astype(var.val.dtype)
    perturbed = ExecutorRunner(package, pad_id=tiny_student.config.pad_token_id, program=program)
    result = verify_runner(perturbed, student_reference(tiny_student), prompts, 4,
                           tiny_student.config.eos_token_id, tolerance=3e-3)
    assert result.prefill_rel_error > 3e-3
    assert result.decode_rel_error is not None and result.decode_rel_error > 3e-3


def test_a_perturbed_torch_reference_is_caught(runner: ExecutorRunner, tiny_student: Student,
                                               prompts: list[list[int]]) -> None:
    other = copy.deepcopy(tiny_student)
    with torch.no_grad():
        other.model.layers[0].self_attn.v_proj.weight.mul_(1.1)
    result = verify_runner(runner, student_reference(other), prompts, 4, other.config.eos_token_id, 3e-3)
    assert result.prefill_rel_error > 3e-3


def test_general_conv_matches_torch() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4, 9, 8))], opset_version=ct.target.iOS17)
    def prog(x):  # type: ignore[no-untyped-def]
        custom = mb.conv(x=x, weight=weight, bias=bias, strides=[2, 1], pad_type="custom", pad=[1, 0, 2, 1],
                         dilations=[1, 2], groups=2)
        same = mb.conv(x=x, weight=weight, pad_type="same", groups=2)
        return custom, same

    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    custom, same = MilFunction(prog).__call__({"x": x}).values()
    xt, wt = torch.from_numpy(x), torch.from_numpy(weight)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (2, 1, 1, 0)), wt, torch.from_numpy(bias),
                                      stride=(2, 1), dilation=(1, 2), groups=2)
    assert np.allclose(custom, want.numpy(), atol=1e-5)
    assert np.allclose(same, torch.nn.functional.conv2d(xt, wt, padding="same", groups=2).numpy(), atol=1e-5)


def test_matmul_linear_reshape_reductions_and_interleave() -> None:
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((5, 4)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 4)), mb.TensorSpec(shape=(2, 5, 4))],
                opset_version=ct.target.iOS17)
    def prog(x, y):  # type: ignore[no-untyped-def]
        product = mb.matmul(x=x, y=y, transpose_y=True)  # (2, 3, 5)
        dense = mb.linear(x=x, weight=weight, bias=bias)  # (2, 3, 5)
        flat = mb.reshape(x=product, shape=[0, -1])  # 0 copies the input's size on that axis
        total = mb.reduce_sum(x=dense, axes=[1], keep_dims=False)
        woven = mb.concat(values=[x, mb.add(x=x, y=1.0)], axis=1, interleave=True)
        return flat, total, woven

    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y = rng.standard_normal((2, 5, 4)).astype(np.float32)
    flat, total, woven = MilFunction(prog)({"x": x, "y": y}).values()
    assert np.allclose(flat, (x @ y.transpose(0, 2, 1)).reshape(2, 15), atol=1e-5)
    assert np.allclose(total, (x @ weight.T + bias).sum(axis=1), atol=1e-5)
    expected = np.stack([x, x + 1.0], axis=2).reshape(2, 6, 4)
    assert np.array_equal(woven, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_norm_kernel_matches_torch_and_rounds_once(dtype: type) -> None:
    rng = np.random.default_rng(3)
    gamma = (rng.random(6) + 0.5).astype(dtype)
    beta = rng.standard_normal(6).astype(dtype)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 6, 1, 5), dtype=ct.converters.mil.mil.types.numpy_type_to_builtin_type(dtype))],
                opset_version=ct.target.iOS17)
    def prog(x):  # type: ignore[no-untyped-def]
        return mb.layer_norm(x=x, axes=[1], gamma=gamma, beta=beta, epsilon=dtype(1e-5))

    x = (rng.standard_normal((1, 6, 1, 5)) * 100).astype(dtype)
    (out,) = MilFunction(prog)({"x": x}).values()
    tokens_last = torch.from_numpy(x.astype(np.float64))[0, :, 0, :].t()
    expected = torch.nn.functional.layer_norm(tokens_last, (6,), torch.from_numpy(gamma.astype(np.float64)),
                                              torch.from_numpy(beta.astype(np.float64)), eps=1e-5)
    expected = expected.t()[None, :, None, :].numpy()
    assert out.dtype == dtype
    # fp32 computes exactly; fp16 is one rounding of the exact result (half an ulp, 2^-11 relative)
    assert np.allclose(out, expected, rtol=2.0**-11 if dtype == np.float16 else 1e-5, atol=1e-6)


def test_fused_attention_kernel_matches_torch_with_broadcast_batch_and_masks() -> None:
    rng = np.random.default_rng(4)
    q = rng.standard_normal((1, 2, 3, 5, 4)).astype(np.float32)  # (B, KV, G, L, E)
    k = rng.standard_normal((1, 2, 1, 6, 4)).astype(np.float32)  # broadcast over G
    v = rng.standard_normal((1, 2, 1, 6, 4)).astype(np.float32)
    additive = np.where(rng.random((1, 1, 1, 5, 6)) < 0.3, -1e4, 0.0).astype(np.float32)
    allowed = np.tril(np.ones((5, 6), dtype=bool), k=1)

    @mb.program(input_specs=[mb.TensorSpec(shape=q.shape), mb.TensorSpec(shape=k.shape),
                             mb.TensorSpec(shape=v.shape), mb.TensorSpec(shape=additive.shape)],
                opset_version=ct.target.iOS18)
    def prog(query, key, value, mask):  # type: ignore[no-untyped-def]
        tiled_k = mb.tile(x=key, reps=[1, 1, 3, 1, 1])
        tiled_v = mb.tile(x=value, reps=[1, 1, 3, 1, 1])
        float_masked = mb.scaled_dot_product_attention(query=query, key=tiled_k, value=tiled_v, attn_mask=mask)
        bool_masked = mb.scaled_dot_product_attention(query=query, key=tiled_k, value=tiled_v, attn_mask=allowed)
        return float_masked, bool_masked

    got_float, got_bool = MilFunction(prog)({"query": q, "key": k, "value": v, "mask": additive}).values()
    tq, tk, tv = (torch.from_numpy(x.astype(np.float64)) for x in (q, k, v))
    want_float = torch.nn.functional.scaled_dot_product_attention(
        tq, tk.expand(1, 2, 3, 6, 4), tv.expand(1, 2, 3, 6, 4), attn_mask=torch.from_numpy(additive).double())
    want_bool = torch.nn.functional.scaled_dot_product_attention(
        tq, tk.expand(1, 2, 3, 6, 4), tv.expand(1, 2, 3, 6, 4), attn_mask=torch.from_numpy(allowed))
    assert np.allclose(got_float, want_float.numpy(), atol=1e-5)
    assert np.allclose(got_bool, want_bool.numpy(), atol=1e-5)


def test_nested_blocks_cond_and_while_loop() -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(3,)), mb.TensorSpec(shape=(1,))],
                opset_version=ct.target.iOS17)
    def prog(x, flag):  # type: ignore[no-untyped-def]
        pred = mb.greater(x=mb.reduce_sum(x=flag), y=0.0)
        branch = mb.cond(pred=pred, _true_fn=lambda: mb.mul(x=x, y=2.0), _false_fn=lambda: mb.sub(x=x, y=1.0))
        count, acc = mb.while_loop(
            _cond=lambda i, a: mb.less(x=i, y=np.int32(4)),
            _body=lambda i, a: (mb.add(x=i, y=np.int32(1)), mb.add(x=a, y=x)),
            loop_vars=(np.int32(0), mb.mul(x=x, y=0.0)),
        )
        return branch, count, acc

    fn = MilFunction(prog)
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    branch, count, acc = fn({"x": x, "flag": np.array([1.0], np.float32)}).values()
    assert np.allclose(branch, 2 * x) and int(count) == 4 and np.allclose(acc, 4 * x)
    branch, _, _ = fn({"x": x, "flag": np.array([-1.0], np.float32)}).values()
    assert np.allclose(branch, x - 1)


def test_value_inference_ops_and_missing_kernels() -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 5))], opset_version=ct.target.iOS17)
    def prog(x):  # type: ignore[no-untyped-def]
        gathered = mb.gather(x=x, indices=np.array([4, 0], dtype=np.int32), axis=1)
        return mb.select(cond=mb.greater(x=gathered, y=0.0), a=mb.exp(x=gathered), b=mb.tanh(x=gathered))

    x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    (out,) = MilFunction(prog)({"x": x}).values()
    picked = x[:, [4, 0]]
    assert np.allclose(out, np.where(picked > 0, np.exp(picked), np.tanh(picked)), atol=1e-6)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 3))], opset_version=ct.target.iOS17)
    def unsupported(x):  # type: ignore[no-untyped-def]
        return mb.batch_norm(x=x, mean=np.zeros(2, np.float32), variance=np.ones(2, np.float32))

    with pytest.raises(UnsupportedOpError, match="batch_norm"):
        MilFunction(unsupported)({"x": np.ones((1, 2, 3), np.float32)})


def test_stateful_function_requires_states(package: Path) -> None:
    decode = MilFunction(load_program(package), "decode")
    assert set(decode.state_shapes) == {"key_cache", "value_cache"}
    with pytest.raises(ValueError, match="stateful"):
        decode({"input_ids": np.zeros((1, 1), np.int32), "position": np.zeros(1, np.int32),
                "mask": np.zeros((1, 32, 1, 1), np.float16)})
    with pytest.raises(KeyError, match="needs inputs"):
        decode({"input_ids": np.zeros((1, 1), np.int32)}, decode.new_states())


def test_predict_runner_needs_core_ml(package: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("Core ML is available here; test_predict_matches_the_executor covers it")
    with pytest.raises(RuntimeError, match="macOS"):
        PredictRunner(package, pad_id=0)


@pytest.mark.skipif(sys.platform != "darwin", reason="MLModel.predict needs Core ML (macOS)")
def test_predict_matches_the_executor(package: Path, runner: ExecutorRunner, prompts: list[list[int]]) -> None:
    predicted = PredictRunner(package, pad_id=runner.pad_id)
    for tokens in prompts:
        assert rel_error(predicted.prefill(tokens), runner.prefill(tokens)) <= 3e-3
        session, reference = predicted.decode_session(), runner.decode_session()
        assert rel_error(session.feed(tokens), reference.feed(tokens)) <= 3e-3


def test_length_choices() -> None:
    enumerated = LengthChoices(1, 16, (1, 4, 16))
    assert enumerated.fit(3) == 4 and enumerated.fit(16) == 16
    assert enumerated.chunks(22) == [16, 4, 1, 1]
    with pytest.raises(ValueError):
        enumerated.fit(17)
    ranged = LengthChoices(2, 10)
    assert ranged.fit(1) == 2 and ranged.fit(7) == 7
    assert ranged.chunks(23) == [10, 10, 3]


def test_rel_error_is_max_abs_over_max_reference() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.5]])
    assert rel_error(ref + np.array([[0.0, 0.2], [0.0, -0.4]]), ref) == pytest.approx(0.1)


def test_fp16_weights_are_widened_once_and_results_unchanged() -> None:
    """fp16 constants feeding conv / linear are converted to fp32 once per function (not per call), and
    the outputs equal the per-call widening: fp32 products of the fp16 values, rounded once to fp16."""
    rng = np.random.default_rng(5)
    conv_w = rng.standard_normal((6, 4, 1, 1)).astype(np.float16)
    lin_w = rng.standard_normal((3, 4)).astype(np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 1, 5), dtype=mil_types.fp16),
                             mb.TensorSpec(shape=(2, 4), dtype=mil_types.fp16)],
                opset_version=ct.target.iOS17)
    def prog(x, y):  # type: ignore[no-untyped-def]
        return mb.conv(x=x, weight=conv_w), mb.linear(x=y, weight=lin_w)

    function = MilFunction(prog)
    x = rng.standard_normal((1, 4, 1, 5)).astype(np.float16)
    y = rng.standard_normal((2, 4)).astype(np.float16)
    first = list(function({"x": x, "y": y}).values())
    widened = dict(function._wide)
    assert {w.shape for w in widened.values()} >= {conv_w.shape, lin_w.shape}  # (and linear's zero bias)
    assert all(w.dtype == np.float32 and not w.flags.writeable for w in widened.values())
    second = list(function({"x": x, "y": y}).values())
    assert all(function._wide[name] is w for name, w in widened.items())  # converted once, reused
    conv_want = np.einsum("oc,ncs->nos", conv_w[:, :, 0, 0].astype(np.float32),
                          x[:, :, 0, :].astype(np.float32))[:, :, None, :].astype(np.float16)
    lin_want = (y.astype(np.float32) @ lin_w.astype(np.float32).T).astype(np.float16)
    for got in (first, second):
        assert got[0].dtype == np.float16 and np.array_equal(got[0], conv_want)
        assert np.array_equal(got[1], lin_want)
