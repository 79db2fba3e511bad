"""Read the shards that ``revmed.data.patchify`` wrote, as a torch ``Dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from revmed.data.patchify import read_manifest
from revmed.errors import InputError


class PatchDataset(Dataset):
    """All patches of a patch folder; item ``i`` is ``{key: tensor (C, *size)}``.

    Shards are loaded when first touched and kept (a shard holds one case's patches).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self._index: list[tuple[int, int]] = [
            (s, i) for s, shard in enumerate(self.manifest["shards"]) for i in range(shard["patches"])
        ]
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._index)

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        if s not in self._cache:
            path = self.folder / self.manifest["shards"][s]["file"]
            try:
                with np.load(path, allow_pickle=False) as stored:
                    self._cache[s] = {k: stored[k] for k in stored.files}
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: unreadable patch shard ({exc})") from exc
        return self._cache[s]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        s, i = self._index[item]
        return {k: torch.from_numpy(np.ascontiguousarray(v[i])) for k, v in self._shard(s).items()}
