"""The diagram engine: geometry drawn from code, and image hard negatives made by perturbing that code.

Public API: :mod:`data_recipes.diagrams.engine` (``generate_diagram``, ``candidate_negatives``,
``render_array``, ``encode_png``, ``list_families``, ``list_perturbations``). The other modules are its
parts: ``geometry`` and ``scene`` (the model), ``facts`` and ``marks`` (what a diagram states),
``captions`` and ``questions`` (text from facts), ``layout``, ``draw_calls`` and ``render`` (pixels),
``hardness`` (how close a negative is to its positive), ``families/`` and ``perturbations/`` (registries).
"""
