"""Projects Nova events into the DynamoDB read model."""
