"""Live sessions and file uploads on one server at once (issue 13, item 6): three sessions
stream real speech at real-time pace through the official SDK while a client uploads files
one after another, all on whisper-tiny.en's lane. Nobody starves: every turn of every session
completes, every upload succeeds, uploads finish while the sessions are still streaming, and
the sessions' turns complete while uploads are still coming. Only the order of what happened
is asserted, never how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import jiwer
import pytest
from conftest import LiveServer, audio_path, reference_texts
from openai import AsyncOpenAI
from realtime_audio import chunks, pcm24, speech, start_english_session
from whisper_normalizer.english import EnglishTextNormalizer

SESSIONS = [
    ["arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0870.wav", "goforward.wav"],
    ["sense_and_sensibility_01_austen_64kb-0890.wav", "arctic_a0009.wav", "goforward.wav"],
    ["sense_and_sensibility_01_austen_64kb-0930.wav",
     "sense_and_sensibility_01_austen_64kb-0920.wav", "arctic_a0007.wav"],
]
UPLOAD = "sense_and_sensibility_01_austen_64kb-0880.wav"
normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(realtime_max_sessions=len(SESSIONS), preload=["whisper-tiny.en"]) as server:
        yield server.wait_ready(120)


async def test_sessions_and_uploads_share_the_model_without_starving(live):
    history: list[tuple[str, int]] = []  # (what, who), in the order it happened
    streaming = len(SESSIONS)
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="none",
                           max_retries=0) as client:

        async def session(who: int, names: list[str]) -> list[str]:
            nonlocal streaming
            audio = pcm24(speech(*names, gap=1.5))
            async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
                await start_english_session(conn)

                async def send() -> None:
                    nonlocal streaming
                    start = time.monotonic()
                    for i, piece in enumerate(chunks(audio, 4800)):  # 100 ms each, on the clock
                        await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
                        await conn.input_audio_buffer.append(audio=piece)
                    history.append(("sent", who))
                    streaming -= 1

                sender = asyncio.create_task(send())
                texts = []
                while len(texts) < len(names):
                    event = await asyncio.wait_for(conn.recv(), 300)
                    if event.type == "error":  # lagging is allowed (and said); nothing else
                        assert event.error.code == "server_overloaded", event
                    elif event.type == "conversation.item.input_audio_transcription.completed":
                        texts.append(event.transcript)
                        history.append(("turn", who))
                    else:
                        assert not event.type.endswith(".failed"), event
                await sender
            return texts

        async def uploads() -> int:
            data = audio_path(UPLOAD).read_bytes()
            done = 0
            while streaming:  # a steady stream of uploads for as long as sessions stream
                result = await client.audio.transcriptions.create(
                    model="whisper-1", file=(UPLOAD, data), language="en")
                assert jiwer.wer(normalize(reference_texts()[UPLOAD]),
                                 normalize(result.text)) <= 0.3, result.text
                done += 1
                history.append(("upload", done))
            return done

        *transcripts, uploaded = await asyncio.gather(
            *(session(i, names) for i, names in enumerate(SESSIONS)), uploads())

    for names, texts in zip(SESSIONS, transcripts, strict=True):
        assert len(texts) == len(names)  # one item per clip: every turn completed
        hypotheses = [normalize(t) for t in texts]
        references = [normalize(reference_texts()[n]) for n in names]
        assert jiwer.wer(references, hypotheses) <= 0.3, texts
    kinds = [what for what, _ in history]
    first_sent = kinds.index("sent")
    # Uploads were served while every session was still streaming...
    assert uploaded >= 2 and "upload" in kinds[:first_sent], history
    last_upload = len(kinds) - 1 - kinds[::-1].index("upload")
    # ... and every session's turns were transcribed while the uploads kept coming.
    for who in range(len(SESSIONS)):
        assert history.index(("turn", who)) < last_upload, history
