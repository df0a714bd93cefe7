#!/usr/bin/env python3
"""Write a class-per-folder image set from Twitter's emoji artwork, for `tune classify`, or
one subcategory's images straight into a folder, for `tune dreambooth`.

    python3 scripts/data/emoji_folder.py OUT [--classes N] [--per-class K] [--min M]
    python3 scripts/data/emoji_folder.py OUT --subcategory cat-face [--per-class K]

Fetches the pinned npm package (``npm pack emoji-datasource-twitter@16.0.0``, sha256-checked,
the same package the concept experiment reads), and writes ``OUT/<subcategory>/<short_name>.png``
(64x64 RGBA artwork, copied unchanged) for the first N subcategories, in the package's
order, that have at least M emoji, K per class. Skin-tone variants are not used.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import OrderedDict
from pathlib import Path

PACKAGE = "emoji-datasource-twitter@16.0.0"
SHA256 = "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--min", type=int, default=20)
    ap.add_argument("--subcategory", help="only this subcategory, its images directly in OUT")
    a = ap.parse_args()
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"{a.out} exists and is not empty; give a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if digest != SHA256:
            sys.exit(f"{tgz.name}: sha256 {digest}, expected {SHA256}")
        with tarfile.open(tgz) as tar:
            meta = json.load(tar.extractfile("package/emoji.json"))
            meta.sort(key=lambda e: e.get("sort_order", 0))
            groups: "OrderedDict[str, list]" = OrderedDict()
            for e in meta:
                if e.get("has_img_twitter"):
                    groups.setdefault(e["subcategory"], []).append(e)
            if a.subcategory:
                if a.subcategory not in groups:
                    sys.exit(f"no subcategory {a.subcategory!r}; there are {', '.join(groups)}")
                chosen = [(a.subcategory, groups[a.subcategory])]
            else:
                chosen = [(s, es) for s, es in groups.items() if len(es) >= a.min][: a.classes]
            if not a.subcategory and len(chosen) < a.classes:
                sys.exit(f"only {len(chosen)} subcategories have at least {a.min} emoji")
            for sub, es in chosen:
                d = a.out if a.subcategory else a.out / sub
                d.mkdir(parents=True, exist_ok=True)
                for e in es[: a.per_class]:
                    data = tar.extractfile(f"package/img/twitter/64/{e['image']}").read()
                    (d / f"{e['short_name']}.png").write_bytes(data)
                print(f"{sub}: {min(len(es), a.per_class)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
