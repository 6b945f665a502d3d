"""Measurements behind ``experiments/toyworld/ablations.py``: prompt sets, generation in batches, switch
adherence, per-block cost, and the markdown tables (rendered from the JSON, never typed by hand).

Conventions: lengths and switch positions are LATENT frames unless a name says ``video``; latent frame ``f``
starts at video frame ``render.latent_to_video_frame(f)`` (``4f - 3``) and a block of 3 latent frames is 12 video
frames. Accuracies are fractions in [0, 1] of judged windows (:mod:`longlive_jax.toyworld.judge`), NaN where no
window falls in a range. Videos are uint8 ``[N, T, H, W, 3]``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TRAIN_LEN = 9  # latent frames of a training clip and DMD window (33 video frames, ~2 s)
NOISE_SEED = 10_000  # noise of the evaluation; training draws come from the train states' keys (seed 0)
ATTRS = ("background", "colour", "shape", "motion", "all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
  """Sizes of one ablation run (:data:`FULL` or :data:`QUICK`). ``n_held_out=None``: every held-out combination."""

  n_seen: int
  n_held_out: int | None
  long_frames: int  # row 1 and 3 video length
  switch_frame: int  # row 2: the one switch, a multiple of the block
  switch_len: int  # row 2 video length
  bin_s: float  # time bins of accuracy over time (seconds)
  timing_blocks: int  # blocks of the per-block cost measurement (the first 2 are compile / warm-up)
  teacher_steps: tuple[int, ...]
  batch: int  # videos generated per call
  adherence_blocks: tuple[int, ...] = (1, 2, 4)

  def __post_init__(self):
    from longlive_jax.toyworld.render import latent_to_video_frame, num_video_frames

    if self.switch_frame % 3:
      raise ValueError(f"switch_frame {self.switch_frame} must be a multiple of the 3-frame block")
    need = latent_to_video_frame(self.switch_frame) + 12 * max(self.adherence_blocks)
    if need > num_video_frames(self.switch_len):
      raise ValueError(
        f"switch_len {self.switch_len} is too short for {max(self.adherence_blocks)} blocks of adherence"
      )


FULL = Plan(
  n_seen=100,
  n_held_out=None,
  long_frames=10 * TRAIN_LEN,
  switch_frame=2 * TRAIN_LEN,  # past the 9-frame window: the cache has rolled and global_sink matters
  switch_len=30,  # 4 blocks of adherence after the switch fit exactly
  bin_s=33 / 16,  # one training length per bin
  timing_blocks=24,
  teacher_steps=(4, 8, 16, 50),
  batch=50,
)
QUICK = Plan(  # every code path once, at the smallest sizes that still show a switch and time bins
  n_seen=2,
  n_held_out=1,
  long_frames=24,
  switch_frame=12,
  switch_len=24,
  bin_s=2.0,
  timing_blocks=4,
  teacher_steps=(4, 8),
  batch=8,
)


class MissingExport(Exception):
  """A stage export the requested rows need is absent (the message names the path and its producer)."""


def require(path: Path, producer: str) -> str:
  """``str(path)`` if it holds a checkpoint, else :class:`MissingExport` naming ``producer``."""
  if not (path / "longlive_jax.json").is_file():
    raise MissingExport(f"{path} is missing (no longlive_jax.json): it is produced by {producer}")
  return str(path)


# ----------------------------------------------------------------------------------------------------------
# Prompts


def prompt_sets(plan: Plan) -> dict[str, list[str]]:
  """``seen``: training combinations (fixed draw), ``held_out``: the held-out combinations, one prompt each."""
  from longlive_jax.toyworld import grammar

  rng = np.random.default_rng(4242)  # the same draw as experiments/toyworld/evaluate.py
  seen = [grammar.sample_attributes(rng, split="train").caption for _ in range(plan.n_seen)]
  held = [a.caption for a in grammar.split_combinations("held_out")][: plan.n_held_out]
  return {"seen": seen, "held_out": held}


def switch_scripts(plan: Plan) -> dict[str, list[list[str]]]:
  """Two-prompt scripts (a natural edit of one or two attributes). ``held_out``: switching INTO a held-out
  combination from a training combination near it."""
  from longlive_jax.toyworld import grammar

  rng = np.random.default_rng(4343)
  seen = []
  for _ in range(plan.n_seen):
    a = grammar.sample_attributes(rng, split="train")
    seen.append([a.caption, grammar.sample_switch(rng, a, split="train").caption])
  held = []
  for b in grammar.split_combinations("held_out")[: plan.n_held_out]:
    held.append([grammar.sample_switch(rng, b, split="train").caption, b.caption])
  return {"seen": seen, "held_out": held}


def flat(sets: dict[str, list]) -> tuple[list, dict[str, slice]]:
  """All items of the splits in one list, and each split's slice of it."""
  items, where = [], {}
  for name, xs in sets.items():
    where[name] = slice(len(items), len(items) + len(xs))
    items.extend(xs)
  return items, where


