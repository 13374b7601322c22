"""The papers' CIFAR protocols (experiments/configs/cifar_*.py): each config
loads, validates and runs end to end on tfds mock data with its sizes cut
to tiny ones; its models and numbers are checked against the official code
(xuguodong03/UNIXKD, dwang181/active-mixup), written out literally here."""

import importlib.util
import json
import os
import sys

import pytest

from jaxkd import experiment, settings
from jaxkd.validation import JaxkdError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "experiments"))
import protocols  # noqa: E402

tfds = pytest.importorskip("tensorflow_datasets")

# xuguodong03/UNIXKD command/command.sh: (teacher, student, --lr), both the
# "conventional KD" and the "UNIXKD" blocks.
UNIXKD_COMMANDS = [
    ("vgg13", "MobileNetV2", 0.01), ("ResNet50", "vgg8", 0.05),
    ("ResNet50", "MobileNetV2", 0.01), ("wrn_40_2", "ShuffleV1", 0.01),
    ("resnet32x4", "ShuffleV1", 0.01), ("resnet32x4", "ShuffleV2", 0.01),
    ("wrn_40_2", "wrn_16_2", 0.05), ("resnet32x4", "resnet8x4", 0.05),
    ("wrn_40_2", "wrn_40_1", 0.05), ("resnet56", "resnet20", 0.05),
    ("vgg13", "vgg8", 0.05), ("vgg16", "vgg8", 0.05)]


def _tiny(c, **fields):
  """`c` at tiny sizes, with LeNet-5 / LeNet-5-half in place of the
  protocol's CIFAR networks (whose CPU compiles alone take minutes; their
  names are checked above and their 32x32x3 forwards in test_models)."""
  return protocols.with_fields(c, progress=False, allow_overlap=True,
                               student="lenet5_half",
                               **{"teacher.model": "lenet5"}, **fields)


def _run(c, workdir):
  # tfds's mock data draws train and test from one generator: the same
  # images, hence allow_overlap above.
  with tfds.testing.mock_data(num_examples=16):
    return experiment.train_and_evaluate(c, str(workdir))


# ------------------------------------------------------------ Active Mixup --

def _load(file, arg=""):
  return protocols.load_config(file, arg)


