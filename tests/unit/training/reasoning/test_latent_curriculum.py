"""Latent curriculum: the stage schedule, config validation, training (stages, optimizer reset, halt head),
and evaluation of a latent student."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from training.model import Student
from training.model_config import ModelConfig
from training.reasoning.latent_curriculum import (
    LatentCurriculumConfig,
    LatentTrainer,
    evaluate_latent,
    latent_loss,
    stage_at,
    step_metrics,
    total_steps,
)
from training.reasoning.latent_data import collate_latent, latent_row
from training.reasoning.latent_model import latent_forward
from training.tasks.arithmetic import generate
from training.tokenizer import DistilleryTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return [dict(e) for e in generate(24, 5)]


def _model(config: ModelConfig, seed: int = 0) -> Student:
    torch.manual_seed(seed)
    return Student(config)


def test_stage_schedule() -> None:
    assert [stage_at(s, 1, 3, 4) for s in range(14)] == [1] * 4 + [2] * 4 + [3] * 6
    assert [stage_at(s, 0, 2, 2) for s in range(6)] == [0, 0, 1, 1, 2, 2]
    assert total_steps(1, 3, 4) == 12 and total_steps(0, 0, 5) == 5
    assert total_steps(1, 3, 4, 10) == 18 and total_steps(3, 3, 4, 7) == 7  # extended last stage
    with pytest.raises(ValueError):
        stage_at(0, 0, 1, 0)


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        LatentCurriculumConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        LatentCurriculumConfig(steps_per_stage=3, epochs_per_stage=1.0)
    with pytest.raises(ValidationError, match="first_stage"):
        LatentCurriculumConfig(steps_per_stage=3, first_stage=4, max_stage=3)
    with pytest.raises(ValidationError):
        LatentCurriculumConfig(steps_per_stage=3, stages=2)  # unknown key
    cfg = LatentCurriculumConfig(epochs_per_stage=1.5, batch_size=10)
    assert cfg.stage_steps(100) == 15
    spec = LatentCurriculumConfig(steps_per_stage=1, latents_per_step=2, max_stage=3).spec()
    assert spec.num_latents == 6 and not spec.adaptive


def test_curriculum_runs_every_stage_and_trains_the_model(tiny_config: ModelConfig,
                                                          tiny_tokenizer: DistilleryTokenizer,
                                                          examples: list[dict]) -> None:
    model = _model(tiny_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LatentCurriculumConfig(first_stage=0, max_stage=2, steps_per_stage=2, batch_size=3, lr=1e-2,
                                 warmup_steps=1, mix_prob=0.5)
    logs: list[str] = []
    result = LatentTrainer(cfg, model, tiny_tokenizer, examples, log=logs.append).train()
    assert result.steps == 6
    assert [h["stage"] for h in result.stages] == [0, 1, 2]
    assert [h["steps"] for h in result.stages] == [2, 2, 2]
    assert all(h["loss"] > 0 for h in result.stages)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.student.spec.num_latents == 2 and result.student.halt_head is None
    assert any("max_stage=2 < 3" in line for line in logs)  # examples with 3 steps keep one as text


def test_curriculum_lowers_the_final_stage_loss(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                examples: list[dict]) -> None:
    """Training at the all-latent stage lowers the loss of that stage on the training rows."""
    config = ModelConfig(**{**tiny_config.__dict__, "num_hidden_layers": 1})
    model = _model(config, seed=1)
    rows = [latent_row(e, 3, 1) for e in (LatentTrainer(
        LatentCurriculumConfig(steps_per_stage=1), model, tiny_tokenizer, examples[:4]).encoded)]
    batch = collate_latent(rows, tiny_tokenizer.pad_id)

    def loss() -> float:
        with torch.no_grad():
            return float(latent_loss(latent_forward(model, batch).logits, batch.labels))

    start = loss()
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=10, batch_size=4, lr=3e-2,
                                 warmup_steps=1)
    LatentTrainer(cfg, model, tiny_tokenizer, examples[:4]).train()
    assert loss() < 0.7 * start


def test_final_stage_steps_extend_the_last_stage(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                 examples: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """``final_stage_steps`` trains longer at max_stage only; with a reset the last stage's warmup/cosine spans
    its own steps, without one a single schedule spans the whole run."""
    import training.reasoning.latent_curriculum as lc_module

    cfg = LatentCurriculumConfig(first_stage=1, max_stage=3, steps_per_stage=2, final_stage_steps=5)
    assert cfg.final_steps(100) == 5 and cfg.total(100) == 9
    assert LatentCurriculumConfig(steps_per_stage=2).total(100) == 6  # default: one stage's steps
    calls: list[tuple[int, int]] = []
    original = lc_module.warmup_cosine

    def recording(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
        calls.append((step, max_steps))
        return original(step, warmup_steps=warmup_steps, max_steps=max_steps, min_ratio=min_ratio)

    monkeypatch.setattr(lc_module, "warmup_cosine", recording)
    for reset, expected in ((True, [(0, 2), (1, 2)] * 2 + [(i, 5) for i in range(5)]),
                            (False, [(i, 9) for i in range(9)])):
        calls.clear()
        run = cfg.model_copy(update={"batch_size": 2, "reset_optimizer": reset})
        result = LatentTrainer(run, _model(tiny_config), tiny_tokenizer, examples).train()
        assert result.steps == 9
        assert [(h["stage"], h["steps"]) for h in result.stages] == [(1, 2), (2, 2), (3, 5)]
        assert calls == expected


def test_optimizer_reset_restarts_adam_state(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                             examples: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    original = LatentTrainer._optimizer

    def counting(self: LatentTrainer) -> torch.optim.AdamW:
        built.append(1)
        return original(self)

    monkeypatch.setattr(LatentTrainer, "_optimizer", counting)
    for reset, expected in ((True, 3), (False, 1)):
        built.clear()
        cfg = LatentCurriculumConfig(first_stage=1, max_stage=3, steps_per_stage=1, batch_size=1,
                                     reset_optimizer=reset)
        LatentTrainer(cfg, _model(tiny_config), tiny_tokenizer, examples).train()
        assert len(built) == expected


def test_halt_head_trains_on_final_stage_rows(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                              examples: list[dict]) -> None:
    model = _model(tiny_config)
    cfg = LatentCurriculumConfig(first_stage=2, max_stage=3, steps_per_stage=2, batch_size=4, lr=1e-2,
                                 halt={"enabled": True, "width": 8})
    trainer = LatentTrainer(cfg, model, tiny_tokenizer, examples)
    assert trainer.halt_head is not None
    head_before = [p.clone() for p in trainer.halt_head.parameters()]
    lm_before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.train()
    assert result.stages[0]["halt"] == 0.0  # stage 2 < max_stage: the head is not trained yet
    assert result.stages[1]["halt"] > 0.0
    assert any(not torch.equal(a, b) for a, b in zip(head_before, trainer.halt_head.parameters(), strict=True))
    assert result.student.spec.adaptive and result.student.halt_head is trainer.halt_head
    # adaptive rows: latent count follows the example's steps
    rows = [latent_row(e, 3, 1, adaptive=True) for e in trainer.encoded]
    assert {r.n_latents for r in rows} == {e.n_steps for e in trainer.encoded}
    assert any(not torch.equal(lm_before[k], v) for k, v in model.state_dict().items())


def test_halt_loss_does_not_reach_the_language_model(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                     examples: list[dict]) -> None:
    """The halt head reads detached hidden states: its weight changes the head's gradient, not the LM's."""
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=1, halt={"enabled": True, "width": 8})
    trainer = LatentTrainer(cfg, _model(tiny_config), tiny_tokenizer, examples)
    assert trainer.halt_head is not None
    batch = trainer.batch(list(range(6)), 3)
    grads = []
    for weight in (1.0, 5.0):
        trainer.cfg.halt.weight = weight
        trainer.model.zero_grad()
        trainer.halt_head.zero_grad()
        loss, terms = trainer.loss(batch)
        loss.backward()
        assert terms["halt"] > 0
        grads.append(([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None],
                      [p.grad.clone() for p in trainer.halt_head.parameters()]))
    (lm1, head1), (lm5, head5) = grads
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(lm1, lm5, strict=True))
    assert all(torch.allclose(5 * a, b, atol=1e-6) for a, b in zip(head1, head5, strict=True))


def test_step_metrics() -> None:
    prompt = "Q: 2+3*4=?\n"
    good = "<think><step>3*4=12</step><step>2+12=14</step></think><answer>14</answer>"
    bad = "<think><step>2+3=5</step></think><answer>20</answer>"
    out = step_metrics([prompt, prompt], [good, bad])
    assert out == {"step_accuracy": 2 / 3, "steps_per_example": 1.5}
    assert step_metrics([prompt], ["<answer>14</answer>"])["step_accuracy"] is None


def test_evaluate_latent_reports_tokens_and_latents(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                    examples: list[dict]) -> None:
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=1, batch_size=2)
    result = LatentTrainer(cfg, _model(tiny_config), tiny_tokenizer, examples).train()
    metrics = evaluate_latent(result.student, tiny_tokenizer, examples[:5], max_new_tokens=4, batch_size=2)
    assert metrics["mean_latent_positions"] == 3.0
    assert 1.0 <= metrics["mean_generated_tokens"] <= 4.0
    assert metrics["mean_positions_after_prompt"] == metrics["mean_generated_tokens"] + 5.0
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "step_accuracy" in metrics
    assert "latent_count_matches_steps" not in metrics


def test_evaluate_adaptive_student_scores_its_halting(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                      examples: list[dict]) -> None:
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=1, batch_size=2,
                                 halt={"enabled": True, "width": 4})
    student = LatentTrainer(cfg, _model(tiny_config), tiny_tokenizer, examples).train().student
    assert student.halt_head is not None
    with torch.no_grad():  # a head that always halts at once: 0 latents, never the example's step count
        student.halt_head.net[-1].bias.fill_(50.0)
    metrics = evaluate_latent(student, tiny_tokenizer, examples[:4], max_new_tokens=3, batch_size=4)
    assert metrics["mean_latent_positions"] == 0.0 and metrics["latent_count_matches_steps"] == 0.0
    with torch.no_grad():  # never halts: max_stage * c = 3 latents, right for the 3-step examples only
        student.halt_head.net[-1].bias.fill_(-50.0)
    metrics = evaluate_latent(student, tiny_tokenizer, examples[:4], max_new_tokens=3, batch_size=4)
    three = sum(len(e["steps"]) == 3 for e in examples[:4]) / 4
    assert metrics["mean_latent_positions"] == 3.0 and metrics["latent_count_matches_steps"] == three


def test_step_supervision_teaches_the_thoughts_to_decode_their_steps(tiny_config: ModelConfig,
                                                                     tiny_tokenizer: DistilleryTokenizer,
                                                                     examples: list[dict]) -> None:
    """With ``step_supervision`` the loss has a step-decoding term that training lowers; its gradient reaches
    the thought vectors through the latent chain; with weight 0 the loss is plain Coconut (no term)."""
    model = _model(tiny_config, seed=2)
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=12, batch_size=4, lr=3e-2,
                                 warmup_steps=1, step_supervision=1.0)
    trainer = LatentTrainer(cfg, model, tiny_tokenizer, examples[:4])
    batch = trainer.batch([0, 1, 2, 3], 3)
    assert batch.thought_index is not None and batch.thought_index.shape[0] == sum(
        min(3, e.n_steps) for e in trainer.encoded[:4])
    out = latent_forward(model, batch)
    index = batch.thought_index
    thoughts = torch.stack(out.latent_inputs, dim=1)[index[:, 0], index[:, 1]]
    from training.reasoning.latent_model import thought_decoder_loss
    start_loss = thought_decoder_loss(model, thoughts, batch.thought_ids, batch.thought_mask)
    (grad,) = torch.autograd.grad(start_loss, out.latent_inputs[0])
    start = float(start_loss.detach())
    assert float(grad.abs().max()) > 0
    loss, terms = trainer.loss(batch)
    assert terms["loss"] == pytest.approx(terms["ce"] + terms["step_ce"], rel=1e-5)
    result = trainer.train()
    assert result.stages[-1]["step_ce"] < 0.8 * start
    plain = LatentTrainer(cfg.model_copy(update={"step_supervision": 0.0}), model, tiny_tokenizer, examples[:4])
    assert "step_ce" not in plain.loss(plain.batch([0, 1], 3))[1]


def test_answer_state_distill_pulls_the_latent_answer_state_to_the_chain_of_thoughts(
        tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer, examples: list[dict]) -> None:
    """With ``answer_state_distill`` the loss adds CODI's term against the same rows at stage 0 (computed
    without gradient), the term's gradient reaches the latent chain, and training lowers it."""
    model = _model(tiny_config, seed=5)
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=15, batch_size=4, lr=1e-2,
                                 warmup_steps=1, min_lr_ratio=1.0, answer_state_distill=1.0)
    trainer = LatentTrainer(cfg, model, tiny_tokenizer, examples[:4])
    rows = [0, 1, 2, 3]
    cot = trainer.cot_batch(rows)
    assert int(cot.latent_counts.sum()) == 0 and bool((cot.stages == 0).all())
    loss, terms = trainer.loss(trainer.batch(rows, 3), cot)
    assert terms["loss"] == pytest.approx(terms["ce"] + terms["answer_distill"], rel=1e-5)
    assert terms["answer_distill"] > 0
    first_latent = next(p for p in model.parameters() if p.requires_grad)
    (grad,) = torch.autograd.grad(loss, first_latent)
    assert float(grad.abs().max()) > 0
    trainer.cfg = cfg.model_copy(update={"answer_state_distill": 20.0})  # the term dominates: it must fall
    trainer.train()
    with torch.no_grad():
        after = trainer.loss(trainer.batch(rows, 3), cot)[1]["answer_distill"]
    assert after < 0.8 * terms["answer_distill"]
    assert "answer_distill" not in trainer.loss(trainer.batch(rows, 3))[1]  # no stage-0 rows, no term


