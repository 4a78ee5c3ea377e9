"""Observation points: where the contract says an alarm or acknowledgement must arrive."""
