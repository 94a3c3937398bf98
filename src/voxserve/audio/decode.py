"""Decode uploaded bytes into 16 kHz mono float32 samples with PyAV.

The container is sniffed from the bytes by FFmpeg's probe, never trusted from the filename:
the OpenAI SDK names raw-byte uploads `upload`, and the .NET SDK sends Windows paths.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import av
import numpy as np

from voxserve.errors import InvalidInput, audio_too_short, invalid_file_format

log = logging.getLogger("voxserve.audio")

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1

# Containers FFmpeg may "detect" in arbitrary bytes that are not audio uploads at all
# (text, images, subtitles): refuse them rather than transcribe noise.
_NON_AUDIO_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "srt", "webvtt", "ass", "lrc"}


def decode_audio(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """All audio of the first audio stream, as float32 in [-1, 1] at 16 kHz, one channel.

    Raises the OpenAI 400 errors for undecodable input and for audio under 0.1 s, and a
    400 `invalid_value` when the audio is longer than `max_seconds`. For long files prefer
    `open_audio(...).chunks()`, which never holds the whole file as float32.
    """
    chunks = list(open_audio(data, max_seconds).chunks())
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.size < MIN_SECONDS * SAMPLE_RATE:
        raise audio_too_short()
    return samples


class OpenedAudio:
    """An upload whose container was probed and has an audio stream; decodes on demand."""

    def __init__(self, container: av.container.InputContainer, max_seconds: float | None):
        self._container = container
        self._stream = container.streams.audio[0]
        self._max_seconds = max_seconds

    def chunks(self) -> Iterator[np.ndarray]:
        """16 kHz mono float32 pieces as the decoder produces them; closes the container."""
        with self._container:
            yield from _decode_stream(self._container, self._stream, self._max_seconds)


def open_audio(data: bytes, max_seconds: float | None = None) -> OpenedAudio:
    """Probe the bytes (sniffed, not trusted from any filename) and find the audio stream."""
    if not data:
        raise invalid_file_format()
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        log.debug("probe failed: %s", exc)
        raise invalid_file_format() from exc
    if container.format.name in _NON_AUDIO_FORMATS or not container.streams.audio:
        container.close()
        raise invalid_file_format()
    if max_seconds and container.duration and container.duration / av.time_base > max_seconds:
        seconds = container.duration / av.time_base
        container.close()
        raise _too_long(seconds, max_seconds)
    return OpenedAudio(container, max_seconds)


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    max_seconds: float | None,
) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    total = 0
    try:
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler count samples; broken pts must not drop audio
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                total += chunk.size
                yield chunk
            if limit is not None and total > limit:
                raise _too_long(total / SAMPLE_RATE, max_seconds)
    except av.FFmpegError as exc:
        # A damaged tail (truncated upload) still leaves the audio before it; FFmpeg's own
        # tools behave the same. Nothing decodable at all is a bad file.
        if total == 0:
            raise invalid_file_format() from exc
        log.info("decoding stopped early after %.2f s: %s", total / SAMPLE_RATE, exc)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def _too_long(seconds: float, maximum: float) -> InvalidInput:
    return InvalidInput(
        f"audio duration {seconds:.6f} seconds is longer than {maximum:g} seconds "
        "which is the maximum for this server",
        code="invalid_value",
    )
