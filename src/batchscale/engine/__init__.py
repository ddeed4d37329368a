"""The training engine: one readable SGD loop over data that lives on the device."""
