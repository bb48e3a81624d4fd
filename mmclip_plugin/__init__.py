"""mmclip_plugin."""
