"""Index maps: where every entry of a widened tensor comes from.

A `DimRemap` describes one widened dimension. Old entry `i` keeps its value and moves to
`old_position[i]`. When new entries are appended that is `i` itself, but a head-dim growth
inside a flattened `heads * head_dim` dimension moves old entries. Every position `j` of the new dimension
derives from the old index `source[j]`: itself for old entries, the unit it duplicates for new
ones. Initialisers read `source` to copy, optimizer-state remapping reads `old_position` to
place the old state, and both read `new_mask` to find the new entries.

A `ParamRemap` gathers the `DimRemap`s of one parameter, keyed by dimension index.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, model_validator


class DimRemap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    old_size: int
    new_size: int
    old_position: tuple[int, ...]
    source: tuple[int, ...]

    @model_validator(mode="after")
    def _check_consistent(self) -> DimRemap:
        if len(self.old_position) != self.old_size or len(self.source) != self.new_size:
            raise ValueError("old_position and source must have old_size and new_size entries")
        if self.new_size < self.old_size:
            raise ValueError(f"new_size {self.new_size} is smaller than old_size {self.old_size}")
        # Range checks come first: a negative position would otherwise index from the end.
        for position in self.old_position:
            if not 0 <= position < self.new_size:
                raise ValueError(f"old_position {position} is outside 0..{self.new_size - 1}")
        for index in self.source:
            if not 0 <= index < self.old_size:
                raise ValueError(f"source index {index} is outside 0..{self.old_size - 1}")
        # Each position is the image of exactly one old index, so positions are distinct.
        for index, position in enumerate(self.old_position):
            if self.source[position] != index:
                raise ValueError(f"old index {index} moves to {position}, whose source differs")
        return self

    @classmethod
    def append_cyclic(cls, old_size: int, new_size: int) -> DimRemap:
        """Keep old entries in place and append copies `0, 1, ..., old_size-1, 0, ...`."""
        source = tuple(j % old_size for j in range(new_size))
        return cls(
            old_size=old_size, new_size=new_size,
            old_position=tuple(range(old_size)), source=source,
        )

    def source_tensor(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.tensor(self.source, dtype=torch.long, device=device)

    def old_position_tensor(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.tensor(self.old_position, dtype=torch.long, device=device)

    def new_mask(self, device: torch.device | None = None) -> torch.Tensor:
        """Boolean mask over the new dimension, true at positions that hold new entries."""
        mask = torch.ones(self.new_size, dtype=torch.bool, device=device)
        mask[self.old_position_tensor(device)] = False
        return mask

    def copy_counts(self) -> torch.Tensor:
        """`k_r`: how many positions of the new dimension derive from each old index r."""
        return torch.bincount(self.source_tensor(), minlength=self.old_size)

    def describe(self) -> str:
        """Describe the map in one stable line, e.g. `64 -> 128 (appended, source j mod 64)`.

        The source is the old entry a new one is paired with: its copy under `sparkling`
        initialisation, the unit whose place it takes under `random` and `zero`.
        """
        appended = self.old_position == tuple(range(self.old_size))
        cyclic = self.source == tuple(j % self.old_size for j in range(self.new_size))
        if appended and cyclic:
            return f"{self.old_size} -> {self.new_size} (appended, source j mod {self.old_size})"
        if appended:
            return f"{self.old_size} -> {self.new_size} (appended)"
        return f"{self.old_size} -> {self.new_size} (new entries interleaved, e.g. per segment)"


class ParamRemap(BaseModel):
    """The widened dimensions of one parameter, by dimension index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    dims: Mapping[int, DimRemap]

    @model_validator(mode="after")
    def _check_shapes(self) -> ParamRemap:
        if len(self.old_shape) != len(self.new_shape):
            raise ValueError(
                f"{self.name}: old shape {self.old_shape} and new shape {self.new_shape} "
                "differ in rank"
            )
        for dim in self.dims:
            if not 0 <= dim < len(self.old_shape):
                raise ValueError(f"{self.name}: remapped dim {dim} is outside the rank")
        for dim, (old, new) in enumerate(zip(self.old_shape, self.new_shape)):
            remap = self.dims.get(dim)
            if remap is None and old != new:
                raise ValueError(f"{self.name}: dim {dim} goes {old} -> {new} without a DimRemap")
            if remap is not None and (old, new) != (remap.old_size, remap.new_size):
                raise ValueError(
                    f"{self.name}: dim {dim} goes {old} -> {new}, but its DimRemap goes "
                    f"{remap.old_size} -> {remap.new_size}"
                )
        return self

    def new_mask(self, device: torch.device | None = None) -> torch.Tensor:
        """Boolean tensor of `new_shape`, true where any widened dimension is at a new position."""
        mask = torch.zeros(self.new_shape, dtype=torch.bool, device=device)
        for dim, remap in self.dims.items():
            shape = [1] * len(self.new_shape)
            shape[dim] = remap.new_size
            mask |= remap.new_mask(device).view(shape)
        return mask

    def place_old(self, old: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Return `fill` (of `new_shape`) with `old` written at the old positions: `[S, fill]`."""
        out = fill.clone()
        # Scatter through an open grid: index `dim` has shape [1, .., old_shape[dim], .., 1],
        # and advanced indexing broadcasts these, so no dense grid of indices is built.
        grids = []
        for dim in range(old.dim()):
            if dim in self.dims:
                index = self.dims[dim].old_position_tensor(out.device)
            else:
                index = torch.arange(old.shape[dim], device=out.device)
            shape = [1] * old.dim()
            shape[dim] = old.shape[dim]
            grids.append(index.view(shape))
        out[tuple(grids)] = old.to(out.device)
        return out

    def gather_sources(self, old: torch.Tensor) -> torch.Tensor:
        """Return a new tensor of `new_shape` whose every entry copies its source entry in `old`."""
        if not self.dims:
            return old.clone()  # never alias the input, even when nothing is widened
        out = old
        for dim, remap in sorted(self.dims.items()):
            out = out.index_select(dim, remap.source_tensor(old.device))
        return out
