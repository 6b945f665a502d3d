#!/usr/bin/env bash
# Judges one student DiT the way forced_tune.sh and bounce_tune.sh compare them: assembled with the shipped decoder,
# the forced probe (forced_student.py: 48 clips of 21 latents, and 24 bouncing clips), the evidence table's 100 seen
# prompts and 54 held-out combinations (10-s videos), the validation set (prompt seed 777, noise seed 20000) and the
# ablations' switch/recache row (100 switches; skipped with NO_SWITCH=1). Every output that exists is kept.
# VAE=PATH decodes with another VAE (default: the shipped decoder, runs/toyworld/vae_decoder/export).
#   [VAE=PATH] bash experiments/toyworld/judge_dit.sh NAME DIT_EXPORT OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
v=$1 dit=$2 E=$3
RUN=runs/toyworld
LL=${LONGLIVE_JAX:-longlive-jax}
VAE=${VAE:-$RUN/vae_decoder/export}
mkdir -p "$E"
[ -e $E/model_$v/longlive_jax.json ] || $LL toyworld assemble --dit $dit --vae $VAE --out $E/model_$v --overwrite
[ -e $E/probe_$v.json ] || python experiments/toyworld/forced_student.py --dit $dit --vae $VAE --free \
  --out $E/probe_$v.json
[ -e $E/bounce_$v.json ] || python experiments/toyworld/forced_student.py --dit $dit --vae $VAE --free \
  --clips 24 --motion bounces --out $E/bounce_$v.json  # bouncing clips only
python experiments/toyworld/evaluate.py --run $RUN --model $E/model_$v --seen 100 --cache $E/cache_$v \
  --rows shipped/seen/10s,shipped/held_out/10s --out $E/eval_$v.json
python experiments/toyworld/evaluate.py --run $RUN --model $E/model_$v --seen 100 --cache $E/val_cache_$v \
  --prompt-seed 777 --noise-seed 20000 --rows shipped/seen/10s --out $E/val_$v.json
[ -e $E/switch_$v.json ] || [ "${NO_SWITCH:-0}" = 1 ] || python experiments/toyworld/ablations.py \
  --model $E/model_$v --rows switch/recache --cache $E/abl_$v --out $E/switch_$v.json --plots $E/plots_$v --no-train
