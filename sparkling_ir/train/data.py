"""Training text for `sparkling train`: corpus loading, byte tokenizer, batches.

The tokenizer is the identity on bytes: token id = byte value, vocabulary 256. Any file is
valid input and no vocabulary file is needed.

The default corpus is the source of the Python standard library of the running interpreter
(the `.py` files under `sysconfig.get_paths()["stdlib"]`), so that real human-written text
(code, docstrings and comments) is available offline on every machine with CPython. Test
suites and installed packages are left out, files are read in sorted order, and the text is
capped at `DEFAULT_CORPUS_BYTES`. The bytes therefore differ between Python versions, but
never between two runs of the same interpreter.

The last `HOLDOUT_FRACTION` of the bytes is held out for validation loss. The training batches
come from a seeded generator, so two runs with the same seed see the same batches in the same
order, whatever model they train.
"""

from __future__ import annotations

import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from sparkling_ir.errors import DataError
from sparkling_ir.train.counts import count_noun

logger = logging.getLogger(__name__)

VOCAB_SIZE = 256
# 8 MiB, of the 12.0 MiB of .py files that CPython 3.11.7 has outside its test suites.
DEFAULT_CORPUS_BYTES = 8 * 2**20
HOLDOUT_FRACTION = 0.1

# Directory names left out of the standard-library corpus: third-party packages, and the test
# suites, which are large, repetitive and partly generated.
_EXCLUDED_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


@dataclass(frozen=True)
class Corpus:
    """A byte corpus split into training and held-out validation tokens (1-D uint8 tensors)."""

    source: str  # where the text came from, for metrics.json and messages
    train: torch.Tensor
    validation: torch.Tensor

    @property
    def total_bytes(self) -> int:
        return int(self.train.numel() + self.validation.numel())


def min_corpus_bytes(block_size: int) -> int:
    """Return the smallest text length that leaves one `block_size + 1` window in each split."""
    # The holdout is the last 10% of the text, so the text needs 10 windows for it to hold one.
    return round((block_size + 1) / HOLDOUT_FRACTION)


def load_corpus(text_path: Path | None, block_size: int) -> Corpus:
    """Load `text_path`, or the standard-library corpus if it is None, and split it.

    Raises `DataError` naming the file if it is missing, unreadable, empty, or shorter than
    `min_corpus_bytes(block_size)`.
    """
    if text_path is None:
        data, source = read_stdlib_corpus(), "python-stdlib"
    else:
        data, source = read_text_file(text_path), str(text_path)
    check_corpus_size(data, source, block_size)
    return split_corpus(data, source)


def read_text_file(path: Path) -> bytes:
    """Read a user's training file as bytes; raise `DataError` if it is missing or unreadable."""
    if not path.exists():
        raise DataError(f"training text {path} not found; pass an existing file to --text")
    if not path.is_file():
        raise DataError(f"training text {path} is not a regular file; pass a file to --text")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read training text {path}: {error.strerror}") from error
    if not data:
        raise DataError(f"training text {path} is empty; pass a file with text in it")
    return data


