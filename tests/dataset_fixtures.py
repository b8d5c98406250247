"""Builders of tiny dataset trees in the REAL on-disk layouts, for tests.

Each ``make_*`` function writes into a given directory (pytest's ``tmp_path``) and returns the
dataset root. Images are a few pixels wide, written with PIL. Broken variants: ``missing``
leaves out one folder or list file, ``bad_name`` adds an image file whose name does not
match the dataset's pattern.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests write
``import dataset_fixtures as fx``.

Default contents (the tests count on these):

- Market-1501 / Duke / CUHK03-NP: train pids 2, 7, 9; test pids 3, 5; cameras 1 and 2;
  train 2 images per (pid, camera) = 12; query 1 per (pid, camera) = 4; gallery 2 per (pid,
  camera) = 8, plus (Market only) 2 distractor images (pid 0000) and 1 junk image (pid -1)
  = 11. The gallery also holds ``Thumbs.db`` and ``readme.txt`` (ignored).
- MSMT17: train pids 0, 1, 2 with 2 images per camera (cameras 1, 2) in ``list_train.txt``
  = 12 and 1 more per pid in ``list_val.txt`` = 3; test pids 0, 1: query 1 per camera = 4,
  gallery 2 per camera = 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mirror3d.data.synth import SynthConfig, generate_dataset

REID_TRAIN_PIDS = (2, 7, 9)
REID_TEST_PIDS = (3, 5)
REID_CAMS = (1, 2)


# ----------------------------------------------------------------------------------------
# small image writers


def _color(seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    return tuple(int(v) for v in rng.integers(30, 225, size=3))


def write_rgb(path: Path, size: tuple[int, int] = (8, 16), seed: int = 0, array: np.ndarray | None = None) -> Path:
    """Write an RGB image (solid colour from ``seed``, or ``array`` (H, W, 3) uint8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.zeros((size[1], size[0], 3), np.uint8) + np.array(_color(seed), np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(array).save(path, format=fmt)
    return path


def write_mask(path: Path, values: np.ndarray, palette: list[int] | None = None) -> Path:
    """Write a mask PNG from (H, W) uint8 values ('L' mode, or 'P' mode with ``palette``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.ascontiguousarray(values, dtype=np.uint8)
    if palette is None:
        img = Image.fromarray(values)
    else:
        img = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
        img.putpalette(palette)
    img.save(path, format="PNG")
    return path


def person_pair(w: int, h: int, frac: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A coloured centred rectangle ("person") on a uniform background.

    Returns:
        image (h, w, 3) uint8 and mask (h, w) bool of the rectangle (``frac`` of W and H).
    """
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8) + np.array([200, 205, 210], np.uint8)
    bw, bh = max(1, int(round(w * frac[0]))), max(1, int(round(h * frac[1])))
    x0, y0 = (w - bw) // 2, (h - bh) // 2
    mask = np.zeros((h, w), bool)
    mask[y0:y0 + bh, x0:x0 + bw] = True
    image[mask] = rng.integers(20, 90, size=3).astype(np.uint8)
    return image, mask


# ----------------------------------------------------------------------------------------
# re-id trees


def _market_name(pid: int, cam: int, k: int) -> str:
    pid_s = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_s}_c{cam}s1_{100 + 25 * k:06d}_0{k % 10}.jpg"


def _duke_name(pid: int, cam: int, k: int) -> str:
    pid_s = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_s}_c{cam}_f{4600 + 37 * k:07d}.jpg"


def _cuhk_name(pid: int, cam: int, k: int) -> str:
    return f"{pid:04d}_c{cam}_{k + 1}.png"


