"""On-disk formats, each owned by one module that reads, validates and writes it.

- :mod:`data_recipes.formats.dataset`: our data-set directory (``samples.jsonl``, ``manifest.json``)
  and the reference's two training JSON files.
- :mod:`data_recipes.formats.llava`: LLaVA's training JSON and the held-out question file.
- :mod:`data_recipes.formats.probe`: the paired perception probe (``probe.jsonl``, ``manifest.json``).
"""
