"""Student artifacts: round trip, manifest, tamper detection, plain HF dirs, atomic writes, model card."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training import artifact
from training.artifact import (
    ArtifactError,
    UnverifiedArtifactWarning,
    extra_tensors,
    load_student,
    save_student,
    verify_manifest,
    write_artifact,
)
from training.model import Student
from training.model_card import render_model_card
from training.tokenizer import DistilleryTokenizer

EXPECTED_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "README.md",
    "metrics.json",
    "manifest.json",
}


@pytest.fixture
def art(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the session artifact that a test may damage."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "student"))


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 9), generator=torch.Generator().manual_seed(0))


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---- round trip -----------------------------------------------------------------------------------------


def test_round_trip_identical_logits_and_file_set(tiny_artifact: Path, tiny_student: Student) -> None:
    """Student.from_pretrained returns the same logits; the directory holds exactly the documented files."""
    assert {p.name for p in tiny_artifact.iterdir()} == EXPECTED_FILES
    loaded = Student.from_pretrained(str(tiny_artifact))
    assert not loaded.training
    assert loaded.config == tiny_student.config
    ids = _ids(tiny_student.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids), tiny_student(ids))


def test_round_trip_tied_model_keeps_the_tie(
    tiny_student: Student, tiny_tokenizer: DistilleryTokenizer, tmp_path: Path
) -> None:
    """A tied model is saved without lm_head.weight and loads tied, with identical logits."""
    from safetensors import safe_open

    torch.manual_seed(3)
    tied = Student(dataclasses.replace(tiny_student.config, tie_word_embeddings=True))
    out = save_student(tied, tmp_path / "tied", tokenizer=tiny_tokenizer)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert "lm_head.weight" not in set(fh.keys())
    loaded = load_student(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = _ids(tied.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids), tied(ids))


def test_tokenizer_round_trips_through_the_artifact(
    tiny_artifact: Path, tiny_tokenizer: DistilleryTokenizer
) -> None:
    """The tokenizer saved in the artifact reloads with the same fingerprint."""
    assert DistilleryTokenizer.load(tiny_artifact).fingerprint() == tiny_tokenizer.fingerprint()


def test_manifest_lists_sha256_and_size_of_every_file(tiny_artifact: Path) -> None:
    """manifest.json covers every other file with its true sha256 and byte size."""
    manifest = _manifest(tiny_artifact)
    assert manifest["format"] == "distillery-artifact" and manifest["format_version"] == 1
    assert set(manifest["files"]) == EXPECTED_FILES - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (tiny_artifact / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert verify_manifest(tiny_artifact) == manifest


def test_config_json_is_a_hf_llama_config(tiny_artifact: Path, tiny_student: Student) -> None:
    """config.json names the llama model type and the LlamaForCausalLM architecture and holds the shape."""
    data = json.loads((tiny_artifact / "config.json").read_text())
    assert data["model_type"] == "llama"
    assert data["architectures"] == ["LlamaForCausalLM"]
    assert data["hidden_act"] == "silu"
    cfg = tiny_student.config
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
    ):
        assert data[key] == getattr(cfg, key), key


def test_generation_config_and_metrics_files(tiny_artifact: Path, tiny_student: Student) -> None:
    """generation_config.json holds the config's special ids and greedy defaults; metrics.json the metrics."""
    gen = json.loads((tiny_artifact / "generation_config.json").read_text())
    cfg = tiny_student.config
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )
    assert gen["do_sample"] is False
    assert json.loads((tiny_artifact / "metrics.json").read_text()) == {"accuracy": 0.5}


def test_model_card_mentions_metrics_and_card_fields(tiny_artifact: Path, tiny_student: Student) -> None:
    """README.md has a HF YAML header, the metrics table, data/teacher sections and the parameter count."""
    card = (tiny_artifact / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "## Metrics" in card and "| accuracy | 0.5 |" in card
    assert "## Data" in card and "tiny corpus" in card
    assert "## Teacher" in card
    assert f"parameters: {tiny_student.num_parameters():,}" in card


def test_model_card_renders_limits_lists_and_other_details(tiny_student: Student, tmp_path: Path) -> None:
    """List-valued limits become bullets, unknown card keys land under 'Other details', floats are rounded."""
    out = save_student(
        tiny_student,
        tmp_path / "s",
        metrics={"loss": 0.123456789, "per_task": {"a": 1}},
        card={"limits": ["only arithmetic", "English only"], "seed": 7},
    )
    card = (out / "README.md").read_text()
    assert "- only arithmetic\n- English only" in card
    assert "## Other details" in card and "- seed: 7" in card
    assert "| loss | 0.1235 |" in card and '| per_task | `{"a": 1}` |' in card


# ---- tamper detection -----------------------------------------------------------------------------------


def test_altered_byte_in_weights_is_detected(art: Path) -> None:
    """Flipping one byte of model.safetensors (same size) raises ArtifactError naming the file."""
    path = art / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match its sha256"):
        Student.from_pretrained(str(art))


def test_truncated_file_is_detected(art: Path) -> None:
    """A truncated file raises ArtifactError naming it and both sizes."""
    path = art / "tokenizer_config.json"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 10)
    with pytest.raises(ArtifactError, match=rf"tokenizer_config\.json has {size - 10} bytes .* says {size}"):
        load_student(art)


