"""The teacher job (`--mode=teacher`): load the data, train, evaluate and
save the teacher in workdir/teacher (see `jaxkd.teacher_training`); pass
that folder as `--config.teacher.checkpoint` later."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict

from jaxkd import parallel, teacher_sources, teacher_training
from jaxkd.jobs.inputs import check_test_overlap, load_data, load_pools
from jaxkd.settings import JobSettings


def run(settings: JobSettings, workdir: str) -> Dict[str, Any]:
  """Trains (or restores) the job's teacher; returns its teacher.json."""
  ts = dataclasses.replace(settings.teacher, checkpoint="")
  ts.validate(settings.job)
  settings = dataclasses.replace(settings, teacher=ts)
  settings.check_names()
  settings.check_data_fields()
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  if settings.job == "unix":
    ds = load_data(settings)
    check_test_overlap(settings, ds)
    train_x, train_y = ds.train_images, ds.train_labels
    test_x, test_y = ds.test_images, ds.test_labels
  else:
    ds, pools = load_pools(settings)
    train_x, train_y = pools.teacher_train_images, pools.teacher_train_labels
    test_x, test_y = pools.test_images, pools.test_labels
  teacher_sources.trained_teacher(
      ts, num_classes=ds.num_classes, image_shape=ds.image_shape,
      train_images=train_x, train_labels=train_y, test_images=test_x,
      test_labels=test_y, workdir=workdir,
      record={"dataset": settings.dataset}, mesh=mesh,
      progress=settings.progress)
  path = teacher_sources.teacher_dir(workdir)
  meta = teacher_training.read_teacher_meta(path)
  print(f"saved teacher: {path} (use --config.teacher.checkpoint={path})",
        flush=True)
  return meta
