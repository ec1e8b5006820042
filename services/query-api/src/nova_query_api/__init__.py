"""Nova query side: REST and gRPC reads of the projections."""
