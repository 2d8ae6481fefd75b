"""Large prepared splits live in memory-mapped Arrow files and read the same as the lists they replace."""

from __future__ import annotations

import os
import tempfile
from array import array

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data import prepare
from tuneforge.data.pack import Collator, pack_examples, training_rows
from tuneforge.data.store import ExampleRows, TokenRows, map_split, open_split, write_split


@pytest.fixture
def large_file(write_jsonl, alpaca_rows):
    return write_jsonl("large.jsonl", alpaca_rows(2000))


def _prepare(path, tokenizer, **extra):
    cfg = DataConfig(train=[str(path)], split={"validation": 0.05, "test": 0.05})
    return prepare(cfg, tokenizer, max_seq_length=128, seed=3, **extra)


def test_a_large_training_split_is_memory_mapped_not_a_list(large_file, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.mkdir(tmp_path / "tmp")
    data = _prepare(large_file, tiny_tokenizer)
    assert isinstance(data.train, TokenRows) and not isinstance(data.train, list)
    assert isinstance(data.train_examples, ExampleRows) and len(data.train_examples) == len(data.train) > 1024
    assert list(os.scandir(tmp_path / "tmp")) == []  # the file is unlinked once mapped: nothing left behind
    # The same items, in the same order, as the in-memory path of an encrypted run gives.
    from tuneforge.security.crypto import Key

    listed = _prepare(large_file, tiny_tokenizer, key=Key.from_bytes(bytes(32)))
    assert type(listed.train) is list and type(listed.train[0]["input_ids"]) is list
    assert list(data.train) == listed.train and list(data.train_examples) == listed.train_examples
    assert data.train[-1] == listed.train[-1] and data.train[5:8] == listed.train[5:8]
    assert list(data.train.lengths) == [len(t["input_ids"]) for t in listed.train]
    # Validation (100 rows) stays a list of lists: small splits are not worth a file.
    assert type(data.validation) is list and data.validation == listed.validation
    assert data.test_examples == listed.test_examples


def test_a_large_test_split_is_mapped_too(write_jsonl, alpaca_rows, tiny_tokenizer, tmp_path):
    cfg = DataConfig(train=[str(write_jsonl("large.jsonl", alpaca_rows(2400)))], split={"validation": 0.45, "test": 0.45})
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # no cache, then a cache's first and second run
        data = prepare(cfg, tiny_tokenizer, max_seq_length=128, seed=3, cache_dir=cache)
        assert isinstance(data.test_examples, ExampleRows) and isinstance(data.validation, TokenRows)
        assert len(data.test_examples) > 1024 and data.test_examples[0]["messages"][0]["role"] == "user"


def test_the_cache_maps_its_own_files_on_the_first_and_second_run(large_file, tiny_tokenizer, tmp_path):
    first = _prepare(large_file, tiny_tokenizer, cache_dir=tmp_path / "cache")
    second = _prepare(large_file, tiny_tokenizer, cache_dir=tmp_path / "cache")
    assert (first.reused, second.reused) == (False, True)
    assert isinstance(first.train, TokenRows) and isinstance(second.train, TokenRows)
    assert list(first.train) == list(second.train) and list(first.train_examples) == list(second.train_examples)


def test_packing_reads_lengths_and_resolves_rows_at_collate_time(large_file, tiny_tokenizer):
    data = _prepare(large_file, tiny_tokenizer)
    listed = list(data.train)
    lazy_rows, list_rows = pack_examples(data.train, 256, seed=1), pack_examples(listed, 256, seed=1)
    assert [list(r.indices) for r in lazy_rows] == [list(r.indices) for r in list_rows]
    assert all(r.source is data.train for r in lazy_rows)  # indices into the mapped file, not copies
    collate = Collator(tiny_tokenizer.pad_token_id)
    for lazy, plain in zip(training_rows(data.train, packed=True, max_length=128, token_budget=512, seed=0)[:5],
                           training_rows(listed, packed=True, max_length=128, token_budget=512, seed=0)[:5]):
        a, b = collate([lazy]), collate([plain])
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    # The memory estimate plans the same largest batch from the stored target counts as from the labels.
    from tuneforge.train.estimate import batch_shape

    for budget in (None, 512):
        lazy = training_rows(data.train, packed=True, max_length=128, token_budget=budget, seed=0)
        plain = training_rows(listed, packed=True, max_length=128, token_budget=budget, seed=0)
        assert batch_shape(lazy, 4, packed=True) == batch_shape(plain, 4, packed=True)
    assert batch_shape(data.train, 4, packed=False) == batch_shape(listed, 4, packed=False)  # unpacked, sized by rows
    unpacked = training_rows(data.train, packed=False, max_length=128, token_budget=512, seed=0)
    assert sum(len(b.rows) for b in unpacked) == len(data.train)
    assert all(r.source is data.train for b in unpacked for r in b.rows)


def test_a_split_file_round_trips_tokens_weights_and_examples(tmp_path, monkeypatch):
    examples = [{"messages": [{"role": "user", "content": f"q{i}"}], "meta": {"line": i}} for i in range(5)]
    tokens = [{"input_ids": array("i", range(i + 1)), "labels": array("i", [-100] + [7] * i), "weight": 0.5 + i}
              for i in range(5)]
    path = tmp_path / "train.arrow"
    write_split(path, examples, tokens, batch_rows=2)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):  # written once, never overwritten
        write_split(path, examples, tokens)
    rows, texts = TokenRows(open_split(path)), ExampleRows(open_split(path))
    assert rows[4] == {"input_ids": [0, 1, 2, 3, 4], "labels": [-100, 7, 7, 7, 7], "weight": 4.5}
    assert rows[-1] == rows[4] and list(texts) == examples and list(rows.lengths) == [1, 2, 3, 4, 5]
    assert list(rows.targets) == [0, 1, 2, 3, 4]  # labelled tokens after the first (never a target when packed)
    with pytest.raises(IndexError):
        rows[5]
    # Released pages are read again from the file: the rows stay the same however often they are dropped.
    monkeypatch.setattr("tuneforge.data.store.RELEASE_EVERY", 2)
    table, mapping = map_split(path)
    fresh = TokenRows(table, mapping)
    assert [fresh[i % 5] for i in range(10)] == list(rows) * 2


