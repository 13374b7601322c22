"""One line of meaning for every config field (`python -m jaxkd.main
--list_config`).

`FIELD_HELP` maps the dotted name of each field of `common.active_config()`
and `common.unix_config()` to a sentence; a test checks that none is
missing, so a new field comes with its description. `describe(config)` is
the listing `--list_config` prints: name, current value (the default unless
overridden on the command line), meaning.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

FIELD_HELP: Dict[str, str] = {
    # What runs.
    "job": "'active' (select -> pay teacher -> train rounds) or 'unix' "
           "(UNIX computation-efficient KD).",
    "strategies": "Selection strategies to compare (registered names or "
                  "'pkg.module:attr'); --strategy=a,b overrides.",
    "strategy_options": "Per-strategy keyword options, e.g. "
                        "{'admm': {'rho': 1.0}}.",
    "seeds": "Seeds of the student runs; results are mean ± std over them.",
    "progress": "Show progress bars.",
    "resume_with_changes": "Accept resuming a workdir whose config.json "
                           "differs in result-changing fields (recorded).",
    # Data.
    "dataset": "digits, mnist, fashion_mnist, cifar10, mnist5k, tfds:<name>,"
               " npz:<path.npz> or idx:<dir> (own files).",
    "data_dir": "Folder holding the dataset files (mnist, fashion_mnist, "
                "cifar10, mnist5k; base folder for relative npz:/idx:).",
    "image_shape": "(H, W) or (H, W, C) of own images stored flat [N, D]; "
                   "() when the files hold [N, H, W(, C)].",
    "num_classes": "Classes of own data (npz:/idx:); 0 infers max label + 1.",
    "data_verify_md5": "Check files against known md5s (mnist, "
                       "fashion_mnist, mnist5k; idx:<dir>/MD5SUMS).",
    "allow_overlap": "Run even when teacher-train, pool and test share "
                     "images (reported in results.json).",
    "split.teacher_train": "Train-split images the teacher is trained on "
                           "(the student never sees them).",
    "split.initial": "Initial labelled set L the student pays for in "
                     "round 0.",
    "split.pool": "Unlabelled pool U the strategies select from.",
    "split.test": "Test images: 0 = the dataset's whole test split; n > 0 "
                  "= n drawn from it (own files without a test split: n "
                  "split off).",
    "split.seed": "Seed of the teacher-train / L / U / test split.",
    # Budget and rounds.
    "rounds": "Selection rounds after round 0.",
    "per_round": "Teacher queries paid per round.",
    "budget": "Teacher queries allowed per run; 0 = split.initial + rounds "
              "x per_round (a smaller value is refused before paying).",
    "hard_labels": "The teacher answers one-hot argmax labels instead of "
                   "probabilities.",
    # Models.
    "student": "Student model name (jaxkd.models; e.g. lenet5_half).",
    "teacher.model": "Teacher model name (e.g. lenet5).",
    "teacher.epochs": "Teacher training epochs (hard-label CE, cosine).",
    "teacher.batch_size": "Teacher training batch size.",
    "teacher.optimizer": "Teacher optimizer (adam, sgd, ...).",
    "teacher.learning_rate": "Teacher peak learning rate.",
    "teacher.seed": "Teacher init and shuffling seed.",
    "teacher.checkpoint": "Folder of a saved teacher (--mode=teacher "
                          "output): load it instead of training one.",
    "teacher.url": "A remote teacher (python -m jaxkd.serve_teacher) the "
                   "active job queries instead of training one.",
    # Student training per round.
    "loop.train_steps": "Student training steps per round.",
    "loop.batch_size": "Student batch size.",
    "loop.optimizer": "Student optimizer.",
    "loop.learning_rate": "Student peak learning rate (cosine schedule).",
    "loop.loss": "Student loss: kd (soft targets), hard_ce, mix, or an "
                 "import path.",
    "loop.temperature": "KD temperature T (> 0).",
    "loop.retrain": "Retrain the student from its fixed init each round "
                    "(False: fine-tune).",
    # UNIX job.
    "unix.methods": "UNIX job methods: kd, random_kd, uncertainty, mixup, "
                    "non_adaptive, unix.",
    "unix.epochs": "Student epochs per method.",
    "unix.batch_size": "N: images drawn per step.",
    "unix.k": "Images kept per step (teacher forward, student backward).",
    "unix.w": "Slope of the correction factor (> 0).",
    "unix.b": "Ranks below b get mild mixup; None = N / 2.",
    "unix.alpha": "Beta(alpha, alpha) of the mixup weight.",
    "unix.uncertainty": "Ranking: entropy, confidence, margin.",
    "unix.temperature": "KD temperature.",
    "unix.ce_weight": "Weight of CE on the teacher's argmax.",
    "unix.kd_weight": "Weight of the T^2-scaled KD term.",
    "unix.feature_loss": "'' , 'at' (attention transfer) or 'sp' "
                         "(similarity preserving).",
    "unix.optimizer": "Student optimizer.",
    "unix.lr": "Student learning rate.",
    "unix.weight_decay": "Student weight decay.",
    "unix.warmup_epochs": "Linear warm-up epochs.",
    "unix.max_train": "Use at most this many train images (0 = all).",
}


def _flat(tree: Any, prefix: str = "") -> List[Tuple[str, Any]]:
  out = []
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      out += _flat(v, f"{prefix}{k}.")
    else:
      out.append((f"{prefix}{k}", v))
  return out


def config_fields(config) -> List[Tuple[str, Any]]:
  """(dotted name, value) of every leaf field of a ConfigDict."""
  return _flat(config.to_dict())


def describe(config) -> str:
  """One line per field: `name = value  # meaning`."""
  rows = []
  for name, value in config_fields(config):
    shown = json.dumps(value, default=str)
    rows.append((f"{name} = {shown}",
                 FIELD_HELP.get(name, "(no description)")))
  width = min(max(len(r[0]) for r in rows), 36)
  return "\n".join(f"{a.ljust(width)}  # {b}" for a, b in rows)
