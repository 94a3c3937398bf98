"""Encode float32 PCM into the six speech formats OpenAI returns, incrementally.

Every format is 24 kHz mono, whatever rate the engine speaks at: the encoder resamples with
libswresample (PyAV's `AudioResampler`). Bytes come out as soon as the codec and container
produce them, so a response can stream while later sentences are still being synthesized.

The formats are data (`SPEECH_FORMATS`): a container + codec pair for the compressed ones, and
raw s16le (with or without a streaming WAV header) for `wav` and `pcm`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

OUTPUT_RATE = 24_000


@dataclass(frozen=True)
class SpeechFormat:
    name: str
    content_type: str
    container: str | None  # None: raw s16le samples, no codec
    codec: str | None = None
    sample_format: str = "s16"  # what the resampler hands the codec
    frame_size: int | None = None  # samples per frame the codec requires (None: any)
    bit_rate: int | None = None
    container_options: tuple[tuple[str, str], ...] = ()
    wav_header: bool = False


SPEECH_FORMATS: dict[str, SpeechFormat] = {
    # MPEG-2 Layer III, 128 kb/s at 24 kHz, starting with a LAME info frame and no ID3 tag,
    # as OpenAI sends it (first bytes FF F3 C4 C4).
    "mp3": SpeechFormat(
        "mp3", "audio/mpeg", "mp3", "libmp3lame", "fltp", 1152, 128_000,
        container_options=(("id3v2_version", "0"),),
    ),
    # Ogg Opus with 20 ms frames; pages are cut every 100 ms instead of ffmpeg's 1 s so a
    # streaming client is not kept waiting for a full page.
    "opus": SpeechFormat(
        "opus", "audio/opus", "ogg", "libopus", "flt", 480, 32_000,
        container_options=(("page_duration", "100000"),),
    ),
    # AAC-LC in ADTS framing (a bare stream a player can start anywhere).
    "aac": SpeechFormat("aac", "audio/aac", "adts", "aac", "fltp", 1024, 64_000),
    "flac": SpeechFormat("flac", "audio/flac", "flac", "flac", "s16"),
    "wav": SpeechFormat("wav", "audio/wav", None, wav_header=True),
    "pcm": SpeechFormat("pcm", "audio/pcm", None),
}


def streaming_wav_header(rate: int = OUTPUT_RATE, channels: int = 1, bits: int = 16) -> bytes:
    """A RIFF/WAVE header whose sizes are unknown (0xFFFFFFFF), as OpenAI streams it."""
    block_align = channels * bits // 8
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block_align,
                                block_align, bits)
        + b"data" + struct.pack("<I", 0xFFFFFFFF)
    )


class _Sink:
    """A write-only, non-seekable file for the muxer: muxers that would seek back to patch
    a header (FLAC's STREAMINFO) leave it as a streaming header instead, as OpenAI's does."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class AudioEncoder:
    """Feed float32 mono chunks at `input_rate` with `encode`, then call `finish` once.

    Each call returns the bytes produced so far (possibly empty: codecs work in frames).
    Not thread-safe; use one encoder per response, from one thread at a time.
    """

    def __init__(self, response_format: str, input_rate: int) -> None:
        self.format = SPEECH_FORMATS[response_format]
        self.input_rate = input_rate
        fmt = self.format
        self._resampler = av.AudioResampler(
            format=fmt.sample_format, layout="mono", rate=OUTPUT_RATE, frame_size=fmt.frame_size
        )
        self._pts = 0
        self._finished = False
        self._pending_header = streaming_wav_header() if fmt.wav_header else b""
        self._container = None
        self._stream = None
        self._sink = _Sink()
        if fmt.container is not None:
            self._container = av.open(
                self._sink, mode="w", format=fmt.container,
                # Hand every packet to the sink at once instead of filling a 32 KiB buffer.
                container_options={"flush_packets": "1", **dict(fmt.container_options)},
                buffer_size=4096,
            )
            stream = self._container.add_stream(fmt.codec, rate=OUTPUT_RATE)
            stream.layout = "mono"
            stream.format = fmt.sample_format
            if fmt.bit_rate:
                stream.bit_rate = fmt.bit_rate
            self._stream = stream

    def encode(self, samples: np.ndarray) -> bytes:
        """Bytes for a chunk of float32 samples in [-1, 1] at the input rate."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        if samples.size == 0:
            return self._take()
        frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0), format="flt", layout="mono")
        frame.sample_rate = self.input_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.input_rate)
        self._pts += samples.shape[1]
        for out in self._resampler.resample(frame):
            self._write(out)
        return self._take()

    def finish(self) -> bytes:
        """Flush the resampler, codec and container; the last bytes of the stream."""
        if self._finished:
            return b""
        self._finished = True
        for out in self._resampler.resample(None):
            self._write(out)
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._take()

    def close(self) -> None:
        """Release the codec without producing the rest (the client went away)."""
        if not self._finished and self._container is not None:
            self._finished = True
            try:
                self._container.close()
            except Exception:  # closing a half-written stream; nothing to report to anyone
                pass

    def _write(self, frame: av.AudioFrame) -> None:
        if self._container is None:
            self._pending_header += frame.to_ndarray().astype("<i2", copy=False).tobytes()
            return
        frame.pts = None  # the codec numbers frames itself at the output rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _take(self) -> bytes:
        if self._container is None:
            out, self._pending_header = self._pending_header, b""
            return out
        return self._sink.take()

