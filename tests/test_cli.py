"""The CLI surface that needs no engine: help, prompts, input errors."""
import json
from pathlib import Path

from typer.testing import CliRunner

from cli import app

runner = CliRunner()
FIX = Path(__file__).resolve().parent / "fixtures" / "captions"


def test_help_lists_the_commands():
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("dialogues", "generic", "show", "prompts"):
        assert cmd in out
    d = runner.invoke(app, ["dialogues", "--help"]).output
    for opt in ("--source", "--instruction", "--input", "--out", "--limit", "--replicas", "--seed", "--model",
                "--user-model", "--assistant-model", "--workers", "--max-inflight", "--ray-address", "--overwrite",
                "--retry-failed", "--engine"):
        assert opt in d


def test_prompts_show_json_keeps_the_caption_verbatim():
    cap = "A cat {{ 7*7 }} {caption} {% raw %} {ROLE_SPECIFIC_TEXT}"
    r = runner.invoke(app, ["prompts", "show", "LOC", "--role", "user", "--caption", cap, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert cap in data["system"] and data["forced_start"].startswith("Start the conversation")
    r = runner.invoke(app, ["prompts", "show", "TS1", "--role", "assistant", "--caption", cap, "--json"])
    assert json.loads(r.output)["forced_start"] is None


def test_prompts_show_comb_seed_changes_choices():
    outs = {json.loads(runner.invoke(app, ["prompts", "show", "COMB", "--caption", "x", "--seed", str(s), "--json"]).output)["forced_start"]
            for s in range(12)}
    assert len(outs) > 3


def test_bad_instruction_and_source_are_clear_errors(tmp_path):
    r = runner.invoke(app, ["dialogues", "--source", "pixmo", "--instruction", "FOO", "--input", str(FIX / "pixmo"),
                            "--out", str(tmp_path)])
    assert r.exit_code == 2 and "COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2" in r.output
    r = runner.invoke(app, ["dialogues", "--source", "flickr", "--instruction", "LOC", "--input", str(FIX / "pixmo"),
                            "--out", str(tmp_path)])
    assert r.exit_code == 2 and "pixmo docci pixelprose" in r.output


def test_missing_column_names_file_and_column(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_url": "http://x/1.jpg", "text": "A dog on a red sofa in a bright room."}\n')
    r = runner.invoke(app, ["dialogues", "--source", "pixmo", "--instruction", "LOC", "--input", str(bad),
                            "--out", str(tmp_path / "out"), "--model", "builtin:tiny-mistral"])
    assert r.exit_code == 2
    assert "bad.jsonl" in r.output and "caption" in r.output


def test_show_reports_missing_shards(tmp_path):
    r = runner.invoke(app, ["show", str(tmp_path)])
    assert r.exit_code == 2 and "holds no dialogues or speech or tokens shards" in r.output


def test_speech_tokens_export_help_and_bad_options(tmp_path):
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("speech", "tokens", "export"):
        assert cmd in out
    s = runner.invoke(app, ["speech", "--help"]).output
    for opt in ("--in", "--out", "--assistant-voice", "--user-voice", "--gap-s", "--overlap-prob", "--workers"):
        assert opt in s
    t = runner.invoke(app, ["tokens", "--help"]).output
    for opt in ("--kind", "--codec", "--tokenizer", "--delay-s", "--bos-id", "--eos-id", "--keep-and-shift"):
        assert opt in t
    r = runner.invoke(app, ["speech", "--in", str(tmp_path), "--out", str(tmp_path / "o"), "--assistant-voice", "joe"])
    assert r.exit_code == 2 and "BACKEND:VOICE" in r.output
    r = runner.invoke(app, ["export", "--in", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "wav"])
    assert r.exit_code == 2 and "moshi-finetune" in r.output


def test_script_repo_fails_at_once_with_the_fix(tmp_path):
    r = runner.invoke(app, ["dialogues", "--source", "docci", "--instruction", "LOC", "--input", "google/docci",
                            "--out", str(tmp_path / "out"), "--model", "builtin:tiny-mistral"])
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert "loading-script repository" in out and "docci_descriptions.jsonlines" in out and "--image-root" in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no work done


def test_caption_reading_options(tmp_path):
    d = runner.invoke(app, ["dialogues", "--help"]).output
    for opt in ("--split", "--image-root", "--watermark-classes", "--max-toxicity"):
        assert opt in d
    r = runner.invoke(app, ["dialogues", "--source", "pixelprose", "--instruction", "LOC", "--input",
                            str(FIX / "pixelprose"), "--out", str(tmp_path), "--watermark-classes", "1,5"])
    assert r.exit_code == 2 and "watermark_classes" in r.output
    r = runner.invoke(app, ["dialogues", "--source", "docci", "--instruction", "LOC", "--input",
                            str(FIX / "docci"), "--out", str(tmp_path), "--image-root", str(tmp_path / "none")])
    assert r.exit_code == 2 and "is not a folder" in r.output


def test_dialogue_defaults_agree_across_dialogues_generic_and_manifests():
    import inspect

    from pipeline.dialogue.cli import dialogues, generic
    from pipeline.dialogue.protocol import DialogueConfig
    from pipeline.manifest.spec import Defaults

    keys = ("min_pairs", "max_pairs", "temperature", "max_new_tokens", "on_length", "redraws", "repetition_penalty")
    want = {k: getattr(DialogueConfig(), k) for k in keys}
    assert want["on_length"] == "trim" and want["redraws"] >= 1
    assert {k: getattr(Defaults(), k) for k in keys} == want
    for cmd in (dialogues, generic):
        params = inspect.signature(cmd).parameters
        assert {k: params[k].default for k in keys} == want, cmd.__name__


def test_bad_on_length_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["dialogues", "--source", "pixmo", "--instruction", "LOC", "--input", str(FIX / "pixmo"),
                            "--out", str(tmp_path / "o"), "--on-length", "cut"])
    assert r.exit_code == 2 and "choose trim or reject" in r.output
