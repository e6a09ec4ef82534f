"""A whole corpus in one directory, from one manifest: `ssvd run`, `status`, `verify`, `preview`, `report`.

Layout and the `manifest.json` format: `pipeline/corpus/layout.py` and `docs/corpus.md`.
"""
