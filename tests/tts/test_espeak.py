"""The eSpeak NG backend on real synthesis: spans measured from eSpeak's own events."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tts.factory import create_backend
from tts.espeak_backend import EspeakBackend

from .spans_check import check_span_lines_up_with_the_sound, check_utterance, inside_outside_rms

SENTENCE = (
    "Dr. Smith paid $5, then walked in the park with the dog — at 3:30pm on the 1st of May, "
    "e.g. with 1,200 people. Was it fun? Yes!"
)
VOICE = "en-us+m3"


@pytest.fixture(scope="module")
def espeak() -> EspeakBackend:
    return EspeakBackend()


def test_sentence_spans(espeak):
    u = espeak.synthesize(SENTENCE, VOICE)
    check_utterance(u, SENTENCE)
    assert u.sample_rate_hz == 22050 and u.voice == VOICE and u.codes is None
    words = SENTENCE.split()
    dur = len(u.audio) / u.sample_rate_hz
    assert 0.15 <= dur / len(words) <= 1.0
    silent = {words.index("—")}
    inside, outside = inside_outside_rms(u, skip=silent)
    assert inside > 5 * outside, (inside, outside)
    for w in u.words:
        if w.word != "—":
            assert w.end_s - w.start_s >= 0.03, w
    # "1,200" is four spoken words: its span holds all of them.
    big = u.words[words.index("1,200")]
    assert big.end_s - big.start_s > 0.6


def test_fused_words_are_split_inside_their_event(espeak):
    text = "I walked in the park with the dog"
    u = espeak.synthesize(text, VOICE)
    check_utterance(u, text)
    _, _, in_, the, park, with_, the2, dog = u.words
    for a, b in [(in_, the), (the, park), (with_, the2), (the2, dog)]:
        assert a.end_s <= b.start_s + 1e-6, (a, b)
    for w in (in_, the, with_, the2):
        assert w.end_s - w.start_s >= 0.04, w


def test_span_lines_up_with_the_sound(espeak):
    check_span_lines_up_with_the_sound(espeak, VOICE, tolerance_s=0.05)


def test_voices_differ_and_all_work(espeak):
    voices = espeak.voices()
    assert len(voices) >= 12
    audios = {}
    for v in voices:
        u = espeak.synthesize("The cat sat on the mat.", v)
        check_utterance(u, "The cat sat on the mat.")
        audios[v] = u.audio
    a, b = audios["en-us+m3"], audios["en-us+f2"]
    assert a.shape != b.shape or not np.allclose(a, b)
    assert len({(x.shape, float(np.sum(np.abs(x)))) for x in audios.values()}) >= len(voices) - 2
    with pytest.raises(ValueError, match="no voice"):
        espeak.synthesize("hello", "xx-nonexistent+m3")


def close(a, b) -> None:
    """Same call twice: eSpeak's carried-over jitter moves a few samples, never the words."""
    assert abs(len(a.audio) - len(b.audio)) <= 0.01 * len(b.audio)
    assert [w.word for w in a.words] == [w.word for w in b.words]
    for x, y in zip(a.words, b.words):
        assert abs(x.start_s - y.start_s) < 0.01 and abs(x.end_s - y.end_s) < 0.01, (x, y)


def test_repeatable_and_thread_safe(espeak):
    texts = [f"Thread number {i} reads {i * 7} words in the park." for i in range(6)]
    expected = [espeak.synthesize(t, VOICE if i % 2 else "en-gb+f3") for i, t in enumerate(texts)]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = espeak.synthesize(texts[i], VOICE if i % 2 else "en-gb+f3")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        close(results[i], e)


def test_coexists_with_pipers_espeak(espeak):
    pytest.importorskip("piper")
    from piper.phonemize_espeak import EspeakPhonemizer

    before = espeak.synthesize("in the park", VOICE)
    assert EspeakPhonemizer().phonemize("en-us", "in the park")
    after = espeak.synthesize("in the park", VOICE)
    close(before, after)


def test_silent_and_empty_texts(espeak):
    u = espeak.synthesize("... —", VOICE)
    check_utterance(u, "... —")
    u = espeak.synthesize("", VOICE)
    assert u.words == [] and u.audio.size > 0


def test_info_and_registry():
    backend = create_backend("espeak")
    info = backend.info()
    assert info["backend"] == "espeak" and len(info["model_sha256"]) == 64
    assert info["sample_rate_hz"] == 22050 and info["espeak_ng"]


def test_non_ascii_text_positions_map_to_the_right_words(espeak):
    text = "The café über naïve résumé is in the park"
    u = espeak.synthesize(text, VOICE)
    check_utterance(u, text)
    for w in u.words:
        assert w.end_s - w.start_s >= 0.05, w  # a shifted position would leave a word 10 ms long


def test_audio_is_a_pure_function_of_text_voice_and_seed():
    """eSpeak's wave generator keeps state between calls, and voices with breath noise (+f3) draw it from libc's
    rand(), seeded with the time: each call starts from a fresh library and seeds both from the turn's seed, so a
    turn's audio is the same whatever was spoken before it and whenever (a resumed run speaks in another order)."""
    import time

    import numpy as np

    b = create_backend("espeak")
    text = "What color is it? It is mostly black, with white paws."
    first = {v: b.synthesize(text, v, seed=1) for v in ("en-us+m3", "en-gb+f3")}
    b.synthesize("Something else, in another voice.", "en-us+f2", seed=5)
    time.sleep(1.1)  # another second on the clock
    for v, u in first.items():
        again = create_backend("espeak").synthesize(text, v, seed=1)
        assert np.array_equal(u.audio, again.audio) and u.words == again.words, v
    assert not np.array_equal(first["en-gb+f3"].audio, b.synthesize(text, "en-gb+f3", seed=2).audio)
