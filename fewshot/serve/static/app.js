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
    const error = new Error(err.message + (err.field ? " (" + err.field + ")" : "") + hint);
    error.status = response.status;
    error.code = err.code;
    throw error;
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

// one labelled bar: the width is the score, clipped to [0, 1]; the name is isolated from any suffix (a hit's
// id), so that a right-to-left label does not carry the suffix's punctuation to its other side
function bar(name, score, best, suffix = "") {
  const row = document.createElement("div");
  row.className = "row" + (best ? " best" : "");
  row.dataset.label = name;
  row.dataset.score = String(score);
  const label = document.createElement("span");
  label.className = "name";
  const bdi = document.createElement("bdi");
  bdi.textContent = name;
  label.append(bdi, suffix);
  label.title = name + suffix;
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

// One request of a panel at a time: its button is marked busy while it runs (a click or Enter then does
// nothing) and the previous answer is cleared, so what is shown answers the last question asked; should a newer
// request start anyway, an older answer coming back after it is dropped. The button is marked with
// aria-disabled rather than disabled: a disabled button loses the keyboard focus, and a screen reader its place.
const latest = {};

function busy(panel) {
  return $(panel + "-go").getAttribute("aria-disabled") === "true";
}

async function run(panel, work) {
  if (busy(panel)) return;
  const out = $(panel + "-out");
  const button = $(panel + "-go");
  const ticket = (latest[panel] = (latest[panel] || 0) + 1);
  out.dataset.state = "loading";
  button.setAttribute("aria-disabled", "true");
  clear(out);
  note(out, "working…");
  try {
    const render = await work();
    if (ticket === latest[panel]) render(out);
  } catch (e) {
    if (ticket === latest[panel]) showError(out, e);
  } finally {
    if (ticket === latest[panel]) {
      button.removeAttribute("aria-disabled");
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

// A request with an image that the server finds too large (its body limit counts the image's base64, a third
// more than the file) is sent again with the image shrunk, at most twice; the answer says so.
const SHRINK_SIDES = [1024, 512];

async function shrink(dataUrl, side) {
  const img = new Image();
  img.src = dataUrl;
  await img.decode();
  const scale = Math.min(1, side / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return { url: canvas.toDataURL("image/jpeg", 0.9), size: canvas.width + "×" + canvas.height };
}

async function callWithImage(path, body, field, image) {
  let sent = null;
  for (let attempt = 0; ; attempt++) {
    try {
      const data = await call("POST", path, body);
      return { data, shrunk: sent };
    } catch (e) {
      const tooLarge = e.status === 413 && e.code === "body_too_large";
      if (!image || !tooLarge || attempt >= SHRINK_SIDES.length) {
        if (sent) e.message += " (the image was sent shrunk to " + sent + " px, to fit the server's request limit)";
        throw e;
      }
      let small;
      try {
        small = await shrink(image, SHRINK_SIDES[attempt]);
      } catch (decodeError) {
        throw e; // not an image the browser can draw: the server's own refusal stands
      }
      body[field] = [small.url];
      sent = small.size;
    }
  }
}

function shrunkNote(render, shrunk) {
  return (out) => {
    render(out);
    if (shrunk) note(out, "the image was sent shrunk to " + shrunk + " px, to fit the server's request limit");
  };
}

// Labels separated by commas, or by semicolons where a label has a description after a colon that holds commas
// ("bird: has feathers, a beak; fish: has fins"), as the API takes them.
function parseLabels(value) {
  const separator = value.includes(";") ? ";" : ",";
  const labels = value.split(separator).map((s) => s.trim()).filter((s) => s);
  const described = labels.filter((s) => s.includes(":")).length;
  if (separator === "," && described && described < labels.length) {
    throw new Error(
      "some labels have a description after a colon and some do not; if a description holds commas, separate " +
        "the labels with semicolons (bird: has feathers, a beak; fish: has fins)"
    );
  }
  return labels;
}

function tag() {
  return run("zs", async () => {
    const text = $("zs-text").value.trim();
    const labels = parseLabels($("zs-labels").value);
    if (!text) throw new Error("type a text to tag");
    if (!labels.length) throw new Error("type at least one label");
    const multi = $("zs-multi").checked;
    const data = await call("POST", "/v1/zeroshot", { inputs: [text], labels, multi_label: multi });
    return (out) => showScores(out, data.predictions[0]);
  });
}

// the saved model or index a select names, or the reason the list could not be read; the list is read again
// first when it was read with another API key than the one typed now (a key typed and not yet left) or failed,
// and a choice that reading drops is said to be gone rather than silently replaced by another
async function chosen(select, none) {
  const before = select.value;
  if (select.dataset.error !== undefined || select.dataset.key !== apiKey()) await LISTS[select.id]();
  if (before && select.value !== before && select.dataset.error === undefined) {
    throw new Error(`"${before}" is no longer on the server; choose another from the list, read again`);
  }
  if (select.value) return select.value;
  throw new Error(select.dataset.error || none);
}

// a model or index deleted since the list was read: the list is read again, so it no longer offers it
function refreshIfGone(e) {
  if (e.status === 404) refreshLists();
  throw e;
}

function classify() {
  return run("clf", async () => {
    const model = await chosen($("clf-model"), "no saved model to classify with");
    const image = await readImage($("clf-image"));
    const input = image || $("clf-text").value.trim();
    if (!input) throw new Error("type a text or choose an image");
    const path = "/v1/models/" + encodeURIComponent(model) + "/predict";
    const { data, shrunk } = await callWithImage(path, { inputs: [input] }, "inputs", image).catch(refreshIfGone);
    return shrunkNote((out) => showScores(out, data.predictions[0]), shrunk);
  });
}

function search() {
  return run("search", async () => {
    const index = await chosen($("search-index"), "no saved index to search");
    const image = await readImage($("search-image"));
    const query = image || $("search-query").value.trim();
    if (!query) throw new Error("type a query or choose an image");
    const field = $("search-k");
    if (field.validity.badInput) throw new Error("Hits takes a whole number, such as 5");
    const kText = field.value.trim();
    const k = kText === "" ? 5 : Number(kText); // the server checks it (1 to 1000)
    const path = "/v1/indexes/" + encodeURIComponent(index) + "/search";
    const { data, shrunk } = await callWithImage(path, { queries: [query], k }, "queries", image).catch(refreshIfGone);
    return shrunkNote((out) => showHits(out, data.results[0]), shrunk);
  });
}

function showHits(out, hits) {
    clear(out);
    if (!hits.length) note(out, "no hits");
    hits.forEach((h, i) => {
      const div = document.createElement("div");
      div.className = "hit";
      const label = h.label === null ? "" : String(h.label);
      div.appendChild(bar(label, h.score, i === 0, (label ? " · " : "") + "#" + h.id));
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = h.text === null ? "(image)" : h.text;
      text.dir = "auto";
      div.appendChild(text);
      out.appendChild(div);
    });
}

function apiKey() {
  return $("api-key").value.trim();
}

const listing = {};

// Read a select's list again, keeping the choice where it is still listed. A damaged save is listed (the API
// lists it, so that it can be deleted) but cannot be chosen.
async function fill(select, path, key) {
  const ticket = (listing[select.id] = (listing[select.id] || 0) + 1); // a newer listing (a new key) wins
  const keep = select.value;
  const usedKey = apiKey();
  try {
    const data = await call("GET", path);
    if (ticket !== listing[select.id]) return;
    clear(select);
    delete select.dataset.error;
    data[key].forEach((entry) => {
      const option = document.createElement("option");
      const damaged = entry.unreadable === true || entry.type === "unreadable";
      option.value = entry.name;
      option.textContent = entry.name + (damaged ? " (unreadable)" : "");
      option.disabled = damaged;
      select.appendChild(option);
    });
    const readable = Array.from(select.options).filter((o) => !o.disabled);
    select.value = readable.some((o) => o.value === keep) ? keep : readable.length ? readable[0].value : "";
    if (!readable.length && select.options.length) {
      select.dataset.error = "every saved " + key.replace(/es$|s$/, "") + " here is unreadable (a damaged save)";
    }
  } catch (e) {
    if (ticket !== listing[select.id]) return;
    clear(select);
    select.dataset.error = "cannot list them: " + e.message;
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "(cannot list them)";
    select.appendChild(option);
  }
  select.dataset.key = usedKey;
}

const LISTS = {
  "clf-model": () => fill($("clf-model"), "/v1/models", "models"),
  "search-index": () => fill($("search-index"), "/v1/indexes", "indexes"),
};

function refreshLists() {
  return Promise.all(Object.values(LISTS).map((list) => list()));
}

document.addEventListener("DOMContentLoaded", () => {
  const stored = sessionStorage.getItem("fewshot-api-key");
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("fewshot-api-key", apiKey());
    refreshLists();
  });
  // models and indexes made or deleted elsewhere (a script, the CLI) show when the user comes back to the page
  window.addEventListener("focus", () => refreshLists());
  $("zs-go").addEventListener("click", tag);
  $("clf-go").addEventListener("click", classify);
  $("search-go").addEventListener("click", search);
  // Enter in a one-line field asks, as does Ctrl+Enter in a text box; a busy panel ignores it
  const submit = { "zs-text": tag, "zs-labels": tag, "clf-text": classify, "search-query": search, "search-k": search };
  Object.entries(submit).forEach(([id, action]) => {
    $(id).addEventListener("keydown", (e) => {
      const multiline = $(id).tagName === "TEXTAREA";
      const panel = id.split("-")[0];
      if (e.key === "Enter" && (!multiline || e.ctrlKey || e.metaKey) && !busy(panel)) {
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
