"""One acceptance run, in separate pieces: its folder and evidence store (`folder`), the target it
runs against (`target`: the embedded reference lab or a supplier's platform), and the test bed of
connected devices and probes (`testbed`). `harness.engine` runs and judges scenarios against them."""
