// The search page: plain JavaScript over the /api/v1 JSON API (no build step, no dependencies).
// Data is put into the page with textContent only, never as markup: uris and metadata are user data.
"use strict";

const TOKEN_KEY = "simsearch-token";
const THUMB = 256; // thumbnail size of the grids
const QUERY_THUMB = 512; // a stored query image's
// images per page of the browser; ?page_size=N in the page's URL changes it (1 to 1000)
const PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get("page_size")) || 24));

const state = {
  services: [],
  service: null,
  settings: null,
  query: null, // {kind: "file", file, src} | {kind: "stored", imageId, uri, width, height} | {kind: "url", url}
  urls: { results: [], browse: [], query: [] }, // object URLs to revoke when their view is redrawn
  cursors: [null], // the browser's keyset cursors: cursors[i] starts page i
  page: 0,
};

const $ = (id) => document.getElementById(id);

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401) throw new AuthError(await problemText(response));
  if (!response.ok) throw new Error(await problemText(response));
  return response.json();
}

async function problemText(response) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("aria-") || key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function revoke(view) {
  for (const url of state.urls[view]) URL.revokeObjectURL(url);
  state.urls[view] = [];
}

// ---- authentication: the page shows nothing until the API accepts the token (or needs none)

function showAuth(message) {
  $("main").hidden = true;
  $("service").replaceChildren();
  $("service-info").replaceChildren();
  $("results").replaceChildren();
  $("browse").replaceChildren();
  $("query").hidden = true;
  for (const view of Object.keys(state.urls)) revoke(view);
  state.services = [];
  state.service = null;
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  $("forget-token").hidden = token() === null;
  $("token").focus();
}

async function start() {
  try {
    const [services, settings] = await Promise.all([api("/api/v1/services"), api("/ui/settings")]);
    state.services = services;
    state.settings = settings;
  } catch (error) {
    if (error instanceof AuthError) {
      showAuth(token() ? "That token was refused: " + error.message : "");
      return;
    }
    $("auth").hidden = true;
    $("main").hidden = false;
    showError(error);
    return;
  }
  $("auth").hidden = true;
  $("main").hidden = false;
  $("forget-token").hidden = token() === null;
  $("url-row").hidden = !state.settings.allow_urls;
  fillServices();
}

function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (error) {
      if (error instanceof AuthError) showAuth("The token was refused: " + error.message);
      else showError(error);
    }
  };
}

function showError(error) {
  $("status").textContent = "";
  $("error").textContent = error.message || String(error);
}

// ---- services

function fillServices() {
  const select = $("service");
  select.replaceChildren(...state.services.map((s) => el("option", { value: s.name, text: s.name })));
  if (state.services.length === 0) {
    $("service-info").replaceChildren(el("dd", { text: "No service yet: create one with the API or the CLI." }));
    return;
  }
  const remembered = sessionStorage.getItem("simsearch-service");
  if (state.services.some((s) => s.name === remembered)) select.value = remembered;
  guarded(chooseService)();
}

async function chooseService() {
  const name = $("service").value;
  sessionStorage.setItem("simsearch-service", name);
  state.service = state.services.find((s) => s.name === name) || null;
  if (!state.service) return;
  showService(state.service);
  fillDetectors();
  state.cursors = [null];
  state.page = 0;
  const form = $("search-form");
  form.setAttribute("aria-busy", "true"); // until the search options fit the service
  try {
    if (!$("browse-view").hidden) await loadBrowse();
    await guessObjects(state.service);
  } finally {
    if (state.service?.name === name) form.setAttribute("aria-busy", "false");
  }
}

