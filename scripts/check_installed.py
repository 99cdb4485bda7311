r"""Check an installed rcsb-captum as users get it (run by ``.ci/run`` from outside the checkout,
in a fresh venv holding only the wheel and its dependencies).

- the package is imported from site-packages, not from a source tree;
- every module of the installed package imports (optional extras that are not installed,
  e.g. Quantus, are reported and skipped only when the module says which extra it needs);
- the shipped data files are there and load;
- the adapters (top-level `integrations/` of the source) install as ``rcsb_captum.integrations``;
- with ``--sdist``: every package module of the wheel is in the sdist too.

    python scripts/check_installed.py [--sdist dist/rcsb_captum-X.tar.gz]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tarfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", default=None, help="sdist archive to compare with the wheel")
    args = parser.parse_args()

    import rcsb_captum

    origin = Path(rcsb_captum.__file__).resolve().parent
    if "site-packages" not in origin.parts:
        print(f"rcsb_captum imported from {origin}, not from an installed wheel", file=sys.stderr)
        return 1
    names = sorted(m.name for m in pkgutil.walk_packages([str(origin)], prefix="rcsb_captum."))
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            # an optional adapter may need its extra ("pip install 'rcsb-captum[quantus]'")
            if "rcsb-captum[" in str(e):
                print(f"skip {name}: {e}")
                continue
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if failed:
        print("modules that do not import:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    adapters = {"rcsb_captum.integrations.quantus", "rcsb_captum.integrations.grounded_sam"}
    if not adapters <= set(names):
        print(f"adapters missing from the wheel: {sorted(adapters - set(names))}", file=sys.stderr)
        return 1
    print(f"{len(names)} modules import from {origin}")

    from rcsb_captum import Bridge, DiffusionAutoencoder
    from rcsb_captum.demo import load_demo_classifier, load_demo_oracle, load_demo_samples

    Bridge.pretrained("fashion-mnist")
    DiffusionAutoencoder.pretrained("fashion-mnist")
    load_demo_classifier()
    load_demo_oracle()
    load_demo_samples()
    print("shipped models load")

    if args.sdist:
        with tarfile.open(args.sdist) as tar:
            members = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}

        def source_path(p: Path) -> str:
            # the adapters come from the top-level integrations/ folder of the source tree
            rel = p.relative_to(origin)
            top = Path() if rel.parts[0] == "integrations" else Path("rcsb_captum")
            return (top / rel).as_posix()

        wheel_files = {
            source_path(p)
            for p in origin.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        missing = sorted(f for f in wheel_files if f not in members)
        if missing:
            print(f"in the wheel but not in the sdist: {missing}", file=sys.stderr)
            return 1
        print(f"sdist holds all {len(wheel_files)} files of the installed package")
    return 0


if __name__ == "__main__":
    sys.exit(main())
