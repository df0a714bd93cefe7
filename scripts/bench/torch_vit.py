"""PyTorch reference timing for `coeff-bench attention --model vit-s|vit-b`.

The Rust benchmark runs this script itself (embedded in the binary) when a Python with torch
and transformers is present, so both are measured in one invocation; it can also be run alone:

    python3 scripts/bench/torch_vit.py --model vit-s --iters 3 [--device cuda] [--json]

Same shapes as the Rust benchmark: transformers ViTModel (random init, 12 layers, patch 16,
224 px, no pooler), batch 8, float32, eager attention (the maps are materialised, as
Coeff-Tuning needs them). Times the forward pass (no grad) and forward+backward of
mean(last_hidden_state^2) with the input requiring grad and every weight frozen (the Rust
"none" row), median of N after a warm-up. CPU: torch threads = this machine's cores unless
--threads says otherwise. CUDA: TF32 off (the Rust backends compute in full f32), peak memory
from torch's allocator.
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import ViTConfig, ViTModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["vit-s", "vit-b"], default="vit-s")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    dev = torch.device(a.device)
    width, heads = (384, 6) if a.model == "vit-s" else (768, 12)
    cfg = ViTConfig(hidden_size=width, num_hidden_layers=12, num_attention_heads=heads,
                    intermediate_size=4 * width, image_size=224, patch_size=16,
                    attn_implementation="eager")
    model = ViTModel(cfg, add_pooling_layer=False).eval().to(dev)
    for q in model.parameters():
        q.requires_grad_(False)
    x = (torch.rand(a.batch, 3, 224, 224) * 2 - 1).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fwd, fb, peaks = [], [], []
    for it in range(a.iters + 1):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(pixel_values=x).last_hidden_state.sum().item()
        f = (time.perf_counter() - t0) * 1e3
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        xi = x.clone().requires_grad_(True)
        model(pixel_values=xi).last_hidden_state.pow(2).mean().backward()
        sync()
        b = (time.perf_counter() - t0) * 1e3
        if dev.type == "cuda":
            peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        if it > 0:
            fwd.append(f)
            fb.append(b)
    out = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "threads": a.threads,
        "model": a.model,
        "batch": a.batch,
        "iters": a.iters,
        "forward_ms": statistics.median(fwd),
        "forward_backward_ms": statistics.median(fb),
        "peak_device_mb": statistics.median(peaks) if peaks else None,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"torch {out['torch']} {a.model} batch {a.batch} on {out['device']} "
              f"(threads {a.threads}): forward {out['forward_ms']:.1f} ms, "
              f"forward+backward {out['forward_backward_ms']:.1f} ms")


if __name__ == "__main__":
    main()
