"""`train_and_evaluate(config, workdir)`: every jaxkd experiment.

The one entry behind `python -m jaxkd.main --config=FILE.py:variant`: it
reads the config into settings (`jaxkd.settings.read`: strict, validated,
before anything is trained or paid), checks the workdir's config.json
(`jaxkd.run_dir.check_resume`) and runs the job `settings.job` names:

  "active" (default): `jaxkd.jobs.active.run`;
  "unix": `jaxkd.jobs.unix.run`.

`teacher_only(config, workdir)` is `--mode=teacher` (`jaxkd.jobs.teacher`).
Below this module jaxkd takes settings objects, never a ConfigDict.
"""

from __future__ import annotations

from typing import Any, Dict

from jaxkd import run_dir, settings as settings_lib
from jaxkd.jobs import active, teacher, unix
from jaxkd.validation import JaxkdError

JOBS = {"active": active.run, "unix": unix.run}


def validate_config(config: Any) -> settings_lib.JobSettings:
  """The job's validated settings; a one-line JaxkdError for any value that
  would waste paid queries, before anything is trained or paid."""
  return settings_lib.read(config)


def train_and_evaluate(config: Any, workdir: str) -> Dict[str, Any]:
  """Runs the configured job (`config.job`: "active" or "unix") in
  `workdir` (resumable) and returns what it writes to results.json."""
  settings = validate_config(config)
  with run_dir.workdir_lock(workdir):
    fresh = not run_dir.has_outputs(workdir)
    accepted = run_dir.check_resume(settings, workdir)
    try:
      return JOBS[settings.job](settings, workdir, accepted)
    except JaxkdError:
      if fresh and not run_dir.has_outputs(workdir):
        # Refused before anything was paid: the corrected rerun may use
        # other settings in the same workdir.
        run_dir.forget_config(workdir)
      raise


def teacher_only(config: Any, workdir: str) -> Dict[str, Any]:
  """`--mode=teacher`: trains, evaluates and saves the teacher in
  workdir/teacher; returns its teacher.json."""
  with run_dir.workdir_lock(workdir):
    return teacher.run(settings_lib.parse(config), workdir)
