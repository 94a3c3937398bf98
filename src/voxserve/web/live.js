// Live: the microphone streamed over a realtime WebSocket (docs: /work/shared contract).
// Transcription: GET /v1/realtime?intent=transcription, text turn by turn, settling then firm.
// Translation: GET /v1/realtime/translations?model=..., translated speech played as it comes.

import { apiKey, authHeaders, describe, errorText, showError } from "./api.js";
import { PcmPlayer, base64ToBytes, bytesToBase64 } from "./pcm.js";

const $ = (id) => document.getElementById(id);
const RATE = 24000;
const STANDARD_KINDS = new Set(["stt", "tts", "diarize"]);
let models = [];
let session = null;

const mode = () => document.querySelector('input[name="live-mode"]:checked').value;

function suggestModels() {
  const translating = mode() === "translate";
  // Live-translation models are whatever kind is not one of the file endpoints' kinds.
  const fit = models.filter((m) => (translating ? !STANDARD_KINDS.has(m.kind) : m.kind === "stt"));
  $("live-models").replaceChildren(...fit.map((m) => Object.assign(document.createElement("option"), { value: m.id })));
  const current = $("live-model").value;
  if (!fit.some((m) => m.id === current)) $("live-model").value = fit[0]?.id || "";
  $("live-target-label").hidden = !translating;
  $("live-translation").hidden = !translating;
}

/** The WebSocket subprotocols: an ephemeral secret when the server issues them, else the key. */
async function protocols(sessionConfig) {
  const key = apiKey();
  if (!key) return ["realtime"];
  let secret = key;
  try {
    const response = await fetch("/v1/realtime/client_secrets", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 600 }, session: sessionConfig }),
    });
    if (response.ok) secret = (await response.json()).value || key;
    else if (response.status !== 404) {
      throw new Error(errorText(response.status, response.statusText, await response.text()));
    }
  } catch (err) {
    if (err instanceof TypeError) throw new Error(`Could not reach the server (${err.message}).`);
    throw err;
  }
  return ["realtime", `openai-insecure-api-key.${secret}`];
}

