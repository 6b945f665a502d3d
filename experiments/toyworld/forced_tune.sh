#!/usr/bin/env bash
# The block-boundary jump and the forced stage. Stage 2's DiT's blocks do not continue the clean past in its
# cache: streamed with the world's own past (forced_student.py), each block sits about one latent frame ahead of the
# truth, and free-running objects jump at every block boundary. configs/toyworld/forced.yaml fine-tunes it on
# exactly that streamed step (train/stages/forced.py). Each model (Stage 2's second phase = base, the others) is
# assembled with the shipped decoder and judged on the evidence table's 100 seen prompts and 54 held-out combinations
# (10-s videos) and on the validation set (prompt seed 777, noise seed 20000); forced_student.py measures the jump;
# ablations.py's switch/recache row (100 prompt switches) measures what the fine-tune does to switches.
# forced_switch.yaml trains the stage on clips half of which switch prompts (as after a KV-recache), and
# forced_switch_dmd (streaming_long_3.yaml's run) is a short Stage 2 phase from it: train_all.sh's steps 7 and 8.
# Steps are skipped when their output exists (trains resume). Untracked runs under runs/toyworld/forced_probe/;
# results: experiments/results/toyworld_forced.json.
#   bash experiments/toyworld/forced_tune.sh   (after train_all.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/forced_probe
LL=${LONGLIVE_JAX:-longlive-jax}
VAE=$RUN/vae_decoder/export
mkdir -p $E
[ -e $RUN/forced/export/longlive_jax.json ] || $LL train configs/toyworld/forced.yaml
[ -e $RUN/forced_2000/export/longlive_jax.json ] || $LL train configs/toyworld/forced.yaml steps=2000 optim.lr=5e-5 \
  checkpoint.interval=250 run_dir=$RUN/forced_2000  # longer, at a higher rate
[ -e $RUN/data/latents_f9_switch.npz ] || $LL toyworld latents --vae $RUN/vae/export --out $RUN/data/latents_f9_switch.npz \
  --num 4000 --latent-frames 9 --centre-fraction 0 --lead-in 128 --seed 14 --caption-dropout 0 --switch-prob 0.5
[ -e $RUN/forced_switch/export/longlive_jax.json ] || $LL train configs/toyworld/forced_switch.yaml  # switch clips
# then a short Stage 2 phase (DMD on its own rollouts with switches and the recache) from that export
[ -e $RUN/forced_switch_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_2.yaml \
  model.checkpoint=$RUN/forced_switch/export run_dir=$RUN/forced_switch_dmd steps=500
# the same two steps with the forced stage run longer (2000 steps at 5e-5, as forced_2000), then 500 of Stage 2
[ -e $RUN/forced_switch_2000/export/longlive_jax.json ] || $LL train configs/toyworld/forced_switch.yaml steps=2000 \
  optim.lr=5e-5 checkpoint.interval=250 run_dir=$RUN/forced_switch_2000
[ -e $RUN/forced_switch_2000_dmd/export/longlive_jax.json ] || $LL train configs/toyworld/streaming_long_3.yaml \
  model.checkpoint=$RUN/forced_switch_2000/export run_dir=$RUN/forced_switch_2000_dmd
declare -A DIT=([base]=$RUN/streaming_long_2/export [forced]=$RUN/forced/export [forced_2000]=$RUN/forced_2000/export
  [forced_switch]=$RUN/forced_switch/export [forced_switch_dmd]=$RUN/forced_switch_dmd/export
  [forced_switch_2000_dmd]=$RUN/forced_switch_2000_dmd/export)
for v in ${MODELS:-base forced forced_2000 forced_switch forced_switch_dmd forced_switch_2000_dmd}; do
  [ $v = forced_2000 ] && export NO_SWITCH=1 || export NO_SWITCH=0
  bash experiments/toyworld/judge_dit.sh $v ${DIT[$v]} $E
done
for st in ode_init self_forcing streaming_long; do  # the jump along the chain (the probe only)
  [ -e $E/probe_stage_$st.json ] || python experiments/toyworld/forced_student.py --dit $RUN/$st/export --vae $VAE \
    --free --out $E/probe_stage_$st.json
done
python experiments/toyworld/dit_rows.py $E experiments/results/toyworld_forced.json \
  "the Stage 2 second phase's DiT (base: shipped until 2026-12-05) and the forced stage's fine-tunes of it (forced: configs/toyworld/forced.yaml, 600 steps at 2e-5 on clips without switches; forced_2000: 2000 steps at 5e-5; forced_switch: forced_switch.yaml, 600 steps at 2e-5 on clips half of which switch prompts; forced_switch_dmd: 500 steps of Stage 2 from forced_switch, streaming_long_3.yaml, the shipped DiT since 2026-12-05; forced_switch_2000_dmd: the same from the switch-clip forced stage run 2000 steps at 5e-5), each decoded by the shipped decoder; 100 seen prompts and the held-out combinations (the evidence table's), 10-s videos; val = another 100 prompts and noise (seeds 777, 20000); probe = forced_student.py (48 clips of 21 latents; bounce_probe: 24 bouncing clips)" \
  "bash experiments/toyworld/forced_tune.sh" \
  ${MODELS:-base forced forced_2000 forced_switch forced_switch_dmd forced_switch_2000_dmd} \
  --stages ode_init self_forcing streaming_long
