"""PyTorch reference timing for `coeff-experiments bench-attention --model vit-s|vit-b`.

Same shapes as the Rust benchmark: transformers ViTModel (random init, 12 layers, patch 16,
224 px, no pooler), batch 8, float32, CPU, eager attention, torch threads = 2 (this machine's
cores). Times the forward pass (no grad) and forward+backward of mean(last_hidden_state^2) with
the input requiring grad and every weight frozen (the "none" row), median of N after a warm-up.

    python3 scripts/bench/torch_vit.py --model vit-s --iters 2
"""
import argparse
import statistics
import time

import torch
from transformers import ViTConfig, ViTModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["vit-s", "vit-b"], default="vit-s")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    width, heads = (384, 6) if a.model == "vit-s" else (768, 12)
    cfg = ViTConfig(hidden_size=width, num_hidden_layers=12, num_attention_heads=heads,
                    intermediate_size=4 * width, image_size=224, patch_size=16,
                    attn_implementation="eager")
    model = ViTModel(cfg, add_pooling_layer=False).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    x = torch.rand(a.batch, 3, 224, 224) * 2 - 1
    fwd, fb = [], []
    for it in range(a.iters + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(pixel_values=x).last_hidden_state.sum().item()
        f = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        xi = x.clone().requires_grad_(True)
        model(pixel_values=xi).last_hidden_state.pow(2).mean().backward()
        b = (time.perf_counter() - t0) * 1e3
        if it > 0:
            fwd.append(f)
            fb.append(b)
    print(f"torch {torch.__version__} {a.model} batch {a.batch} threads {a.threads}: "
          f"forward {statistics.median(fwd):.1f} ms, forward+backward {statistics.median(fb):.1f} ms")


if __name__ == "__main__":
    main()
