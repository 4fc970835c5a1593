"""The streaming dataset: coverage, deterministic shuffling, sharding, batching and exact resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_support import CharTokenizer, document_ids, make_records, write_jsonl, write_parquet
from torch.utils.data import DataLoader

from training.data import DataQualityError, ExampleStream, QuarantineLog, SequenceTooLongError, StreamConfig

TOK = CharTokenizer()
N_GOOD = 60
CONFIGS = {
    "bucket": StreamConfig(max_length=48, batch_size=4, shuffle_buffer=7, bucket_pool_batches=3),
    "pack": StreamConfig(max_length=48, batch_size=2, batching="pack", shuffle_buffer=5),
    "bucket_ordered": StreamConfig(max_length=48, batch_size=3, shuffle=False, bucket_pool_batches=2),
    "pack_drop_last": StreamConfig(max_length=40, batch_size=3, batching="pack", drop_last=True, seed=7),
}
Batch = dict[str, list]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """60 good examples over two JSONL files and a Parquet file; two malformed lines and a blank one."""
    root = tmp_path_factory.mktemp("corpus")
    first = [*make_records(0, 10), "{not json", *make_records(10, 5), "",
             json.dumps({"id": "bad", "prompt": 1, "completion": ""}), *make_records(15, 10)]
    return [write_jsonl(root / "a.jsonl", first), write_parquet(root / "b.parquet", make_records(25, 20)),
            write_jsonl(root / "c.jsonl", make_records(45, 15))]


def stream(corpus: list[Path], config: StreamConfig, tmp: Path, **kwargs: int) -> ExampleStream:
    quarantine = QuarantineLog(tmp / f"quarantine-{kwargs.get('rank', 0)}.jsonl", max_bad_fraction=0.1)
    return ExampleStream(corpus, TOK, config, quarantine=quarantine, **kwargs)


def plain(batch: dict[str, torch.Tensor]) -> Batch:
    return {name: value.tolist() for name, value in batch.items()}


def take(iterator, n: int) -> list[Batch]:
    return [plain(next(iterator)) for _ in range(n)]


def ids_of(batches: list[Batch]) -> list[int]:
    return [i for batch in batches for i in document_ids({k: torch.tensor(v) for k, v in batch.items()}, TOK)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_good_example_appears_once_per_epoch(corpus: list[Path], tmp_path: Path, name: str) -> None:
    data = stream(corpus, CONFIGS[name], tmp_path)
    for epoch in range(2):
        assert data.epoch == epoch
        batches = [plain(b) for b in data]
        found = ids_of(batches)
        assert len(found) == len(set(found))
        if CONFIGS[name].drop_last:
            assert set(found) <= set(range(N_GOOD)) and len(found) > N_GOOD - 10
            assert all(len(b["input_ids"]) == CONFIGS[name].batch_size for b in batches)
        else:
            assert sorted(found) == list(range(N_GOOD))
    assert data.epoch == 2


def test_shuffle_is_determined_by_seed_and_epoch(corpus: list[Path], tmp_path: Path) -> None:
    config = CONFIGS["bucket"]
    first = [plain(b) for b in stream(corpus, config, tmp_path)]
    again = [plain(b) for b in stream(corpus, config, tmp_path)]
    assert first == again
    next_epoch = stream(corpus, config, tmp_path)
    next_epoch.set_epoch(1)
    other_seed = stream(corpus, config.model_copy(update={"seed": 1}), tmp_path)
    for different in (next_epoch, other_seed):
        batches = [plain(b) for b in different]
        assert ids_of(batches) != ids_of(first)
        assert sorted(ids_of(batches)) == sorted(ids_of(first))


@pytest.mark.parametrize("name", ["bucket", "pack"])
def test_ranks_partition_the_examples(corpus: list[Path], tmp_path: Path, name: str) -> None:
    per_rank = [ids_of([plain(b) for b in stream(corpus, CONFIGS[name], tmp_path, rank=r, world_size=3)])
                for r in range(3)]
    assert sorted(i for ids in per_rank for i in ids) == list(range(N_GOOD))
    assert all(abs(len(ids) - N_GOOD / 3) <= 2 for ids in per_rank)
    again = ids_of([plain(b) for b in stream(corpus, CONFIGS[name], tmp_path, rank=1, world_size=3)])
    assert again == per_rank[1]


def test_dataloader_workers_split_the_examples(corpus: list[Path], tmp_path: Path) -> None:
    loader = DataLoader(stream(corpus, CONFIGS["pack"], tmp_path), batch_size=None, num_workers=2)
    found = ids_of([plain(b) for b in loader])
    assert sorted(found) == list(range(N_GOOD))


def test_unshuffled_bucketing_yields_length_sorted_batches(corpus: list[Path], tmp_path: Path) -> None:
    config = StreamConfig(max_length=48, batch_size=4, shuffle=False, bucket_pool_batches=100)
    lengths = [[sum(row) for row in plain(b)["attention_mask"]] for b in stream(corpus, config, tmp_path)]
    flat = [n for batch in lengths for n in batch]
    assert flat == sorted(flat) and len(flat) == N_GOOD


def test_packed_rows_fit_and_restart_positions_per_document(corpus: list[Path], tmp_path: Path) -> None:
    config = CONFIGS["pack"]
    for batch in map(plain, stream(corpus, config, tmp_path)):
        assert len(batch["input_ids"][0]) <= config.max_length
        for seq, pos, ids, labels in zip(batch["sequence_ids"], batch["position_ids"], batch["input_ids"],
                                         batch["labels"], strict=True):
            for t in range(len(seq)):
                if seq[t] == 0:
                    assert (ids[t], labels[t]) == (TOK.pad_id, -100)
                elif t == 0 or seq[t] != seq[t - 1]:
                    assert (pos[t], ids[t]) == (0, TOK.bos_id)
                else:
                    assert pos[t] == pos[t - 1] + 1
                if seq[t] and (t + 1 == len(seq) or seq[t + 1] != seq[t]):
                    assert (ids[t], labels[t]) == (TOK.eos_id, -100)


def resume_and_compare(corpus: list[Path], config: StreamConfig, tmp: Path, epoch: int, stops: list[int]) -> None:
    """Interrupt the epoch after each of ``stops`` batches, restoring a fresh stream from a JSON state each time."""
    reference = stream(corpus, config, tmp)
    reference.set_epoch(epoch)
    expected = [plain(b) for b in reference]
    current = stream(corpus, config, tmp)
    current.set_epoch(epoch)
    done = 0
    for stop in sorted(min(s, len(expected)) for s in stops):
        assert take(iter(current), stop - done) == expected[done:stop]
        done = stop
        state = json.loads(json.dumps(current.state_dict()))
        current = stream(corpus, config, tmp)
        current.load_state_dict(state)
        assert (current.epoch, current.batches_yielded) == (epoch, done)
    assert [plain(b) for b in current] == expected[done:]
    assert current.epoch == epoch + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(CONFIGS)), epoch=st.integers(0, 2),
       stops=st.lists(st.integers(0, 30), min_size=1, max_size=3))
def test_resume_yields_exactly_the_uninterrupted_batches(corpus: list[Path], tmp_path: Path, name: str,
                                                         epoch: int, stops: list[int]) -> None:
    resume_and_compare(corpus, CONFIGS[name], tmp_path, epoch, stops)


def test_state_at_an_epoch_end_resumes_into_the_next_epoch(corpus: list[Path], tmp_path: Path) -> None:
    data = stream(corpus, CONFIGS["pack"], tmp_path)
    list(data)
    state = data.state_dict()
    assert (state["epoch"], state["pipeline"]) == (1, None)
    expected = [plain(b) for b in data]
    restored = stream(corpus, CONFIGS["pack"], tmp_path)
    restored.load_state_dict(state)
    assert [plain(b) for b in restored] == expected


def test_a_pickled_stream_continues_where_it_stopped(corpus: list[Path], tmp_path: Path) -> None:
    data = stream(corpus, CONFIGS["bucket"], tmp_path)
    iterator = iter(data)
    take(iterator, 3)
    copy = pickle.loads(pickle.dumps(data))
    assert [plain(b) for b in copy] == [plain(b) for b in iterator]


def test_a_state_from_another_configuration_or_rank_is_refused(corpus: list[Path], tmp_path: Path) -> None:
    data = stream(corpus, CONFIGS["bucket"], tmp_path)
    take(iter(data), 2)
    state = data.state_dict()
    with pytest.raises(ValueError, match=r"differs in \['config'\]"):
        stream(corpus, CONFIGS["pack"], tmp_path).load_state_dict(state)
    with pytest.raises(ValueError, match=r"differs in \['rank', 'world_size'\]"):
        stream(corpus, CONFIGS["bucket"], tmp_path, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="unsupported stream state format"):
        data.load_state_dict({**state, "format": 0})


def test_a_mid_epoch_state_cannot_continue_in_another_shard(corpus: list[Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    second_of_two = [plain(b) for b in stream(corpus, CONFIGS["bucket"], tmp_path, rank=1, world_size=2)]
    data = stream(corpus, CONFIGS["bucket"], tmp_path)
    take(iter(data), 2)
    monkeypatch.setattr("training.data.stream.get_worker_info", lambda: SimpleNamespace(num_workers=2, id=1))
    with pytest.raises(ValueError, match=r"belongs to shard \[0, 1\], not \[1, 2\]"):
        iter(data)
    data.set_epoch(0)
    assert [plain(b) for b in data] == second_of_two


def test_bad_records_are_quarantined_once_across_epochs(corpus: list[Path], tmp_path: Path) -> None:
    data = stream(corpus, CONFIGS["bucket"], tmp_path)
    for _ in range(2):
        list(data)
    assert data.quarantine is not None
    entries = [json.loads(line) for line in data.quarantine.path.read_text().splitlines()]
    assert [(Path(e["file"]).name, e["line"]) for e in entries] == [("a.jsonl", 11), ("a.jsonl", 18)]
    assert (data.quarantine.n_good, data.quarantine.n_bad) == (N_GOOD, 2)


def test_too_many_bad_records_stop_the_stream_at_the_epoch_end(corpus: list[Path], tmp_path: Path) -> None:
    quarantine = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=0.01)
    with pytest.raises(DataQualityError, match="2 of 62 records"):
        list(ExampleStream(corpus, TOK, CONFIGS["bucket"], quarantine=quarantine))


def test_an_over_long_example_is_refused_unless_truncation_is_on(corpus: list[Path], tmp_path: Path) -> None:
    short = StreamConfig(max_length=20, batch_size=4)
    with pytest.raises(SequenceTooLongError):
        list(stream(corpus, short, tmp_path))
    batches = [plain(b) for b in stream(corpus, short.model_copy(update={"truncate": True}), tmp_path)]
    assert sum(len(b["input_ids"]) for b in batches) == N_GOOD
    assert max(len(b["input_ids"][0]) for b in batches) == 20
