"""The studio's web app (FastAPI on uvicorn): the page, one WebSocket per viewer, and the take downloads.

WebSocket ``/ws``: binary messages are frames (:data:`~longlive_jax.studio.session.FRAME_HEADER`: take number
and video frame index, little-endian uint32, then a JPEG); text messages are JSON. The page sends
``{"type": "prompt", "text": ...}``, ``pause``, ``resume``, ``stop``, ``{"type": "restart", "seed": n | null}``
and ``{"type": "mode", "mode": ...}``; it receives ``state``, ``stats``, ``ack`` (the latent frame where a typed
prompt will switch) and ``error`` (shown on the page, the stream goes on).

Security: requests must name this machine in their ``Host`` header when the server listens on a loopback address
(no DNS rebinding), a browser's WebSocket must come from the page's own origin (no other site can steer the
stream), messages are size-capped, and downloads only ever read the files of this server's takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from longlive_jax.studio import recording
from longlive_jax.studio.engine import PromptRejected
from longlive_jax.studio.hub import Hub
from longlive_jax.studio.session import ControlError, Studio

STATIC = Path(__file__).resolve().parent / "static"
MAX_MESSAGE_BYTES = 8192  # one control message; the WebSocket layer refuses frames over WS_MAX_BYTES
WS_MAX_BYTES = 65536
LOOPBACK_NAMES = ("localhost",)
NO_STORE = {"Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
  if host.lower() in LOOPBACK_NAMES:
    return True
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return False


def _hostname(value: str | None) -> str | None:
  return urlsplit(f"//{value}").hostname if value else None


class LocalHostOnly:
  """ASGI middleware: a request whose ``Host`` is not a loopback name is refused (DNS rebinding)."""

  def __init__(self, app):
    self.app = app

  async def __call__(self, scope, receive, send):
    if scope["type"] in ("http", "websocket"):
      host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
      name = _hostname(host)
      if name is None or not is_loopback(name):
        if scope["type"] == "http":
          await PlainTextResponse(f"host {host!r} refused: this studio serves this machine only", 400)(
            scope, receive, send
          )
        else:
          await send({"type": "websocket.close", "code": 1008})
        return
    await self.app(scope, receive, send)


def _same_origin(ws: WebSocket) -> bool:
  """Browsers send ``Origin``: it must be the page's own (``Host``). Non-browser clients send none."""
  origin = ws.headers.get("origin")
  return origin is None or urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()


