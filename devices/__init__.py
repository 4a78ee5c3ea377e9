"""Device models: what a device is, what it can report, and how vtlab plays it when simulated."""
