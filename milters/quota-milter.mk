## milters/: tn-quota-milter (Milters issue, part 1). Its unit tests, man
## pages, docs and integration tests are listed here.
