"""Pure protocol core: no I/O, no clock, no environment. The service and the auditor share it."""
