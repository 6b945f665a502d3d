# Shell helpers shared by the toy-world scripts (sourced by train_all.sh and bounce_heavy.sh; needs $LL).

# continue_run SRC_RUN STEP DST_RUN CONFIG [OVERRIDES...]: trains CONFIG in DST_RUN starting from SRC_RUN's
# checkpoint at STEP (copied on the first call, through a .part folder so an interrupted copy is never taken for a
# checkpoint; `longlive-jax train` then resumes from it, and from DST_RUN's own newest checkpoint afterwards).
continue_run() {
  local src=$1 at=$2 dst=$3
  shift 3
  if [ ! -d "$dst/checkpoints" ]; then
    rm -rf "$dst/checkpoints.part"
    mkdir -p "$dst/checkpoints.part" && cp -r "$src/checkpoints/$at" "$dst/checkpoints.part/"
    mv "$dst/checkpoints.part" "$dst/checkpoints"
  fi
  $LL train "$@" run_dir="$dst"
}
