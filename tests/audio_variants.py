"""Re-encode a speech clip into every container OpenAI accepts, at odd rates and channel
counts, with PyAV, so decoding is tested on real files of each kind."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

# name -> (container, codec, sample rate, channels)
VARIANTS: dict[str, tuple[str, str, int, int]] = {
    "flac": ("flac", "flac", 44_100, 2),
    "mp3": ("mp3", "libmp3lame", 22_050, 1),
    "mp4": ("mp4", "aac", 48_000, 2),
    "m4a": ("ipod", "aac", 32_000, 1),
    "ogg": ("ogg", "vorbis", 44_100, 2),
    "oga": ("ogg", "libopus", 48_000, 1),
    "webm": ("webm", "libopus", 48_000, 2),
    "wav": ("wav", "pcm_s16le", 8_000, 2),
}


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
    return np.concatenate(chunks), rate


def encode(samples: np.ndarray, rate: int, variant: str) -> bytes:
    container_name, codec, out_rate, channels = VARIANTS[variant]
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as container:
        # FFmpeg's native vorbis encoder is flagged experimental.
        stream = container.add_stream(
            codec, rate=out_rate, layout=layout, options={"strict": "experimental"}
        )
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=out_rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        frames = resampler.resample(frame) + resampler.resample(None)
        for out in frames:
            out.pts = None
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
