"""Offline preview and policy gate: the program under Pulumi's mocks, the pack over the Analyzer protocol."""
