"""llava_patches."""
