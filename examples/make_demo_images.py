"""A small folder of coloured shapes with labels.csv, for `make demo` (no network needed)."""

import csv
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210)}
SHAPES = ("circle", "square", "triangle")


def main(out: Path, n: int = 90, seed: int = 0) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        img = Image.new("RGB", (128, 128), tuple(rng.randint(200, 255) for _ in range(3)))
        d = ImageDraw.Draw(img)
        r, cx, cy = rng.randint(25, 45), rng.randint(45, 83), rng.randint(45, 83)
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            d.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            d.rectangle(box, fill=COLORS[color])
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[color])
        name = f"{shape}/{i:04d}.png"
        (out / shape).mkdir(exist_ok=True)
        img.save(out / name)
        rows.append((name, color, shape))
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "color", "shape"])
        w.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:]))
