#!/usr/bin/env bash
# Reproduces the shipped toy-world model from scratch with the project's own CLI, stage by stage:
#   text encoder (pretrained on the grammar) -> VAE (4x in space and time) -> its decoder fine-tuned on noisy
#   latents (the encoder frozen; the shipped model decodes with it) -> data -> bidirectional teacher on
#   centred clips -> the teacher fine-tuned on clips that start anywhere -> then on clips that are windows of
#   longer videos (two runs) -> its ODE pairs -> ODE init -> Self-Forcing DMD (Stage 1) -> streaming long tuning
#   with switches and recache (Stage 2) -> Stage 2's second phase -> teacher-forced blocks on clips with and
#   without switches (the forced stage) -> Stage 2's third phase -> the forced stage on bounce-heavy clips, then on
#   the mix with switches -> Stage 2's third phase again, two ways, and the average of their weights ->
#   whole-model checkpoint. Every student stage
#   learns from the last teacher (step 2d).
# Resumable: every `longlive-jax train` resumes from its newest checkpoint and every data file that exists
# is kept, so running this again after an interruption continues where it stopped. Wall time of each step
# is appended to $RUN/timing.jsonl (finished steps are marked in $RUN/done/). Usage: bash experiments/toyworld/train_all.sh [OUT_MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
DATA=$RUN/data
OUT=${1:-longlive_jax/toyworld/default_model}
LL=${LONGLIVE_JAX:-longlive-jax}
mkdir -p "$DATA"
exec > >(tee -a "$RUN/train_all.log") 2>&1  # the whole run's output is also kept in $RUN/train_all.log

step() {  # step NAME COMMAND...: runs COMMAND unless it finished before ($RUN/done/NAME), and times it
  local name=$1
  shift
  if [ -e "$RUN/done/$name" ]; then echo "== $name: done"; return; fi
  echo "== $name"
  local t0=$(date +%s)
  "$@"
  echo "{\"step\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$RUN/timing.jsonl"
  mkdir -p "$RUN/done" && touch "$RUN/done/$name"
}

step text $LL toyworld text --out longlive_jax/toyworld/text_encoder.npz
step vae $LL train configs/toyworld/vae.yaml
# The decoder fine-tuned on noisy latents (the vae_decoder config says why): the encoder and its statistics stay
# step 1's, so the latents below and every model trained on them do not depend on it; only the assembly uses it.
step vae-decoder $LL train configs/toyworld/vae_decoder.yaml
step latents $LL toyworld latents --vae "$RUN/vae/export" --out "$DATA/latents_f9.npz" --num 4000 \
  --latent-frames 9 --centre-fraction 0.7 --seed 11
# The teacher in one run on 9-latent clips, 70% starting near the centre (configs/toyworld/teacher.yaml says why).
step teacher $LL train configs/toyworld/teacher.yaml
# The teacher again, fine-tuned on clips that start anywhere: the centred clips of step 2 make a teacher that pulls
# an object that wrapped around an edge back into the middle (configs/toyworld/teacher_uniform.yaml).
step latents-uniform $LL toyworld latents --vae "$RUN/vae/export" --out "$DATA/latents_f9_uniform.npz" --num 4000 \
  --latent-frames 9 --centre-fraction 0 --seed 13
step teacher-uniform $LL train configs/toyworld/teacher_uniform.yaml
# And on clips that are windows of longer videos (the world runs 0-128 frames before each clip), so that the teacher
# has seen a bouncing object enter a clip along every diagonal (configs/toyworld/teacher_windows.yaml); 600 + 3400
# steps in two runs, as the shipped model was trained. Every student stage below learns from this one.
step latents-windows $LL toyworld latents --vae "$RUN/vae/export" --out "$DATA/latents_f9_windows.npz" --num 4000 \
  --latent-frames 9 --centre-fraction 0 --lead-in 128 --seed 13
step teacher-windows $LL train configs/toyworld/teacher_windows.yaml
step teacher-windows-2 $LL train configs/toyworld/teacher_windows_2.yaml
step prompts $LL toyworld prompts --out "$DATA/prompts.npz" --num 2000 --seed 0
step ode-prompts $LL toyworld prompts --out "$DATA/ode_prompts.npz" --num 480 --seed 1
step prompt-pairs $LL toyworld prompts --pairs --out "$DATA/prompt_pairs.npz" --num 2000 --seed 2
step ode-pairs $LL toyworld ode-pairs --teacher "$RUN/teacher_windows_2/export" \
  --prompts "$DATA/ode_prompts.npz" --out "$DATA/ode_pairs.npz" --latent-frames 9