# ----------------------------------------------------------------------------------------------------------
# Generation and scores


def causal(models, scripts: Sequence[Sequence[str]], *, latent_frames: int, switch_frames=(), settings, batch: int):
  """``(videos [N, T, H, W, 3], seconds)``: :func:`~longlive_jax.toyworld.evaluate.causal_videos` in chunks of
  ``batch`` scripts (chunk ``i`` draws its noise from seed ``NOISE_SEED + i``); seconds include compilation."""
  from longlive_jax.toyworld import evaluate as ev

  out, t0 = [], time.perf_counter()
  for i, s in enumerate(range(0, len(scripts), batch)):
    v, _ = ev.causal_videos(
      *models,
      scripts[s : s + batch],
      latent_frames=latent_frames,
      switch_frames=switch_frames,
      seed=NOISE_SEED + i,
      settings=settings,
    )
    out.append(v)
  return np.concatenate(out), time.perf_counter() - t0


def adherence(videos: np.ndarray, scripts, *, switch_frame: int, blocks: Sequence[int]) -> dict[str, dict]:
  """Accuracy against the NEW prompt over the first ``k`` blocks after the switch, for each ``k`` in ``blocks``.

  Each video is judged with windows of one block (12 video frames) starting at the switch frame (no margin),
  so the first ``k`` windows of the new prompt cover exactly its first ``k`` blocks. Keys are ``str(k)``; per
  ``k``: the four attributes, ``all``, and ``changed`` / ``kept``: per video the mean accuracy of the attributes
  the switch changes / leaves alone, averaged over the videos. ``changed`` is obedience to the edit itself;
  ``all`` is bounded by how often the model gets every attribute right without any switch.
  """
  from longlive_jax.toyworld import grammar, judge
  from longlive_jax.toyworld.render import FPS, latent_to_video_frame

  vf = latent_to_video_frame(switch_frame)
  parts = ATTRS[:-1]  # background, colour, shape, motion
  out = {}
  scores = [
    judge.judge_video(v, prompts=list(s), switch_frames=[vf], window=12, margin=0)
    for v, s in zip(videos, scripts, strict=True)
  ]
  changed = []  # per script: which of the four attributes the switch changes
  for s in scripts:
    old, new = grammar.parse(s[0]), grammar.parse(s[-1])
    changed.append({a: getattr(old, a) != getattr(new, a) for a in parts})
  for k in blocks:
    accs = [x.accuracy_between(vf / FPS, (vf + 12 * k) / FPS) for x in scores]
    res = {a: float(np.nanmean([acc[a] for acc in accs])) for a in ATTRS}
    for name, pick in (("changed", True), ("kept", False)):
      per_video = []
      for acc, ch in zip(accs, changed, strict=True):
        sel = [a for a in parts if ch[a] == pick]
        per_video.append(float(np.mean([acc[a] for a in sel])) if sel else float("nan"))
      res[name] = float(np.nanmean(per_video))
    out[str(k)] = res
  return out


def ground_truth(scripts, *, switch_frame: int, latent_frames: int) -> np.ndarray:
  """The world's own renders of switch scripts (``render.Scene.from_prompts``, scene seed = script index)."""
  from longlive_jax.toyworld.render import Scene, latent_to_video_frame, num_video_frames, render

  vf = [latent_to_video_frame(switch_frame)]
  t = num_video_frames(latent_frames)
  return np.stack([render(Scene.from_prompts(s, seed=i, switch_frames=vf), t) for i, s in enumerate(scripts)])


