## scripts/: the README's two commands and their helpers.
EXTRA_DIST += scripts/deps scripts/sandbox scripts/test scripts/build .ci/run
