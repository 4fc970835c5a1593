"""Import a Llama-architecture GGUF file (llama.cpp's format) as a verified Distillery artifact.

    python -m training.import_gguf SmolLM2-135M-Instruct.Q4_1.gguf --out runs/smollm2/teacher [--dtype bfloat16]

The file is read by transformers' own GGUF loader (``from_pretrained(dir, gguf_file=name)``, which dequantizes
every tensor and undoes llama.cpp's q/k RoPE permutation) and its tokenizer by ``AutoTokenizer`` (the
model's own special tokens and chat template). The weights become a :class:`training.model.Student` and
are written atomically as an artifact (DESIGN.md, "Student artifact"): ``config.json``, ``model.safetensors``,
``tokenizer.json`` + ``tokenizer_config.json`` (chat template included), ``generation_config.json``,
``README.md``, ``metrics.json`` and ``manifest.json``.

Before the artifact takes its place, the written files are loaded back and checked against the transformers
GGUF model on fixed prompts (plain text, and conversations through the chat template), and the artifact's
tokenizer must give the same ids as transformers' GGUF tokenizer:

- float32: relative logits error ``max|Δ| / max|ref|`` at most 1e-5 and greedy tokens identical.
- bfloat16: (1) the stored bf16 weights computed in fp32 against transformers with the same bf16-rounded
  weights in fp32: at most 1e-5, greedy identical (this checks the weights exactly); (2) bf16 compute
  against transformers cast to bf16: at most ``BF16_FLOOR_FACTOR`` times the bf16 floor (transformers' own
  bf16-vs-fp32 error on the same prompts; about 3.5e-2 on SmolLM2-135M). bf16 greedy agreement is reported,
  not required: where the top two logits are closer than the bf16 error, two correct bf16 programs pick
  different tokens (SmolLM2-135M has such a prompt: fp32 top-2 gap 0.15).

The figures go to ``metrics.json``; a failed check writes nothing (exit 1).

Only ``general.architecture == "llama"`` is supported; anything else is refused (exit 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from training.artifact import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    UnverifiedArtifactWarning,
    load_student,
    sha256_file,
    student_state_dict,
    write_artifact,
)
from training.model import Student
from training.model_card import render_model_card
from training.model_config import ModelConfig

FP32_TOLERANCE = 1e-5
# bf16 compute: transformers' bf16 model and the artifact's are each about one "bf16 floor" (transformers bf16
# vs fp32 on the same inputs) away from fp32, in different directions, so they may differ by up to twice it.
BF16_FLOOR_FACTOR = 2.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# tokenizer_config.json keys transformers writes that describe where a tokenizer was loaded from, not the
# tokenizer itself.
_LOAD_ONLY_KEYS = ("is_local", "local_files_only", "name_or_path", "_commit_hash")

DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n",
)
DEFAULT_CONVERSATIONS = (
    [{"role": "user", "content": "What is 7 + 3 * 2? Answer with the number only."}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colours."},
        {"role": "assistant", "content": "Red, yellow and blue."},
        {"role": "user", "content": "And the secondary ones?"},
    ],
)


class GGUFImportError(RuntimeError):
    """The input cannot be imported (unsupported architecture, missing file, existing output): exit 2."""


class GGUFVerificationError(RuntimeError):
    """The written artifact does not compute what the transformers GGUF model computes: exit 1."""


def _progress(message: str, start: float) -> None:
    print(f"[import_gguf {time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def gguf_metadata(path: Path) -> dict[str, Any]:
    """``general.architecture``, ``general.name`` and ``general.file_type`` of a GGUF file, reading no tensor
    data. transformers 5's own header reader skips the vocabulary arrays (about 0.1 s for a 49k vocabulary);
    older transformers fall back to the ``gguf`` package's ``GGUFReader``, which parses them (seconds)."""
    try:
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:
        read_gguf_metadata = None
    if read_gguf_metadata is not None:
        try:
            metadata, tensor_names = read_gguf_metadata(str(path))
        except Exception as exc:  # noqa: BLE001 - ValueError/struct.error/... on a file that is not GGUF
            raise GGUFImportError(f"{path} is not a readable GGUF file ({exc})") from exc
        return {
            "architecture": metadata.get("general.architecture"),
            "name": metadata.get("general.name"),
            "file_type": metadata.get("general.file_type"),
            "tensors": len(tensor_names),
        }
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # pragma: no cover - the hf extra installs it
        raise GGUFImportError("reading GGUF needs the gguf package: pip install 'gguf>=0.10'") from exc
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError/struct.error/... on a bad file
        raise GGUFImportError(f"{path} is not a readable GGUF file ({exc})") from exc

    def field(key: str) -> Any:
        entry = reader.fields.get(key)
        if entry is None or not entry.data:
            return None
        value = entry.parts[entry.data[0]]
        return bytes(value).decode("utf-8") if entry.types and entry.types[0].name == "STRING" else value.item()

    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "file_type": field("general.file_type"),
        "tensors": len(reader.tensors),
    }