def test_the_spool_on_disk_reads_back_what_the_one_in_memory_holds(tmp_path, monkeypatch):
    from tuneforge.data.spool import Spool
    from tuneforge.data.template import Encoded

    monkeypatch.setattr("tuneforge.data.spool.WRITE_BATCH_ROWS", 3)  # rows cross several batches
    disk, memory = Spool(tmp_path), Spool(None)
    for i in range(10):
        example = {"messages": [{"role": "user", "content": f"q{i} ü"}], "meta": {"line": i + 1}}
        encoded = None if i == 4 else Encoded(array("i", range(i + 2)), array("i", [-100] * 2 + list(range(2, i + 2))))
        assert disk.add(example, encoded) == memory.add(example, encoded) == i
    disk.close(), memory.close()
    assert oct((tmp_path / "spool.arrow").stat().st_mode & 0o777) == "0o600"
    rows, weights = [9, 0, 9, 3], [0.5, 1.0, 0.5, 2.0]  # a row repeated by a mixing weight, out of order
    assert disk.examples(rows) == memory.examples(rows) and disk.example(7) == memory.example(7)
    assert disk.tokens(rows, weights) == memory.tokens(rows, weights)
    assert disk.tokens(rows)[0]["input_ids"] == list(range(11)) and disk.examples([4])[0]["meta"] == {"line": 5}
    disk.write(tmp_path / "train.arrow", array("q", rows), weights)
    written = TokenRows(open_split(tmp_path / "train.arrow"))
    assert list(written) == memory.tokens(rows, weights) and list(written.targets) == [9, 0, 9, 3]
    assert list(ExampleRows(written.table)) == memory.examples(rows)


def test_a_mapped_split_reaches_a_dataloader_worker_started_by_spawn(large_file, tiny_tokenizer):
    """macOS and Windows start DataLoader workers by spawn (Python 3.14 on Linux by forkserver), which pickles
    the dataset: the file mapping stays behind and the rows travel by value."""
    import pickle

    from torch.utils.data import DataLoader

    data = _prepare(large_file, tiny_tokenizer)
    assert isinstance(data.train, TokenRows) and data.train._mapping is not None
    copy = pickle.loads(pickle.dumps(data.train))
    assert copy._mapping is None and list(copy) == list(data.train) and list(copy.lengths) == list(data.train.lengths)
    rows = training_rows(data.train, packed=True, max_length=128, token_budget=512, seed=0)[:3]
    collate = Collator(tiny_tokenizer.pad_token_id)
    loader = DataLoader(rows, batch_size=1, collate_fn=collate, num_workers=1, multiprocessing_context="spawn")
    for got, row in zip(loader, rows):
        want = collate([row])
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)


def test_targets_count_labelled_tokens_after_the_first_for_every_container():
    from array import array

    import numpy as np

    from tuneforge.data.store import targets

    for labels in ([], [-100], [5], [5, 6, -100, 7], [-100, -100, 3, 4], [-100, 1, -100, 2, -100]):
        expected = sum(label != -100 for label in labels[1:])
        for box in (list, lambda x: array("i", x), lambda x: np.asarray(x, dtype=np.int64)):
            assert targets({"labels": box(labels)}) == expected
