## man/: a page for every program and configuration file.
dist_man_MANS += man/tnctl.1 man/tenantmail.conf.5 man/tn-hookd.8 man/tn-webhook.5 \
	man/tenantmail-dovecot.7 \
	man/tn-provisiond.8
