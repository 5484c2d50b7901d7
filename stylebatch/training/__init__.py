"""Training per-style feed-forward networks: the trainer (tensors only) and house styles from URIs."""
