"""Corpus manifests: the shipped ones encode Table 7; every kind of mistake is reported, all at once."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from pipeline.manifest.spec import Manifest, ManifestError
from pipeline.manifest.load import load_manifest
from pipeline.core.types import INSTRUCTIONS, SOURCES

ROOT = Path(__file__).resolve().parents[3]
MOSHIVIS = ROOT / "manifests" / "moshivis.yaml"
QUICKSTART = ROOT / "manifests" / "quickstart.yaml"

# Table 7 of the paper: name -> (source, instruction or benchmark, relative weight, type).
TABLE_7 = {
    "docci-prop": ("docci", "PROP", 5, "speech"),
    "docci-loc": ("docci", "LOC", 5, "speech"),
    "pixmo-lead1": ("pixmo", "LEAD1", 5, "speech"),
    "pixmo-comb": ("pixmo", "COMB", 15, "speech"),
    "pixelprose-ts1": ("pixelprose", "TS1", 15, "text"),
    "pixelprose-ts2": ("pixelprose", "TS2", 15, "text"),
    "pixelprose-lead2": ("pixelprose", "LEAD2", 15, "text"),
    "tallyqa": (None, "tallyqa", 1, "text"),
    "ocrvqa": (None, "ocrvqa", 5, "text"),
    "renderedtext": (None, "renderedtext", 1, "text"),
    "docvqa": (None, "docvqa", 2, "text"),
}

GOOD = """\
name: t
models:
  dialogue: {model: builtin:smollm2}
  speech: {assistant_voice: piper:joe, user_voices: [espeak:en-us+m3]}
  codec: random
defaults: {min_pairs: 2, max_pairs: 3, limit: 4}
generic: {count: 2, kind: speech, weight: null}
splits:
  - {name: a, kind: speech, weight: 3, source: pixmo, instruction: COMB, input: in/a, max_pairs: 5, limit: null}
  - {name: b, kind: text, weight: 1, benchmark: docvqa, input: in/b}