def read_stdlib_corpus(
    root: Path | None = None, max_bytes: int = DEFAULT_CORPUS_BYTES
) -> bytes:
    """Concatenate the standard library's `.py` files in sorted order, up to `max_bytes`.

    `root` defaults to the running interpreter's stdlib directory. Each file is followed by a
    newline. When the library is larger than `max_bytes`, the last file is cut so that the
    result is exactly `max_bytes` long.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    files = stdlib_source_files(root)
    if not files:
        raise DataError(
            f"no .py files found under the standard library directory {root}; "
            "pass a text file with --text"
        )
    chunks: list[bytes] = []
    size = 0
    for path in files:
        try:
            chunk = path.read_bytes() + b"\n"
        except OSError as error:
            # A stray unreadable file (permissions, a broken link) is skipped, not fatal.
            logger.warning("skipping unreadable stdlib file %s: %s", path, error.strerror)
            continue
        chunks.append(chunk[: max_bytes - size])
        size += len(chunks[-1])
        if size >= max_bytes:
            break
    logger.info("read %d bytes of Python standard library from %s", size, root)
    return b"".join(chunks)


def stdlib_source_files(root: Path) -> list[Path]:
    """Return the `.py` files under `root` outside `_EXCLUDED_PARTS`, sorted by relative path."""
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if _EXCLUDED_PARTS.isdisjoint(relative.parts) and path.is_file():
            found.append(relative)
    return [root / relative for relative in sorted(found, key=lambda p: p.as_posix())]


def check_corpus_size(data: bytes, source: str, block_size: int) -> None:
    minimum = min_corpus_bytes(block_size)
    if len(data) < minimum:
        raise DataError(
            f"training text {source} is {count_noun(len(data), 'byte')}, but --block-size "
            f"{block_size} needs at least {minimum:,} bytes (a {block_size + 1}-byte window "
            f"in the {HOLDOUT_FRACTION:.0%} validation holdout); pass a longer text or a "
            "smaller --block-size"
        )


def split_corpus(data: bytes, source: str) -> Corpus:
    """Split off the last `HOLDOUT_FRACTION` of the bytes as validation text."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    holdout = max(1, round(len(data) * HOLDOUT_FRACTION))
    return Corpus(source=source, train=tokens[:-holdout], validation=tokens[-holdout:])


def windows(tokens: torch.Tensor, offsets: torch.Tensor, block_size: int) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Cut `(inputs, targets)` windows of `block_size` tokens starting at `offsets`.

    `tokens` is 1-D uint8, `offsets` is `(batch,)`. Both results are int64 `(batch, block_size)`;
    the targets are the inputs shifted left by one token.
    """
    index = offsets[:, None] + torch.arange(block_size + 1)  # (batch, block_size + 1)
    window = tokens[index].long()
    return window[:, :-1], window[:, 1:]


class BatchStream:
    """Random training windows from a seeded generator: the same seed gives the same batches."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, block_size: int, seed: int) -> None:
        if tokens.numel() < block_size + 1:
            raise DataError(
                f"training split has {count_noun(tokens.numel(), 'token')}, fewer than one "
                f"window of {block_size + 1}; pass a longer text or a smaller --block-size"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the next `(inputs, targets)` pair, each `(batch_size, block_size)` int64."""
        high = self.tokens.numel() - self.block_size  # last valid start is high - 1
        offsets = torch.randint(0, high, (self.batch_size,), generator=self.generator)
        return windows(self.tokens, offsets, self.block_size)


def validation_windows(holdout_tokens: int, block_size: int) -> int:
    """Return how many windows fit in the holdout without predicting any byte twice.

    A window contains `block_size + 1` bytes and predicts its last `block_size`. Windows that
    start `block_size` apart share one byte, the last target of one and the first input of
    the next, so no byte is predicted twice.
    """
    return max(0, (holdout_tokens - 1) // block_size)


def max_validation_batches(holdout_tokens: int, batch_size: int, block_size: int) -> int:
    """Return how many validation batches the holdout fills, the last one maybe partly."""
    return -(-validation_windows(holdout_tokens, block_size) // batch_size)


def validation_batches(
    tokens: torch.Tensor, batch_size: int, block_size: int, max_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut the validation text into at most `max_batches` fixed batches of evenly spread,
    non-overlapping windows; the last batch is smaller when the windows run out.

    The windows are the same on every call, so losses measured at different times (before
    and after a growth event, or in two runs) are measured on exactly the same tokens.
    """
    high = tokens.numel() - block_size  # number of valid window starts
    count = min(max_batches * batch_size, validation_windows(tokens.numel(), block_size))
    if count < 1:
        raise DataError(
            f"validation split has {count_noun(tokens.numel(), 'token')}, fewer than one "
            f"window of {block_size + 1}; pass a longer text or a smaller --block-size"
        )
    # Integer spacing of at least block_size, because count is at most the number of
    # non-overlapping windows; float spacing could round two starts closer than that.
    offsets = torch.arange(count) * (high - 1) // max(1, count - 1)
    return [windows(tokens, chunk, block_size) for chunk in torch.split(offsets, batch_size)]
