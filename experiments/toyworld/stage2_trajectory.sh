#!/usr/bin/env bash
# Where does Stage 2 lose circles, and when does it gain its motion? (issue 9: Self-Forcing draws circles in 68% of
# the seen windows at 9 latents, the shipped Stage 2 in 55%, while Stage 2 lifts 90-latent motion 68.5% -> 82.2%.)
# Stage 2 (configs/toyworld/streaming_long.yaml, unchanged) is trained in segments to the steps below, each resuming
# from the previous one's newest checkpoint (the same run as one 3000-step sitting: the train state, the streaming
# rollout's cache and the data position are checkpointed; the learning rate is constant), and each segment's EMA
# export is copied aside. Every copy, and Self-Forcing as step 0, is judged by evaluate.py at 90 latent frames on
# the VALIDATION set (prompt seed 777, noise seed 20000; the README's table uses 4242 / 10000).
# The run is train_all.sh's own streaming-long step: when this finishes, runs/toyworld/streaming_long holds that
# step's export and is marked done.
#   bash experiments/toyworld/stage2_trajectory.sh        (needs train_all.sh's steps up to self-forcing)
# Untracked runs under runs/toyworld/stage2_traj/; result: experiments/results/toyworld_stage2_trajectory.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/stage2_traj
LL=${LONGLIVE_JAX:-longlive-jax}
VAL="--prompt-seed 777 --noise-seed 20000"
STEPS=${STEPS:-"250 500 1000 1500 2000 3000"}
VIDEOS=${VIDEOS:-60}
[ -e $RUN/self_forcing/export/longlive_jax.json ] || { echo "needs $RUN/self_forcing/export (train_all.sh)"; exit 1; }
mkdir -p $E
for n in $STEPS; do
  out=$E/step_$n/streaming_long/export
  if [ ! -e $out/longlive_jax.json ]; then
    $LL train configs/toyworld/streaming_long.yaml steps=$n
    mkdir -p $E/step_$n/streaming_long && rm -rf $out.tmp && cp -r $RUN/streaming_long/export $out.tmp && mv $out.tmp $out
  fi
  ln -sfn ../../vae $E/step_$n/vae
done
[ "${STEPS##* }" != 3000 ] || { mkdir -p $RUN/done && touch $RUN/done/streaming-long; }
mkdir -p $E/step_0 && ln -sfn ../../vae $E/step_0/vae && ln -sfn ../../self_forcing $E/step_0/self_forcing
python experiments/toyworld/evaluate.py --run $E/step_0 --rows self_forcing/seen/90 --seen $VIDEOS \
  --cache $E/eval_0 $VAL --out $E/eval_0.json
for n in $STEPS; do
  python experiments/toyworld/evaluate.py --run $E/step_$n --rows streaming_long/seen/90 --seen $VIDEOS \
    --cache $E/eval_$n $VAL --out $E/eval_$n.json
done
python - "$E" $STEPS <<'PY'
import json, sys
sys.path.insert(0, "experiments/toyworld")
from report import per_label
e, steps = sys.argv[1], [0] + [int(s) for s in sys.argv[2:]]
rows = []
for n in steps:
  name = "self_forcing/seen/90" if n == 0 else "streaming_long/seen/90"
  r = json.load(open(f"{e}/eval_{n}.json"))[name]
  per = per_label(r)
  rows.append({"stage2_step": n, "videos": r["videos"], "accuracy": r["accuracy"], "per_label": per})
  print(n, {k: round(100 * v, 1) for k, v in r["accuracy"].items()}, {k: round(100 * v, 1) for k, v in per.items()})
out = {"what": "Stage 2 (streaming_long.yaml) exports along its run, judged at 90 latents on the validation set "
       "(prompt seed 777, noise seed 20000); step 0 is Self-Forcing", "rows": rows,
       "command": "bash experiments/toyworld/stage2_trajectory.sh"}
json.dump(out, open("experiments/results/toyworld_stage2_trajectory.json", "w"), indent=1)
PY