def _input_ids(encoded: Any) -> list[int]:
    """Token ids from whatever ``apply_chat_template(tokenize=True)`` returned (a list or a BatchEncoding)."""
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(i) for i in encoded]


def encode_prompts(tokenizer: Any, prompts: Sequence[str], conversations: Sequence[list[dict]]) -> list[list[int]]:
    """Token ids of the check inputs: each plain prompt, and each conversation through the chat template
    (with the generation prompt) when the tokenizer has one."""
    encoded = [_input_ids(tokenizer(p)["input_ids"]) for p in prompts]
    if getattr(tokenizer, "chat_template", None):
        encoded += [
            _input_ids(tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=True))
            for c in conversations
        ]
    return [ids for ids in encoded if ids]


# One forward step: (ids (1, T), cache or None) -> (logits (1, T, V), updated cache).
StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def hf_step(hf_model: Any) -> StepFn:
    """A transformers causal LM as a :data:`StepFn` (its own KV cache)."""

    import inspect

    # transformers >= 5.2x names the KV cache argument and output ``cache``; earlier ones ``past_key_values``
    name = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"

    def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        out = hf_model(input_ids=ids, use_cache=True, **{name: cache})
        new_cache = getattr(out, name, None)
        if new_cache is None:
            raise RuntimeError(f"{type(hf_model).__name__} returned no KV cache ({name})")
        return out.logits, new_cache

    return step


def student_step(student: Student) -> StepFn:
    """A :class:`Student` as a :data:`StepFn` (its KV cache)."""

    def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        out = student.run(ids, past_key_values=cache, use_cache=True)
        assert out.logits is not None
        return out.logits, out.past_key_values

    return step


@torch.no_grad()
def _logits(step: StepFn, ids: list[int]) -> torch.Tensor:
    """(T, V) float32 logits of one prompt, no cache."""
    return step(torch.tensor([ids]), None)[0][0].float()


@torch.no_grad()
def greedy(step: StepFn, ids: list[int], steps: int) -> list[int]:
    """``steps`` greedy tokens after ``ids`` with the model's KV cache, no EOS stop, so both models are
    compared on the same number of tokens."""
    out: list[int] = []
    if steps <= 0:
        return out
    logits, cache = step(torch.tensor([ids]), None)
    for i in range(steps):
        out.append(int(logits[0, -1].argmax()))
        if i + 1 < steps:
            logits, cache = step(torch.tensor([[out[-1]]]), cache)
    return out


# What a model produced on the check inputs: per input, (logits (T, V) float32, greedy tokens).
Outputs = list[tuple[torch.Tensor, list[int]]]


def model_outputs(step: StepFn, inputs: list[list[int]], steps: int) -> Outputs:
    """Logits and ``steps`` greedy tokens of a model on each input (computed once, compared later)."""
    return [(_logits(step, ids), greedy(step, ids, steps)) for ids in inputs]


def rel_error(reference: Outputs, candidate: Outputs) -> float:
    """``max|Δ| / max|ref|`` of the logits over all inputs."""
    diff = max(float((r - c).abs().max()) for (r, _), (c, _) in zip(reference, candidate, strict=True))
    scale = max(float(r.abs().max()) for r, _ in reference)
    return diff / scale if scale else diff


