## milters/: tn-mapd, the Postfix socketmap server (Milters issue, part 0).
## Its unit tests, man pages, docs and integration tests are listed here.
# (milters/README.md: docs/local.mk)
