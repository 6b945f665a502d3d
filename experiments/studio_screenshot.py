"""The README's studio screenshot: runs ``longlive-jax serve`` as a user would, opens the page in headless
Chromium (Playwright), types a prompt switch and captures the page mid-stream.

    python experiments/studio_screenshot.py --out docs/studio.png                     # the shipped toy-world model
    python experiments/studio_screenshot.py --random-model /tmp/tiny --out docs/studio.png   # no trained model yet

``--random-model DIR`` first writes a whole-model checkpoint with random DiT weights (toy-world text encoder and
tokenizer, 64x64 video) into DIR; ``--vae CKPT`` takes the VAE from a trained export instead of random weights.
Recordings go to a temporary folder. Needs Debian's chromium (``apt-get install chromium``) and playwright.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWITCH = "a yellow triangle bounces on a purple background"


def random_model(out: Path, vae: str | None) -> Path:
  import jax
  import numpy as np
  from flax import nnx

  from longlive_jax import checkpoint
  from longlive_jax.config import tiny_config
  from longlive_jax.convert.wan_vae import _abstract_split
  from longlive_jax.model.params import params_of
  from longlive_jax.model.wan import abstract_model
  from longlive_jax.text.model import abstract_model as text_abstract
  from longlive_jax.toyworld.text import TEXT_CONFIG, TEXT_LEN, write_tokenizer
  from longlive_jax.vae.config import tiny_vae_config

  rng = np.random.default_rng(0)

  def rand(tree, scale):
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), tree)

  cfg = tiny_config(text_dim=TEXT_CONFIG.dim, text_len=TEXT_LEN)
  if vae is not None:
    from longlive_jax.pipeline import load_vae

    v = load_vae(vae)
    vae_part = (jax.tree.map(np.asarray, params_of(v)), checkpoint.read_meta(vae)["components"]["vae"]["config"])
  else:
    vcfg = tiny_vae_config()
    vae_part = (rand(nnx.to_pure_dict(_abstract_split(vcfg)[1]), 0.1), vcfg.to_dict())
  with tempfile.TemporaryDirectory() as tmp:
    return checkpoint.save(
      out,
      cfg=cfg,
      params=rand(params_of(abstract_model(cfg)), 0.05),
      meta={"native_resolution": [64, 64], "fps": 16.0, "toyworld": True, "random_weights": True},
      components={"vae": vae_part, "umt5": (rand(params_of(text_abstract(TEXT_CONFIG)), 0.05), TEXT_CONFIG.to_dict())},
      files={"tokenizer": write_tokenizer(Path(tmp) / "tokenizer")},
      overwrite=True,
    )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _until(pred, what: str, timeout: float = 600.0):
  t0 = time.monotonic()
  while not (got := pred()):
    if time.monotonic() - t0 > timeout:
      raise TimeoutError(f"timed out waiting for {what}")
    time.sleep(0.2)
  return got


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--checkpoint", help="whole-model checkpoint (default: the shipped toy-world model)")
  ap.add_argument("--random-model", help="write a random-weight toy checkpoint into this folder and use it")
  ap.add_argument("--vae", help="with --random-model: the VAE of this trained export")
  ap.add_argument("--out", default="docs/studio.png")
  ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
  a = ap.parse_args()
  from playwright.sync_api import sync_playwright

  ckpt = a.checkpoint
  if a.random_model:
    ckpt = str(random_model(Path(a.random_model), a.vae))
  port = _free_port()
  with tempfile.TemporaryDirectory() as rec:
    cmd = [sys.executable, "-m", "longlive_jax", "serve", "--port", str(port), "--recordings", rec]
    cmd += ["--checkpoint", ckpt] if ckpt else []
    print("$", " ".join(cmd[2:]), flush=True)
    server = subprocess.Popen(cmd)
    try:
      with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        _until(lambda: _try_goto(page, f"http://127.0.0.1:{port}/"), "the server")
        js = lambda e: page.evaluate(f"() => {e}")  # noqa: E731
        _until(lambda: js("window.studio.framesDrawn") > 40, "frames")
        page.fill("#prompt", SWITCH)
        page.press("#prompt", "Enter")
        ack = _until(lambda: js("window.studio.lastAck"), "the switch")
        _until(lambda: js("window.studio.shownFrame") >= 4 * ack["frame"] + 20, "the switch on screen")
        page.fill("#prompt", "a white circle moves left on a green background")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=a.out)
        print(f"wrote {a.out} (switch at latent frame {ack['frame']})")
        browser.close()
    finally:
      server.send_signal(signal.SIGINT)  # Ctrl-C: the take's files are finished on the way out
      code = server.wait(60)
    print("recordings:", sorted(f.name for f in Path(rec).iterdir()))
  print(f"server exited with {code}")
  return 0 if code == 0 else 1


def _try_goto(page, url) -> bool:
  try:
    page.goto(url)
    return True
  except Exception:  # noqa: BLE001 (not listening yet)
    return False


if __name__ == "__main__":
  sys.exit(main())
