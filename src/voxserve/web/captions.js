// Segments <-> subtitle text. Segments are {start, end, text, speaker?} in seconds.

function clock(seconds, separator) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(ms % 1000, 3)}`;
}

/** A short clock for the table: m:ss.t */
export function shortTime(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - m * 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

const label = (seg) => (seg.speaker ? `${seg.speaker}: ` : "");

export function toSrt(segments) {
  return segments.map((seg, i) =>
    `${i + 1}\n${clock(seg.start, ",")} --> ${clock(seg.end, ",")}\n${label(seg)}${seg.text.trim()}\n`,
  ).join("\n");
}

export function toVtt(segments) {
  const cues = segments.map((seg) =>
    `${clock(seg.start, ".")} --> ${clock(seg.end, ".")}\n${label(seg)}${seg.text.trim()}\n`);
  return ["WEBVTT\n", ...cues].join("\n");
}

function parseClock(text) {
  const parts = text.trim().replace(",", ".").split(":").map(Number);
  return parts.reduce((total, part) => total * 60 + part, 0);
}

/** Cues of an SRT or WebVTT document as segments (what the server sends for srt/vtt). */
export function parseCues(text) {
  const segments = [];
  for (const block of text.replace(/\r/g, "").split(/\n\n+/)) {
    const lines = block.split("\n");
    const at = lines.findIndex((line) => line.includes("-->"));
    if (at < 0) continue;
    const [start, end] = lines[at].split("-->");
    segments.push({
      start: parseClock(start),
      end: parseClock(end.trim().split(/\s/)[0]),
      text: lines.slice(at + 1).join(" ").trim(),
    });
  }
  return segments;
}
