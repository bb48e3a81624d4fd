"""The paper's comparison of negative types on our own data (``mmclip-ablate``).

- :mod:`~mmclip_plugin.ablation.arms`: the arms, registered by name.
- :mod:`~mmclip_plugin.ablation.config`: the ablation recipe, each arm's config and budget.
- :mod:`~mmclip_plugin.ablation.run`: training and evaluating every (arm, seed), resumable.
- :mod:`~mmclip_plugin.ablation.report`: seed means and the table.
"""
