"""`mdclust embed` against a naive loop, as whole processes, on the same model, folder and
machine; and the forward pass alone, fp32 against int8.

The naive loop is what a first script does: import torch and open_clip, load the model with
open_clip, decode one image in the main process, run the model on it alone, repeat. Each run is
its own process (start-up, imports, model loading and exit included), timed from outside; the
ratios are what matter, since every figure comes from this run.

Both load the weights of an open_clip tag (``--tag``, default openai) from a Hugging Face
cache, as after a download: seeded random weights saved there as .safetensors, since no
registry ships real ones. The earlier form of this benchmark, random weights drawn by both and
a naive loop built on mdclust's own ClipEncoder, is the second pair of rows.

    python benchmarks/embed_throughput.py [--n 160] [--model ViT-B-32] [--size 320]
    python benchmarks/embed_throughput.py --forward-only     # batch 64, fp32 vs int8

int8 is timed twice: with an empty cache (the first run exports and quantises the image tower)
and with the tower cached (every later run; core/int8.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).with_name("mdclust")

NAIVE = """
import sys
from pathlib import Path
import torch
import open_clip
from PIL import Image
model, _, preprocess = open_clip.create_model_and_transforms(sys.argv[2], pretrained=sys.argv[3])
model.eval()
n = 0
for p in sorted(Path(sys.argv[1]).glob("*.jpg")):
    with torch.no_grad():
        feat = model.encode_image(preprocess(Image.open(p).convert("RGB")).unsqueeze(0))
        torch.nn.functional.normalize(feat, dim=-1)
    n += 1
print(n)
"""

# the loop as first written here: random weights, on mdclust's own encoder (no start-up cuts
# of its own to show, so only the batching is measured)
NAIVE_ENCODER = """
import sys
import torch
from pathlib import Path
from mdclust.core.encoders import ClipEncoder, model_spec
from mdclust.core.images import load_rgb
enc = ClipEncoder(model_spec(sys.argv[2], sys.argv[3]), device="cpu", precision="fp32")
n = 0
for p in sorted(Path(sys.argv[1]).glob("*.jpg")):
    with torch.no_grad():
        feat = enc.model.encode_image(enc.preprocess(load_rgb(p)).unsqueeze(0))
        torch.nn.functional.normalize(feat, dim=-1)
    n += 1
print(n)
"""


def save_weights(model: str, tag: str, hub: Path) -> None:
    """Seeded random weights where a download of ``model``'s ``tag`` would have put them: a
    Hugging Face cache under ``hub``, as .safetensors (open_clip's first choice)."""
    import open_clip
    import torch
    from open_clip import constants as oc
    from safetensors.torch import save_file

    repo = open_clip.get_pretrained_cfg(model, tag)["hf_hub"].strip("/")
    folder = hub / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    torch.manual_seed(0)
    net = open_clip.create_model(model)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(folder / "snapshots" / revision / oc.HF_SAFE_WEIGHTS_NAME))


def make_folder(folder: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(arr).resize((size, size), Image.BICUBIC).filter(ImageFilter.BLUR)
        img.save(folder / f"img{i:05d}.jpg", quality=90)


def timed(args: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])}... failed: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - t0, done.stdout


def embed_process(folder: Path, store: Path, args, *extra: str, env=None,
                  weights: str | None = None) -> tuple[float, int]:
    seconds, out = timed([str(BIN), "embed", str(folder), "--store", str(store), "--model",
                          args.model, "--pretrained", weights or args.pretrained, "--json",
                          "--quiet", *extra], env)
    return seconds, json.loads(out)["embedded"]