def test_deleted_tokenizer_is_detected(art: Path) -> None:
    """Deleting tokenizer.json raises ArtifactError naming it (partial artifact)."""
    (art / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json is listed in the manifest but missing"):
        load_student(art)


def test_verify_false_skips_the_manifest(art: Path, tiny_student: Student) -> None:
    """verify=False loads even if a non-weight file was altered (and warns about nothing)."""
    (art / "README.md").write_text("edited")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_student(art, verify=False)
    ids = _ids(tiny_student.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids), tiny_student(ids))


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"format": "distillery-artifact"}),
        json.dumps({"format": "something-else", "files": {}}),
        json.dumps({"format": "distillery-artifact", "files": ["config.json"]}),
        json.dumps({"format": "distillery-artifact", "files": {"config.json": "abc"}}),
        json.dumps({"format": "distillery-artifact", "files": {"config.json": {"sha256": "00"}}}),
        json.dumps(
            {"format": "distillery-artifact", "files": {"../escape.txt": {"sha256": "00", "size": 1}}}
        ),
        json.dumps(
            {"format": "distillery-artifact", "files": {"/etc/hostname": {"sha256": "00", "size": 1}}}
        ),
    ],
)
def test_malformed_manifest_raises_artifact_error(art: Path, content: str) -> None:
    """Any unreadable or malformed manifest is an ArtifactError naming manifest.json (never a raw crash)."""
    (art / "manifest.json").write_text(content)
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        verify_manifest(art)
    with pytest.raises(ArtifactError):
        load_student(art)


def test_manifest_that_omits_the_weights_is_refused(art: Path) -> None:
    """A manifest that does not list model.safetensors verifies nothing about it: loading raises naming it."""
    manifest = _manifest(art)
    del manifest["files"]["model.safetensors"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    verify_manifest(art)  # what is listed is intact
    with pytest.raises(ArtifactError, match=r"model\.safetensors is not listed"):
        load_student(art)


def test_missing_directory_raises(tmp_path: Path) -> None:
    """Loading a path that is not a directory raises ArtifactError."""
    with pytest.raises(ArtifactError, match="not a directory"):
        load_student(tmp_path / "nope")


# ---- plain Hugging Face directories ---------------------------------------------------------------------


def test_directory_without_manifest_loads_with_warning(art: Path, tiny_student: Student) -> None:
    """Without manifest.json the weights load (same logits) with an UnverifiedArtifactWarning."""
    (art / "manifest.json").unlink()
    with pytest.warns(UnverifiedArtifactWarning, match="nothing was verified"):
        loaded = Student.from_pretrained(str(art))
    ids = _ids(tiny_student.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids), tiny_student(ids))


