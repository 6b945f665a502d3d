"""Stopping a stream by signal: SIGINT / SIGTERM deferred to the end of the current block (:class:`StopSignals`).

Split from :mod:`longlive_jax.stream.run`, which re-exports these names.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class StopSignals:
  """SIGINT (Ctrl-C) and SIGTERM for a command that writes a stream (main thread only; elsewhere inert).

  Outside :meth:`deferred` either signal raises :class:`Interrupted` (a ``KeyboardInterrupt``) at once.
  Inside it, the first one only sets :attr:`signum`: the stream stops after the current block and its
  outputs are finished and kept; a second one raises at once. Exit status: ``128 + signum``.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, say: Callable[[str], None] | None = None):
    self.signum: int | None = None
    self._defer = False
    self._old: dict = {}
    self._say = say

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> bool:
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}
    return False

  def deferred(self):
    stop = self

    class _Deferred:
      def __enter__(self):
        stop._defer = True

      def __exit__(self, *exc):
        stop._defer = False
        return False

    return _Deferred()

  def _handle(self, signum, frame) -> None:
    if not self._defer or self.signum is not None:
      raise Interrupted(signum)
    self.signum = signum
    if self._say is not None:
      self._say(
        f"{signal.Signals(signum).name}: stopping after the current block and keeping what was generated "
        "(send it again to stop at once)"
      )


class Interrupted(KeyboardInterrupt):
  """Stopped by a signal: ``signum`` (SIGINT or SIGTERM)."""

  def __init__(self, signum: int = signal.SIGINT):
    super().__init__(signal.Signals(signum).name)
    self.signum = int(signum)
