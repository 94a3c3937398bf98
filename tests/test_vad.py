"""Silero VAD over a whole stretch, scored in bounded calls (audio/vad.py), gives
faster-whisper's own results."""

from __future__ import annotations

import os

import numpy as np
from joined_audio import english_clips, join_clips

from voxserve.audio.decode import decode_audio
from voxserve.audio.vad import FRAME, FRAMES_PER_CALL, BoundedScorer, speech_regions


def test_bounded_scoring_gives_faster_whispers_probabilities_on_real_speech(monkeypatch) -> None:
    import faster_whisper.vad as fw_vad

    samples = decode_audio(join_clips(english_clips()).wav)
    samples = samples[: samples.size - samples.size % FRAME]
    assert samples.size // FRAME > 2 * FRAMES_PER_CALL  # the state crosses calls
    # faster-whisper's own scorer, all windows in one call.
    reference = fw_vad.SileroVADModel(
        os.path.join(fw_vad.get_assets_path(), "silero_vad_v6.onnx")
    )
    expected = reference(samples)
    assert 0.05 < float(np.mean(expected > 0.5)) < 0.95  # speech and silence both present
    np.testing.assert_allclose(BoundedScorer()(samples), expected, atol=1e-6)
    # The regions: found with the bounded scorer, installed where faster-whisper looks, and
    # the same as with its own.
    ours = speech_regions(samples)
    assert isinstance(fw_vad.get_vad_model(), BoundedScorer)
    with monkeypatch.context() as patch:
        patch.setattr(fw_vad, "get_vad_model", lambda: reference)
        assert speech_regions(samples) == ours
    assert len(ours) >= 2
