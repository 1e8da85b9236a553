"""Operational drills run against real processes: `samverka drill replace-module` (`replace_module.py`).

A drill drives the platform from outside, as an operator and the modules would: `samverka serve` and
the example modules as subprocesses, the `samverka` commands, HTTP through `samverka.sdk`. It imports
nothing of the server itself.
"""
