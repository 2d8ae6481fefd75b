"""The prepared data does not depend on how it was prepared: every path gives today's result.

``golden/prepare_*.json`` were written by the sequential single-process ``prepare()`` as it was
before preparation went multi-process and cached (commit c895bb9), on the fixtures below (every
drop reason, held-out files, carved splits, mixing weights, a cap, PII, truncation). A change to
the kept rows, their order, the splits, the token ids/labels or any report count, reason,
snippet or ``file:line`` changes the snapshot and fails the test.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data import prepare

GOLDEN = Path(__file__).parent / "golden"


def _rows(n: int, seed: int, tag: str) -> list:
    """Alpaca rows with every kind of trouble mixed in at random places."""
    rng = random.Random(seed)
    rows: list = []
    for i in range(n):
        words = " ".join(rng.choice(("lamp", "refund", "  late", "Broken", "parcel\t", "login")) for _ in range(rng.randint(3, 12)))
        rows.append({"instruction": f"{tag} ticket {i}: {words}", "input": "", "output": rng.choice(("billing", "shipping", "refund"))})
    trouble = [
        '{"instruction": "broken", ',                                           # malformed JSON
        {"instruction": "no output here"},                                     # missing field
        {"instruction": "empty answer", "output": "   "},                      # empty
        {"instruction": "long " * 300, "output": "x"},                         # too long in tokens
        {"instruction": "y" * 20000, "output": "x"},                           # too long in characters
        {"instruction": "mail ann@example.org or call +1 555 123 4567", "output": "refund"},  # PII
        {"instruction": ["not", "a", "string"], "output": "x"},                # wrong type
    ]
    for row in trouble:
        rows.insert(rng.randrange(len(rows)), row)
    for _ in range(6):  # exact and case/space-folded duplicates
        row = rng.choice([r for r in rows if isinstance(r, dict) and isinstance(r.get("instruction"), str)])
        copy = dict(row, instruction=row["instruction"].upper() + "  ") if rng.random() < 0.5 else row
        rows.insert(rng.randrange(len(rows)), copy)
    return rows


def _chats(n: int, seed: int) -> list:
    rng = random.Random(seed)
    chats: list = []
    for i in range(n):
        turns = [{"role": "user", "content": f"chat {i} about {rng.choice(('a', 'b', 'c'))}"},
                 {"role": "assistant", "content": f"reply {i} " + "ok " * rng.randint(0, 60)}]
        if rng.random() < 0.3:
            turns += [{"role": "user", "content": "and then?"}, {"role": "assistant", "content": f"then {i}"}]
        chats.append({"messages": turns})
    chats.insert(3, {"messages": [{"role": "user", "content": "no answer"}]})               # no assistant turn
    chats.insert(9, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " \t"}]})  # empty
    chats.insert(12, {"messages": [{"role": "system", "content": "s"}]})                     # no assistant turn
    return chats


def write_fixture(folder: Path) -> dict[str, Path]:
    """The fixture files (shared with the cache tests)."""
    files = {"a": _rows(150, 1, "A"), "b": _chats(80, 2), "val": _rows(30, 3, "V"), "test": _rows(30, 4, "T")}
    files["val"].append(files["a"][10])  # a held-out row that also sits in training: training's copy goes
    paths = {}
    for name, rows in files.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
        paths[name] = path
    return paths


def configs(paths: dict[str, Path]) -> dict[str, tuple[DataConfig, int]]:
    """Named configs over the fixture, each with its max_seq_length."""
    a, b = {"path": str(paths["a"]), "weight": 1.5}, {"path": str(paths["b"]), "weight": 0.5}
    return {
        "heldout_files": (DataConfig(train=[a, b], validation=[str(paths["val"])], test=[str(paths["test"])],
                                     on_bad_rows="skip", max_examples=150), 192),
        "carved_split": (DataConfig(train=[str(paths["a"]), str(paths["b"])], split={"validation": 0.1, "test": 0.1},
                                    on_bad_rows="skip", system_prompt="Be brief.",
                                    clean={"redact_pii": True, "too_long": "truncate", "dedupe": "exact"}), 128),
    }


def snapshot(data, folder: Path) -> dict:
    """Everything a user sees of the prepared data, with the temporary folder's name taken out."""
    def portable(value) -> str:  # examples and the report name their files: drop the temporary folder
        return json.dumps(value, sort_keys=True, ensure_ascii=False).replace(str(folder), "<fixture>")

    def digest(value) -> str:
        return hashlib.sha256(portable(value).encode()).hexdigest()

    report = json.loads(portable(data.report.to_dict()))
    return {
        "report": report,
        "train_ids": digest(data.train),
        "validation_ids": digest(data.validation),
        "train_examples": digest(data.train_examples),
        "validation_examples": digest(data.validation_examples),
        "test_examples": digest(data.test_examples),
        "format": data.format,
        "sources": sorted(data.sources.values()),
    }


