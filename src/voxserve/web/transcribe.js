// Transcribe / translate a file: upload with progress, streamed text, segments, downloads.

import { authHeaders, describe, download, errorText, fillSelect, showError } from "./api.js";
import { parseCues, shortTime, toSrt, toVtt } from "./captions.js";

const $ = (id) => document.getElementById(id);
let models = [];
let file = null;
let audioUrl = null;
let result = null; // {text, segments, raw, rawType, format}

const model = () => models.find((m) => m.id === $("stt-model").value);

function pickFile(picked) {
  if (!picked) return;
  file = picked;
  $("stt-file-name").textContent = `${picked.name} (${(picked.size / 1024).toFixed(0)} KiB)`;
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(picked);
  $("stt-audio").src = audioUrl;
  showError($("stt-error"), "");
}

/** Offer only what the chosen model takes (formats, translation, timestamps, streaming). */
function applyModel() {
  const m = model();
  if (!m) return;
  const formats = m.formats.filter((f) => f !== "diarized_json" || m.diarize);
  const preferred = m.diarize ? "diarized_json" : "verbose_json";
  fillSelect($("stt-format"), formats, false);
  $("stt-format").value = formats.includes(preferred) ? preferred : formats[0];
  const translate = $("stt-task").querySelector('[value="translate"]');
  translate.disabled = !m.translations;
  if (!m.translations) $("stt-task").value = "transcribe";
  $("stt-stream").disabled = !m.stream;
  $("stt-stream-label").title = m.stream ? "" : "This model answers in one piece";
  $("stt-diarize").hidden = !m.diarize;
  applyTask();
  applyFormat();
}

/** Timestamp granularities are a verbose_json option. */
function applyFormat() {
  const verbose = $("stt-format").value === "verbose_json" && model()?.timestamps;
  for (const id of ["stt-ts-segment", "stt-ts-word"]) $(id).disabled = !verbose;
}

function applyTask() {
  const translating = $("stt-task").value === "translate";
  $("stt-go").textContent = translating ? "Translate" : "Transcribe";
  // Translations take no stream and no language (the output is English).
  $("stt-stream").disabled = translating || !model()?.stream;
  $("stt-language").disabled = translating;
}

function addSpeakerRow() {
  const n = $("speakers").children.length + 1;
  const row = document.createElement("div");
  row.className = "speaker-row";
  row.innerHTML = `<label>Name <input class="spk-name" value="speaker ${n}"></label>
    <label>Sample (2-10 s) <input class="spk-file" type="file" accept="audio/*"></label>
    <button type="button" class="secondary">Remove</button>`;
  row.querySelector("button").addEventListener("click", () => row.remove());
  $("speakers").append(row);
  row.querySelector(".spk-name").focus();
}

const dataUrl = (blob) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(blob);
});

async function buildForm() {
  const m = model();
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", m.id);
  const format = $("stt-format").value;
  form.append("response_format", format);
  const translating = $("stt-task").value === "translate";
  const language = $("stt-language").value.trim();
  if (language && !translating) form.append("language", language);
  if (m.timestamps && format === "verbose_json") {
    if ($("stt-ts-segment").checked) form.append("timestamp_granularities[]", "segment");
    if ($("stt-ts-word").checked) form.append("timestamp_granularities[]", "word");
  }
  const streaming = !translating && m.stream && $("stt-stream").checked;
  if (streaming) form.append("stream", "true");
  if (m.diarize && !translating) {
    for (const row of $("speakers").children) {
      const sample = row.querySelector(".spk-file").files[0];
      if (!sample) continue;
      form.append("known_speaker_names[]", row.querySelector(".spk-name").value.trim());
      form.append("known_speaker_references[]", await dataUrl(sample));
    }
  }
  return { form, streaming, path: translating ? "translations" : "transcriptions", format };
}

/** The complete events of a server-sent-events body so far (OpenAI frames them with CRLF). */
function sseEvents(text) {
  const blocks = text.split(/\r?\n\r?\n/);
  blocks.pop(); // what follows the last blank line is incomplete (or empty)
  const events = [];
  for (const block of blocks) {
    const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trim()).join("\n");
    if (data && data !== "[DONE]") events.push(JSON.parse(data));
  }
  return events;
}

function send({ form, streaming, path, format }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/audio/${path}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    const progress = $("stt-progress");
    progress.hidden = false;
    progress.removeAttribute("value"); // indeterminate until the browser reports bytes
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      progress.value = e.loaded / e.total;
      $("stt-status").textContent = `Uploading… ${Math.round((100 * e.loaded) / e.total)}%`;
    };
    xhr.upload.onload = () => {
      progress.removeAttribute("value");
      $("stt-status").textContent = streaming ? "Decoding… (text appears as it comes)" : "Decoding…";
    };
    let handled = 0;
    const live = { text: "", segments: [] };
    xhr.onprogress = () => {
      if (!streaming || xhr.status !== 200) return;
      const events = sseEvents(xhr.responseText);
      for (const event of events.slice(handled)) {
        if (event.type === "transcript.text.delta") live.text += event.delta;
        else if (event.type === "transcript.text.segment") {
          live.segments.push(event);
          live.text += (live.text ? " " : "") + event.text.trim();
        }
      }
      handled = events.length;
      render({ text: live.text, segments: live.segments, raw: xhr.responseText }, true);
    };
    xhr.onerror = () => reject(new Error("the connection to the server failed"));
    xhr.onload = () => {
      progress.hidden = true;
      const body = xhr.responseText;
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(new Error(errorText(xhr.status, xhr.statusText, body)));
        return;
      }
      try {
        resolve(streaming ? fromStream(body) : fromBody(body, format));
      } catch (err) {
        reject(err);
      }
    };
    xhr.send(form);
  });
}

