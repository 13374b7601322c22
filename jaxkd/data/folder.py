"""`folder:DIR`: a folder of image files as a random-access source.

Layouts (a split folder is DIR itself, or DIR/train and DIR/test when both
exist):

* class sub-folders: `split/<class>/<file>`; the sorted sub-folder names
  are the class names, their positions the labels;
* a flat folder of images with a `labels.csv` (`file,label` rows, label an
  int or a class name; every image must be listed and every listed file
  must exist);
* a flat folder without `labels.csv`: unlabelled images (a pool for an
  external teacher; jobs that train or evaluate on labels refuse it).

Files are decoded with Pillow, converted to one channel count (grey `L`,
1, or `RGB`, 3: the files' own when they agree, else `image_shape`'s C) and
brought to `image_shape` (H, W): `resize` scales to it, `center_crop`
(default) scales the shorter side to fit and cuts the centre. Items are
uint8 until a batch is read (then float32 / 255).

Opening a folder decodes every file once, on a thread per core: unreadable
or non-image files are a one-line `JaxkdError` naming the file (or, with
`skip_bad_files=True`, left out and counted), and each file's decoded
pixels (as decoded, before conversion) are hashed: split overlap checks
and the pool fingerprint reuse those digests, so no later pass re-reads
the folder to prove it.
Item keys are paths relative to the split folder, with `/`.

Grain is not used to index the folder (a directory walk and one decode per
file). Reading batches of a `FolderSource` goes through
`jaxkd.data.sources.iter_batches`: Pillow's decode holds the GIL, so
Grain's reader threads do not overlap it; large reads are decoded by a
persistent pool of spawned reader processes (`read_processes`, started
once per process rather than once per pass over the pool, importing only
NumPy and Pillow: `jaxkd.image_decode`), which return uint8 batches.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jaxkd import image_decode
from jaxkd.data.sources import ImageSource
from jaxkd.validation import JaxkdError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                    ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
LABELS_FILE = "labels.csv"
FIT_MODES = ("center_crop", "resize")
_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "F": 1, "P": 3,
                  "RGB": 3, "RGBA": 3, "CMYK": 3, "YCbCr": 3, "LA": 1,
                  "PA": 3, "HSV": 3, "LAB": 3}


def _pillow():
  try:
    return image_decode.pillow()
  except image_decode.MissingPillow as e:
    raise JaxkdError(str(e)) from None


def _listing(root: str) -> Tuple[List[str], Optional[List[str]],
                                 Optional[List[str]]]:
  """(relative file paths, their class names or None, class list or None);
  hidden files and labels.csv are not items."""
  entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
  subdirs = [e for e in entries if os.path.isdir(os.path.join(root, e))]
  files = [e for e in entries if not os.path.isdir(os.path.join(root, e))
           and e != LABELS_FILE]
  if subdirs:
    if files:
      raise JaxkdError(
          f"{root}: holds both class sub-folders ({subdirs[0]!r}, ...) and "
          f"files ({files[0]!r}, ...); use one layout.")
    paths, names = [], []
    for c in subdirs:
      for dirpath, dirnames, filenames in os.walk(os.path.join(root, c)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
          if not f.startswith("."):
            full = os.path.join(dirpath, f)
            paths.append(os.path.relpath(full, root).replace(os.sep, "/"))
            names.append(c)
    return paths, names, subdirs
  return files, None, None


def _read_labels_csv(root: str, files: List[str]
                     ) -> Tuple[List[str], List[str]]:
  """(files in csv order, their labels as strings) from root/labels.csv."""
  path = os.path.join(root, LABELS_FILE)
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
  if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "label"]:
    rows = rows[1:]
  listed, labels, seen = [], [], set()
  for n, r in enumerate(rows, 1):
    if len(r) != 2:
      raise JaxkdError(f"{path}: row {n} has {len(r)} fields; expected "
                       "file,label.")
    name, label = r[0].strip(), r[1].strip()
    if name in seen:
      raise JaxkdError(f"{path}: {name!r} is listed twice.")
    seen.add(name)
    listed.append(name)
    labels.append(label)
  on_disk = set(files)
  missing = [f for f in listed if f not in on_disk]
  if missing:
    raise JaxkdError(f"{path} names {len(missing)} file(s) not in {root} "
                     f"(first: {missing[0]!r}).")
  unlisted = sorted(on_disk - seen)
  if unlisted:
    raise JaxkdError(f"{path} gives no label for {len(unlisted)} file(s) "
                     f"(first: {unlisted[0]!r}).")
  return listed, labels


def _probe(path: str):
  """(mode, (W, H), digest of the decoded pixels) of a file after a full
  decode, or (None, the error text, None)."""
  Image = _pillow()
  try:
    with Image.open(path) as img:
      img.load()
      h = hashlib.blake2b(f"{img.mode}{img.size}".encode(), digest_size=16)
      h.update(img.tobytes())
      return img.mode, img.size, h.digest()
  except Exception as e:  # pylint: disable=broad-except
    return None, f"{type(e).__name__}: {e}", None


def changed_file_error(e: image_decode.DecodeError) -> JaxkdError:
  return JaxkdError(f"{e.path}: cannot be read now ({e.reason}); the folder "
                    "changed after it was opened.")


class FolderSource(ImageSource):
  """The image files of one split folder (see the module docstring).

  Args:
    root: the split folder.
    image_shape: (H, W) or (H, W, C) the items are brought to; None takes
      the files' own size and channels (they must agree).
    fit: "center_crop" or "resize" for files of another size.
    skip_bad_files: leave out (and count in `skipped`) files Pillow cannot
      decode, instead of refusing the folder.
    labelled: "auto" (sub-folders or labels.csv if present), True (labels
      required), False (ignore labels).
    class_names: the class list to map names to labels (a test split uses
      the train split's).
    threads: decoder threads when opening (default: the CPU count).
    read_processes: reader processes for batches of more than one batch
      (`jaxkd.data.sources.iter_batches`; default: the CPU count, at most
      8); 0 reads on one thread in this process. Pillow's decode holds the
      GIL, so reader threads do not overlap it and processes do.

  Attributes:
    files: [n] relative paths (item keys); labels: [n] int32 or None;
    class_names: tuple or None; skipped: [(path, reason)] of left-out files.

  Opening costs one decode of every file, O(total pixels), parallel.
  """

  def __init__(self, root: str, *, image_shape: Optional[Sequence[int]] = None,
               fit: str = "center_crop", skip_bad_files: bool = False,
               class_names: Optional[Sequence[str]] = None,
               threads: Optional[int] = None, name: Optional[str] = None,
               read_processes: Optional[int] = None):
    if fit not in FIT_MODES:
      raise JaxkdError(f"fit must be one of {FIT_MODES}, got {fit!r}.")
    if not os.path.isdir(root):
      raise JaxkdError(f"{root}: not a folder.")
    self.root, self.fit = root, fit
    self.read_processes = (min(8, os.cpu_count() or 1)
                           if read_processes is None else int(read_processes))
    self.name = name or os.path.basename(os.path.normpath(root))
    files, names, classes = _listing(root)
    if names is None and os.path.isfile(os.path.join(root, LABELS_FILE)):
      files, names = _read_labels_csv(root, files)
    if not files:
      raise JaxkdError(f"{root}: no image files found (expected class "
                       "sub-folders or image files).")
    probes = self._probe_all(files, threads)
    bad = [(f, why) for f, (mode, why, _) in zip(files, probes) if mode is None]
    if bad and not skip_bad_files:
      f, why = bad[0]
      more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
      raise JaxkdError(
          f"{os.path.join(root, f)}: not a readable image ({why}){more}; "
          "remove it, or set skip_bad_files=True to leave such files out.")
    self.skipped = bad
    keep = [i for i, (mode, _, _) in enumerate(probes) if mode is not None]
    if not keep:
      raise JaxkdError(f"{root}: none of its {len(files)} files is a "
                       "readable image.")
    files = [files[i] for i in keep]
    names = None if names is None else [names[i] for i in keep]
    modes = [probes[i][0] for i in keep]
    sizes = [probes[i][1] for i in keep]
    self.image_shape_ = self._shape(image_shape, files, modes, sizes)
    self.files = files
    self.labels, self.class_names = self._labels(names, classes, class_names)
    self._digests = [probes[i][2] for i in keep]

  # ---------------------------------------------------------- opening --

  def _probe_all(self, files, threads):
    paths = [os.path.join(self.root, f) for f in files]
    with concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count()) as ex:
      return list(ex.map(_probe, paths, chunksize=64))

  def _shape(self, image_shape, files, modes, sizes):
    want = None if image_shape is None else tuple(int(v) for v in image_shape)
    if want is not None and (len(want) not in (2, 3) or min(want) < 1
                             or (len(want) == 3 and want[2] not in (1, 3))):
      raise JaxkdError(f"image_shape must be (H, W) or (H, W, C) with C 1 or "
                       f"3, got {image_shape!r}.")
    if want is not None and len(want) == 3:
      channels = want[2]
    else:
      counts: Dict[int, List[str]] = {}
      for f, m in zip(files, modes):
        counts.setdefault(_MODE_CHANNELS.get(m, 3), []).append(f)
      if len(counts) > 1:
        desc = ", ".join(f"{len(v)} with {c} (e.g. {v[0]!r})"
                         for c, v in sorted(counts.items()))
        raise JaxkdError(
            f"{self.root}: images have different channel counts ({desc}); "
            "set image_shape=(H, W, C) to convert all to C = 1 or 3.")
      channels = next(iter(counts))
    if want is not None:
      return want[:2] + (channels,)
    distinct = sorted(set(sizes))
    if len(distinct) > 1:
      (w0, h0), (w1, h1) = distinct[0], distinct[-1]
      raise JaxkdError(
          f"{self.root}: images have {len(distinct)} sizes ({h0}x{w0} ... "
          f"{h1}x{w1}, H x W); set image_shape=(H, W) to bring them to one "
          f"(fit={self.fit!r}).")
    w, h = distinct[0]
    return (h, w, channels)

  def _labels(self, names, classes, class_names):
    if names is None:
      return None, None
    if class_names is not None:
      classes = list(class_names)
    elif classes is None:  # labels.csv: ints, or names sorted
      if all(n.lstrip("-").isdigit() for n in names):
        ints = np.asarray([int(n) for n in names], np.int64)
        if ints.min() < 0:
          raise JaxkdError(f"{self.root}/{LABELS_FILE}: labels must be >= 0, "
                           f"got {ints.min()}.")
        return ints.astype(np.int32), None
      classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
      raise JaxkdError(f"{self.root}: class {unknown[0]!r} is not one of the "
                       f"train split's classes {list(classes)}.")
    return (np.asarray([index[n] for n in names], np.int32),
            tuple(str(c) for c in classes))

  def _decode_files(self, files) -> np.ndarray:
    try:
      return image_decode.decode_many(*self._decode_args(files))
    except image_decode.DecodeError as e:
      raise changed_file_error(e) from None

  def _decode_args(self, files):
    return ([os.path.join(self.root, f) for f in files],
            self.image_shape_[2], self.image_shape_[:2], self.fit)

  def decode_args(self, indices):
    """`image_decode.decode_many` arguments for the uint8 [k, H, W, C]
    items `indices` [k] (a reader process); `read` = that / 255, checked."""
    return self._decode_args([self.files[int(i)] for i in indices])

  # --------------------------------------------------------- interface --

  def __len__(self) -> int:
    return len(self.files)

  @property
  def image_shape(self):
    return self.image_shape_

  positional_keys = False

  def item_key(self, i: int) -> str:
    return self.files[int(i)]

  def _read(self, indices):
    out = self._decode_files([self.files[int(i)] for i in indices])
    return out.astype(np.float32) / np.float32(255)

  def update_hash(self, h, batch_size: int = 0) -> None:
    self.update_hash_of(h, np.arange(len(self)))

  def update_hash_of(self, h, indices, batch_size: int = 0) -> None:
    h.update(f"folder{self.image_shape_}{self.fit}".encode())
    for i in indices:
      h.update(self.files[int(i)].encode() + b"\0" + self._digests[int(i)])

  def item_digests(self, batch_size: int = 0):
    return iter(self._digests)

  def item_digests_of(self, indices, batch_size: int = 0):
    return (self._digests[int(i)] for i in indices)
