// LongLive studio page: frames arrive over one WebSocket (8-byte header: take, frame index; then a JPEG),
// are queued and drawn at the model's frame rate. A viewer that falls more than 1.5 s (or 2.5 blocks) behind skips frames
// to stay live. Everything the page knows is mirrored on window.studio (read by the browser tests).
"use strict";

const $ = (id) => document.getElementById(id);
const studio = (window.studio = {
  framesReceived: 0, framesDrawn: 0, framesSkipped: 0, shownFrame: -1, take: null,
  state: null, stats: null, lastAck: null, lastError: null, firstFrameMs: null, full: false,
});
const canvas = $("video");
const ctx2d = canvas.getContext("2d");
let ws = null;
let fps = 16;
let queue = []; // decoded frames of the current take, in order
let nextDue = null;
let connectedAt = 0;
const drawTimes = []; // when the frames of the last 2 s were drawn (the shown frame rate)
let firstDraw = null;

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function say(text, isError = false) {
  const m = $("message");
  m.textContent = text;
  m.classList.toggle("error", isError);
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = `badge ${cls || ""}`;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    connectedAt = performance.now();
    studio.firstFrameMs = null;
    setConn("live", "ok");
  };
  ws.onclose = () => {
    setConn(studio.full ? "studio full" : "disconnected", "bad");
    if (!studio.full) setTimeout(connect, 2000);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
    else onFrame(ev.data);
  };
}

function resetPlayback(take) {
  for (const f of queue) f.bmp.close();
  queue = [];
  nextDue = null;
  studio.take = take;
  studio.shownFrame = -1;
  drawTimes.length = 0;
  firstDraw = null;
}

async function onFrame(buf) {
  const view = new DataView(buf);
  const take = view.getUint32(0, true);
  const index = view.getUint32(4, true);
  studio.framesReceived++;
  if (studio.take !== null && take < studio.take) return; // a late frame of an earlier take
  if (take !== studio.take) resetPlayback(take);
  const bmp = await createImageBitmap(new Blob([buf.slice(8)], { type: "image/jpeg" }));
  if (take !== studio.take) return bmp.close();
  let i = queue.length;
  while (i > 0 && queue[i - 1].index > index) i--;
  queue.splice(i, 0, { index, bmp });
}

function tick(now) {
  requestAnimationFrame(tick);
  const interval = 1000 / fps;
  const blockVideo = 4 * ((studio.state && studio.state.model && studio.state.model.block_frames) || 3);
  const maxLag = Math.max(Math.round(1.5 * fps), Math.round(2.5 * blockVideo));
  if (queue.length > maxLag) {
    const old = queue.splice(0, queue.length - maxLag);
    old.forEach((f) => f.bmp.close());
    studio.framesSkipped += old.length;
  }
  if (!queue.length) return;
  if (nextDue === null || now - nextDue > 250) nextDue = now; // start, or after a stall
  if (now < nextDue) return;
  nextDue += interval;
  const f = queue.shift();
  if (canvas.width !== f.bmp.width || canvas.height !== f.bmp.height) {
    canvas.width = f.bmp.width;
    canvas.height = f.bmp.height;
    canvas.classList.toggle("pixelated", f.bmp.width < 256);
  }
  ctx2d.drawImage(f.bmp, 0, 0);
  f.bmp.close();
  studio.framesDrawn++;
  studio.shownFrame = f.index;
  if (studio.firstFrameMs === null) {
    studio.firstFrameMs = now - connectedAt;
    $("s-page").textContent = (studio.firstFrameMs / 1000).toFixed(2);
  }
  drawTimes.push(now);
  if (firstDraw === null) firstDraw = now;
  while (drawTimes.length && now - drawTimes[0] > 2000) drawTimes.shift();
  $("s-skip").textContent = studio.framesSkipped;
  highlightTimeline();
}

function onJson(msg) {
  switch (msg.type) {
    case "state": return renderState(msg);
    case "stats": return renderStats(msg);
    case "ack":
      studio.lastAck = msg;
      $("prompt").value = "";
      if (msg.next_take) say(`"${msg.text}" starts the next take`);
      else if (msg.frame === 0) say(`"${msg.text}" starts this take`);
      else say(`"${msg.text}" takes over at latent frame ${msg.frame} (video frame ${msg.video_frame})`);
      return;
    case "error":
      studio.lastError = msg;
      return say(msg.message, true);
    case "notice": return say(msg.message);
    case "full":
      studio.full = true;
      $("overlay").textContent = msg.message;
      return say(msg.message, true);
    default: return;
  }
}

function overlayText(s) {
  if (s.error) return s.error;
  if (!s.ready) return "loading the model (compiling the first block)…";
  const t = s.take;
  if (!t) return s.waiting_for_prompt ? "type a prompt to start" : "starting…";
  if (t.status === "failed") return `take ${t.number} failed: ${t.error}`;
  if (t.ended) return `take ${t.number} ended (${t.status}): Restart for a new take`;
  if (s.paused) return "paused";
  if (t.status === "idle") return "idle (no viewer)";
  return "";
}

