"""reshaper: the appliance (command line, configuration, modes)."""
