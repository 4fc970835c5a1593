"""Latent reasoning: hidden-state feedback, gradients through the latent chain, batched == per-example
inference, the halt head, and the latent artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.model import RMSNorm, Student
from training.model_config import ModelConfig
from training.reasoning.latent_data import (
    BOT_ID,
    LATENT_ID,
    LatentBatch,
    collate_latent,
    encode_latent_example,
    latent_row,
)
from training.reasoning.latent_model import (
    HaltHead,
    LatentSpec,
    LatentStudent,
    answer_state_distill_loss,
    answer_states,
    feed_latents,
    generate_latent,
    halt_loss,
    halt_targets,
    latent_forward,
    load_latent_student,
    run_prefix,
    save_latent_student,
    thought_decoder_loss,
)
from training.tasks.arithmetic import generate
from training.tokenizer import DistilleryTokenizer

EOS, PAD = 2, 0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_config: ModelConfig) -> Student:
    torch.manual_seed(7)
    return Student(tiny_config).eval()


@pytest.fixture(scope="module")
def examples(tiny_tokenizer: DistilleryTokenizer) -> list:
    return [encode_latent_example(dict(e), tiny_tokenizer) for e in generate(6, 11)]


def _batch(examples: list, stages: list[int], c: int = 2) -> LatentBatch:
    return collate_latent([latent_row(e, s, c) for e, s in zip(examples, stages, strict=True)], PAD)


def _full_inputs(model: Student, batch: LatentBatch, latent_inputs: list[torch.Tensor]) -> torch.Tensor:
    embed = model.model.embed_tokens
    b, h = batch.prefix_ids.shape[0], model.config.hidden_size
    lat = torch.stack(latent_inputs, 1) if latent_inputs else torch.zeros(b, 0, h)
    return torch.cat((embed(batch.prefix_ids), lat, embed(batch.suffix_ids)), dim=1)


@pytest.mark.parametrize("feedback", ["post_norm", "pre_norm", "post_norm_scaled"])
def test_latent_input_is_previous_positions_hidden_state(model: Student, examples: list, feedback: str) -> None:
    """The multi-pass forward equals one full pass whose latent inputs are the previous positions' hidden
    states (after the final norm for post_norm, the last layer's output for pre_norm)."""
    batch = _batch(examples, [0, 1, 2, 3, 1, 3])
    with torch.no_grad():
        out = latent_forward(model, batch, feedback)  # type: ignore[arg-type]
        full = model.run(inputs_embeds=_full_inputs(model, batch, out.latent_inputs),
                         attention_mask=out.attention_mask, output_hidden_states=True)
    p, width = batch.prefix_ids.shape[1], int(batch.latent_counts.max())
    assert width == 6 and len(out.latent_inputs) == width
    assert torch.allclose(full.logits[:, p + width:], out.logits, atol=1e-5)
    source = full.hidden_states[-1] if feedback == "pre_norm" else full.last_hidden_state
    if feedback == "post_norm_scaled":  # the post-norm state rescaled to the mean token-embedding norm
        target = model.model.embed_tokens.weight.norm(dim=-1).mean()
        source = source * (target / source.norm(dim=-1, keepdim=True))
        assert not torch.allclose(source, full.last_hidden_state, atol=1e-3)
    for j in range(width):
        real = batch.latent_counts > j
        assert torch.allclose(out.latent_inputs[j][real], source[real, p - 1 + j], atol=1e-5)
        if feedback == "post_norm_scaled":
            norms = out.latent_inputs[j][real].norm(dim=-1)
            assert torch.allclose(norms, torch.full_like(norms, float(target)), atol=1e-4)
    pre, post = full.hidden_states[-1][:, p - 1], full.last_hidden_state[:, p - 1]
    assert not torch.allclose(pre, post)  # the two choices really differ


def test_rows_with_holes_compute_what_they_compute_alone(model: Student, examples: list) -> None:
    stages = [0, 1, 2, 3, 1, 3]
    with torch.no_grad():
        together = latent_forward(model, _batch(examples, stages))
        for i, stage in enumerate(stages):
            alone = latent_forward(model, _batch([examples[i]], [stage]))
            n = alone.logits.shape[1]
            assert torch.allclose(together.logits[i, :n], alone.logits[0], atol=1e-5)


def test_changing_a_latent_hidden_state_changes_what_follows(model: Student, examples: list) -> None:
    batch = _batch(examples[:3], [3, 3, 3], c=1)
    with torch.no_grad():
        hidden, cache, mask = run_prefix(model, batch.prefix_ids, batch.prefix_mask, "post_norm")
        base, _, _, _ = feed_latents(model, hidden, cache, mask, batch.latent_counts, "post_norm")
        bumped, _, _, _ = feed_latents(model, hidden + 0.5 * torch.randn_like(hidden), cache, mask,
                                       batch.latent_counts, "post_norm")
    assert torch.equal(base[0], hidden)
    for j in range(1, 4):  # every later latent position sees the change
        assert (base[j] - bumped[j]).abs().max() > 1e-3


def test_no_token_embedding_is_used_at_latent_positions(tiny_config: ModelConfig, examples: list) -> None:
    """With the <latent> embedding (and the unused pad row) set to NaN, outputs stay finite and unchanged."""
    torch.manual_seed(3)
    model = Student(tiny_config).eval()
    prompts = [e.prompt_ids for e in examples]
    before = generate_latent(model, prompts, num_latents=3, eos_id=EOS, pad_id=PAD, max_new_tokens=6)
    with torch.no_grad():
        model.model.embed_tokens.weight[LATENT_ID] = float("nan")
        out = latent_forward(model, _batch(examples, [3, 2, 1, 3, 3, 2]))
    after = generate_latent(model, prompts, num_latents=3, eos_id=EOS, pad_id=PAD, max_new_tokens=6)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.decision_hidden).all()
    assert torch.isfinite(after.logits).all()
    assert after.tokens == before.tokens and torch.equal(after.logits, before.logits)