def compare_outputs(reference: Outputs, candidate: Outputs, inputs: list[list[int]]) -> dict[str, Any]:
    """Relative logits error and greedy token agreement of ``candidate`` against ``reference``."""
    agree = total = 0
    mismatches = []
    for ids, (_, want), (_, have) in zip(inputs, reference, candidate, strict=True):
        agree += sum(a == b for a, b in zip(want, have, strict=True))
        total += len(want)
        if want != have:
            mismatches.append({"input_tokens": len(ids), "reference": want, "artifact": have})
    return {
        "logits_rel_error": rel_error(reference, candidate),
        "logits_max_abs_diff": max(float((r - c).abs().max()) for (r, _), (c, _) in zip(reference, candidate, strict=True)),
        "greedy_tokens_compared": total,
        "greedy_agreement": agree / total if total else 1.0,
        "greedy_identical": not mismatches,
        "greedy_mismatches": mismatches,
    }


def model_config_from_hf(hf_config: Any, tokenizer: Any) -> ModelConfig:
    """Distillery config from the transformers config, special-token ids from the GGUF tokenizer (pad falls
    back to eos, bos to eos)."""
    data = hf_config.to_dict()
    model_type = data.get("model_type")
    if model_type != "llama":
        raise GGUFImportError(
            f"transformers read this GGUF as model_type={model_type!r}; only Llama-architecture GGUF is supported"
        )
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else data.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise GGUFImportError("the GGUF file names no end-of-sequence token (tokenizer.ggml.eos_token_id)")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    data.update(bos_token_id=int(bos), eos_token_id=int(eos), pad_token_id=int(pad))
    return ModelConfig.from_hf_dict(data)


