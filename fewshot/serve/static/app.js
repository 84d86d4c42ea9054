// The page behind GET /: plain JavaScript, no build step, nothing fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  // a header carries Latin-1 only; the browser would throw its own puzzling message
  if (key && !/^[\x21-\x7e]+$/.test(key)) throw new Error("the API key may hold only printable ASCII characters");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(method, path, body) {
  const init = { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Error("cannot reach the fewshot server at " + location.origin + "; is it running? (" + e.message + ")");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : { message: response.statusText, code: String(response.status) };
    const hint = response.status === 401 ? " Type a key in the API key field at the top of the page." : "";
    throw new Error(err.message + (err.field ? " (" + err.field + ")" : "") + hint);
  }
  return data;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function showError(out, error) {
  clear(out);
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = error.message;
  out.appendChild(p);
}

function note(out, text) {
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = text;
  out.appendChild(p);
}

// one labelled bar: the width is the score, clipped to [0, 1]
function bar(name, score, best) {
  const row = document.createElement("div");
  row.className = "row" + (best ? " best" : "");
  row.dataset.label = name;
  row.dataset.score = String(score);
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  label.title = name;
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  fill.className = "bar";
  fill.style.width = (Math.max(0, Math.min(1, score)) * 100).toFixed(1) + "%";
  track.appendChild(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = score.toFixed(3);
  row.append(label, track, value);
  return row;
}

function showScores(out, prediction) {
  clear(out);
  if (prediction.tags) {
    if (!prediction.tags.length) note(out, "no label passes the threshold");
    prediction.tags.forEach((t, i) => out.appendChild(bar(t.label, t.score, i === 0)));
    return;
  }
  if (prediction.label === null) note(out, "none of these (the model abstains)");
  Object.entries(prediction.probabilities)
    .sort((a, b) => b[1] - a[1])
    .forEach(([name, p]) => out.appendChild(bar(name, p, prediction.label !== null && name === String(prediction.label))));
}

// One request of a panel at a time: its button is disabled while it runs (Enter too waits) and the previous
// answer is cleared, so what is shown answers the last question asked; should a newer request start anyway,
// an older answer coming back after it is dropped.
const latest = {};

async function run(panel, work) {
  const out = $(panel + "-out");
  const button = $(panel + "-go");
  const ticket = (latest[panel] = (latest[panel] || 0) + 1);
  out.dataset.state = "loading";
  button.disabled = true;
  clear(out);
  note(out, "working…");
  try {
    const render = await work();
    if (ticket === latest[panel]) render(out);
  } catch (e) {
    if (ticket === latest[panel]) showError(out, e);
  } finally {
    if (ticket === latest[panel]) {
      button.disabled = false;
      out.dataset.state = "done";
    }
  }
}

function readImage(input) {
  return new Promise((resolve, reject) => {
    const file = input.files && input.files[0];
    if (!file) return resolve(null);
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(new Error("cannot read " + file.name));
    reader.readAsDataURL(file);
  });
}

function tag() {
  return run("zs", async () => {
    const text = $("zs-text").value.trim();
    const labels = $("zs-labels").value.split(",").map((s) => s.trim()).filter((s) => s);
    if (!text) throw new Error("type a text to tag");
    if (!labels.length) throw new Error("type at least one label");
    const multi = $("zs-multi").checked;
    const data = await call("POST", "/v1/zeroshot", { inputs: [text], labels, multi_label: multi });
    return (out) => showScores(out, data.predictions[0]);
  });
}

// the saved model or index a select names, or the reason the list could not be read
function chosen(select, none) {
  if (select.value) return select.value;
  throw new Error(select.dataset.error || none);
}

function classify() {
  return run("clf", async () => {
    const model = chosen($("clf-model"), "no saved model to classify with");
    const image = await readImage($("clf-image"));
    const input = image || $("clf-text").value.trim();
    if (!input) throw new Error("type a text or choose an image");
    const data = await call("POST", "/v1/models/" + encodeURIComponent(model) + "/predict", { inputs: [input] });
    return (out) => showScores(out, data.predictions[0]);
  });
}

function search() {
  return run("search", async () => {
    const index = chosen($("search-index"), "no saved index to search");
    const image = await readImage($("search-image"));
    const query = image || $("search-query").value.trim();
    if (!query) throw new Error("type a query or choose an image");
    const kText = $("search-k").value.trim();
    const k = kText === "" ? 5 : Number(kText); // the server checks it (1 to 1000)
    const data = await call("POST", "/v1/indexes/" + encodeURIComponent(index) + "/search", { queries: [query], k });
    return (out) => showHits(out, data.results[0]);
  });
}

function showHits(out, hits) {
    clear(out);
    if (!hits.length) note(out, "no hits");
    hits.forEach((h, i) => {
      const div = document.createElement("div");
      div.className = "hit";
      div.appendChild(bar((h.label === null ? "" : h.label + " · ") + "#" + h.id, h.score, i === 0));
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = h.text === null ? "(image)" : h.text;
      div.appendChild(text);
      out.appendChild(div);
    });
}

const listing = {};

async function fill(select, path, key) {
  const ticket = (listing[select.id] = (listing[select.id] || 0) + 1); // a newer listing (a new key) wins
  try {
    const data = await call("GET", path);
    if (ticket !== listing[select.id]) return;
    clear(select);
    delete select.dataset.error;
    data[key].forEach((entry) => {
      const option = document.createElement("option");
      option.value = entry.name;
      option.textContent = entry.name;
      select.appendChild(option);
    });
  } catch (e) {
    if (ticket !== listing[select.id]) return;
    clear(select);
    select.dataset.error = "cannot list them: " + e.message;
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "(cannot list them)";
    select.appendChild(option);
  }
}

function refreshLists() {
  fill($("clf-model"), "/v1/models", "models");
  fill($("search-index"), "/v1/indexes", "indexes");
}

document.addEventListener("DOMContentLoaded", () => {
  const stored = sessionStorage.getItem("fewshot-api-key");
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("fewshot-api-key", $("api-key").value.trim());
    refreshLists();
  });
  $("zs-go").addEventListener("click", tag);
  $("clf-go").addEventListener("click", classify);
  $("search-go").addEventListener("click", search);
  // Enter in a one-line field asks, as does Ctrl+Enter in a text box; a busy panel ignores it
  const submit = { "zs-text": tag, "zs-labels": tag, "clf-text": classify, "search-query": search, "search-k": search };
  Object.entries(submit).forEach(([id, action]) => {
    $(id).addEventListener("keydown", (e) => {
      const multiline = $(id).tagName === "TEXTAREA";
      const panel = id.split("-")[0];
      if (e.key === "Enter" && (!multiline || e.ctrlKey || e.metaKey) && !$(panel + "-go").disabled) {
        e.preventDefault();
        action();
      }
    });
  });
  // a text or an image, never both: choosing one clears the other
  [["clf-text", "clf-image"], ["search-query", "search-image"]].forEach(([text, image]) => {
    $(text).addEventListener("input", () => ($(image).value = ""));
    $(image).addEventListener("change", () => ($(text).value = ""));
  });
  refreshLists();
});