def test_gradient_flows_through_the_latent_feedback(model: Student, examples: list) -> None:
    batch = _batch(examples[:4], [2, 3, 1, 3], c=1)
    out = latent_forward(model, batch)
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), batch.labels.reshape(-1))
    grads = torch.autograd.grad(loss, out.latent_inputs)
    for grad in grads:
        assert grad.abs().sum() > 0
    detached = latent_forward(model, batch, detach_feedback=True)
    assert all(not t.requires_grad for t in detached.latent_inputs)


def test_backprop_through_the_chain_matches_finite_differences(tiny_config: ModelConfig, examples: list,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """d loss / d (final-norm weight) by autograd equals a central finite difference (float64). The final norm
    acts on the logits and on every fed-back hidden state; cutting the chain (detach_feedback) loses the
    latent part, and the gradient then disagrees with the finite difference."""
    # RMSNorm normalises in float32 by design; for an exact float64 finite difference it must not.
    monkeypatch.setattr(RMSNorm, "forward",
                        lambda self, x: self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
    torch.manual_seed(5)
    model = Student(tiny_config).double().eval()
    batch = _batch(examples[:3], [3, 2, 3], c=2)
    weight = model.model.norm.weight
    direction = torch.randn_like(weight)

    def loss_fn(detach: bool = False) -> torch.Tensor:
        out = latent_forward(model, batch, detach_feedback=detach)
        return torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                                                 batch.labels.reshape(-1))

    def directional(detach: bool) -> float:
        (grad,) = torch.autograd.grad(loss_fn(detach), weight)
        return float((grad * direction).sum())

    eps = 1e-6
    with torch.no_grad():
        weight.add_(eps * direction)
        up = float(loss_fn())
        weight.sub_(2 * eps * direction)
        down = float(loss_fn())
        weight.add_(eps * direction)
    fd = (up - down) / (2 * eps)
    assert directional(False) == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert abs(directional(True) - fd) > 1e-3 * abs(fd)


def test_batched_latent_inference_equals_per_example(model: Student, examples: list) -> None:
    prompts = [e.prompt_ids for e in examples]
    assert len({len(p) for p in prompts}) > 1  # really different lengths
    batched = generate_latent(model, prompts, num_latents=4, eos_id=EOS, pad_id=PAD, max_new_tokens=12)
    for i, prompt in enumerate(prompts):
        alone = generate_latent(model, [prompt], num_latents=4, eos_id=EOS, pad_id=PAD, max_new_tokens=12)
        assert alone.tokens[0] == batched.tokens[i]
        n = alone.logits.shape[1]
        assert torch.allclose(alone.logits[0], batched.logits[i, :n], atol=1e-4)
    assert batched.latent_counts == [4] * len(prompts)


def test_batched_inference_with_halt_head_equals_per_example(model: Student, examples: list) -> None:
    """A halt head stops rows at different latent counts (holes in the batch); each row still gets what it
    gets alone."""
    torch.manual_seed(2)
    head = HaltHead(model.config.hidden_size, 16).eval()
    prompts = [e.prompt_ids for e in examples]
    with torch.no_grad():
        ids = [torch.tensor([[*p, BOT_ID]]) for p in prompts]
        first = torch.stack([torch.sigmoid(head(run_prefix(model, x, torch.ones_like(x), "post_norm")[0]))[0]
                             for x in ids])
    threshold = float(first.median())  # rows above it halt before any latent, the others go on
    batched = generate_latent(model, prompts, num_latents=3, eos_id=EOS, pad_id=PAD, max_new_tokens=8,
                              halt_head=head, halt_threshold=threshold)
    assert len(set(batched.latent_counts)) > 1 and 0 in batched.latent_counts
    for i, prompt in enumerate(prompts):
        alone = generate_latent(model, [prompt], num_latents=3, eos_id=EOS, pad_id=PAD, max_new_tokens=8,
                                halt_head=head, halt_threshold=threshold)
        assert alone.latent_counts[0] == batched.latent_counts[i]
        assert alone.tokens[0] == batched.tokens[i]
        n = alone.logits.shape[1]
        assert torch.allclose(alone.logits[0], batched.logits[i, :n], atol=1e-4)


@pytest.mark.parametrize("feedback", ["post_norm", "post_norm_scaled"])
def test_generation_matches_the_teacher_forced_forward(model: Student, examples: list, feedback: str) -> None:
    """Greedy decoding after the latents picks the argmax of the training forward on the same sequence
    (the same fed-back vectors, rescaled or not, in both)."""
    gen = generate_latent(model, [e.prompt_ids for e in examples[:3]], num_latents=2, eos_id=EOS, pad_id=PAD,
                          max_new_tokens=5, feedback=feedback)  # type: ignore[arg-type]
    for i, e in enumerate(examples[:3]):
        row = latent_row(e, 2, 1)
        forced = type(row)(prefix=row.prefix, n_latents=2, suffix=[row.suffix[0], *gen.tokens[i]], stage=2)
        with torch.no_grad():
            out = latent_forward(model, collate_latent([forced], PAD), feedback)  # type: ignore[arg-type]
        n = len(gen.tokens[i])
        assert out.logits[0, :n].argmax(-1).tolist() == gen.tokens[i]
        assert torch.allclose(out.logits[0, :n], gen.logits[i, :n], atol=1e-4)


def test_halt_targets_and_loss() -> None:
    targets, valid = halt_targets(torch.tensor([0, 2]), 4)
    assert targets.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]
    assert valid.tolist() == [[True, False, False, False], [True, True, True, False]]
    logits = torch.tensor([[9.0, 0.0, 0.0, 0.0], [-9.0, -9.0, 9.0, 5.0]])
    assert float(halt_loss(logits, torch.tensor([0, 2]))) < 1e-3
    assert float(halt_loss(-logits, torch.tensor([0, 2]))) > 5
    assert float(halt_loss(-logits, torch.tensor([0, 2]), rows=torch.tensor([False, False]))) == 0.0


