#!/usr/bin/env bash
# The orange first frame, on the decoder's side. The shipped DiT over-scales its latents (latent 0's per-channel
# means 1.1-1.4x the true ones: classifier-free guidance distilled by DMD), and frame 0, decoded alone by the causal
# VAE, shows a red object orange. The decoder fine-tune of configs/toyworld/vae_decoder.yaml (noisy latents, encoder
# frozen) is run again with options.latent_scale 0.5 (every latent stretched about the frozen mean by a factor drawn
# in [1, 1.5] per clip and channel) and judged with the shipped DiT (its own params, unchanged) against the shipped
# decoder: first_frame_colour.py (the object's colour per frame of the first block, 60 seen prompts, and the round
# trips of true clips), judge_dit.sh (10-s videos: the evidence table's prompts, the validation set, the forced
# probes; the shipped decoder's rows are bounce_tune.sh's forced_switch_dmd, cached) and vae_psnr.py. Steps whose
# output exists are skipped (the train resumes). Results: experiments/results/toyworld_decoder_scale.json.
#   bash experiments/toyworld/decoder_scale.sh   (after train_all.sh and bounce_tune.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/forced_probe
LL=${LONGLIVE_JAX:-longlive-jax}
NEW=$RUN/vae_decoder_s05/export
[ -e $NEW/longlive_jax.json ] || $LL train configs/toyworld/vae_decoder.yaml options.latent_scale=0.5 \
  run_dir=$RUN/vae_decoder_s05
for v in forced_switch_dmd:$RUN/vae_decoder/export decoder_s05:$NEW; do
  VAE=${v#*:} NO_SWITCH=${NO_SWITCH:-0} bash experiments/toyworld/judge_dit.sh ${v%%:*} $RUN/forced_switch_dmd/export $E
done
[ -e $E/first_frame.json ] || python experiments/toyworld/first_frame_colour.py \
  --model shipped_decoder=$E/model_forced_switch_dmd --model decoder_s05=$E/model_decoder_s05 --out $E/first_frame.json
[ -e $E/psnr_decoder_s05.json ] || python experiments/toyworld/vae_psnr.py --vae $RUN/vae_decoder/export --vae $NEW \
  --out $E/psnr_decoder_s05.json
python experiments/toyworld/dit_rows.py $E /tmp/decoder_scale_rows.json \
  "the shipped DiT decoded by the shipped decoder (forced_switch_dmd) and by the decoder fine-tuned with options.latent_scale 0.5 (decoder_s05: configs/toyworld/vae_decoder.yaml, 800 steps from the VAE, latent_noise 0.5 as shipped); 100 seen prompts and the held-out combinations (the evidence table's), 10-s videos; val = another 100 prompts and noise (seeds 777, 20000); probe = forced_student.py" \
  "bash experiments/toyworld/decoder_scale.sh" forced_switch_dmd decoder_s05
python - $E <<'PY'
import json, sys
e = sys.argv[1]
out = json.load(open("/tmp/decoder_scale_rows.json"))
out["first_frame"] = json.load(open(f"{e}/first_frame.json"))
out["psnr"] = json.load(open(f"{e}/psnr_decoder_s05.json"))
json.dump(out, open("experiments/results/toyworld_decoder_scale.json", "w"), indent=1)
for name, row in out["first_frame"]["models"].items():
  for k in ("generated", "round_trip"):
    print(name, k, "object RGB distance per frame", row[k]["object_rgb_distance"])
PY
