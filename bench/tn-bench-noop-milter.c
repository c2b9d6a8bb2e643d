/*++
 * NAME
 *	tn-bench-noop-milter 1
 * SUMMARY
 *	a milter that accepts everything, for bench/smtp
 * SYNOPSIS
 *	tn-bench-noop-milter [-m quota|submit] [-u user] SOCKET
 * DESCRIPTION
 *	The cost of the milter protocol itself, without any lookup: the
 *	anchor bench/smtp compares tn-quota-milter and tn-submit-milter
 *	with. It negotiates the same protocol steps as the milter it
 *	stands for (-m quota, the default: tn-quota-milter's; -m submit:
 *	tn-submit-milter's), registers the same callbacks, asks for the
 *	same macros with smfi_setsymlist(), keeps a per-session and a
 *	per-message allocation the way they do (made at negotiation and
 *	MAIL FROM, freed at end of message, abort and close), counts the
 *	message size from the header and body events, and answers
 *	"continue" (or nothing, where the step was negotiated as
 *	no-reply) to everything.
 *
 *	SOCKET is libmilter's syntax, inet:PORT@127.0.0.1 or
 *	unix:/path. A TCP socket gets TCP_NODELAY on libmilter's
 *	listening descriptor (Linux copies it to every accepted
 *	connection), as milters/tn-milter-common.c does for the real
 *	milters; a unix socket is made mode 0666.
 *
 *	Runs in the foreground until SIGTERM, SIGINT or SIGHUP
 *	(libmilter's own signal thread), prints "ready" on stdout once the
 *	socket is open. Exit 0 after a clean stop, 1 on errors.
 *
 *	Names: nm_ for everything of this file (all static).
 * SECURITY
 *	A benchmark tool: not for production. -u switches to that user
 *	after the socket is open when started as root.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

struct nm_msg {
	long long size;
	unsigned rcpts;
};

struct nm_session {
	bool nr_mail;
	bool nr_hdr;
	bool nr_body;
	struct nm_msg *msg;
};

static bool nm_submit;			/* -m submit */

static struct nm_session *nm_session(SMFICTX *ctx)
{
	return smfi_getpriv(ctx);
}

static void nm_msg_free(struct nm_session *s)
{
	free(s->msg);
	s->msg = NULL;
}