step ode-init $LL train configs/toyworld/ode_init.yaml
step self-forcing $LL train configs/toyworld/self_forcing.yaml
step streaming-long $LL train configs/toyworld/streaming_long.yaml
step streaming-long-2 $LL train configs/toyworld/streaming_long_2.yaml
# Teacher-forced blocks (the forced stage) on window clips, half of them with a prompt switch at a block boundary:
# removes the jump at block boundaries that the DMD stages put in; then a short third phase of Stage 2.
step latents-switch $LL toyworld latents --vae "$RUN/vae/export" --out "$DATA/latents_f9_switch.npz" --num 4000 \
  --latent-frames 9 --centre-fraction 0 --lead-in 128 --seed 14 --caption-dropout 0 --switch-prob 0.5
step forced-switch $LL train configs/toyworld/forced_switch.yaml
step streaming-long-3 $LL train configs/toyworld/streaming_long_3.yaml
# The forced stage again, first on window clips of which about 80% bounce (the true past only), then on the usual mix
# with bounces drawn 4x and half the clips switching, then Stage 2's third phase once more (streaming_long_4.yaml):
# the students learn to continue a bounce's diagonal from their past (experiments/toyworld/bounce_heavy.sh says how
# this was found; its rows heavy, mix and mix_dmd).
W="--vae $RUN/vae/export --latent-frames 9 --centre-fraction 0 --lead-in 128 --caption-dropout 0"
step latents-bounce20 $LL toyworld latents $W --out "$DATA/latents_f9_bounce20.npz" --num 1500 --seed 17 \
  --motion-weight bounces=20
step forced-bounce-heavy $LL train configs/toyworld/forced_bounce_heavy.yaml
step latents-switch-b4 $LL toyworld latents $W --out "$DATA/latents_f9_switch_b4.npz" --num 3000 --seed 19 \
  --switch-prob 0.5 --motion-weight bounces=4
step forced-bounce-mix $LL train configs/toyworld/forced_bounce_mix.yaml
step streaming-long-4 $LL train configs/toyworld/streaming_long_4.yaml
# Two more runs of that phase from the same start, and the average of their weights (the shipped DiT since
# 2026-12-06, session 41; bounce_heavy.sh's rows mix_dmd1500, mix_dmd_b3 and soup_1500_b3): the phase run on to
# 1500 steps (a copy of step 11's step-1000 checkpoint resumed: the learning rate is constant, so this is one
# 1500-step run) draws motions better and held-out shapes worse; 1000 steps with bouncing prompts drawn 3x in the
# prompt pairs draws shapes better; the half-and-half average keeps the better side of each.
. experiments/toyworld/run_helpers.sh  # continue_run SRC_RUN STEP DST_RUN CONFIG [OVERRIDES...]
step streaming-long-4-1500 continue_run "$RUN/streaming_long_4" 1000 "$RUN/streaming_long_4_1500" \
  configs/toyworld/streaming_long_4.yaml steps=1500
step prompt-pairs-b3 $LL toyworld prompts --pairs --out "$DATA/prompt_pairs_b3.npz" --num 2000 --seed 2 \
  --motion-weight bounces=3
step streaming-long-4-b3 $LL train configs/toyworld/streaming_long_4.yaml run_dir="$RUN/streaming_long_4_b3" \
  data.source="$DATA/prompt_pairs_b3.npz"
step soup python experiments/toyworld/soup.py --a "$RUN/streaming_long_4_1500/export" \
  --b "$RUN/streaming_long_4_b3/export" --alpha 0.5 --out "$RUN/streaming_long_4_soup/export"
python - "$RUN" > "$RUN/record.json" <<'PY'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
timing = [json.loads(l) for l in (run / "timing.jsonl").read_text().splitlines() if l.strip()]
last = {}
for stage in ("vae", "vae_decoder", "teacher", "teacher_uniform", "teacher_windows", "teacher_windows_2", "ode_init", "self_forcing", "streaming_long", "streaming_long_2", "forced_switch", "streaming_long_3", "forced_bounce_heavy", "forced_bounce_mix", "streaming_long_4", "streaming_long_4_1500", "streaming_long_4_b3"):
  log = run / stage / "logs" / "metrics.jsonl"  # absent for a stage restored from artifacts/ (no logs kept)
  lines = log.read_text().splitlines() if log.exists() else []
  last[stage] = json.loads(lines[-1]) if lines else {}
print(json.dumps({"training": {"timing": timing, "total_seconds": sum(t["seconds"] for t in timing), "last_metrics": last}}))
PY
$LL toyworld assemble --dit "$RUN/streaming_long_4_soup/export" --vae "$RUN/vae_decoder/export" --out "$OUT" --meta "$RUN/record.json" --rope-horizon 15 --overwrite
