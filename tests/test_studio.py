"""The studio (``longlive-jax serve``): server-level tests with FastAPI's test client, and the page in a real
headless Chromium (Playwright): frames arrive and change, a typed prompt switches at the block where it was
typed, and the downloaded jsonl replays through ``longlive-jax interactive`` to the studio's latents bit for bit.

One tiny whole-model checkpoint (random DiT, VAE, toy-world text encoder and tokenizer, 32x32 video) and one
compiled engine serve every test of the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from longlive_jax import checkpoint, cli, layout
from longlive_jax.config import tiny_config
from longlive_jax.model.params import params_of
from longlive_jax.model.wan import abstract_model
from longlive_jax.stream import run as srun
from longlive_jax.studio import recording
from longlive_jax.studio.engine import Engine
from longlive_jax.studio.hub import Hub
from longlive_jax.studio.server import create_app
from longlive_jax.studio.session import FRAME_HEADER, TOY_PROMPT, Studio
from longlive_jax.video_io import read_video

H = W = 4  # latents: 32 x 32 pixels
OPTS = dict(height=H, width=W, window_frames=9)
BASE = "http://127.0.0.1:7860"
WS = "ws://127.0.0.1:7860/ws"  # the test client joins a bare path to "ws://testserver"
TIMEOUT = 120.0  # seconds any wait may take on a loaded 2-core machine


def _random(tree, rng, scale):
  return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), tree)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """Random weights from the abstract models' shapes (no initialisation to compile): the toy world's text
  encoder and tokenizer, a VAE whose frames visibly vary, and the DiT reading 64-wide, 16-token text."""
  from longlive_jax.convert.wan_vae import _abstract_split
  from longlive_jax.text.model import abstract_model as text_abstract
  from longlive_jax.toyworld.text import TEXT_CONFIG, TEXT_LEN, write_tokenizer
  from longlive_jax.vae.config import tiny_vae_config

  root = tmp_path_factory.mktemp("studio")
  rng = np.random.default_rng(0)
  cfg = tiny_config(text_dim=TEXT_CONFIG.dim, text_len=TEXT_LEN)
  vcfg = tiny_vae_config()
  return checkpoint.save(
    root / "ckpt",
    cfg=cfg,
    params=_random(params_of(abstract_model(cfg)), rng, 0.05),
    meta={"native_resolution": [8 * H, 8 * W], "fps": 16.0, "toyworld": True},
    components={
      "vae": (_random(nnx.to_pure_dict(_abstract_split(vcfg)[1]), rng, 0.1), vcfg.to_dict()),
      "umt5": (_random(params_of(text_abstract(TEXT_CONFIG)), rng, 0.05), TEXT_CONFIG.to_dict()),
    },
    files={"tokenizer": write_tokenizer(root / "tokenizer")},
  )


@pytest.fixture(scope="module")
def engine(ckpt):
  eng = Engine(ckpt, srun.StreamOptions(frames=240, **OPTS), fps=16.0, max_prompt_chars=80)
  eng.warm_up(TOY_PROMPT)
  return eng


def _studio(engine, tmp_path, **kw) -> Studio:
  kw = {"first_prompt": TOY_PROMPT, "realtime": False, "checkpoint": engine.ckpt, **kw}
  return Studio(lambda: engine, recordings=tmp_path / "rec", **kw)


def _client(app):
  from fastapi.testclient import TestClient

  return TestClient(app, base_url=BASE)


def _until(pred, what: str, timeout: float = TIMEOUT):
  t0 = time.monotonic()
  while not (got := pred()):
    if time.monotonic() - t0 > timeout:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.05)
  return got


def _next(ws, *, kind: str | None = None, frame: bool = False):
  """The next JSON message of type ``kind`` (or the next frame), skipping the others."""
  while True:
    msg = ws.receive()
    if "bytes" in msg and msg["bytes"] is not None:
      if frame:
        return msg["bytes"]
      continue
    if msg.get("type") == "websocket.close":
      raise AssertionError(f"closed: {msg}")
    data = json.loads(msg["text"])
    if not frame and (kind is None or data["type"] == kind):
      return data


# ------------------------------------------------------------------------------------ server level


def test_bad_prompts_are_errors_and_the_stream_goes_on(engine, tmp_path):
  studio = _studio(engine, tmp_path)
  with _client(create_app(studio)) as client, client.websocket_connect(WS) as ws:
    take, first = FRAME_HEADER.unpack(_next(ws, frame=True)[:8])
    bad = {
      "": "empty prompt",
      "   ": "empty prompt",
      "a red circle " + "x" * 80: "too long: 93 characters, at most 80",
      "a red dragon moves right on a blue background": "'dragon'",
      "a red circle " * 6: "at most 16 tokens",
      "prompt.npy": "embedding file",
    }
    for text, why in bad.items():
      ws.send_text(json.dumps({"type": "prompt", "text": text}))
      err = _next(ws, kind="error")
      assert err["about"] == "prompt" and why in err["message"], (text, err)
    for raw in ("not json", json.dumps({"type": "warp"}), json.dumps({"type": "mode", "mode": "fast"})):
      ws.send_text(raw)
      assert _next(ws, kind="error")["message"]
    ws.send_text(json.dumps({"type": "restart", "seed": -1}))
    assert "seed -1" in _next(ws, kind="error")["message"]
    later = FRAME_HEADER.unpack(_next(ws, frame=True)[:8])  # the stream went on, same take, later frames
    for _ in range(30):
      later = FRAME_HEADER.unpack(_next(ws, frame=True)[:8])
    assert later[0] == take and later[1] > first
    snap = client.get("/api/state").json()
    assert snap["take"]["timeline"] == [{"text": TOY_PROMPT, "frame": 0, "video_frame": 0, "seconds": 0.0}]
    assert snap["take"]["status"] in ("running", "complete") and snap["take"]["error"] is None


def test_mode_pause_resume_and_restart_with_a_new_seed(engine, tmp_path):
  studio = _studio(engine, tmp_path)
  green = "a green square moves up on a white background"
  with _client(create_app(studio)) as client, client.websocket_connect(WS) as ws:
    _next(ws, frame=True)
    ws.send_text(json.dumps({"type": "mode", "mode": "keep"}))
    assert _next(ws, kind="notice")["message"] == "switch mode keep"
    ws.send_text(json.dumps({"type": "prompt", "text": green}))
    ack = _next(ws, kind="ack")
    assert ack["take"] == 1 and ack["frame"] >= 3 and ack["frame"] % 3 == 0
    _until(lambda: studio.take.switch_frames == [ack["frame"]], "the switch")
    ws.send_text(json.dumps({"type": "mode", "mode": "clear"}))  # one mode per take (what a replay can do)
    assert "applies from the next take" in _next(ws, kind="notice")["message"] and studio.take.mode == "keep"

    ws.send_text(json.dumps({"type": "pause"}))
    _until(lambda: studio.take.status == "paused", "the pause")
    frames = studio.take.frames
    time.sleep(1.0)
    assert studio.take.frames == frames
    ws.send_text(json.dumps({"type": "resume"}))
    _until(lambda: studio.take.frames > frames, "the stream to resume")

    ws.send_text(json.dumps({"type": "restart", "seed": 5}))
    assert _next(ws, kind="notice")["message"] == "new take with seed 5"
    while FRAME_HEADER.unpack(_next(ws, frame=True)[:8])[0] != 2:
      pass
    take = studio.take
    assert (take.number, take.seed, take.mode, take.prompts) == (2, 5, "clear", [green])  # the newest prompt
    old = client.get("/api/takes/1/script.jsonl")
    line = json.loads(old.text)
    assert old.headers["content-disposition"] == 'attachment; filename="take-0001.jsonl"'
    assert line["switch_frame_indices"] == [ack["frame"]] and line["studio"]["switch_mode"] == "keep"
    npz = client.get("/api/takes/1/latents.npz")
    assert npz.status_code == 200
    (tmp_path / "t1.npz").write_bytes(npz.content)
    with np.load(tmp_path / "t1.npz") as z:
      assert z["latents"].shape[1] == line["studio"]["frames"] and json.loads(str(z["meta"]))["status"] == "stopped"
    assert client.get("/api/takes/2/latents.npz").status_code == 409  # running: written when it ends
    (tmp_path / "t1.mp4").write_bytes(client.get("/api/takes/1/recording.mp4").content)
    assert len(read_video(tmp_path / "t1.mp4")) == 1 + 4 * (line["studio"]["frames"] - 1)
  assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
    f"take-000{i}.{ext}" for i in (1, 2) for ext in ("jsonl", "mp4", "npz")
  ]  # closing the server finished take 2; nothing else was written


def test_a_disconnected_viewer_is_freed_and_generation_idles(engine, tmp_path):
  studio = _studio(engine, tmp_path)
  app = create_app(studio)
  hub: Hub = app.state.hub
  with _client(app) as client:
    with client.websocket_connect(WS) as ws:
      _next(ws, frame=True)
      assert len(hub.viewers) == 1 and studio.viewers == 1
    _until(lambda: not hub.viewers and studio.viewers == 0, "the viewer to be released")
    _until(lambda: studio.take.status == "idle", "generation to idle")
    frames = studio.take.frames
    time.sleep(1.0)
    assert studio.take.frames == frames  # nobody watching: nothing generated
    with client.websocket_connect(WS) as ws:  # a new viewer resumes the same take
      _next(ws, frame=True)
      assert studio.take.number == 1


def test_several_viewers_watch_one_stream_and_the_cap_refuses_politely(engine, tmp_path):
  studio = _studio(engine, tmp_path)
  with _client(create_app(studio, max_viewers=2)) as client:
    with client.websocket_connect(WS) as first, client.websocket_connect(WS) as second:
      takes = {FRAME_HEADER.unpack(_next(ws, frame=True)[:8])[0] for ws in (first, second)}
      assert takes == {1} and studio.viewers == 2
      with client.websocket_connect(WS) as third:
        full = json.loads(third.receive_text())
        assert full["type"] == "full" and "2 viewers" in full["message"]
        assert third.receive()["code"] == 1013  # "try again later"
      _next(first, frame=True)  # the others are not disturbed
      _next(second, frame=True)
    _until(lambda: studio.viewers == 0, "the viewers to leave")
    with client.websocket_connect(WS) as again:  # seats are free again
      assert _next(again, kind="hello")["type"] == "hello"


def test_other_sites_and_foreign_hosts_are_refused(engine, tmp_path):
  from starlette.websockets import WebSocketDisconnect

  studio = _studio(engine, tmp_path)
  with _client(create_app(studio)) as client:
    assert client.get("/", headers={"host": "evil.example:7860"}).status_code == 400
    with pytest.raises(WebSocketDisconnect):
      with client.websocket_connect(WS, headers={"origin": "http://evil.example"}) as ws:
        ws.receive_text()
    page = client.get("/")
    assert page.status_code == 200 and "LongLive studio" in page.text
    assert client.get("/static/studio.js").status_code == 200
    assert client.get("/api/takes/99/script.jsonl").status_code == 404
    assert client.get("/api/takes/1/../../etc/passwd").status_code == 404


def test_a_slow_viewer_loses_frames_and_never_blocks_the_generator():
  """The generator's ``post`` returns at once whatever the viewers do; a viewer whose socket does not drain
  keeps only the newest ``frame_queue`` frames and counts the rest as dropped, while a fast one gets all."""

  class Socket:
    def __init__(self, gate):
      self.gate, self.frames = gate, []

    async def send_bytes(self, data):
      await self.gate.wait()
      self.frames.append(data)

    async def send_text(self, text):
      await self.gate.wait()

  async def main():
    hub = Hub(max_viewers=2, frame_queue=8)
    hub.attach(asyncio.get_running_loop())
    stuck, fast = asyncio.Event(), asyncio.Event()
    fast.set()
    slow_v, fast_v = hub.join(Socket(stuck)), hub.join(Socket(fast))
    assert hub.join(Socket(fast)) is None  # the cap
    pumps = [asyncio.create_task(v.pump()) for v in (slow_v, fast_v)]
    t0 = time.perf_counter()
    for i in range(100):
      await asyncio.to_thread(hub.post, "frame", FRAME_HEADER.pack(1, i))
      await asyncio.sleep(0)
    assert time.perf_counter() - t0 < 5.0
    await asyncio.sleep(0.1)
    assert len(fast_v.ws.frames) == 100 and fast_v.dropped == 0
    assert len(slow_v.frames) <= 8 and slow_v.dropped >= 100 - 8 - 1
    stuck.set()
    await asyncio.sleep(0.1)
    got = [FRAME_HEADER.unpack(f)[1] for f in slow_v.ws.frames]
    assert got[-1] == 99 and got == sorted(got)  # the newest frames, in order
    for p in pumps:
      p.cancel()
    hub.leave(slow_v)
    assert list(hub.viewers) == [fast_v.number]

  asyncio.run(main())


def test_serve_checks_its_options_and_says_where_it_listens(ckpt, tmp_path, capsys, monkeypatch):
  import uvicorn

  base = ["serve", "--checkpoint", str(ckpt), "--recordings", str(tmp_path / "rec")]
  (tmp_path / "afile").write_text("")
  for extra, why in [
    (["--port", "70000"], "--port 70000"),
    (["--recordings", str(tmp_path / "afile" / "rec")], "is a file"),
    (["--frames", "10"], "multiple of the block size"),
    (["--max-viewers", "0"], "--max-viewers 0"),
    (["--attention", "cudnn"], "'cudnn' needs dtype bfloat16"),  # the checkpoint here is float32
  ]:
    assert cli.main(base + extra) == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    assert cli.main([*base, "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen there" in capsys.readouterr().err
  ran = []
  monkeypatch.setattr(uvicorn.Server, "run", lambda self: ran.append(self.config.host))
  assert cli.main([*base, "--port", "0"]) == 0
  assert "this machine only" in capsys.readouterr().out
  assert cli.main([*base, "--port", "0", "--host", "0.0.0.0"]) == 0
  assert "WARNING: listening on 0.0.0.0" in capsys.readouterr().out
  assert ran == ["127.0.0.1", "0.0.0.0"]
  assert not (tmp_path / "rec").exists()  # nothing loaded, nothing written


def test_a_fragmented_recording_plays_while_it_grows(tmp_path):
  video = recording.FragmentedMp4(tmp_path / "v.mp4", fps=16)
  frames = (np.arange(40)[:, None, None, None] * 6 + np.zeros((1, 32, 32, 3))).astype(np.uint8)
  video.write(frames)
  part = tmp_path / "part.mp4"
  part.write_bytes(recording.playable_prefix(video.path))
  got = read_video(part)
  assert 16 <= len(got) < 40  # whole fragments (one a second) only
  video.close()
  assert len(read_video(video.path)) == 40
  assert recording.playable_prefix(video.path) == video.path.read_bytes()


# ------------------------------------------------------------------------------------ in a browser


def _chromium() -> str | None:
  return os.environ.get("LONGLIVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
  exe = _chromium()
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    sync_playwright = None
  if exe is None or sync_playwright is None:
    why = "Debian's chromium is not installed" if exe is None else "playwright is not installed"
    if os.environ.get("CI"):
      pytest.fail(f"{why}: .ci/run installs it (apt-get install chromium; pip install -e '.[dev]')")
    pytest.skip(f"{why} (apt-get install chromium; pip install -e '.[dev]'); CI runs this test")
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
    yield b
    b.close()


class _Server:
  """uvicorn on a free loopback port, in a thread of this process (the module's compiled engine)."""

  def __init__(self, app):
    import uvicorn

    self.sock = socket.socket()
    self.sock.bind(("127.0.0.1", 0))
    self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
    self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on"))
    self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

  def __enter__(self):
    self.thread.start()
    _until(lambda: self.server.started, "the server to start")
    return self

  def __exit__(self, *exc):
    self.server.should_exit = True
    self.thread.join(TIMEOUT)
    self.sock.close()


def _download(page, selector: str, to: Path) -> Path:
  with page.expect_download() as d:
    page.click(selector)
  d.value.save_as(to)
  return to


def _canvas(page) -> list[int]:
  return page.evaluate(
    "() => { const c = document.getElementById('video');"
    " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"
  )


def test_the_page_plays_switches_and_its_script_replays_bit_for_bit(browser, engine, tmp_path):
  studio = _studio(engine, tmp_path, realtime=True, seed=7)
  bf = engine.block_frames
  with _Server(create_app(studio)) as srv:
    page = browser.new_page()
    page_errors = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    js = lambda expr: page.evaluate(f"() => {expr}")  # noqa: E731
    page.goto(srv.url)
    assert page.title() == "LongLive studio"
    _until(lambda: js("window.studio.framesDrawn") >= 6, "frames to be drawn")
    a = _canvas(page)
    _until(lambda: _canvas(page) != a, "the picture to change")
    assert js("window.studio.stats.gen_fps") > 0 and js("window.studio.stats.latency_ms") > 0

    # type a prompt while block g is the last one generated: it switches at the next block boundary
    _until(lambda: (js("window.studio.stats") or {}).get("block", 0) >= 2, "a few blocks")
    last = js("window.studio.stats.block")
    new = "a green square moves up on a white background"
    page.fill("#prompt", new)
    page.press("#prompt", "Enter")
    ack = _until(lambda: js("window.studio.lastAck"), "the prompt's acknowledgement")
    assert ack["text"] == new and ack["frame"] % bf == 0
    assert (last + 1) * bf <= ack["frame"] <= (last + 3) * bf, (last, ack)
    assert js("window.studio.lastError") is None and page.input_value("#prompt") == ""
    _until(lambda: js("window.studio.stats.frames") >= ack["frame"] + 2 * bf, "blocks after the switch")
    timeline = page.locator("#timeline li").all_inner_texts()
    assert len(timeline) == 2 and new in timeline[1] and f"frame {ack['frame']} " in timeline[1], timeline

    # a bad prompt is an error on the page, and the stream goes on
    page.fill("#prompt", "a red circle flies away")
    page.press("#prompt", "Enter")
    _until(lambda: "flies" in page.inner_text("#message"), "the error on the page")
    assert "error" in page.get_attribute("#message", "class")
    frames = js("window.studio.stats.frames")
    _until(lambda: js("window.studio.stats.frames") > frames, "the stream to go on")

    live_mp4 = _download(page, "#dl-mp4", tmp_path / "live.mp4")  # while running: whole fragments so far
    assert len(read_video(live_mp4)) > 0

    page.click("#stop")
    _until(lambda: (js("window.studio.state.take") or {}).get("latents"), "the take's files")
    jsonl = _download(page, "#dl-jsonl", tmp_path / "take.jsonl")
    npz = _download(page, "#dl-npz", tmp_path / "take.npz")
    mp4 = _download(page, "#dl-mp4", tmp_path / "take.mp4")
    replay = page.inner_text("#replay")
    page.screenshot(path=str(tmp_path / "page.png"))
    page.close()
    assert not page_errors, page_errors

  line = json.loads(jsonl.read_text())
  with np.load(npz) as z:
    studio_latents, meta = z["latents"], json.loads(str(z["meta"]))
  frames = line["studio"]["frames"]
  assert line["prompts"] == [TOY_PROMPT, new] and line["switch_frame_indices"] == [ack["frame"]]
  assert line["studio"]["seed"] == 7 and meta["frames"] == frames == studio_latents.shape[1]
  assert len(read_video(mp4)) == 1 + 4 * (frames - 1)

  # the page's replay command, run as is (its jsonl and output paths made local)
  args = shlex.split(replay)
  assert args[:3] == ["longlive-jax", "interactive", "take-0001.jsonl"]
  args[2], args[-1] = str(jsonl), str(tmp_path / "replay.npz")
  assert cli.main(args[1:] + ["--quiet"]) == 0
  with np.load(tmp_path / "replay.npz") as z:
    replayed = z["latents"]
  assert replayed.dtype == studio_latents.dtype and np.array_equal(replayed, studio_latents)  # bit for bit
  # and the switch mattered: the same seed without it continues differently after the switch frame
  st = engine.streamer
  st.switch_mode = "recache"
  _, ctx = engine.encode(TOY_PROMPT)
  sess = st.session(engine.draws(7), ctx, batch=1)
  alone = np.concatenate([np.asarray(sess.next_block()[1]) for _ in range(frames // bf)], axis=1)
  alone = layout.to_longlive(alone)
  f = ack["frame"]
  assert np.array_equal(alone[:, :f], studio_latents[:, :f]) and not np.allclose(alone[:, f:], studio_latents[:, f:])
