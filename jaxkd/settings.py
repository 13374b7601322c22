"""Every setting of a jaxkd job, declared once, and checked before paying.

The config of `python -m jaxkd.main` has one section per part of a job:
data (top-level fields), `split`, `teacher`, the active loop (top-level
rounds, strategies, ... and the student training `loop`), and `unix` for the
UNIX job. Each is one frozen dataclass here (or, for the student training
and the UNIX step, where the code that uses it lives: `loop.StudentTraining`,
`unix.UnixConfig`), with its defaults, one line of meaning per field
(`jaxkd.fields.setting`) and a `validate()` that raises a one-line
`JaxkdError` before anything is trained or paid.

`ActiveSettings` and `UnixJobSettings` are the two jobs' whole settings;
`read(config)` turns the ConfigDict of the command line into one of them
(strictly: a misspelt field is an error) and validates it. Below this
boundary jaxkd takes these objects, never a ConfigDict.

  >>> s = read(active_config())
  >>> s.rounds, s.per_round, s.loop.train_steps
  (5, 40, 300)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import ml_collections

from jaxkd import fields, run_dir
from jaxkd.fields import same_as, setting
from jaxkd.loop import LoopSettings, StudentTraining
from jaxkd.unix import METHODS as UNIX_METHODS
from jaxkd.unix import UnixConfig
from jaxkd.validation import JaxkdError, check_number

JOBS = ("active", "unix")
ALL_STRATEGIES = ("random", "entropy", "margin", "least_confidence",
                  "coreset", "badge", "admm", "rad", "gap_diversity",
                  "active_mixup", "random_mixup")


def check_positive(name, value, *, integer=False, zero_ok=False):
  """`config.<name>` must be a finite number (an int) > 0 (>= 0)."""
  check_number(f"config.{name}", value, integer=integer, zero_ok=zero_ok)


def check_distinct(name, values) -> None:
  """`config.<name>` must not repeat a value (it would be counted twice)."""
  seen = set()
  for v in values:
    if v in seen:
      raise JaxkdError(f"config.{name} lists {v!r} twice: it would run and "
                       f"be counted twice ({tuple(values)}).")
    seen.add(v)


# ------------------------------------------------------------- sections ---


@dataclasses.dataclass(frozen=True)
class SplitSettings:
  """How the train split is cut into teacher-train / L / U, and the test."""
  teacher_train: int = setting(700, "Train-split images the teacher is "
                               "trained on (the student never sees them).")
  initial: int = setting(50, "Initial labelled set L the student pays for "
                         "in round 0.")
  pool: int = setting(547, "Unlabelled pool U the strategies select from.")
  test: int = setting(0, "Test images: 0 = the dataset's whole test split; "
                      "n > 0 = n drawn from it (own files without a test "
                      "split: n split off).")
  seed: int = setting(0, "Seed of the teacher-train / L / U / test split.")


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
  """Where the teacher comes from: trained here, a checkpoint, or a URL."""
  model: str = setting("lenet5", "Teacher model name (e.g. lenet5).")
  epochs: int = setting(30, "Teacher training epochs (hard-label CE, "
                        "cosine).")
  batch_size: int = setting(64, "Teacher training batch size.")
  optimizer: str = setting("adam", "Teacher optimizer (adam, sgd, ...).")
  learning_rate: float = setting(3e-3, "Teacher peak learning rate.")
  seed: int = setting(0, "Teacher init and shuffling seed.")
  url: str = setting("", "A remote teacher (python -m jaxkd.serve_teacher) "
                     "the active job queries instead of training one.")
  checkpoint: str = setting("", "Folder of a saved teacher (--mode=teacher "
                            "output): load it instead of training one.")
  api_key_file: str = setting(
      "", "File holding the API key of teacher.url (sent as a Bearer token); "
      "'' = $JAXKD_TEACHER_API_KEY when set.")

  def training_fields(self) -> Dict[str, Any]:
    """The fields a trained teacher records (a remote one is not trained)."""
    out = dataclasses.asdict(self)
    del out["url"], out["api_key_file"]
    return out

  def validate(self, job: str = "active") -> "TeacherSettings":
    if self.url:
      if not isinstance(self.url, str) or not self.url.startswith(
          ("http://", "https://")):
        raise JaxkdError(f"config.teacher.url must start with http:// or "
                         f"https://, got {self.url!r}.")
      if job != "active":
        raise JaxkdError("config.teacher.url is for the active job; the UNIX "
                         "job needs the teacher's model (its features and "
                         "FLOPs).")
    if self.api_key_file and not os.path.isfile(self.api_key_file):
      raise JaxkdError(f"config.teacher.api_key_file {self.api_key_file!r} "
                       "is not a file.")
    check_positive("teacher.epochs", self.epochs, integer=True)
    check_positive("teacher.batch_size", self.batch_size, integer=True)
    check_positive("teacher.learning_rate", self.learning_rate)
    return self


@dataclasses.dataclass(frozen=True)
class UnixSettings:
  """The UNIX job's methods and student training (`config.unix`); the step's
  hyperparameters are `unix.UnixConfig`'s fields."""
  methods: Tuple[str, ...] = setting(
      ("kd", "random_kd", "unix"), "UNIX job methods: kd, random_kd, "
      "uncertainty, mixup, non_adaptive, unix.")
  epochs: int = setting(30, "Student epochs per method.")
  batch_size: int = setting(64, "N: images drawn per step.")
  k: int = same_as(UnixConfig, "k")
  w: float = same_as(UnixConfig, "w")
  b: Optional[float] = same_as(UnixConfig, "b")
  alpha: float = same_as(UnixConfig, "alpha")
  uncertainty: str = same_as(UnixConfig, "uncertainty")
  temperature: float = same_as(UnixConfig, "temperature")
  ce_weight: float = same_as(UnixConfig, "ce_weight")
  kd_weight: float = same_as(UnixConfig, "kd_weight")
  feature_loss: str = setting("", "'' (none), 'at' (attention transfer) or "
                              "'sp' (similarity preserving).")
  optimizer: str = setting("sgd", "Student optimizer.")
  lr: float = setting(0.02, "Student learning rate.")
  weight_decay: float = setting(5e-4, "Student weight decay.")
  # With 2 warm-up epochs (or none) one of 3 lenet5_half seeds never left the
  # uniform output (KD loss x T^2 = 16); 5 epochs trained all three.
  warmup_epochs: int = setting(5, "Linear warm-up epochs.")
  max_train: int = setting(0, "Use at most this many train images (0 = "
                           "all).")

  def method_config(self, method: str) -> UnixConfig:
    """The validated `UnixConfig` of one method of the job."""
    from jaxkd import unix
    kw = dict(w=self.w, b=self.b, alpha=self.alpha,
              temperature=self.temperature, ce_weight=self.ce_weight,
              kd_weight=self.kd_weight, feature_loss=self.feature_loss or None)
    if UNIX_METHODS.get(method, {}).get("uncertainty") == "entropy":
      kw["uncertainty"] = self.uncertainty
    return unix.method_config(method, batch_size=self.batch_size, k=self.k,
                              **kw)

  def validate(self) -> "UnixSettings":
    check_positive("unix.epochs", self.epochs, integer=True)
    check_positive("unix.batch_size", self.batch_size, integer=True)
    check_positive("unix.lr", self.lr)
    check_positive("unix.temperature", self.temperature)
    check_positive("unix.max_train", self.max_train, integer=True,
                   zero_ok=True)
    check_positive("unix.warmup_epochs", self.warmup_epochs, integer=True,
                   zero_ok=True)
    check_positive("unix.weight_decay", self.weight_decay, zero_ok=True)
    check_distinct("unix.methods", self.methods)
    if not tuple(self.methods):
      raise JaxkdError("config.unix.methods is empty: nothing would run.")
    for method in self.methods:
      self.method_config(method)
    return self


