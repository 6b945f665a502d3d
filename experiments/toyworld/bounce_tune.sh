#!/usr/bin/env bash
# `bounces`, the motion the shipped DiT draws worst (12% of the 10-s windows; every other motion 91-96%). With the
# world's own past in its cache it continues a bouncing object in 62% of the windows, from its own past in 8%
# (forced_student.py, toyworld_forced.json). configs/toyworld/forced_bounce.yaml runs the forced stage from the
# shipped DiT with half the blocks' past its own estimate (options.self_context, scheduled sampling) on clips with
# bounces twice as often (`toyworld latents --motion-weight bounces=2`), then, as train_all.sh's step 8, 500 steps
# of Stage 2 (streaming_long_3.yaml) from it. Each is judged as forced_tune.sh judges (judge_dit.sh) next to the
# shipped DiT (forced_tune.sh's forced_switch_dmd, cached). Trains resume; results:
# experiments/results/toyworld_bounce_tune.json.
#   bash experiments/toyworld/bounce_tune.sh   (after train_all.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/forced_probe
LL=${LONGLIVE_JAX:-longlive-jax}
[ -e $RUN/data/latents_f9_switch_b2.npz ] || $LL toyworld latents --vae $RUN/vae/export \
  --out $RUN/data/latents_f9_switch_b2.npz --num 4000 --latent-frames 9 --centre-fraction 0 --lead-in 128 --seed 15 \
  --caption-dropout 0 --switch-prob 0.5 --motion-weight bounces=2
[ -e $RUN/forced_bounce/export/longlive_jax.json ] || $LL train configs/toyworld/forced_bounce.yaml
[ -e $RUN/forced_bounce_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce/export run_dir=$RUN/forced_bounce_dmd
declare -A DIT=([forced_switch_dmd]=$RUN/forced_switch_dmd/export [forced_bounce]=$RUN/forced_bounce/export
  [forced_bounce_dmd]=$RUN/forced_bounce_dmd/export)
for v in ${MODELS:-forced_switch_dmd forced_bounce forced_bounce_dmd}; do
  bash experiments/toyworld/judge_dit.sh $v ${DIT[$v]} $E
done
python experiments/toyworld/dit_rows.py $E experiments/results/toyworld_bounce_tune.json \
  "the shipped DiT (forced_switch_dmd: train_all.sh's step 8) and the forced stage from it aimed at bounces (forced_bounce: configs/toyworld/forced_bounce.yaml, 1500 steps at 5e-5, self_context 0.5, bounces drawn twice as often, half the clips switching prompts), then 500 steps of Stage 2 from that (forced_bounce_dmd: streaming_long_3.yaml), each decoded by the shipped decoder; 100 seen prompts and the held-out combinations (the evidence table's), 10-s videos; val = another 100 prompts and noise (seeds 777, 20000); probe = forced_student.py (48 clips of 21 latents; bounce_probe: 24 bouncing clips); switch = the ablations' switch/recache row" \
  "bash experiments/toyworld/bounce_tune.sh" ${MODELS:-forced_switch_dmd forced_bounce forced_bounce_dmd}
