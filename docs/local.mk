## docs/: architecture and operations.
EXTRA_DIST += docs/architecture.md docs/redis-keys.md docs/operations.md docs/testing.md