# ----------------------------------------------------------------- jobs ---


@dataclasses.dataclass(frozen=True)
class JobSettings:
  """What every job has: its data, teacher, student and seeds."""
  job: str = setting("active", "'active' (select -> pay teacher -> train "
                     "rounds) or 'unix' (UNIX computation-efficient KD).")
  dataset: str = setting("digits", "digits, mnist, fashion_mnist, cifar10, "
                         "mnist5k, tfds:<name>, or own files: npz:<path.npz>, "
                         "idx:<dir>, npy:<path> (memory-mapped), "
                         "folder:<dir> (image files) or "
                         "arrayrecord:<path-or-glob>.")
  data_dir: str = setting("", "Folder holding the dataset files (mnist, "
                          "fashion_mnist, cifar10, mnist5k; base folder for "
                          "relative own-file paths).")
  image_shape: Tuple[int, ...] = setting(
      (), "(H, W) or (H, W, C) of own images stored flat [N, D], or that "
      "folder: images are brought to; () when the files hold [N, H, W(, C)] "
      "(or folder images of one size).")
  num_classes: int = setting(0, "Classes of own data (npz:/idx:/npy:/"
                             "folder:); 0 infers max label + 1.")
  data_fit: str = setting("center_crop", "How folder: images of another "
                          "size reach image_shape: center_crop or resize.")
  data_lazy: bool = setting(
      False, "tfds: read images on demand through Grain (tfds.data_source) "
      "instead of loading the splits into memory.")
  data_skip_bad_files: bool = setting(
      False, "folder: leave out (and count) files that are not readable "
      "images instead of refusing the folder.")
  data_verify_md5: bool = setting(False, "Check files against known md5s "
                                  "(mnist, fashion_mnist, mnist5k; "
                                  "idx:<dir>/MD5SUMS).")
  allow_overlap: bool = setting(False, "Run even when teacher-train, pool "
                                "and test share images (reported in "
                                "results.json).")
  teacher: TeacherSettings = setting(factory=TeacherSettings,
                                     doc="The teacher.")
  student: str = setting("lenet5_half", "Student model name (jaxkd.models; "
                         "e.g. lenet5_half).")
  seeds: Tuple[int, ...] = setting((0,), "Seeds of the student runs; "
                                   "results are mean ± std over them.")
  progress: bool = setting(True, "Show progress bars.")
  resume_with_changes: bool = setting(
      False, "Accept resuming a workdir whose config.json differs in "
      "result-changing fields (recorded).")

  def validate_common(self) -> None:
    """The checks every job shares (seeds, teacher, names, data fields)."""
    if not tuple(self.seeds):
      raise JaxkdError("config.seeds is empty: nothing would run.")
    for s in self.seeds:
      check_positive("seeds", s, integer=True, zero_ok=True)
    check_distinct("seeds", self.seeds)
    self.teacher.validate(self.job)
    self.check_names()
    self.check_data_fields()

  def check_names(self) -> None:
    from jaxkd import data, train
    from jaxkd.models import MODELS, get_model
    try:
      data.dataset_loader(self.dataset)
    except JaxkdError as e:  # "Unknown dataset ...", like the other names
      msg = str(e)
      raise JaxkdError(msg[:1].upper() + msg[1:]) from None
    for name in (self.student, self.teacher.model):
      MODELS.get(name) if ":" in name else get_model(name, 10)  # known?
    train.OPTIMIZERS.get(self.teacher.optimizer)

  def check_data_fields(self) -> None:
    from jaxkd import data, teacher_training
    own = self.dataset.startswith(data.OWN_FILE_PREFIXES)
    for name in ("image_shape", "num_classes"):
      if not own and getattr(self, name):
        raise JaxkdError(
            f"config.{name} is for own files (npz:/idx:/npy:/folder:/"
            "arrayrecord:); "
            f"{self.dataset} brings its own {name.replace('_', ' ')}: unset "
            "it.")
    if self.data_lazy and not self.dataset.startswith("tfds:"):
      raise JaxkdError(f"config.data_lazy is for tfds: datasets; "
                       f"{self.dataset} is read as it is: unset it.")
    if self.data_fit not in ("center_crop", "resize"):
      raise JaxkdError(f"config.data_fit must be center_crop or resize, got "
                       f"{self.data_fit!r}.")
    if tuple(self.image_shape):
      data.arrays.image_shape_arg(tuple(self.image_shape))  # raises
    check_positive("num_classes", self.num_classes, integer=True,
                   zero_ok=True)
    if self.teacher.checkpoint:
      teacher_training.read_teacher_meta(self.teacher.checkpoint)


