# TN_CHECK_MILTER: Sendmail's libmilter (libmilter-dev)
# Debian ships milter.pc; fall back to a plain header + library probe.
AC_DEFUN([TN_CHECK_MILTER], [
  PKG_CHECK_MODULES([MILTER], [milter], [], [
    AC_CHECK_HEADER([libmilter/mfapi.h], [],
      [AC_MSG_ERROR([libmilter not found. On Debian 12: apt-get install libmilter-dev])])
    MILTER_CFLAGS=""
    MILTER_LIBS="-lmilter"
  ])
])
