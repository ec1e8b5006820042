"""Settings, logging, resources and backend helpers shared by Nova services."""
