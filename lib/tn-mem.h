/*++
 * NAME
 *	tn-mem 3h
 * SUMMARY
 *	fail-stop memory allocation
 * DESCRIPTION
 *	The memory discipline of lib/ and of every daemon that links it:
 *	allocation never returns NULL. When the system is out of memory the
 *	process logs and aborts; callers never test allocation results.
 *	(Code loaded into Dovecot uses Dovecot's pools instead.)
 *
 *	tn_mem_free() takes a pointer to the pointer and clears it.
 *--*/
#ifndef TN_MEM_H
#define TN_MEM_H

#include <stddef.h>

void *tn_mem_alloc(size_t size);
void *tn_mem_calloc(size_t n, size_t size);
void *tn_mem_realloc(void *ptr, size_t size);
char *tn_mem_strdup(const char *s);
char *tn_mem_strndup(const char *s, size_t n);
/* sprintf into a fresh allocation. */
char *tn_mem_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tn_mem_free_ptr(void **ptr);
#define tn_mem_free(pp) tn_mem_free_ptr((void **)(pp))

#endif