def test_corrupt_weights_without_manifest_raise_artifact_error(art: Path) -> None:
    """Unverified and unreadable safetensors is an ArtifactError naming the file, not a raw library error."""
    (art / "manifest.json").unlink()
    with open(art / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(UnverifiedArtifactWarning), pytest.raises(ArtifactError, match=r"model\.safetensors"):
        load_student(art)


def test_pytorch_bin_only_directory_is_refused(art: Path) -> None:
    """A directory with only pytorch_model.bin is refused with a message about pickle (nothing unpickled)."""
    (art / "manifest.json").unlink()
    (art / "model.safetensors").unlink()
    (art / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")
    with pytest.warns(UnverifiedArtifactWarning), pytest.raises(ArtifactError, match="pickle"):
        load_student(art)


def test_missing_tensor_and_wrong_shape_are_refused(art: Path, tiny_student: Student) -> None:
    """Weights lacking a tensor, or with a tensor of the wrong shape, raise ArtifactError naming it."""
    (art / "manifest.json").unlink()
    state = {k: v.contiguous() for k, v in tiny_student.state_dict().items()}
    missing = {k: v for k, v in state.items() if k != "model.norm.weight"}
    save_file(missing, str(art / "model.safetensors"))
    with pytest.warns(UnverifiedArtifactWarning), pytest.raises(ArtifactError, match="model.norm.weight"):
        load_student(art)
    state["model.norm.weight"] = torch.ones(3)
    save_file(state, str(art / "model.safetensors"))
    with (
        pytest.warns(UnverifiedArtifactWarning),
        pytest.raises(ArtifactError, match=r"model\.norm\.weight has shape"),
    ):
        load_student(art)


# ---- extras ---------------------------------------------------------------------------------------------


def test_extra_tensors_and_files_are_stored_and_verified(tiny_student: Student, tmp_path: Path) -> None:
    """extra_tensors live in model.safetensors (ignored by load_student), extra_files are in the manifest."""
    head = torch.randn(4, tiny_student.config.hidden_size)
    out = save_student(
        tiny_student,
        tmp_path / "s",
        extra_tensors={"judge.head.weight": head},
        extra_files={"eval/report.txt": b"ok"},
    )
    assert torch.equal(extra_tensors(out, "judge.")["judge.head.weight"], head)
    assert "eval/report.txt" in _manifest(out)["files"]
    load_student(out)
    (out / "eval" / "report.txt").write_bytes(b"no")
    with pytest.raises(ArtifactError, match=r"eval/report\.txt"):
        load_student(out)


def test_extra_tensor_name_collision_is_refused(tiny_student: Student, tmp_path: Path) -> None:
    """An extra tensor may not overwrite a model tensor."""
    with pytest.raises(ValueError, match="collides"):
        save_student(tiny_student, tmp_path / "s", extra_tensors={"model.norm.weight": torch.ones(1)})
    assert not (tmp_path / "s").exists()


# ---- atomic writes --------------------------------------------------------------------------------------


def test_failing_populate_leaves_previous_artifact_intact(art: Path, tiny_student: Student) -> None:
    """A populate() that raises leaves the old artifact verified and unchanged, and no temp dirs behind."""
    before = {p.name: p.read_bytes() for p in art.iterdir()}

    def populate(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_artifact(art, populate)
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    verify_manifest(art)
    assert _leftovers(art.parent) == []


def test_failing_populate_for_a_new_artifact_leaves_nothing(tmp_path: Path) -> None:
    """A failed first write creates neither the directory nor temp dirs."""

    def populate(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # BaseException: an interrupted export must clean up too

    with pytest.raises(KeyboardInterrupt):
        write_artifact(tmp_path / "new", populate)
    assert list(tmp_path.iterdir()) == []


def test_failed_final_rename_restores_previous_artifact(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If renaming the new directory into place fails, the old artifact is put back (not left hidden)."""
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    real_rename = os.rename

    def flaky_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if ".tmp-" in Path(src).name:
            raise OSError("simulated crash during rename")
        real_rename(src, dst)

    monkeypatch.setattr(artifact.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated crash"):
        write_artifact(art, lambda tmp: (tmp / "x.txt").write_text("new"))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    assert _leftovers(art.parent) == []


def test_replacing_an_artifact_swaps_contents_and_cleans_up(art: Path, tiny_student: Student) -> None:
    """Saving over an existing artifact replaces it completely (old-only files gone) with no leftovers."""
    (art / "stale.txt").write_text("old")
    torch.manual_seed(9)
    other = Student(tiny_student.config).eval()
    save_student(other, art, metrics={"accuracy": 0.9})
    assert not (art / "stale.txt").exists()
    assert json.loads((art / "metrics.json").read_text()) == {"accuracy": 0.9}
    ids = _ids(other.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(load_student(art)(ids), other(ids))
    assert _leftovers(art.parent) == []


def test_artifact_directory_has_normal_permissions(tiny_student: Student, tmp_path: Path) -> None:
    """The renamed temp directory gets the mode an ordinary mkdir would (mkdtemp's 0700 is not kept)."""
    umask = os.umask(0o022)
    os.umask(umask)
    out = save_student(tiny_student, tmp_path / "s")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    # every file too (safetensors writes its file 0600): other users can read the weights, not just the card
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_model_card_accepts_non_string_card_values(tiny_student: Student) -> None:
    """Tuple limits become bullets; a dict limit and a numeric description are formatted, not a TypeError."""
    cfg, n = tiny_student.config, tiny_student.num_parameters()
    card = render_model_card(cfg, n, {"limits": ("short prompts", "no tools"), "description": 42}, {})
    assert "- short prompts\n- no tools" in card and "\n42\n" in card
    card = render_model_card(cfg, n, {"limits": {"lang": "en"}}, {})
    assert '## Limits\n\n`{"lang": "en"}`' in card
    assert "## Metrics" not in card, "no metrics table without metrics"
