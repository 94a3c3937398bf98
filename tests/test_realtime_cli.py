"""`voxserve listen`: a realtime session on a file or on raw PCM from stdin."""

from __future__ import annotations

import jiwer
from conftest import MODEL_CACHE, reference_texts
from realtime_audio import pcm24, speech
from typer.testing import CliRunner
from whisper_normalizer.english import EnglishTextNormalizer

from voxserve.cli import cli

normalize = EnglishTextNormalizer()
ENV = {"VOXSERVE_STT_DEFAULT_MODEL": "whisper-tiny.en", "VOXSERVE_CACHE_DIR": str(MODEL_CACHE),
       "VOXSERVE_CPU_THREADS": "2", "HF_HUB_OFFLINE": "1"}
CLIPS = ["arctic_a0007.wav", "goforward.wav"]


def test_listen_prints_one_line_per_turn_from_a_file(tmp_path):
    from joined_audio import join_clips

    path = tmp_path / "two.wav"
    path.write_bytes(join_clips(CLIPS, gap_seconds=1.5).wav)
    result = CliRunner().invoke(cli, ["listen", str(path), "--language", "en"], env=ENV)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2
    for line, name in zip(lines, CLIPS, strict=True):
        assert jiwer.wer(normalize(reference_texts()[name]), normalize(line)) <= 0.2


def test_listen_reads_raw_pcm_from_stdin():
    raw = pcm24(speech("arctic_a0009.wav"))
    result = CliRunner().invoke(cli, ["listen", "-", "--no-vad"], input=raw, env=ENV)
    assert result.exit_code == 0, result.output
    reference = normalize(reference_texts()["arctic_a0009.wav"])
    assert jiwer.wer(reference, normalize(result.stdout)) <= 0.25
