#!/usr/bin/env bash
# The orange first frame, on the decoder's side. The shipped DiT over-scales its latents (latent 0's per-channel
# means 1.1-1.4x the true ones: classifier-free guidance distilled by DMD), and frame 0, decoded alone by the causal
# VAE, shows a red object orange. The decoder fine-tune of configs/toyworld/vae_decoder.yaml (noisy latents, encoder
# frozen) is run again, once with options.latent_scale 0.5 (s05: every latent stretched about the frozen mean by a
# factor drawn in [1, 1.5] per clip and channel), once with frame 0 weighted 16 instead of 4 (f16: the decoder's
# own frame 0 is its worst, decoded alone), and each is judged with the shipped DiT (its own params) against the
# shipped decoder: first_frame_colour.py (the object's colour per frame of the first block, 60 seen prompts, and
# the round trips of true clips), vae_psnr.py and, s05 only (f16 did not move the first frame either),
# judge_dit.sh (10-s videos: the evidence table's prompts, the validation set, the forced probes; the shipped
# decoder's rows are bounce_tune.sh's forced_switch_dmd, cached). Steps whose
# output exists are skipped (the train resumes). Results: experiments/results/toyworld_decoder_scale.json.
#   bash experiments/toyworld/decoder_scale.sh   (after train_all.sh and bounce_tune.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=runs/toyworld
E=$RUN/forced_probe
LL=${LONGLIVE_JAX:-longlive-jax}
declare -A OPT=([s05]=options.latent_scale=0.5 [f16]=options.first_frame_weight=16)
for v in s05 f16; do
  [ -e $RUN/vae_decoder_$v/export/longlive_jax.json ] || $LL train configs/toyworld/vae_decoder.yaml ${OPT[$v]} \
    run_dir=$RUN/vae_decoder_$v
done
for v in forced_switch_dmd:$RUN/vae_decoder/export decoder_s05:$RUN/vae_decoder_s05/export; do
  VAE=${v#*:} NO_SWITCH=${NO_SWITCH:-0} bash experiments/toyworld/judge_dit.sh ${v%%:*} $RUN/forced_switch_dmd/export $E
done
[ -e $E/model_decoder_f16/longlive_jax.json ] || $LL toyworld assemble --dit $RUN/forced_switch_dmd/export \
  --vae $RUN/vae_decoder_f16/export --out $E/model_decoder_f16 --overwrite  # f16: first frame and PSNR only
[ -e $E/first_frame_f16.json ] || python experiments/toyworld/first_frame_colour.py \
  --model shipped_decoder=$E/model_forced_switch_dmd --model decoder_s05=$E/model_decoder_s05 \
  --model decoder_f16=$E/model_decoder_f16 --out $E/first_frame_f16.json
[ -e $E/psnr_decoder_f16.json ] || python experiments/toyworld/vae_psnr.py --vae $RUN/vae_decoder/export \
  --vae $RUN/vae_decoder_s05/export --vae $RUN/vae_decoder_f16/export --out $E/psnr_decoder_f16.json
python experiments/toyworld/dit_rows.py $E /tmp/decoder_scale_rows.json \
  "the shipped DiT decoded by the shipped decoder (forced_switch_dmd) and by the decoder fine-tuned again with options.latent_scale 0.5 (decoder_s05) or with options.first_frame_weight 16 (decoder_f16: first_frame and psnr only; configs/toyworld/vae_decoder.yaml otherwise: 800 steps from the VAE, latent_noise 0.5, frame 0 weighted 4); 100 seen prompts and the held-out combinations (the evidence table's), 10-s videos; val = another 100 prompts and noise (seeds 777, 20000); probe = forced_student.py; first_frame = first_frame_colour.py; psnr = vae_psnr.py" \
  "bash experiments/toyworld/decoder_scale.sh" forced_switch_dmd decoder_s05
python - $E <<'PY'
import json, sys
e = sys.argv[1]
out = json.load(open("/tmp/decoder_scale_rows.json"))
out["first_frame"] = json.load(open(f"{e}/first_frame_f16.json"))
out["psnr"] = json.load(open(f"{e}/psnr_decoder_f16.json"))
json.dump(out, open("experiments/results/toyworld_decoder_scale.json", "w"), indent=1)
for name, row in out["first_frame"]["models"].items():
  for k in ("generated", "round_trip"):
    print(name, k, "object RGB distance per frame", row[k]["object_rgb_distance"])
PY
