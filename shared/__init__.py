"""Code that two or more services use: config, database, Redis, gRPC bootstrap, metrics."""
