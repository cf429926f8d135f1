"""bankctl: the operators' and developers' command line, built on the client package
(clients/python): log in, balances, transfers, and a read-only check of a user's cache entries
against PostgreSQL. `python -m bankctl --help`."""
