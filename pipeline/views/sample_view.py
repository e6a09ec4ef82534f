"""Readable views of speech and token rows (`ssvd show` on a speech or tokens directory)."""
from __future__ import annotations

import json


def format_speech(r: dict) -> str:
    head = (f"== {r['id']}  [{r['status']}]  {r['split']}  {r['duration_s']:.1f} s  "
            f"voices: assistant={r['voice_assistant']} user={r['voice_user']}  words={len(r['words'] or [])}")
    if r["status"] != "ok":
        return head + f"\n   error: {r['error']}"
    lines = [head]
    for t in r["turns"] or []:
        lines.append(f"  [{t['start_s']:7.2f}-{t['end_s']:7.2f} s] {t['role']:>9}: {t['text']}")
    return "\n".join(lines)


def render_stream(tokens: list[int], decode, *, pad_id: int = 3, epad_id: int = 0, zero_id: int = -1,
                  max_frames: int = 150) -> str:
    """One character per padding frame ('.' pad, '|' end-of-padding, '_' zero), words decoded in place."""
    out, word = [], []
    for t in tokens[:max_frames]:
        if t in (pad_id, epad_id, zero_id):
            if word:
                out.append(decode(word))
                word = []
            out.append({pad_id: ".", epad_id: "|", zero_id: "_"}[t])
        else:
            word.append(t)
    if word:
        out.append(decode(word))
    more = f" … (+{len(tokens) - max_frames} frames)" if len(tokens) > max_frames else ""
    return "".join(out) + more


def format_tokens(r: dict, decode=None) -> str:
    codes = r["audio_codes"] or []
    shape = f"{len(codes)}x{len(codes[0]) if codes else 0}"
    head = (f"== {r['id']}  [{r['status']}]  {r['split']}  kind={r['kind']}  frames={r['num_frames']} "
            f"@ {r['frame_rate_hz']} Hz  audio_codes={shape}  dropped_text_tokens={r['dropped_text_tokens']}\n"
            f"   codec={r['codec'] or '-'}\n   tokenizer={r['tokenizer']}")
    if r["status"] != "ok":
        return head + f"\n   error: {r['error']}"
    prov = json.loads(r.get("provenance") or "{}")
    so = prov.get("text_stream", {})
    lines = [head, f"   turn starts: {list(zip(r['turn_roles'], r['turn_start_frames']))[:8]}"]
    if decode is not None and r["kind"] == "speech":
        stream = render_stream(r["text_tokens"], decode, pad_id=so.get("pad_id", 3), epad_id=so.get("epad_id", 0),
                               zero_id=so.get("zero_id", -1))
        lines.append(f"   text stream ('.' pad, '|' end of padding, one char per frame): {stream}")
    elif decode is not None:
        lines.append(f"   text: {decode(r['text_tokens'][:200])[:600]}")
    return "\n".join(lines)


def formatter(stage: str):
    """The row formatter of a speech or tokens directory; token rows decoded with their own tokenizer."""
    if stage == "speech":
        return format_speech
    from pipeline.tokens.text_tokenizer import load_text_tokenizer

    tokenizers: dict = {}

    def fmt(r: dict) -> str:
        key = json.loads(r.get("provenance") or "{}").get("tokenizer", {}).get("path")
        if key not in tokenizers:
            try:
                tokenizers[key] = load_text_tokenizer(key).decode
            except Exception:
                tokenizers[key] = None  # the tokenizer file is not here: show the row without decoding
        return format_tokens(r, tokenizers[key])

    return fmt
