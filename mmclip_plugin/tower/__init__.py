"""MMCLIP as a LLaVA vision tower, and its exchange with transformers checkpoints.

- :mod:`~mmclip_plugin.tower.vision_tower`: ``MMCLIPVisionTower`` (``--vision_tower mmclip:<dir>``).
- :mod:`~mmclip_plugin.tower.weights`: tower names, the cheap geometry config, the weights.
- :mod:`~mmclip_plugin.tower.image_processor`: a ``CLIPImageProcessor`` matching the encoder.
- :mod:`~mmclip_plugin.tower.protocol`: LLaVA's implicit tower contract as ``typing.Protocol``.
- :mod:`~mmclip_plugin.tower.hf_export`: ``mmclip-export`` (a transformers ``CLIPVisionModel``).
"""
