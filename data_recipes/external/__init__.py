"""Image negatives for external matplotlib scripts (an LLM's output, MM-Math-Align), run in a sandbox.

- :mod:`~data_recipes.external.edits`: syntax-tree edits of a script, registered by name.
- :mod:`~data_recipes.external.perturb`: ``mmgeolm-data perturb-script`` (one script).
- :mod:`~data_recipes.external.batch`: ``mmgeolm-data perturb-batch`` (many, resumable).
- :mod:`~data_recipes.external.sandbox`: the worker pool that runs untrusted scripts, each in a fresh
  process; :mod:`~data_recipes.external.isolation`: its kernel isolation with bubblewrap;
  ``sandbox_worker.py`` and ``sandbox_script.py``: the programs that run inside (never imported here).
"""
