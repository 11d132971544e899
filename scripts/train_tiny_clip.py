"""Train `mdclust-tiny`, the small CLIP that makes the offline demo meaningful.

An open_clip architecture (config mdclust/data/model_configs/mdclust-tiny.json: ModifiedResNet
[1,1,1,1] width 32 at 64 px, 2-layer text transformer of width 64, embed_dim 64, open_clip's
SimpleTokenizer) trained from scratch with the CLIP contrastive loss on images from
`mdclust.datasets` and captions naming some or all of their aspects. Where several captions in a
batch are true of an image ("a photo of something red" for every red image) the targets are soft:
uniform over all true pairs. Auxiliary linear heads on the image embedding, one per aspect,
speed up learning of shape, the hard aspect (see ../shared/notes/tiny-clip-experiments.md).

Reproducible from --seed (same steps, same data). Writes fp16 weights and a JSON report next to
them; docs/models.md records the figures.

    python scripts/train_tiny_clip.py            # defaults reproduce the shipped weights
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdclust import datasets  # noqa: E402

# One template list per aspect; "a photo of a {}." is mdclust's default prompt, so every value
# of every aspect is trained under it (including "a photo of a two.").
TEMPLATES = {
    "color": ["a photo of a {}.", "a photo of something {}.", "{}", "the color {}",
              "a {} object", "an object with color of {}", "something {}"],
    "shape": ["a photo of a {}.", "{}", "a {}", "a {} shape", "an object with shape of {}",
              "a photo of the {}."],
    "background": ["a photo of a {}.", "{}", "a {} background", "on a {} background",
                   "an object with background of {}", "a photo with a {} background"],
    "count": ["a photo of a {}.", "{}", "{} objects", "a photo of {} objects",
              "an image with count of {}", "{} things"],
    "texture": ["a photo of a {}.", "{}", "a {} object", "a {} shape",
                "an object with texture of {}", "something {}"],
}
FULL = ["a {texture} {color} {shape} on a {background} background",
        "a photo of a {color} {shape}.", "a {color} {shape}", "{count} {color} {shape}",
        "a {shape} on a {background} background", "{count} {texture} objects",
        "a {color} object on a {background} background", "a {texture} {shape}",
        "{count} {texture} {color} {shape} on a {background} background"]
EVAL_TEMPLATE = "a photo of a {}."
DEVICE = "cpu"  # --device; the shipped weights are trained on the CPU


def caption(labels: dict[str, str], rng: random.Random) -> tuple[str, dict[str, str]]:
    """A caption and the aspects it asserts (used to know which images it is true of)."""
    if rng.random() < 0.55:
        aspect = rng.choice(list(TEMPLATES))
        return rng.choice(TEMPLATES[aspect]).format(labels[aspect]), {aspect: labels[aspect]}
    t = rng.choice(FULL)
    used = {a: labels[a] for a in labels if "{" + a + "}" in t}
    return t.format(**labels), used


def _render_chunk(args):
    seed, start, n, size = args
    out = []
    for i, (s, rng) in enumerate(datasets.samples(start + n, seed)):
        if i >= start:
            out.append((np.asarray(datasets.render(s, rng, size)), s.labels()))
    return out


def render_set(n: int, seed: int, size: int, procs: int = 2):
    chunks = [(seed, i, min(2000, n - i), size) for i in range(0, n, 2000)]
    with Pool(procs) as pool:
        parts = pool.map(_render_chunk, chunks)
    imgs = np.stack([im for part in parts for im, _ in part])
    labels = [lab for part in parts for _, lab in part]
    return imgs, labels


def to_tensor(imgs_uint8):
    import torch

    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    x = torch.from_numpy(imgs_uint8).permute(0, 3, 1, 2).float() / 255.0
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last).to(DEVICE)


def zero_shot(model, tokenizer, imgs, labels) -> dict[str, float]:
    import torch

    model.eval()
    acc = {}
    with torch.inference_mode():
        feats = []
        for i in range(0, len(imgs), 250):
            feats.append(model.encode_image(to_tensor(imgs[i:i + 250]), normalize=True))
        feats = torch.cat(feats)
        for aspect, values in datasets.VOCABULARY.items():
            t = model.encode_text(tokenizer([EVAL_TEMPLATE.format(v) for v in values]).to(DEVICE),
                                  normalize=True)
            pred = (feats @ t.T).argmax(1).cpu().numpy()
            truth = np.array([values.index(lab[aspect]) for lab in labels])
            acc[aspect] = round(float((pred == truth).mean()), 4)
    model.train()
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description="Train the bundled tiny CLIP (mdclust-tiny).")
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--aux", type=float, default=1.0, help="aux head weight, first half")
    ap.add_argument("--aux-late", type=float, default=1.0, help="aux head weight, second half")
    ap.add_argument("--n-train", type=int, default=40000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--procs", type=int, default=2, help="processes rendering the images")
    ap.add_argument("--eval-seed", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=ROOT / "mdclust/data/weights/mdclust-tiny.pt")
    args = ap.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F

    from mdclust.core.encoders import register_configs

    global DEVICE
    DEVICE = args.device
    t_start = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    register_configs()
    model = open_clip.create_model("mdclust-tiny").to(DEVICE, memory_format=torch.channels_last)
    tokenizer = open_clip.get_tokenizer("mdclust-tiny")
    cfg = open_clip.get_model_config("mdclust-tiny")
    size = cfg["vision_cfg"]["image_size"]

    print(f"rendering {args.n_train} training and {args.n_eval} evaluation images ...", flush=True)
    train_imgs, train_labels = render_set(args.n_train, args.seed, size, args.procs)
    eval_imgs, eval_labels = render_set(args.n_eval, args.eval_seed, size, args.procs)
    aspects = list(datasets.VOCABULARY)
    y = {a: torch.tensor([datasets.VOCABULARY[a].index(lab[a]) for lab in train_labels],
                         device=DEVICE)
         for a in aspects}
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(cfg["embed_dim"], len(v))
                                 for a, v in datasets.VOCABULARY.items()}).to(DEVICE)

    # The token embedding is not decayed: rows of words the captions never use would shrink
    # towards zero and every unseen word would become the same point (v1 did this: cosine ~0.9
    # between any two unseen words); kept at their random start they are distinct, arbitrary
    # concepts, as a user's out-of-vocabulary candidates are to a small model.
    tok = {id(model.token_embedding.weight)}
    params = list(model.parameters()) + list(heads.parameters())
    decay = [p for p in params if p.ndim >= 2 and id(p) not in tok]
    no_decay = [p for p in params if p.ndim < 2 or id(p) in tok]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed)
    history = []
    t_train = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, len(train_imgs), (args.batch,), generator=gen)
        labs = [train_labels[i] for i in idx.tolist()]
        caps = [caption(lab, rng) for lab in labs]
        # truth[i, j]: caption j is true of image i.
        truth = torch.tensor([[all(lab[a] == v for a, v in used.items()) for _, used in caps]
                              for lab in labs], dtype=torch.float32, device=DEVICE)
        img = model.encode_image(to_tensor(train_imgs[idx.numpy()]))
        txt = model.encode_text(tokenizer([c for c, _ in caps]).to(DEVICE), normalize=True)
        logits = model.logit_scale.exp() * F.normalize(img, dim=-1) @ txt.T
        loss_clip = 0.5 * (F.cross_entropy(logits, truth / truth.sum(1, keepdim=True))
                           + F.cross_entropy(logits.T, truth.T / truth.T.sum(1, keepdim=True)))
        w_aux = args.aux if step < args.steps // 2 else args.aux_late
        loss_aux = sum(F.cross_entropy(heads[a](img), y[a][idx]) for a in aspects) / len(aspects)
        loss = loss_clip + w_aux * loss_aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            per = (time.time() - t_train) / (step + 1)
            entry = {"step": step, "loss_clip": round(loss_clip.item(), 4),
                     "loss_aux": round(loss_aux.item(), 4)}
            if step % 100 == 0 or step == args.steps - 1:
                entry["zero_shot"] = zero_shot(model, tokenizer, eval_imgs[:300], eval_labels[:300])
            history.append(entry)
            print(f"step {step:4d}/{args.steps}  {entry}  {per:.2f} s/step  "
                  f"eta {per * (args.steps - step - 1) / 60:.1f} min", flush=True)

    acc = zero_shot(model, tokenizer, eval_imgs, eval_labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    report = {"zero_shot_accuracy": acc, "eval_images": args.n_eval, "eval_seed": args.eval_seed,
              "eval_template": EVAL_TEMPLATE, "minutes": round((time.time() - t_start) / 60, 2),
              "args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
              "open_clip": open_clip.__version__, "history": history,
              "file_mb": round(args.out.stat().st_size / 1e6, 2)}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("zero_shot_accuracy", "minutes", "file_mb")}))


if __name__ == "__main__":
    main()