def student_from_hf(hf_model: Any, config: ModelConfig) -> Student:
    """A :class:`Student` holding the transformers model's weights (same Hugging Face names)."""
    student = Student(config)
    state = {k: v for k, v in hf_model.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    result = student.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise GGUFImportError(
            f"the GGUF weights do not fit a Llama student: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}"
        )
    if config.tie_word_embeddings:
        student.lm_head.weight = student.model.embed_tokens.weight
    return student.eval()


def write_tokenizer_files(tokenizer: Any, directory: Path) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` (chat template inside it) from transformers'
    ``save_pretrained``, loadable by ``PreTrainedTokenizerFast``."""
    with tempfile.TemporaryDirectory(prefix="distillery-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        saved = Path(tmp)
        shutil.copyfile(saved / "tokenizer.json", directory / "tokenizer.json")
        config = json.loads((saved / "tokenizer_config.json").read_text())
        template_file = saved / "chat_template.jinja"
        if template_file.is_file():
            config["chat_template"] = template_file.read_text()
        elif getattr(tokenizer, "chat_template", None) and not config.get("chat_template"):
            config["chat_template"] = tokenizer.chat_template
        for key in _LOAD_ONLY_KEYS:
            config.pop(key, None)
        # "TokenizersBackend" exists only in transformers 5; PreTrainedTokenizerFast loads the same files
        # in 4.x and 5.x (DESIGN.md: loadable by transformers.PreTrainedTokenizerFast).
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def import_gguf(
    gguf_path: str | Path,
    out: str | Path,
    *,
    dtype: str = "float32",
    force: bool = False,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    conversations: Sequence[list[dict]] = DEFAULT_CONVERSATIONS,
    greedy_steps: int = 16,
) -> dict[str, Any]:
    """Import ``gguf_path`` into the artifact directory ``out``; returns the metrics written to metrics.json.

    Raises :class:`GGUFImportError` for inputs it refuses (nothing read or written) and
    :class:`GGUFVerificationError` when the written files do not reproduce the transformers GGUF model
    (nothing left at ``out``).
    """
    start = time.perf_counter()
    gguf_path, out = Path(gguf_path), Path(out)
    if dtype not in DTYPES:
        raise GGUFImportError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not gguf_path.is_file():
        raise GGUFImportError(f"{gguf_path} does not exist or is not a file")
    if out.exists() and not out.is_dir():
        raise GGUFImportError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GGUFImportError(f"--out {out} exists and is not empty; pass --force to replace it")
    meta = gguf_metadata(gguf_path)
    if meta["architecture"] != "llama":
        raise GGUFImportError(
            f"{gguf_path.name} has general.architecture={meta['architecture']!r}; only 'llama' GGUF files "
            "can be imported"
        )
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - the hf extra installs it
        raise GGUFImportError("importing GGUF needs transformers: pip install -e '.[hf]'") from exc
    import gguf

    torch_dtype = DTYPES[dtype]
    where, name = str(gguf_path.parent.resolve()), gguf_path.name
    _progress(f"reading the tokenizer of {name} ({gguf_path.stat().st_size / 2**20:.1f} MiB)", start)
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    _progress("loading and dequantizing the weights with transformers", start)
    hf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32).eval()
    config = model_config_from_hf(hf_model.config, tokenizer)
    student = student_from_hf(hf_model, config).to(torch_dtype)
    state = student_state_dict(student)
    num_parameters = student.num_parameters()
    del student
    inputs = encode_prompts(tokenizer, prompts, conversations)
    if not inputs:
        raise GGUFImportError("no check prompt produced any token")

    # Every reference output is computed before anything is written, so one transformers model suffices.
    _progress(f"running transformers' model on {len(inputs)} check prompts", start)
    reference_fp32 = model_outputs(hf_step(hf_model), inputs, greedy_steps)
    reference_bf16 = rounded_fp32 = None
    if dtype == "bfloat16":
        # bf16 compute: transformers in bf16 is the reference; its own error against fp32 is the floor that
        # no bf16 program beats. bf16 weights, fp32 compute: transformers with the same rounded weights must
        # agree exactly with the artifact computed in fp32 (this checks the stored weights themselves).
        # Round the parameters only: a round trip of the whole model through .to() would also round
        # buffers such as the RoPE frequencies, which Distillery keeps in fp32.
        with torch.no_grad():
            for param in hf_model.parameters():
                param.copy_(param.to(torch.bfloat16).float())
        rounded_fp32 = model_outputs(hf_step(hf_model), inputs, greedy_steps)
        hf_model.to(torch.bfloat16)
        reference_bf16 = model_outputs(hf_step(hf_model), inputs, greedy_steps)
    del hf_model
    _progress(f"hashing {name}", start)
    gguf_sha = sha256_file(gguf_path)
    hf_dict = config.to_hf_dict()
    hf_dict["torch_dtype"] = dtype
    generation = {
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id, "do_sample": False, "max_new_tokens": 64,
    }
    measured: dict[str, Any] = {}

    def populate(tmp: Path) -> None:
        _progress("writing config, weights and tokenizer", start)
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_dict, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_tokenizer_files(tokenizer, tmp)
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")

        _progress("verifying the written files against transformers' outputs", start)
        with warnings.catch_warnings():  # the manifest is added after populate; the files were just written
            warnings.simplefilter("ignore", UnverifiedArtifactWarning)
            reloaded = load_student(tmp, verify=False)  # float32 compute (load_student reads float32)
        problems = []
        if dtype == "float32":
            figures = compare_outputs(reference_fp32, model_outputs(student_step(reloaded), inputs, greedy_steps),
                                      inputs)
            tolerance = FP32_TOLERANCE
            extra: dict[str, Any] = {}
        else:
            exact = compare_outputs(rounded_fp32, model_outputs(student_step(reloaded), inputs, greedy_steps),
                                    inputs)
            reloaded.to(torch_dtype)
            candidate = model_outputs(student_step(reloaded), inputs, greedy_steps)
            figures = compare_outputs(reference_bf16, candidate, inputs)
            floor = rel_error(reference_fp32, reference_bf16)
            tolerance = BF16_FLOOR_FACTOR * floor
            extra = {
                "bf16_floor_rel_error": floor,
                "logits_rel_error_vs_float32": rel_error(reference_fp32, candidate),
                "weights_rel_error_fp32_compute": exact["logits_rel_error"],
                "weights_greedy_identical_fp32_compute": exact["greedy_identical"],
            }
            if not exact["logits_rel_error"] <= FP32_TOLERANCE:
                problems.append(f"bf16 weights computed in fp32: logits relative error {exact['logits_rel_error']:.3g} "
                                f"> {FP32_TOLERANCE:g}")
            if not exact["greedy_identical"]:
                problems.append(f"bf16 weights computed in fp32: greedy tokens differ: {exact['greedy_mismatches'][:1]}")
        artifact_tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tmp))
        tokenizer_same = encode_prompts(artifact_tokenizer, prompts, conversations) == inputs
        tokenizer_same = tokenizer_same and artifact_tokenizer.chat_template == tokenizer.chat_template
        if not figures["logits_rel_error"] <= tolerance:
            problems.append(f"logits relative error {figures['logits_rel_error']:.3g} > {tolerance:.3g}")
        # bf16 greedy tokens are reported, not required: near-ties flip under bf16 rounding (see module doc)
        if dtype == "float32" and not figures["greedy_identical"]:
            problems.append(f"greedy tokens differ: {figures['greedy_mismatches'][:1]}")
        if not tokenizer_same:
            problems.append("the artifact's tokenizer gives other ids (or another chat template) than transformers'")
        if problems:
            raise GGUFVerificationError("; ".join(problems))
        metrics = {
            "source_gguf": name,
            "source_gguf_sha256": gguf_sha,
            "source_gguf_file_type": meta["file_type"],
            "dtype": dtype,
            "reference": f"transformers {transformers.__version__} GGUF load (dequantized), {dtype}",
            "logits_rel_error": figures["logits_rel_error"],
            "logits_rel_error_tolerance": tolerance,
            "logits_max_abs_diff": figures["logits_max_abs_diff"],
            "greedy_tokens_compared": figures["greedy_tokens_compared"],
            "greedy_agreement": figures["greedy_agreement"],
            "greedy_identical": figures["greedy_identical"],
            "check_prompts": len(inputs),
            "tokenizer_ids_identical": tokenizer_same,
            "transformers_version": transformers.__version__,
            "gguf_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            **extra,
        }
        measured.update(metrics, _check_logits=_logits(student_step(reloaded), inputs[0]))
        card = {
            "name": meta["name"] or gguf_path.stem,
            "description": (
                f"Imported from the GGUF file `{name}` with `python -m training.import_gguf` (transformers' GGUF "
                f"loader, weights dequantized, stored as {dtype}). Not trained by Distillery."
            ),
            "teacher": "none: an imported model (usable as a teacher)",
            "data": "see the original model's card",
            "limits": [
                "Quantized GGUF weights are dequantized: the artifact reproduces the quantized model, not the "
                "original full-precision one.",
                "Checked only against transformers' reading of the same GGUF file.",
            ],
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(render_model_card(config, num_parameters, card, metrics))

    write_artifact(out, populate)
    # the renamed artifact verifies its manifest on load and computes what was measured in place
    check = Student.from_pretrained(str(out)).to(torch_dtype)
    if not torch.equal(_logits(student_step(check), inputs[0]), measured.pop("_check_logits")):
        raise GGUFVerificationError(f"{out} loads with other logits than were verified before it was renamed")
    measured["import_seconds"] = round(time.perf_counter() - start, 2)
    _progress(f"done: {out}", start)
    return measured


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return None


def summary_line(out: Path, metrics: dict[str, Any]) -> str:
    """One line for people: where, how close, how fast."""
    return (
        f"imported {metrics['source_gguf']} -> {out} ({metrics['dtype']}): logits rel. error "
        f"{metrics['logits_rel_error']:.2e} (tolerance {metrics['logits_rel_error_tolerance']:g}) vs "
        f"transformers GGUF load, greedy agreement {metrics['greedy_agreement']:.0%} of "
        f"{metrics['greedy_tokens_compared']} tokens, tokenizer ids identical: {metrics['tokenizer_ids_identical']}, "
        f"{metrics['import_seconds']:.1f}s"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.import_gguf",
        description="Import a Llama GGUF file as a verified Distillery artifact (logits checked against "
        "transformers' GGUF load).",
    )
    parser.add_argument("gguf", help="the .gguf file (general.architecture must be 'llama')")
    parser.add_argument("--out", required=True, help="artifact directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weight dtype (default float32)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--greedy-steps", type=int, default=16, help="greedy tokens compared per prompt")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        metrics = import_gguf(args.gguf, args.out, dtype=args.dtype, force=args.force, greedy_steps=args.greedy_steps)
    except GGUFImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GGUFVerificationError as exc:
        print(f"error: verification failed, nothing was written to {args.out}: {exc}", file=sys.stderr)
        return 1
    print(summary_line(Path(args.out), metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
