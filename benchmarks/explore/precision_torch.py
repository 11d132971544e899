"""A cheaper CPU forward for ViT-B-32 (issue #27, groundwork): torch fp32 against dynamic int8
(quantize_dynamic of the Linear layers) and bf16 autocast, batch 64, random weights; speed and
the cosine of each image's feature to fp32's. Not part of mdclust; figures in
docs/benchmarks.md ("A cheaper CPU forward").

    .venv/bin/python benchmarks/explore/precision_torch.py
"""

import contextlib
import time

import open_clip
import torch


def bench(model, x, ctx=contextlib.nullcontext, reps=3):
    with torch.inference_mode(), ctx():
        model.encode_image(x[:8])  # warm-up
        t = time.perf_counter()
        for _ in range(reps):
            f = model.encode_image(x)
        dt = (time.perf_counter() - t) / reps
    return dt, torch.nn.functional.normalize(f.float(), dim=-1)


def main() -> None:
    torch.manual_seed(0)
    model = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)[0].eval()
    x = torch.randn(64, 3, 224, 224)
    t32, f32 = bench(model, x)
    print(f"fp32 {t32:.2f} s per batch of 64 ({64 / t32:.1f} img/s)", flush=True)
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    t8, f8 = bench(q, x)
    print(f"int8 dynamic {t8:.2f} s ({t32 / t8:.2f}x), min cosine "
          f"{(f8 * f32).sum(1).min():.4f}", flush=True)
    tb, fb = bench(model, x, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    print(f"bf16 autocast {tb:.2f} s ({t32 / tb:.2f}x), min cosine "
          f"{(fb * f32).sum(1).min():.4f}")
    print("CPU capability:", torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main()
