"""Sample HA-aware applications shipped with the appliance (the counter service)."""
