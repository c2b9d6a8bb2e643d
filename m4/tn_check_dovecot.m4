# TN_CHECK_DOVECOT: Dovecot 2.3 development files (dovecot-dev)
# Dovecot ships no .pc file: read dovecot-config, as its own plugins do.
# Sets DOVECOT_INCLUDE, DOVECOT_MODULEDIR, DOVECOT_AUTH_MODULEDIR.
AC_DEFUN([TN_CHECK_DOVECOT], [
  AC_ARG_WITH([dovecot],
    [AS_HELP_STRING([--with-dovecot=DIR], [directory holding dovecot-config [/usr/lib/dovecot]])],
    [tn_dovecot_dir="$withval"], [tn_dovecot_dir=/usr/lib/dovecot])
  AC_MSG_CHECKING([for dovecot-config in $tn_dovecot_dir])
  AS_IF([test -r "$tn_dovecot_dir/dovecot-config"], [AC_MSG_RESULT([yes])], [
    AC_MSG_RESULT([no])
    AC_MSG_ERROR([Dovecot development files not found. On Debian 12: apt-get install dovecot-dev])])
  eval `grep -E '^(LIBDOVECOT_INCLUDE|dovecot_moduledir|DOVECOT_INSTALLED)=' "$tn_dovecot_dir/dovecot-config"`
  DOVECOT_INCLUDE="$LIBDOVECOT_INCLUDE"
  DOVECOT_MODULEDIR="$dovecot_moduledir"
  DOVECOT_AUTH_MODULEDIR="$dovecot_moduledir/auth"
  AC_SUBST([DOVECOT_INCLUDE])
  AC_SUBST([DOVECOT_MODULEDIR])
  AC_SUBST([DOVECOT_AUTH_MODULEDIR])
])
