"""MMCLIP as a LLaVA vision tower, and its exchange with transformers checkpoints.

- :mod:`~mmclip_plugin.tower.vision_tower`: ``MMCLIPVisionTower`` (``--vision_tower mmclip:<dir>``).
- :mod:`~mmclip_plugin.tower.weights`: tower names, the cheap geometry config, the weights.
- :mod:`~mmclip_plugin.tower.image_processor`: a ``CLIPImageProcessor`` matching the encoder.
- :mod:`~mmclip_plugin.tower.protocol`: LLaVA's implicit tower contract as ``typing.Protocol``.
- :mod:`~mmclip_plugin.tower.hf_import`: ``mmclip-import`` (a transformers ``CLIPModel`` / ``SiglipModel`` in).
- :mod:`~mmclip_plugin.tower.hf_export`: ``mmclip-export`` (CLIP / SigLIP, image tower or full model, out).
- :mod:`~mmclip_plugin.tower.hf_config`, :mod:`~mmclip_plugin.tower.hf_weights`: the configs and weight names
  of both directions; :mod:`~mmclip_plugin.tower.timm_vit`: timm ViTs of any geometry by generated name.
"""
