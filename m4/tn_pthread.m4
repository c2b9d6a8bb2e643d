# TN_PTHREAD: glibc has pthreads in libc; keep -pthread for the compiler.
AC_DEFUN([TN_PTHREAD], [
  PTHREAD_CFLAGS="-pthread"
  PTHREAD_LIBS="-pthread"
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
