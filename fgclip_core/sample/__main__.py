"""``python -m fgclip_core.sample DEST``: materialise the bundled sample into DEST and print a summary."""

from __future__ import annotations

import sys

from fgclip_core.sample.materialize import SampleSourceError, materialize_sample


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m fgclip_core.sample DEST_DIR", file=sys.stderr)
        return 2
    try:
        sample = materialize_sample(args[0])
    except SampleSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    regions = sum(len(r.bbox_info) for r in sample.records)
    print(f"{len(sample)} images, {regions} regions -> {sample.images_root}, {sample.annotations_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