def test_latent_artifact_round_trip(tmp_path: Path, model: Student, tiny_tokenizer: DistilleryTokenizer) -> None:
    torch.manual_seed(4)
    head = HaltHead(model.config.hidden_size, 8).eval()
    spec = LatentSpec(latents_per_step=1, max_stage=3, num_latents=3, adaptive=True, halt_threshold=0.4)
    student = LatentStudent(model=model, spec=spec, halt_head=head)
    directory = save_latent_student(student, tmp_path / "latent", tokenizer=tiny_tokenizer)
    loaded = load_latent_student(directory)
    assert loaded.spec == spec and loaded.halt_head is not None
    prompts = ["Q: 2+3*4=?\n", "Q: 9-1-1=?\n"]
    a = student.generate_text(tiny_tokenizer, prompts, max_new_tokens=6)
    b = loaded.generate_text(tiny_tokenizer, prompts, max_new_tokens=6)
    assert a == b
    with pytest.raises(FileNotFoundError):
        load_latent_student(tmp_path / "missing")


def test_thought_decoder_loss_matches_one_row_at_a_time(tiny_config: ModelConfig) -> None:
    """Padded, batched step decoding equals decoding each (thought, step) alone: value and gradients
    (float64, so the comparison is exact up to rounding)."""
    torch.manual_seed(0)
    model = Student(tiny_config).double()
    h = tiny_config.hidden_size
    thoughts = torch.randn(3, h, dtype=torch.float64, requires_grad=True)
    steps = [[5, 9, 11, 7], [6, 8], [10, 12, 13]]
    ids = torch.zeros(3, 4, dtype=torch.long)
    mask = torch.zeros(3, 4, dtype=torch.long)
    for n, s in enumerate(steps):
        ids[n, :len(s)] = torch.tensor(s)
        mask[n, :len(s)] = 1
    batched = thought_decoder_loss(model, thoughts, ids, mask)
    (g_batched,) = torch.autograd.grad(batched, thoughts)

    total = torch.zeros((), dtype=torch.float64)
    for n, s in enumerate(steps):
        x = torch.cat((thoughts[n][None], model.model.embed_tokens(torch.tensor(s[:-1]))), dim=0)[None]
        logits = model.run(inputs_embeds=x).logits[0]
        total = total + torch.nn.functional.cross_entropy(logits, torch.tensor(s), reduction="sum")
    reference = total / sum(len(s) for s in steps)
    (g_reference,) = torch.autograd.grad(reference, thoughts)
    torch.testing.assert_close(batched, reference, rtol=1e-10, atol=0)
    scale = float(g_reference.abs().max())
    torch.testing.assert_close(g_batched, g_reference, rtol=1e-8, atol=1e-10 * scale)
    assert scale > 0  # the thoughts are really read