function showService(s) {
  const index = s.index;
  const facts = [
    ["Model", `${s.model} (${s.weights})`],
    ["Kind", s.kind],
    ["Metric", s.metric],
    ["Dimension", String(s.dimension)],
    ["Vectors", String(index.vectors)],
    ["Generation", index.generation === null ? "none built (exact search)" : `${index.generation} (${index.backend} ${index.index_type})`],
  ];
  $("service-info").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function fillDetectors() {
  const own = state.service.kind === "detector" && state.service.dimension > 0;
  const options = own ? [el("option", { value: "", text: "this service's own boxes" })] : [];
  for (const s of state.services.filter((x) => x.kind === "detector")) {
    if (s.name !== state.service.name) options.push(el("option", { value: s.name, text: s.name }));
  }
  $("detector").replaceChildren(...options);
}

// Whether the service stores objects, and which detector found them: from its first image's boxes.
async function guessObjects(service) {
  let mode = service.kind === "detector" && service.dimension > 0 ? "objects" : "images";
  if (mode === "images") {
    const page = await api(`/api/v1/images?service=${encodeURIComponent(service.name)}&limit=1`);
    if (page.items.length > 0) {
      const boxes = await api(`/api/v1/images/${page.items[0].id}/objects`);
      const embedded = boxes.find((o) => o.embedded_by.includes(service.name));
      if (embedded) {
        mode = "objects";
        $("detector").value = embedded.detector;
      }
    }
  }
  if (state.service !== service) return; // another service was chosen meanwhile
  document.querySelector(`input[name=mode][value=${mode}]`).checked = true;
  showModeOptions();
}

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function showModeOptions() {
  $("object-options").hidden = mode() !== "objects";
  $("score").disabled = $("view").value !== "ranking";
}

// ---- the query and the search

function setQuery(query) {
  revoke("query");
  state.query = query;
  const frame = $("query-frame");
  const img = el("img", { alt: "" });
  frame.replaceChildren(img);
  $("query").hidden = false;
  if (query.kind === "file") {
    const src = URL.createObjectURL(query.file);
    state.urls.query.push(src);
    img.src = src;
    img.alt = `Query image: ${query.file.name}`;
    $("query-caption").textContent = `Query: ${query.file.name}`;
  } else if (query.kind === "stored") {
    img.alt = `Query image: ${query.uri}`;
    loadThumb(img, query.imageId, QUERY_THUMB, "query");
    $("query-caption").textContent = `Query: image ${query.imageId}, ${query.uri}`;
  } else {
    img.src = ""; // the server fetches the URL; the page does not load it from elsewhere
    img.remove();
    $("query-caption").textContent = `Query: ${query.url}`;
  }
}

// The query image's size, for drawing its boxes: the stored one's, or the decoded file's.
async function querySize() {
  const q = state.query;
  if (q.kind === "stored") return { width: q.width, height: q.height };
  const img = $("query-frame").querySelector("img");
  if (!img) return null;
  if (!img.complete || img.naturalWidth === 0) {
    await new Promise((resolve) => img.addEventListener("load", resolve, { once: true }));
  }
  return { width: img.naturalWidth, height: img.naturalHeight };
}

function options() {
  const k = Number($("k").value);
  if (!Number.isInteger(k) || k < 1) throw new Error("k: give a whole number of results, at least 1");
  const raw = $("filter").value.trim();
  let filter = null;
  if (raw) {
    try {
      filter = JSON.parse(raw);
    } catch {
      throw new Error('filter: not JSON; write an object such as {"label": "cat"}');
    }
  }
  const objects = {
    detector: $("detector").value || null,
    crop: { padding_ratio: Number($("padding").value) || 0 },
    confidence_threshold: Number($("threshold").value) || 0,
    k,
    filter,
  };
  return { k, filter, objects, view: $("view").value, score: $("score").value };
}

function withoutNulls(values) {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== null && v !== undefined));
}

