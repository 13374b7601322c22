"""Entry point: `python -m jaxkd.main [--config=FILE.py[:arg]] [--workdir=DIR]`.

With no flags it runs the default digits job (jaxkd/configs/default.py) in
./runs/digits; `--strategy=admm,random` picks the strategies to compare.
`--mode=teacher` only trains, evaluates and saves the teacher (in
WORKDIR/teacher; load it in later runs with
`--config.teacher.checkpoint=WORKDIR/teacher`). `--list_config` prints every
config field with its default and meaning, then the options of each
strategy in `config.strategy_options` with their values and meanings. On
several hosts, call with `--multihost` so that `jax.distributed.initialize()`
runs before JAX touches a device.

Bad input (a `JaxkdError`, or a bad flag) is printed as one line
`error: ...` on stderr with exit status 2; `--verbose` or `JAXKD_DEBUG=1`
adds the traceback. Other exceptions keep their traceback.
`run_cli(argv)` does the same in-process and returns the status.
"""

import os
import signal
import sys
import traceback
from typing import Optional, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT = os.path.join(os.path.dirname(__file__), "configs", "default.py")
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
# What config_flags raises for an unknown or ill-typed --config.x override.
_BAD_OVERRIDE = (AttributeError, KeyError, TypeError, ValueError)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """Defines jaxkd's flags on `fv`; `argv` names the --config.x overrides
  (config_flags defines one flag per override it finds there)."""
  config_flags.DEFINE_config_file("config", _DEFAULT,
                                  "Experiment config file.", flag_values=fv,
                                  lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string("workdir", "runs/digits", "Run directory (resumable).",
                      flag_values=fv)
  flags.DEFINE_list("strategy", None,
                    "Strategies to compare, overriding config.strategies, "
                    "e.g. --strategy=random,admm (any registered name, or "
                    "active_mixup / random_mixup).", flag_values=fv)
  flags.DEFINE_enum("mode", "run", ["run", "teacher"],
                    "run: the configured job; teacher: only train, evaluate "
                    "and save the teacher in WORKDIR/teacher.",
                    flag_values=fv)
  flags.DEFINE_bool("list_config", False,
                    "Print every config field with its default and meaning, "
                    "then exit.", flag_values=fv)
  flags.DEFINE_bool("verbose", False,
                    "Show the traceback of input errors (also "
                    "JAXKD_DEBUG=1).", flag_values=fv)
  flags.DEFINE_bool("multihost", False,
                    "Several processes, one run: call "
                    "jax.distributed.initialize() first (cluster detected, "
                    "or the three flags below); process 0 alone pays the "
                    "teacher.", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None,
                      "--multihost: host:port of process 0's coordinator.",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "--multihost: process count.",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "--multihost: this process's id.",
                       flag_values=fv)


def _override_error(e: BaseException) -> ValueError:
  what = str(e).replace("\\n", " ").replace("\\", "").replace("'", "")
  what = " ".join(what.split())
  return ValueError(f"bad --config override ({what}); python -m jaxkd.main "
                    "--list_config lists the fields.")


def check_tuple_overrides(argv: Sequence[str]) -> None:
  """`--config.seeds=3` for a tuple field is refused: absl would take it as
  one seed, seed 3. A tuple is written `--config.seeds='(0,1,2)'`."""
  from jaxkd import fields, settings
  tuples = {name for cls in settings.JOB_SETTINGS.values()
            for name, value, _ in fields.flat_fields(cls())
            if isinstance(value, tuple)}
  for arg in argv:
    name, eq, value = arg.partition("=")
    if not (eq and name.startswith("--config.")):
      continue
    field = name[len("--config."):]
    if field in tuples and not value.strip().startswith(("(", "[")):
      raise ValueError(
          f"config.{field} is a tuple: write --config.{field}='({value},)' "
          f"for one value (seeds: '(0,1,2)' for three seeds).")


def _debug(fv: Optional[flags.FlagValues] = None) -> bool:
  verbose = False
  try:
    verbose = bool((fv or FLAGS)["verbose"].value)
  except (KeyError, AttributeError):
    pass
  return verbose or os.environ.get("JAXKD_DEBUG", "") not in ("", "0")


def print_error(e: BaseException, fv: Optional[flags.FlagValues] = None
                ) -> int:
  """Prints `error: <message>` as one line on stderr (the traceback first
  in debug mode) and returns the exit status 2."""
  if _debug(fv):
    traceback.print_exception(type(e), e, e.__traceback__)
  msg = " ".join(str(e).split()) or type(e).__name__
  if "JaxkdError: " in msg:  # raised inside a config file's get_config
    msg = msg.rsplit("JaxkdError: ", 1)[1]
  print(f"error: {msg}", file=sys.stderr, flush=True)
  return USAGE_ERROR


FLAGS = flags.FLAGS
try:
  define_flags(FLAGS, sys.argv)
except _BAD_OVERRIDE as _e:
  if __name__ != "__main__":
    raise
  sys.exit(print_error(_override_error(_e)))


def run(fv: flags.FlagValues = FLAGS) -> int:
  """Runs the parsed flags `fv`; returns the exit status (2 after a
  one-line JaxkdError)."""
  from jaxkd.validation import JaxkdError
  try:
    _run(fv)
  except JaxkdError as e:
    return print_error(e, fv)
  except KeyboardInterrupt:
    print(f"\ninterrupted: every paid answer is in the ledger and every "
          f"finished round is checkpointed in {fv.workdir}; rerun the same "
          "command to resume (nothing is paid twice).", file=sys.stderr,
          flush=True)
    return INTERRUPTED
  return 0


def help_text(fv: flags.FlagValues) -> str:
  """`--help`: what the entry point does, its flags, and the names a config
  may use (strategies, models, dataset kinds)."""
  from jaxkd import data
  from jaxkd.models import model_names
  from jaxkd.selection import strategy_names
  names = [("strategies", strategy_names()), ("models", model_names()),
           ("datasets", data.dataset_names())]
  lines = [__doc__.strip(), "", "flags:", fv.main_module_help(), ""]
  lines += [f"{what}: {', '.join(n)}" for what, n in names]
  lines.append("(or any of them by import path 'pkg.module:attr')")
  return "\n".join(lines)


def _on_sigterm(signum, frame):
  del signum, frame
  raise KeyboardInterrupt  # the same one-line exit as Ctrl-C


def _run(fv: flags.FlagValues) -> None:
  if "verbosity" not in fv or not fv["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from jaxkd.validation import JaxkdError
  try:
    config = fv.config
    getattr(config, "keys")  # a file that failed to load raises here
  except OSError as e:  # config_flags could not load the --config file
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise JaxkdError(f"cannot load --config: {lines[-1] if lines else e}"
                     ) from None
  if fv.list_config:
    from jaxkd import fields, settings
    from jaxkd.selection.registry import options_lines
    parsed = settings.parse(config)
    lines = [fields.describe(parsed)]
    for name, opts in getattr(parsed, "strategy_options", {}).items():
      lines += options_lines(name,
                             settings.parse_strategy_options(name, opts))
    print("\n".join(lines), flush=True)
    return
  if fv.multihost:  # before anything touches JAX
    from jaxkd import multihost
    multihost.initialize(fv.coordinator_address, fv.num_processes,
                         fv.process_id)
  from jaxkd import experiment
  if fv.strategy:
    config = config.copy_and_resolve_references()
    config.strategies = tuple(fv.strategy)
  if fv.mode == "teacher":
    experiment.teacher_only(config, fv.workdir)
  else:
    experiment.train_and_evaluate(config, fv.workdir)


def parse_flags(argv):
  """absl flag parsing with a bad flag as one line and exit status 2;
  `--help` prints `help_text` and exits 0."""
  if any(a in ("--help", "-h", "--helpshort", "-?") for a in argv[1:]):
    print(help_text(FLAGS))
    sys.exit(0)
  try:
    check_tuple_overrides(argv)
    return FLAGS(argv)
  except (flags.Error, ValueError) as e:
    sys.exit(print_error(e))


def run_cli(argv: Sequence[str]) -> int:
  """`python -m jaxkd.main ARGS` in this process: `argv` (argv[0] is the
  program name) is parsed into fresh flags and run; returns the exit status
  (0, or 2 after a one-line error on stderr). For tests and notebooks.

  Example:
    >>> run_cli(["jaxkd", "--strategy=nope"])  # doctest: +SKIP
    2
  """
  argv = list(argv)
  fv = flags.FlagValues()
  try:
    check_tuple_overrides(argv)
    define_flags(fv, argv)
    fv(argv)
  except flags.Error as e:
    return print_error(e, fv)
  except _BAD_OVERRIDE as e:
    return print_error(_override_error(e), fv)
  return run(fv)


def main(argv):
  del argv
  signal.signal(signal.SIGTERM, _on_sigterm)
  sys.exit(run())


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  app.run(main, flags_parser=parse_flags)