def test_thought_decoder_loss_without_thoughts_is_zero(tiny_config: ModelConfig) -> None:
    model = Student(tiny_config)
    loss = thought_decoder_loss(model, torch.zeros(0, tiny_config.hidden_size), torch.zeros(0, 1, dtype=torch.long),
                                torch.zeros(0, 1, dtype=torch.long))
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        thought_decoder_loss(model, torch.zeros(2, tiny_config.hidden_size), torch.zeros(3, 2, dtype=torch.long),
                             torch.zeros(3, 2, dtype=torch.long))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(2, 8), st.floats(0.1, 10.0), st.integers(0, 2**16))
def test_answer_state_distill_is_zero_iff_equal_and_scale_free(layers: int, rows: int, width: int, scale: float,
                                                                seed: int) -> None:
    """CODI's distance is >= 0, 0 for equal states and > 0 otherwise, and the same when student and teacher
    are scaled together (each layer is divided by the teacher's std)."""
    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(rows, width, generator=g, dtype=torch.float64) for _ in range(layers)]
    student = [t + 0.1 * torch.randn(rows, width, generator=g, dtype=torch.float64) for t in teacher]
    assert float(answer_state_distill_loss(teacher, teacher)) == 0.0
    loss = float(answer_state_distill_loss(student, teacher))
    assert loss > 0
    scaled = float(answer_state_distill_loss([scale * s for s in student], [scale * t for t in teacher]))
    assert scaled == pytest.approx(loss, rel=1e-4)
    with pytest.raises(ValueError, match="layers"):
        answer_state_distill_loss(student[:-1] if layers > 1 else [], teacher)


def test_answer_states_are_each_layers_state_at_the_answer_token(tiny_config: ModelConfig,
                                                                  tiny_tokenizer: DistilleryTokenizer) -> None:
    """The states gathered at <answer> equal a plain full-sequence forward's hidden states at that token, for
    a batch mixing a stage-0 (text chain) row and a stage-3 (all latent) row."""
    torch.manual_seed(4)
    model = Student(tiny_config).eval()
    example = encode_latent_example(dict(generate(1, 9)[0]), tiny_tokenizer)
    answer_id = tiny_tokenizer.token_id("<answer>")
    batch = collate_latent([latent_row(example, 0, 1), latent_row(example, 3, 1)], tiny_tokenizer.pad_id)
    with torch.no_grad():
        out = latent_forward(model, batch, output_hidden_states=True)
        states = answer_states(out, batch.suffix_ids, answer_id)
        assert len(states) == tiny_config.num_hidden_layers
        row = latent_row(example, 0, 1)  # stage 0 has no latents: one ordinary sequence
        ids = torch.tensor([[*row.prefix, *row.suffix]])
        full = model.run(ids, output_hidden_states=True)
        position = len(row.prefix) + row.suffix.index(answer_id)
        for layer, state in enumerate(states, start=1):
            torch.testing.assert_close(state[0], full.hidden_states[layer][0, position], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="output_hidden_states"):
        answer_states(latent_forward(model, batch), batch.suffix_ids, answer_id)