def whole_processes(args) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        make_folder(folder, args.n, args.size)
        cache = {"MDCLUST_CACHE": str(tmp / "cache")}  # empty: the first int8 run exports
        # a tag's weights as a download leaves them, offline (no registry ships real ones)
        weights = args.tag
        save_weights(args.model, weights, tmp / "hub")
        os.environ.update(HF_HUB_CACHE=str(tmp / "hub"), HF_HUB_OFFLINE="1")
        naive, md = [], []
        for r in range(args.repeat):  # alternated, so that a slow spell of the machine hits both
            seconds, out = timed([sys.executable, "-c", NAIVE, str(folder), args.model, weights])
            assert int(out) == args.n
            naive.append(seconds)
            (tmp / "a.h5").unlink(missing_ok=True)
            seconds, n1 = embed_process(folder, tmp / "a.h5", args, weights=weights)
            md.append(seconds)
        t_naive, t_md = statistics.median(naive), statistics.median(md)
        t_re, _ = embed_process(folder, tmp / "a.h5", args, weights=weights)
        t_cold, n2 = embed_process(folder, tmp / "b.h5", args, "--precision", "int8", env=cache,
                                   weights=weights)
        t_warm, n3 = embed_process(folder, tmp / "c.h5", args, "--precision", "int8", env=cache,
                                   weights=weights)
        t_naive_r, out = timed([sys.executable, "-c", NAIVE_ENCODER, str(folder), args.model,
                                args.pretrained])
        t_md_r, n4 = embed_process(folder, tmp / "d.h5", args)
    assert n1 == n2 == n3 == n4 == args.n
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; model {args.model} "
          f"(tag {weights}: seeded random weights in a Hugging Face cache); "
          f"{args.n} JPEGs {args.size}px; whole processes")
    print(f"naive loop (open_clip)      : {t_naive:7.2f} s  {args.n / t_naive:6.1f} img/s"
          + (f"  (median of {args.repeat}: {_runs(naive)})" if args.repeat > 1 else ""))
    print(f"mdclust embed (defaults)    : {t_md:7.2f} s  {args.n / t_md:6.1f} img/s  "
          f"{t_naive / t_md:5.2f}x  (target >= 1.5x)"
          + (f"  (median of {args.repeat}: {_runs(md)})" if args.repeat > 1 else ""))
    print(f"  --precision int8, cached  : {t_warm:7.2f} s  {args.n / t_warm:6.1f} img/s  "
          f"{t_naive / t_warm:5.2f}x  (target >= 2x)")
    print(f"  --precision int8, 1st run : {t_cold:7.2f} s  {args.n / t_cold:6.1f} img/s  "
          f"{t_naive / t_cold:5.2f}x  (exports and quantises the tower)")
    print(f"unchanged rerun             : {t_re:7.2f} s")
    print(f"earlier form, {args.pretrained} weights drawn by both:")
    print(f"  naive loop (ClipEncoder)  : {t_naive_r:7.2f} s  {args.n / t_naive_r:6.1f} img/s")
    print(f"  mdclust embed (defaults)  : {t_md_r:7.2f} s  {args.n / t_md_r:6.1f} img/s  "
          f"{t_naive_r / t_md_r:5.2f}x")


def _runs(seconds: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in seconds)


def forward_only(args) -> None:
    """One batch through the image tower, fp32 (torch) against int8 (ONNX Runtime), the
    second of three timed calls each; and the cosine of every image's feature to fp32's."""
    import numpy as np
    import torch

    from mdclust.core.encoders import ClipEncoder, model_spec

    torch.manual_seed(0)
    pixels = torch.randn(args.batch_size, 3, 224, 224)
    spec = model_spec(args.model, args.pretrained)
    times, feats = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MDCLUST_CACHE"] = tmp
        for precision in ("fp32", "int8"):
            enc = ClipEncoder(spec, device="cpu", precision=precision)
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                feats[precision] = enc.encode_images(pixels)
                runs.append(time.perf_counter() - t0)
            times[precision] = sorted(runs)[1]
            del enc
    cos = (feats["fp32"] * feats["int8"]).sum(1)
    print(f"forward only, {args.model} ({args.pretrained}), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"fp32 (torch)       : {times['fp32']:.2f} s")
    print(f"int8 (ONNX Runtime): {times['int8']:.2f} s  {times['fp32'] / times['int8']:.2f}x "
          f"(target >= 1.6x); cosine to fp32 min {cos.min():.4f}, mean {np.mean(cos):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--size", type=int, default=320, help="side of the generated JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="random",
                    help="the weights of the earlier form's rows and of --forward-only")
    ap.add_argument("--tag", default="openai", help="the tag whose download is imitated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the naive loop and of the defaults, alternated; medians shown")
    args = ap.parse_args()
    (forward_only if args.forward_only else whole_processes)(args)


if __name__ == "__main__":
    main()