function fromStream(body) {
  const events = sseEvents(`${body}\n\n`);
  const failure = events.find((e) => e.error);
  if (failure) throw new Error(`The server stopped with an error: ${failure.error.message}`);
  const segments = events.filter((e) => e.type === "transcript.text.segment");
  const done = events.find((e) => e.type === "transcript.text.done");
  const text = done ? done.text : events.map((e) => e.delta || "").join("");
  return { text, segments, raw: body, json: done || { text } };
}

function fromBody(body, format) {
  if (format === "text") return { text: body.trim(), segments: [], raw: body, json: { text: body.trim() } };
  if (format === "srt" || format === "vtt") {
    const segments = parseCues(body);
    const text = segments.map((s) => s.text).join(" ");
    return { text, segments, raw: body, json: { text, segments } };
  }
  const json = JSON.parse(body);
  return { text: json.text || "", segments: json.segments || [], raw: JSON.stringify(json, null, 2), json };
}

function render(res, partial = false) {
  result = partial ? result : res;
  $("stt-result").hidden = false;
  $("stt-text").textContent = res.text || (partial ? "…" : "(no speech found)");
  $("stt-raw").textContent = res.raw;
  const speakers = [...new Set(res.segments.map((s) => s.speaker).filter(Boolean))];
  const rows = res.segments.map((seg) => {
    const row = document.createElement("tr");
    row.tabIndex = 0;
    row.dataset.start = seg.start;
    const spk = seg.speaker ? `<span class="spk spk-${speakers.indexOf(seg.speaker) % 6}"></span>` : "";
    row.innerHTML = `<td class="time">${shortTime(seg.start)}</td><td class="time">${shortTime(seg.end)}</td><td>${spk}</td><td></td>`;
    if (seg.speaker) row.querySelector(".spk").textContent = seg.speaker;
    row.lastElementChild.textContent = seg.text.trim();
    row.setAttribute("aria-label", `Play from ${shortTime(seg.start)}: ${seg.text.trim()}`);
    return row;
  });
  $("stt-segments").tBodies[0].replaceChildren(...rows);
  $("stt-segments-box").hidden = rows.length === 0;
  for (const b of $("stt-downloads").querySelectorAll("[data-download]")) {
    const needsTimes = b.dataset.download === "srt" || b.dataset.download === "vtt";
    b.disabled = partial || (needsTimes && res.segments.length === 0);
    b.title = b.disabled && needsTimes ? "Needs segments: choose verbose_json, srt or vtt" : "";
  }
}

function playFrom(row) {
  const audio = $("stt-audio");
  audio.currentTime = Number(row.dataset.start);
  audio.play().catch(() => {}); // a browser may refuse to play without a gesture
}

function saveAs(kind) {
  if (!result) return;
  const base = (file?.name || "transcript").replace(/\.[^.]+$/, "");
  const content = {
    txt: () => [`${result.text}\n`, "text/plain"],
    srt: () => [toSrt(result.segments), "application/x-subrip"],
    vtt: () => [toVtt(result.segments), "text/vtt"],
    json: () => [JSON.stringify(result.json, null, 2), "application/json"],
  }[kind]();
  download(`${base}.${kind}`, content[0], content[1]);
}

export function initTranscribe(onModels) {
  onModels((all) => {
    models = all.filter((m) => m.kind === "stt");
    fillSelect($("stt-model"), models.map((m) => m.id));
    if (!models.some((m) => m.id === $("stt-model").value) && models.length) $("stt-model").value = models[0].id;
    applyModel();
  });
  $("stt-model").addEventListener("change", applyModel);
  $("stt-task").addEventListener("change", applyTask);
  $("stt-format").addEventListener("change", applyFormat);
  $("stt-file").addEventListener("change", (e) => pickFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (e.target !== $("stt-file")) $("stt-file").click(); });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("stt-file").click(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pickFile(e.dataTransfer.files[0]);
  });
  $("add-speaker").addEventListener("click", addSpeakerRow);
  const body = $("stt-segments").tBodies[0];
  body.addEventListener("click", (e) => { const row = e.target.closest("tr"); if (row) playFrom(row); });
  body.addEventListener("keydown", (e) => {
    const row = e.target.closest("tr");
    if (row && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); playFrom(row); }
  });
  for (const b of $("stt-downloads").querySelectorAll("[data-download]")) {
    b.addEventListener("click", () => saveAs(b.dataset.download));
  }
  $("stt-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError($("stt-error"), "");
    if (!file) { showError($("stt-error"), "Choose an audio file first."); return; }
    if (!model()) { showError($("stt-error"), "No speech-to-text model is available."); return; }
    $("stt-go").disabled = true;
    try {
      const request = await buildForm();
      const started = performance.now();
      render(await send(request));
      $("stt-status").textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
    } catch (err) {
      $("stt-status").textContent = "";
      $("stt-progress").hidden = true;
      showError($("stt-error"), err.message || describe(err));
    } finally {
      $("stt-go").disabled = false;
    }
  });
}
