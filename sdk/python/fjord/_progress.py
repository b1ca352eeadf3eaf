"""Human-readable progress for a job's events; the ``fjord`` CLI draws the same.

On a terminal, one line redrawn in place::

    [##########..............] 40/100  loss 1.2100  eval 1.3000  5120 tok/s  ETA 12s

elsewhere (a log file, CI), one such line every 5 % of the steps. Status
changes, evals, checkpoints and log messages get their own lines.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, Optional, TextIO

from .types import Event, Job

BAR_WIDTH = 24


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    t = int(seconds + 0.5)
    if t >= 3600:
        return f"{t // 3600}h{(t // 60) % 60:02d}m"
    if t >= 60:
        return f"{t // 60}m{t % 60:02d}s"
    return f"{t}s"


def _num(d: Dict[str, Any], key: str) -> Optional[float]:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class Progress:
    """Renders events to a text stream (``sys.stderr`` by default)."""

    def __init__(self, stream: Optional[TextIO] = None, bar: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.bar = bar if bar is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar_open = False
        self.eval_loss: Optional[float] = None
        self.first_eval_loss: Optional[float] = None
        self._last_line_step = -1

    def status_line(self, data: Dict[str, Any]) -> str:
        step = int(_num(data, "step") or 0)
        total = int(_num(data, "total_steps") or 0)
        parts = [f"{step}/{total}" if total else f"step {step}"]
        loss = _num(data, "loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        tps = _num(data, "tokens_per_s")
        if tps is not None:
            parts.append(f"{tps:.0f} tok/s")
        parts.append(f"ETA {format_duration(_num(data, 'eta_s'))}")
        text = "  ".join(parts)
        if self.bar:
            filled = BAR_WIDTH * step // total if total > 0 else 0
            filled = max(0, min(BAR_WIDTH, filled))
            text = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] " + text
        return text

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_event(self, e: Event) -> None:
        d = e.data
        if e.type == "status":
            why = f" ({e.message})" if e.message else ""
            self._line(f"status: {d.get('previous') or '-'} -> {d.get('status')}{why}")
        elif e.type == "step":
            if self.bar:
                self.stream.write("\r" + self.status_line(d) + "\033[K")
                self.stream.flush()
                self._bar_open = True
            else:
                step = int(_num(d, "step") or 0)
                total = int(_num(d, "total_steps") or 0)
                every = max(1, total // 20)
                if step == 1 or step % every == 0 or step == total:
                    self._line(self.status_line(d))
        elif e.type == "eval":
            loss = _num(d, "eval_loss")
            if loss is None:
                loss = _num(d, "loss")
            if loss is not None:
                self.eval_loss = loss
                if self.first_eval_loss is None:
                    self.first_eval_loss = loss
            acc = _num(d, "eval_token_accuracy")
            # The step-0 eval of a job with held-out prompts: the base model's
            # answers (alone when the job has no validation data).
            heldout = _num(d, "heldout_accuracy")
            if heldout is not None and heldout < 0:
                heldout = None
            text = f"eval  step {int(_num(d, 'step') or 0)}/{int(_num(d, 'total_steps') or 0)}"
            if loss is not None or heldout is None:
                text += f"  loss {loss:.4f}" if loss is not None else "  loss ?"
            if acc is not None:
                text += f"  token accuracy {100 * acc:.1f}%"
            if heldout is not None:
                text += f"  held-out answers {100 * heldout:.1f}%"
            self._line(text)
        elif e.type == "checkpoint":
            self._line(f"checkpoint at step {int(_num(d, 'step') or 0)}" + (f": {e.message}" if e.message else ""))
        elif e.type in ("log", "start", "validation"):
            text = e.message or d.get("message") or ""
            if text:
                self._line(f"{e.type}: {text}")
        elif e.type == "error":
            self._line(f"error: {e.message or d.get('message') or d}")
        elif e.type == "done":
            loss = _num(d, "eval_loss")
            if loss is not None:
                self.eval_loss = loss
            self._line("done" + (f": {e.message}" if e.message else ""))

    def finish(self, job: Job) -> None:
        if job.status == "succeeded":
            where = (f": adapter at {job.result_adapter}" if job.result_adapter
                     else f": report at {job.result_report}" if job.result_report else "")
            self._line(f"job {job.id} succeeded{where}")
        elif job.status == "failed" and job.error is not None:
            self._line(f"job {job.id} failed: {job.error.code}: {job.error.message}")
        else:
            self._line(f"job {job.id} {job.status}")
