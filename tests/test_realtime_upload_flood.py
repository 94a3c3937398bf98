"""Live work is never lost to upload load (issue 24, part 3): one session streams three real
speech turns at real-time pace through the official SDK while several clients flood the same
whisper-tiny.en lane with uploads, so its tiny queue (two slots, two waiting) stays full and
uploads are refused with 429. A session's final passes are admitted ahead of the uploads and
never refused for the full queue: every turn completes with its text, none fails. Only
outcomes and the order of what happened are asserted, never how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import jiwer
import openai
import pytest
from conftest import LiveServer, audio_path, reference_texts
from openai import AsyncOpenAI
from realtime_audio import chunks, pcm24, speech, start_english_session
from whisper_normalizer.english import EnglishTextNormalizer

TURNS = ["arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0890.wav", "goforward.wav"]
UPLOAD = "sense_and_sensibility_01_austen_64kb-0880.wav"
# Two run and two wait: five clients that retry at once keep the queue full.
UPLOADERS = 5
normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(slots=2, max_queue=2, preload=["whisper-tiny.en"]) as server:
        yield server.wait_ready(120)


async def test_a_full_upload_queue_delays_live_turns_but_never_drops_them(live):
    history: list[str] = []  # what happened, in order: "turn", "upload", "429"
    outcomes: list[tuple[str, str]] = []  # (event type, transcript or error) per item
    streaming = True
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="none",
                           max_retries=0) as client:

        async def session() -> None:
            nonlocal streaming
            audio = pcm24(speech(*TURNS, gap=1.5))
            async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
                await start_english_session(conn)

                async def send() -> None:
                    start = time.monotonic()
                    for i, piece in enumerate(chunks(audio, 4800)):  # 100 ms each, on the clock
                        await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
                        await conn.input_audio_buffer.append(audio=piece)

                sender = asyncio.create_task(send())
                try:
                    while len(outcomes) < len(TURNS):
                        event = await asyncio.wait_for(conn.recv(), 120)
                        if event.type == "error":  # lagging is allowed (and said); nothing else
                            assert event.error.code == "server_overloaded", event
                        elif event.type == "conversation.item.input_audio_transcription.completed":
                            outcomes.append((event.type, event.transcript))
                            history.append("turn")
                        elif event.type == "conversation.item.input_audio_transcription.failed":
                            outcomes.append((event.type, str(event.error)))
                            history.append("turn")
                    await sender
                finally:
                    streaming = False
                    sender.cancel()

        async def uploader() -> None:
            data = audio_path(UPLOAD).read_bytes()
            while streaming:
                try:
                    result = await client.audio.transcriptions.create(
                        model="whisper-1", file=(UPLOAD, data), language="en")
                except openai.RateLimitError:
                    history.append("429")
                    await asyncio.sleep(0.05)  # at once again: keep the queue full
                    continue
                assert jiwer.wer(normalize(reference_texts()[UPLOAD]),
                                 normalize(result.text)) <= 0.3, result.text
                history.append("upload")

        await asyncio.gather(session(), *(uploader() for _ in range(UPLOADERS)))

    # The queue really was full while the session's turns were decoded.
    assert "429" in history[: len(history) - 1 - history[::-1].index("turn")], history
    assert "upload" in history, history
    kinds = [kind for kind, _ in outcomes]
    assert kinds == ["conversation.item.input_audio_transcription.completed"] * len(TURNS), \
        outcomes
    texts = [text for _, text in outcomes]
    assert all(t.strip() for t in texts), texts
    references = [normalize(reference_texts()[n]) for n in TURNS]
    assert jiwer.wer(references, [normalize(t) for t in texts]) <= 0.3, texts
