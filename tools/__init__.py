"""Research tools (evaluation, benchmarks, decoder training): run from a checkout, not packaged."""
