#!/usr/bin/env bash
# The whole student chain learned from a teacher fine-tuned on windows of long videos (issue 9; lead_in.sh is the
# probe that motivates it). Two levers, measured before one at a time, combined here into one teacher:
#   - more teacher training on clips that start anywhere carried shape over to 10-s videos (more_training.sh (b),
#     (c): 4000 more steps, shape 76.0% -> 81.5% on the previous world);
#   - clips that are windows of longer videos (`toyworld latents --lead-in 128`) stop the teacher pulling a bouncing
#     object that enters a clip along another diagonal towards (+, +) (lead_in.sh: pull 0.52 -> 0.10 px/frame).
# Steps (each skipped when its output exists; every train resumes from its newest checkpoint):
#   1. the teacher: lead_in.sh's 600-step windows teacher fine-tuned 3400 more steps on the same window clips
#      (4000 in all, as in more_training.sh (b)), and lead_in.sh's probe on it;
#   2. the student chain of train_all.sh from it: ODE pairs -> ODE init -> Stage 1 -> Stage 2 -> second phase;
#   3. the judge on the validation set (prompt seed 777, noise seed 20000) at 10 s, against the shipped model's
#      figures on the same videos (toyworld_bounce_world_student_val.json), and the 10-s bounce tracks.
# Step 1 needs lead_in.sh's runs (teacher_windows, the window latents) under runs/toyworld; with
# artifacts/toyworld/teacher_windows restored to runs/toyworld/windows_chain/teacher/export it starts at step 2.
# About 5 h on a slow 2-core CPU (steps 2-3 alone: ~2 h 40 min). Its model is the shipped one since 2026-12-05;
# train_all.sh now runs the same steps (teacher_windows.yaml, teacher_windows_2.yaml and the student chain).
#   bash experiments/toyworld/windows_chain.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/toyworld/chain.sh
RUN=runs/toyworld
LL=${LONGLIVE_JAX:-longlive-jax}
R=experiments/results
VAL="--prompt-seed 777 --noise-seed 20000"
W=$RUN/windows_chain
T=$W/teacher/export
mkdir -p $W $RUN/data
[ -e $T/longlive_jax.json ] || $LL train configs/toyworld/teacher_windows_2.yaml run_dir=$W/teacher
[ -e $R/toyworld_bounce_tracks_denoise_windows_chain.json ] || python experiments/toyworld/bounce_tracks.py \
  --teacher $T --vae $RUN/vae/export --latent-frames 9 --denoise 0.5,0.7,0.9 --lead-in 128 --num 40 \
  --out $R/toyworld_bounce_tracks_denoise_windows_chain.json
[ -e $RUN/data/prompts.npz ] || $LL toyworld prompts --out $RUN/data/prompts.npz --num 2000 --seed 0
[ -e $RUN/data/ode_prompts.npz ] || $LL toyworld prompts --out $RUN/data/ode_prompts.npz --num 480 --seed 1
[ -e $RUN/data/prompt_pairs.npz ] || $LL toyworld prompts --pairs --out $RUN/data/prompt_pairs.npz --num 2000 --seed 2
student_chain $T $W
[ -e $R/toyworld_windows_chain_val.json ] || python experiments/toyworld/evaluate.py --model $W/model \
  --rows shipped/seen/10s --cache $W/eval $VAL --out $R/toyworld_windows_chain_val.json
[ -e $R/toyworld_bounce_tracks_windows_chain.json ] || python experiments/toyworld/bounce_tracks.py --model $W/model \
  --out $R/toyworld_bounce_tracks_windows_chain.json --plot docs/toyworld_bounce_tracks_windows_chain.png
