"""Real speech from the fixtures in the Realtime API's wire formats, and event helpers."""

from __future__ import annotations

import base64

import numpy as np
from conftest import audio_path

from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.realtime.audio_in import _alaw_table, _mulaw_table

# Four English clips with their references in fixtures/audio/transcripts.tsv.
ENGLISH_CLIPS = [
    "sense_and_sensibility_01_austen_64kb-0870.wav",
    "arctic_a0007.wav",
    "sense_and_sensibility_01_austen_64kb-0890.wav",
    "goforward.wav",
]


def speech(*names: str, gap: float = 1.5, lead: float = 0.5, tail: float = 1.5) -> np.ndarray:
    """16 kHz float32: the clips in order, with silences between, before and after."""
    pieces = [np.zeros(int(lead * SAMPLE_RATE), dtype=np.float32)]
    for i, name in enumerate(names):
        if i:
            pieces.append(np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32))
        pieces.append(decode_audio(audio_path(name).read_bytes()))
    pieces.append(np.zeros(int(tail * SAMPLE_RATE), dtype=np.float32))
    return np.concatenate(pieces)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    t = np.arange(int(samples.size * rate / SAMPLE_RATE)) / rate
    return np.interp(t, np.arange(samples.size) / SAMPLE_RATE, samples)


def pcm24(samples: np.ndarray) -> bytes:
    return (np.clip(_resample(samples, 24_000), -1, 1) * 32767).astype("<i2").tobytes()


def g711(samples: np.ndarray, kind: str) -> bytes:
    """8 kHz µ-law (`audio/pcmu`) or A-law (`audio/pcma`): each sample's nearest code."""
    table = (_mulaw_table() if kind == "audio/pcmu" else _alaw_table()).astype(np.int32)
    order = np.argsort(table)
    values = (np.clip(_resample(samples, 8_000), -1, 1) * 32767).astype(np.int32)
    index = np.clip(np.searchsorted(table[order], values), 1, 255)
    lower, upper = table[order][index - 1], table[order][index]
    nearest = np.where(values - lower < upper - values, index - 1, index)
    return order[nearest].astype(np.uint8).tobytes()


def chunks(data: bytes, size: int = 9600) -> list[str]:
    """Base64 appends of `size` bytes (9600 = 200 ms of 24 kHz PCM16)."""
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


async def start_english_session(conn) -> None:
    """An SDK connection's opening: `session.created`, then whisper-1 in English (updated)."""
    import asyncio

    assert (await asyncio.wait_for(conn.recv(), 60)).type == "session.created"
    await conn.session.update(session={"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper-1", "language": "en"}}}})
    assert (await asyncio.wait_for(conn.recv(), 60)).type == "session.updated"
