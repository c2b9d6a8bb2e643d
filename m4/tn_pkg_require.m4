# TN_PKG_REQUIRE(VAR, pkg-config module, what, debian package)
# Look a dependency up with pkg-config; fail naming the Debian package.
AC_DEFUN([TN_PKG_REQUIRE], [
  PKG_CHECK_MODULES([$1], [$2], [],
    [AC_MSG_ERROR([$3 not found (pkg-config: $2). On Debian 12: apt-get install $4])])
])