def split_scores(videos: np.ndarray, scripts, where: dict[str, slice], *, switch_frames=(), bin_s: float, plan=None):
  """Per split: :func:`~longlive_jax.toyworld.evaluate.score`, plus switch adherence when ``plan`` is given."""
  from longlive_jax.toyworld import evaluate as ev

  out = {}
  for name, sl in where.items():
    if sl.stop == sl.start:
      continue
    vs, ss = videos[sl], scripts[sl]
    out[name] = ev.score(vs, ss, switch_frames=switch_frames, bin_s=bin_s)
    if plan is not None:
      out[name]["adherence"] = adherence(vs, ss, switch_frame=switch_frames[0], blocks=plan.adherence_blocks)
  return out


# ----------------------------------------------------------------------------------------------------------
# Cost


def block_cost(models, *, settings, blocks: int, prompt: str) -> dict:
  """Warm cost of one block at batch 1: median wall ms of the DiT block step (4 steps + commit) and of the
  block including its streaming VAE decode (blocks 2.. of ``blocks``; 0 and 1 compile), video frames/s, and
  the analytic matmul FLOPs of the block step (:func:`longlive_jax.stream.flops.block_flops`, masked slots
  included)."""
  import jax
  import jax.numpy as jnp

  from longlive_jax.stream.flops import block_flops
  from longlive_jax.stream.noise import BlockShape, KeyNoise
  from longlive_jax.toyworld.evaluate import streamer
  from longlive_jax.toyworld.render import LATENT_SIZE
  from longlive_jax.vae.stream import decode_step, init_decode_cache

  dit, vae, enc = models
  st = streamer(dit, settings)
  spec = st.spec
  shape = BlockShape(batch=1, frames=spec.block_frames, height=LATENT_SIZE, width=LATENT_SIZE, channels=dit.cfg.in_dim)
  sess = st.session(KeyNoise(jax.random.key(0), shape=shape, num_steps=4), jnp.asarray(enc([prompt])), batch=1)
  cache = init_decode_cache(vae, batch=1, height=LATENT_SIZE, width=LATENT_SIZE)
  dit_s, total_s = [], []
  for _ in range(blocks):
    t0 = time.perf_counter()
    _, x0, _ = sess.next_block()
    x0.block_until_ready()
    t1 = time.perf_counter()
    px, cache = decode_step(vae, cache, x0)
    px.block_until_ready()
    dit_s.append(t1 - t0)
    total_s.append(time.perf_counter() - t0)
  dit_med, total_med = statistics.median(dit_s[2:]), statistics.median(total_s[2:])
  flops = block_flops(dit.cfg, spec, num_steps=4)
  return {
    "dit_ms_per_block": 1e3 * dit_med,
    "ms_per_block": 1e3 * total_med,
    "video_fps": 4 * spec.block_frames / total_med,
    "gflop_per_block": 1e-9 * flops["per_block"],
    "kv_tokens": flops["kv_tokens"],
    "timed_blocks": blocks - 2,
  }


def teacher_speed(models, *, num_steps: int, prompt: str) -> dict:
  """Warm video frames/s of the teacher (batch 1, training length, VAE decode included): the second of two
  identical calls (the first compiles)."""
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld.render import num_video_frames

  for _ in range(2):
    _, timing = ev.teacher_videos(*models, [prompt], latent_frames=TRAIN_LEN, seed=NOISE_SEED, num_steps=num_steps)
  return {"video_fps": num_video_frames(TRAIN_LEN) / timing["seconds"], "seconds": timing["seconds"]}


# ----------------------------------------------------------------------------------------------------------
# Markdown


