#!/usr/bin/env bash
# Where along the recipe's chain the first frame's colour goes wrong (the orange first frame of the shipped model):
# every student stage of train_all.sh's chain (ODE init, Stage 1, Stage 2 and its second phase, the forced stage,
# Stage 2's third phase = the shipped DiT), each assembled with the shipped decoder, and the teachers (the students'
# one, teacher_windows_2, and the first, centred one), through first_frame_colour.py
# (the first block of 60 seen prompts: the object's colour per frame and, per prompted colour, its mean RGB and
# area at frames 0 and 8), and the students' teacher at CFG 1, 2 and 3. Results:
# experiments/results/toyworld_first_frame_chain.json, toyworld_first_frame_cfg.json.
#   bash experiments/toyworld/first_frame_chain.sh   (after train_all.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/first_frame_chain
LL=${LONGLIVE_JAX:-longlive-jax}
mkdir -p $E
args=()
for v in ode_init self_forcing streaming_long streaming_long_2 forced_switch streaming_long_3; do
  [ -e $E/model_$v/longlive_jax.json ] || $LL toyworld assemble --dit $RUN/$v/export --vae $RUN/vae_decoder/export \
    --out $E/model_$v --overwrite
  args+=(--model $v=$E/model_$v)
done
python experiments/toyworld/first_frame_colour.py "${args[@]}" --teacher teacher_windows_2=$RUN/teacher_windows_2/export \
  --teacher teacher=artifacts/toyworld/teacher --out experiments/results/toyworld_first_frame_chain.json
# Is classifier-free guidance the cause? The students' teacher at CFG 1, 2 and 3.
python experiments/toyworld/first_frame_colour.py --teacher teacher_windows_2=$RUN/teacher_windows_2/export \
  --guidance 1 --guidance 2 --guidance 3 --out experiments/results/toyworld_first_frame_cfg.json
