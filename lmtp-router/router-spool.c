/*++
 * NAME
 *	router-spool 3
 * SUMMARY
 *	tn-lmtp-router's spool files
 * DESCRIPTION
 *	tn_router_spool_open() makes a file in router_spool_directory that
 *	has no name (O_TMPFILE; where the file system lacks it, a mkstemp()
 *	file unlinked at once), mode 0600, owned by router_user. It holds
 *	one message above router_spool_threshold while the session reads
 *	it; then every destination sends it from there (a shared
 *	evbuffer file segment, sendfile where possible), each at its own
 *	pace. The file disappears with its last reference, also after a
 *	crash: nothing is left to clean up.
 * SECURITY
 *	Nothing in the spool has a name another process could open.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "router.h"
#include "tn-mem.h"

int tn_router_spool_open(struct tn_router *r)
{
	char *path;
	int fd, saved;

	fd = open(r->set.spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
		return fd;
	path = tn_mem_printf("%s/msg.XXXXXX", r->set.spool_dir);
	fd = mkostemp(path, O_CLOEXEC);
	saved = errno;
	if (fd >= 0)
		unlink(path);
	tn_mem_free(&path);
	errno = saved;
	return fd;
}