_REID_NAMERS = {"market": _market_name, "duke": _duke_name, "cuhk03": _cuhk_name}
_REID_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def _make_market_style(
    root: Path, style: str, distractors: int, junk: int, bad_name: str | None, missing: str | None
) -> Path:
    namer = _REID_NAMERS[style]
    for folder in _REID_FOLDERS:
        if folder != missing:
            (root / folder).mkdir(parents=True, exist_ok=True)
    plan = [("bounding_box_train", REID_TRAIN_PIDS, 2), ("query", REID_TEST_PIDS, 1),
            ("bounding_box_test", REID_TEST_PIDS, 2)]
    k = 0
    for folder, pids, per_cam in plan:
        if folder == missing:
            continue
        for pid in pids:
            for cam in REID_CAMS:
                for _ in range(per_cam):
                    write_rgb(root / folder / namer(pid, cam, k), seed=pid)
                    k += 1
    if missing != "bounding_box_test":
        gallery = root / "bounding_box_test"
        for i in range(distractors):
            write_rgb(gallery / namer(0, REID_CAMS[i % len(REID_CAMS)], k), seed=1000 + i)
            k += 1
        for i in range(junk):
            write_rgb(gallery / namer(-1, REID_CAMS[i % len(REID_CAMS)], k), seed=2000 + i)
            k += 1
        (gallery / "Thumbs.db").write_bytes(b"\x00\x01not an image")
        (gallery / "readme.txt").write_text("not an image\n")
    if bad_name is not None:
        write_rgb(root / "bounding_box_train" / bad_name, seed=3)
    return root


def make_market1501(
    tmp: Path, bad_name: str | None = None, missing: str | None = None, distractors: int = 2, junk: int = 1
) -> Path:
    """Market-1501 tree under ``tmp/Market-1501-v15.09.15`` (see the module docstring)."""
    return _make_market_style(Path(tmp) / "Market-1501-v15.09.15", "market", distractors, junk, bad_name, missing)


def make_dukemtmc(tmp: Path, bad_name: str | None = None, missing: str | None = None) -> Path:
    """DukeMTMC-reID tree under ``tmp/DukeMTMC-reID`` (no distractors, no junk)."""
    return _make_market_style(Path(tmp) / "DukeMTMC-reID", "duke", 0, 0, bad_name, missing)


def make_cuhk03_np(tmp: Path, bad_name: str | None = None, missing: str | None = None) -> Path:
    """CUHK03-NP tree: ``tmp/cuhk03-np/detected/...`` with PNG images; returns ``tmp/cuhk03-np``."""
    root = Path(tmp) / "cuhk03-np"
    _make_market_style(root / "detected", "cuhk03", 0, 0, bad_name, missing)
    return root


def msmt17_name(pid: int, index: int, cam: int, frame: int) -> str:
    """``0000_000_01_0303morning_0015_0.jpg``-style MSMT17 name."""
    tod = ("morning", "noon", "afternoon")[index % 3]
    return f"{pid:04d}_{index:03d}_{cam:02d}_0303{tod}_{frame:04d}_{index % 2}.jpg"


def make_msmt17(
    tmp: Path, version: str = "V1", missing: str | None = None, bad_line: str | None = None
) -> Path:
    """MSMT17 tree with list files under ``tmp/MSMT17_<version>`` (see the module docstring).

    ``version="V2"`` uses ``mask_train_v2/`` and ``mask_test_v2/``. ``bad_line`` is appended to
    ``list_train.txt``.
    """
    root = Path(tmp) / f"MSMT17_{version}"
    train_dir = root / ("train" if version == "V1" else "mask_train_v2")
    test_dir = root / ("test" if version == "V1" else "mask_test_v2")
    lists: dict[str, list[str]] = {n: [] for n in ("list_train.txt", "list_val.txt", "list_query.txt",
                                                   "list_gallery.txt")}

    def add(list_name: str, image_dir: Path, pid: int, index: int, cam: int) -> None:
        rel = f"{pid:04d}/{msmt17_name(pid, index, cam, 10 + index)}"
        write_rgb(image_dir / rel, seed=pid)
        lists[list_name].append(f"{rel} {pid}")

    for pid in (0, 1, 2):
        index = 0
        for cam in REID_CAMS:
            for _ in range(2):
                add("list_train.txt", train_dir, pid, index, cam)
                index += 1
        add("list_val.txt", train_dir, pid, index, REID_CAMS[0])
    for pid in (0, 1):
        index = 0
        for cam in REID_CAMS:
            add("list_query.txt", test_dir, pid, index, cam)
            index += 1
            for _ in range(2):
                add("list_gallery.txt", test_dir, pid, index, cam)
                index += 1
    if bad_line is not None:
        lists["list_train.txt"].append(bad_line)
    for name, lines in lists.items():
        if name != missing:
            (root / name).write_text("\n".join(lines) + "\n")
    if missing in ("train", "test", "mask_train_v2", "mask_test_v2"):
        import shutil

        shutil.rmtree(root / missing)
    return root


# ----------------------------------------------------------------------------------------
# reconstruction trees

