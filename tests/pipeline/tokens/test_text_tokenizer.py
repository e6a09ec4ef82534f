"""The text tokenizer loader: offline stand-in, local files, hub ids (failure path only)."""
from __future__ import annotations

import pickle
import shutil

import pytest

from pipeline.tokens.interleave import text_stream
from pipeline.tokens.text_tokenizer import MOSHI_TOKENIZER_FILENAME, load_text_tokenizer

# sha256 of mistral-common's data/tokenizer.model.v1.
STAND_IN_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"


def test_default_is_a_32k_stand_in():
    tok = load_text_tokenizer()
    assert tok.stand_in is True
    assert tok.vocab_size == 32000
    assert tok.path.endswith("tokenizer.model.v1")
    assert tok.sha256 == STAND_IN_SHA256
    assert load_text_tokenizer("default") == tok
    assert tok.info() == {
        "name": tok.name, "path": tok.path, "sha256": STAND_IN_SHA256, "stand_in": True, "vocab_size": 32000,
    }


def test_encode_decode_round_trip():
    tok = load_text_tokenizer()
    ids = tok.encode_word("Hello")
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.processor.id_to_piece(ids[0]).startswith("\u2581")  # word start kept, like Moshi
    assert tok.decode(ids) == "Hello"
    assert tok.encode_word("  Hello ") == tok.encode("Hello") == ids
    assert tok.processor.bos_id() not in ids and tok.processor.eos_id() not in ids
    assert tok.decode(tok.encode("a cat on a mat")) == "a cat on a mat"
    # Lines are encoded alone and joined by the newline piece (moshi-finetune's `tokenize`).
    nl = tok.processor.encode("\n")[-1]
    assert tok.encode("a cat\non a mat") == [*tok.encode("a cat"), nl, *tok.encode("on a mat")]


def test_usable_as_text_stream_tokenizer():
    tok = load_text_tokenizer()
    ids = tok.encode_word("cat")
    out = text_stream([("cat", 0.1, 0.3, "assistant")], 4, 12.5, tok.encode_word)
    assert out == [0, *ids, *[3] * (3 - len(ids))]


def test_processor_is_cached_and_pickles_as_path():
    a, b = load_text_tokenizer(), load_text_tokenizer()
    assert a.processor is b.processor
    c = pickle.loads(pickle.dumps(a))
    assert c == a and c.encode_word("dog") == a.encode_word("dog")


def test_local_copy_named_like_moshis_is_not_a_stand_in(tmp_path):
    src = load_text_tokenizer()
    dst = tmp_path / MOSHI_TOKENIZER_FILENAME
    shutil.copy(src.path, dst)
    tok = load_text_tokenizer(str(dst))
    assert tok.stand_in is False
    assert tok.sha256 == src.sha256
    assert tok.path == str(dst.resolve())
    other = tmp_path / "other.model"
    shutil.copy(src.path, other)
    assert load_text_tokenizer(other).stand_in is True


def test_missing_path_names_it_and_the_fix(tmp_path):
    missing = tmp_path / "nope" / MOSHI_TOKENIZER_FILENAME
    with pytest.raises(FileNotFoundError) as e:
        load_text_tokenizer(str(missing))
    assert str(missing) in str(e.value)
    assert "local path" in str(e.value) and "default" in str(e.value)


def test_directory_is_not_a_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_text_tokenizer(str(tmp_path))


def test_hub_failure_says_to_pass_a_local_path(monkeypatch):
    import huggingface_hub

    calls = []

    def offline(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError) as e:
        load_text_tokenizer("kyutai/moshiko-pytorch-bf16")
    assert calls == [("kyutai/moshiko-pytorch-bf16", MOSHI_TOKENIZER_FILENAME)]
    msg = str(e.value)
    assert "kyutai/moshiko-pytorch-bf16" in msg and MOSHI_TOKENIZER_FILENAME in msg
    assert "local path" in msg and "no network" in msg


def test_hub_download_result_is_loaded(monkeypatch, tmp_path):
    import huggingface_hub

    dst = tmp_path / MOSHI_TOKENIZER_FILENAME
    shutil.copy(load_text_tokenizer().path, dst)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(dst))
    tok = load_text_tokenizer("kyutai/moshiko-pytorch-bf16")
    assert tok.stand_in is False and tok.name == f"kyutai/moshiko-pytorch-bf16:{MOSHI_TOKENIZER_FILENAME}"
