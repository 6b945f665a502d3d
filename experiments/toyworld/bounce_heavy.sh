#!/usr/bin/env bash
# Toy world: can the students learn to continue a bounce's diagonal from the past? (see
# configs/toyworld/forced_bounce_heavy.yaml). From step 8's DiT (train_all.sh; shipped until 2026-12-06,
# runs/toyworld/streaming_long_3/export): the forced stage on bounce-heavy window clips (2000 steps), then on the
# usual mix with bounces drawn 4x and switches (mix, 1000 steps), or with bounces drawn 4x, no switches and its own
# past in half the blocks (sc, 1000 steps), or Stage 2's third phase from heavy or mix (heavy_dmd, mix_dmd: 500 steps;
# mix_dmd1000: 1000 steps, the shipped DiT since 2026-12-06). Each export is judged by judge_dit.sh (the evidence
# table's 10-s rows, the validation set, the forced probes, the switch row) and by bounce_continuation.py (block 2
# of bouncing windows given the true blocks 0-1). About 2 h of training in all and 15-20 min of judging per DiT here.
#   bash experiments/toyworld/bounce_heavy.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/bounce_heavy
LL=${LONGLIVE_JAX:-longlive-jax}
# Step 8's DiT: the model shipped until 2026-12-06 holds it (bf16; what these runs started from, the chain's runs/
# lost), in git at fc80726 (the shipped model since then is this script's mix_dmd).
[ -e $RUN/streaming_long_3/export ] || { mkdir -p $RUN/streaming_long_3/export && git archive fc80726 \
  longlive_jax/toyworld/default_model | tar -x --strip-components=3 -C $RUN/streaming_long_3/export; }
