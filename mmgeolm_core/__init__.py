"""The project's base layer: plumbing that every package shares, free of torch and of our other packages.

- :mod:`~mmgeolm_core.errors`: the error types every command maps to an exit status.
- :mod:`~mmgeolm_core.config`: YAML at the edge, one dataclass builder with type checks, ``ConfigError``.
- :mod:`~mmgeolm_core.registry`: ``Registry``, the one registry class behind every ``register_*``.
- :mod:`~mmgeolm_core.io`: atomic writes, JSON and JSON-lines readers with file and line in every error.
- :mod:`~mmgeolm_core.resources`: files shipped with the packages (recipes, configs), by short name.
- :mod:`~mmgeolm_core.cli`: one error path and one logging set-up for every command line.
"""