@dataclasses.dataclass(frozen=True)
class ActiveSettings(JobSettings):
  """The active-distillation job (`job="active"`) on the bundled digits:
  teacher-train 700, initial L 50, pool U 547, 5 rounds of 40 queries."""
  split: SplitSettings = setting(factory=SplitSettings, doc="The split.")
  strategies: Tuple[str, ...] = setting(
      ALL_STRATEGIES, "Selection strategies to compare (registered names or "
      "'pkg.module:attr'); --strategy=a,b overrides.")
  strategy_options: Dict[str, Dict[str, Any]] = setting(
      {}, "Per-strategy keyword options, e.g. {'admm': {'theta': 1e-4}}.")
  rounds: int = same_as(LoopSettings, "rounds")
  per_round: int = same_as(LoopSettings, "per_round")
  budget: int = setting(0, "Teacher queries allowed per run; 0 = "
                        "split.initial + rounds x per_round (a smaller value "
                        "is refused before paying).")
  hard_labels: bool = setting(False, "The teacher answers one-hot argmax "
                              "labels instead of probabilities.")
  price_per_query: float = setting(0.0, "Money per teacher answer, recorded "
                                   "in the ledger; 0 = unpriced.")
  money_budget: float = setting(0.0, "Teacher money allowed per run (pending "
                                "requests count); 0 = no money limit.")
  loop: StudentTraining = setting(factory=StudentTraining,
                                  doc="Student training per round.")

  @property
  def paid_budget(self) -> int:
    """Queries each run may pay for."""
    return self.budget or self.split.initial + self.rounds * self.per_round

  def loop_settings(self, seed: int, strategy: str) -> LoopSettings:
    """The round loop's settings of one (strategy, seed) run."""
    return LoopSettings(
        **dataclasses.asdict(self.loop), rounds=self.rounds,
        per_round=self.per_round, seed=seed,
        strategy_options=dict(self.strategy_options.get(strategy, {})))

  def validate(self) -> "ActiveSettings":
    from jaxkd.selection import get_strategy
    self.validate_common()
    if not tuple(self.strategies):
      raise JaxkdError("config.strategies is empty: nothing would run.")
    for name in self.strategies:
      get_strategy(name)  # the message lists the known names
    check_distinct("strategies", self.strategies)
    dirs = {}
    for name in self.strategies:
      other = dirs.setdefault(run_dir.run_dirname(name), name)
      if other != name:
        raise JaxkdError(
            f"config.strategies {other!r} and {name!r} would share the run "
            f"folder {run_dir.run_dirname(name)!r}; rename one (register it "
            "under another name).")
    check_positive("rounds", self.rounds, integer=True, zero_ok=True)
    check_positive("per_round", self.per_round, integer=True)
    check_positive("budget", self.budget, integer=True, zero_ok=True)
    need = self.split.initial + self.rounds * self.per_round
    if self.budget and self.budget < need:
      raise JaxkdError(
          f"split.initial + rounds x per_round = {self.split.initial} + "
          f"{self.rounds} x {self.per_round} = {need} queries exceed "
          f"config.budget={self.budget}.")
    check_positive("price_per_query", self.price_per_query, zero_ok=True)
    check_positive("money_budget", self.money_budget, zero_ok=True)
    if self.money_budget and not self.price_per_query:
      raise JaxkdError("config.money_budget needs config.price_per_query > 0 "
                       "(0 = unpriced).")
    money = need * self.price_per_query
    if self.money_budget and self.money_budget < money * (1 - 1e-9):
      raise JaxkdError(
          f"{need} planned queries x price_per_query={self.price_per_query:g}"
          f" = {money:g} exceed config.money_budget={self.money_budget:g}.")
    self.loop.validate("config.loop.")
    for name, opts in self.strategy_options.items():
      parse_strategy_options(name, opts)
    return self


