"""Training per-style feed-forward networks: the recipe (settings and recipe files), the photo terms
of the loss, the trainer (tensors only), and training from URIs with checkpoints (house_style)."""
