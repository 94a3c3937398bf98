// The playground's shell: tabs, the API key field, and the model list every tab draws from.

import { apiJson, apiKey, describe, setApiKey, showError } from "./api.js";
import { initLive } from "./live.js";
import { initServer } from "./server.js";
import { initSpeak } from "./speak.js";
import { initTranscribe } from "./transcribe.js";

const $ = (id) => document.getElementById(id);
const tabs = [...document.querySelectorAll('[role="tab"]')];
const listeners = [];

function selectTab(tab, focus = true) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  const name = tab.id.replace("tab-", "");
  history.replaceState(null, "", `#${name}`);
  document.dispatchEvent(new CustomEvent("tabchange", { detail: name }));
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const i = tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  });
}

/** Every model with what it can do; tabs re-fill their pickers when it changes. */
async function loadModels() {
  try {
    const { data } = await apiJson("/playground/models");
    showError($("global-error"), "");
    for (const listener of listeners) listener(data);
  } catch (err) {
    const hint = apiKey() ? "" : "\nThis server may need an API key: enter it above.";
    showError($("global-error"), `Could not list the models. ${describe(err)}${hint}`);
    for (const listener of listeners) listener([]);
  }
}

const onModels = (listener) => listeners.push(listener);

$("api-key").value = apiKey();
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey($("api-key").value.trim());
  loadModels();
});

initTranscribe(onModels);
initSpeak(onModels);
initLive(onModels);
initServer();

const initial = tabs.find((t) => t.id === `tab-${location.hash.slice(1)}`) || tabs[0];
selectTab(initial, false);
loadModels();
