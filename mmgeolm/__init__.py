"""mmgeolm: the pipeline from a recipe to a trained, evaluated MMGeoLM.

This package only orchestrates: every stage is one of the project's own command lines
(``mmgeolm-data``, ``mmclip-train``, ``mmclip-eval``, ``python -m llava_patches.train`` ...) run as a
subprocess, so it imports neither torch nor llava and each stage keeps its own resume logic.
"""