function turn(itemId) {
  let item = document.querySelector(`#live-turns li[data-item="${CSS.escape(itemId)}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.item = itemId;
    item.innerHTML = '<span class="firm"></span><span class="settling"></span>';
    $("live-turns").append(item);
  }
  return item;
}

function transcriptionEvent(event) {
  switch (event.type) {
    case "input_audio_buffer.committed":
      turn(event.item_id);
      break;
    case "conversation.item.input_audio_transcription.delta":
      turn(event.item_id).querySelector(".settling").textContent += event.delta;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const item = turn(event.item_id);
      item.querySelector(".firm").textContent = event.transcript.trim();
      item.querySelector(".settling").textContent = "";
      item.classList.add("done");
      break;
    }
    case "conversation.item.input_audio_transcription.failed":
      turn(event.item_id).querySelector(".settling").textContent = `(failed: ${event.error?.message})`;
      break;
    default:
  }
}

function translationEvent(event) {
  switch (event.type) {
    case "session.output_audio.delta":
      session.player ||= new PcmPlayer(event.sample_rate || RATE);
      session.player.push(base64ToBytes(event.delta));
      break;
    case "session.output_transcript.delta":
      $("live-translated").textContent += event.delta;
      break;
    case "session.input_transcript.delta":
      turn("source").querySelector(".settling").textContent += event.delta;
      break;
    default:
  }
}

async function start() {
  const translating = mode() === "translate";
  const model = $("live-model").value.trim();
  if (!model) throw new Error("Choose a model first.");
  const language = $("live-language").value.trim();
  const transcription = { model, ...(language ? { language } : {}) };
  const config = translating
    ? { audio: { output: { language: $("live-target").value.trim() || "en" } } }
    : {
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcm", rate: RATE },
          transcription,
          turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
        },
      },
    };
  $("live-status").textContent = "Asking for the microphone…";
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext({ sampleRate: RATE });
  await context.audioWorklet.addModule("/playground/static/pcm-worklet.js");
  const capture = new AudioWorkletNode(context, "pcm-capture");
  session = { stream, context, capture, translating, socket: null, player: null };
  $("live-status").textContent = "Connecting…";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const path = translating
    ? `/v1/realtime/translations?model=${encodeURIComponent(model)}`
    : "/v1/realtime?intent=transcription";
  const socket = new WebSocket(`${scheme}://${location.host}${path}`, await protocols(config));
  session.socket = socket;
  const current = session;
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "session.update", session: config }));
    context.createMediaStreamSource(stream).connect(capture);
    // Chromium pulls audio only through nodes that reach the output; the capture node
    // writes nothing to its output, so this plays silence.
    capture.connect(context.destination);
    capture.port.onmessage = ({ data }) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      const audio = bytesToBase64(new Uint8Array(data));
      const type = translating ? "session.input_audio_buffer.append" : "input_audio_buffer.append";
      socket.send(JSON.stringify({ type, audio }));
    };
    $("live-status").textContent = "Listening… speak now.";
  };
  socket.onmessage = ({ data }) => {
    const event = JSON.parse(data);
    if (event.type === "error") {
      // An empty buffer at the final commit is expected, not worth a red box.
      if (event.error?.code !== "input_audio_buffer_commit_empty") showError($("live-error"), event.error?.message || "The server reported an error.");
      return;
    }
    (translating ? translationEvent : transcriptionEvent)(event);
    if (current.stopping && !translating && event.type.endsWith("transcription.completed")
        && !document.querySelector("#live-turns li:not(.done)")) socket.close(1000);
    document.dispatchEvent(new CustomEvent("live-event", { detail: event.type }));
  };
  socket.onerror = () => {
    if (current.stopping) return;
    showError($("live-error"), `The live session could not connect to ${path.split("?")[0]} (is it served here, and is the key right?).`);
  };
  socket.onclose = (event) => {
    release(current);
    if (!current.stopping && event.code !== 1000 && event.reason) showError($("live-error"), `The session ended: ${event.reason}`);
    $("live-status").textContent = "Stopped.";
    setButton(false);
  };
}

function release(s) {
  // Turns the server never finished (the session ended first) would stay as empty rows.
  for (const item of document.querySelectorAll("#live-turns li:not(.done)")) {
    if (!item.textContent.trim()) item.remove();
  }
  s.stream.getTracks().forEach((t) => t.stop());
  s.context.close().catch(() => {});
  s.player?.close();
  if (session === s) session = null;
}

/** Stop the microphone; let the server finish the last turn before closing. */
function stop() {
  const s = session;
  if (!s) return;
  s.stopping = true;
  s.stream.getTracks().forEach((t) => t.stop());
  const socket = s.socket;
  if (socket.readyState !== WebSocket.OPEN) { socket.close(); release(s); setButton(false); return; }
  $("live-status").textContent = "Finishing the last turn…";
  if (s.translating) socket.send(JSON.stringify({ type: "session.close" }));
  else socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  setTimeout(() => socket.close(1000), s.translating ? 3000 : 5000);
}

function setButton(running) {
  $("live-go").setAttribute("aria-pressed", String(running));
  $("live-go").textContent = running ? "Stop microphone" : "Start microphone";
}

export function initLive(onModels) {
  onModels((all) => { models = all; suggestModels(); });
  for (const radio of document.querySelectorAll('input[name="live-mode"]')) radio.addEventListener("change", suggestModels);
  $("live-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (session) { stop(); return; }
    showError($("live-error"), "");
    setButton(true);
    try {
      await start();
    } catch (err) {
      if (session) release(session);
      setButton(false);
      $("live-status").textContent = "";
      const text = err.name === "NotAllowedError" ? "The browser was not allowed to use the microphone." : err.message || describe(err);
      showError($("live-error"), text);
    }
  });
}
