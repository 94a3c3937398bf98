// Speak: the speech endpoint, played while it streams.
// mp3 (and aac where the browser takes it) go through MediaSource into the <audio> element;
// wav and pcm are raw samples, scheduled on WebAudio as they arrive; opus and flac play once
// complete. Whatever the route, the finished file lands in the <audio> element and the
// download link.

import { apiFetch, apiJson, describe, fillSelect, showError } from "./api.js";
import { PcmPlayer, concat, wavFile } from "./pcm.js";

const $ = (id) => document.getElementById(id);
const RATE = 24000;
const WAV_HEADER = 44;
const MSE_TYPES = { mp3: "audio/mpeg", aac: "audio/aac" };
const MIME = { mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", wav: "audio/wav", pcm: "audio/pcm" };
const voices = new Map();
let abort = null;
let player = null;
let objectUrl = null;

async function loadVoices() {
  const id = $("tts-model").value;
  if (!id) return;
  try {
    if (!voices.has(id)) {
      $("tts-status").textContent = "Loading voices…";
      const { data } = await apiJson(`/v1/audio/voices?model=${encodeURIComponent(id)}`);
      voices.set(id, data[0]?.voices.map((v) => (v.engine_voice && v.engine_voice !== v.id ? [v.id, `${v.id} (${v.engine_voice})`] : v.id)) || []);
      $("tts-status").textContent = "";
    }
    fillSelect($("tts-voice"), voices.get(id));
  } catch (err) {
    $("tts-status").textContent = "";
    showError($("tts-error"), describe(err));
  }
}

function setResult(blob, format) {
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(blob);
  const link = $("tts-download");
  link.href = objectUrl;
  link.download = `speech.${format}`;
  link.textContent = `Download ${format} (${(blob.size / 1024).toFixed(0)} KiB)`;
}

/** MediaSource playback: append each chunk as it comes; play from the first one. */
async function playThroughMediaSource(reader, type, onFirst) {
  const audio = $("tts-audio");
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  const buffer = source.addSourceBuffer(type);
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (buffer.updating) await new Promise((r) => buffer.addEventListener("updateend", r, { once: true }));
    buffer.appendBuffer(value);
    if (chunks.length === 1) {
      onFirst();
      audio.play().catch(() => {});
    }
  }
  if (buffer.updating) await new Promise((r) => buffer.addEventListener("updateend", r, { once: true }));
  if (source.readyState === "open") source.endOfStream();
  return concat(chunks);
}

/** WebAudio playback of raw PCM16 at 24 kHz (the wav header, when there is one, skipped). */
async function playPcm(reader, skip, onFirst) {
  player = new PcmPlayer(RATE);
  const chunks = [];
  let skipped = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    let samples = value;
    if (skipped < skip) {
      const cut = Math.min(skip - skipped, value.length);
      skipped += cut;
      samples = value.subarray(cut);
    }
    if (samples.length) {
      onFirst();
      player.push(samples);
    }
  }
  return concat(chunks);
}

async function readAll(reader) {
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return concat(chunks);
    chunks.push(value);
  }
}

async function speak() {
  const format = $("tts-format").value;
  const body = {
    model: $("tts-model").value,
    input: $("tts-input").value,
    voice: $("tts-voice").value,
    response_format: format,
    speed: Number($("tts-speed").value),
  };
  const instructions = $("tts-instructions").value.trim();
  if (instructions) body.instructions = instructions;
  abort = new AbortController();
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(2);
  let first = null;
  const onFirst = () => {
    if (first !== null) return;
    first = seconds();
    $("tts-status").textContent = `Playing (first sound after ${first} s)…`;
  };
  $("tts-status").textContent = "Synthesizing…";
  const response = await apiFetch("/v1/audio/speech", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: abort.signal,
  });
  $("tts-result").hidden = false;
  const reader = response.body.getReader();
  const audio = $("tts-audio");
  const mse = MSE_TYPES[format];
  let bytes;
  if (mse && window.MediaSource?.isTypeSupported(mse)) {
    bytes = await playThroughMediaSource(reader, mse, onFirst);
    setResult(new Blob([bytes], { type: MIME[format] }), format);
  } else if (format === "wav" || format === "pcm") {
    bytes = await playPcm(reader, format === "wav" ? WAV_HEADER : 0, onFirst);
    const pcm = format === "wav" ? bytes.subarray(WAV_HEADER) : bytes;
    // The streamed header carries unknown sizes; the element gets a file with real ones.
    const playable = wavFile(pcm, RATE);
    audio.src = URL.createObjectURL(playable);
    setResult(format === "wav" ? playable : new Blob([pcm], { type: MIME.pcm }), format);
  } else {
    $("tts-status").textContent = `Receiving ${format} (it plays once complete)…`;
    bytes = await readAll(reader);
    const blob = new Blob([bytes], { type: MIME[format] });
    audio.src = URL.createObjectURL(blob);
    onFirst();
    audio.play().catch(() => {});
    setResult(blob, format);
  }
  $("tts-status").textContent = `Done: ${(bytes.length / 1024).toFixed(0)} KiB in ${seconds()} s, first sound after ${first} s.`;
}

export function initSpeak(onModels) {
  onModels((all) => {
    fillSelect($("tts-model"), all.filter((m) => m.kind === "tts").map((m) => m.id));
    if (!document.getElementById("panel-speak").hidden) loadVoices();
  });
  document.addEventListener("tabchange", (e) => { if (e.detail === "speak") loadVoices(); });
  $("tts-model").addEventListener("change", loadVoices);
  $("tts-stop").addEventListener("click", () => {
    abort?.abort();
    player?.close();
    $("tts-audio").pause();
  });
  $("tts-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError($("tts-error"), "");
    player?.close();
    $("tts-go").disabled = true;
    $("tts-stop").disabled = false;
    try {
      await speak();
    } catch (err) {
      if (err.name === "AbortError") $("tts-status").textContent = "Stopped.";
      else {
        $("tts-status").textContent = "";
        showError($("tts-error"), describe(err));
      }
    } finally {
      $("tts-go").disabled = false;
      $("tts-stop").disabled = true;
    }
  });
}
