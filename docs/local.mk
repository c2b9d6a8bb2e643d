## docs/: architecture and operations.
EXTRA_DIST += milters/README.md dovecot-plugins/README.md lmtp-router/README.md \
	billing-hook/README.md examples/README.md \
	docs/architecture.md docs/outbox.md docs/hookd.md docs/events.md docs/billing.md docs/redis-keys.md docs/operations.md docs/testing.md docs/provisioning.md \
	docs/openapi.yaml docs/dovecot.md
