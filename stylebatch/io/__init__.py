"""Input and output: storage backends, manifests, per-row results, the output lease, image codecs."""
