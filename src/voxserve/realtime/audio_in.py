"""Audio as the Realtime API sends it, into the engines' 16 kHz float32.

`audio/pcm` is 16-bit little-endian mono at 24 kHz; `audio/pcmu` and `audio/pcma` are G.711
µ-law and A-law at 8 kHz. Appends may cut a sample (or a µ-law byte pair never, but PCM16 may
arrive with an odd byte count), so a partial sample is kept for the next append. Resampling is
done once, by a stateful libswresample filter, so chunk edges leave no clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from voxserve.audio.decode import SAMPLE_RATE

FORMAT_RATES = {"audio/pcm": 24_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}


@dataclass(frozen=True)
class InputFormat:
    type: str = "audio/pcm"

    @property
    def rate(self) -> int:
        return FORMAT_RATES[self.type]

    def wire(self) -> dict:
        return {"type": self.type, "rate": self.rate} if self.type == "audio/pcm" else {
            "type": self.type
        }


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_G711 = {"audio/pcmu": _mulaw_table(), "audio/pcma": _alaw_table()}


class AudioInput:
    """Decodes one session's appends in order; `push` returns the new 16 kHz samples."""

    def __init__(self, fmt: InputFormat) -> None:
        self.format = fmt
        self._carry = b""
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.bytes_per_second = fmt.rate * (2 if fmt.type == "audio/pcm" else 1)

    def samples_in(self, data: bytes) -> int:
        """How many 16 kHz samples `push(data)` will return, give or take the resampler's
        few samples of delay (checked before the resampler sees the data: a refused append
        must leave no trace in its state)."""
        width = 2 if self.format.type == "audio/pcm" else 1
        whole = (len(self._carry) + len(data)) // width
        return whole * SAMPLE_RATE // self.format.rate

    def push(self, data: bytes) -> np.ndarray:
        pcm = self._to_int16(data)
        if pcm.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.format.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(
            0, dtype=np.float32
        )

    def _to_int16(self, data: bytes) -> np.ndarray:
        table = _G711.get(self.format.type)
        if table is not None:
            return table[np.frombuffer(data, dtype=np.uint8)]
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2")
