"""The plugin's error: what the user of the plugin can fix (an option, a setting, a missing credential); the
message names the input and the fix."""


class DyStreamException(Exception):
    """An option, setting or credential the user of the plugin can fix; the message names it and the fix."""
