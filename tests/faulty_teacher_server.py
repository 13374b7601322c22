"""`jaxkd.serve_teacher`'s server with injected faults, for the HTTP tests.

`make_server(predict_fn, host, port, faults=...)` is
`jaxkd.serve_teacher.make_server` whose handler misbehaves on chosen POSTs:
`faults` maps the n-th POST (1-based, as counted in /stats) to

  "drop"          answer computed, cached and counted, connection closed
                  unanswered;
  "drop_before"   connection closed before computing;
  "500", "503", "429", "400"
                  that status (optionally ":<Retry-After>", e.g. "429:0.1"),
                  the body unread, nothing computed;
  "slow:<s>"      sleeps s seconds before handling;
  a corrupt answer: "nan" (last row's first class NaN), "shape" (one
                  class), "batch" (one row short), "scale" (doubled),
                  "garbage" (not `.npy`).
"""

import time
from typing import Dict, Optional

from jaxkd.http_teacher import NPY
from jaxkd.serve_teacher import TeacherHandler, TeacherServer


class FaultyHandler(TeacherHandler):
  """A `TeacherHandler` that applies `server.faults` to its POSTs."""

  def do_POST(self):
    s = self.server
    n = s.count_request()
    kind, _, arg = s.faults.get(n, "").partition(":")
    if kind == "slow":
      time.sleep(float(arg))
    if kind == "drop_before":
      self.close_connection = True
      return
    if kind.isdigit():
      hdrs = {"Retry-After": arg} if arg else None
      return self._error(int(kind), f"injected fault on request {n}", hdrs)
    answer = self.answer_request()
    if answer is None:
      return
    logits, fmt, replayed = answer
    if kind == "drop":  # computed, cached, counted: then the line breaks
      self.close_connection = True
      return
    out = self.output(logits)
    if kind == "nan":
      out = out.copy()
      out[-1, 0] = float("nan")
    elif kind == "shape":
      out = out[:, :1]
    elif kind == "batch":
      out = out[:-1]
    elif kind == "scale":
      out = out * 2
    if kind == "garbage":
      return self._send(200, b"not an npy file", NPY,
                        self.reply_headers(replayed))
    self.reply(out, fmt, replayed)


class FaultyTeacherServer(TeacherServer):
  """A `TeacherServer` whose n-th POST suffers `faults[n]`."""

  handler = FaultyHandler

  def __init__(self, addr, predict_fn, *, faults=None, **kw):
    self.faults = {int(k): str(v) for k, v in (faults or {}).items()}
    super().__init__(addr, predict_fn, **kw)


def make_server(predict_fn, host: str = "127.0.0.1", port: int = 0,
                faults: Optional[Dict[int, str]] = None,
                **kw) -> FaultyTeacherServer:
  """`jaxkd.serve_teacher.make_server` with `faults` (module docstring)."""
  return FaultyTeacherServer((host, int(port)), predict_fn, faults=faults,
                             **kw)
