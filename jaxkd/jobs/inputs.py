"""A job's data from its settings: the dataset, and for the active job the
teacher-train / L / U / test split (refused when splits share images,
unless `allow_overlap`)."""

from __future__ import annotations

from typing import Dict, Tuple

from jaxkd import data
from jaxkd.settings import ActiveSettings, JobSettings


def load_data(settings: JobSettings) -> data.Dataset:
  """The configured dataset; own files (`npz:`, `idx:`, `npy:`, `folder:`)
  get image_shape,
  num_classes and, without a test split of their own, split.test images
  split off with split.seed; loaders that check md5s get
  data_verify_md5."""
  accepts = data.loader_options(settings.dataset)
  split = getattr(settings, "split", None)
  offered = {
      "image_shape": tuple(settings.image_shape) or None,
      "num_classes": settings.num_classes,
      "num_test": split.test if split else 0,
      "seed": split.seed if split else 0,
      "verify_md5": settings.data_verify_md5,
      "fit": settings.data_fit,
      "skip_bad_files": settings.data_skip_bad_files,
  }
  if not settings.dataset.startswith(data.OWN_FILE_PREFIXES):
    offered = {"verify_md5": offered["verify_md5"]}
    if settings.data_lazy:
      offered["lazy"] = True
  opts = {k: v for k, v in offered.items() if k in accepts}
  return data.load_dataset(settings.dataset,
                           data_dir=settings.data_dir or None, **opts)


def load_pools(settings: ActiveSettings) -> Tuple[data.Dataset, data.Pools]:
  """(dataset, its teacher-train / L / U / test `Pools`)."""
  dataset = load_data(settings)
  split = settings.split
  pools = data.make_pools(dataset, teacher_train=split.teacher_train,
                          initial=split.initial, pool=split.pool,
                          test=split.test or None, seed=split.seed,
                          allow_overlap=settings.allow_overlap)
  return dataset, pools


def check_test_overlap(settings: JobSettings, ds: data.Dataset
                       ) -> Dict[str, int]:
  """Jobs that train on the whole train split: only train & test must not
  share images."""
  overlap = data.split_overlaps(train=ds.train_images, test=ds.test_images)
  data.check_overlap(overlap, settings.allow_overlap, f"{ds.name}: ")
  return overlap