@dataclasses.dataclass(frozen=True)
class UnixJobSettings(JobSettings):
  """The UNIX job (`job="unix"`): KD vs Random+KD vs UNIX on digits,
  lenet5 -> lenet5_half, N = 64, k = 48, w = 10, 30 epochs, 3 seeds."""
  job: str = fields.override(JobSettings, "job", "unix")
  teacher: TeacherSettings = fields.override(
      JobSettings, "teacher", factory=lambda: TeacherSettings(seed=1234))
  seeds: Tuple[int, ...] = fields.override(JobSettings, "seeds", (0, 1, 2))
  unix: UnixSettings = setting(factory=UnixSettings, doc="The UNIX job.")

  def validate(self) -> "UnixJobSettings":
    self.validate_common()
    self.unix.validate()
    return self


def parse_strategy_options(name: str, options: Any) -> Any:
  """The options of strategy `name` (a registered name or an import path)
  from `config.strategy_options.<name>`, as its options dataclass
  (`jaxkd.selection.registry.parse_options`); a one-line JaxkdError if
  `name` names no strategy or the strategy does not take these options."""
  from jaxkd.selection import get_strategy
  from jaxkd.selection.registry import parse_options
  try:
    strat = get_strategy(name)
  except JaxkdError as e:
    raise JaxkdError(f"config.strategy_options.{name}: {e}") from None
  return parse_options(strat, options, name=name)


