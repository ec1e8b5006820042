"""`nova`, the command-line client of Nova's public REST APIs."""
