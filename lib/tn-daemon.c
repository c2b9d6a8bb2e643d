/*++
 * NAME
 *	tn-daemon 3
 * SUMMARY
 *	the start-up every tenantmail daemon shares
 * DESCRIPTION
 *	See tn-daemon.h.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sysexits.h>
#include <unistd.h>

#include "tn-daemon.h"
#include "tn-log.h"
#include "tn-mem.h"

#define TN_DAEMON_OPTIONS "c:o:en"

static int tn_daemon_usage(const char *program)
{
	fprintf(stderr, "usage: %s [-c FILE] [-o NAME=VALUE]... [-e] [-n]\n", program);
	return EX_USAGE;
}

static int tn_daemon_override(const char *program, struct tn_conf *conf, const char *arg)
{
	const char *eq = strchr(arg, '='), *error;
	char *name;
	int ret;

	if (eq == NULL) {
		fprintf(stderr, "%s: -o %s: expected NAME=VALUE\n", program, arg);
		return -1;
	}
	name = tn_mem_strndup(arg, (size_t)(eq - arg));
	if ((ret = tn_conf_set(conf, name, eq + 1, &error)) < 0)
		fprintf(stderr, "%s: -o %s: %s\n", program, name, error);
	tn_mem_free(&name);
	return ret;
}

/* The file first, then every -o in order (a second getopt pass). */
static int tn_daemon_load(const char *program, struct tn_conf *conf, const char *path,
			  int argc, char **argv)
{
	const char *error;
	int c;

	if (tn_conf_load_file(conf, path, &error) < 0) {
		fprintf(stderr, "%s: %s\n", program, error);
		return EX_CONFIG;
	}
	optind = 1;
	while ((c = getopt(argc, argv, TN_DAEMON_OPTIONS)) != -1) {
		if (c == 'o' && tn_daemon_override(program, conf, optarg) < 0)
			return EX_CONFIG;
	}
	return 0;
}

int tn_daemon_configure(const char *program, const struct tn_conf_param *const *tables,
			const char *level_param, int argc, char **argv,
			struct tn_conf **conf_r, bool *check_r)
{
	const char *path = getenv("TENANTMAIL_CONF");
	int c, ret, dest = TN_LOG_TO_SYSLOG;

	*conf_r = NULL;
	while ((c = getopt(argc, argv, TN_DAEMON_OPTIONS)) != -1) {
		if (c == 'c')
			path = optarg;
		else if (c == 'e')
			dest |= TN_LOG_TO_STDERR;
		else if (c == 'n')
			*check_r = true;
		else if (c != 'o')
			return tn_daemon_usage(program);
	}
	if (optind != argc)
		return tn_daemon_usage(program);
	tn_log_init(program, dest, LOG_MAIL);
	*conf_r = tn_conf_create(program, tables);
	ret = tn_daemon_load(program, *conf_r, path != NULL ? path : TN_DAEMON_DEFAULT_CONF,
			     argc, argv);
	if (ret != 0) {
		tn_conf_destroy(conf_r);
		return ret;
	}
	tn_log_set_level((enum tn_log_level)tn_conf_enum(*conf_r, level_param));
	return 0;
}

int tn_daemon_drop_privileges(const char *param, const char *user)
{
	struct passwd *pw;

	if (getuid() != 0 || *user == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		tn_error("%s %s: no such user", param, user);
		return -1;
	}
	if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		tn_error("cannot switch to user %s: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		tn_error("could switch back to root after dropping privileges");
		return -1;
	}
	return 0;
}