MARKET_HQ_TRAIN = {2: (0.3, 0.4, 0.5), 7: (0.6, 0.8)}
MARKET_HQ_QUERY = {3: (0.5,), 5: (0.7,)}


def make_market_hq(
    tmp: Path, size: tuple[int, int] = (16, 32), bad_name: bool = False, missing_rgb: bool = False,
    missing: str | None = None,
) -> Path:
    """Market-HQ tree under ``tmp/hq``: per pid one image per entry of ``MARKET_HQ_TRAIN`` /
    ``MARKET_HQ_QUERY`` (the entry is the person box side fraction, so ratios differ); mask
    names carry the true ratio with two decimals.

    Counts: train_all 5 images / 2 pids, query 2 images / 2 pids.
    """
    root = Path(tmp) / "hq"
    w, h = size
    for split, table in (("train_all", MARKET_HQ_TRAIN), ("query", MARKET_HQ_QUERY)):
        if split == missing:
            continue
        for pid, fracs in table.items():
            for k, frac in enumerate(fracs):
                img_name = f"{pid:04d}_c{k % 2 + 1}s1_{1000 + k:06d}_01.jpg"
                image, mask = person_pair(w, h, (frac, frac), seed=pid * 10 + k)
                ratio = float(mask.mean())
                write_mask(root / "seg_hmr" / split / f"{pid:04d}" / f"{img_name}_{ratio:.2f}.png",
                           mask.astype(np.uint8) * 255)
                write_rgb(root / "pytorch" / split / f"{pid:04d}" / f"{img_name}.png", array=image)
    if missing != "pytorch":
        (root / "pytorch").mkdir(parents=True, exist_ok=True)
    else:
        import shutil

        shutil.rmtree(root / "pytorch")
    if bad_name:
        write_mask(root / "seg_hmr" / "train_all" / "0002" / "0002_c1s1_009999_01.jpg.png",
                   np.zeros((h, w), np.uint8))
    if missing_rgb:
        (root / "pytorch" / "train_all" / "0007" / "0007_c1s1_001000_01.jpg.png").unlink()
    return root


ATR_NAMES = ("dataset10k_11", "997_2", "fash_3", "4565_40")
# ATR label regions: (label, x0, y0, x1, y1) on a 12x20 image; labels 1..17 are body parts.
ATR_REGIONS = {
    "dataset10k_11": [(1, 2, 1, 10, 5), (4, 3, 5, 9, 16)],
    "997_2": [(2, 4, 2, 8, 18)],
    "fash_3": [(13, 1, 1, 11, 19), (5, 4, 4, 8, 8)],
    "4565_40": [(17, 5, 10, 7, 12)],
}


def atr_labels(name: str, size: tuple[int, int] = (12, 20)) -> np.ndarray:
    """The (H, W) uint8 label map written for ``name``."""
    labels = np.zeros((size[1], size[0]), np.uint8)
    for label, x0, y0, x1, y1 in ATR_REGIONS[name]:
        labels[y0:y1, x0:x1] = label
    return labels


def make_atr(
    tmp: Path, with_lists: bool = True, with_seg: tuple[str, ...] = (), palette: bool = True,
    missing: str | None = None,
) -> Path:
    """ATR tree under ``tmp/humanparsing``: JPEGImages, SegmentationClassAug (P-mode label PNGs
    whose palette maps every label to black, so only the raw label values reveal the person),
    optional ``Seg/<name>_<ratio>.png`` for names in ``with_seg`` (an all-foreground
    rectangle), and ``ATR_train.txt`` (first 3 names, as ``<name>_<ratio>.png``) /
    ``ATR_test.txt`` (last name, bare) in ``tmp``.
    """
    root = Path(tmp) / "humanparsing"
    pal = [0, 0, 0] * 256 if palette else None
    for i, name in enumerate(ATR_NAMES):
        labels = atr_labels(name)
        write_rgb(root / "JPEGImages" / f"{name}.jpg", size=(12, 20), seed=i)
        write_mask(root / "SegmentationClassAug" / f"{name}.png", labels, palette=pal)
        if name in with_seg:
            seg = np.zeros_like(labels)
            seg[2:18, 2:10] = 255
            write_mask(root / "Seg" / f"{name}_{(seg > 0).mean():.2f}.png", seg)
    if with_lists:
        train = [f"{n}_{(atr_labels(n) > 0).mean():.2f}.png" for n in ATR_NAMES[:3]]
        (Path(tmp) / "ATR_train.txt").write_text("\n".join(train) + "\n")
        (Path(tmp) / "ATR_test.txt").write_text(ATR_NAMES[3] + "\n")
    if missing is not None:
        import shutil

        shutil.rmtree(root / missing)
    return root


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")
CUB_SIZE = (40, 30)  # W, H
# id -> (class index, is_train, bbox (x, y, w, h))
CUB_TABLE = {
    1: (0, 1, (10.0, 5.0, 20.0, 20.0)),
    2: (0, 0, (0.0, 0.0, 40.0, 30.0)),
    3: (1, 1, (5.0, 8.0, 10.0, 10.0)),
    4: (1, 0, (30.0, 20.0, 12.0, 12.0)),
}


