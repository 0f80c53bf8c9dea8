"""Datasets the training oracle reads, and how their images are mapped onto a space's input.

Three formats, chosen by :func:`load_dataset` from its argument:

* ``digits``: scikit-learn's 1,797 8x8 grey digits (10 classes; values 0..16 scaled to 0..255). Tests
  and quick runs use it; it needs no file.
* a directory with IDX files (``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, gzipped
  with a ``.gz`` suffix or not): Fashion-MNIST as Debian's ``dataset-fashion-mnist`` installs it under
  ``/usr/share/datasets/fashion-mnist/`` (60,000 28x28 grey images, 10 classes), or MNIST. Only the
  *training* files are read: the proxy schedule splits them into train and validation; the ``t10k``
  test files are never used to choose an architecture. Class names are ``0``..``9``.
* an ImageFolder directory: one sub-directory per class (sorted names are classes 0, 1, ...), image
  files (png, jpg, jpeg, bmp, gif, ppm, pgm, tif, tiff, webp) inside, read with Pillow. Images are
  stored resized (bilinear) to a square ``image_size`` (the largest input side the space uses), RGB,
  or grey when every image is grey.

A loaded :class:`Dataset` holds ``uint8`` images ``N x C x H x W`` and ``int64`` labels in memory, and
a digest of that content (so a cache entry names exactly the data it was trained on).

Mapping onto a network's input ``1 x C x H x W`` (:func:`to_input`, applied per batch):
pixels / 255, normalised per channel with the mean and standard deviation of the *training split*;
one grey channel is replicated to 3 when the network takes 3 (RGB averaged to grey when it takes 1);
then resized to ``H x W`` (bilinear, anti-aliased when shrinking). Classes: the dataset's labels are
the indices of the network's classifier outputs, so a dataset may have *fewer* classes than the
network (the other outputs are never a target) but not more (:class:`ClassCountError`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chamlab.core.errors import DataFileError, InputError

if TYPE_CHECKING:
    import torch

DIGITS = "digits"
IDX_IMAGES = "train-images-idx3-ubyte"
IDX_LABELS = "train-labels-idx1-ubyte"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
#: where Debian's dataset-fashion-mnist package puts its files
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


class ClassCountError(InputError):
    """The dataset has more classes than the network has outputs."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64, in memory, with a content digest."""

    name: str  # "digits", "idx:/path", "imagefolder:/path"
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    digest: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _digest(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(repr((images.shape, classes)).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def _make(name: str, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> Dataset:
    if len(images) == 0:
        raise DataFileError(f"dataset {name} holds no images")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataFileError(f"dataset {name} has labels outside 0..{len(classes) - 1}")
    return Dataset(name, images, labels, classes, _digest(images, labels, classes))


def load_dataset(spec: str | Path, *, image_size: int = 32) -> Dataset:
    """The dataset ``spec`` names (see the module docstring); ``image_size``: the side ImageFolder
    images are stored at. Raises :class:`InputError` for a missing path or unknown format and
    :class:`DataFileError` for a corrupt file."""
    if str(spec) == DIGITS:
        return _digits()
    path = Path(spec)
    if not path.exists():
        hint = "give `digits`, an ImageFolder directory or a directory of IDX files"
        if path == FASHION_MNIST_DEBIAN:
            hint = "install Fashion-MNIST with `apt-get install dataset-fashion-mnist`"
        raise InputError(f"dataset {path} does not exist", hint=hint)
    if not path.is_dir():
        raise InputError(
            f"dataset {path} is a file; unknown format",
            hint="give the directory holding train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], "
            "an ImageFolder directory (one sub-directory per class) or `digits`",
        )
    if _find_idx(path, IDX_IMAGES) is not None or _find_idx(path, IDX_LABELS) is not None:
        return _idx(path)
    if any(p.is_dir() for p in path.iterdir()):
        return _image_folder(path, image_size)
    raise InputError(
        f"dataset {path}: unknown format (no {IDX_IMAGES}[.gz] and no class sub-directories)",
        hint="an ImageFolder directory has one sub-directory of images per class",
    )


def fit_shape(spec: str | Path) -> tuple[int, int]:
    """``(side, classes)`` of the dataset ``spec`` names, what a space is fitted to (``--fit``): the
    shorter image side in pixels (ImageFolder: the median over its images, read from their headers, as
    loading resizes them) and the number of classes. Errors as :func:`load_dataset`."""
    path = Path(spec)
    folder = str(spec) != DIGITS and path.is_dir()
    idx = folder and (_find_idx(path, IDX_IMAGES) is not None or _find_idx(path, IDX_LABELS) is not None)
    if folder and not idx and any(p.is_dir() for p in path.iterdir()):
        return _image_folder_side(path)
    data = load_dataset(spec)
    return int(min(data.images.shape[2:])), data.num_classes


def _image_folder_side(folder: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    classes = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    sides = []
    for cls in classes:
        for path in cls.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(path) as im:  # reads the header only
                        sides.append(min(im.size))
                except (OSError, UnidentifiedImageError, ValueError) as exc:
                    raise DataFileError(f"ImageFolder {folder}: cannot read image {path}: {exc}") from None
    if not sides:
        raise DataFileError(f"ImageFolder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return int(np.median(sides)), len(classes)


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the digits dataset needs scikit-learn", hint="pip install scikit-learn") from None
    d = load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = np.asarray(d.target, dtype=np.int64)
    return _make(DIGITS, images, labels, tuple(str(c) for c in range(10)))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataFileError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"IDX file {path} is truncated ({len(raw)} bytes)")
    zero, dtype_code, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or dims != ndim:
        raise DataFileError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s) "
            f"(magic {raw[:4].hex()}, expected 000008{ndim:02x})"
        )
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataFileError(
            f"IDX file {path} is truncated or corrupt: header says {shape} ({int(np.prod(shape))} bytes), "
            f"the file has {len(body)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _idx(folder: Path) -> Dataset:
    img_path, lab_path = _find_idx(folder, IDX_IMAGES), _find_idx(folder, IDX_LABELS)
    for stem, found in ((IDX_IMAGES, img_path), (IDX_LABELS, lab_path)):
        if found is None:
            raise DataFileError(f"dataset {folder} has no {stem} (nor {stem}.gz)")
    assert img_path is not None and lab_path is not None
    images = _read_idx(img_path, 3)
    labels = _read_idx(lab_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise DataFileError(f"dataset {folder}: {len(images)} images but {len(labels)} labels")
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    return _make(f"idx:{folder}", images[:, None].copy(), labels, tuple(str(c) for c in range(n_classes)))


def _image_folder(folder: Path, size: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = sorted(
            p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise DataFileError(
                f"ImageFolder {folder}: class directory {name!r} holds no images "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        files += [(p, label) for p in found]
    pics = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                im.load()
                grey = im.mode in ("L", "1", "I;16", "I", "F")
                pics.append(
                    (im.convert("L" if grey else "RGB").resize((size, size), Image.Resampling.BILINEAR), grey)
                )
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataFileError(f"ImageFolder {folder}: cannot read image {path}: {exc}") from None
    all_grey = all(g for _, g in pics)
    arrays = [np.asarray(im if all_grey else im.convert("RGB"), dtype=np.uint8) for im, _ in pics]
    images = np.stack(arrays)
    images = images[:, None] if all_grey else images.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return _make(f"imagefolder:{folder}", np.ascontiguousarray(images), labels, classes)


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and standard deviation of pixels / 255 (computed on the training split)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: np.ndarray) -> Normalisation:
        x = images.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = np.maximum(x.std(axis=(0, 2, 3)), 1e-3)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def check_classes(dataset: Dataset, num_outputs: int, what: str) -> None:
    if dataset.num_classes > num_outputs:
        raise ClassCountError(
            f"class count mismatch: dataset {dataset.name} has {dataset.num_classes} classes but {what} "
            f"has {num_outputs} outputs",
            hint="use a dataset with at most that many classes, or a space whose classifier has more outputs",
        )


def to_input(images: np.ndarray, shape: tuple[int, ...], norm: Normalisation) -> torch.Tensor:
    """A batch of uint8 images ``(B, C, H, W)`` as the network's float input ``(B, *shape[1:])``."""
    import torch
    import torch.nn.functional as F

    _, channels, height, width = shape
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (x - mean) / std
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise InputError(f"cannot map {x.shape[1]}-channel images onto a {channels}-channel input")
    if tuple(x.shape[2:]) != (height, width):
        shrink = height < x.shape[2] or width < x.shape[3]
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    return x.contiguous()
