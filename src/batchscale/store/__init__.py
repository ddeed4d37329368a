"""Stored results: one HDF5 trace per run (traces) and one xarray cube per study (cube)."""
