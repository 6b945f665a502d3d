#!/usr/bin/env bash
# Toy world, 2026-12-06 (session 42): how good is the shipped model on prompts drawn like the training prompts, and
# what does not move its two weak motions (`bounces`, `stays still`)?
#   1. The shipped model on 300 more prompts and noise (prompt seed 778, noise seed 30000: about one in six per
#      motion; the validation set of 100 holds 23 bouncing and 23 still prompts, the seen set 14 and 18).
#   2. Inference settings other than the trained ones (window, denoising schedule, sink, renoise scale) on soup3
#      (bounce_heavy.sh), judged on the validation set: experiments/toyworld/stream_settings.py.
#   3. Two Stage 2 runs from the same start as the shipped DiT's ingredients (forced_bounce_mix): a 12-latent window
#      (sink 3, two past blocks; teacher and critic on 12-latent windows) and still prompts drawn 3x (1000 steps, then
#      on to 1500). Judged on the validation set (w12, at its own window) and on the 300 prompts, next to
#      mix_dmd1000 (the same settings with window 9 and the usual prompts), soup3 and soup_s3b.
# About 35 min of training and 1 h of judging here. Rows: experiments/results/toyworld_stream_settings.json.
#   bash experiments/toyworld/val300.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
B=$RUN/bounce_heavy  # bounce_heavy.sh's assembled models (model_soup3, model_mix_dmd1000)
LL=${LONGLIVE_JAX:-longlive-jax}
. experiments/toyworld/run_helpers.sh  # continue_run SRC_RUN STEP DST_RUN CONFIG [OVERRIDES...]
O=experiments/results/toyworld_stream_settings.json
SS=experiments/toyworld/stream_settings.py

python experiments/toyworld/evaluate.py --run $RUN --seen 300 --prompt-seed 778 --noise-seed 30000 \
  --cache $RUN/eval_val300 --rows shipped/seen/10s --out experiments/results/toyworld_eval_val300.json

python $SS --model $B/model_soup3 --set val --variant base --variant window_frames=12 --variant window_frames=15 \
  --variant step_list=1000:750:500 --variant step_list=1000:800:600:400:200 \
  --variant step_list=1000:875:750:625:500:375:250:125 --variant global_sink=0 --out $O
python $SS --model $B/model_soup3 --set val --variant base --renoise-scale 0.7 --out $O

[ -e $RUN/bounce_mix_w12/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_4.yaml \
  run_dir=$RUN/bounce_mix_w12 options.local_attn_size=12 options.streaming_chunk_size=12
[ -e $RUN/bounce_mix_w12/model/longlive_jax.json ] || $LL toyworld assemble --dit $RUN/bounce_mix_w12/export \
  --vae $RUN/vae_decoder/export --window 12 --out $RUN/bounce_mix_w12/model
python $SS --model $RUN/bounce_mix_w12/model --set val --variant window_frames=12 --out $O

[ -e $RUN/data/prompt_pairs_s3.npz ] || $LL toyworld prompts --pairs --out $RUN/data/prompt_pairs_s3.npz \
  --num 2000 --seed 2 --motion-weight "stays still=3"
[ -e $RUN/bounce_mix_s3/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_4.yaml \
  run_dir=$RUN/bounce_mix_s3 data.source=$RUN/data/prompt_pairs_s3.npz
[ -e $RUN/bounce_mix_s3_1500/export/longlive_jax.json ] || continue_run $RUN/bounce_mix_s3 1000 \
  $RUN/bounce_mix_s3_1500 configs/toyworld/streaming_long_4.yaml data.source=$RUN/data/prompt_pairs_s3.npz steps=1500
[ -e $RUN/bounce_mix_s3_1500/model/longlive_jax.json ] || $LL toyworld assemble \
  --dit $RUN/bounce_mix_s3_1500/export --vae $RUN/vae_decoder/export --out $RUN/bounce_mix_s3_1500/model
# soup_s3b: a third each of mix_dmd1500, mix_dmd_b3 (the shipped DiT's ingredients) and s3_1500.
[ -e $RUN/soup_s3b/export/longlive_jax.json ] || python experiments/toyworld/soup.py \
  --mix $RUN/bounce_mix_dmd1500/export --mix $RUN/bounce_mix_dmd_b3/export --mix $RUN/bounce_mix_s3_1500/export \
  --out $RUN/soup_s3b/export
[ -e $RUN/soup_s3b/model/longlive_jax.json ] || $LL toyworld assemble --dit $RUN/soup_s3b/export \
  --vae $RUN/vae_decoder/export --out $RUN/soup_s3b/model
for m in $B/model_soup3 $RUN/bounce_mix_s3_1500/model $B/model_mix_dmd1000 $RUN/soup_s3b/model; do
  python $SS --model $m --set val300 --variant base --out $O
done
