/*++
 * NAME
 *	tn-mem 3
 * SUMMARY
 *	fail-stop memory allocation (see tn-mem.h)
 *--*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tn-mem.h"

static void __attribute__((noreturn)) tn_mem_panic(size_t size)
{
	char buf[96];
	int n = snprintf(buf, sizeof(buf), "tenantmail: out of memory (%zu bytes)\n", size);

	if (n > 0 && write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nothing more can be done */
	}
	abort();
}

void *tn_mem_alloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		tn_mem_panic(size);
	return p;
}

void *tn_mem_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		tn_mem_panic(n * size);
	return p;
}

void *tn_mem_realloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		tn_mem_panic(size);
	return p;
}

char *tn_mem_strdup(const char *s)
{
	return tn_mem_strndup(s, strlen(s));
}

char *tn_mem_strndup(const char *s, size_t n)
{
	char *p = tn_mem_alloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *tn_mem_printf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0)
		tn_mem_panic(0);
	return p;
}

void tn_mem_free_ptr(void **ptr)
{
	free(*ptr);
	*ptr = NULL;
}
