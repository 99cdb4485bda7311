"""What durable writes cost a dataset run: the four files of an image (two PNGs, the tensors,
the record) written as ``explain-dataset`` writes them (temporary file, flush, ``fsync``,
rename, ``fsync`` of the folder; ``rcsb_captum.durable.atomic_write``) against the same files
written plainly, per image, in one run, and as a share of the time an image takes to explain.

    python benchmarks/durable_writes.py --images 64 --out-dir /tmp/durable --seconds-per-image 0.36
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import torch
from PIL import Image

from rcsb_captum.durable import atomic_write


def _files(i: int, x: torch.Tensor) -> dict[str, bytes]:
    arr = (x[0] * 255).round().byte().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    png = buf.getvalue()
    tensors = io.BytesIO()
    torch.save({"input": x, "counterfactual": x, "region": x[:1], "samples": x[None]}, tensors)
    record = json.dumps({"index": i, "success": True, "cout": 0.9}).encode()
    return {
        f"images/{i:07d}_counterfactual.png": png,
        f"images/{i:07d}_region.png": png,
        f"tensors/{i:07d}.pt": tensors.getvalue(),
        f"records/{i:07d}.json": record,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--out-dir", default="/tmp/rcsb_durable_writes")
    p.add_argument("--seconds-per-image", type=float, default=0.36, help="explanation time")
    a = p.parse_args()
    out = Path(a.out_dir)
    x = torch.rand(a.images, 1, 32, 32)
    files = [_files(i, x[i]) for i in range(a.images)]
    times = {}
    for mode in ("plain", "durable", "plain", "durable"):
        shutil.rmtree(out, ignore_errors=True)
        for sub in ("images", "tensors", "records"):
            (out / sub).mkdir(parents=True)
        t = time.perf_counter()
        for f in files:
            for name, data in f.items():
                if mode == "plain":
                    (out / name).write_bytes(data)
                else:
                    atomic_write(out / name, lambda fh, data=data: fh.write(data))
        times.setdefault(mode, []).append((time.perf_counter() - t) / a.images)
    plain, durable = min(times["plain"]), min(times["durable"])
    extra = durable - plain
    print(
        f"per image: plain {plain * 1e3:.2f} ms, durable {durable * 1e3:.2f} ms "
        f"(+{extra * 1e3:.2f} ms = {100 * extra / a.seconds_per_image:.2f} % of "
        f"{a.seconds_per_image} s an image)"
    )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
