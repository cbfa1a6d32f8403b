"""Demo applications that run under haos."""
