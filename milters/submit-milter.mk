## milters/: tn-submit-milter (Milters issue, part 2). Its unit tests, man
## pages, docs and integration tests are listed here.
