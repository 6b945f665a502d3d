# Sourced by the toy-world experiments that learn a whole student chain from a given teacher (more_training.sh (c),
# windows_chain.sh): train_all.sh's student steps, ODE pairs -> ODE init -> Stage 1 -> Stage 2 -> second phase ->
# whole-model checkpoint, each skipped when its output exists (every train resumes from its newest checkpoint).
#   student_chain TEACHER_EXPORT OUT_DIR   (needs RUN, LL and the prompt sets under $RUN/data; writes OUT_DIR/model)
student_chain() {
  local t=$1 c=$2 s
  mkdir -p "$c"
  [ -e "$c/ode_pairs.npz" ] || $LL toyworld ode-pairs --teacher "$t" --prompts "$RUN/data/ode_prompts.npz" \
    --out "$c/ode_pairs.npz" --latent-frames 9
  [ -e "$c/ode_init/export/longlive_jax.json" ] || $LL train configs/toyworld/ode_init.yaml run_dir="$c/ode_init" \
    model.checkpoint="$t" data.source="$c/ode_pairs.npz"
  for s in self_forcing:ode_init streaming_long:self_forcing streaming_long_2:streaming_long; do
    [ -e "$c/${s%%:*}/export/longlive_jax.json" ] || $LL train "configs/toyworld/${s%%:*}.yaml" \
      run_dir="$c/${s%%:*}" model.checkpoint="$c/${s##*:}/export" options.teacher.checkpoint="$t" \
      options.critic.checkpoint="$t"
  done
  [ -e "$c/model/longlive_jax.json" ] || $LL toyworld assemble --dit "$c/streaming_long_2/export" \
    --vae "$RUN/vae/export" --out "$c/model" --overwrite
}
