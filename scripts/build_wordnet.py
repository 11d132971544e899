"""Build mdclust/data/wordnet.zip (WordNet 3.0 for nltk) from Debian's packages.

nltk.download() needs the network; Debian's `wordnet-base` and `wordnet-sense-index` hold the
same WordNet 3.0 database files. This script fetches the two .deb files with `apt-get download`
(or takes them from --debs), unpacks them with `dpkg-deb -x`, and writes a zip laid out the way
nltk's WordNetCorpusReader reads it (`wordnet/<file>`), adding the `lexnames` file that Debian
does not ship and the WordNet license. Deterministic: fixed member order and timestamps.

    python scripts/build_wordnet.py [--debs DIR] [--out mdclust/data/wordnet.zip]
"""

from __future__ import annotations

import argparse
import glob
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wordnet-base", "wordnet-sense-index")
FILES = ["data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv", "index.noun",
         "index.verb", "index.sense", "adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev"]
# The lexicographer files of WordNet 3.0 (lexnames(5WN)); nltk needs them as a file.
LEXNAMES = """adj.all 3
adj.pert 3
adv.all 4
noun.Tops 1
noun.act 1
noun.animal 1
noun.artifact 1
noun.attribute 1
noun.body 1
noun.cognition 1
noun.communication 1
noun.event 1
noun.feeling 1
noun.food 1
noun.group 1
noun.location 1
noun.motive 1
noun.object 1
noun.person 1
noun.phenomenon 1
noun.plant 1
noun.possession 1
noun.process 1
noun.quantity 1
noun.relation 1
noun.shape 1
noun.state 1
noun.substance 1
noun.time 1
verb.body 2
verb.change 2
verb.cognition 2
verb.communication 2
verb.competition 2
verb.consumption 2
verb.contact 2
verb.creation 2
verb.emotion 2
verb.motion 2
verb.perception 2
verb.possession 2
verb.social 2
verb.stative 2
verb.weather 2
adj.ppl 3"""


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{pos}\n"
                   for i, (name, pos) in enumerate(line.split() for line in LEXNAMES.splitlines()))


def fetch_debs(workdir: Path) -> list[Path]:
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    return sorted(Path(p) for p in glob.glob(str(workdir / "*.deb")))


def build(debs: list[Path], out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp) / "x"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        dict_dir = unpacked / "usr/share/wordnet"
        missing = [f for f in FILES if not (dict_dir / f).is_file()]
        if missing:
            sys.exit(f"build_wordnet: missing in the packages: {', '.join(missing)}")
        license_text = (unpacked / "usr/share/doc/wordnet-base/copyright").read_text()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp_out, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=9) as z:
            def add(name: str, data: bytes) -> None:
                info = zipfile.ZipInfo(f"wordnet/{name}", date_time=(2006, 12, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)

            for f in FILES:
                add(f, (dict_dir / f).read_bytes())
            add("lexnames", lexnames_text().encode())
            add("LICENSE", license_text.encode())
        tmp_out.replace(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", type=Path, help="folder that already holds the two .deb files")
    ap.add_argument("--out", type=Path, default=ROOT / "mdclust/data/wordnet.zip")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        debs = (sorted(args.debs.glob("*.deb")) if args.debs else fetch_debs(Path(tmp)))
        out = build(debs, args.out)
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