def config_module(file):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + file[:-3], os.path.join(protocols.HERE, "configs", file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_active_mixup_config_is_the_papers_figure_4():
  c = _load("cifar_active_mixup.py", "teacher_dir=")
  assert c.dataset == "tfds:cifar10"
  assert (c.split.initial, c.rounds, c.per_round) == (500, 10, 10000)
  assert c.student == c.teacher.model == "vgg16_am"
  assert c.loop.loss == "soft_ce"
  assert (c.loop.optimizer, c.loop.learning_rate, c.loop.batch_size) == (
      "sgd", 0.01, 128)
  assert tuple(c.strategies) == ("active_mixup", "random_mixup",
                                 "vanilla_mixup")
  assert tuple(c.strategy_options.random_mixup["lambdas"]) == (0.5,)
  # 200 epochs in blocks of 80/60/40/20, lr / 10 after each, SGD with
  # momentum 0.9 and weight decay 5e-4, random crop (pad 4) and flips.
  assert c.loop.epochs == 200 and c.loop.schedule == "blocks"
  assert tuple(c.loop.lr_blocks) == (80, 60, 40, 20)
  assert (c.loop.momentum, c.loop.weight_decay) == (0.9, 5e-4)
  assert (c.loop.augment, c.loop.crop_padding) == ("random_crop_flip", 4)
  assert c.loop.track_best_test
  # 200 epochs of 500 + 10,000 t images at batch 128 (the official steps).
  from jaxkd import loop
  s = settings.read(c).loop_settings(0, "active_mixup")
  official = [200 * -(-(500 + 10000 * t) // 128) for t in range(11)]
  assert official[0] == 800 and official[-1] == 157200
  # jaxkd streams full batches across epochs: ceil(200 n / 128) steps, the
  # official count less its last partial batch of each epoch (<= 2.3%).
  ours = [loop.round_steps(s, 500 + 10000 * t) for t in range(11)]
  assert ours == [-(-200 * (500 + 10000 * t) // 128) for t in range(11)]
  assert all(0 <= o - x <= 0.023 * o for o, x in zip(official, ours))
  settings.read(c)
  t = _load("cifar_active_mixup.py", "teacher")
  assert t.split.teacher_train == 50000 and t.split.initial == 0
  settings.read(t)


def test_active_mixup_cifar10_runs_on_mock_data(tmp_path):
  c = _tiny(_load("cifar_active_mixup.py"), **{
      "split.teacher_train": 8, "split.initial": 8, "rounds": 1,
      "per_round": 4, "loop.epochs": 1.0, "loop.batch_size": 8,
      "teacher.epochs": 1, "teacher.batch_size": 8,
      "strategy_options.active_mixup": {"scan_batch_size": 64}})
  out = _run(c, tmp_path)
  for name in ("active_mixup", "random_mixup", "vanilla_mixup"):
    (run,) = out["strategies"][name]
    assert [r["queries"] for r in run] == [8, 12]


# -------------------------------------------------------------------- UNIX --

def test_unix_pairs_are_the_official_ones():
  cfg = config_module("cifar_unix.py")
  assert [tuple(p) for p in cfg.OFFICIAL_PAIRS] == UNIXKD_COMMANDS
  for teacher, student, lr in UNIXKD_COMMANDS:
    arg = f"pair={teacher}-{student}"
    if None in (cfg.JAXKD_NAMES[teacher], cfg.JAXKD_NAMES[student]):
      with pytest.raises(JaxkdError, match="not in jaxkd.models"):
        _load("cifar_unix.py", arg)
      continue
    c = _load("cifar_unix.py", arg)
    assert c.dataset == "tfds:cifar100"
    assert (c.teacher.model, c.student) == (cfg.JAXKD_NAMES[teacher],
                                            cfg.JAXKD_NAMES[student])
    assert c.unix.lr == lr
    # student_v0.py: N 64, k 48, b 32, w 10, T 4, CE 0, KD 1, 240 epochs,
    # SGD wd 5e-4; teacher.py: 240 epochs, batch 64, lr 0.05.
    u = c.unix
    assert (u.batch_size, u.k, u.b, u.w, u.temperature, u.ce_weight,
            u.kd_weight, u.epochs, u.optimizer, u.weight_decay,
            u.uncertainty) == (64, 48, 32.0, 10.0, 4.0, 0.0, 1.0, 240,
                               "sgd", 5e-4, "entropy")
    assert (c.teacher.epochs, c.teacher.batch_size,
            c.teacher.learning_rate) == (240, 64, 0.05)
    assert tuple(c.seeds) == (0, 1, 2, 3)
    settings.read(c)
  with pytest.raises(JaxkdError, match="not an official UNIX pair"):
    _load("cifar_unix.py", "pair=resnet8x4-resnet32x4")


def test_unix_cifar100_runs_on_mock_data(tmp_path):
  c = _tiny(_load("cifar_unix.py"), seeds=(0,), **{
      "unix.methods": ("kd", "unix"),
      "unix.epochs": 1, "unix.batch_size": 8, "unix.k": 6, "unix.b": 4.0,
      "teacher.epochs": 1, "teacher.batch_size": 8})
  out = _run(c, tmp_path)
  assert set(out["strategies"]) == {"kd", "unix"}
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["strategies"]["unix"][0][0]["computation"] < 1


def test_added_official_models_have_the_published_sizes():
  # Parameters for 100 classes of RepDistiller's resnet56, wrn_40_1,
  # wrn_40_2, vgg13_bn, vgg16_bn (the zoo UNIXKD copies), and of Active
  # Mixup's VGG('VGG16', 10) (the same convolutions, a 10-way head).
  import jax
  import numpy as np
  from jaxkd.models import get_model

  def millions(name, classes):
    m = get_model(name, classes)
    v = jax.eval_shape(lambda: m.init(jax.random.key(0),
                                      np.zeros((1, 32, 32, 3), np.float32)))
    return sum(np.prod(x.shape) for x in jax.tree.leaves(v["params"])) / 1e6

  for name, want in (("resnet56", 0.86), ("wrn_40_1", 0.57),
                     ("wrn_40_2", 2.26), ("vgg13", 9.46), ("vgg16", 14.77)):
    assert round(millions(name, 100), 2) == want, name
  assert round(millions("vgg16_am", 10), 2) == 14.73


# ----------------------------------------------------------- recon (ADMM) --

def test_recon_config_is_the_papers_table_1():
  c = _load("cifar_recon.py")
  assert c.dataset == "tfds:cifar10"
  assert (c.teacher.model, c.student) == ("alexnet_cifar",
                                          "alexnet_cifar_half")
  assert (c.split.teacher_train, c.split.initial, c.split.pool,
          c.split.test) == (30000, 500, 5000, 0)
  assert (c.per_round, c.rounds, tuple(c.seeds)) == (300, 15, (0, 1, 2))
  assert c.strategy_options.admm.to_dict() == dict(alpha=1e-6, theta=1e-5,
                                                   beta=0.5)
  assert tuple(c.strategies) == ("random", "learning_loss", "coreset",
                                 "discriminative", "admm")
  assert _load("cifar_recon.py", "k=500").rounds == 10
  settings.read(c)


def test_recon_cifar10_runs_on_mock_data(tmp_path):
  c = _tiny(_load("cifar_recon.py", "quick"), strategies=("random", "admm"),
            rounds=1, per_round=4, **{
                "split.teacher_train": 4, "split.initial": 6,
                "split.pool": 6, "split.test": 0, "loop.train_steps": 2,
                "loop.batch_size": 8, "teacher.epochs": 1,
                "teacher.batch_size": 8})
  out = _run(c, tmp_path)
  for name in ("random", "admm"):
    (run,) = out["strategies"][name]
    assert [r["queries"] for r in run] == [6, 10]
