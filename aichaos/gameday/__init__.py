"""Game days: a stack kept up by hand, broken by hand, watched live.

``aichaos stack up FILE`` starts a *keeper* (``aichaos.gameday.keeper``), a small detached process that
owns the stack the way a run does (its runtime, fault proxy and services, in a ``RunSession``) and
answers a control API on 127.0.0.1 (``aichaos.gameday.control``): ``fault inject``, ``fault clear``,
``stack status`` and ``stack down`` are requests to it. Owning the processes is what lets it restart
a killed service, and living on after the command that injected a fault is what lets it revert a
``--for`` fault when its time is up.

The keeper's directory (under ``runs/``, like a run's) holds the run state file that ``aichaos
cleanup`` reads after a ``kill -9`` (every pid, every active fault's undo record), ``gameday.json``
(how to reach the keeper), the measurements that ``aichaos watch`` appends, the logs, and the
game-day journal (``aichaos.gameday.record``), which ``aichaos report`` renders like a run's.
"""