static sfsistat nm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
			     unsigned long f2, unsigned long f3, unsigned long *pf0,
			     unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	const unsigned long skip = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOUNKNOWN |
				   SMFIP_NODATA | SMFIP_NOEOH;
	const unsigned long noreply = (nm_submit ? 0 : SMFIP_NR_MAIL) | SMFIP_NR_HDR |
				      SMFIP_NR_BODY;
	struct nm_session *s = nm_session(ctx);

	(void)f2;
	(void)f3;
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			return SMFIS_TEMPFAIL;
		smfi_setpriv(ctx, s);
	}
	*pf0 = f0 & SMFIF_SETSYMLIST;
	*pf1 = f1 & (skip | noreply);
	*pf2 = *pf3 = 0;
	s->nr_mail = (*pf1 & SMFIP_NR_MAIL) != 0;
	s->nr_hdr = (*pf1 & SMFIP_NR_HDR) != 0;
	s->nr_body = (*pf1 & SMFIP_NR_BODY) != 0;
	if (*pf0 & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_ENVFROM, nm_submit ? "i {auth_authen}" : "i");
		smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat nm_envfrom(SMFICTX *ctx, char **argv)
{
	struct nm_session *s = nm_session(ctx);

	(void)argv;
	if (s == NULL)
		return SMFIS_TEMPFAIL;
	nm_msg_free(s);
	if ((s->msg = calloc(1, sizeof(*s->msg))) == NULL)
		return SMFIS_TEMPFAIL;
	(void)smfi_getsymval(ctx, "i");
	if (nm_submit)
		(void)smfi_getsymval(ctx, "{auth_authen}");
	return s->nr_mail ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat nm_envrcpt(SMFICTX *ctx, char **argv)
{
	struct nm_session *s = nm_session(ctx);

	(void)argv;
	if (s == NULL || s->msg == NULL)
		return SMFIS_TEMPFAIL;
	s->msg->rcpts++;
	return SMFIS_CONTINUE;
}

static sfsistat nm_header(SMFICTX *ctx, char *name, char *value)
{
	struct nm_session *s = nm_session(ctx);

	if (s != NULL && s->msg != NULL)
		s->msg->size += (long long)(strlen(name) + 2 + strlen(value) + 2);
	return s != NULL && s->nr_hdr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat nm_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct nm_session *s = nm_session(ctx);

	(void)chunk;
	if (s != NULL && s->msg != NULL)
		s->msg->size += (long long)len;
	return s != NULL && s->nr_body ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat nm_eom(SMFICTX *ctx)
{
	struct nm_session *s = nm_session(ctx);

	if (s != NULL)
		nm_msg_free(s);
	return SMFIS_CONTINUE;
}

static sfsistat nm_abort(SMFICTX *ctx)
{
	struct nm_session *s = nm_session(ctx);

	if (s != NULL)
		nm_msg_free(s);
	return SMFIS_CONTINUE;
}

static sfsistat nm_close(SMFICTX *ctx)
{
	struct nm_session *s = nm_session(ctx);

	if (s == NULL)
		return SMFIS_CONTINUE;
	nm_msg_free(s);
	free(s);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc nm_desc = {
	.xxfi_name = "tn-bench-noop-milter",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,
	.xxfi_envfrom = nm_envfrom,
	.xxfi_envrcpt = nm_envrcpt,
	.xxfi_header = nm_header,
	.xxfi_body = nm_body,
	.xxfi_eom = nm_eom,
	.xxfi_abort = nm_abort,
	.xxfi_close = nm_close,
	.xxfi_negotiate = nm_negotiate,
};

/* The port of "inet:PORT@HOST", or -1. */
static int nm_inet_port(const char *spec)
{
	char *end;
	long port;

	if (strncmp(spec, "inet:", 5) != 0)
		return -1;
	port = strtol(spec + 5, &end, 10);
	if (end == spec + 5 || (*end != '@' && *end != '\0') || port < 1 || port > 65535)
		return -1;
	return (int)port;
}

static int nm_sock_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0 || sin.sin_family != AF_INET)
		return -1;
	return ntohs(sin.sin_port);
}

/* TCP_NODELAY on libmilter's listening socket (it has no call that
 * returns the descriptor: the listening socket bound to our port). */
static int nm_nodelay(int port)
{
	int found = 0, one = 1;

	for (int fd = 0; fd < 1024; fd++) {
		int listening = 0;
		socklen_t len = sizeof(listening);

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
		    !listening || nm_sock_port(fd) != port)
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
			fprintf(stderr, "tn-bench-noop-milter: TCP_NODELAY: %s\n",
				strerror(errno));
			return -1;
		}
		found++;
	}
	if (found == 0) {
		fprintf(stderr, "tn-bench-noop-milter: no listening socket on port %d\n", port);
		return -1;
	}
	return 0;
}

static int nm_drop(const char *user)
{
	struct passwd *pw;

	if (user == NULL || getuid() != 0)
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		fprintf(stderr, "tn-bench-noop-milter: %s: no such user\n", user);
		return -1;
	}
	if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "tn-bench-noop-milter: switching to %s: %s\n", user,
			strerror(errno));
		return -1;
	}
	return 0;
}

static int nm_open(const char *spec, const char *user)
{
	int port = nm_inet_port(spec);

	if (port < 0 && strncmp(spec, "unix:", 5) != 0) {
		fprintf(stderr, "tn-bench-noop-milter: expected inet:PORT@127.0.0.1 or"
			" unix:/path, not %s\n", spec);
		return -1;
	}
	if (smfi_setconn((char *)spec) == MI_FAILURE || smfi_register(nm_desc) == MI_FAILURE ||
	    smfi_opensocket(true) == MI_FAILURE) {
		fprintf(stderr, "tn-bench-noop-milter: cannot open %s\n", spec);
		return -1;
	}
	if (port >= 0 && nm_nodelay(port) < 0)
		return -1;
	if (port < 0 && chmod(spec + 5, 0666) < 0) {
		fprintf(stderr, "tn-bench-noop-milter: chmod %s: %s\n", spec + 5,
			strerror(errno));
		return -1;
	}
	return nm_drop(user);
}

int main(int argc, char **argv)
{
	const char *user = NULL;
	bool bad = false;
	int c;

	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt(argc, argv, "m:u:")) != -1) {
		if (c == 'm' && (strcmp(optarg, "quota") == 0 || strcmp(optarg, "submit") == 0))
			nm_submit = strcmp(optarg, "submit") == 0;
		else if (c == 'u')
			user = optarg;
		else
			bad = true;
	}
	if (bad || optind != argc - 1) {
		fprintf(stderr, "usage: tn-bench-noop-milter [-m quota|submit] [-u user]"
			" inet:PORT@127.0.0.1|unix:/path\n");
		return 1;
	}
	if (nm_open(argv[optind], user) < 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
