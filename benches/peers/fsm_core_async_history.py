"""fsm-core's executor with history recording on (the default): the `fsm_core_async` column
with `Executor::new`."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("fsm_core_async_column", os.path.join(os.path.dirname(__file__), "fsm_core_async.py"))
_executor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_executor)

NAME = "fsm_core_async_history"
LABEL = "fsm-core (executor, history)"
ORDER = 10
DEPS = _executor.DEPS
machine = _executor.machine


def driver(s):
    return _executor.driver(s).replace(
        "Executor::builder(Bump).record_history(false).build()", "Executor::new(Bump)")