function renderState(s) {
  studio.state = s;
  if (s.model) {
    fps = s.model.fps;
    const m = s.model;
    const ready = m.warm_seconds === null ? "" : ` · ready in ${(m.load_seconds + m.warm_seconds).toFixed(1)} s`;
    $("model").textContent =
      `${m.checkpoint} · ${m.width}×${m.height} · ${m.fps} fps · ${m.block_frames} latent frames a block${ready}`;
    $("prompt").maxLength = m.max_prompt_chars;
    document.querySelector(".screen").style.aspectRatio = `${m.width} / ${m.height}`;
  }
  $("overlay").textContent = overlayText(s);
  $("pause").textContent = s.paused ? "Resume" : "Pause";
  $("s-viewers").textContent = s.viewers;
  const sel = $("mode");
  if (sel.options.length !== s.modes.length) {
    sel.innerHTML = "";
    for (const m of s.modes) sel.add(new Option(m, m));
  }
  const t = s.take;
  sel.value = t && !t.ended ? t.mode : s.mode;
  if (t && t.number !== studio.take && !(studio.take !== null && t.number < studio.take)) resetPlayback(t.number);
  renderTimeline(t);
  renderDownloads(s);
  if (t && t.ttff_s !== null) $("s-ttff").textContent = t.ttff_s.toFixed(2);
}

function renderTimeline(t) {
  const ol = $("timeline");
  ol.innerHTML = "";
  $("take-label").textContent = t ? `take ${t.number} · seed ${t.seed} · ${t.mode} · ${t.status}` : "";
  if (!t) return;
  for (const e of t.timeline) {
    const li = document.createElement("li");
    li.dataset.frame = e.frame;
    li.innerHTML = `<span class="frame">frame ${e.frame} (${e.seconds.toFixed(2)} s)</span> `;
    li.append(document.createTextNode(e.text));
    ol.append(li);
  }
  if (t.pending) {
    const li = document.createElement("li");
    li.className = "pending";
    li.innerHTML = `<span class="frame">at frame ${t.pending.frame}</span> `;
    li.append(document.createTextNode(t.pending.text));
    ol.append(li);
  }
  highlightTimeline();
}

function highlightTimeline() {
  const latent = studio.shownFrame < 0 ? -1 : Math.floor((studio.shownFrame + 3) / 4);
  const items = [...document.querySelectorAll("#timeline li:not(.pending)")];
  let active = null;
  for (const li of items) if (Number(li.dataset.frame) <= latent) active = li;
  items.forEach((li) => li.classList.toggle("active", li === active));
}

function link(a, href, enabled) {
  if (enabled) {
    a.href = href;
    a.classList.remove("disabled");
  } else {
    a.removeAttribute("href");
    a.classList.add("disabled");
  }
}

function renderDownloads(s) {
  const t = s.take;
  const base = t ? `/api/takes/${t.number}` : "";
  link($("dl-mp4"), `${base}/recording.mp4`, t && t.frames > 0);
  link($("dl-jsonl"), `${base}/script.jsonl`, t && t.frames > 0);
  link($("dl-npz"), `${base}/latents.npz`, t && t.latents);
  $("replay").textContent = t ? t.replay : "";
  const ul = $("takes");
  ul.innerHTML = "";
  for (const p of s.takes.filter((p) => !t || p.number !== t.number)) {
    const li = document.createElement("li");
    const b = `/api/takes/${p.number}`;
    li.innerHTML = `take ${p.number} · seed ${p.seed} · ${p.frames} frames · ${p.status}: ` +
      `<a href="${b}/recording.mp4" download>mp4</a> <a href="${b}/script.jsonl" download>jsonl</a>` +
      (p.latents ? ` <a href="${b}/latents.npz" download>npz</a>` : "");
    ul.append(li);
  }
}

function renderStats(st) {
  studio.stats = st;
  $("s-gen").textContent = st.gen_fps.toFixed(1);
  $("s-lat").textContent = st.latency_ms.toFixed(0);
  $("s-med").textContent = st.median_latency_ms.toFixed(0);
  if (st.ttff_s !== null) $("s-ttff").textContent = st.ttff_s.toFixed(2);
  $("s-block").textContent = st.block;
  $("s-frames").textContent = `${st.frames} latent / ${st.video_frames} video`;
  $("s-drop").textContent = st.dropped;
  const now = performance.now();
  while (drawTimes.length && now - drawTimes[0] > 2000) drawTimes.shift();
  if (firstDraw !== null && now - firstDraw > 500) {
    $("s-play").textContent = ((drawTimes.length * 1000) / Math.min(2000, now - firstDraw)).toFixed(1);
  }
}

$("prompt-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  send({ type: "prompt", text: $("prompt").value });
});
$("pause").addEventListener("click", () => send({ type: studio.state && studio.state.paused ? "resume" : "pause" }));
$("stop").addEventListener("click", () => send({ type: "stop" }));
$("restart").addEventListener("click", () => {
  const v = $("seed").value.trim();
  send({ type: "restart", seed: v === "" ? null : Number(v), mode: $("mode").value });
});
$("mode").addEventListener("change", () => send({ type: "mode", mode: $("mode").value }));

connect();
requestAnimationFrame(tick);
