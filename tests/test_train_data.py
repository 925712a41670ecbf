"""Training text: the standard-library corpus, user files, the split and the batches."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from sparkling_ir.errors import DataError
from sparkling_ir.train.data import (
    HOLDOUT_FRACTION,
    BatchStream,
    load_corpus,
    max_validation_batches,
    min_corpus_bytes,
    read_stdlib_corpus,
    split_corpus,
    stdlib_source_files,
    validation_batches,
)


def make_library(root: Path) -> None:
    """Build a small stand-in for a stdlib directory, with the parts that must be left out."""
    files = {
        "zlib_helpers.py": "z = 1\n",
        "abc.py": "a = 1\n",
        "email/parser.py": "p = 2\n",
        "email/__init__.py": "",
        "test/test_abc.py": "t = 3\n",
        "idlelib/idle_test/test_x.py": "i = 4\n",
        "site-packages/pkg/mod.py": "s = 5\n",
        "notes.txt": "not python\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_stdlib_files_sorted_without_tests(tmp_path: Path) -> None:
    make_library(tmp_path)

    names = [path.relative_to(tmp_path).as_posix() for path in stdlib_source_files(tmp_path)]

    assert names == ["abc.py", "email/__init__.py", "email/parser.py", "zlib_helpers.py"]


def test_stdlib_corpus_joins_files_in_order(tmp_path: Path) -> None:
    make_library(tmp_path)

    assert read_stdlib_corpus(tmp_path) == b"a = 1\n\n\np = 2\n\nz = 1\n\n"


def test_stdlib_corpus_is_capped(tmp_path: Path) -> None:
    make_library(tmp_path)

    assert read_stdlib_corpus(tmp_path, max_bytes=9) == b"a = 1\n\n\np"


def test_stdlib_corpus_without_sources_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no .py files found.*--text"):
        read_stdlib_corpus(tmp_path)


def test_real_stdlib_gives_enough_text() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])

    data = read_stdlib_corpus(max_bytes=200_000)

    assert len(data) == 200_000
    assert data.startswith((root / stdlib_source_files(root)[0]).read_bytes()[:100])


def test_user_text_is_split_for_holdout(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(bytes(range(256)) * 20)  # 5,120 bytes

    corpus = load_corpus(path, block_size=16)

    assert corpus.source == str(path)
    assert corpus.total_bytes == 5120
    assert corpus.validation.numel() == round(5120 * HOLDOUT_FRACTION)
    joined = torch.cat([corpus.train, corpus.validation])
    assert bytes(joined.tolist()) == path.read_bytes()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda path: None, r"corpus.txt not found; pass an existing file to --text"),
        (lambda path: path.mkdir(), r"corpus.txt is not a regular file"),
        (lambda path: path.write_bytes(b""), r"corpus.txt is empty"),
        (
            lambda path: path.write_bytes(b"x" * 100),
            r"corpus.txt is 100 bytes, but --block-size 16 needs at least 170 bytes",
        ),
    ],
    ids=["missing", "directory", "empty", "too-short"],
)
def test_bad_user_text_raises(tmp_path: Path, setup: object, message: str) -> None:
    path = tmp_path / "corpus.txt"
    setup(path)  # type: ignore[operator]

    with pytest.raises(DataError, match=message):
        load_corpus(path, block_size=16)


def test_minimum_leaves_window_in_holdout() -> None:
    minimum = min_corpus_bytes(block_size=16)
    corpus = split_corpus(b"y" * minimum, "text")

    assert corpus.validation.numel() >= 17
    assert min_corpus_bytes(block_size=128) == 1290


def test_batches_are_shifted_windows() -> None:
    tokens = torch.arange(200, dtype=torch.uint8)
    stream = BatchStream(tokens, batch_size=5, block_size=8, seed=0)

    inputs, targets = stream.next_batch()

    assert inputs.shape == targets.shape == (5, 8)
    assert inputs.dtype == torch.long
    # arange text: each window counts up, and the targets are the inputs plus one.
    assert torch.equal(targets, inputs + 1)
    assert torch.equal(inputs - inputs[:, :1], torch.arange(8).expand(5, 8))
    assert int(targets.max()) <= 199


def test_same_seed_gives_same_batches() -> None:
    tokens = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    first = BatchStream(tokens, batch_size=4, block_size=8, seed=7)
    second = BatchStream(tokens, batch_size=4, block_size=8, seed=7)
    other = BatchStream(tokens, batch_size=4, block_size=8, seed=8)

    batches = [first.next_batch()[0] for _ in range(3)]

    assert all(torch.equal(b, second.next_batch()[0]) for b in batches)
    assert not torch.equal(batches[0], other.next_batch()[0])


def test_validation_batches_are_fixed_and_spread() -> None:
    tokens = torch.arange(100, dtype=torch.uint8)

    batches = validation_batches(tokens, batch_size=3, block_size=9, max_batches=2)

    assert len(batches) == 2
    starts = [int(row[0]) for inputs, _ in batches for row in inputs]
    assert starts[0] == 0
    assert starts[-1] == 100 - 9 - 1  # the last window ends on the last token
    assert starts == sorted(starts)
    assert batches[0][0].equal(validation_batches(tokens, 3, 9, 2)[0][0])


def test_short_validation_text_gives_fewer_batches() -> None:
    tokens = torch.arange(12, dtype=torch.uint8)

    batches = validation_batches(tokens, batch_size=4, block_size=9, max_batches=8)

    assert [inputs.shape[0] for inputs, _ in batches] == [1]  # windows 0..9 and 9..18 overlap


def test_validation_windows_never_overlap() -> None:
    tokens = torch.arange(100, dtype=torch.uint8)  # each token is its own position

    batches = validation_batches(tokens, batch_size=4, block_size=9, max_batches=100)

    assert [inputs.shape[0] for inputs, _ in batches] == [4, 4, 3]  # (100 - 1) // 9 windows
    assert max_validation_batches(100, batch_size=4, block_size=9) == 3
    targets = torch.cat([batch_targets.flatten() for _, batch_targets in batches])
    assert targets.unique().numel() == targets.numel()  # no byte predicted twice
    assert int(targets[-1]) == 99  # the last window ends on the last token
