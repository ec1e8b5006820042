"""FastAPI pieces shared by the command and query APIs."""