def test_cot_ce_trains_the_teacher_task_jointly(tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer,
                                                examples: list[dict]) -> None:
    """``cot_ce`` adds the chain-of-thought CE of the same rows (CODI's teacher task) to the loss, with its
    gradient; without it the teacher forward carries none."""
    model = _model(tiny_config, seed=6)
    cfg = LatentCurriculumConfig(first_stage=3, max_stage=3, steps_per_stage=2, batch_size=4,
                                 answer_state_distill=1.0, cot_ce=0.5)
    trainer = LatentTrainer(cfg, model, tiny_tokenizer, examples[:4])
    rows = [0, 1, 2, 3]
    batch, cot = trainer.batch(rows, 3), trainer.cot_batch(rows)
    loss, terms = trainer.loss(batch, cot)
    assert terms["loss"] == pytest.approx(terms["ce"] + terms["answer_distill"] + 0.5 * terms["cot_ce"], rel=1e-5)
    reference = float(latent_loss(latent_forward(model, cot).logits, cot.labels))
    assert terms["cot_ce"] == pytest.approx(reference, rel=1e-5)
    off = LatentTrainer(cfg.model_copy(update={"cot_ce": 0.0}), model, tiny_tokenizer, examples[:4])
    assert "cot_ce" not in off.loss(batch, cot)[1]
