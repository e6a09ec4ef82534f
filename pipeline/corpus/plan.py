"""What `ssvd run` does for a manifest: its units (each split, then the generic set), their stages,
and the resolved corpus config whose hash guards a corpus directory against mixing two configs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Union

from pipeline.corpus.layout import IMAGES, stages_for
from pipeline.manifest.spec import GENERIC_NAME, Defaults, GenericSpec, Manifest, SplitSpec


@dataclass(frozen=True)
class Unit:
    """One split of the manifest, or its generic set."""

    name: str
    role: str  # "split" | "generic"
    kind: str  # "speech" | "text"
    spec: Union[SplitSpec, GenericSpec]
    settings: Defaults  # the manifest defaults with this unit's overrides (and the run's --limit)

    @property
    def stages(self) -> tuple[str, ...]:
        """Its stages in order; splits (rows that reference images) also get `images` after `dialogues`
        (a side stage: it reads the dialogues, nothing reads it but the trainer)."""
        chain = stages_for(self.kind)
        if self.has_images:
            return chain[:1] + (IMAGES,) + chain[1:]
        return chain

    @property
    def has_images(self) -> bool:
        """Every split's rows reference images: by URL or path (caption splits), or by the sha256 of the
        bytes embedded in the benchmark dataset (benchmark splits). The generic set has no image."""
        return self.role == "split"

    @property
    def is_benchmark(self) -> bool:
        return self.role == "split" and self.spec.is_benchmark  # type: ignore[union-attr]

    def upstream(self, stage: str) -> str | None:
        """The stage whose output `stage` reads (None for the first); `images` reads the dialogues."""
        chain = stages_for(self.kind)
        if stage == IMAGES:
            return chain[0]
        i = chain.index(stage)
        return chain[i - 1] if i else None


def _limited(settings: Defaults, limit: int | None) -> Defaults:
    if limit is None:
        return settings
    from dataclasses import replace

    return replace(settings, limit=limit if settings.limit is None else min(settings.limit, limit))


def units(manifest: Manifest, limit: int | None = None, only: list[str] | None = None) -> list[Unit]:
    """The manifest's splits in file order, then `generic` (if any); `only` keeps those named
    (an unknown name is an error listing the valid ones)."""
    out = [Unit(s.name, "split", s.kind, s, _limited(manifest.resolved(s), limit)) for s in manifest.splits]
    if manifest.generic is not None:
        g = manifest.generic
        out.append(Unit(GENERIC_NAME, "generic", g.kind, g, _limited(manifest.resolved(g), limit)))
    if only:
        names = [u.name for u in out]
        bad = [n for n in only if n not in names]
        if bad:
            raise ValueError(f"--only {', '.join(bad)}: no such split in manifest {manifest.name!r}; "
                             f"valid: {', '.join(names)}")
        out = [u for u in out if u.name in only]
    return out


def corpus_config(manifest: Manifest, limit: int | None) -> dict[str, Any]:
    """What a corpus directory is made of: the resolved manifest (splits keyed by name, so a
    difference names its split) and the run's --limit. --only is not part of it: a corpus can be
    built a few splits at a time."""
    m = manifest.to_dict()
    m["splits"] = {s["name"]: s for s in m["splits"]}
    return {"manifest": m, "limit": limit}


def config_hash(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
