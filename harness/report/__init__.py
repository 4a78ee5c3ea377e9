"""Reports read the evidence store, the contract and the lab file; they never re-run anything."""
