## examples/: configuration examples.
EXTRA_DIST += examples/tenantmail.conf
