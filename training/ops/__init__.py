"""Operating training runs: queue, run control, live status, structured logs and progress bars.

* Queue (``python -m training.queue``): :mod:`.queue_layout` (directories, priorities, submit),
  :mod:`.queue_journal` (restart safety), :mod:`.queue_validate` (a data file checked before it is queued),
  :mod:`.queue_daemon` (trains the current student on each file in turn), :mod:`.queue_status` (the report).
* Run control (``python -m training.runctl``): :mod:`.run_control` (the ``run_state.json`` /
  ``control.json`` protocol and signals), :mod:`.run_hooks` (the trainer hooks that honour it and serve
  the live status of :mod:`.run_status` over HTTP).
* Logs: :mod:`.structured_log` (JSON lines with a run id), :mod:`.progress` (progress bars that behave in
  log files).

The shared core the other packages build on, :mod:`training.config_base` (strict config models, YAML
loading) and :mod:`training.user_errors` (errors a user can fix, and how commands report them), stays at
the root of ``training``.
"""
