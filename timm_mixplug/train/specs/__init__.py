"""Method specs: each ``--task`` and ``--mix`` method's flags and how they build its library piece."""
from .base import (
    DataInfo, MethodSpec, MixSpec, TaskSpec, add_method_args, check_flags_consumed, get_mix_spec, get_task_spec,
    list_tasks, load_builtin_specs, register_mix, register_task)
