"""Caption hard negatives: rule-based edits and retrieval of similar captions.

Public API: :func:`data_recipes.text_negatives.generate.generate_text_negatives` (and the
``mmgeolm-data text-negatives`` command); :mod:`~data_recipes.text_negatives.rules` (the rule registry)
and :mod:`~data_recipes.text_negatives.retrieval` (similarity backends) are its two sources.
"""
