"""Commands to devices: stored, routed to the process holding the device, ended by result or deadline."""
