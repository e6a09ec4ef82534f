"""`ssvd export --format moshi-finetune`: stereo wav + alignment json + jsonl index.

moshi-finetune reads a jsonl index of `{"path": ..., "duration": ...}`, one stereo wav per line
(left channel: the main speaker, here the assistant; right channel: the user) and next to each
wav a json `{"alignments": [[word, [start_s, end_s], speaker], ...]}` sorted by start, with
speakers `SPEAKER_MAIN` (assistant) and `SPEAKER_OTHER` (user). Paths in the index are relative
to the index file. Speech shards export their FLAC audio as is; token shards are decoded from
their Mimi codes with the codec they record (a `random:SEED` codec is rebuilt from its seed).

Word times are the rows' own floats, written as Python writes a float (its shortest repr, which
reads back as the same float): the token rows' text stream was built from exactly these times, so
moshi-finetune's interleaver, which puts a word in the first frame `t` with
`start_s * frame_rate < t + 1` (kyutai-labs/moshi-finetune, finetune/data/interleaver.py:186-189),
puts every word in the frame our rows put it in. Rounding them (to milliseconds, say) moves a
word whose start lies near an 80 ms frame boundary across it. Durations in the index are rounded
to milliseconds: moshi-finetune only cuts the audio into segments with them
(finetune/data/dataset.py:48-54). tests/pipeline/views/test_export_moshi_finetune.py rebuilds the
text stream from an export as moshi-finetune does and compares it with the token rows frame by frame.
"""
from __future__ import annotations

import json
from collections import Counter
import os
from pathlib import Path

from pipeline.core.runstate import write_json_atomic
from pipeline.core.stage_input import open_stage_input

SPEAKERS = {"assistant": "SPEAKER_MAIN", "user": "SPEAKER_OTHER"}


def alignments(words: list[dict]) -> dict:
    """moshi-finetune's alignment json of a row's `words`: times unrounded (see the module docstring),
    sorted by start only and stably, so words starting together keep the row's order, as in
    `text_stream` (moshi-finetune sorts by start too, stably: finetune/data/interleaver.py:222)."""
    ws = sorted(words, key=lambda w: w["start_s"])
    return {"alignments": [[w["word"], [float(w["start_s"]), float(w["end_s"])], SPEAKERS.get(w["speaker"], w["speaker"])]
                           for w in ws]}


def export_moshi_finetune(input_dir: Path, out: Path, *, limit: int | None = None, codec: str | None = None,
                          progress: bool = True) -> int:
    from tqdm import tqdm

    from tts.audio import from_flac, to_wav_file

    inp = open_stage_input(input_dir, ("speech", "tokens"))
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    decoder = None
    index: list[dict] = []
    bar = tqdm(total=limit, disable=not progress, desc="export", unit="dlg")
    for _, item in inp.ok_items(limit, Counter()):
        row = item.row
        if inp.stage == "tokens" and row["kind"] != "speech":
            continue
        name = f"{row['split']}-{row['id']}"
        wav = out / "audio" / f"{name}.wav"
        if not (wav.exists() and wav.with_suffix(".json").exists()):  # resumable: finished pairs are kept
            if inp.stage == "speech":
                audio, sr = from_flac(row["audio_flac"])
            else:
                decoder = decoder or _decoder(codec or row["codec"].split("#", 1)[0], row["codec"])
                audio, sr = decoder.decode_stereo(row["audio_codes"]), decoder.sample_rate_hz
            tmp = wav.with_name(wav.name + ".tmp.wav")
            to_wav_file(tmp, audio, sr)
            os.replace(tmp, wav)
            write_json_atomic(wav.with_suffix(".json"), alignments(row["words"]))
        index.append({"path": os.path.relpath(wav, out), "duration": round(float(row["duration_s"]), 3)})
        bar.update(1)
    bar.close()
    tmp = out / "index.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in index))
    os.replace(tmp, out / "index.jsonl")
    return len(index)


def _decoder(spec: str, recorded: str):
    from tts.codec import load_codec

    c = load_codec(spec)
    want = recorded.split("#", 1)[1] if "#" in recorded else None
    if want and c.weights_sha256 != want:
        raise ValueError(f"codec {spec!r} has weights {c.weights_sha256[:12]}, but the shards were encoded with "
                         f"{want[:12]}: pass --codec with the codec named in the shards' `codec` column")
    return c
