"""The built-in scorers. Each module is a plugin, registered exactly like a third-party one."""