@pytest.mark.parametrize("num_proc", [1, 2])
@pytest.mark.parametrize("name", ["heldout_files", "carved_split"])
def test_prepared_data_matches_the_sequential_path(name, num_proc, tmp_path, tiny_tokenizer):
    cfg, max_seq_length = configs(write_fixture(tmp_path))[name]
    cfg = cfg.model_copy(update={"num_proc": num_proc})
    data = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7)
    assert snapshot(data, tmp_path) == json.loads((GOLDEN / f"prepare_{name}.json").read_text())


def test_a_second_run_reuses_the_cache_and_gives_the_same_data(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr("tuneforge.data.cache.WRITE_BATCH_ROWS", 16)  # many Arrow batches per file
    fixture = tmp_path / "fixture"
    fixture.mkdir()
    cache = tmp_path / "cache"
    cfg, max_seq_length = configs(write_fixture(fixture))["heldout_files"]
    first = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=cache)
    second = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=cache)
    assert (first.reused, second.reused) == (False, True) and first.cache_key == second.cache_key
    golden = json.loads((GOLDEN / "prepare_heldout_files.json").read_text())
    assert snapshot(first, fixture) == golden and snapshot(second, fixture) == golden
    # Private: the folders 0700 and the files 0600.
    entry = cache / first.cache_key
    assert [oct(p.stat().st_mode & 0o777) for p in (cache, entry)] == ["0o700", "0o700"]
    assert {oct(p.stat().st_mode & 0o777) for p in entry.iterdir()} == {"0o600"}
    assert [p.name for p in cache.iterdir()] == [first.cache_key]  # no temporary folder left behind


def test_the_cache_key_follows_data_config_tokenizer_and_seed(tmp_path, tiny_tokenizer):
    from tuneforge.data.cache import fingerprint

    paths = write_fixture(tmp_path)
    cfg, n = configs(paths)["heldout_files"]
    key = fingerprint(cfg, tiny_tokenizer, max_seq_length=n, seed=7)
    assert key == fingerprint(cfg.model_copy(update={"num_proc": 2, "packing": "off"}), tiny_tokenizer, max_seq_length=n, seed=7)
    changed = [
        fingerprint(cfg, tiny_tokenizer, max_seq_length=n, seed=8),
        fingerprint(cfg, tiny_tokenizer, max_seq_length=n + 1, seed=7),
        fingerprint(cfg.model_copy(update={"max_examples": 10}), tiny_tokenizer, max_seq_length=n, seed=7),
    ]
    template = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = template.replace("<|im_end|>", "<|im_end|>\n")
        changed.append(fingerprint(cfg, tiny_tokenizer, max_seq_length=n, seed=7))
    finally:
        tiny_tokenizer.chat_template = template
    with open(paths["val"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"instruction": "one more", "output": "row"}) + "\n")
    changed.append(fingerprint(cfg, tiny_tokenizer, max_seq_length=n, seed=7))
    assert len({key, *changed}) == 1 + len(changed)


def test_the_cache_is_off_when_asked_or_when_the_run_encrypts(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tuneforge.config.schema import RunConfig
    from tuneforge.data.cache import cache_folder

    monkeypatch.delenv("TUNEFORGE_DATA_CACHE")
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    cfg = RunConfig(data={"train": "a.jsonl"})
    assert cache_folder(cfg) == tmp_path / "data"
    assert cache_folder(cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache": False})})) is None
    # security.encrypt comes from another branch; the hook reads it wherever the section lives.
    encrypted = SimpleNamespace(data=cfg.data, security=SimpleNamespace(encrypt=True))
    assert cache_folder(encrypted) is None


def test_an_entry_stored_twice_keeps_the_first(tmp_path, tiny_tokenizer):
    from tuneforge.data.cache import write_entry

    fixture = tmp_path / "fixture"
    fixture.mkdir()
    cfg, max_seq_length = configs(write_fixture(fixture))["carved_split"]
    data = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=tmp_path / "cache")
    first = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "cache" / data.cache_key).iterdir())
    write_entry(tmp_path / "cache", data.cache_key, data)  # as a second DDP rank would, after the first
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "cache" / data.cache_key).iterdir()) == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [data.cache_key]


def test_a_damaged_entry_is_prepared_again(tmp_path, tiny_tokenizer):
    fixture = tmp_path / "fixture"
    fixture.mkdir()
    cfg, max_seq_length = configs(write_fixture(fixture))["carved_split"]
    first = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=tmp_path / "cache")
    train = tmp_path / "cache" / first.cache_key / "train.arrow"
    train.write_bytes(train.read_bytes()[:100])
    again = prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=tmp_path / "cache")
    assert not again.reused and snapshot(again, fixture) == json.loads((GOLDEN / "prepare_carved_split.json").read_text())
    assert prepare(cfg, tiny_tokenizer, max_seq_length=max_seq_length, seed=7, cache_dir=tmp_path / "cache").reused