# ------------------------------------------------------------ boundary ---

JOB_SETTINGS = {"active": ActiveSettings, "unix": UnixJobSettings}


def active_config(**overrides) -> ml_collections.ConfigDict:
  """The active job's ConfigDict, from `ActiveSettings`' defaults."""
  c = fields.to_config(ActiveSettings())
  c.update(overrides)
  return c


def unix_config(**overrides) -> ml_collections.ConfigDict:
  """The UNIX job's ConfigDict, from `UnixJobSettings`' defaults."""
  c = fields.to_config(UnixJobSettings())
  c.update(overrides)
  return c


def parse(config: Any):
  """The job's settings from a ConfigDict or dict (strict, not validated)."""
  data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  job = data.get("job", "active")
  if job not in JOB_SETTINGS:
    raise JaxkdError(f"Unknown job {job!r}; use 'active' or 'unix'.")
  cls = JOB_SETTINGS[job]
  # A field of the other job is not a misspelling: it is unused here.
  own = {f.name for f in dataclasses.fields(cls)}
  other = {f.name for c in JOB_SETTINGS.values() for f in dataclasses.fields(c)}
  return fields.from_config(
      cls, {k: v for k, v in data.items() if k in own or k not in other})


def read(config: Any):
  """`parse` then `validate`: the one boundary between config and code."""
  return parse(config).validate()


TABLES_BEGIN = "<!-- settings:begin (python -m jaxkd.settings) -->"
TABLES_END = "<!-- settings:end -->"


def readme_tables() -> str:
  """The configuration tables of the documentation (docs/configuration.md),
  generated from the field docs (`python -m jaxkd.settings` prints them; a
  test keeps the page equal)."""
  return "\n".join([
      TABLES_BEGIN, "The active job (`jaxkd/configs/default.py`):", "",
      fields.field_table(ActiveSettings()), "",
      "The UNIX job (`job=\"unix\"`) has the same data, teacher, student and "
      "seeds fields (teacher.seed 1234, seeds (0, 1, 2)) and its own section:",
      "", fields.field_table(UnixJobSettings().unix, "unix."), TABLES_END])


if __name__ == "__main__":
  print(readme_tables())
