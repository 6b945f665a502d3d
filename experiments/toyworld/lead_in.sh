#!/usr/bin/env bash
# Why the students lose `bounces` on long videos, and a fix (issue 9). A bouncing object sets off (+x, +y) at the
# start of a video, and every training clip of the teachers started a video, so no teacher ever saw a bouncing
# object enter a clip along another diagonal. The windows the DMD teacher scores in Stages 1 and 2 come from
# anywhere in a long rollout; shown such a window, the students' teacher pulls it towards (+, +) (probe 1), and the
# students end up in the down-right corner (bounce_tracks.py). The fix: the teacher fine-tuned on clips that are
# windows of longer videos (`toyworld latents --lead-in 128`: the world runs 0-128 frames, one bounce cycle,
# before each clip), then the students learn from it.
#   1. probe: bounce_tracks.py --denoise on such windows, the students' teacher (artifacts/toyworld/teacher_uniform)
#   2. its fine-tune on window clips (600 steps from it; train_all.sh's teacher-uniform step does the whole 2000
#      from the centred teacher on the same data), and the probe again
#   3. a third Stage 2 phase (streaming_long_2.yaml, 1500 steps) from the shipped DiT with that teacher as the
#      DMD teacher and critic; judged on the validation set (prompt seed 777, noise seed 20000; the shipped
#      model's figures on it: toyworld_bounce_world_student_val.json) and by bounce_tracks.py's 10-s tracks;
#   4. the control: the same third phase with the shipped recipe's teacher.
# Untracked runs under runs/toyworld (restored from artifacts/ as artifacts/README.md says). Every train resumes.
#   bash experiments/toyworld/lead_in.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
LL=${LONGLIVE_JAX:-longlive-jax}
R=experiments/results
VAL="--prompt-seed 777 --noise-seed 20000"
mkdir -p $RUN/data $RUN/vae
[ -e $RUN/vae/export ] || cp -r artifacts/toyworld/vae $RUN/vae/export
[ -e $RUN/teacher_uniform/export ] || python experiments/toyworld/snapshot.py restore artifacts/toyworld/teacher_uniform \
  $RUN/teacher_uniform/export
[ -e $RUN/shipped_dit/export ] || python experiments/toyworld/snapshot.py restore longlive_jax/toyworld/default_model \
  $RUN/shipped_dit/export
[ -e $RUN/data/latents_f9_windows.npz ] || $LL toyworld latents --vae $RUN/vae/export \
  --out $RUN/data/latents_f9_windows.npz --num 4000 --latent-frames 9 --centre-fraction 0 --lead-in 128 --seed 13
[ -e $RUN/data/prompt_pairs.npz ] || $LL toyworld prompts --pairs --out $RUN/data/prompt_pairs.npz --num 2000 --seed 2
probe() {  # probe TEACHER_EXPORT OUT.json
  python experiments/toyworld/bounce_tracks.py --teacher "$1" --vae $RUN/vae/export --latent-frames 9 \
    --denoise 0.5,0.7,0.9 --lead-in 128 --num 40 --out "$2"
}
[ -e $R/toyworld_bounce_tracks_denoise_windows.json ] || probe $RUN/teacher_uniform/export \
  $R/toyworld_bounce_tracks_denoise_windows.json
T=$RUN/teacher_windows/export
[ -e $T/longlive_jax.json ] || $LL train configs/toyworld/teacher_windows.yaml  # 600 steps from teacher_uniform
[ -e $R/toyworld_bounce_tracks_denoise_windows_tuned.json ] || probe $T $R/toyworld_bounce_tracks_denoise_windows_tuned.json
P=$RUN/phase3_windows
[ -e $P/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_2.yaml run_dir=$P \
  model.checkpoint=$RUN/shipped_dit/export options.teacher.checkpoint=$T options.critic.checkpoint=$T
[ -e $P/model/longlive_jax.json ] || $LL toyworld assemble --dit $P/export --vae $RUN/vae/export --out $P/model --overwrite
[ -e $R/toyworld_lead_in_val.json ] || python experiments/toyworld/evaluate.py --model $P/model \
  --rows shipped/seen/10s --cache $RUN/eval_lead_in $VAL --out $R/toyworld_lead_in_val.json
[ -e $R/toyworld_bounce_tracks_lead_in.json ] || python experiments/toyworld/bounce_tracks.py --model $P/model \
  --out $R/toyworld_bounce_tracks_lead_in.json --plot docs/toyworld_bounce_tracks_lead_in.png
# the control: the same third phase with the shipped recipe's teacher (clips that start a video)
C=$RUN/phase3_control
[ -e $C/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_2.yaml run_dir=$C \
  model.checkpoint=$RUN/shipped_dit/export options.teacher.checkpoint=$RUN/teacher_uniform/export \
  options.critic.checkpoint=$RUN/teacher_uniform/export
[ -e $C/model/longlive_jax.json ] || $LL toyworld assemble --dit $C/export --vae $RUN/vae/export --out $C/model --overwrite
[ -e $R/toyworld_lead_in_control_val.json ] || python experiments/toyworld/evaluate.py --model $C/model \
  --rows shipped/seen/10s --cache $RUN/eval_control $VAL --out $R/toyworld_lead_in_control_val.json
