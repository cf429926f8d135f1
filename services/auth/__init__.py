"""The auth service: users, passwords, sessions."""
