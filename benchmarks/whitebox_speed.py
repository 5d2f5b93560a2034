"""Seconds per image of white-box verification (VAE decoder inversion).

Times ``WhiteBoxVerifier.features`` (the inversion) on the model's own decodes for each ``--size`` and ``--steps``.
Without ``--model`` an untrained tiny VAE is built from config (speed does not depend on training).

    python benchmarks/whitebox_speed.py --size 32 64 --steps 0 50
    python benchmarks/whitebox_speed.py --model path/to/sd-pipeline --size 256 512 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.verification import WhiteBoxVerifier  # noqa: E402


def tiny_vae():
    """The 3-level (4x downsampling), 16-channel AutoencoderKL used by tests/test_whitebox.py."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1,
                         norm_num_groups=16, sample_size=32, scaling_factor=1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers pipeline folder, bare VAE folder or Hub id (default: tiny VAE)")
    parser.add_argument("--size", type=int, nargs="+", default=[32], help="crop side(s) in px")
    parser.add_argument("--steps", type=int, nargs="+", default=[50], help="Adam steps per image")
    parser.add_argument("--n", type=int, default=4, help="images timed per row")
    parser.add_argument("--batch-size", type=int, default=1, help="images inverted together")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        verifier = WhiteBoxVerifier.from_pretrained(args.model, calibration=False, batch_size=args.batch_size,
                                                    device=args.device)
    else:
        verifier = WhiteBoxVerifier(tiny_vae(), batch_size=args.batch_size, device=args.device, model_id="tiny")
    print(f"model={verifier.model_id} device={verifier.device} threads={torch.get_num_threads()} "
          f"batch_size={args.batch_size} n={args.n}")
    print(f"{'size':>6} {'steps':>6} {'s/image':>9} {'ms/step':>9}")
    for size in args.size:
        verifier.size = size
        images = verifier.sample(args.n, generator=0)
        verifier.steps = 1
        verifier.features(images[:1])  # warm-up
        for steps in args.steps:
            verifier.steps = steps
            start = time.perf_counter()
            verifier.features(images)
            per_image = (time.perf_counter() - start) / args.n
            per_step = f"{1000 * per_image / steps:9.1f}" if steps else f"{'-':>9}"
            print(f"{size:>6} {steps:>6} {per_image:>9.3f} {per_step}")


if __name__ == "__main__":
    main()
