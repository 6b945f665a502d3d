"""The viewers of the one stream, on the event loop.

The generator thread hands every frame and message to :meth:`Hub.post` (thread-safe, never blocks). Each
viewer has its own queues and a sender task:

* frames: a bounded deque (``frame_queue``; the oldest frame is dropped when it is full, and counted), so a
  slow viewer skips frames and never slows generation or the other viewers;
* messages: the newest ``state`` and ``stats`` replace older unsent ones (what matters is the present), other
  notes (errors, replies) queue up to a bound.

The number of viewers is capped: :meth:`Hub.join` answers None beyond ``max_viewers``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque

COALESCED = ("state", "stats")


class Viewer:
  """One connected page: its queues, counters and wake-up event (event-loop side only)."""

  def __init__(self, number: int, ws, *, frame_queue: int):
    self.number, self.ws = number, ws
    self.frames: deque[bytes] = deque()
    self.frame_queue = frame_queue
    self.latest: dict[str, dict] = {}
    self.notes: deque[dict] = deque(maxlen=64)
    self.wake = asyncio.Event()
    self.sent = self.dropped = 0

  def push_frame(self, data: bytes) -> None:
    if len(self.frames) >= self.frame_queue:
      self.frames.popleft()
      self.dropped += 1
    self.frames.append(data)
    self.wake.set()

  def push_json(self, msg: dict) -> None:
    if msg.get("type") in COALESCED:
      self.latest[msg["type"]] = msg
    else:
      self.notes.append(msg)
    self.wake.set()

  async def pump(self) -> None:
    """Sends until cancelled (or the socket fails): notes first, then the newest state / stats, then frames."""
    while True:
      await self.wake.wait()
      self.wake.clear()
      while self.notes or self.latest or self.frames:
        if self.notes:
          await self.ws.send_text(json.dumps(self.notes.popleft()))
        elif self.latest:
          kind = next(iter(self.latest))
          msg = self.latest.pop(kind)
          if kind == "stats":
            msg = {**msg, "dropped": self.dropped, "sent": self.sent, "queued": len(self.frames)}
          await self.ws.send_text(json.dumps(msg))
        else:
          await self.ws.send_bytes(self.frames.popleft())
          self.sent += 1


class Hub:
  """The connected viewers; ``post`` is the generator's ``publish`` callback."""

  def __init__(self, *, max_viewers: int, frame_queue: int):
    if max_viewers < 1:
      raise ValueError(f"max_viewers must be at least 1, got {max_viewers}")
    self.max_viewers, self.frame_queue = max_viewers, frame_queue
    self.viewers: dict[int, Viewer] = {}
    self.loop: asyncio.AbstractEventLoop | None = None
    self._numbers = itertools.count(1)

  def attach(self, loop: asyncio.AbstractEventLoop) -> None:
    self.loop = loop

  def post(self, kind: str, payload) -> None:
    """From any thread: a frame (``"frame"``, bytes) or message (``"json"``, dict) for every viewer."""
    loop = self.loop
    if loop is None or loop.is_closed():
      return
    try:
      loop.call_soon_threadsafe(self._dispatch, kind, payload)
    except RuntimeError:  # the loop closed meanwhile (server shutting down)
      pass

  def _dispatch(self, kind: str, payload) -> None:
    for v in list(self.viewers.values()):
      if kind == "frame":
        v.push_frame(payload)
      else:
        v.push_json(payload)

  def join(self, ws) -> Viewer | None:
    if len(self.viewers) >= self.max_viewers:
      return None
    v = Viewer(next(self._numbers), ws, frame_queue=self.frame_queue)
    self.viewers[v.number] = v
    return v

  def leave(self, viewer: Viewer) -> None:
    self.viewers.pop(viewer.number, None)
    viewer.frames.clear()
    viewer.notes.clear()
    viewer.latest.clear()