def cub_mask(image_id: int) -> np.ndarray:
    """Soft mask values (H, W) uint8 for a CUB fixture image: 255 core, 100 fringe, 0 elsewhere."""
    w, h = CUB_SIZE
    values = np.zeros((h, w), np.uint8)
    x, y, bw, bh = (int(v) for v in CUB_TABLE[image_id][2])
    values[max(0, y - 1):min(h, y + bh + 1), max(0, x - 1):min(w, x + bw + 1)] = 100
    values[y + 2:min(h, y + bh - 2), x + 2:min(w, x + bw - 2)] = 255
    return values


def make_cub(tmp: Path, missing: str | None = None) -> Path:
    """CUB-200-2011 tree under ``tmp/CUB_200_2011`` with 4 images (2 train, 2 test, 2 classes)."""
    root = Path(tmp) / "CUB_200_2011"
    images, split, boxes = [], [], []
    for image_id, (cls, is_train, bbox) in CUB_TABLE.items():
        rel = f"{CUB_CLASSES[cls]}/{CUB_CLASSES[cls].split('.')[1]}_{image_id:04d}_{700 + image_id}.jpg"
        write_rgb(root / "images" / rel, size=CUB_SIZE, seed=image_id)
        write_mask(root / "segmentations" / rel.replace(".jpg", ".png"), cub_mask(image_id))
        images.append(f"{image_id} {rel}")
        split.append(f"{image_id} {is_train}")
        boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in bbox))
    for name, lines in (("images.txt", images), ("train_test_split.txt", split), ("bounding_boxes.txt", boxes)):
        if name != missing:
            (root / name).write_text("\n".join(lines) + "\n")
    if missing in ("images", "segmentations"):
        import shutil

        shutil.rmtree(root / missing)
    return root


def make_image_folder(
    tmp: Path, n: int = 3, size: tuple[int, int] = (32, 48), with_masks: bool = True,
    mismatched: bool = False,
) -> tuple[Path, Path | None]:
    """Generic folder: ``tmp/images/<k>.png`` (a dark centred blob on a light uniform background,
    lossless) and, with ``with_masks``, ``tmp/masks/<k>.png`` (0/255). ``mismatched`` writes the
    first mask one pixel too wide.

    Returns:
        (image_dir, mask_dir or None).
    """
    image_dir, mask_dir = Path(tmp) / "images", Path(tmp) / "masks"
    w, h = size
    for k in range(n):
        image, mask = person_pair(w, h, (0.4 + 0.05 * k, 0.6), seed=k)
        write_rgb(image_dir / f"img{k}.png", array=image)
        if with_masks:
            values = mask.astype(np.uint8) * 255
            if mismatched and k == 0:
                values = np.pad(values, ((0, 0), (0, 1)))
            write_mask(mask_dir / f"img{k}.png", values)
    return image_dir, (mask_dir if with_masks else None)


def make_synth(out: Path, ids: int, images_per_id: int, image_size: tuple[int, int] = (32, 64),
               distractor_ids: int = 0, junk_ids: int = 0) -> Path:
    """A tiny SynthPeople tree at ``out`` (in this process, no Ray, no floor, no progress bar):
    ``ids`` × ``images_per_id`` people images at ``image_size`` (W, H), plus distractor and junk
    people. Returns ``out``."""
    generate_dataset(SynthConfig(out=str(out), ids=ids, images_per_id=images_per_id,
                                 image_size=image_size, no_ray=True, distractor_ids=distractor_ids,
                                 junk_ids=junk_ids, floor=False, progress=False))
    return out