"""


def _table(m: Manifest) -> dict:
    return {s.name: (s.source, s.benchmark or s.instruction, s.weight, s.kind) for s in m.splits}


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _errors(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    p = _write(tmp_path, text)
    with pytest.raises(ManifestError) as ei:
        load_manifest(p)
    msg = str(ei.value)
    assert str(p) in msg
    return msg, ei.value.errors


# --- the shipped manifests ---

def test_moshivis_is_table_7_exactly():
    m = load_manifest(MOSHIVIS)
    assert _table(m) == TABLE_7
    assert m.names() == list(TABLE_7)  # the paper's row order
    assert m.models.dialogue.model == "mistralai/Mistral-Nemo-Instruct-2407"
    assert m.models.dialogue.engine == "vllm"
    assert m.models.speech.backend == "kyutai"
    assert all(v.startswith("kyutai:") for v in (m.models.speech.assistant_voice, *m.models.speech.user_voices))
    assert m.models.codec == "kyutai/mimi"
    assert m.models.tokenizer == "kyutai/moshiko-pytorch-bf16"
    d = m.defaults
    assert (d.min_pairs, d.max_pairs, d.max_new_tokens, d.replicas, d.limit) == (8, 16, 150, 1, None)
    assert m.generic is not None and m.generic.kind == "speech" and m.generic.weight is None
    inputs = {s.name: s.input for s in m.splits}
    # DOCCI as released (google/docci is a loading script, refused), the benchmarks' train splits
    assert inputs["docci-loc"] == "data/docci/docci_descriptions.jsonlines"
    assert dict(m.split("docci-loc").source_options) == {"image_root": "data/docci/images"}
    assert inputs["pixmo-comb"] == "allenai/pixmo-cap"
    assert inputs["pixelprose-ts1"] == "tomg-group-umd/pixelprose"
    assert m.split("pixelprose-ts1").caption_options().watermark_classes is None  # no filter, as released
    assert m.split("pixelprose-ts1").caption_options().max_toxicity is None
    assert (inputs["tallyqa"], inputs["docvqa"]) == ("HuggingFaceM4/the_cauldron", "HuggingFaceM4/DocumentVQA")
    assert inputs["ocrvqa"] == "howard-hou/OCR-VQA"


def test_weights_normalise():
    m = load_manifest(MOSHIVIS)
    p = m.weights()
    total = sum(w for _, _, w, _ in TABLE_7.values())
    assert total == 84
    assert list(p) == list(TABLE_7)  # the generic set (weight null) is not sampled
    for name, (_, _, w, _) in TABLE_7.items():
        assert p[name] == pytest.approx(w / total)
    assert math.isclose(sum(p.values()), 1.0)


def test_quickstart_has_the_same_corpus_shape():
    q, m = load_manifest(QUICKSTART), load_manifest(MOSHIVIS)
    assert _table(q) == _table(m) == TABLE_7
    assert q.weights() == m.weights()
    assert q.generic is not None and m.generic is not None
    assert (q.generic.kind, q.generic.weight) == (m.generic.kind, m.generic.weight)
    assert q.models.dialogue.model == "builtin:smollm2"
    assert q.resolved("pixmo-comb").on_length == "trim"
    assert (q.defaults.min_pairs, q.defaults.max_pairs) == (2, 3)
    assert q.models.speech.assistant_voice == "piper:joe"
    assert all(v.startswith("espeak:") for v in q.models.speech.user_voices)
    assert q.models.codec.startswith("random") and q.models.tokenizer is None
    for s in q.splits:
        sub = "benchmarks" if s.is_benchmark else "captions"
        if s.source == "docci":  # the release file and its images folder
            assert s.input == "tests/fixtures/captions/docci/docci_descriptions.jsonlines"
            assert (ROOT / s.input).is_file()
            assert (ROOT / s.caption_options().image_root).is_dir()
            continue
        assert s.input == f"tests/fixtures/{sub}/{s.benchmark or s.source}"
        if not s.is_benchmark:
            assert (ROOT / s.input).is_dir(), s.input
        assert q.resolved(s).limit is not None and q.resolved(s).limit <= 4
    assert q.generic.count <= 4


def test_resolved_merges_overrides_and_to_dict_round_trips(tmp_path):
    m = load_manifest(_write(tmp_path, GOOD))
    a = m.resolved("a")
    assert (a.min_pairs, a.max_pairs, a.limit) == (2, 5, None)  # overrides win, incl. an explicit null
    b = m.resolved(m.split("b"))
    assert (b.min_pairs, b.max_pairs, b.limit) == (2, 3, 4)
    assert m.resolved("generic") == m.defaults
    d = m.to_dict()
    json.dumps(d)  # hashable provenance: plain JSON
    assert d["splits"][0]["max_pairs"] == 5 and d["splits"][1]["benchmark"] == "docvqa"
    again = load_manifest(_write(tmp_path, json.dumps(d), "again.yaml"))  # JSON is YAML
    assert again == m and again.config_hash() == m.config_hash()
    changed = dataclasses.replace(m, seed=1)
    assert changed.config_hash() != m.config_hash()
    with pytest.raises(KeyError, match="a, b"):
        m.split("nope")


# --- mistakes: each names the file, the location, the bad value and the valid choices ---

@pytest.mark.parametrize(
    "old, new, location, expected",
    [
        ("name: t\n", "name: t\ncolour: red\n", "colour", ["'colour'", "valid keys: name, description, seed, models"]),
        ("input: in/a,", "input: in/a, wieght: 2,", "splits[0].wieght", ["'wieght'", "did you mean 'weight'", "valid keys:"]),
        ("source: pixmo", "source: coco", "splits[0].source", ["'coco'", "valid: " + ", ".join(SOURCES)]),
        ("instruction: COMB", "instruction: LOCATION", "splits[0].instruction",
         ["'LOCATION'", "valid: " + ", ".join(INSTRUCTIONS)]),
        ("benchmark: docvqa", "benchmark: vqav2", "splits[1].benchmark",
         ["'vqav2'", "valid: tallyqa, ocrvqa, renderedtext, docvqa"]),
        ("kind: text", "kind: audio", "splits[1].kind", ["'audio'", "valid: speech, text"]),
        ("kind: speech, weight: null", "kind: video, weight: null", "generic.kind", ["'video'", "valid: speech, text"]),
        ("name: b,", "name: a,", "splits[1].name", ["duplicate split name 'a'", "splits[0]"]),
        ("weight: 3", "weight: 0", "splits[0].weight", ["positive", "got 0"]),
        ("weight: 1", "weight: -2", "splits[1].weight", ["positive", "got -2"]),
        ("weight: 1", "weight: .inf", "splits[1].weight", ["positive", "got inf"]),
        ("weight: 3, ", "", "splits[0].weight", ["missing required key 'weight'"]),
        ("  codec: random\n", "", "models.codec", ["missing required key 'codec'"]),
        ("source: pixmo, ", "", "splits[0].source", ["missing required key 'source'", "(split 'a')"]),
        ("input: in/a, ", "", "splits[0].input", ["missing required key 'input'"]),
        ("benchmark: docvqa,", "benchmark: docvqa, instruction: COMB,", "splits[1].instruction",
         ["benchmark split takes no instruction", "'COMB'", "valid keys: name, kind, weight, benchmark, input, limit"]),
        ("benchmark: docvqa,", "benchmark: docvqa, min_pairs: 4,", "splits[1].min_pairs",
         ["benchmark split takes no min_pairs"]),
        ("source: pixmo, instruction: COMB,", "", "splits[0]",
         ["neither a caption split (source, instruction, input) nor a benchmark split"]),
        ("max_pairs: 5", "min_pairs: 9, max_pairs: 5", "splits[0].min_pairs", ["min_pairs 9 is above max_pairs 5"]),
        ("{min_pairs: 2, max_pairs: 3", "{min_pairs: 4, max_pairs: 3", "defaults.min_pairs",
         ["min_pairs 4 is above max_pairs 3"]),
        ("limit: 4}", "limit: 4, on_length: cut}", "defaults.on_length", ["'cut'", "valid: reject, trim"]),
        ("limit: 4}", "limit: 0}", "defaults.limit", ["integer >= 1 or null", "got 0"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, engine: tgi}", "models.dialogue.engine",
         ["'tgi'", "valid: vllm, openai"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, openai_timeout_s: 0}", "models.dialogue.openai_timeout_s",
         ["positive"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, openai_max_concurrency: 0}",
         "models.dialogue.openai_max_concurrency", [">= 1"]),
        ("[espeak:en-us+m3]", "[espeak:en-us+m3, joe]", "models.speech.user_voices[1]",
         ["'joe'", "BACKEND one of piper, espeak, kyutai"]),
        ("{assistant_voice: piper:joe,", "{backend: espeak, assistant_voice: piper:joe,",
         "models.speech.assistant_voice", ["'piper:joe' is not on backend 'espeak'", "espeak:VOICE"]),
        ("name: t\n", "name: My Corpus\n", "name", ["'My Corpus'"]),
        ("user_voices: [espeak:en-us+m3]}", "user_voices: [espeak:en-us+m3], model: builtin:kyutai-tiny}",
         "models.speech.model", ["only for the kyutai backend"]),
        ("user_voices: [espeak:en-us+m3]}", "user_voices: [kyutai:vctk/p226_023.wav], cfg_coef: -1}",
         "models.speech.cfg_coef", ["positive number", "-1"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, gpu_memory_utilization: 1.5}",
         "models.dialogue.gpu_memory_utilization", ["in (0, 1]", "1.5"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, max_model_len: 0}",
         "models.dialogue.max_model_len", ["integer >= 1 or null", "got 0"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, tensor_parallel_size: two}",
         "models.dialogue.tensor_parallel_size", ["integer >= 1", "'two'"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, max_num_sequences: 8}",
         "models.dialogue.max_num_sequences", ["did you mean 'max_num_seqs'"]),
        ("{model: builtin:smollm2}", "{model: builtin:smollm2, engine: openai, openai_base_url: http://x/v1, "
         "max_num_seqs: 8}", "models.dialogue.max_num_seqs", ["engine 'openai' is sized by its server"]),
    ],
)
def test_each_mistake_is_located(tmp_path, old, new, location, expected):
    assert old in GOOD
    msg, errors = _errors(tmp_path, GOOD.replace(old, new, 1))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{location}: "), errors[0]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert f": {location}: " in msg


def test_yaml_syntax_error_gives_the_line(tmp_path):
    text = GOOD.replace("splits:\n", "splits:\n  - {name: a, kind: [speech\n", 1)
    _, errors = _errors(tmp_path, text)
    assert len(errors) == 1 and "YAML syntax error" in errors[0], errors
    line = int(errors[0].split(",")[0].removeprefix("line "))
    assert line > text.splitlines().index("splits:") + 1  # at or after the broken split, 1-based


def test_not_a_mapping_and_empty(tmp_path):
    _, errors = _errors(tmp_path, "- just\n- a list\n")
    assert "expected a mapping" in errors[0]
    _, errors = _errors(tmp_path, "")
    assert "empty" in errors[0]
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "missing.yaml")


def test_all_mistakes_are_reported_at_once(tmp_path):
    bad = (GOOD.replace("name: t\n", "name: t\nseeed: 3\n")
           .replace("source: pixmo", "source: coco")
           .replace("instruction: COMB", "instruction: LOCATION")
           .replace("name: b,", "name: a,")
           .replace("benchmark: docvqa,", "benchmark: docvqa, instruction: NUM,")
           .replace("weight: 1", "weight: 0")
           .replace("kind: speech, weight: null", "kind: video, weight: null"))
    msg, errors = _errors(tmp_path, bad)
    locations = [e.split(": ", 1)[0] for e in errors]
    assert sorted(locations) == sorted([
        "seeed", "splits[0].source", "splits[0].instruction", "splits[1].name", "splits[1].instruction",
        "splits[1].weight", "generic.kind",
    ])
    lines = msg.splitlines()
    assert lines[0].endswith("7 errors in the manifest")
    assert len(lines) == 8 and all(line.startswith(str(tmp_path / "m.yaml") + ": ") for line in lines)


def test_kyutai_model_and_cfg_coef_are_read_and_hashed_only_when_set(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(GOOD)
    plain = load_manifest(f)
    f.write_text(GOOD.replace("user_voices: [espeak:en-us+m3]}",
                              "user_voices: [kyutai:vctk/p226_023.wav], model: builtin:kyutai-tiny, cfg_coef: 3.0}"))
    m = load_manifest(f)
    assert (m.models.speech.model, m.models.speech.cfg_coef) == ("builtin:kyutai-tiny", 3.0)
    speech = m.to_dict()["models"]["speech"]
    assert speech["model"] == "builtin:kyutai-tiny" and speech["cfg_coef"] == 3.0
    assert "model" not in plain.to_dict()["models"]["speech"]  # older manifests keep their config hash


def test_openai_server_settings_are_read_and_not_part_of_the_corpus_config(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(GOOD.replace("{model: builtin:smollm2}", "{model: org/m, engine: openai, openai_base_url: 'http://other:2/v1'}"))
    plain = load_manifest(f)
    f.write_text(GOOD.replace("{model: builtin:smollm2}", "{model: org/m, engine: openai, openai_base_url: 'http://h:1/v1', "
                              "openai_timeout_s: 5, openai_retry_s: 0, openai_max_concurrency: 3}"))
    d = load_manifest(f).models.dialogue
    assert (d.openai_base_url, d.openai_timeout_s, d.openai_retry_s, d.openai_max_concurrency) == ("http://h:1/v1", 5, 0.0, 3)
    # another server (or other settings) resumes the corpus: the served model is checked per dialogue stage
    assert load_manifest(f).to_dict() == plain.to_dict()
    assert plain.to_dict()["models"]["dialogue"]["openai_base_url"] is None  # the key older hashes have


def test_caption_source_options_are_checked(tmp_path):
    head = ("name: t\nmodels:\n  dialogue: {model: builtin:tiny-mistral}\n"
            "  speech: {assistant_voice: piper:joe, user_voices: [espeak:en-us]}\n  codec: random\nsplits:\n")
    p = tmp_path / "ok.yaml"
    p.write_text(head + "  - {name: a, kind: text, weight: 1, source: pixelprose, instruction: TS1, input: x,\n"
                 "     watermark_classes: [1, 1], max_toxicity: 0.5, input_split: redcaps}\n"
                 "  - {name: b, kind: text, weight: 1, source: docci, instruction: LOC, input: d.jsonlines,\n"
                 "     image_root: imgs}\n")
    m = load_manifest(p)
    o = m.split("a").caption_options()
    assert (o.watermark_classes, o.max_toxicity, o.split) == ((1,), 0.5, "redcaps")
    assert m.split("b").caption_options().image_root == "imgs"
    assert m.to_dict()["splits"][1]["image_root"] == "imgs"
    msg, errors = _errors(tmp_path, head + "  - {name: a, kind: text, weight: 1, source: pixmo, instruction: TS1, input: x,\n"
                   "     watermark_classes: [1], image_root: i}\n"
                   "  - {name: b, kind: text, weight: 1, source: pixelprose, instruction: TS1, input: x,\n"
                   "     watermark_classes: [4], max_toxicity: 2}\n"
                   "  - {name: c, kind: text, weight: 1, benchmark: tallyqa, input: x, image_root: i}\n")
    assert any("splits[0].watermark_classes" in e and "PixelProse filter" in e for e in errors)
    assert any("splits[0].image_root" in e and "only used by source docci" in e for e in errors)
    assert any("splits[1].watermark_classes" in e and "0 (watermark), 1 (clean), 2 (text overlay)" in e
               for e in errors)
    assert any("splits[1].max_toxicity" in e for e in errors)
    assert any("splits[2].image_root" in e and "benchmark split takes no" in e for e in errors)


def test_script_repo_input_is_a_manifest_error(tmp_path):
    msg, errors = _errors(tmp_path, "name: t\nmodels:\n  dialogue: {model: builtin:tiny-mistral}\n"
                          "  speech: {assistant_voice: piper:joe, user_voices: [espeak:en-us]}\n  codec: random\n"
                          "splits:\n  - {name: a, kind: speech, weight: 1, source: docci, instruction: LOC, "
                          "input: google/docci}\n")
    assert len(errors) == 1 and errors[0].startswith("splits[0].input: 'google/docci' is a dataset loading-script")
    assert "docci_descriptions.jsonlines" in errors[0] and "image_root" in errors[0]


def test_engine_sizing_is_read_and_not_hashed(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(GOOD)
    plain = load_manifest(f)
    assert plain.models.dialogue.sizing() == {"max_model_len": None, "gpu_memory_utilization": 0.9,
                                              "tensor_parallel_size": 1, "max_num_seqs": None}
    f.write_text(GOOD.replace("{model: builtin:smollm2}", "{model: builtin:smollm2, max_model_len: 4096, "
                              "gpu_memory_utilization: 0.8, tensor_parallel_size: 2, max_num_seqs: 64}"))
    sized = load_manifest(f)
    assert sized.models.dialogue.sizing() == {"max_model_len": 4096, "gpu_memory_utilization": 0.8,
                                              "tensor_parallel_size": 2, "max_num_seqs": 64}
    # how the engines run is not what the corpus is: a corpus resumes on other GPUs
    assert sized.config_hash() == plain.config_hash()
    assert "gpu_memory_utilization" not in sized.to_dict()["models"]["dialogue"]