def create_app(studio: Studio, *, host: str = "127.0.0.1", max_viewers: int = 4, frame_queue: int = 48) -> FastAPI:
  """The app around ``studio`` (started and closed with the app). ``frame_queue``: frames a viewer may lag
  behind before its oldest unsent frames are dropped."""
  hub = Hub(max_viewers=max_viewers, frame_queue=frame_queue)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    hub.attach(asyncio.get_running_loop())
    studio.publish = hub.post
    studio.start()
    try:
      yield
    finally:
      await asyncio.to_thread(studio.close)
      hub.loop = None

  app = FastAPI(title="LongLive studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
  app.state.hub, app.state.studio = hub, studio
  if is_loopback(host):
    app.add_middleware(LocalHostOnly)
  app.mount("/static", StaticFiles(directory=STATIC), name="static")

  @app.get("/")
  def index():
    return FileResponse(STATIC / "index.html", headers=NO_STORE)

  @app.get("/api/state")
  def state():
    return JSONResponse(studio.snapshot(), headers=NO_STORE)

  def take_or_404(number: int):
    take = studio.take_by_number(number)
    if take is None:
      raise HTTPException(404, f"no take {number} in this session")
    return take

  def attachment(name: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="{name}"', **NO_STORE}

  @app.get("/api/takes/{number}/script.jsonl")
  def script(number: int):
    take = take_or_404(number)
    return Response(studio.script_text(take), media_type="application/jsonl", headers=attachment(take.rec.jsonl.name))

  @app.get("/api/takes/{number}/recording.mp4")
  def video(number: int):
    take = take_or_404(number)
    mp4 = take.rec.mp4
    if take.rec.done:
      if not mp4.is_file():
        raise HTTPException(404, f"take {number} has no video (no block was generated)")
      return FileResponse(mp4, media_type="video/mp4", headers=attachment(mp4.name))
    data = recording.playable_prefix(mp4) if mp4.is_file() else b""
    if not data:
      raise HTTPException(409, f"take {number} has no complete second of video yet; try again in a moment")
    return Response(data, media_type="video/mp4", headers=attachment(mp4.name))

  @app.get("/api/takes/{number}/latents.npz")
  def latents(number: int):
    take = take_or_404(number)
    if not (take.rec.done and take.rec.npz.is_file()):
      raise HTTPException(409, f"take {number}: the latents are written when the take ends (press Stop)")
    return FileResponse(take.rec.npz, media_type="application/octet-stream", headers=attachment(take.rec.npz.name))

  @app.websocket("/ws")
  async def ws_endpoint(ws: WebSocket):
    if not _same_origin(ws):
      await ws.close(code=1008)
      return
    await ws.accept()
    viewer = hub.join(ws)
    if viewer is None:
      await ws.send_text(json.dumps({"type": "full", "message": f"the studio is full ({hub.max_viewers} viewers "
                                     "watching); try again when one leaves"}))  # fmt: skip
      await ws.close(code=1013, reason="studio full")
      return
    studio.viewer_joined()
    pump = asyncio.create_task(viewer.pump())
    try:
      viewer.push_json({"type": "hello", "viewer": viewer.number})
      viewer.push_json(studio.snapshot())
      hub.post("json", studio.snapshot())  # the others see the viewer count
      while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
          break
        reply = await _handle(studio, msg.get("text"), msg.get("bytes"))
        if reply is not None:
          viewer.push_json(reply)
    except WebSocketDisconnect:
      pass
    finally:
      pump.cancel()
      with contextlib.suppress(BaseException):
        await pump
      hub.leave(viewer)
      studio.viewer_left()
      hub.post("json", studio.snapshot())

  return app


async def _handle(studio: Studio, text: str | None, data: bytes | None) -> dict | None:
  """One control message from a page; the reply for that page (None: the broadcast state says it all)."""
  if text is None or len(text.encode()) > MAX_MESSAGE_BYTES:
    return {"type": "error", "message": f"control messages are JSON text of at most {MAX_MESSAGE_BYTES} bytes"}
  try:
    msg = json.loads(text)
    kind = msg.get("type") if isinstance(msg, dict) else None
  except json.JSONDecodeError:
    kind = None
  try:
    if kind == "prompt":
      prompt, context = await asyncio.to_thread(studio.encode, msg.get("text"))
      ack = studio.submit(prompt, context)
      return {"type": "ack", "text": prompt, **ack}
    if kind == "pause":
      studio.pause()
    elif kind == "resume":
      studio.resume()
    elif kind == "stop":
      studio.stop()
    elif kind == "restart":
      seed = studio.restart(msg.get("seed"), msg.get("mode"))
      return {"type": "notice", "message": f"new take with seed {seed}"}
    elif kind == "mode":
      return {"type": "notice", "message": studio.set_mode(msg.get("mode"))}
    else:
      return {"type": "error", "message": f"unknown message {text[:80]!r}"}
  except PromptRejected as e:
    return {"type": "error", "about": "prompt", "message": str(e)}
  except ControlError as e:
    return {"type": "error", "message": str(e)}
  return None


def check_port(host: str, port: int) -> None:
  """Raises OSError with the reason when ``host:port`` cannot be bound (in use, no such address)."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))


def serve(studio: Studio, *, host: str, port: int, max_viewers: int, say=print) -> int:
  """Runs the studio until Ctrl-C (the current take's files are finished on the way out)."""
  import uvicorn

  app = create_app(studio, host=host, max_viewers=max_viewers)
  shown = f"[{host}]" if ":" in host else host
  say(f"longlive-jax studio: http://{shown}:{port}/  (recordings in {studio.recordings.resolve()})")
  if is_loopback(host):
    say("  listening on this machine only; --host 0.0.0.0 opens it to the network")
  else:
    say(
      f"  WARNING: listening on {host}, reachable from other machines: anyone who can reach this port can steer "
      "the stream and download the recordings (the default is 127.0.0.1)"
    )
  # log_config=None: uvicorn leaves the process's logging alone (its warnings and errors still reach stderr)
  config = uvicorn.Config(
    app,
    host=host,
    port=port,
    log_config=None,
    log_level="warning",
    ws_max_size=WS_MAX_BYTES,
    lifespan="on",
    timeout_graceful_shutdown=10,
  )
  try:
    uvicorn.Server(config).run()
  except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown (takes finished by then)
    pass
  say(f"longlive-jax studio: stopped; recordings in {studio.recordings.resolve()}")
  return 0
