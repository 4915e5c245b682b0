"""Fixed inputs for the byte-identity test of dlss-preprocess, and how to digest its output.

The digests in ``test_preprocess_bytes.py`` were recorded with the job as it was before
the restructuring of issue 10 (commit 4f06572, ``beam_jobs/transforms.py``), run on the
inputs made here. Inputs are generated (scikit-image photographs, deterministic crops),
so the fixture is a few lines of code instead of files; PNG inputs decode identically
on any Pillow, the CelebA-like JPEGs depend on Pillow's bundled libjpeg-turbo.
"""

from __future__ import annotations

import hashlib
import json
import os

import reference_imresize
from conftest import photo_crops, save_image


def _write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_folder_inputs(root: str) -> None:
    """10 photo crops of mixed sizes (PNG), one in a subfolder, plus three rejects."""
    sizes = [(64, 64), (72, 96), (96, 72), (80, 80), (40, 70)]
    for index, crop in enumerate(photo_crops(10, 96, 96, seed=11)):
        height, width = sizes[index % len(sizes)]
        sub = "sub/" if index % 3 == 0 else ""
        save_image(os.path.join(root, f"{sub}img_{index:02d}.png"), crop[:height, :width])
    _write(os.path.join(root, "bad/empty.png"), b"")
    _write(os.path.join(root, "bad/text.jpg"), b"not an image\n")
    save_image(os.path.join(root, "bad/tiny.png"), photo_crops(1, 20, 20, seed=2)[0])


def make_paired_inputs(lr_dir: str, hr_dir: str) -> None:
    """4 LR/HR pairs (scale 2), one wrong ratio, one HR without LR."""
    crops = photo_crops(6, 64, 64, seed=12)
    for index, hr in enumerate(crops[:4]):
        save_image(os.path.join(hr_dir, f"set/{index}.png"), hr)
        save_image(
            os.path.join(lr_dir, f"set/{index}.png"), reference_imresize.degrade_bicubic(hr, 2)
        )
    save_image(os.path.join(hr_dir, "wrong.png"), crops[4])
    save_image(os.path.join(lr_dir, "wrong.png"), crops[4][:20, :20])
    save_image(os.path.join(hr_dir, "hr_only.png"), crops[5])


def make_celeba_inputs(root: str) -> None:
    """8 CelebA-sized JPEGs (178x218) with a partition file; one missing, one unlisted."""
    lines = []
    faces = photo_crops(8, 218, 178, seed=13)
    for index, face in enumerate(faces):
        name = f"{index + 1:06d}.jpg"
        save_image(os.path.join(root, "img_align_celeba", name), face, quality=90)
        lines.append(f"{name} {0 if index < 4 else 1 if index < 6 else 2}")
    lines.append("000050.jpg 0")
    save_image(os.path.join(root, "img_align_celeba", "000060.jpg"), faces[0], quality=90)
    with open(os.path.join(root, "list_eval_partition.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_all(base: str) -> dict[str, list[str]]:
    """Makes every source's inputs under ``base``; returns the job flags for each case."""
    make_folder_inputs(os.path.join(base, "folder"))
    make_paired_inputs(os.path.join(base, "lr"), os.path.join(base, "hr"))
    make_celeba_inputs(os.path.join(base, "celeba"))
    folder = ["--source=folder", f"--input_dir={base}/folder", "--scale=2", "--hr_size=32"]
    return {
        "folder": [*folder, "--split_ratios=0.6,0.2,0.2", "--num_shards=2"],
        "folder_patches": [*folder, "--patches_per_image=2", "--split_ratios=1,0,0"],
        "paired": [
            "--source=paired",
            f"--lr_dir={base}/lr",
            f"--hr_dir={base}/hr",
            "--scale=2",
            "--hr_size=32",
            "--split_ratios=0.5,0.5,0",
        ],
        "celeba": ["--source=celeba", f"--celeba_dir={base}/celeba", "--scale=4", "--hr_size=128"],
    }


def digests(out: str, input_base: str) -> dict[str, str]:
    """SHA-256 of every shard, of rejects.jsonl (paths made relative) and of the counts."""
    result = {}
    for name in sorted(os.listdir(out)):
        if ".tfrecord-" in name:
            with open(os.path.join(out, name), "rb") as f:
                result[name] = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(out, "rejects.jsonl")) as f:
        rejects = [json.loads(line) for line in f]
    for record in rejects:
        record["path"] = os.path.relpath(record["path"], input_base) if record["path"] else None
    text = json.dumps(rejects, sort_keys=True)
    result["rejects.jsonl"] = hashlib.sha256(text.encode()).hexdigest()
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    counts = {
        k: manifest[k] for k in ("splits", "totals", "rejected_by_reason", "unassigned", "warnings")
    }
    result["manifest_counts"] = hashlib.sha256(
        json.dumps(counts, sort_keys=True).encode()
    ).hexdigest()
    return result