for t in teacher:teacher teacher_windows:teacher_windows_2; do  # the teachers of the continuation probe
  [ -e $RUN/${t#*:}/export ] || python experiments/toyworld/snapshot.py restore artifacts/toyworld/${t%%:*} $RUN/${t#*:}/export
done
[ -e $RUN/vae/export ] || { mkdir -p $RUN/vae && cp -r artifacts/toyworld/vae $RUN/vae/export; }
[ -e $RUN/vae_decoder/export ] || { mkdir -p $RUN/vae_decoder && cp -r artifacts/toyworld/vae_decoder $RUN/vae_decoder/export; }
D="--vae $RUN/vae/export --latent-frames 9 --centre-fraction 0 --lead-in 128 --caption-dropout 0"
[ -e $RUN/data/latents_f9_bounce20.npz ] || $LL toyworld latents $D --out $RUN/data/latents_f9_bounce20.npz \
  --num 1500 --seed 17 --motion-weight bounces=20
[ -e $RUN/data/latents_f9_switch_b4.npz ] || $LL toyworld latents $D --out $RUN/data/latents_f9_switch_b4.npz \
  --num 3000 --seed 19 --switch-prob 0.5 --motion-weight bounces=4
# The heavy DiT is kept in artifacts/ (bf16; RETRAIN=1 trains it again instead, 30-36 min here).
[ -e $RUN/forced_bounce_heavy/export ] || [ "${RETRAIN:-0}" = 1 ] || python experiments/toyworld/snapshot.py \
  restore artifacts/toyworld/forced_bounce_heavy $RUN/forced_bounce_heavy/export
[ -e $RUN/forced_bounce_heavy/export/longlive_jax.json ] || $LL train configs/toyworld/forced_bounce_heavy.yaml
[ -e $RUN/forced_bounce_mix/export ] || [ "${RETRAIN:-0}" = 1 ] || python experiments/toyworld/snapshot.py \
  restore artifacts/toyworld/forced_bounce_mix $RUN/forced_bounce_mix/export  # kept too (25 min here)
[ -e $RUN/forced_bounce_mix/export/longlive_jax.json ] || $LL train configs/toyworld/forced_bounce_mix.yaml
[ -e $RUN/data/latents_f9_b4.npz ] || $LL toyworld latents $D --out $RUN/data/latents_f9_b4.npz \
  --num 1500 --seed 21 --motion-weight bounces=4
[ -e $RUN/forced_bounce_sc/export/longlive_jax.json ] || $LL train configs/toyworld/forced_bounce_sc.yaml
# Stage 2's third phase (streaming_long_3.yaml: 500 steps of DMD with switches and the recache) from the heavy DiT
[ -e $RUN/data/prompt_pairs.npz ] || $LL toyworld prompts --pairs --out $RUN/data/prompt_pairs.npz --num 2000 --seed 2
[ -e $RUN/bounce_heavy_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce_heavy/export run_dir=$RUN/bounce_heavy_dmd
[ -e $RUN/bounce_mix_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce_mix/export run_dir=$RUN/bounce_mix_dmd  # kept in artifacts/ too (bf16)
# The same phase run on to 1000 steps (mix_dmd1000: the shipped DiT since 2026-12-06, train_all.sh's step 11; it
# ran as a copy of bounce_mix_dmd resumed from its step 500, the same as one run: constant learning rate).
[ -e $RUN/bounce_mix_dmd1000/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce_mix/export run_dir=$RUN/bounce_mix_dmd1000 steps=1000
# The same phase on to 1500 and 2000 steps (each a copy of the previous run resumed; measured after the ship), and
# 1000 steps with bouncing prompts drawn 3x in its prompt pairs (mix_dmd_b3; `toyworld prompts --motion-weight`).
for n in 1500 2000; do
  [ -e $RUN/bounce_mix_dmd$n/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
    model.checkpoint=$RUN/forced_bounce_mix/export run_dir=$RUN/bounce_mix_dmd$n steps=$n
done
[ -e $RUN/data/prompt_pairs_b3.npz ] || $LL toyworld prompts --pairs --out $RUN/data/prompt_pairs_b3.npz --num 2000 \
  --seed 2 --motion-weight bounces=3
[ -e $RUN/bounce_mix_dmd_b3/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce_mix/export run_dir=$RUN/bounce_mix_dmd_b3 steps=1000 \
  data.source=$RUN/data/prompt_pairs_b3.npz
# Session 41 (2026-12-06): a run's later steps with the learning rate decayed to zero (mix_wsd2000: mix_dmd1500's
# step-1500 checkpoint run on to 2000, decaying over the last 500), with the teacher's guidance 5 (mix_g5_1500:
# mix_dmd1000's step-1000 checkpoint run on to 1500), a teacher fine-tuned on bouncing clips (sl5_1000:
# teacher_bounce.yaml, then streaming_long_5.yaml), and the average of mix_dmd1500 and mix_dmd_b3 (soup_1500_b3: the
# shipped DiT since then; train_all.sh's steps streaming-long-4-1500, -b3 and soup).
. experiments/toyworld/run_helpers.sh  # continue_run SRC_RUN STEP DST_RUN CONFIG [OVERRIDES...]
if [ ! -e $RUN/bounce_mix_wsd2000/export/longlive_jax.json ]; then
  continue_run $RUN/bounce_mix_dmd1500 1500 $RUN/bounce_mix_wsd2000 configs/toyworld/streaming_long_3.yaml \
    model.checkpoint=$RUN/forced_bounce_mix/export steps=2000 optim.decay_start=1500 optim.decay_steps=500
fi
if [ ! -e $RUN/bounce_mix_g5_1500/export/longlive_jax.json ]; then
  continue_run $RUN/bounce_mix_dmd1000 1000 $RUN/bounce_mix_g5_1500 configs/toyworld/streaming_long_3.yaml \
    model.checkpoint=$RUN/forced_bounce_mix/export steps=1500 options.guidance_scale=5.0
fi
[ -e $RUN/data/latents_f9_teacher_b4.npz ] || $LL toyworld latents --vae $RUN/vae/export --latent-frames 9 \
  --centre-fraction 0 --lead-in 128 --out $RUN/data/latents_f9_teacher_b4.npz --num 3000 --seed 23 \
  --motion-weight bounces=4
[ -e $RUN/teacher_bounce/export/longlive_jax.json ] || $LL train configs/toyworld/teacher_bounce.yaml
for t in teacher_windows_2 teacher_bounce; do  # the teachers' bouncing samples (40 prompts, 9 latents)
  [ -e $E/tracks_$t.json ] || python experiments/toyworld/bounce_tracks.py --teacher $RUN/$t/export \
    --latent-frames 9 --num 40 --out $E/tracks_$t.json
done
[ -e $RUN/streaming_long_5/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_5.yaml
[ -e $RUN/soup_1500_b3/export/longlive_jax.json ] || python experiments/toyworld/soup.py \
  --a $RUN/bounce_mix_dmd1500/export --b $RUN/bounce_mix_dmd_b3/export --alpha 0.5 --out $RUN/soup_1500_b3/export
# Measured after that ship: more ingredients (soup3: a third each of mix_dmd1500, mix_dmd_b3 and mix_g5_1500; soup4:
# a quarter each of those and sl5_1000), as nested half-and-half / one-third averages.
[ -e $RUN/soup3/export/longlive_jax.json ] || python experiments/toyworld/soup.py --a $RUN/soup_1500_b3/export \
  --b $RUN/bounce_mix_g5_1500/export --alpha 0.3333333333 --out $RUN/soup3/export
[ -e $RUN/soup_g5_sl5/export/longlive_jax.json ] || python experiments/toyworld/soup.py \
  --a $RUN/bounce_mix_g5_1500/export --b $RUN/streaming_long_5/export --alpha 0.5 --out $RUN/soup_g5_sl5/export
[ -e $RUN/soup4/export/longlive_jax.json ] || python experiments/toyworld/soup.py --a $RUN/soup_1500_b3/export \
  --b $RUN/soup_g5_sl5/export --alpha 0.5 --out $RUN/soup4/export
# The seed noise of one Stage 2 run: mix_dmd1000's settings with seed 1 (mix_seed1).
[ -e $RUN/bounce_mix_seed1/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_4.yaml \
  run_dir=$RUN/bounce_mix_seed1 seed=1
# sc and mix together: from heavy, self_context 0.5 on the mix with switches, then 1000 steps of Stage 2 (scmix_dmd).
[ -e $RUN/forced_bounce_scmix/export/longlive_jax.json ] || $LL train configs/toyworld/forced_bounce_scmix.yaml
[ -e $RUN/bounce_scmix_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_bounce_scmix/export run_dir=$RUN/bounce_scmix_dmd steps=1000
declare -A DIT=([step8]=$RUN/streaming_long_3/export [heavy]=$RUN/forced_bounce_heavy/export
  [mix]=$RUN/forced_bounce_mix/export [sc]=$RUN/forced_bounce_sc/export [heavy_dmd]=$RUN/bounce_heavy_dmd/export
  [mix_dmd]=$RUN/bounce_mix_dmd/export [mix_dmd1000]=$RUN/bounce_mix_dmd1000/export
  [scmix_dmd]=$RUN/bounce_scmix_dmd/export [mix_dmd1500]=$RUN/bounce_mix_dmd1500/export
  [mix_dmd2000]=$RUN/bounce_mix_dmd2000/export [mix_dmd_b3]=$RUN/bounce_mix_dmd_b3/export
  [mix_wsd2000]=$RUN/bounce_mix_wsd2000/export [mix_g5_1500]=$RUN/bounce_mix_g5_1500/export
  [sl5_1000]=$RUN/streaming_long_5/export [soup_1500_b3]=$RUN/soup_1500_b3/export [soup3]=$RUN/soup3/export
  [soup4]=$RUN/soup4/export [mix_seed1]=$RUN/bounce_mix_seed1/export)
python experiments/toyworld/bounce_continuation.py --num 24 --model step8=${DIT[step8]} \
  --model heavy=${DIT[heavy]} --model mix=${DIT[mix]} --model sc=${DIT[sc]} --model heavy_dmd=${DIT[heavy_dmd]} \
  --model mix_dmd=${DIT[mix_dmd]} --model mix_dmd1000=${DIT[mix_dmd1000]} \
  --model scmix_dmd=${DIT[scmix_dmd]} --teacher teacher=$RUN/teacher/export \
  --teacher teacher_windows=$RUN/teacher_windows_2/export --out experiments/results/toyworld_bounce_continuation.json
for v in ${MODELS:-heavy mix sc heavy_dmd mix_dmd mix_dmd1000 scmix_dmd mix_dmd1500 mix_dmd2000 mix_dmd_b3 mix_wsd2000
  mix_g5_1500 sl5_1000 soup_1500_b3 soup3 soup4 mix_seed1}; do
  bash experiments/toyworld/judge_dit.sh $v ${DIT[$v]} $E
done
python experiments/toyworld/dit_rows.py $E experiments/results/toyworld_bounce_heavy.json \
  "the forced stage from the shipped DiT on bounce-heavy window clips (heavy: configs/toyworld/forced_bounce_heavy.yaml, 2000 steps at 5e-5, ~80% bouncing clips, the true past), then on the usual mix with bounces drawn 4x and half the clips switching (mix: forced_bounce_mix.yaml, 1000 steps at 3e-5), or on clips with bounces drawn 4x and no switches, half the blocks' past its own estimate (sc: forced_bounce_sc.yaml, 1000 steps at 3e-5, self_context 0.5), or 500 steps of Stage 2's third phase (heavy_dmd: streaming_long_3.yaml from heavy; mix_dmd: from mix; mix_dmd1000: 1000 steps from mix, the shipped DiT since 2026-12-06; scmix_dmd: 1000 steps from scmix, forced_bounce_scmix.yaml: self_context 0.5 on the mix with switches; mix_dmd1500, mix_dmd2000: 1500 and 2000 steps from mix; mix_dmd_b3: 1000 steps from mix, bouncing prompts drawn 3x; mix_wsd2000: mix_dmd1500 run on to 2000 steps with the learning rate decayed linearly to zero over the last 500; mix_g5_1500: mix_dmd1000 run on to 1500 steps with the teacher's guidance 5 instead of 3; sl5_1000: 1000 steps from mix with the DMD teacher and critic from configs/toyworld/teacher_bounce.yaml, the teacher fine-tuned on window clips with bounces drawn 4x (configs/toyworld/streaming_long_5.yaml); soup_1500_b3: the half-and-half weight average of mix_dmd1500 and mix_dmd_b3 (experiments/toyworld/soup.py), the shipped DiT since 2026-12-06, session 41; soup3: a third each of mix_dmd1500, mix_dmd_b3 and mix_g5_1500; soup4: a quarter each of those and sl5_1000; measured after the ship, not shipped; mix_seed1: mix_dmd1000 again with seed 1, the seed noise of one Stage 2 run); each decoded by the shipped decoder; 100 seen prompts and the held-out combinations (the evidence table's), 10-s videos; val = another 100 prompts and noise (seeds 777, 20000); probe = forced_student.py (48 clips of 21 latents; bounce_probe: 24 bouncing clips); switch = the ablations' switch/recache row" \
  "bash experiments/toyworld/bounce_heavy.sh" ${MODELS:-heavy mix sc heavy_dmd mix_dmd mix_dmd1000 scmix_dmd \
  mix_dmd1500 mix_dmd2000 mix_dmd_b3 mix_wsd2000 mix_g5_1500 sl5_1000 soup_1500_b3 soup3 soup4 mix_seed1}
