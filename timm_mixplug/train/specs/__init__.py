"""Method specs: each ``--task`` and ``--mix`` method's flags and how they build its library piece."""
from .base import (
    DataInfo, MethodSpec, MixSpec, TaskSpec, add_method_args, all_specs, check_flags_consumed, compare_presets,
    get_mix_spec, get_task_spec, list_tasks, load_builtin_specs, register_mix, register_task, weight_settings)
