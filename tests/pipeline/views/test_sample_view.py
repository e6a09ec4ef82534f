"""`ssvd show` views of token rows: the text stream drawn frame by frame."""
from pipeline.views.sample_view import format_tokens, render_stream


def test_render_stream_one_char_per_padding_frame_words_in_place():
    words = {11: "hi", 12: "there"}
    decode = lambda ids: "".join(words[i] for i in ids)  # noqa: E731
    assert render_stream([3, 3, 0, 11, 3, 0, 12, -1, -1], decode) == "..|hi.|there__"
    assert render_stream([3] * 10, decode, max_frames=4) == ".... … (+6 frames)"


def test_format_tokens_names_codec_tokenizer_and_shape():
    row = {"id": "x", "status": "ok", "split": "pixmo-comb", "kind": "speech", "num_frames": 3, "frame_rate_hz": 12.5,
           "audio_codes": [[1, 2, 3]] * 16, "dropped_text_tokens": 0, "codec": "random:0#ab", "tokenizer": "t#cd",
           "turn_roles": ["user"], "turn_start_frames": [0], "text_tokens": [3, 0, 5], "provenance": "{}", "error": ""}
    s = format_tokens(row, lambda ids: "w")
    assert "audio_codes=16x3" in s and "random:0#ab" in s and ".|w" in s
