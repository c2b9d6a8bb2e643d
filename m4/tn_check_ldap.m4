# TN_CHECK_LDAP: OpenLDAP client library (libldap-dev)
AC_DEFUN([TN_CHECK_LDAP], [TN_PKG_REQUIRE([LDAP], [ldap lber], [OpenLDAP client library], [libldap-dev])])
