"""The text tokenizer of the Moshi text stream: a SentencePiece model, and where it comes from.

Moshi's own is `tokenizer_spm_32k_3.model` (32000 pieces), shipped in Kyutai's hub repos
(e.g. `kyutai/moshiko-pytorch-bf16`). Offline, the default is a stand-in: the 32000-piece
SentencePiece model that `mistral-common` ships in its package data (`tokenizer.model.v1`). A
stand-in makes streams of the right shape and vocabulary size, but not Moshi's ids: `stand_in`
says so and `info()` records it with the file's sha256.

`spec` (see `load_text_tokenizer`): None or "default" -> the stand-in; a local path -> that model;
an `org/name` hub id -> `tokenizer_spm_32k_3.model` downloaded from that repo.

Words are encoded as Moshi does, each alone, with SentencePiece's leading "▁" (word start) kept
and no BOS/EOS added. Loaded processors are cached per path, so a worker loads each file once;
a `TextTokenizer` pickles as its path and reloads the processor where it lands.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import sentencepiece

MOSHI_TOKENIZER_FILENAME = "tokenizer_spm_32k_3.model"
DEFAULT_STAND_IN = "tokenizer.model.v1"  # in mistral_common/data: 32000 pieces
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HOW = (
    "pass None/'default' for the offline stand-in, a local path to a SentencePiece model "
    f"(Moshi's is {MOSHI_TOKENIZER_FILENAME}), or a hub id such as kyutai/moshiko-pytorch-bf16"
)

# path -> (processor, sha256 of the file)
_CACHE: dict[str, tuple[sentencepiece.SentencePieceProcessor, str]] = {}


def _load(path: str) -> tuple[sentencepiece.SentencePieceProcessor, str]:
    if path not in _CACHE:
        data = Path(path).read_bytes()
        sp = sentencepiece.SentencePieceProcessor(model_proto=data)
        _CACHE[path] = (sp, hashlib.sha256(data).hexdigest())
    return _CACHE[path]


@dataclass(frozen=True)
class TextTokenizer:
    name: str
    path: str
    sha256: str
    stand_in: bool
    vocab_size: int

    @property
    def processor(self) -> sentencepiece.SentencePieceProcessor:
        return _load(self.path)[0]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no BOS/EOS; newlines as the model's newline piece (as
        moshi-finetune's `tokenize`)."""
        sp = self.processor
        if "\n" not in text:
            return list(sp.encode(text))
        nl = sp.encode("\n")[-1]
        return reduce(lambda a, b: [*a, nl, *b], sp.encode(text.split("\n")))

    def encode_word(self, word: str) -> list[int]:
        """One word, tokenized alone (what `interleave.text_stream` gets as `tokenize`)."""
        return self.encode(word.strip())

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([int(i) for i in ids])

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "stand_in": self.stand_in,
            "vocab_size": self.vocab_size,
        }


def default_stand_in_path() -> str:
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / DEFAULT_STAND_IN
    if not path.is_file():
        raise FileNotFoundError(
            f"the offline stand-in text tokenizer {path} is missing from the installed "
            f"mistral-common; reinstall mistral-common, or {_HOW}"
        )
    return str(path)


def _from_file(path: str, name: str) -> TextTokenizer:
    path = str(Path(path).expanduser().resolve())
    sp, sha = _load(path)
    return TextTokenizer(
        name=name,
        path=path,
        sha256=sha,
        stand_in=Path(path).name != MOSHI_TOKENIZER_FILENAME,
        vocab_size=int(sp.vocab_size()),
    )


def _download(repo_id: str) -> str:
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id=repo_id, filename=MOSHI_TOKENIZER_FILENAME)
    except Exception as e:  # offline, unknown repo, no such file, no huggingface_hub...
        raise RuntimeError(
            f"could not get {MOSHI_TOKENIZER_FILENAME} from the Hugging Face hub repo "
            f"{repo_id!r} ({type(e).__name__}: {e}). Without hub access, download it elsewhere "
            f"and pass its local path instead (or pass 'default' for the offline stand-in)."
        ) from e


def load_text_tokenizer(spec: str | os.PathLike[str] | None = None) -> TextTokenizer:
    """The text tokenizer named by `spec` (see the module docstring).

    A local path wins over a hub id of the same spelling. A path that does not exist raises
    `FileNotFoundError` naming it; a hub download that fails raises `RuntimeError` saying to pass
    a local path.
    """
    if spec is None or str(spec) == "default":
        return _from_file(default_stand_in_path(), f"mistral-common:{DEFAULT_STAND_IN}")
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(spec, path.name)
    if path.exists():
        raise FileNotFoundError(f"text tokenizer {spec!r} is not a file; {_HOW}")
    if _HUB_ID.match(spec) and not spec.endswith(".model"):
        return _from_file(_download(spec), f"{spec}:{MOSHI_TOKENIZER_FILENAME}")
    raise FileNotFoundError(f"text tokenizer file not found: {spec!r}; {_HOW}")
