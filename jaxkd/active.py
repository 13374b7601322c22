"""Former home of the active loop; kept so old imports keep working.

Every method now runs through `jaxkd.loop.run_loop` (pool strategies, Active
Mixup, random mixup and plug-ins alike); `run_active_loop` is that function.
"""

from jaxkd.loop import LoopSettings, RoundContext, fit_student, run_loop

run_active_loop = run_loop

__all__ = ["LoopSettings", "RoundContext", "fit_student", "run_active_loop",
           "run_loop"]
