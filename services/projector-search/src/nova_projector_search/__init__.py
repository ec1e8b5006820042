"""Projects Nova events into the OpenSearch transcript index."""
