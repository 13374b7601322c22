"""One process of a multi-process active-distillation run, started by
tests/test_multihost_loop.py.

  python tests/multihost_loop_worker.py PORT PROCESS_ID NUM_PROCESSES OUT MODE

Runs `jaxkd.loop.run_loop` for a few strategies on digits, with the job's
multi-process wiring: a local mesh, `multihost.primary_teacher` around the
teacher, `multihost.follower_ledger` for each ledger. NUM_PROCESSES = 1 is
the one-process reference (no jax.distributed). The teacher (a fixed linear
map of the pixels) appends a crc32 of every image it answers to
OUT/teacher_<PROCESS_ID>_<STRATEGY>.log before answering, so the parent counts real
teacher calls. MODE "raw" gives every process the unwrapped teacher (each
pays), which the parent's check must catch. Writes OUT/result_<ID>.json:
per strategy, the ledger keys in payment order and the records.
"""

import json
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

STRATEGIES = ("entropy", "coreset", "badge")


class LoggingTeacher:
  """Logits = flattened pixels @ W (fixed seed); logs each image's crc32."""

  teacher_id = "linear-digits-teacher"

  def __init__(self, log_path, dim, classes=10):
    self.log_path = log_path
    self.w = np.random.default_rng(0).normal(size=(dim, classes)).astype(
        np.float32)

  def __call__(self, x):
    x = np.asarray(x, np.float32)
    with open(self.log_path, "a") as f:
      for img in x:
        f.write(f"{zlib.crc32(img.tobytes())}\n")
      f.flush()
    return x.reshape(len(x), -1) @ self.w


def main():
  port, pid, count, out, mode = sys.argv[1:6]
  pid, count = int(pid), int(count)
  from jaxkd import multihost
  if count > 1:
    multihost.initialize(f"localhost:{port}", num_processes=count,
                         process_id=pid)
  from jaxkd import data, loop
  from jaxkd.models import get_model
  from jaxkd.teacher import TeacherOracle
  ds = data.load_dataset("digits")
  pools = data.make_pools(ds, teacher_train=0, initial=30, pool=600, seed=0)
  oracle_pool = np.concatenate([pools.initial_images, pools.pool_images])
  mesh = multihost.local_mesh()
  result = {}
  for name in STRATEGIES:  # one ledger, and one teacher log, per run
    raw = LoggingTeacher(os.path.join(out, f"teacher_{pid}_{name}.log"),
                         int(np.prod(ds.image_shape)))
    teacher = raw if mode == "raw" else multihost.primary_teacher(raw)
    run = os.path.join(out, "runs", name)
    oracle = TeacherOracle(
        teacher, oracle_pool, budget=100,
        ledger_path=(multihost.follower_ledger(os.path.join(run, "ledger.sqlite"))
                     if mode != "raw" else
                     os.path.join(out, f"p{pid}", name, "ledger.sqlite")))
    settings = loop.LoopSettings(rounds=2, per_round=10, train_steps=20,
                                 batch_size=32, seed=0)
    records = loop.run_loop(
        strategy=name, student=get_model("mlp", 10), oracle=oracle,
        initial_indices=np.arange(30), candidate_indices=30 + np.arange(600),
        test_images=pools.test_images, test_labels=pools.test_labels,
        teacher_accuracy=1.0, settings=settings, workdir=run, mesh=mesh,
        progress=False, log=lambda m: None)
    result[name] = {"keys": [e["key"] for e in oracle.entries()],
                    "accuracy": [r["student_accuracy"] for r in records],
                    "ledger": oracle.ledger_path}
    oracle.close()
  with open(os.path.join(out, f"result_{pid}.json"), "w") as f:
    json.dump(result, f)
  if count > 1:
    import jax
    jax.distributed.shutdown()


if __name__ == "__main__":
  try:
    main()
  except BaseException:  # never leave the other process in a collective
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    os._exit(1)
