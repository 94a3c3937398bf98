"""Decode uploaded bytes into 16 kHz mono float32 samples with PyAV.

The container is sniffed from the bytes by FFmpeg's probe, never trusted from the filename:
the OpenAI SDK names raw-byte uploads `upload`, and the .NET SDK sends Windows paths.
"""

from __future__ import annotations

import io
import logging

import av
import numpy as np

from voxserve.errors import APIError, audio_too_short, invalid_file_format

log = logging.getLogger("voxserve.audio")

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1

# Containers FFmpeg may "detect" in arbitrary bytes that are not audio uploads at all
# (text, images, subtitles): refuse them rather than transcribe noise.
_NON_AUDIO_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "srt", "webvtt", "ass", "lrc"}


def decode_audio(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """All audio of the first audio stream, as float32 in [-1, 1] at 16 kHz, one channel.

    Raises the OpenAI 400 errors for undecodable input and for audio under 0.1 s, and a
    400 `invalid_value` when the audio is longer than `max_seconds`.
    """
    if not data:
        raise invalid_file_format()
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        log.debug("probe failed: %s", exc)
        raise invalid_file_format() from exc
    with container:
        if container.format.name in _NON_AUDIO_FORMATS or not container.streams.audio:
            raise invalid_file_format()
        samples = _decode_stream(container, container.streams.audio[0], max_seconds)
    if samples.size < MIN_SECONDS * SAMPLE_RATE:
        raise audio_too_short()
    return samples


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    max_seconds: float | None,
) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler count samples; broken pts must not drop audio
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += chunk.size
            if limit is not None and total > limit:
                raise _too_long(total / SAMPLE_RATE, max_seconds)
    except av.FFmpegError as exc:
        # A damaged tail (truncated upload) still leaves the audio before it; FFmpeg's own
        # tools behave the same. Nothing decodable at all is a bad file.
        if not chunks:
            raise invalid_file_format() from exc
        log.info("decoding stopped early after %.2f s: %s", total / SAMPLE_RATE, exc)
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _too_long(seconds: float, maximum: float) -> APIError:
    return APIError(
        f"audio duration {seconds:.6f} seconds is longer than {maximum:g} seconds "
        "which is the maximum for this server",
        code="invalid_value",
    )
