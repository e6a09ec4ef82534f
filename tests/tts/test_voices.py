"""Voice specs: one assistant voice, user voices drawn from the dialogue seed."""
import pytest

from tts.voices import DEFAULT_USERS, VoiceConfig, parse_voice


def test_parse_voice():
    assert parse_voice("espeak:en-us+m3") == ("espeak", "en-us+m3")
    assert parse_voice("kyutai:expresso/ex03.wav") == ("kyutai", "expresso/ex03.wav")
    for bad in ("joe", "festival:kal", "piper:"):
        with pytest.raises(ValueError, match="BACKEND:VOICE"):
            parse_voice(bad)


def test_user_voice_is_a_pure_function_of_the_seed_and_uses_the_pool():
    vc = VoiceConfig()
    picks = [vc.user_voice(s) for s in range(200)]
    assert picks == [VoiceConfig().user_voice(s) for s in range(200)]
    assert set(picks) == set(DEFAULT_USERS)
    assert vc.backends() == ["espeak", "piper"]


def test_empty_pool_and_bad_voice_are_refused():
    with pytest.raises(ValueError, match="empty"):
        VoiceConfig(users=())
    with pytest.raises(ValueError, match="BACKEND:VOICE"):
        VoiceConfig(assistant="joe")
