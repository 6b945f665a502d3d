#!/usr/bin/env bash
# Candidate recipe (issue 9, not shipped yet): the whole student chain from the teacher fine-tuned on clips that
# start anywhere (runs/toyworld/teacher_uniform, a step of train_all.sh; or artifacts/toyworld/teacher_uniform):
# ODE pairs from it, ODE init, Stage 1 and Stage 2 with it as DMD teacher and critic, then 1500 more Stage 2
# steps (streaming_long_uniform.yaml), assembled, its 10-s and 2-min rows of evaluate.py, and every stage at 9 and
# 90 latents.
# Every step resumes / is skipped when done. ~65 min of training + ~35 min of evaluation on a 2-core CPU.
#   bash experiments/toyworld/candidate_uniform_chain.sh [run folder, default runs/toyworld]
set -euo pipefail
RUN=${1:-runs/toyworld}
U=$RUN/u2
T=$RUN/teacher_uniform/export
LL="longlive-jax"
[ -e $U/ode_pairs.npz ] || $LL toyworld ode-pairs --teacher $T --prompts $RUN/data/ode_prompts.npz --out $U/ode_pairs.npz --latent-frames 9
[ -e $U/ode_init/export ] || $LL train configs/toyworld/ode_init.yaml run_dir=$U/ode_init model.checkpoint=$T data.source=$U/ode_pairs.npz
[ -e $U/self_forcing/export ] || $LL train configs/toyworld/self_forcing.yaml run_dir=$U/self_forcing model.checkpoint=$U/ode_init/export options.teacher.checkpoint=$T options.critic.checkpoint=$T
[ -e $U/streaming_long/export ] || $LL train configs/toyworld/streaming_long.yaml run_dir=$U/streaming_long model.checkpoint=$U/self_forcing/export options.teacher.checkpoint=$T options.critic.checkpoint=$T
[ -e $U/streaming_long_uniform/export ] || $LL train configs/toyworld/streaming_long_uniform.yaml run_dir=$U/streaming_long_uniform model.checkpoint=$U/streaming_long/export options.teacher.checkpoint=$T options.critic.checkpoint=$T
[ -e $U/model/longlive_jax.json ] || $LL toyworld assemble --dit $U/streaming_long_uniform/export --vae $RUN/vae/export --out $U/model --overwrite
python experiments/toyworld/evaluate.py --model $U/model --rows shipped/seen/10s,shipped/held_out/10s,shipped/seen/2min \
  --cache $RUN/eval_u2 --out experiments/results/toyworld_eval_candidate_u2.json
# every causal stage of the chain at 9 and 90 latents (evaluate.py reads the VAE from <run>/vae/export)
[ -e $U/vae ] || ln -s ../vae $U/vae
ROWS=$(python -c "print(','.join(f'{s}/{p}/{n}' for s in ['ode_init','self_forcing','streaming_long','streaming_long_uniform'] for p in ['seen','held_out'] for n in [9,90]))")
python experiments/toyworld/evaluate.py --run $U --model $U/model --rows $ROWS --cache $RUN/eval_u2 \
  --out experiments/results/toyworld_eval_candidate_u2_stages.json
