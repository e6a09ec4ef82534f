"""Reading stored images by image id: `DIR/<split>/images/images-NNNNN.parquet` of one or more splits.

`ImageStore(dirs)` indexes the `id`, `status` and `reason` columns (a few bytes per image); the
encoded image of an id is read from its row group when asked (a small LRU of decoded row groups,
64 images each). The first ok row of an id wins when several splits stored it.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from pipeline.images.schema import ref_id

STAGE = "images"


class ImageStore:
    def __init__(self, dirs: Iterable[str | Path], cache_groups: int = 8):
        self.files: list[Path] = []
        self.index: dict[str, tuple[int, int, int]] = {}  # id -> (file, row group, row)
        self.state: dict[str, tuple[str, str]] = {}  # id -> (status, reason)
        for d in dirs:
            for f in sorted(Path(d).glob(f"{STAGE}-*.parquet")):
                k = len(self.files)
                self.files.append(f)
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    t = pf.read_row_group(g, columns=["id", "status", "reason"])
                    for i, (iid, st, why) in enumerate(zip(*(t.column(c).to_pylist() for c in ("id", "status", "reason")))):
                        if iid not in self.state or (st == "ok" and self.state[iid][0] != "ok"):
                            self.state[iid] = (st, why or "")
                            self.index[iid] = (k, g, i)
        self._groups: OrderedDict[tuple[int, int], list] = OrderedDict()
        self._cache = cache_groups

    def __len__(self) -> int:
        return len(self.state)

    def __bool__(self) -> bool:
        return bool(self.files)

    def lookup(self, image: dict | None) -> tuple[str, str] | None:
        """(status, reason) of a row's image in the store; None when the store does not know it."""
        iid = ref_id(image)
        return self.state.get(iid) if iid else None

    def unavailable(self, image: dict | None) -> str | None:
        """The reason a row's image could not be had ("image:none" when the row has no image reference);
        None when it is stored ok or unknown to the store."""
        if self.files and not ref_id(image):
            return "image:none"
        st = self.lookup(image)
        if st is None or st[0] == "ok":
            return None
        return st[1] or f"image:{st[0]}"

    def get(self, image: dict | None) -> bytes | None:
        """The stored encoded image (JPEG) of a row's image, or None."""
        iid = ref_id(image)
        return self.get_id(iid) if iid else None

    def get_id(self, iid: str) -> bytes | None:
        pos = self.index.get(iid)
        if pos is None or self.state[iid][0] != "ok":
            return None
        k, g, i = pos
        col = self._groups.get((k, g))
        if col is None:
            col = pq.ParquetFile(self.files[k]).read_row_group(g, columns=["image"]).column("image").to_pylist()
            self._groups[(k, g)] = col
            while len(self._groups) > self._cache:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end((k, g))
        return col[i]


def corpus_image_dirs(root: str | Path, splits: Iterable[dict] | None = None) -> list[Path]:
    """The images directories of a corpus (from manifest.json's split entries when given, else DIR/*/images)."""
    root = Path(root)
    if splits is None:
        return sorted(p for p in root.glob(f"*/{STAGE}") if p.is_dir())
    out = []
    for s in splits:
        for st in s.get("stages") or []:
            if st.get("stage") == STAGE and (root / st["dir"]).is_dir():
                out.append(root / st["dir"])
    return out