function asForm(file, values) {
  const form = new FormData();
  form.append("file", file);
  for (const [key, value] of Object.entries(withoutNulls(values))) {
    form.append(key, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  return form;
}

// One request: whole images (search), images ranked by objects (similar-objects), or objects per query object.
function request(service, query, o) {
  const base = `/api/v1/services/${encodeURIComponent(service)}`;
  const image = query.kind === "url" ? query.url : query.uri; // a stored image by its path (objects need an image)
  if (mode() === "images") {
    if (query.kind === "file") return [`${base}/search/upload`, { form: asForm(query.file, { k: o.k, filter: o.filter }) }];
    const json = query.kind === "stored" ? { image_id: query.imageId } : { image: query.url };
    return [`${base}/search`, { json: withoutNulls({ ...json, k: o.k, filter: o.filter }) }];
  }
  const ranking = o.view === "ranking";
  const fields = ranking ? { ...o.objects, score: o.score, limit: o.k } : o.objects;
  const path = ranking ? `${base}/images/similar-objects` : `${base}/objects/search`;
  if (query.kind === "file") return [`${path}/upload`, { form: asForm(query.file, fields) }];
  return [path, { json: withoutNulls({ ...fields, image }) }];
}

async function search() {
  if (!state.service) throw new Error("choose a service first");
  if (!state.query) throw new Error("choose, drop or paste an image first");
  const o = options();
  const [path, init] = request(state.service.name, state.query, o);
  $("error").textContent = "";
  $("status").textContent = "Searching…";
  $("search-button").disabled = true;
  const started = performance.now();
  let answer;
  try {
    answer = await api(path, { method: "POST", ...init });
  } finally {
    $("search-button").disabled = false;
  }
  const ms = Math.round(performance.now() - started);
  const generation = answer.generation === null ? "exact search" : `generation ${answer.generation}`;
  revoke("results");
  if (answer.results) {
    drawQueryBoxes([]);
    showHits(answer.results);
    $("status").textContent = `${answer.results.length} nearest images · ${generation} · ${ms} ms`;
  } else if (answer.images) {
    drawQueryBoxes(answer.query_objects.map((q) => q.bbox));
    showRanking(answer);
    $("status").textContent = `${answer.query_objects.length} query objects · ${answer.images.length} images · ${generation} · ${ms} ms`;
  } else {
    drawQueryBoxes(answer.query_objects.map((q) => q.bbox));
    showObjectHits(answer);
    $("status").textContent = `${answer.query_objects.length} query objects · ${generation} · ${ms} ms`;
  }
}

async function drawQueryBoxes(boxes) {
  const frame = $("query-frame");
  frame.querySelectorAll(".box").forEach((b) => b.remove());
  if (boxes.length === 0) return;
  const size = await querySize();
  if (size) boxes.forEach((b, i) => frame.append(boxDiv(b, size, `${i + 1}`)));
}

function boxDiv(bbox, size, label) {
  const [xmin, ymin, xmax, ymax] = bbox;
  const box = el("span", { class: "box", "aria-hidden": "true", "data-label": label });
  box.style.left = `${(100 * xmin) / size.width}%`;
  box.style.top = `${(100 * ymin) / size.height}%`;
  box.style.width = `${(100 * (xmax - xmin)) / size.width}%`;
  box.style.height = `${(100 * (ymax - ymin)) / size.height}%`;
  return box;
}

// ---- result cards

function card(view, image, { lines = [], boxes = [], caption = "" } = {}) {
  const img = el("img", { alt: `image ${image.image_id}: ${image.uri}`, loading: "lazy" });
  const frame = el("span", { class: "frame" }, img);
  const size = { width: image.width, height: image.height };
  boxes.forEach(([bbox, label]) => frame.append(boxDiv(bbox, size, label)));
  loadThumb(img, image.image_id, THUMB, view);
  const button = el("button", {
    type: "button",
    class: "hit",
    title: "More like this",
    "aria-label": `More like this: image ${image.image_id}, ${image.uri}`,
  }, frame);
  button.addEventListener("click", guarded(() => moreLikeThis(image)));
  const meta = el("div", { class: "meta" },
    ...lines.map((line) => el("span", { class: "line", text: line })),
    el("span", { class: "uri", title: image.uri, text: image.uri }),
    caption ? el("span", { class: "line", text: caption }) : null,
    metadata(image.metadata));
  return el("li", { class: "card", "data-image-id": String(image.image_id) }, button, meta);
}

function metadata(values) {
  if (!values || Object.keys(values).length === 0) return null;
  const list = el("dl", { class: "metadata" });
  for (const [key, value] of Object.entries(values)) {
    list.append(el("dt", { text: key }), el("dd", { text: typeof value === "string" ? value : JSON.stringify(value) }));
  }
  return list;
}

function dist(value) {
  return Number(value).toPrecision(4);
}

function showHits(hits) {
  const grid = el("ol", { class: "grid", "aria-label": "Nearest images" });
  hits.forEach((h) => grid.append(card("results", h, { lines: [`distance ${dist(h.distance)}`] })));
  $("results").replaceChildren(grid);
}

function showRanking(answer) {
  const grid = el("ol", { class: "grid", "aria-label": "Images with the most similar objects" });
  for (const image of answer.images) {
    const matches = matchedBoxes(image.matches);
    const lines = [
      `score ${dist(image.score)} (${$("score").selectedOptions[0].text})`,
      `${image.query_count} of ${answer.query_objects.length} query objects, ${image.hit_count} hits`,
    ];
    const item = card("results", image, { lines, boxes: matches });
    const list = el("ul", { class: "matches", "aria-label": "Matches" });
    for (const m of image.matches) {
      list.append(el("li", { text: `query object ${m.query + 1} → ${m.category ?? "object"} #${m.roi_id ?? "?"} at ${dist(m.dist)}` }));
    }
    item.querySelector(".meta").append(list);
    grid.append(item);
  }
  $("results").replaceChildren(grid);
}

// Each matched box once, labelled with the query objects that matched it ("1,2").
function matchedBoxes(matches) {
  const boxes = new Map();
  for (const m of matches.filter((x) => x.bbox)) {
    const key = m.roi_id ?? m.bbox.join(",");
    const seen = boxes.get(key) || [m.bbox, []];
    seen[1].push(m.query + 1);
    boxes.set(key, seen);
  }
  return [...boxes.values()].map(([bbox, queries]) => [bbox, [...new Set(queries)].sort((a, b) => a - b).join(",")]);
}

function showObjectHits(answer) {
  const sections = answer.query_objects.map((q, i) => {
    const grid = el("ol", { class: "grid", "aria-label": `Nearest objects to query object ${i + 1}` });
    for (const n of q.neighbours) {
      const boxes = n.bbox ? [[n.bbox, `${i + 1}`]] : [];
      grid.append(card("results", n, { lines: [`distance ${dist(n.dist)}`], boxes, caption: n.category || "" }));
    }
    const title = `Query object ${i + 1}: ${q.category} (${dist(q.prob)})`;
    return el("section", { class: "object-hits" }, el("h3", { text: title }), grid);
  });
  if (sections.length === 0) sections.push(el("p", { text: "No object was found in the query image." }));
  $("results").replaceChildren(...sections);
}

async function loadThumb(img, imageId, size, view) {
  const response = await fetch(`/api/v1/images/${imageId}/thumbnail?size=${size}`, { headers: authHeaders() });
  if (response.status === 401) {
    showAuth("The token was refused: " + (await problemText(response)));
    return;
  }
  if (!response.ok) {
    const why = await problemText(response);
    img.replaceWith(el("span", { class: "no-thumb", role: "img", "aria-label": `${img.alt}: no thumbnail`, title: why, text: "no thumbnail" }));
    return;
  }
  const src = URL.createObjectURL(await response.blob());
  state.urls[view].push(src);
  img.src = src;
}

async function moreLikeThis(image) {
  setQuery({ kind: "stored", imageId: image.image_id, uri: image.uri, width: image.width, height: image.height });
  selectTab("search");
  await search();
  $("query").scrollIntoView({ block: "nearest" });
}

// ---- the image browser (keyset pages)

async function loadBrowse() {
  if (!state.service) return;
  const cursor = state.cursors[state.page];
  const query = new URLSearchParams({ service: state.service.name, limit: String(PAGE) });
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/api/v1/images?${query}`);
  revoke("browse");
  const cards = page.items.map((i) => card("browse", { ...i, image_id: i.id }, { lines: [`image ${i.id}, ${i.width}×${i.height}`] }));
  $("browse").replaceChildren(...cards);
  state.cursors[state.page + 1] = page.next_cursor;
  $("browse-next").disabled = page.next_cursor === null;
  $("browse-first").disabled = state.page === 0;
  $("browse-status").textContent = `page ${state.page + 1} · ${page.items.length} images${page.next_cursor ? "" : " · last page"}`;
}

function selectTab(name) {
  for (const tab of ["search", "browse"]) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`tab-${tab}`).tabIndex = selected ? 0 : -1;
    $(`${tab}-view`).hidden = !selected;
  }
}

// ---- wiring

function fileChosen(file) {
  if (!file) return;
  if (state.settings && file.size > state.settings.max_request_bytes) {
    showError(new Error(`file: ${file.size} bytes, the server takes at most ${state.settings.max_request_bytes}`));
    return;
  }
  setQuery({ kind: "file", file });
  guarded(search)();
}

function wire() {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    start();
  });
  $("service").addEventListener("change", guarded(chooseService));
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", showModeOptions));
  $("view").addEventListener("change", showModeOptions);
  $("file").addEventListener("change", () => fileChosen($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    fileChosen(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) fileChosen(file);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("url").value.trim();
    if (!$("url-row").hidden && url && (!state.query || state.query.kind !== "url" || state.query.url !== url)) {
      setQuery({ kind: "url", url });
    }
    guarded(search)();
  });
  for (const tab of ["search", "browse"]) {
    $(`tab-${tab}`).addEventListener("click", guarded(async () => {
      selectTab(tab);
      if (tab === "browse") await loadBrowse();
    }));
  }
  document.querySelector("[role=tablist]").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const next = $("tab-search").getAttribute("aria-selected") === "true" ? "browse" : "search";
    $(`tab-${next}`).click();
    $(`tab-${next}`).focus();
  });
  $("browse-next").addEventListener("click", guarded(async () => {
    state.page += 1;
    await loadBrowse();
  }));
  $("browse-first").addEventListener("click", guarded(async () => {
    state.page = 0;
    await loadBrowse();
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  start();
});
