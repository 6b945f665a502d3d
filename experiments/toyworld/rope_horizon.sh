#!/usr/bin/env bash
# The RoPE horizon (README, "the RoPE horizon"; 2026-12-06, session 43): how it was found, chosen and judged.
#   bash experiments/toyworld/rope_horizon.sh     (about 50 min here; every step resumes or is cached)
# 1. Where in a 10-s video the shipped DiT goes wrong, with absolute positions and with the horizon it ships with:
#    accuracy per 16-frame window, per motion and per shape, on the 300 prompts (toyworld_window_accuracy.json).
# 2. The choice of positions on those 300 prompts: infinity mode and horizons 15, 21, 24 (toyworld_stream_settings.json;
#    absolute positions: toyworld_eval_val300.json before this session, the row of evaluate.py).
# 3. The shipped model's rows of the evidence table and of the 300 prompts, streamed as `generate` streams it
#    (its metadata: toyworld assemble --rope-horizon 15 in train_all.sh); move the cached shipped rows away first
#    when the model changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=longlive_jax/toyworld/default_model
python experiments/toyworld/window_accuracy.py --variant base --variant relative_rope=1,rope_horizon=15 \
  --out experiments/results/toyworld_window_accuracy.json
python experiments/toyworld/stream_settings.py --model $M --set val300 --variant relative_rope=1,rope_horizon=21 \
  --variant relative_rope=1,rope_horizon=15 --variant relative_rope=1 --variant relative_rope=1,rope_horizon=24 \
  --out experiments/results/toyworld_stream_settings.json
python experiments/toyworld/evaluate.py --rows shipped/seen/10s,shipped/held_out/10s,shipped/seen/2min \
  --out experiments/results/toyworld_eval.json
python experiments/toyworld/evaluate.py --run runs/toyworld --seen 300 --prompt-seed 778 --noise-seed 30000 \
  --cache runs/toyworld/eval_val300 --rows shipped/seen/10s --out experiments/results/toyworld_eval_val300.json
