"""int8 QAT: the straight-through estimator, fake-quant == dequantize(quantize(w)), learned scales, the int8
export round trip, tied embeddings, the trainer hook and int8 accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config
from safetensors.torch import load_file
from torch import nn

from training.kd.evaluation import evaluate_task
from training.kd.quant_qat_int8 import (
    INT8,
    QMAX,
    FakeQuantLinear,
    QATConfig,
    QATHook,
    QuantScheme,
    TiedFakeQuantEmbedding,
    dequantize,
    dequantize_per_channel,
    enable_qat,
    export_int8,
    fake_quantize,
    int8_accuracy,
    load_int8,
    load_qat_student,
    materialize_int8,
    max_abs_scale,
    qat_start_step,
    quantization_error,
    quantize_per_channel,
    save_int8,
    scale_drift,
    shadow_fp32,
)
from training.kd.trainer import KDTrainer, TrainerHook
from training.model import Student
from training.model_config import ModelConfig
from training.tasks.arithmetic import generate
from training.tokenizer import DistilleryTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _qat_steps(model: Student, ids: torch.Tensor, steps: int = 3, lr: float = 5e-2,
               scheme: QuantScheme = INT8) -> None:
    """A few optimizer steps under QAT so the learned scales leave their max-abs start."""
    assert enable_qat(model, scheme=scheme)
    opt = torch.optim.Adam(model.parameters(), lr=lr)  # the scales are model parameters now
    for _ in range(steps):
        logits = model(ids)
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_ste_gradient_is_identity_inside_the_clamp_range_and_zero_outside() -> None:
    scale = torch.tensor([0.01, 0.02])
    weight = torch.tensor([[0.5, -1.0, 1.26, 1.28, -1.5], [0.001, 2.53, 2.55, -3.0, 0.0]], requires_grad=True)
    upstream = torch.randn(2, 5)
    (fake_quantize(weight, scale) * upstream).sum().backward()
    inside = (weight.detach() / scale[:, None]).abs() <= QMAX
    assert inside.tolist() == [[True, True, True, False, False], [True, True, False, False, True]]
    assert weight.grad is not None
    assert torch.allclose(weight.grad[inside], upstream[inside], rtol=1e-6)
    assert torch.equal(weight.grad[~inside], torch.zeros_like(weight.grad[~inside]))


def test_scale_gradient_is_lsq() -> None:
    """d/ds of sum(fake_quantize(w, s)) per row: sum of round(w/s) - w/s inside, ±qmax outside."""
    weight = torch.tensor([[0.013, -0.027, 2.0, -3.0]])
    scale = torch.tensor([0.01], requires_grad=True)
    fake_quantize(weight, scale).sum().backward()
    x = weight / 0.01
    expected = (x[0, :2].round() - x[0, :2]).sum() + QMAX - QMAX
    assert scale.grad is not None and float(scale.grad) == pytest.approx(float(expected), abs=1e-4)


def test_fake_quant_forward_equals_dequantized_int8_matmul() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    fq = FakeQuantLinear.wrap(linear)
    with torch.no_grad():
        fq.log_scale.add_(torch.linspace(-0.3, 0.3, 8))  # scales other than max-abs: some weights clip
    x = torch.randn(3, 5, 16)
    q = quantize_per_channel(linear.weight, fq.scale())
    assert q.dtype == torch.int8 and int(q.abs().max()) == QMAX
    expected = x @ dequantize_per_channel(q, fq.scale()).T + linear.bias
    assert torch.equal(fq(x), expected)
    assert torch.equal(fake_quantize(linear.weight, fq.scale()), dequantize_per_channel(q, fq.scale()))


def test_max_abs_scale_maps_each_rows_largest_weight_to_127() -> None:
    weight = torch.tensor([[0.5, -2.54, 1.0], [0.0, 0.0, 0.0], [1e-3, 2e-3, -3e-3]])
    scale = max_abs_scale(weight)
    q = quantize_per_channel(weight, scale)
    assert q.abs().amax(1).tolist() == [127, 0, 127]
    assert torch.allclose(dequantize_per_channel(q, scale), weight, atol=float(scale.max()) / 2)


def test_enable_qat_wraps_every_linear_but_not_the_embedding(tiny_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = Student(tiny_config)
    weights = {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    ids = torch.randint(0, tiny_config.vocab_size, (2, 9))
    with torch.no_grad():
        before = model(ids)
    params = enable_qat(model)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(linears) == set(weights) and all(isinstance(m, FakeQuantLinear) for m in linears.values())
    assert all(linears[n].weight is w for n, w in weights.items())  # same Parameters: optimizers keep working
    assert len(params) == len(weights)
    assert type(model.model.embed_tokens) is nn.Embedding  # untied: the embedding stays float
    assert enable_qat(model) == []  # idempotent
    with torch.no_grad():
        after = model(ids)
    assert 0 < float((before - after).abs().max()) < 0.05  # int8 noise, not a different model


def test_export_round_trips_after_qat(tiny_config: ModelConfig, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Student(tiny_config)
    ids = torch.randint(0, tiny_config.vocab_size, (4, 12))
    _qat_steps(model, ids)
    assert scale_drift(model) > 1e-3  # the scales were learned, not max-abs
    state = export_int8(model)
    linear_keys = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for key in linear_keys:
        assert state[key].dtype == torch.int8 and int(state[key].abs().max()) <= QMAX
        assert state[key + "_scale"].shape == (state[key].shape[0],)
    assert not any(k.endswith("log_scale") for k in state)
    assert state["model.embed_tokens.weight"].dtype == torch.float32
    path = save_int8(state, tmp_path / "int8.safetensors")
    loaded = load_int8(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    plain = Student(tiny_config)
    plain.load_state_dict(dequantize(loaded))
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(ids), model(ids), atol=1e-5)
        assert torch.equal(materialize_int8(model)(ids), plain(ids))
    for key in linear_keys:  # re-quantizing the dequantized weights with the learned scales gives the same int8
        assert torch.equal(quantize_per_channel(dict(plain.named_parameters())[key], state[key + "_scale"]),
                           state[key])
    with pytest.raises(ValueError, match="no"):
        dequantize({"w": state[linear_keys[0]]})


def test_tied_model_quantizes_the_shared_matrix_once(tiny_config: ModelConfig) -> None:
    config = ModelConfig(**{**tiny_config.__dict__, "tie_word_embeddings": True})
    torch.manual_seed(2)
    model = Student(config)
    ids = torch.randint(0, config.vocab_size, (3, 10))
    _qat_steps(model, ids, steps=2)
    assert isinstance(model.model.embed_tokens, TiedFakeQuantEmbedding)
    assert model.model.embed_tokens.weight is model.lm_head.weight
    state = export_int8(model)
    assert "lm_head.weight" not in state and state["model.embed_tokens.weight"].dtype == torch.int8
    with torch.no_grad():
        int8_model = materialize_int8(model)
        assert torch.allclose(int8_model(ids), model(ids), atol=1e-5)
        head = model.lm_head
        assert isinstance(head, FakeQuantLinear)
        assert torch.equal(model.model.embed_tokens(ids), head.quantized_weight()[ids])


def test_quantization_error_and_shadow_weights(tiny_config: ModelConfig) -> None:
    torch.manual_seed(3)
    model = Student(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    err = quantization_error(model, ids)
    assert 0 < err["max_abs_logit_error"] < 0.05 and err["mean_kl"] >= 0 and 0.5 <= err["top1_agreement"] <= 1
    on_grid = materialize_int8(model)
    assert quantization_error(on_grid, ids)["max_abs_logit_error"] < 1e-5  # already int8: nothing to lose
    _qat_steps(model, ids, steps=1)
    with torch.no_grad():
        assert torch.equal(shadow_fp32(model).lm_head.weight, model.lm_head.weight)
        assert not torch.allclose(shadow_fp32(model)(ids), model(ids))


def test_qat_start_step() -> None:
    assert qat_start_step(800, 0.75) == 600
    assert qat_start_step(10, 0.0) == 0
    with pytest.raises(ValueError):
        qat_start_step(10, 1.5)


def test_hook_turns_qat_on_for_the_last_part_of_a_kd_run(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "setup", n_train=32, n_val=4, teacher=False)
    cfg = tiny_config(setup, tmp_path / "run", optim={"max_steps": 6, "warmup_steps": 1},
                      eval={"every": 6, "generate_examples": 0}, checkpoint={"every": 6, "keep_last": 1})
    hook = QATHook(start_step=4)
    trainer = KDTrainer(cfg, hooks=[hook])
    steps_under_qat: list[bool] = []

    class Probe(TrainerHook):
        def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
            steps_under_qat.append(isinstance(trainer.student.lm_head, FakeQuantLinear))

    trainer.hooks.insert(0, Probe())  # runs before the QAT hook at each step end
    result = trainer.train()
    assert hook.enabled_at == 4 and steps_under_qat == [False] * 4 + [True] * 2
    assert len(trainer.optimizer.param_groups) == 3 and scale_drift(trainer.student) > 0
    assert result.student_dir is not None
    loaded = load_qat_student(result.student_dir)
    ids = torch.randint(0, loaded.config.vocab_size, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded(ids), trainer.student.eval()(ids), atol=1e-6)
        exported, expected = export_int8(loaded), export_int8(trainer.student)
    assert set(exported) == set(expected) and all(torch.equal(exported[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match="not trained with QAT"):
        load_qat_student(make_plain_artifact(tmp_path, trainer.student.config))


def make_plain_artifact(root: Path, config: ModelConfig) -> Path:
    return Student(config).save_pretrained(root / "plain")


def test_int8_accuracy_of_a_qat_model_is_its_own_accuracy(tiny_config: ModelConfig,
                                                          tiny_tokenizer: DistilleryTokenizer) -> None:
    """The QAT forward already computes with int8 weights, so the simulated int8 model scores the same."""
    torch.manual_seed(4)
    model = Student(tiny_config)
    _qat_steps(model, torch.randint(0, tiny_config.vocab_size, (2, 8)), steps=1)
    examples = [dict(e) for e in generate(4, 0)]
    assert int8_accuracy(model, tiny_tokenizer, examples, max_new_tokens=6) == evaluate_task(
        model, tiny_tokenizer, examples, "arithmetic", 6)


def test_resume_under_qat_equals_the_uninterrupted_qat_run(tmp_path: Path) -> None:
    """A run stopped after QAT started resumes (scales, scale optimizer group and all) and ends with the
    same weights and scales as the run that was never interrupted."""
    setup = make_tiny_setup(tmp_path / "setup", n_train=32, n_val=4, teacher=False)

    def config(out: str) -> Any:
        return tiny_config(setup, tmp_path / out, optim={"max_steps": 6, "warmup_steps": 1},
                           eval={"every": 6, "generate_examples": 0}, checkpoint={"every": 6, "keep_last": 2})

    full = KDTrainer(config("full"), hooks=[QATHook(start_step=2)]).train()
    part = KDTrainer(config("split"), hooks=[QATHook(start_step=2)], stop_after_steps=4).train()
    assert part.status == "stopped_early" and part.step == 4
    hook = QATHook(start_step=2)
    rest = KDTrainer(config("split"), hooks=[hook]).train()
    assert rest.status == "completed" and rest.step == 6 and hook.enabled_at == 2
    assert full.student_dir is not None and rest.student_dir is not None
    a, b = load_file(full.student_dir / "model.safetensors"), load_file(rest.student_dir / "model.safetensors")
    assert any(k.endswith("log_scale") for k in a) and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("per_tensor", [False, True])
def test_int4_qat_trains_exports_and_runs_what_it_trained(tiny_config: ModelConfig, per_tensor: bool) -> None:
    """4-bit weights (levels -7..7), per channel or per tensor: QAT modules carry the scheme into the forward,
    the export (int4 values in int8 storage, learned scales), the materialized model and the plain quantizer;
    a plain 4-bit model loses more than a plain 8-bit one."""
    torch.manual_seed(3)
    scheme = QuantScheme(qmax=7, per_tensor=per_tensor)
    model = Student(tiny_config)
    ids = torch.randint(0, tiny_config.vocab_size, (4, 12))
    fp32 = Student(tiny_config)
    fp32.load_state_dict(model.state_dict())
    err8 = quantization_error(fp32, ids)["mean_kl"]
    err4 = quantization_error(fp32, ids, scheme=scheme)["mean_kl"]
    assert err4 > 10 * err8  # 4 bits is the lossy setting
    plain_state = export_int8(fp32, scheme)
    assert int(plain_state["model.layers.0.mlp.down_proj.weight"].abs().max()) == 7
    scales = plain_state["model.layers.0.mlp.down_proj.weight_scale"]
    assert bool((scales == scales[0]).all()) == per_tensor
    _qat_steps(model, ids, scheme=scheme)
    modules = [m for m in model.modules() if isinstance(m, FakeQuantLinear)]
    assert modules and all(m.scheme == scheme for m in modules)
    assert all(m.log_scale.numel() == (1 if per_tensor else m.out_features) for m in modules)
    assert scale_drift(model) > 1e-3  # the scales were learned
    state = export_int8(model)  # the scheme taken from the QAT modules
    linear_keys = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert all(int(state[k].abs().max()) <= 7 for k in linear_keys)
    plain = Student(tiny_config)
    plain.load_state_dict(dequantize(state))
    plain.eval()
    with torch.no_grad():
        out = model(ids)
        torch.testing.assert_close(plain(ids), out, rtol=1e-5, atol=1e-5 * float(out.abs().max()))
        assert torch.equal(materialize_int8(model)(ids), plain(ids))
    with pytest.raises(ValueError, match="bits"):
        QATConfig(bits=2)
    assert QATConfig(bits=4).qmax == 7 and QATConfig().scheme == INT8
    assert QATConfig(bits=4, granularity="per_tensor").scheme == QuantScheme(7, True)
