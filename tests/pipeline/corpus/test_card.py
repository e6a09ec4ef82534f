"""DIR/README.md: the Hugging Face dataset card of the test corpus (fixture `corpus_dir`)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.corpus.card import LICENCES, render_card, write_card
from pipeline.core.types import TOKEN_SCHEMA


def _prov(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _ids(root: Path, split: dict) -> list[str]:
    return [i for s in split["shards"] for i in pq.read_table(root / s["path"], columns=["id"])["id"].to_pylist()]


def split_card(text: str) -> tuple[dict, str]:
    """(front matter, body) the way the hub reads a card: YAML between the first two `---` lines."""
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end + 1]), text[end + 5:]


@pytest.fixture
def card_copy(corpus_copy) -> Path:
    write_card(corpus_copy)
    return corpus_copy


def test_front_matter_has_one_config_per_split(card_copy):
    path = card_copy / "README.md"
    fm, body = split_card(path.read_text())
    prov = _prov(card_copy)
    assert fm["license"] == "other" and fm["license_name"]
    assert fm["language"] == ["en"] and fm["task_categories"] and "synthetic" in fm["tags"]
    assert fm["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in fm["configs"]] == [s["name"] for s in prov["splits"]]
    for c in fm["configs"]:
        assert c["data_files"] == [{"split": "train", "path": f"{c['config_name']}/tokens/*.parquet"}]
        # the glob, relative to the dataset root, matches exactly the split's token shards
        split = next(s for s in prov["splits"] if s["name"] == c["config_name"])
        found = sorted(p.relative_to(card_copy).as_posix() for p in card_copy.glob(c["data_files"][0]["path"]))
        assert found == sorted(s["path"] for s in split["shards"]) != []
    for s in prov["splits"]:  # the splits table
        assert f"| {s['name']} | {s['kind']} |" in body
    assert prov["config_hash"] in body and "ssvd run" in body
    for f in TOKEN_SCHEMA:
        assert f"| `{f.name}` |" in body


def test_the_run_wrote_the_card(corpus_dir):
    fm, body = split_card((corpus_dir / "README.md").read_text())
    assert [c["config_name"] for c in fm["configs"]] == [s["name"] for s in _prov(corpus_dir)["splits"]]


def test_load_dataset_reads_one_split(card_copy, tmp_path):
    datasets = pytest.importorskip("datasets")
    prov = _prov(card_copy)
    fm, _ = split_card((card_copy / "README.md").read_text())
    for name in ("tallyqa", next(s["name"] for s in prov["splits"] if s["kind"] == "speech")):
        split = next(s for s in prov["splits"] if s["name"] == name)
        glob = next(c for c in fm["configs"] if c["config_name"] == name)["data_files"][0]["path"]
        ds = datasets.load_dataset("parquet", data_files=str(card_copy / glob), split="train",
                                   cache_dir=str(tmp_path / "hf"))
        assert ds.num_rows == sum(s["rows"] for s in split["shards"])
        assert set(TOKEN_SCHEMA.names) <= set(ds.column_names)
        assert sorted(ds["id"]) == sorted(_ids(card_copy, split))
    # by config name, from the card's own `configs` (as the hub does)
    ds = datasets.load_dataset(str(card_copy), "tallyqa", split="train", cache_dir=str(tmp_path / "hf2"))
    split = next(s for s in prov["splits"] if s["name"] == "tallyqa")
    assert sorted(ds["id"]) == sorted(_ids(card_copy, split)) != []


def test_untrusted_strings_cannot_break_the_front_matter(corpus_dir):
    prov = _prov(corpus_dir)
    evil = copy.deepcopy(prov)
    evil["name"] = "tiny: evil\n---\nlicense: mit\nconfigs: []"
    evil["description"] = "line one: with a colon\n---\nlicense: mit\n# a heading\n- a list: item"
    evil["models"]["dialogue"]["user"]["name"] = "model\n---\nlicense: mit | x"
    text = render_card(evil)
    fm, body = split_card(text)
    assert fm["license"] == "other"
    clean = split_card(render_card(prov))[0]
    assert set(fm) == set(clean) and all(fm[k] == clean[k] for k in fm if k != "pretty_name")
    assert evil["name"] in fm["pretty_name"]
    assert [c["config_name"] for c in fm["configs"]] == [s["name"] for s in prov["splits"]]
    assert evil["description"] in body  # Markdown text as given
    assert "| model --- license: mit \\| x |" in body  # a table cell stays one cell


def test_smoke_test_label_follows_the_dialogue_model_quality(corpus_dir):
    prov = _prov(corpus_dir)
    smoke = copy.deepcopy(prov)
    for role in ("user", "assistant"):
        smoke["models"]["dialogue"][role]["quality"] = "smoke-test"
    fm, body = split_card(render_card(smoke))
    assert "SMOKE-TEST QUALITY" in body.split("## What it is")[0]  # at the top, before anything else
    assert "smoke-test" in fm["tags"] and "smoke-test" in fm["pretty_name"]

    prod = copy.deepcopy(prov)
    for role in ("user", "assistant"):
        prod["models"]["dialogue"][role].update(quality="production", name="mistralai/Mistral-Nemo-Instruct-2407")
    fm, body = split_card(render_card(prod))
    assert "SMOKE-TEST" not in body and "smoke-test" not in fm["tags"] + [fm["pretty_name"]]

    # the test corpus itself (builtin:smollm2) says so
    if prov["models"]["dialogue"]["assistant"]["quality"] == "smoke-test":
        assert "SMOKE-TEST QUALITY" in render_card(prov)


def test_models_and_stand_ins_are_named(corpus_dir):
    prov = _prov(corpus_dir)
    body = split_card(render_card(prov))[1]
    models = prov["models"]
    assert models["dialogue"]["assistant"]["name"] in body and models["dialogue"]["assistant"]["fingerprint"] in body
    assert models["codec"]["weights_sha256"] in body and models["tokenizer"]["sha256"] in body
    if models["codec"].get("random"):
        assert "random-weight stand-in" in body
    if models["tokenizer"].get("stand_in"):
        assert "Stand-in tokenizer" in body
    for v in models["voices"].get("users") or models["voices"].get("user_voices"):
        assert f"`{v}`" in body


def test_licence_table_covers_every_source(corpus_dir):
    prov = copy.deepcopy(_prov(corpus_dir))
    base = prov["splits"][0]
    prov["splits"] = [dict(base, name=f"s-{k}", source=k if k in ("pixmo", "docci", "pixelprose") else None,
                           benchmark=None if k in ("pixmo", "docci", "pixelprose") else k) for k in LICENCES]
    fm, body = split_card(render_card(prov))
    assert "| PixMo-cap | allenai/pixmo-cap | ODC-BY 1.0 | s-pixmo |" in body
    assert "| DOCCI | google/docci | CC BY 4.0 | s-docci |" in body
    assert "| PixelProse | tomg-group-umd/pixelprose | CC BY 4.0 | s-pixelprose |" in body
    for k in ("tallyqa", "ocrvqa", "renderedtext", "docvqa"):
        row = next(line for line in body.splitlines() if line.endswith(f"| s-{k} |") and "verify" in line)
        assert LICENCES[k][0] in row
    assert {"allenai/pixmo-cap", "google/docci", "tomg-group-umd/pixelprose"} <= set(fm["source_datasets"])
    assert "arXiv:2503.15633" in body
