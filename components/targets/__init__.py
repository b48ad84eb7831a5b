"""Deployment targets: one module per platform, all driven by the same rollout plan."""
