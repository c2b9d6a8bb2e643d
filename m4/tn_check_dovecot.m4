# TN_CHECK_DOVECOT: Dovecot 2.3 development files (dovecot-dev)
#
# Dovecot ships no .pc file: read dovecot-config, as Dovecot's own
# dovecot.m4 (DC_DOVECOT) does.
#
#   --with-dovecot=DIR            directory holding dovecot-config
#                                 [/usr/lib/dovecot]
#   --with-dovecot-moduledir=DIR  where "make install" puts the Dovecot
#                                 modules [LIBDIR/dovecot/modules]; the auth
#                                 driver goes to DIR/auth.
#
# The default follows Dovecot's layout (moduledir = LIBDIR/dovecot/modules,
# auth drivers in its auth/ subdirectory) but stays under ${libdir}: with
# --prefix=/usr it is Debian's /usr/lib/dovecot/modules, and a non-system
# install (make distcheck, --prefix=$HOME/x) never writes outside its
# prefix.  Dovecot itself loads auth drivers only from the directory it was
# built with (dovecot_moduledir/auth in dovecot-config, shown by configure).
#
# Sets DOVECOT_CPPFLAGS (Dovecot's headers), DOVECOT_MODULEDIR,
# DOVECOT_AUTH_MODULEDIR, DOVECOT_INSTALLED_MODULEDIR (Dovecot's own);
# defines TN_PACKAGE_VERSION for dovecot-plugins/tn-dovecot-build.h
# (Dovecot's config.h defines PACKAGE and VERSION: our modules cannot
# include tn-build.h).
AC_DEFUN([TN_CHECK_DOVECOT], [
  AC_ARG_WITH([dovecot],
    [AS_HELP_STRING([--with-dovecot=DIR], [directory holding dovecot-config [/usr/lib/dovecot]])],
    [tn_dovecot_dir="$withval"], [tn_dovecot_dir=/usr/lib/dovecot])
  AC_ARG_WITH([dovecot-moduledir],
    [AS_HELP_STRING([--with-dovecot-moduledir=DIR],
      [install Dovecot modules under DIR (auth driver in DIR/auth) [LIBDIR/dovecot/modules]])],
    [DOVECOT_MODULEDIR="$withval"], [DOVECOT_MODULEDIR='${libdir}/dovecot/modules'])
  AC_MSG_CHECKING([for dovecot-config in $tn_dovecot_dir])
  AS_IF([test -r "$tn_dovecot_dir/dovecot-config"], [AC_MSG_RESULT([yes])], [
    AC_MSG_RESULT([no])
    AC_MSG_ERROR([Dovecot development files not found. On Debian 12: apt-get install dovecot-dev])])
  eval `grep -E '^(LIBDOVECOT_INCLUDE|dovecot_moduledir)=' "$tn_dovecot_dir/dovecot-config"`
  DOVECOT_CPPFLAGS="$LIBDOVECOT_INCLUDE"
  DOVECOT_INSTALLED_MODULEDIR="$dovecot_moduledir"
  DOVECOT_AUTH_MODULEDIR='$(DOVECOT_MODULEDIR)/auth'

  tn_save_CPPFLAGS="$CPPFLAGS"
  CPPFLAGS="$CPPFLAGS -DHAVE_CONFIG_H $DOVECOT_CPPFLAGS"
  AC_MSG_CHECKING([for Dovecot 2.3 auth headers with DOVECOT_ABI_VERSION])
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[
#include "lib.h"
#include "auth-request.h"
#include "passdb.h"
#include "userdb.h"
#if DOVECOT_VERSION_MAJOR != 2 || DOVECOT_VERSION_MINOR != 3
#error not Dovecot 2.3
#endif
]], [[const char *abi = DOVECOT_ABI_VERSION; (void)abi;]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([Dovecot 2.3 headers (lib.h, passdb.h, userdb.h) not usable with $DOVECOT_CPPFLAGS])])
  CPPFLAGS="$tn_save_CPPFLAGS"

  AC_DEFINE_UNQUOTED([TN_PACKAGE_VERSION], ["$PACKAGE_VERSION"],
    [tenantmail's version, for code that cannot include tn-build.h])
  AC_SUBST([DOVECOT_CPPFLAGS])
  AC_SUBST([DOVECOT_MODULEDIR])
  AC_SUBST([DOVECOT_AUTH_MODULEDIR])
  AC_SUBST([DOVECOT_INSTALLED_MODULEDIR])
  AC_MSG_NOTICE([Dovecot modules install under $DOVECOT_MODULEDIR; Dovecot loads them from $dovecot_moduledir])
])
