"""The browser playground and /docs, driven in real headless Chromium (Debian's, via Playwright).

Every page load is watched: a request to anything but this server fails the test, so the
pages stay usable offline. Set VOXSERVE_SCREENSHOTS=<dir> to keep a PNG of each tab there
(docs/img holds the ones the README shows).
"""

from __future__ import annotations

import os
import re
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, audio_path, reference_texts
from recordings import recorded_body

CHROMIUM = Path("/usr/bin/chromium")
BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]
API_KEY = "sk-playground-test-key"
TABS = ("transcribe", "speak", "live", "server")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def launch(playwright, *extra_flags: str):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*BASE_FLAGS, *extra_flags], headless=True
    )


@pytest.fixture(scope="module")
def browser(playwright):
    b = launch(playwright)
    yield b
    b.close()


class Offline:
    """Fails on any request that leaves this server, and on uncaught page errors."""

    def __init__(self, page, base_url: str) -> None:
        self.outside: list[str] = []
        self.errors: list[str] = []
        allowed = (base_url, base_url.replace("http", "ws"), "data:", "blob:")
        page.on("request", lambda r: None if r.url.startswith(allowed)
                else self.outside.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def check(self) -> None:
        assert self.outside == [], f"the page loaded from outside: {self.outside}"
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"


@pytest.fixture
def page(browser, base_url: str) -> Iterator:
    context = browser.new_context(accept_downloads=True)
    p = context.new_page()
    watch = Offline(p, base_url)
    p.goto(base_url + "/")
    yield p
    watch.check()
    context.close()


def open_tab(page, name: str) -> None:
    page.click(f"#tab-{name}")
    page.wait_for_selector(f"#panel-{name}:not([hidden])")


def screenshot(page, name: str) -> None:
    target = os.environ.get("VOXSERVE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"playground-{name}.png"), full_page=True)


def test_transcribe_a_clip_shows_text_segments_and_downloads_srt(page, tmp_path):
    clip = "arctic_a0007.wav"
    page.wait_for_selector('#stt-model option[value="whisper-tiny.en"]', state="attached")
    page.select_option("#stt-model", "whisper-tiny.en")
    page.set_input_files("#stt-file", str(audio_path(clip)))
    page.click("#stt-go")
    page.wait_for_function("document.querySelector('#stt-status').textContent.startsWith('Done')")
    assert page.is_hidden("#stt-error")
    text = page.text_content("#stt-text")
    expected = words(reference_texts()[clip])
    heard = words(text)
    assert sum(w in heard for w in expected) >= len(expected) - 2, text

    rows = page.locator("#stt-segments tbody tr")
    assert rows.count() >= 1
    assert words(rows.first.locator("td").nth(3).text_content())[:2] == heard[:2]

    with page.expect_download() as info:
        page.click('[data-download="srt"]')
    srt = Path(info.value.path()).read_text()
    assert info.value.suggested_filename == "arctic_a0007.srt"
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n", srt), srt
    assert "superlative" in srt.lower()

    # A segment row seeks the audio player to its start.
    last = rows.last
    start = float(last.get_attribute("data-start"))
    last.click()
    page.wait_for_function(
        f"Math.abs(document.querySelector('#stt-audio').currentTime - {start}) < 0.3"
    )
    screenshot(page, "transcribe")


def test_streamed_transcription_shows_the_final_text(page):
    page.wait_for_selector('#stt-model option[value="whisper-tiny.en"]', state="attached")
    page.select_option("#stt-model", "whisper-tiny.en")
    page.set_input_files("#stt-file", str(audio_path("beckett.wav")))
    page.select_option("#stt-format", "json")
    page.check("#stt-stream")
    # Every text the page shows, with the status beside it at that moment.
    page.evaluate("""() => {
        window.seen = [];
        const text = document.querySelector('#stt-text');
        const status = document.querySelector('#stt-status');
        new MutationObserver(() => window.seen.push([status.textContent, text.textContent]))
            .observe(text, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#stt-go")
    page.wait_for_function("document.querySelector('#stt-status').textContent.startsWith('Done')")
    # The deltas were shown while decoding went on, not only once the response was complete.
    seen = page.evaluate("window.seen")
    assert any(s.startswith("Decoding") and "tried" in t.lower() for s, t in seen), seen
    raw = page.text_content("#stt-raw")
    assert "transcript.text.delta" in raw and "transcript.text.done" in raw
    heard = words(page.text_content("#stt-text"))
    assert {"ever", "tried", "failed", "better"} <= set(heard), heard


def test_diarized_results_colour_speakers_and_send_known_speakers(page):
    """The page's half of diarization: known speakers go out as OpenAI's fields, and OpenAI's
    own diarized_json answer (a recording, standing in for the diarizer, whose weights need a
    one-time torch conversion) comes back as a table with one colour per speaker."""
    answer = recorded_body("DiarizedTranscriptionWithKnownSpeakersWorks")
    sent: list[bytes] = []

    def answer_with_recording(route):
        sent.append(route.request.post_data_buffer)
        route.fulfill(status=200, content_type="application/json", body=answer)

    page.route("**/v1/audio/transcriptions", answer_with_recording)
    page.wait_for_selector('#stt-model option[value="gpt-4o-transcribe-diarize"]', state="attached")
    page.select_option("#stt-model", "gpt-4o-transcribe-diarize")
    assert page.input_value("#stt-format") == "diarized_json"
    page.set_input_files("#stt-file", str(audio_path("audio_meeting.wav")))
    page.click("#add-speaker")
    page.fill(".spk-name", "agent")
    page.set_input_files(".spk-file", str(audio_path("audio_agent_reference.wav")))
    page.click("#stt-go")
    page.wait_for_function("document.querySelector('#stt-status').textContent.startsWith('Done')")

    body = sent[0]
    assert b'name="known_speaker_names[]"\r\n\r\nagent\r\n' in body
    assert b'name="known_speaker_references[]"\r\n\r\ndata:audio/' in body
    assert b'name="response_format"\r\n\r\ndiarized_json\r\n' in body
    speakers = page.locator("#stt-segments tbody .spk")
    assert speakers.all_text_contents() == ["agent", "A", "agent"]
    classes = [speakers.nth(i).get_attribute("class") for i in range(3)]
    assert classes[0] == classes[2] != classes[1]
    with page.expect_download() as info:
        page.click('[data-download="vtt"]')
    vtt = Path(info.value.path()).read_text()
    assert vtt.startswith("WEBVTT")
    assert "00:00:01.650 --> 00:00:03.750\nA: Hi, I'm trying to enable diarization." in vtt


def test_speak_plays_decodable_audio(page):
    open_tab(page, "speak")
    page.wait_for_selector('#tts-model option[value="tts-1"]', state="attached")
    page.select_option("#tts-model", "tts-1")
    page.wait_for_selector("#tts-voice option", state="attached")
    page.fill("#tts-input", "The quick brown fox jumps over the lazy dog. Then it rests.")
    page.click("#tts-go")
    page.wait_for_function("document.querySelector('#tts-status').textContent.startsWith('Done')")
    assert page.is_hidden("#tts-error")
    status = page.text_content("#tts-status")
    assert "first sound after" in status
    # What the <audio> element plays (a MediaSource fed while streaming) and the download
    # (the same bytes) both decode to about three seconds of speech.
    decoded = page.evaluate("""async () => {
        const audio = document.querySelector('#tts-audio');
        const bytes = await (await fetch(document.querySelector('#tts-download').href)).arrayBuffer();
        const buffer = await new AudioContext().decodeAudioData(bytes);
        return {element: audio.duration, error: audio.error && audio.error.message,
                decoded: buffer.duration, size: bytes.byteLength};
    }""")
    assert decoded["error"] is None
    assert 1.5 < decoded["decoded"] < 10, decoded
    assert abs(decoded["element"] - decoded["decoded"]) < 0.5, decoded
    screenshot(page, "speak")


def test_speak_wav_streams_through_webaudio_and_decodes(page):
    open_tab(page, "speak")
    page.wait_for_selector('#tts-model option[value="tts-1"]', state="attached")
    page.select_option("#tts-model", "tts-1")
    page.wait_for_selector("#tts-voice option", state="attached")
    page.select_option("#tts-format", "wav")
    page.fill("#tts-input", "Short and sweet.")
    page.click("#tts-go")
    page.wait_for_function("document.querySelector('#tts-status').textContent.startsWith('Done')")
    seconds = page.evaluate("""async () => {
        const bytes = await (await fetch(document.querySelector('#tts-audio').src)).arrayBuffer();
        return (await new AudioContext().decodeAudioData(bytes)).duration;
    }""")
    assert 0.5 < seconds < 5


def test_bad_input_shows_the_servers_message(page, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not audio samples " * 20)
    page.wait_for_selector('#stt-model option[value="whisper-tiny.en"]', state="attached")
    page.set_input_files("#stt-file", str(not_audio))
    page.click("#stt-go")
    error = page.wait_for_selector("#stt-error:not([hidden])")
    assert error.text_content().startswith("400 ")
    assert "could not be decoded" in error.text_content().lower() or "invalid" in (
        error.text_content().lower()
    ), error.text_content()

    # A speech request the server refuses: its own words, in the page.
    open_tab(page, "speak")
    page.wait_for_selector("#tts-voice option", state="attached")
    page.fill("#tts-speed", "9")
    page.click("#tts-go")
    error = page.wait_for_selector("#tts-error:not([hidden])")
    assert "speed" in error.text_content() and "4" in error.text_content(), error.text_content()


def test_api_key_server_without_and_with_the_key(browser):
    with LiveServer(api_keys=[API_KEY]) as keyed:
        context = browser.new_context()
        page = context.new_page()
        watch = Offline(page, keyed.base_url)
        page.goto(keyed.base_url + "/playground")
        error = page.wait_for_selector("#global-error:not([hidden])")
        assert "You didn't provide an API key" in error.text_content()
        assert page.locator("#stt-model option").count() == 0

        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
        page.wait_for_selector("#global-error", state="hidden")
        page.wait_for_selector('#stt-model option[value="whisper-tiny.en"]', state="attached")
        page.select_option("#stt-model", "whisper-tiny.en")
        page.set_input_files("#stt-file", str(audio_path("cards_003.wav")))
        page.click("#stt-go")
        page.wait_for_function(
            "document.querySelector('#stt-status').textContent.startsWith('Done')"
        )
        assert "clubs" in words(page.text_content("#stt-text"))

        # The key lives in this tab's session storage: a reload keeps it.
        page.reload()
        assert page.input_value("#api-key") == API_KEY
        page.wait_for_selector('#stt-model option[value="whisper-tiny.en"]', state="attached")

        # /docs in the same tab sends that key with "Try it out".
        page.click("a[href='/docs']")
        op = page.locator("#operations-default-list_models_v1_models_get")
        op.locator(".opblock-summary").click()
        op.locator("button.try-out__btn").click()
        op.locator("button.execute").click()
        status = op.locator(".live-responses-table .response .response-col_status").first
        status.wait_for()
        assert status.text_content().strip().startswith("200")
        page.goto(keyed.base_url + "/playground")  # Swagger deep links add history entries

        # A wrong key gets the server's own 401 text.
        page.fill("#api-key", "sk-wrong-key-1234567890")
        page.press("#api-key", "Enter")
        error = page.wait_for_selector("#global-error:not([hidden])")
        assert "Incorrect API key provided" in error.text_content()
        watch.check()
        context.close()


def test_live_mode_says_why_it_cannot_start(page):
    # This browser has no microphone (no fake device): the page says so instead of nothing.
    open_tab(page, "live")
    page.wait_for_selector("#live-models option", state="attached")
    assert page.input_value("#live-model") == "whisper-base"
    screenshot(page, "live")
    page.click("#live-go")
    error = page.wait_for_selector("#live-error:not([hidden])")
    assert error.text_content().strip()
    assert page.get_attribute("#live-go", "aria-pressed") == "false"


def test_server_view_shows_loaded_models(page):
    open_tab(page, "server")
    page.wait_for_function("document.querySelector('#srv-status').textContent === 'ok'")
    page.wait_for_function("document.querySelector('#srv-updated').textContent.startsWith('Updated')")
    assert page.locator("#srv-models li").count() >= 1
    screenshot(page, "server")


def test_tabs_keyboard_labels_and_narrow_screens(browser, base_url):
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    watch = Offline(page, base_url)
    page.goto(base_url + "/")
    page.wait_for_selector("#stt-model option", state="attached")
    # Arrow keys move between tabs.
    page.focus("#tab-transcribe")
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#panel-speak") and page.is_hidden("#panel-transcribe")
    page.keyboard.press("End")
    assert page.is_visible("#panel-server")
    page.keyboard.press("Home")
    assert page.is_visible("#panel-transcribe")
    # Every control has a name a screen reader can read.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => !el.labels?.length && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert unlabelled == []
    # At 360 px nothing runs off the side of any tab.
    for name in TABS:
        open_tab(page, name)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 360, f"{name} tab is {width}px wide"
    open_tab(page, "transcribe")
    screenshot(page, "narrow")
    watch.check()
    context.close()


def test_docs_work_offline_and_describe_the_request_bodies(page, base_url):
    page.goto(base_url + "/docs")
    page.wait_for_selector("#operations-default-create_transcription_v1_audio_transcriptions_post")
    page.click("#operations-default-create_transcription_v1_audio_transcriptions_post .opblock-summary")
    body = page.wait_for_selector(".opblock-body .opblock-section-request-body")
    assert "multipart/form-data" in body.text_content()
    assert "timestamp_granularities[]" in body.text_content()
    page.click("#operations-default-create_speech_v1_audio_speech_post .opblock-summary")
    page.wait_for_selector(
        "#operations-default-create_speech_v1_audio_speech_post .opblock-section-request-body"
    )

    # "Try it out" sends a real multipart request and shows the transcript.
    op = page.locator("#operations-default-create_transcription_v1_audio_transcriptions_post")
    op.locator("button.try-out__btn").click()
    op.locator('input[type="file"]').set_input_files(str(audio_path("cards_001.wav")))
    op.locator('tr[data-property-name="model"] input').fill("whisper-tiny.en")
    op.locator("button.execute").click()
    response = op.locator(".responses-table.live-responses-table .response")
    response.first.wait_for()
    assert response.first.locator(".response-col_status").text_content().strip().startswith("200")
    assert "clubs" in op.locator(".live-responses-table").text_content().lower()


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "api-key"])
def test_live_transcription_from_a_fake_microphone(playwright, server, tmp_path, keyed):
    # Chromium loops the file: a pause after the sentence lets the server's VAD end the turn.
    clip = tmp_path / "mic.wav"
    with wave.open(str(audio_path("arctic_a0009.wav"))) as src, wave.open(str(clip), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(src.getnframes()))
        dst.writeframes(b"\0" * src.getsampwidth() * src.getframerate() * 2)
    mic = launch(
        playwright, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={clip}",
    )
    keyed_server = LiveServer(api_keys=[API_KEY]) if keyed else None
    try:
        live = keyed_server.__enter__() if keyed_server else server
        context = mic.new_context(permissions=["microphone"])
        page = context.new_page()
        watch = Offline(page, live.base_url)
        secrets = []
        page.on("request", lambda r: secrets.append(r) if "client_secrets" in r.url else None)
        page.goto(live.base_url + "/#live")
        if keyed:  # the key reaches the WebSocket as an ephemeral secret (a subprotocol)
            page.fill("#api-key", API_KEY)
            page.press("#api-key", "Enter")
        page.wait_for_selector("#live-models option", state="attached")
        page.fill("#live-model", "whisper-tiny.en")
        page.click("#live-go")
        page.wait_for_function(
            "[...document.querySelectorAll('#live-turns .firm')]"
            ".some(el => /turned sharply.*table/i.test(el.textContent))",
            timeout=90_000,
        )
        assert page.is_hidden("#live-error")
        assert len(secrets) == (1 if keyed else 0)
        page.click("#live-go")
        page.wait_for_function("document.querySelector('#live-status').textContent === 'Stopped.'")
        if not keyed:
            screenshot(page, "live")
        watch.check()
        context.close()
    finally:
        mic.close()
        if keyed_server:
            keyed_server.__exit__(None, None, None)
