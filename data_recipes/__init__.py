"""data_recipes."""
