from pathlib import Path

import pytest

from pipeline.corpus.plan import config_hash, corpus_config, units
from pipeline.manifest.load import load_manifest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def table7():
    return load_manifest(ROOT / "manifests" / "moshivis.yaml")


def test_units_are_the_splits_in_order_then_generic_with_their_stages(table7):
    us = units(table7)
    assert [u.name for u in us][:4] == ["docci-prop", "docci-loc", "pixmo-lead1", "pixmo-comb"]
    assert us[-1].name == "generic" and us[-1].role == "generic"
    by = {u.name: u for u in us}
    # caption splits get the images side stage (it reads the dialogues; speech still reads the dialogues)
    assert by["pixmo-comb"].stages == ("dialogues", "images", "speech", "tokens")
    assert by["pixelprose-ts1"].stages == ("dialogues", "images", "tokens")
    assert by["tallyqa"].is_benchmark and by["tallyqa"].stages == ("dialogues", "images", "tokens")  # embedded images
    assert by["generic"].stages == ("dialogues", "speech", "tokens")
    assert by["pixmo-comb"].upstream("tokens") == "speech" and by["tallyqa"].upstream("tokens") == "dialogues"
    assert by["pixmo-comb"].upstream("speech") == "dialogues" and by["pixmo-comb"].upstream("images") == "dialogues"
    assert by["pixelprose-ts1"].upstream("tokens") == "dialogues"
    assert by["pixmo-comb"].upstream("dialogues") is None


def test_limit_caps_every_split_and_only_selects(table7):
    us = units(table7, limit=7, only=["tallyqa", "generic"])
    assert [u.name for u in us] == ["tallyqa", "generic"]
    assert all(u.settings.limit == 7 for u in us)


def test_only_with_an_unknown_split_names_the_valid_ones(table7):
    with pytest.raises(ValueError, match=r"--only nope: no such split.*valid: docci-prop, docci-loc"):
        units(table7, only=["nope"])


def test_config_hash_follows_the_manifest_and_the_limit(table7):
    a = corpus_config(table7, None)
    assert config_hash(a) == config_hash(corpus_config(table7, None))
    assert config_hash(a) != config_hash(corpus_config(table7, 5))
    assert set(a["manifest"]["splits"]) == set(table7.names())  # keyed by name: a difference names its split
