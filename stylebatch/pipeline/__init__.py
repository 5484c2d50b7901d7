"""The batch job: planning, the Ray Data stages, the driver that chains them, and its runtime."""
