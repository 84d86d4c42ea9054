// The page behind GET /: plain JavaScript, no build step, nothing fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : { message: response.statusText, code: String(response.status) };
    throw new Error(err.message + (err.field ? " (" + err.field + ")" : ""));
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
  Object.entries(prediction.scores)
    .sort((a, b) => b[1] - a[1])
    .forEach(([name, p]) => out.appendChild(bar(name, p, prediction.label !== null && name === String(prediction.label))));
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

async function tag() {
  const out = $("zs-out");
  out.dataset.state = "loading";
  try {
    const text = $("zs-text").value.trim();
    const labels = $("zs-labels").value.split(",").map((s) => s.trim()).filter((s) => s);
    if (!text) throw new Error("type a text to tag");
    if (!labels.length) throw new Error("type at least one label");
    const multi = $("zs-multi").checked;
    const data = await call("POST", "/v1/zeroshot", { inputs: [text], labels, multi_label: multi });
    showScores(out, data.predictions[0]);
  } catch (e) {
    showError(out, e);
  } finally {
    out.dataset.state = "done";
  }
}

async function classify() {
  const out = $("clf-out");
  out.dataset.state = "loading";
  try {
    const model = $("clf-model").value;
    if (!model) throw new Error("no saved model to classify with");
    const image = await readImage($("clf-image"));
    const input = image || $("clf-text").value.trim();
    if (!input) throw new Error("type a text or choose an image");
    const data = await call("POST", "/v1/models/" + encodeURIComponent(model) + "/predict", { inputs: [input] });
    showScores(out, data.predictions[0]);
  } catch (e) {
    showError(out, e);
  } finally {
    out.dataset.state = "done";
  }
}

async function search() {
  const out = $("search-out");
  out.dataset.state = "loading";
  try {
    const index = $("search-index").value;
    if (!index) throw new Error("no saved index to search");
    const image = await readImage($("search-image"));
    const query = image || $("search-query").value.trim();
    if (!query) throw new Error("type a query or choose an image");
    const kText = $("search-k").value.trim();
    const k = kText === "" ? 5 : Number(kText); // the server checks it (1 to 1000)
    const data = await call("POST", "/v1/indexes/" + encodeURIComponent(index) + "/search", { queries: [query], k });
    clear(out);
    const hits = data.results[0];
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
  } catch (e) {
    showError(out, e);
  } finally {
    out.dataset.state = "done";
  }
}

async function fill(select, path, key) {
  try {
    const data = await call("GET", path);
    clear(select);
    data[key].forEach((entry) => {
      const option = document.createElement("option");
      option.value = entry.name;
      option.textContent = entry.name;
      select.appendChild(option);
    });
  } catch (e) {
    clear(select);
    const option = document.createElement("option");
    option.value = "";
    option.textContent = e.message;
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
  $("search-query").addEventListener("keydown", (e) => {
    if (e.key === "Enter") search();
  });
  refreshLists();
});