def pct(x) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _bins(r: dict, attr: str = "all") -> str:
  """``first / middle / last`` bin accuracy of ``attr``, with the bins' times."""
  b = r["over_time"]
  pick = [b[0], b[len(b) // 2], b[-1]] if len(b) > 2 else b
  return " / ".join(f"{pct(x[attr])} ({x['start_s']:.0f}-{x['end_s']:.0f} s)" for x in pick)


def _not_run(label: str, r: dict, cols: int) -> str:
  return f"| {label} | {r.get('status', 'not run')}: `{r.get('path', '')}` |" + " |" * (cols - 2)


def markdown(res: dict) -> str:
  """The four ablation tables of a result JSON (``ablations.py --out``) as markdown."""
  rows, plan, parts = res["rows"], res["plan"], []
  parts.append("LongLive's claims (how the criteria were set: README):\n\n" + claims_markdown(res))
  parts.append(
    f"Long videos ({plan['long_frames']} latent frames; training length {TRAIN_LEN}). Accuracy (all attributes) "
    "first / middle / last time bin:\n\n| model | prompts | accuracy over time | overall | quality first / last |\n"
    "| --- | --- | --- | --- | --- |"
  )
  for key, r in rows.items():
    if key.startswith("long/"):
      if "splits" not in r:
        parts[-1] += "\n" + _not_run(r["label"], r, 5)
        continue
      for split, s in r["splits"].items():
        parts[-1] += (
          f"\n| {r['label']} | {split} ({s['videos']}) | {_bins(s)} | {pct(s['accuracy']['all'])} | "
          f"{s['quality_first']:.3f} / {s['quality_last']:.3f} |"
        )
  ks = plan["adherence_blocks"]
  parts.append(
    f"Prompt switches (switch at latent frame {plan['switch_frame']}, past the window). Adherence to the new "
    "prompt within k blocks: `changed` = the attributes the switch changes (obedience to the edit), `kept` = those "
    "it leaves alone, `all` = every attribute right in a window; smoothness at the switch (continuous fraction, "
    "median jump px, median spike relative to the world's change):\n\n| variant | prompts | "
    + " | ".join(f"changed, {k} block{'s' * (k > 1)}" for k in ks)
    + f" | kept, {ks[1]} blocks | all, {ks[1]} blocks | continuous | jump px | relative spike |\n|"
    + " --- |" * (len(ks) + 7)
  )
  for key, r in rows.items():
    if key.startswith("switch/"):
      if "splits" not in r:
        parts[-1] += "\n" + _not_run(r["label"], r, len(ks) + 7)
        continue
      for split, s in r["splits"].items():
        sw, adh = s["switches"][0], s["adherence"]
        cells = [pct(adh[str(k)]["changed"]) for k in ks] + [pct(adh[str(ks[1])][a]) for a in ("kept", "all")]
        parts[-1] += (
          f"\n| {r['label']} | {split} ({s['videos']}) | {' | '.join(cells)} | {pct(sw['continuous'])} | "
          f"{sw['jump_px']:.2f} | {sw['relative_spike']:.2f} |"
        )
  parts.append(
    "Attention (shipped model). Long-range consistency: accuracy (all) first / middle / last bin, background and shape "
    "first -> last bin; cost per block at batch 1 (DiT block step; with VAE decode):\n\n"
    "| attention | prompts | accuracy over time | background | shape | ms / block | ms / block + decode | "
    "GFLOP / block |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
  )
  for key, r in rows.items():
    if key.startswith("attention/"):
      if "splits" not in r:
        parts[-1] += "\n" + _not_run(r["label"], r, 8)
        continue
      c = r["cost"]
      for split, s in r["splits"].items():
        first, last = s["over_time"][0], s["over_time"][-1]
        parts[-1] += (
          f"\n| {r['label']} | {split} ({s['videos']}) | {_bins(s)} | {pct(first['background'])} -> "
          f"{pct(last['background'])} | {pct(first['shape'])} -> {pct(last['shape'])} | {c['dit_ms_per_block']:.1f} | "
          f"{c['ms_per_block']:.1f} | {c['gflop_per_block']:.2f} |"
        )
  parts.append(
    f"Sampling steps ({TRAIN_LEN} latent frames). Video frames/s warm, batch 1, VAE decode included:\n\n"
    "| generator | prompts | " + " | ".join(ATTRS) + " | frames/s |\n|" + " --- |" * (len(ATTRS) + 3)
  )
  for key, r in rows.items():
    if key.startswith("steps/"):
      if "splits" not in r:
        parts[-1] += "\n" + _not_run(r["label"], r, len(ATTRS) + 3)
        continue
      for split, s in r["splits"].items():
        acc = " | ".join(pct(s["accuracy"][a]) for a in ATTRS)
        parts[-1] += f"\n| {r['label']} | {split} ({s['videos']}) | {acc} | {r['speed']['video_fps']:.1f} |"
  return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Claims: a verdict per LongLive claim from the rows, by the criteria below (README: how they were set)

CLAIMS = (
  (
    "streaming long tuning removes quality decay on long videos",
    "Stage 2's accuracy (all) in the last time bin is above Stage 1's, and it falls less from the first bin to the "
    "last than Stage 1's",
  ),
  (
    "KV-recache makes switches smooth and obedient to the new prompt",
    "recache gets the attributes the switch changes right within 2 blocks at least 5 points more often than keep "
    "cache (obedient) and is at least as continuous as clear cache with a smaller median jump (smooth)",
  ),
  (
    "training with the recache helps the switches it makes",
    "of the two 300-step Stage 2 runs, the one trained with recache gets the changed attributes right within 2 "
    "blocks at least 2 points more often than the one trained without, with a median jump no larger",
  ),
  (
    "a short window + frame sink keeps long-range consistency at a fraction of the cost",
    "window 9 + sink 3 is within 5 points of full causal attention in the last bin (all) at fewer GFLOP per block "
    "(full causal's grow with the video, the window's do not), and the sink matters: the last bin of window 9 "
    "without sink is below it",
  ),
  (
    "a few-step causal student runs in real time near the teacher's quality",
    "the 4-step student is within 10 points (all) of the teacher at 50 steps and streams at least 16 video "
    "frames/s (batch 1, decode included)",
  ),
)


def _get(rows: dict, key: str, split: str) -> dict | None:
  r = rows.get(key, {})
  return r.get("splits", {}).get(split)


def _last(s: dict) -> dict:
  return s["over_time"][-1]


def _first(s: dict) -> dict:
  return s["over_time"][0]


def _second_half(s: dict) -> float:
  """Informational: mean (all) of the bins in the video's second half (the last bin is one point of an
  oscillation: objects wrap across the 64-px frame every ~5 s)."""
  bins = s["over_time"]
  return float(np.nanmean([b["all"] for b in bins[len(bins) // 2 :]]))


def _claim_long(rows, split):
  s1, s2 = _get(rows, "long/self_forcing", split), _get(rows, "long/streaming_long", split)
  if not (s1 and s2):
    return None
  f = {
    "stage1_first": _first(s1)["all"],
    "stage1_last": _last(s1)["all"],
    "stage2_first": _first(s2)["all"],
    "stage2_last": _last(s2)["all"],
    "stage1_second_half": _second_half(s1),
    "stage2_second_half": _second_half(s2),
  }
  fall1, fall2 = f["stage1_first"] - f["stage1_last"], f["stage2_first"] - f["stage2_last"]
  return f, f["stage2_last"] > f["stage1_last"] and fall2 < fall1


def _claim_recache(rows, split):
  rc, kp, cl = (_get(rows, f"switch/{k}", split) for k in ("recache", "keep", "clear"))
  if not (rc and kp and cl):
    return None
  f = {
    "recache_changed_2": rc["adherence"]["2"]["changed"],
    "keep_changed_2": kp["adherence"]["2"]["changed"],
    "recache_continuous": rc["switches"][0]["continuous"],
    "clear_continuous": cl["switches"][0]["continuous"],
    "recache_jump_px": rc["switches"][0]["jump_px"],
    "clear_jump_px": cl["switches"][0]["jump_px"],
  }
  obedient = f["recache_changed_2"] >= f["keep_changed_2"] + 0.05
  smooth = f["recache_continuous"] >= f["clear_continuous"] and f["recache_jump_px"] < f["clear_jump_px"]
  return f, obedient and smooth


def _claim_trained_recache(rows, split):
  tw, tn = _get(rows, "switch/recache_trained_300", split), _get(rows, "switch/norecache_trained_300", split)
  if not (tw and tn):
    return None
  f = {
    "trained_with_changed_2": tw["adherence"]["2"]["changed"],
    "trained_without_changed_2": tn["adherence"]["2"]["changed"],
    "trained_with_jump_px": tw["switches"][0]["jump_px"],
    "trained_without_jump_px": tn["switches"][0]["jump_px"],
  }
  better = f["trained_with_changed_2"] >= f["trained_without_changed_2"] + 0.02
  return f, better and f["trained_with_jump_px"] <= f["trained_without_jump_px"]


def _claim_window_sink(rows, split):
  ws, wn, full = (_get(rows, f"attention/{k}", split) for k in ("w9_sink3", "w9_nosink", "full"))
  if not (ws and wn and full):
    return None
  f = {
    "window_sink_last": _last(ws)["all"],
    "full_last": _last(full)["all"],
    "no_sink_last": _last(wn)["all"],
    "window_sink_second_half": _second_half(ws),
    "full_second_half": _second_half(full),
    "no_sink_second_half": _second_half(wn),
    "window_sink_gflop": rows["attention/w9_sink3"]["cost"]["gflop_per_block"],
    "full_gflop": rows["attention/full"]["cost"]["gflop_per_block"],
    "window_sink_last_background": _last(ws)["background"],
    "no_sink_last_background": _last(wn)["background"],
    "window_sink_last_shape": _last(ws)["shape"],
    "no_sink_last_shape": _last(wn)["shape"],
  }
  ok = (
    f["window_sink_last"] >= f["full_last"] - 0.05
    and f["window_sink_gflop"] < f["full_gflop"]
    and f["no_sink_last"] < f["window_sink_last"]
  )
  return f, ok


def _claim_student(rows, split):
  st, t50 = _get(rows, "steps/student", split), _get(rows, "steps/teacher_50", split)
  if not (st and t50):
    return None
  f = {
    "student_all": st["accuracy"]["all"],
    "teacher_50_all": t50["accuracy"]["all"],
    "student_fps": rows["steps/student"]["speed"]["video_fps"],
    "teacher_50_fps": rows["steps/teacher_50"]["speed"]["video_fps"],
  }
  return f, f["student_all"] >= f["teacher_50_all"] - 0.10 and f["student_fps"] >= 16


_CLAIM_TESTS = (_claim_long, _claim_recache, _claim_trained_recache, _claim_window_sink, _claim_student)


def claims(res: dict, *, split: str = "seen") -> list[dict]:
  """Each of :data:`CLAIMS` with ``verdict`` ("reproduced", "not reproduced" or "not measured": a row missing),
  the ``criterion`` and the ``figures`` behind it (fractions / px / GFLOP / frames/s) on ``split``."""
  verdicts = []
  for (claim, criterion), test in zip(CLAIMS, _CLAIM_TESTS, strict=True):
    got = test(res["rows"], split)
    figures, verdict = (None, "not measured") if got is None else (got[0], "reproduced" if got[1] else "not reproduced")
    verdicts.append({"claim": claim, "criterion": criterion, "verdict": verdict, "split": split, "figures": figures})
  return verdicts


def _fig(k: str, v: float) -> str:
  if k.endswith(("_px", "_gflop", "_fps")):
    return f"{k} {v:.2f}"
  return f"{k} {pct(v)}%"


def claims_markdown(res: dict) -> str:
  """The claims table: verdict and figures on the seen prompts, and the verdict on the held-out ones."""
  seen, held = claims(res, split="seen"), claims(res, split="held_out")
  lines = ["| claim | seen prompts | held out | criterion | figures (seen) |", "| --- | --- | --- | --- | --- |"]
  for s, h in zip(seen, held, strict=True):
    figs = "; ".join(_fig(k, v) for k, v in (s["figures"] or {}).items())
    lines.append(f"| {s['claim']} | {s['verdict']} | {h['verdict']} | {s['criterion']} | {figs} |")
  return "\n".join(lines)
