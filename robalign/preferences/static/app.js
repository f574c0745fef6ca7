// The comparison page: fetch the next query, play its videos in sync, take the answer
// from a button or the keyboard, post it, repeat. Pairs: ← A, → B, ↓ or T tie, S skip.
// Triplets: press 1, 2, 3 in order of preference (best first); Backspace starts over; S skip.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("robalign-token", params.get("token"));
  history.replaceState(null, "", location.pathname); // keep the token out of the address bar
}
const token = sessionStorage.getItem("robalign-token");
const $ = (id) => document.getElementById(id);
const LETTERS = ["A", "B", "C"];

let query = null;      // the query on screen
let shownAt = 0;       // when it appeared, for response_ms
let ranking = [];      // triplet answer being built
let posting = false;   // one answer in flight at a time

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "status error" : "status";
}

function videos() { return Array.from(document.querySelectorAll("#videos video")); }

// Synchronised playback: the first video leads; the others follow its clock.
function syncFollowers() {
  const [lead, ...rest] = videos();
  if (!lead) return;
  for (const v of rest) {
    if (Math.abs(v.currentTime - lead.currentTime) > 0.05) v.currentTime = lead.currentTime;
    if (v.paused !== lead.paused) (lead.paused ? v.pause() : v.play().catch(() => {}));
  }
  requestAnimationFrame(syncFollowers);
}

function togglePlay() {
  const all = videos();
  if (!all.length) return;
  if (all[0].paused) all.forEach((v) => v.play().catch(() => {}));
  else all.forEach((v) => v.pause());
}

function restart() { videos().forEach((v) => { v.currentTime = 0; v.play().catch(() => {}); }); }

function renderQuery(data) {
  query = data.query;
  ranking = [];
  const p = data.progress;
  $("progress").textContent = `${p.answered} answered · ${p.remaining} to go`;
  const box = $("videos");
  box.innerHTML = "";
  $("choices").innerHTML = "";
  if (!query) {
    $("instruction").textContent = "";
    $("help").textContent = "";
    box.innerHTML = '<p class="done" id="done">All done — thank you!</p>';
    return;
  }
  $("instruction").textContent = `Task: “${query.trajectories[0].instruction}”`;
  query.trajectories.forEach((t, i) => {
    const fig = document.createElement("figure");
    fig.id = `option-${LETTERS[i]}`;
    const video = document.createElement("video");
    video.src = t.video_url;
    video.muted = true; video.loop = true; video.playsInline = true; video.autoplay = true;
    const cap = document.createElement("figcaption");
    cap.textContent = query.kind === "pair" ? LETTERS[i] : `${i + 1}`;
    fig.append(video, cap);
    box.append(fig);
  });
  const buttons = query.kind === "pair"
    ? [["A is better", "A", "←"], ["tie", "tie", "↓"], ["B is better", "B", "→"], ["skip", "skip", "S"]]
    : [["skip", "skip", "S"]];
  for (const [label, choice, key] of buttons) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.choice = choice;
    b.innerHTML = `${label} <kbd>${key}</kbd>`;
    b.addEventListener("click", () => submit(choice));
    $("choices").append(b);
  }
  $("help").innerHTML = query.kind === "pair"
    ? "Keys: <kbd>←</kbd> A better · <kbd>→</kbd> B better · <kbd>↓</kbd>/<kbd>T</kbd> tie · <kbd>S</kbd> skip · <kbd>Space</kbd> play/pause"
    : "Press <kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd> best first (two presses) · <kbd>Backspace</kbd> start over · <kbd>S</kbd> skip";
  shownAt = performance.now();
  setStatus("");
}

async function loadNext() {
  try {
    renderQuery(await api("/api/next"));
  } catch (err) {
    setStatus(`Could not load the next comparison: ${err.message}`, true);
  }
}

async function submit(choice, order = null) {
  if (!query || posting) return;
  posting = true;
  const body = { query_id: query.id, choice, response_ms: Math.round(performance.now() - shownAt) };
  if (order) body.ranking = order;
  setStatus("saving…");
  try {
    await api("/api/answers", { method: "POST", body: JSON.stringify(body) });
    await loadNext();
  } catch (err) {
    setStatus(`Not saved: ${err.message}. Try again.`, true);
  } finally {
    posting = false;
  }
}

function pickRank(index) {
  if (ranking.includes(index) || index >= query.trajectories.length) return;
  ranking.push(index);
  document.getElementById(`option-${LETTERS[index]}`).classList.add("picked");
  setStatus(`ranking: ${ranking.map((i) => i + 1).join(" > ")}`);
  if (ranking.length === 2) {
    ranking.push([0, 1, 2].find((i) => !ranking.includes(i)));
    submit("rank", ranking);
  }
}

document.addEventListener("keydown", (event) => {
  if (!query || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === " ") { event.preventDefault(); togglePlay(); return; }
  if (key === "r" || key === "R") { restart(); return; }
  if (key === "s" || key === "S") { submit("skip"); return; }
  if (query.kind === "pair") {
    const choice = { ArrowLeft: "A", ArrowRight: "B", ArrowDown: "tie", t: "tie", T: "tie" }[key];
    if (choice) { event.preventDefault(); submit(choice); }
  } else if (["1", "2", "3"].includes(key)) {
    pickRank(Number(key) - 1);
  } else if (key === "Backspace") {
    ranking = [];
    document.querySelectorAll("figure.picked").forEach((f) => f.classList.remove("picked"));
    setStatus("");
  }
});

$("play").addEventListener("click", togglePlay);
$("restart").addEventListener("click", restart);

if (!token) {
  $("progress").textContent = "";
  setStatus("No annotator token: open this page as /?token=YOUR_TOKEN (from `robalign prefs annotator`).", true);
} else {
  requestAnimationFrame(syncFollowers);
  loadNext();
}
