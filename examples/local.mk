## examples/: configuration examples.
EXTRA_DIST += examples/tenantmail.conf examples/webhook-receiver.py examples/tn-hookd.service \
	examples/quota-warning.sh
