"""Reading examples: schema validation, quarantine of malformed records, JSONL/Parquet equivalence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_support import make_records, write_jsonl, write_parquet

from training.data import (
    DataQualityError,
    Example,
    MalformedRecordError,
    QuarantineLog,
    count_records,
    read_examples,
)

GOOD = {"id": "a", "prompt": "2+2=", "completion": "4"}


def quarantined(log: QuarantineLog) -> list[dict]:
    return [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]


def test_unknown_fields_are_kept_and_optional_fields_validated(tmp_path: Path) -> None:
    record = {**GOOD, "steps": ["2+2", "=4"], "step_labels": [1, 0.25], "answer": "4", "source": "gsm8k",
              "meta": {"teacher": "big"}}
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    [(location, example)] = list(read_examples(path))
    assert location == f"{path}:1"
    assert example.step_labels == [1.0, 0.25]
    assert example.model_extra == {"source": "gsm8k", "meta": {"teacher": "big"}}
    assert example.model_dump()["source"] == "gsm8k"


def test_malformed_lines_are_quarantined_with_file_line_and_reason(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),                                                  # 1 good
        '{"id": "b", "prompt": "x", "completion": ',                       # 2 bad JSON
        "",                                                                # 3 blank: not a record
        json.dumps({"id": "c", "prompt": "x"}),                            # 4 missing completion
        json.dumps({"id": "d", "prompt": 7, "completion": "y"}),           # 5 wrong type
        json.dumps({**GOOD, "id": "e", "steps": ["s"], "step_labels": [1.5]}),  # 6 label out of range
        json.dumps({**GOOD, "id": "f", "steps": ["s", "t"], "step_labels": [1.0]}),  # 7 length mismatch
        json.dumps(["not", "an", "object"]),                               # 8 not an object
        json.dumps({**GOOD, "id": "g", "step_labels": ["0.5"]}),           # 9 string is not a float
        json.dumps({**GOOD, "id": "h"}),                                   # 10 good
    ]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with path.open("ab") as handle:
        handle.write(b'{"id": "i", "prompt": "\xff", "completion": "z"}\n')  # 11 invalid UTF-8
    log = QuarantineLog(tmp_path / "q" / "quarantine.jsonl", max_bad_fraction=1.0)

    good = list(read_examples(path, log))

    assert [loc for loc, _ in good] == [f"{path}:1", f"{path}:10"]
    entries = quarantined(log)
    assert [e["line"] for e in entries] == [2, 4, 5, 6, 7, 8, 9, 11]
    assert all(e["file"] == str(path) for e in entries)
    reasons = [e["reason"] for e in entries]
    assert reasons[0].startswith("invalid JSON")
    assert "missing completion" in reasons[1]  # names the field (and that messages would do instead)
    assert "prompt: Input should be a valid string" in reasons[2]
    assert "step_labels.0: Input should be less than or equal to 1" in reasons[3]
    assert "step_labels has 1 entries but steps has 2" in reasons[4]
    assert reasons[5] == "expected a JSON object, got list"
    assert "step_labels.0" in reasons[6]
    assert reasons[7].startswith("invalid UTF-8")
    assert entries[0]["raw"] == lines[1]
    assert (log.n_good, log.n_bad) == (2, 8)


def test_without_quarantine_a_bad_record_raises_with_its_location(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "{oops"])
    stream = read_examples(path)
    assert next(stream)[1].id == "a"
    with pytest.raises(MalformedRecordError, match=rf"{path}:2: invalid JSON"):
        next(stream)


def test_bad_fraction_over_the_limit_raises_after_the_pass(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD] * 8 + ["{bad"] * 2)
    lenient = QuarantineLog(tmp_path / "lenient.jsonl", max_bad_fraction=0.2)
    assert len(list(read_examples(path, lenient))) == 8
    lenient.check()
    strict = QuarantineLog(tmp_path / "strict.jsonl", max_bad_fraction=0.1)
    assert len(list(read_examples(path, strict))) == 8
    with pytest.raises(DataQualityError, match=r"2 of 10 records \(20.00%\)") as caught:
        strict.check()
    assert str(strict.path) in str(caught.value)
    assert (caught.value.n_bad, caught.value.n_total) == (2, 10)


def test_bad_count_alone_over_the_budget_raises_before_the_pass_ends(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ["{bad"] * 3 + [GOOD] * 97)
    log = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=0.02, expected_records=count_records(path))
    stream = read_examples(path, log)
    with pytest.raises(DataQualityError, match="3 bad records already exceed the budget of 2.00% of 100"):
        next(stream)
    assert log.n_good == 0 and len(quarantined(log)) == 3


def test_rereading_a_file_counts_and_quarantines_each_record_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "{bad", GOOD])
    log = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=1.0)
    for _ in range(3):
        assert len(list(read_examples(path, log))) == 2
    assert (log.n_good, log.n_bad) == (2, 1)
    assert len(quarantined(log)) == 1


def test_parquet_read_equals_jsonl_read(tmp_path: Path) -> None:
    records = make_records(0, 11)
    records[3] = {**records[3], "steps": ["a", "b"], "step_labels": [0.0, 1.0], "answer": "x", "origin": "t"}
    records[7] = {**records[7], "origin": "u"}
    jsonl = write_jsonl(tmp_path / "d.jsonl", records)
    parquet = write_parquet(tmp_path / "d.parquet", records, row_group_size=3)

    def read(path: Path) -> list[tuple[int, dict]]:
        return [(int(loc.rsplit(":", 1)[1]), ex.model_dump()) for loc, ex in read_examples(path)]

    assert read(parquet) == read(jsonl)
    assert count_records(parquet) == count_records(jsonl) == 11


def test_parquet_bad_row_is_quarantined_with_its_row_number(tmp_path: Path) -> None:
    records = [{**GOOD, "id": str(i), "step_labels": [0.5]} for i in range(6)]
    records[4]["step_labels"] = [-0.5]
    path = write_parquet(tmp_path / "d.parquet", records, row_group_size=2)
    log = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=1.0)
    assert [ex.id for _, ex in read_examples(path, log)] == ["0", "1", "2", "3", "5"]
    [entry] = quarantined(log)
    assert (entry["file"], entry["line"]) == (str(path), 5)
    assert "greater than or equal to 0" in entry["reason"]
    assert json.loads(entry["raw"])["id"] == "4"


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,prompt\n")
    with pytest.raises(ValueError, match="unknown data file type '.csv'"):
        list(read_examples(path))


def test_example_is_strict_about_types() -> None:
    with pytest.raises(ValueError, match="id"):
        Example.model_validate({"id": "", "prompt": "p", "completion": "c"})
    with pytest.raises(ValueError, match="completion"):
        Example.model_validate({"id": "a", "prompt": "p", "completion": 3})
