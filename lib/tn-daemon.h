/*++
 * NAME
 *	tn-daemon 3h
 * SUMMARY
 *	what every tenantmail daemon does at start-up
 * DESCRIPTION
 *	tn_daemon_configure() handles the command line all daemons share,
 *	    PROGRAM [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 *	-c the configuration file (default $TENANTMAIL_CONF, else
 *	TN_DAEMON_DEFAULT_CONF), -o overrides applied after the file in
 *	order, -e logs to stderr as well as syslog (facility mail), -n sets
 *	*check_r (the daemon checks its settings and exits). It starts
 *	logging, loads the file and sets the log level from the ENUM
 *	parameter level_param ("debug|info|warning|error").
 *
 *	tn_daemon_drop_privileges() switches a process started as root to
 *	user with that user's groups from /etc/group (initgroups), and
 *	checks that root cannot be regained. Not root, or user empty: no
 *	switch. param names the parameter in error messages.
 *--*/
#ifndef TN_DAEMON_H
#define TN_DAEMON_H

#include <stdbool.h>

#include "tn-conf.h"

#define TN_DAEMON_DEFAULT_CONF "/etc/tenantmail/tenantmail.conf"

/* 0 with *conf_r, or an exit status (EX_USAGE after the usage line,
 * EX_CONFIG after the error) with *conf_r NULL. */
int tn_daemon_configure(const char *program, const struct tn_conf_param *const *tables,
			const char *level_param, int argc, char **argv,
			struct tn_conf **conf_r, bool *check_r);

/* 0, or -1 after an error line in the log. */
int tn_daemon_drop_privileges(const char *param, const char *user);

#endif
